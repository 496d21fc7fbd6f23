"""SVG screenshots that look the same on every machine, offline.

Rich's SVG export asks for Fira Code from a CDN: offline (a conference room, a CI
artifact) the viewer falls back to whatever it likes, and where Fira Code is found its
ligatures draw `0x1000` as `0×1000` and `->` as an arrow — wrong in a slide about
addresses.  Every SVG vtdtui writes goes through `offline_svg`: no @font-face, no
URL, fonts that ship with the common systems named with a generic fallback, and
ligatures and contextual alternates off.
"""

from __future__ import annotations

import re

MONO_FONTS = '"DejaVu Sans Mono", "Menlo", "Consolas", "Liberation Mono", "Courier New", monospace'
TITLE_FONTS = '"DejaVu Sans", "Helvetica Neue", "Arial", sans-serif'
NO_LIGATURES = 'font-variant-ligatures: none;\n        font-feature-settings: "liga" 0, "calt" 0;'

_FONT_FACE = re.compile(r"[ \t]*@font-face\s*\{[^}]*\}\s*\n?")
_MATRIX_FONT = re.compile(r"(\.[\w-]*matrix\s*\{[^}]*?)font-family:[^;]*;")
_TITLE_FONT = re.compile(r"(\.[\w-]*title\s*\{[^}]*?)font-family:[^;]*;")
_URL = re.compile(r"url\([^)]*\)(\s*format\([^)]*\))?")


def offline_svg(svg: str) -> str:
    """`svg` (Rich / Textual export) with local fonts and no ligatures.  Only the
    <style> block changes: the screen's text stays as it was, whatever it says."""
    start = svg.find("<style>")
    end = svg.find("</style>", start)
    if start < 0 or end < 0:
        return svg
    style = _FONT_FACE.sub("", svg[start:end])
    style = _MATRIX_FONT.sub(lambda m: f"{m.group(1)}font-family: {MONO_FONTS};\n        {NO_LIGATURES}", style,
                             count=1)
    style = _TITLE_FONT.sub(lambda m: f"{m.group(1)}font-family: {TITLE_FONTS};", style, count=1)
    # Anything else that would fetch a font (another export's @import or url()).
    style = _URL.sub("none", re.sub(r"@import[^;]*;", "", style))
    return svg[:start] + style + svg[end:]
