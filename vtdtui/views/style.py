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

import unicodedata

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


def cells(text: str) -> int:
    """Terminal cells `text` takes: wide (East Asian) characters two, combining marks none."""
    n = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


def wrap(line: Line, width: int, indent: int = 0) -> list[Line]:
    """`line` over as many lines as it needs, none wider than `width` cells: broken at
    spaces (the space at a break is dropped), a word longer than a line cut where it
    must; continuation lines start with `indent` spaces.  Tokens stay with their text,
    so nothing but the breaking spaces is lost."""
    width = max(width, 1)
    indent = indent if indent < width // 2 else 0
    # Words as runs of (char, token); a break may fall only on a space.
    out: list[list[Seg]] = [[]]
    used = 0

    def put(text: str, token: str) -> None:
        row = out[-1]
        if row and row[-1][1] == token:
            row[-1] = (row[-1][0] + text, token)
        else:
            row.append((text, token))

    def newline() -> None:
        nonlocal used
        out.append([(" " * indent, "")] if indent else [])
        used = indent

    chars = [(ch, tok) for text, tok in line for ch in text]
    i = 0
    while i < len(chars):
        if chars[i][0] == " ":
            j = i
            while j < len(chars) and chars[j][0] == " ":
                j += 1
            k = j
            while k < len(chars) and chars[k][0] != " ":
                k += 1
            word = sum(cells(c) for c, _ in chars[j:k])
            gap = j - i
            if k > j and used + gap + word > width and used > indent and word <= width - indent:
                newline()  # break here: the spaces go
            else:
                for c, tok in chars[i:j]:
                    if used + 1 > width:
                        newline()
                        break
                    put(c, tok)
                    used += 1
            i = j
            continue
        c, tok = chars[i]
        w = cells(c)
        if used + w > width and used > indent:
            newline()
        put(c, tok)
        used += w
        i += 1
    return [tuple(row) for row in out]
