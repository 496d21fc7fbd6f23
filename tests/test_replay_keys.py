"""Key names without Textual (vtdtui.replay.keys) must agree with Textual itself:
a fixture line has to deliver exactly the events Pilot would send."""

from __future__ import annotations

import string
import unicodedata

import pytest
from textual.keys import REPLACED_KEYS, Keys, _character_to_key, _get_unicode_name_from_key

from vtdtui.replay import KeyNameError, check_key, key_event, typed
from vtdtui.replay.keys import char_to_key

# Keys values a fixture may name: not the internal '<any>'-style ones, nor the
# 'ctrl-at' alias (its real name is ctrl+@).
KEYS = sorted({k.value for k in Keys if not k.value.startswith("<") and k.value != "ctrl-at"})
PRINTABLE = [c for c in string.printable if c.isprintable()]  # ' ' .. '~'
CHARS = [c for c in PRINTABLE if c != " "]  # a space is never a token in a `keys` line
CHAR_NAMES = sorted({_character_to_key(c) for c in PRINTABLE})
EXTRA = ["space", "enter", "escape", "tab", "backspace", "delete", "question_mark", "full_stop",
         "left_square_bracket", "ctrl+r", "f5"]
TOKENS = sorted(set(KEYS + PRINTABLE + CHAR_NAMES + EXTRA))

# Unicode names with a hyphen (HYPHEN-MINUS, LESS-THAN SIGN) that key names flatten.
HYPHENATED = ["minus", "-", "less_than_sign", "<", "greater_than_sign", ">"]


def textual_event(key: str) -> tuple[str, str | None]:
    """The (key, character) App._press_keys builds for one key (textual/app.py)."""
    if len(key) == 1 and not key.isalnum():
        key = _character_to_key(key)
    original = REPLACED_KEYS.get(key, key)
    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(original))
    except KeyError:
        char = key if len(key) == 1 else None
    return key, char


def test_token_sets_are_broad():
    assert len(KEYS) > 100 and len(PRINTABLE) == 95
    assert {"ctrl+r", "shift+tab", "f24", "ctrl+shift+up", "escape", "space"} <= set(KEYS)


@pytest.mark.parametrize("token", KEYS)
def test_accepts_every_textual_key(token):
    check_key(token)


@pytest.mark.parametrize("ch", CHARS)
def test_accepts_printable_character(ch):
    check_key(ch)


@pytest.mark.parametrize("name", CHAR_NAMES)
def test_accepts_textual_character_name(name):
    check_key(name)


@pytest.mark.parametrize("token", ["ctrl+r", "shift+tab", "ctrl+shift+up", "alt+x", "ctrl+@", "ctrl++",
                                   "meta+question_mark", "super+f12", "hyper+home", "shift+A", "+"])
def test_accepts_modifier_combos(token):
    check_key(token)


@pytest.mark.parametrize("token", ["entr", "ctrl+", "foo+a", "ctrl+ctrl+a", "", " ", "Enter", "SPACE",
                                   "ctrl+entr", "f25", "null", "latin_small_letter_a", "no_break_space",
                                   "\t", "+ctrl", "ctrl-r", "<any>"])
def test_rejects_nonsense(token):
    with pytest.raises(KeyNameError) as info:
        check_key(token)
    assert repr(token) in str(info.value)


def test_rejection_suggests_a_name():
    with pytest.raises(KeyNameError, match=r"did you mean 'enter'\?"):
        check_key("entr")
    with pytest.raises(KeyNameError, match=r"modifiers: ctrl, shift, alt"):
        check_key("foo+a")


@pytest.mark.parametrize("token", TOKENS)
def test_key_event_matches_textual(token):
    assert key_event(token) == textual_event(token)


def test_key_event_examples():
    # Pinned so the agreement test above cannot pass by both sides being wrong.
    assert key_event("a") == ("a", "a")
    assert key_event("?") == ("question_mark", "?")
    assert key_event("question_mark") == ("question_mark", "?")
    assert key_event("space") == ("space", " ")
    assert key_event("slash") == ("slash", "/")
    assert key_event("enter") == ("enter", None)
    assert key_event("ctrl+r") == ("ctrl+r", None)
    assert key_event("escape") == ("escape", "\x1b")


def test_typed():
    assert typed("0x10 rw") == [("0", "0"), ("x", "x"), ("1", "1"), ("0", "0"), ("space", " "),
                                ("r", "r"), ("w", "w")]
    assert typed("") == []


@pytest.mark.parametrize("ch", PRINTABLE)
def test_typed_matches_textual(ch):
    assert typed(ch) == [(_character_to_key(ch), ch)]


@pytest.mark.parametrize("ch", PRINTABLE + ["é", "ß", "€", "Ω", "ü"])
def test_char_to_key_matches_textual(ch):
    assert char_to_key(ch) == _character_to_key(ch)


@pytest.mark.parametrize("token", HYPHENATED)
def test_hyphenated_unicode_names_keep_their_character(token):
    key, ch = key_event(token)
    assert ch is not None and ch == textual_event(token)[1]
