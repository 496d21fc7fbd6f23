"""Keystroke fixtures (`fixtures/*.keys`, DESIGN.md "Keystroke fixtures").

One directive per line, `#` starts a comment.  Headers (`size`, `scenario`) come
before the first key; every other line is a step the replayer runs in order.
Any mistake is a FixtureError whose message starts with file:line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..limits import (MAX_FIXTURE_BYTES, MAX_FIXTURE_KEYS, MAX_FIXTURE_LINES, MAX_TYPE_CHARS, LimitError,
                      check_lines, read_input)
from ..machine.scenario import BUILTIN
from ..textsafe import quote
from .keys import KeyNameError, check_key, did_you_mean

DEFAULT_SIZE = (160, 50)  # the talk layout
MIN_SIZE = (40, 12)
MAX_SIZE = (500, 200)
MAX_PAUSE = 600.0
HEADERS = ("size", "scenario")
STEPS = ("caption", "keys", "type", "pause", "expect", "snapshot")
DIRECTIVES = HEADERS + STEPS
SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class FixtureError(ValueError):
    """A bad fixture; str() is 'file:line: what was expected'."""


@dataclass(frozen=True)
class Step:
    line: int        # 1-based line in the fixture
    kind: str        # one of STEPS
    arg: str         # caption / expect / type text, snapshot name, pause seconds as text
    keys: tuple[str, ...] = ()  # for `keys`: the key names
    seconds: float = 0.0        # for `pause`

    def where(self, fixture: "Fixture") -> str:
        return f"{fixture.source}:{self.line}"


@dataclass
class Fixture:
    source: str                      # the path as given, for messages
    size: tuple[int, int] = DEFAULT_SIZE
    scenario: str = "desktop"        # a built-in name, or a path resolved against the fixture
    scenario_line: int = 0           # 0: not given, the default
    steps: list[Step] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.source).stem

    def key_count(self) -> int:
        return sum(len(s.keys) if s.kind == "keys" else len(s.arg) for s in self.steps if s.kind in ("keys", "type"))


def _strip_comment(raw: str) -> str:
    i = raw.find("#")
    return (raw if i < 0 else raw[:i]).strip()


def _size(text: str, where: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,5})\s*[xX]\s*(\d{1,5})", text)
    if not m:
        raise FixtureError(f"{where}: size wants WIDTHxHEIGHT, e.g. 'size 160x50', not {quote(text)}")
    w, h = int(m.group(1)), int(m.group(2))
    (minw, minh), (maxw, maxh) = MIN_SIZE, MAX_SIZE
    if not (minw <= w <= maxw and minh <= h <= maxh):
        raise FixtureError(f"{where}: size {w}x{h} is out of range ({minw}x{minh} to {maxw}x{maxh})")
    return w, h


def _seconds(text: str, where: str) -> float:
    try:
        s = float(text)
    except ValueError:
        s = math.nan
    if not math.isfinite(s) or not 0 <= s <= MAX_PAUSE:
        raise FixtureError(f"{where}: pause wants seconds from 0 to {MAX_PAUSE:g}, e.g. 'pause 1.5', not "
                           f"{quote(text)}")
    return s


def resolve_scenario(name: str, fixture_path: str | Path) -> str:
    """A built-in name stays a name; a path is relative to the fixture's folder."""
    if name in BUILTIN:
        return name
    p = Path(name)
    if not p.is_absolute():
        p = Path(fixture_path).parent / p
    return str(p)


def _check_limits(text: str, source: str) -> None:
    """Before any line is parsed: the work is bounded by the limits, not the input."""
    try:
        check_lines(text, source, max_lines=MAX_FIXTURE_LINES, lines_name="MAX_FIXTURE_LINES")
    except LimitError as exc:
        raise FixtureError(str(exc)) from None


def parse(text: str, source: str) -> Fixture:
    _check_limits(text, source)
    fx = Fixture(source=source)
    keys = 0
    seen: dict[str, int] = {}
    snapshots: dict[str, int] = {}
    first_key = 0
    # Lines end at \n only (as the file:line of load() counts them), not at the
    # other breaks str.splitlines() knows.
    for n, raw in enumerate(text.split("\n"), 1):
        raw = raw.rstrip("\r")
        where = f"{source}:{n}"
        line = _strip_comment(raw)
        if not line:
            continue
        word, *more = line.split(None, 1)
        rest = more[0].strip() if more else ""
        if word not in DIRECTIVES:
            raise FixtureError(f"{where}: unknown directive {quote(word)}; expected one of {', '.join(DIRECTIVES)}"
                               f"{did_you_mean(word.lower(), DIRECTIVES)}")
        if word in HEADERS:
            if first_key:
                raise FixtureError(f"{where}: {word} is a header and must come before the first key "
                                   f"(line {first_key})")
            if word in seen:
                raise FixtureError(f"{where}: {word} given twice (first on line {seen[word]})")
            seen[word] = n
            if not rest:
                raise FixtureError(f"{where}: {word} wants a value, e.g. "
                                   + ("'size 160x50'" if word == "size" else "'scenario desktop'"))
            if word == "size":
                fx.size = _size(rest, where)
            else:
                path = resolve_scenario(rest, source)
                if rest not in BUILTIN and not Path(path).is_file():
                    raise FixtureError(f"{where}: no such scenario {quote(rest)} "
                                       f"(built-in: {', '.join(BUILTIN)}; or a .toml file next to the fixture)")
                fx.scenario, fx.scenario_line = path, n
            continue
        if word == "keys":
            tokens = tuple(rest.split())
            if not tokens:
                raise FixtureError(f"{where}: keys wants key names, e.g. 'keys g 3 enter a'")
            for t in tokens:
                try:
                    check_key(t)
                except KeyNameError as exc:
                    raise FixtureError(f"{where}: {exc}") from None
            keys += len(tokens)
            if keys > MAX_FIXTURE_KEYS:
                raise FixtureError(f"{where}: more than {MAX_FIXTURE_KEYS:,} keys and typed characters "
                                   "(MAX_FIXTURE_KEYS)")
            fx.steps.append(Step(n, "keys", rest, keys=tokens))
            first_key = first_key or n
        elif word == "type":
            if not rest:
                raise FixtureError(f"{where}: type wants text, e.g. 'type 0x100000 64K rw'")
            if len(rest) > MAX_TYPE_CHARS:
                raise FixtureError(f"{where}: type text of {len(rest):,} characters, more than {MAX_TYPE_CHARS:,} "
                                   "(MAX_TYPE_CHARS; split it over several type lines)")
            bad = [ch for ch in rest if not ch.isprintable()]
            if bad:
                raise FixtureError(f"{where}: type text holds an unprintable character {bad[0]!r}")
            keys += len(rest)
            if keys > MAX_FIXTURE_KEYS:
                raise FixtureError(f"{where}: more than {MAX_FIXTURE_KEYS:,} keys and typed characters "
                                   "(MAX_FIXTURE_KEYS)")
            fx.steps.append(Step(n, "type", rest))
            first_key = first_key or n
        elif word == "pause":
            fx.steps.append(Step(n, "pause", rest, seconds=_seconds(rest, where)))
        elif word == "snapshot":
            if not SNAPSHOT_NAME.fullmatch(rest):
                raise FixtureError(f"{where}: snapshot wants a file name of letters, digits, '.', '-', '_' "
                                   f"(up to 64), e.g. 'snapshot after-attach', not {quote(rest)}")
            if rest in snapshots:
                raise FixtureError(f"{where}: snapshot {rest!r} already taken on line {snapshots[rest]}")
            snapshots[rest] = n
            fx.steps.append(Step(n, "snapshot", rest))
        else:  # caption, expect
            if not rest:
                raise FixtureError(f"{where}: {word} wants text, e.g. "
                                   + ("'caption Attach the NIC with CM off'" if word == "caption" else "'expect CM=1'"))
            fx.steps.append(Step(n, word, rest))
    return fx


def load(path: str | Path) -> Fixture:
    """Read and parse a fixture file; every failure is a FixtureError naming the file."""
    source = str(path)
    data = read_input(source, MAX_FIXTURE_BYTES, "MAX_FIXTURE_BYTES", FixtureError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FixtureError(f"{source}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    _check_limits(text, source)
    if not any(_strip_comment(raw) for raw in text.split("\n")):
        # An empty or truncated file would replay nothing and pass.
        raise FixtureError(f"{source}: empty fixture: no directives (a fixture says at least 'keys ...')")
    return parse(text, source)
