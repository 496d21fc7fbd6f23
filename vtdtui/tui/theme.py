"""Colours through Textual themes: the view tokens → Rich styles, and the app's own
CSS variables ($vtd-*), both derived from the theme's variables, so that every
Textual theme (light ones too) colours every pane.

Two themes of our own: "vtdtui" (the default: the colours the app always had, so a
talk's slides do not change) and "vtdtui-projector" (light, high contrast, tokens far
apart: a washed-out projector still tells issued from skipped).  Any other theme
gets the $vtd-* variables derived from its standard ones (see `vtd_variables`).
"""

from __future__ import annotations

from functools import lru_cache

from rich.style import Style
from textual.color import Color, ColorParseError
from textual.theme import BUILTIN_THEMES, Theme

DEFAULT_THEME = "vtdtui"
PROJECTOR_THEME = "vtdtui-projector"

# A token's style: (colour variable, background variable or "", Rich attributes).
# The colour "auto" is black or white, whichever reads on the background.
TOKEN_VARS: dict[str, tuple[str, str, str]] = {
    "": ("vtd-text", "", ""),
    "dim": ("vtd-dim", "", ""),
    "head": ("vtd-head", "", "bold"),
    "key": ("vtd-key", "", ""),
    "on": ("vtd-on", "", "bold"),
    "off": ("vtd-off", "", ""),
    "badge-on": ("vtd-badge-on-text", "vtd-badge-on", "bold"),
    "badge-off": ("vtd-badge-off-text", "vtd-badge-off", ""),
    "issued": ("vtd-issued", "", "bold"),
    "skipped": ("vtd-skipped", "", ""),
    "stale": ("vtd-stale", "", "bold"),
    "warn": ("vtd-warn", "", "bold"),
    "bad": ("vtd-bad", "", "bold"),
    "np": ("vtd-np", "", "italic"),
    "addr": ("vtd-addr", "", ""),
    "sel": ("vtd-sel-text", "vtd-sel", "bold"),
}

# $vtd-* for a theme that does not set them: (standard variable, or a recipe).
# ("mix", A, B, f) is A with f of B over it; ("on", A) the text colour that reads on A.
_DERIVED: dict[str, object] = {
    "vtd-background": "background",
    "vtd-text": "foreground",
    "vtd-bar": "surface",            # the context line, the tab strip, prompts, help
    "vtd-bar-text": "foreground",
    "vtd-status": "panel",
    "vtd-status-text": "foreground",
    "vtd-error-bar": "error-muted",  # the status line saying no
    "vtd-error-bar-text": "text-error",
    "vtd-caption": "primary-muted",  # the replay banner
    "vtd-caption-text": "foreground",
    "vtd-border": ("mix", "background", "foreground", 0.3),
    "vtd-focus": "primary",
    "vtd-whatif": "error",           # the what-if badge: a what-if is not the real rule
    "vtd-whatif-text": ("on", "error"),
    "vtd-rec": "text-error",
    "vtd-dim": "text-muted",
    "vtd-head": "text-primary",
    "vtd-key": "text-secondary",
    "vtd-on": "text-success",
    "vtd-off": "foreground-muted",
    "vtd-badge-on": "success",
    "vtd-badge-on-text": ("on", "success"),
    "vtd-badge-off": ("mix", "background", "foreground", 0.25),
    "vtd-badge-off-text": "foreground",
    "vtd-issued": "text-success",
    "vtd-skipped": "text-warning",
    "vtd-stale": "text-error",
    "vtd-warn": "text-accent",
    "vtd-bad": "text-error",
    "vtd-np": "text-secondary",
    "vtd-addr": "text-primary",
    "vtd-sel": "accent",
    "vtd-sel-text": ("on", "accent"),
    "vtd-cursor": ("mix", "background", "primary", 0.35),
    "vtd-cursor-blurred": ("mix", "background", "foreground", 0.12),
    "vtd-hint": "text-success",
    "vtd-hint-error": "text-error",
}
VTD_VARIABLES = tuple(_DERIVED)

# Textual's own parts (footer, palette, prompts' input) keep the look they always had:
# the default theme is textual-dark underneath, with the panes' colours on top.
_BASE = BUILTIN_THEMES["textual-dark"]

VTDTUI = Theme(
    name=DEFAULT_THEME,
    primary=_BASE.primary, secondary=_BASE.secondary, accent=_BASE.accent, warning=_BASE.warning,
    error=_BASE.error, success=_BASE.success, foreground=_BASE.foreground, dark=True,
    variables={
        "vtd-background": "#0d1117", "vtd-text": "#e6edf3",
        "vtd-bar": "#161b22", "vtd-bar-text": "#e6edf3",
        "vtd-status": "#1f2a37", "vtd-status-text": "#e6edf3",
        "vtd-error-bar": "#5a1d1d", "vtd-error-bar-text": "#ffdcd7",
        "vtd-caption": "#1f3a5f", "vtd-caption-text": "#ffffff",
        "vtd-border": "#3d4651", "vtd-focus": "#7fd1ff",
        "vtd-whatif": "#ff5f5f", "vtd-whatif-text": "#0d1117", "vtd-rec": "#ff5f5f",
        "vtd-dim": "#9aa7b4", "vtd-head": "#7fd1ff", "vtd-key": "#d2bfff",
        "vtd-on": "#56d364", "vtd-off": "#8b949e",
        "vtd-badge-on": "#56d364", "vtd-badge-on-text": "#0d1117",
        "vtd-badge-off": "#484f58", "vtd-badge-off-text": "#e6edf3",
        "vtd-issued": "#56d364", "vtd-skipped": "#e3b341", "vtd-stale": "#ff7b72",
        "vtd-warn": "#ffa657", "vtd-bad": "#ff5f5f", "vtd-np": "#b4a7ff", "vtd-addr": "#79c0ff",
        "vtd-sel": "#ffd866", "vtd-sel-text": "#0d1117",
        "vtd-cursor": "#2f4f7a", "vtd-cursor-blurred": "#262c36",
        "vtd-hint": "#56d364", "vtd-hint-error": "#ff7b72",
    },
)

# Light and hard: black text on white, saturated dark colours for the tokens, and
# skipped / stale / bad bold, so they survive a projector's lamp.
PROJECTOR = Theme(
    name=PROJECTOR_THEME,
    primary="#0033aa", secondary="#6a00a8", accent="#b35900", warning="#a04800", error="#c00000",
    success="#006b1f", foreground="#000000", background="#ffffff", surface="#eeeeee", panel="#e2e8f0",
    dark=False,
    variables={
        "vtd-background": "#ffffff", "vtd-text": "#000000",
        "vtd-bar": "#e8e8e8", "vtd-bar-text": "#000000",
        "vtd-status": "#dde6f3", "vtd-status-text": "#000000",
        "vtd-error-bar": "#c00000", "vtd-error-bar-text": "#ffffff",
        "vtd-caption": "#0033aa", "vtd-caption-text": "#ffffff",
        "vtd-border": "#555555", "vtd-focus": "#0033aa",
        "vtd-whatif": "#c00000", "vtd-whatif-text": "#ffffff", "vtd-rec": "#c00000",
        "vtd-dim": "#444444", "vtd-head": "#0033aa", "vtd-key": "#6a00a8",
        "vtd-on": "#006b1f", "vtd-off": "#555555",
        "vtd-badge-on": "#006b1f", "vtd-badge-on-text": "#ffffff",
        "vtd-badge-off": "#d0d0d0", "vtd-badge-off-text": "#000000",
        "vtd-issued": "#006b1f", "vtd-skipped": "#8a6a00", "vtd-stale": "#c00000",
        "vtd-warn": "#b35900", "vtd-bad": "#c00000", "vtd-np": "#6a00a8", "vtd-addr": "#00509e",
        "vtd-sel": "#ffd200", "vtd-sel-text": "#000000",
        "vtd-cursor": "#b8d0ff", "vtd-cursor-blurred": "#e4e4e4",
        "vtd-hint": "#006b1f", "vtd-hint-error": "#c00000",
    },
)

THEMES: tuple[Theme, ...] = (VTDTUI, PROJECTOR)


def theme_names() -> list[str]:
    """Every theme --theme takes: ours first, then Textual's."""
    return [t.name for t in THEMES] + sorted(n for n in BUILTIN_THEMES if n not in {t.name for t in THEMES})


def _parse(value: str, bg: Color) -> Color | None:
    """A CSS colour value as Textual writes them ("#rrggbbaa", "auto 60%", "ansi_red",
    "$x 50%" resolved already), flattened onto `bg`; None when it is no colour."""
    parts = value.split()
    alpha = 1.0
    if len(parts) > 1 and parts[-1].endswith("%"):
        try:
            alpha = float(parts[-1][:-1]) / 100
        except ValueError:
            return None
        parts = parts[:-1]
    text = " ".join(parts)
    try:
        c = bg.get_contrast_text(1.0) if text == "auto" else Color.parse(text)
    except ColorParseError:
        return None
    if c.ansi is not None or bg.ansi is not None:
        return c  # a terminal's own palette: nothing to blend
    c = c.with_alpha(c.a * alpha)
    return bg + c if c.a < 1 else c


def _css(c: Color) -> str:
    if c.ansi is not None:
        return "ansi_default" if c.ansi < 0 else _ANSI[c.ansi]
    return c.hex


_ANSI = ["ansi_black", "ansi_red", "ansi_green", "ansi_yellow", "ansi_blue", "ansi_magenta", "ansi_cyan",
         "ansi_white", "ansi_bright_black", "ansi_bright_red", "ansi_bright_green", "ansi_bright_yellow",
         "ansi_bright_blue", "ansi_bright_magenta", "ansi_bright_cyan", "ansi_bright_white"]


def vtd_variables(variables: dict[str, str]) -> dict[str, str]:
    """`variables` (a theme's CSS variables) with every $vtd-* one it lacks, derived
    from its standard ones and resolved to plain colours (Rich styles need them)."""
    out = dict(variables)
    bg = _parse(variables.get("background", "#000000"), Color(0, 0, 0)) or Color(0, 0, 0)
    fg_default = bg.get_contrast_text(1.0)

    def colour(name: str) -> Color:
        got = _parse(variables.get(name, ""), bg)
        return got if got is not None else fg_default

    for name, recipe in _DERIVED.items():
        if name in variables and _parse(variables[name], bg) is not None:
            continue
        if isinstance(recipe, str):
            c = colour(recipe)
        elif recipe[0] == "mix":
            _, a, b, f = recipe
            ca, cb = colour(a), colour(b)
            c = ca if ca.ansi is not None or cb.ansi is not None else ca.blend(cb, f)
        else:  # ("on", A)
            base = colour(recipe[1])
            c = fg_default if base.ansi is not None else base.get_contrast_text(1.0)
        out[name] = _css(c)
    return out


@lru_cache(maxsize=32)
def _styles(items: tuple[tuple[str, str], ...]) -> dict[str, Style]:
    variables = dict(items)
    bg = _parse(variables.get("vtd-background", "#000000"), Color(0, 0, 0)) or Color(0, 0, 0)
    out: dict[str, Style] = {}
    for token, (fg_name, bg_name, attrs) in TOKEN_VARS.items():
        back = _parse(variables[bg_name], bg) if bg_name else None
        fore = _parse(variables[fg_name], back or bg)
        out[token] = Style.parse(attrs) + Style(color=fore.rich_color if fore else None,
                                                bgcolor=back.rich_color if back else None)
    for token, name in (("cursor", "vtd-cursor"), ("cursor-blurred", "vtd-cursor-blurred")):
        c = _parse(variables[name], bg)
        # A terminal's own palette has no shade to spare: the cursor row is reversed.
        out[token] = Style(reverse=True) if c is None or c.ansi is not None else Style(bgcolor=c.rich_color)
    return out


def token_styles(variables: dict[str, str]) -> dict[str, Style]:
    """Rich style of every view token (and of the cursor rows: "cursor",
    "cursor-blurred"), for a theme's CSS variables (App.theme_variables)."""
    full = vtd_variables(variables)
    return _styles(tuple(sorted((k, v) for k, v in full.items() if k.startswith("vtd-"))))


# The default theme's styles, for code that draws without an app.
THEME: dict[str, Style] = token_styles(VTDTUI.to_color_system().generate() | VTDTUI.variables)
CURSOR = THEME["cursor"]
CURSOR_UNFOCUSED = THEME["cursor-blurred"]
