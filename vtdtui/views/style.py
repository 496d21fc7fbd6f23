"""The line type every view returns, and the style tokens it may use.

A line is a tuple of segments; a segment is (text, token).  Tokens, by meaning:
  ""        normal text          dim      secondary detail
  head      a heading            key      a field name or label
  on / off  a bit set / clear      badge-on / badge-off  the same, as a badge
  issued / skipped               journal outcomes
  stale     a cached entry that no longer matches memory
  warn      something a kernel developer should look at (non-coherent, refused)
  bad       an error or a fault  np       a not-present (negative) entry
  addr      an address or raw value   sel   the selected unit or group
"""

from __future__ import annotations

Seg = tuple[str, str]
Line = tuple[Seg, ...]

TOKENS = ("", "dim", "head", "key", "on", "off", "badge-on", "badge-off", "issued", "skipped", "stale", "warn", "bad",
          "np", "addr", "sel")


def plain(text: str, token: str = "") -> Line:
    return ((text, token),)


def text_of(line: Line) -> str:
    return "".join(t for t, _ in line)


def badge(name: str, on: bool) -> Seg:
    return (f" {name} {'1' if on else '0'} ", "badge-on" if on else "badge-off")


def hexs(n: int) -> str:
    return f"0x{n:x}"
