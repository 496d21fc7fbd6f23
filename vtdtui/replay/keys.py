"""Textual key names, without Textual: what a fixture may say after `keys`, and the
(key, character) pair a key press delivers.

The rules mirror textual.keys (`_character_to_key`, `KEY_NAME_REPLACEMENTS`) and
`App._press_keys`, so a fixture line means exactly what Pilot would send; a test
checks that the two agree.
"""

from __future__ import annotations

import difflib
import unicodedata
from functools import lru_cache

MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")

# Keys that are not characters (textual.keys.Keys, modifiers stripped).
NAMED = frozenset(
    ("escape", "enter", "return", "tab", "backspace", "space", "up", "down", "left", "right",
     "home", "end", "insert", "delete", "pageup", "pagedown")
    + tuple(f"f{i}" for i in range(1, 25))
)

# Textual's friendlier names for some characters, both ways.
_REPLACEMENTS = {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at",
                 "hyphen_minus": "minus", "plus_sign": "plus", "low_line": "underscore"}
_ORIGINAL = {v: k for k, v in _REPLACEMENTS.items()}


class KeyNameError(ValueError):
    """Not a key name Textual would deliver."""


def char_to_key(ch: str) -> str:
    """The key name Textual gives a typed character ('?' → 'question_mark', 'a' → 'a')."""
    if ch.isalnum():
        return ch
    try:
        key = unicodedata.name(ch).lower().replace("-", "_").replace(" ", "_")
    except ValueError:
        return ch
    return _REPLACEMENTS.get(key, key)


# Unicode names mix spaces and hyphens ("LESS-THAN SIGN"), which the key names flatten
# to underscores; for ASCII, where fixtures live, look the name up directly.
_ASCII = {char_to_key(chr(c)): chr(c) for c in range(33, 127)}


@lru_cache(4096)
def _char_of_name(name: str) -> str | None:
    """The character a character key name stands for, or None."""
    if name in _ASCII:
        return _ASCII[name]
    original = _ORIGINAL.get(name, name)
    for guess in (original.replace("_", " "), original.replace("_", "-"), original):
        try:
            ch = unicodedata.lookup(guess)
        except KeyError:
            continue
        if char_to_key(ch) == name and ch.isprintable():
            return ch
    return None


def _base_ok(base: str) -> bool:
    if len(base) == 1:
        return base.isprintable() and not base.isspace()
    return base in NAMED or _char_of_name(base) is not None


def check_key(token: str) -> None:
    """Raise KeyNameError unless `token` is a key name: a printable character, a
    named key (enter, escape, up, f5 ...), a character name (question_mark,
    full_stop ...), each optionally after modifiers (ctrl+, shift+, alt+ ...)."""
    if len(token) > 1 and "+" in token:
        *mods, base = token.split("+")
        if base == "" and token.endswith("++"):
            mods, base = mods[:-1], "+"
        bad = [m for m in mods if m not in MODIFIERS]
        if bad or not mods or base == "":
            raise KeyNameError(f"unknown key name {token!r} (modifiers: {', '.join(MODIFIERS)})")
        if len(set(mods)) != len(mods):
            raise KeyNameError(f"unknown key name {token!r} (a modifier twice)")
    else:
        base = token
    if not _base_ok(base):
        raise KeyNameError(f"unknown key name {token!r}{did_you_mean(base, _COMMON)}")


_COMMON = sorted(NAMED | {char_to_key(chr(c)) for c in range(33, 127)})


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def key_event(token: str) -> tuple[str, str | None]:
    """(key, character) of the event a key name delivers, as Pilot builds it."""
    key = token
    if len(key) == 1 and not key.isalnum():
        key = char_to_key(key)
    if len(key) == 1:
        return key, key
    if key in _ASCII:
        return key, _ASCII[key]
    original = _ORIGINAL.get(key, key)
    for guess in (original.replace("_", " "), original):
        try:
            return key, unicodedata.lookup(guess)
        except KeyError:
            continue
    return key, None


def typed(text: str) -> list[tuple[str, str]]:
    """The key events that type `text`, one per character."""
    return [(char_to_key(ch), ch) for ch in text]
