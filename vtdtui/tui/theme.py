"""Style tokens of the views → Rich styles: high contrast, readable on a projector."""

from __future__ import annotations

from rich.style import Style

THEME: dict[str, Style] = {
    "": Style(color="#e6edf3"),
    "dim": Style(color="#9aa7b4"),
    "head": Style(color="#7fd1ff", bold=True),
    "key": Style(color="#d2bfff"),
    "on": Style(color="#56d364", bold=True),
    "off": Style(color="#8b949e"),
    "badge-on": Style(color="#0d1117", bgcolor="#56d364", bold=True),
    "badge-off": Style(color="#e6edf3", bgcolor="#484f58"),
    "issued": Style(color="#56d364", bold=True),
    "skipped": Style(color="#e3b341"),
    "stale": Style(color="#ff7b72", bold=True),
    "warn": Style(color="#ffa657", bold=True),
    "bad": Style(color="#ff5f5f", bold=True),
    "np": Style(color="#b4a7ff", italic=True),
    "addr": Style(color="#79c0ff"),
    "sel": Style(color="#0d1117", bgcolor="#ffd866", bold=True),
}
CURSOR = Style(bgcolor="#2f4f7a")
CURSOR_UNFOCUSED = Style(bgcolor="#262c36")
