"""Text the user types (prompts, fixtures, command line) turned into values.

Errors are ValueError with a message that says what was expected; the caller adds
the place (prompt, file:line).
"""

from __future__ import annotations

from ..textsafe import quote  # a value echoed in a message: escaped, and cut at 80 characters

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_int(text: str, what: str) -> int:
    s = text.strip().replace("_", "")
    try:
        if not s.isascii():  # int() would take other scripts' digits: '٣' is 3
            raise ValueError
        value = int(s, 0)
    except ValueError:
        raise ValueError(f"{what}: {quote(text)} is not a number (try 0x100000 or 1048576)") from None
    if value < 0:
        raise ValueError(f"{what}: {quote(text)} is negative")
    return value


def parse_size(text: str, what: str = "size") -> int:
    """4096, 0x1000, 4K, 2M, 1G (binary units), also 4KiB and lower case."""
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    if not s:
        raise ValueError(f"{what}: empty")
    unit = s[-1] if s[-1] in "KMGT" else ""
    number = s[:-1] if unit else s
    if unit and number.startswith("0X"):
        raise ValueError(f"{what}: {quote(text)} mixes hex and a unit suffix")
    value = parse_int(number, what) * _UNITS[unit]
    if value >> 64:
        raise ValueError(f"{what}: {quote(text)} is larger than 64 bits")
    return value


PAGE_SIZES = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30}


def parse_map_spec(text: str, what: str = "map") -> tuple[int, int]:
    """SIZE[:PAGE], e.g. 4G:4K (PAGE 4K, 2M or 1G; default 4K) → (size, page)."""
    size_t, _, page_t = text.partition(":")
    size = parse_size(size_t, what)
    page_key = (page_t or "4K").strip().upper().removesuffix("IB").removesuffix("B")
    if page_key not in PAGE_SIZES:
        raise ValueError(f"{what}: page size {quote(page_t)} must be 4K, 2M or 1G")
    if size == 0:
        raise ValueError(f"{what}: size 0 maps nothing")
    return size, PAGE_SIZES[page_key]


def parse_perms(text: str | None, default: str = "rw") -> tuple[bool, bool]:
    s = (text or default).strip().lower()
    if s not in ("r", "w", "rw", "wr"):
        raise ValueError(f"permissions: {quote(text)} must be r, w or rw")
    return "r" in s, "w" in s


def parse_access(text: str | None) -> bool:
    """DMA direction: r (read, the default) or w; returns True for a write."""
    s = (text or "r").strip().lower()
    if s not in ("r", "w", "read", "write"):
        raise ValueError(f"access: {quote(text)} must be r or w")
    return s.startswith("w")


def fmt_size(n: int) -> str:
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
