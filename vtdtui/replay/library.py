"""The fixtures shipped with the package, found by name (`vtdtui replay caching-mode`).

They live once, in the repository's fixtures/ (what README and talks name); the
package reaches them through vtdtui/fixtures, a symbolic link to that folder that the
wheel stores as real files (pyproject.toml, package-data).  So the same lookup works
from a checkout, an editable install and an installed wheel, from any directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..textsafe import quote
from .fixture import MAX_SIZE, MIN_SIZE, FixtureError, _strip_comment
from .keys import did_you_mean

PACKAGE = "vtdtui.fixtures"
SUFFIX = ".keys"


@dataclass(frozen=True)
class Shipped:
    name: str   # the file's stem: what `vtdtui replay NAME` takes
    path: str   # a real file path (the package is installed unzipped)
    story: str  # one line: the fixture's first comment block, else its first caption


def _folder():
    try:
        return resources.files(PACKAGE)
    except ModuleNotFoundError:  # a broken install without the data: no shipped fixtures
        return None


def names() -> list[str]:
    folder = _folder()
    if folder is None:
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX))


def story(text: str) -> str:
    """The first comment block (the lines of `#` before the first directive), joined
    into one line; without one, the first caption."""
    lines: list[str] = []
    for raw in text.split("\n"):
        stripped = raw.strip()
        if stripped.startswith("#"):
            lines.append(stripped.lstrip("#").strip())
            continue
        if lines or _strip_comment(raw):
            break
    if any(lines):
        return " ".join(" ".join(lines).split())
    for raw in text.split("\n"):
        line = _strip_comment(raw)
        if line.startswith("caption "):
            return line[len("caption "):].strip()
    return ""


def shipped() -> list[Shipped]:
    """Every shipped fixture, by name."""
    folder = _folder()
    out = []
    for name in names():
        entry = folder / f"{name}{SUFFIX}"
        text = entry.read_text(encoding="utf-8", errors="replace")
        out.append(Shipped(name, str(entry), story(text)))
    return out


def resolve(arg: str) -> str:
    """The file `vtdtui replay ARG` replays: ARG itself when it is a file, else the
    shipped fixture of that name (`caching-mode` or `caching-mode.keys`).  Anything
    else is a FixtureError: one line, with the nearest shipped name."""
    if Path(arg).is_file():
        return arg
    shipped_names = names()
    name = arg[: -len(SUFFIX)] if arg.endswith(SUFFIX) else arg
    if name in shipped_names and "/" not in arg:
        return str(_folder() / f"{name}{SUFFIX}")
    if Path(arg).exists() or "/" in arg:  # a path: load() names what is wrong with it
        return arg
    hint = did_you_mean(Path(name).name.lower(), shipped_names)
    listing = f"; shipped: {', '.join(shipped_names)}" if shipped_names and not hint else ""
    raise FixtureError(f"{quote(arg)}: no such fixture file, and no shipped fixture of that name"
                       f"{hint}{listing} (vtdtui replay --list)")


def parse_size(text: str) -> tuple[int, int]:
    """`--size WxH`, bounded as the fixture's `size` header is; ValueError says why."""
    w, sep, h = text.lower().partition("x")
    if not (sep and w.strip().isdigit() and h.strip().isdigit() and len(w) + len(h) <= 12):
        raise ValueError(f"wants WIDTHxHEIGHT, e.g. 120x40, not {quote(text)}")
    size = int(w), int(h)
    (minw, minh), (maxw, maxh) = MIN_SIZE, MAX_SIZE
    if not (minw <= size[0] <= maxw and minh <= size[1] <= maxh):
        raise ValueError(f"{size[0]}x{size[1]} is out of range ({minw}x{minh} to {maxw}x{maxh})")
    return size
