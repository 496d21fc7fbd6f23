"""Text the user types (prompts, fixtures, command line) turned into values.

Errors are ValueError with a message that says what was expected; the caller adds
the place (prompt, file:line).
"""

from __future__ import annotations

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_int(text: str, what: str) -> int:
    s = text.strip().replace("_", "")
    try:
        value = int(s, 0)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number (try 0x100000 or 1048576)") from None
    if value < 0:
        raise ValueError(f"{what}: {text!r} is negative")
    return value


def parse_size(text: str, what: str = "size") -> int:
    """4096, 0x1000, 4K, 2M, 1G (binary units), also 4KiB and lower case."""
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    if not s:
        raise ValueError(f"{what}: empty")
    unit = s[-1] if s[-1] in "KMGT" else ""
    number = s[:-1] if unit else s
    if unit and number.startswith("0X"):
        raise ValueError(f"{what}: {text!r} mixes hex and a unit suffix")
    value = parse_int(number, what) * _UNITS[unit]
    if value >> 64:
        raise ValueError(f"{what}: {text!r} is larger than 64 bits")
    return value


def parse_perms(text: str | None, default: str = "rw") -> tuple[bool, bool]:
    s = (text or default).strip().lower()
    if s not in ("r", "w", "rw", "wr"):
        raise ValueError(f"permissions: {text!r} must be r, w or rw")
    return "r" in s, "w" in s


def parse_access(text: str | None) -> bool:
    """DMA direction: r (read, the default) or w; returns True for a write."""
    s = (text or "r").strip().lower()
    if s not in ("r", "w", "read", "write"):
        raise ValueError(f"access: {text!r} must be r or w")
    return s.startswith("w")


def fmt_size(n: int) -> str:
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
