"""Input limits (README, "Guarantees" → "Limits"): how much of an outside input vtdtui
reads and believes, checked before any work starts, so that a hostile or broken input
(/dev/zero, a 1 GB log, a FIFO, a million-line fixture, 5,000 nested arrays) ends
quickly with one line naming the limit, in bounded time and memory.

Each limit is a module constant named in the README table; a refusal says its name,
e.g. "larger than 1 MiB (MAX_SCENARIO_BYTES)", so that a user can find the number.
`read_bounded` reads at most limit+1 bytes and never blocks on a FIFO that has no
writer.  `check_toml_shape` scans TOML text before tomllib, whose recursive parser
would otherwise overflow the stack on deep nesting (RecursionError) and spend
gigabytes on a dotted key of 100,000 parts.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tomllib

from .textsafe import quote

# --- file sizes (bytes) ----------------------------------------------------------------
# Scenarios are a few KiB; the largest useful one (256 units, 4,096 groups) is < 1 MiB.
MAX_SCENARIO_BYTES = 1 << 20
# A long recorded session is some 100 KiB; 4 MiB is a day of typing.
MAX_FIXTURE_BYTES = 4 << 20
# A boot log (dmesg, journalctl -k of several boots) is rarely above 2 MiB.
MAX_LOG_BYTES = 32 << 20

# --- lines -----------------------------------------------------------------------------
# Any line of a scenario, fixture or boot log (characters).  A TOML inline array of
# 100 devices is some 4,000; kernel log lines stop at 1 KiB.
MAX_LINE_CHARS = 16384
# Lines of a fixture, comments included.
MAX_FIXTURE_LINES = 100_000
# The text of one `type` line (a prompt's answer, or one paste).
MAX_TYPE_CHARS = 4096
# Keys of a fixture, typed characters included: a headless replay runs some 300 a
# second, so this is some five minutes (a session log of a long day).
MAX_FIXTURE_KEYS = 100_000

# --- TOML shape ------------------------------------------------------------------------
# Nested arrays / inline tables: a scenario needs 3 (group → devices → device).
MAX_TOML_DEPTH = 32
# Parts of one dotted key or table header (`a.b.c` is 3); a scenario needs 2.
MAX_TOML_KEY_PARTS = 32

# --- scenario contents -----------------------------------------------------------------
MAX_UNITS = 128            # [[unit]] tables; also unit lines decoded from one boot log (a big
                           # server has 16 or so; each costs some 20 ms in the decode table)
MAX_GROUPS = 4096          # [[group]] tables (generated groups: --devices, up to 65,536)
MAX_DEVICES = 16384        # devices listed in [[group]] tables, all groups together
MAX_NAME_CHARS = 256       # a scenario, unit or device name
MAX_DESCRIPTION_CHARS = 4096  # a scenario's description (a TOML multi-line string may span lines)

# --- commands --------------------------------------------------------------------------
# Leaf entries one command may write, all domains together: 1 Mi entries is 4 GiB in
# 4 KiB pages and takes some seconds (undo repeats it); `map 0 0 256G` on a unit
# without large pages would be 64 Mi entries and minutes.
MAX_MAP_ENTRIES = 1 << 20


class LimitError(ValueError):
    """An input over a limit; str() is 'place: what (LIMIT_NAME)'."""


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} bytes"


def read_bounded(path: str, limit: int, limit_name: str) -> bytes:
    """The bytes of `path`, at most `limit` of them, else LimitError naming `limit_name`.

    Reads limit+1 bytes and stops, so /dev/zero or a 1 GB file ends at once.  Opened
    non-blocking so that a FIFO with no writer reads as empty instead of hanging the
    open; reads are blocking again afterwards (a pipe with a writer, `<(dmesg)`, is
    read to its end as usual).  OSError propagates; the caller adds the place.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        os.set_blocking(fd, True)
        return _read_fd(fd, limit, path, limit_name)
    finally:
        os.close(fd)


def read_input(path: str, limit: int, limit_name: str, error: type[Exception], place: str | None = None) -> bytes:
    """read_bounded(), its refusals raised as `error` with one line: the LimitError's,
    or "PLACE: why" for an OSError (`place` defaults to the path)."""
    try:
        return read_bounded(path, limit, limit_name)
    except LimitError as exc:
        raise error(str(exc)) from None
    except OSError as exc:
        raise error(f"{place or path}: {exc.strerror or exc}") from None


def read_stream_bounded(stream, limit: int, source: str, limit_name: str) -> bytes:
    """The same for an open binary stream (standard input)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise LimitError(f"{source}: larger than {_size(limit)} ({limit_name}); stopped reading there")
    return data


def _read_fd(fd: int, limit: int, source: str, limit_name: str) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got > limit:
        raise LimitError(f"{source}: larger than {_size(limit)} ({limit_name}); stopped reading there")
    return b"".join(chunks)


def check_lines(text: str, source: str, *, max_lines: int | None = None, lines_name: str = "") -> None:
    """Refuse a line longer than MAX_LINE_CHARS (naming its line) and, with `max_lines`,
    a text of more lines than that.  Lines end at \\n, as file:line counts them."""
    if max_lines is not None:
        count = text.count("\n") + (not text.endswith("\n"))
        if count > max_lines:
            raise LimitError(f"{source}: {count:,} lines, more than {max_lines:,} ({lines_name})")
    if len(text) <= MAX_LINE_CHARS:
        return
    start = 0
    lineno = 1
    while True:
        end = text.find("\n", start)
        stop = len(text) if end < 0 else end
        if stop - start > MAX_LINE_CHARS:
            raise LimitError(f"{source}:{lineno}: line longer than {MAX_LINE_CHARS:,} characters "
                             f"(MAX_LINE_CHARS)")
        if end < 0:
            return
        start = end + 1
        lineno += 1


def check_text_length(text: str, limit: int, what: str, limit_name: str) -> None:
    if len(text) > limit:
        raise LimitError(f"{what} {quote(text, 24)} is {len(text):,} characters, more than {limit:,} "
                         f"({limit_name})")


# --- TOML pre-scan -----------------------------------------------------------------------

# The places where the scan's state changes: string openers, comments, brackets, the
# separators that start a key, and dots (which matter only in key context).
_TOML_TOKEN = re.compile(r'"""|\'\'\'|["\'#\[\]{}=,.\n]')
_BASIC_END = re.compile(r'(?:[^"\\\n]|\\.)*"')       # the rest of a "..." string
_LITERAL_END = re.compile(r"[^'\n]*'")               # the rest of a '...' string
_ML_BASIC_END = re.compile(r'(?:[^"\\]|\\.|"(?!""))*"""', re.S)
_ML_LITERAL_END = re.compile(r"(?:[^']|'(?!''))*'''", re.S)
# int() refuses more decimal digits than this (Python 3.11+; 0 would mean no limit).
INT_DIGITS = sys.get_int_max_str_digits() or 4300
_LONG_DIGITS = re.compile(r"[0-9][0-9_]{%d,}" % INT_DIGITS)  # TOML allows 1_000


def load_toml(text: str, source: str) -> dict:
    """tomllib.loads() behind the limits: the lines and the TOML shape first (tomllib
    recurses per nesting level and builds every dotted part), and what tomllib still
    cannot take past them (int() of a huge number, a recursion) is a LimitError too.
    A TOML syntax error propagates as tomllib.TOMLDecodeError, for the caller to place."""
    check_lines(text, source)
    check_toml_shape(text, source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise LimitError(f"{source}: not readable as TOML ({type(exc).__name__})") from None


def check_toml_shape(text: str, source: str) -> None:
    """Refuse TOML nested deeper than MAX_TOML_DEPTH or with a key of more than
    MAX_TOML_KEY_PARTS dotted parts, before tomllib sees it.

    Not a TOML parser: it follows strings and comments exactly enough that a bracket
    or dot inside them is not counted, and over-counts rather than under-counts
    elsewhere.  Malformed text it does not understand is left to tomllib, which
    reports it; tomllib never gets deeper than the scan saw, as it reads in order."""
    depth = 0            # open [ and { in values
    braces: list[str] = []
    key_context = True   # at a line start, after '{' or ',' in an inline table
    header = False       # inside a [table] or [[table]] header
    parts = 1
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOML_TOKEN.search(text, pos)
        if m is None:
            break
        tok = m.group()
        pos = m.end()
        if tok in ('"""', "'''"):
            end = (_ML_BASIC_END if tok == '"""' else _ML_LITERAL_END).match(text, pos)
            pos = end.end() if end else n
        elif tok in ('"', "'"):
            end = (_BASIC_END if tok == '"' else _LITERAL_END).match(text, pos)
            pos = end.end() if end else n
        elif tok == "#":
            nl = text.find("\n", pos)
            pos = n if nl < 0 else nl
        elif tok == "\n":
            if not braces:  # a newline ends a key/value pair, except inside [ ]
                key_context, header, parts = True, False, 1
        elif tok == ".":
            if key_context or header:
                parts += 1
                if parts > MAX_TOML_KEY_PARTS:
                    raise LimitError(f"{source}:{text.count(chr(10), 0, pos) + 1}: a key of more than "
                                     f"{MAX_TOML_KEY_PARTS} dotted parts (MAX_TOML_KEY_PARTS)")
        elif tok == "=":
            key_context, parts = False, 1
        elif tok == "[" and not braces and key_context:
            header, key_context = True, False  # [table] or [[table]]
        elif tok in "[{":
            braces.append(tok)
            depth += 1
            if depth > MAX_TOML_DEPTH:
                raise LimitError(f"{source}:{text.count(chr(10), 0, pos) + 1}: arrays or inline tables nested "
                                 f"more than {MAX_TOML_DEPTH} deep (MAX_TOML_DEPTH)")
            key_context, parts = tok == "{", 1
        elif tok in "]}":
            if braces:
                braces.pop()
                depth -= 1
            key_context = False
        elif tok == ",":
            key_context, parts = bool(braces) and braces[-1] == "{", 1
    long = _LONG_DIGITS.search(text)
    if long:
        # tomllib hands such a number to int(), whose ValueError names no place.
        raise LimitError(f"{source}:{text.count(chr(10), 0, long.start()) + 1}: a number of "
                         f"{len(long.group()):,} digits; Python converts at most "
                         f"{INT_DIGITS:,} (Python's int_max_str_digits)")
