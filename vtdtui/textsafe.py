"""The one path by which outside text (names, paths, dmesg fields, error lines) reaches a
terminal or the screen (README, "Guarantees"; issue 14).

A unit name or a log field is the user's (or an attacker's) text: printed raw, an
`ESC[2J` clears the terminal, a CR overwrites the line before it, a lone surrogate
from a non-UTF-8 path raises UnicodeEncodeError in print(), and a `[b]` is Textual
markup.  Three functions, each safe to call on any str:

- `printable(s)`: every control character escaped, for a terminal line (CLI);
- `clip(s, limit)`: at most `limit` characters, cut with an ellipsis, so an error line
  never echoes megabytes of input;
- `markup(s)`: `printable` plus Textual markup escaping, for widgets that parse
  markup (the TUI).
"""

from __future__ import annotations

import re

# What a terminal acts on or cannot print: C0 controls (ESC, CR, BEL, BS, LF, TAB...),
# DEL, C1 controls (U+0080-U+009F; 0x9B is a one-byte CSI on some terminals), the
# line/paragraph separators, the bidi embeddings/overrides/isolates (which reorder
# what the reader sees: "Trojan Source"), BOM/zero-width no-break space, and lone
# surrogates (os.fsdecode of a non-UTF-8 name: unencodable on a UTF-8 stream).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)

ELLIPSIS = "…"
# How much of an input an error line quotes (issue 14: "never echo 10 MB of input").
QUOTE_LIMIT = 80


def _escape_one(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(s: str) -> str:
    """`s` with every control character shown as an escape (`\\x1b`, `\\x0d`, `\\u202e`),
    so that it prints as exactly one line and changes nothing on the terminal.

    A backslash is left as is: the result is for reading, not for parsing back."""
    return _UNSAFE.sub(_escape_one, s)


def clip(s: str, limit: int = QUOTE_LIMIT) -> str:
    """`s` cut to at most `limit` characters, the last of them an ellipsis when cut."""
    if len(s) <= limit:
        return s
    return s[: max(limit - 1, 0)] + ELLIPSIS


def quote(s: str, limit: int = QUOTE_LIMIT) -> str:
    """`s` clipped then escaped, in single quotes: how an error line cites a user's value."""
    return "'" + printable(clip(s, limit)) + "'"


def markup(s: str) -> str:
    """`printable(s)` escaped for Textual markup (Static, Label, notify, the status
    line): a name such as `[b]`, `[/]`, `[$var]` or `[@click=quit]` shows as written
    instead of being parsed as a tag (MarkupError, or an action run on click).

    Every `[` becomes `\\[`: Textual's parser reads that back as `[` whatever precedes
    it, so the round trip is exact (tests/test_hardening_cli.py checks it).  Rich's own
    `escape` is not enough for Textual (it leaves `[$var]` and `[0]` alone)."""
    return printable(s).replace("[", "\\[")
