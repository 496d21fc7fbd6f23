"""Settings and key remapping: `$XDG_CONFIG_HOME/vtdtui/config.toml` (else
`~/.config/vtdtui/config.toml`).

    theme = "vtdtui-projector"      # any name `--theme` takes
    [keys]                          # Binding id → key, or keys ("z,Z" or ["z", "Z"])
    toggle-cm = "M"
    zoom = ["z", "Z"]

The ids are those of tui/bindings.py (the help screen lists them).  A file that says
something the app cannot do (an unknown setting, id, key or theme, a key taken twice)
is bad input like any other: one line naming file:line, exit status 2 — a speaker
finds the typo at home, not in front of the room.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from textual.app import App
from textual.binding import Binding

from ..limits import LimitError, load_toml, read_bounded
from ..replay.keys import KeyNameError, check_key, did_you_mean, key_event
from .bindings import BINDINGS
from .mainscreen import MainScreen
from .panes import PANES
from .theme import DEFAULT_THEME, theme_names

# A settings file is a few lines; anything much larger is not one.
MAX_CONFIG_BYTES = 64 << 10
SETTINGS = ("theme", "keys")


class ConfigError(ValueError):
    """Bad settings; str() is 'place: what'."""


@dataclass
class Config:
    path: Path | None = None             # the file read, None when there is none
    theme: str | None = None
    keymap: dict[str, str] = field(default_factory=dict)  # Binding id → "key,key"


def config_path(env: dict[str, str] | None = None) -> Path:
    """Where the settings live, by the XDG base directory rules (a relative
    XDG_CONFIG_HOME is ignored, as the spec says)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "vtdtui" / "config.toml"


def check_theme(name: str, place: str) -> str:
    """`name` when it is a theme; else ConfigError naming `place` and every theme."""
    names = theme_names()
    if name in names:
        return name
    raise ConfigError(f"{place}: no theme {name!r}{did_you_mean(name, names)}; themes: {', '.join(names)}")


def remappable() -> dict[str, Binding]:
    """Binding id → binding, for every binding a keymap may move."""
    out: dict[str, Binding] = {}
    for b in [*BINDINGS, *MainScreen.BINDINGS]:
        if b.id:
            out[b.id] = b
    for cls in PANES:
        for klass in cls.__mro__:
            for b in klass.__dict__.get("BINDINGS", ()):
                if isinstance(b, Binding) and b.id:
                    out.setdefault(b.id, b)
    return out


def _fixed_keys() -> dict[str, str]:
    """Keys no keymap may take, and what they do: the panes' own keys (no id), the
    app's quit and palette keys, Enter and Escape of every pane and prompt."""
    fixed = {"ctrl+p": "the command palette", "enter": "Enter", "escape": "Escape"}
    for b in App.BINDINGS:
        if isinstance(b, Binding):
            fixed.setdefault(b.key, b.action)
    for cls in PANES:
        for klass in cls.__mro__:
            for b in klass.__dict__.get("BINDINGS", ()):
                if isinstance(b, Binding) and not b.id:
                    for k in b.key.split(","):
                        fixed.setdefault(k.strip(), f"{b.description or b.action} in a pane")
    return fixed


def _line_of(text: str, key: str, table: str = "") -> int:
    """The line of `key = ...` (in `[table]` when given), for the error's file:line."""
    current = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            current = line.split("#", 1)[0].strip("[] \t")
            if not table and current == key:  # the table `key` itself
                return n
            continue
        if current != table:
            continue
        name = line.split("=", 1)[0].strip().strip("\"'")
        if "=" in line and name == key:
            return n
    return 1


def _keys_of(value: object, place: str) -> list[str]:
    if isinstance(value, str):
        keys = [k.strip() for k in value.split(",")]
    elif isinstance(value, list) and all(isinstance(k, str) for k in value):
        keys = [k.strip() for k in value]
    else:
        raise ConfigError(f"{place}: wants a key name, a list of them, or \"key,key\"")
    if not keys or any(not k for k in keys):
        raise ConfigError(f"{place}: an empty key name")
    out = []
    for k in keys:
        try:
            check_key(k)
        except KeyNameError as exc:
            raise ConfigError(f"{place}: {exc}") from None
        out.append(key_event(k)[0])  # '?' is question_mark, as Textual names it
    return out


def keymap_from(table: object, text: str, source: str) -> dict[str, str]:
    """The [keys] table, checked: every id a binding's, every key a key, no key for
    two actions, none that a pane or the app keeps for itself."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}:{_line_of(text, 'keys')}: 'keys' must be a table ([keys])")
    ids = remappable()
    fixed = _fixed_keys()
    keymap: dict[str, list[str]] = {}
    for bid, value in table.items():
        place = f"{source}:{_line_of(text, bid, 'keys')}: [keys] {bid}"
        if bid not in ids:
            raise ConfigError(f"{place}: no such binding id{did_you_mean(bid, sorted(ids))} "
                              f"(ids: {', '.join(sorted(ids))})")
        keymap[bid] = _keys_of(value, place)
    # The keys every binding ends up with: its own unless the keymap moves it.
    owner: dict[str, str] = {}
    for bid, b in ids.items():
        for k in keymap.get(bid, [k.strip() for k in b.key.split(",")]):
            other = owner.get(k)
            if other is not None and other != bid:
                moved = bid if bid in keymap else other
                place = f"{source}:{_line_of(text, moved, 'keys')}: [keys] {moved}"
                raise ConfigError(f"{place}: key {k!r} is also {other if moved == bid else bid}'s; "
                                  "move that one too, or pick another key")
            owner[k] = bid
    for bid, keys in keymap.items():
        for k in keys:
            if k in fixed:
                place = f"{source}:{_line_of(text, bid, 'keys')}: [keys] {bid}"
                raise ConfigError(f"{place}: key {k!r} is kept for {fixed[k]}; pick another key")
    return {bid: ",".join(keys) for bid, keys in keymap.items()}


def parse(data: bytes, source: str) -> Config:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not UTF-8 text") from None
    try:
        doc = load_toml(text, source)
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line 3, column 7)": the line goes where ours go.
        msg = str(exc)
        line = getattr(exc, "lineno", None)
        if line is None and "(at line " in msg:
            try:
                line = int(msg.rsplit("(at line ", 1)[1].split(",")[0])
            except ValueError:
                line = None
        raise ConfigError(f"{source}:{line or 1}: not TOML: {msg}") from None
    for key in doc:
        if key not in SETTINGS:
            raise ConfigError(f"{source}:{_line_of(text, key)}: unknown setting {key!r}"
                              f"{did_you_mean(key, SETTINGS)} (settings: {', '.join(SETTINGS)})")
    cfg = Config()
    if "theme" in doc:
        place = f"{source}:{_line_of(text, 'theme')}: theme"
        if not isinstance(doc["theme"], str):
            raise ConfigError(f"{place}: wants a theme name in quotes")
        cfg.theme = check_theme(doc["theme"], place)
    if "keys" in doc:
        cfg.keymap = keymap_from(doc["keys"], text, source)
    return cfg


def load(path: Path | None = None) -> Config:
    """The settings at `path` (default: config_path()); none when there is no file."""
    path = config_path() if path is None else path
    try:
        data = read_bounded(str(path), MAX_CONFIG_BYTES, "MAX_CONFIG_BYTES")
    except FileNotFoundError:
        return Config()
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    cfg = parse(data, str(path))
    cfg.path = path
    return cfg


def settings(theme_arg: str | None, *, config: bool = True, path: Path | None = None) -> tuple[str, dict[str, str]]:
    """(theme, keymap) for a run: --theme over the file's theme over the default;
    `config` False reads no file (a headless replay is the same on every machine)."""
    cfg = load(path) if config else Config()
    theme = check_theme(theme_arg, "--theme") if theme_arg is not None else (cfg.theme or DEFAULT_THEME)
    return theme, cfg.keymap
