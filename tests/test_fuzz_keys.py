"""Keystroke fuzzing of the real app: random keys (global keys, pane keys, prompt
text, the palette, help, escape and enter everywhere) with random terminal resizes,
on all three scenarios.  Nothing may raise, the machine's invariants must hold
throughout, what the app shows must be what the machine is, and q must still quit.

The budget is bounded for CI; VTDTUI_FUZZ_KEYS sets the keys per scenario (nightly:
e.g. VTDTUI_FUZZ_KEYS=20000) and VTDTUI_FUZZ_SEED the seed.
"""

from __future__ import annotations

import os
import random

import pytest
from textual.events import Key

from vtdtui.machine import Machine
from vtdtui.machine.invariants import check
from vtdtui.machine.state import to_json_text
from vtdtui.tui.app import VtdApp
from vtdtui.tui.replayer import settle

KEYS = int(os.environ.get("VTDTUI_FUZZ_KEYS", "700"))
SEED = int(os.environ.get("VTDTUI_FUZZ_SEED", "20261121"))

GLOBAL = ["m", "c", "s", "]", "[", "g", "a", "d", "n", "x", "t", "u", "ctrl+r", "f", "i", "k", "l", "o", "p",
          "v", "w", "z", "slash", "colon", "question_mark", "ctrl+p", "tab", "shift+tab",
          "1", "2", "3", "4", "5", "6", "7", "ctrl+s", "R"]
PANE = ["up", "down", "pageup", "pagedown", "home", "end", "left", "right", "space", "backspace", "enter"]
TEXT = list("0123456789abcdefxKMGrw-=.") + ["space", "colon", "backspace", "enter", "escape"]
CHARS = {"space": " ", "enter": "\r", "escape": "\x1b", "backspace": "\x7f", "slash": "/", "colon": ":",
         "question_mark": "?"}
SIZES = [(160, 50), (80, 24), (100, 30), (140, 40), (60, 20), (200, 60)]


def _key(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return rng.choice(GLOBAL)
    if r < 0.70:
        return rng.choice(PANE)
    if r < 0.97:
        return rng.choice(TEXT)
    return "escape"


@pytest.mark.parametrize("scenario", ["desktop", "server", "viommu"])
async def test_random_keys_and_resizes_never_break_the_app(scenario, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # screenshots and recordings land here
    rng = random.Random(f"{SEED}/{scenario}")
    m = Machine.from_scenario(scenario)
    app = VtdApp(m)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        for i in range(KEYS):
            key = _key(rng)
            # As the terminal delivers a key (Pilot's press sleeps between keys).
            app.post_message(Key(key, key if len(key) == 1 else CHARS.get(key)))
            await settle(app)
            if i % 97 == 0:
                await pilot.resize_terminal(*rng.choice(SIZES))
            if i % 50 == 49:
                await pilot.pause()
                assert check(m) == [], f"after key {i} ({key!r}) of seed {SEED}"
                assert app.machine is m
        # Whatever it was left in (a prompt, help, the palette), escape gets out and q quits.
        for _ in range(4):
            await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main, f"still on {app.screen_stack!r}"
        assert check(m) == []
        assert to_json_text(m) == to_json_text(m)  # the state serialises
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0  # q quit it
