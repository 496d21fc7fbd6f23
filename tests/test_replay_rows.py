"""An expect reads the rows likeliest to hold its text, each rendered alone
(tui/replayer.py: screen_row, rows_to_try), and the whole screen only when none holds
it: a row rendered alone is that row of the whole screen's render, and the answer is
the one a search of the whole screen gives, for texts on screen and texts a pane holds
but does not show (a row cut short, a row scrolled away)."""

from __future__ import annotations

import random

import pytest

from vtdtui.machine import Machine
from vtdtui.replay import key_event
from vtdtui.tui.app import VtdApp
from vtdtui.tui.replayer import FrameHold, _on_screen, rows_to_try, screen_lines, screen_row, settle, settle_layout
from vtdtui.tui.rows import RowsPane

# Through the screens an expect can read: the main screen in each layout, prompts
# (a modal screen over it), help, zoom, focus moves, toggles, a scrolled journal.
KEYS = [(), ("g",), ("5",), ("enter",), ("a",), ("n",), tuple("0x100000 64K rw"), ("enter",), ("m",), ("s",),
        ("2", "down", "down", "enter"), ("z",), ("z",), ("7", "pageup"), ("question_mark",), ("escape",),
        ("tab",), ("u",), ("slash",), tuple("op=iotlb"), ("enter",)]
KEYS = [tuple(key_event(k) for k in keys) for keys in KEYS]


def _texts(app: VtdApp, rng: random.Random) -> list[str]:
    """What expects could ask for: the lines panes hold (on screen or not, whole or
    cut on screen), pieces of them, a piece of each screen row, and text nowhere."""
    texts = ["no such text anywhere"]
    for widget in app.screen._compositor.visible_widgets:
        if not isinstance(widget, RowsPane):
            continue
        for line in [*widget.header, *(widget.rows[i] for i in range(min(200, len(widget.rows))))]:
            text = "".join(part for part, _token in line).strip()
            if text:
                texts.append(text)
                i = rng.randrange(len(text))
                texts.append(text[i:i + rng.randint(3, 30)])
    for row in screen_lines(app):
        if row.strip():
            i = rng.randrange(len(row))
            texts.append(row[i:i + rng.randint(3, 40)])
    return [t for t in texts if t.strip()]


@pytest.mark.parametrize("size", [(160, 50), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_an_expect_answers_as_a_search_of_the_whole_screen(size):
    rng = random.Random(16)
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=size):
        hold = FrameHold(app)  # as a headless replay renders: no frame painted
        hold.start()
        try:
            for keys in KEYS:
                for key, character in keys:  # as a replay sends them
                    app.inject_key(key, character, replayed=True)
                    await settle(app)
                await settle_layout(app)
                # Row by row first, while the panes' lines are dirty, then whole.
                alone = [screen_row(app, y) for y in range(size[1])]
                whole = screen_lines(app)
                assert alone == whole, keys
                texts = _texts(app, rng)
                for text in rng.sample(texts, min(6, len(texts))):
                    seen, lines = _on_screen(app, text)
                    assert seen == any(text in row for row in whole), (keys, text)
                    assert seen or lines == whole  # what a failed expect shows
        finally:
            hold.stop()


async def test_a_guess_is_only_a_guess():
    # A pane's row holds the text but the screen cuts it: the row guessed is rendered,
    # does not hold it, and the whole screen decides.
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("7")
        await settle_layout(app)
        whole = screen_lines(app)
        panes = [w for w in app.screen.query(RowsPane) if w.region.width]
        cut = [text for w in panes for line in (w.rows[i] for i in range(len(w.rows)))
               if len(text := "".join(part for part, _token in line)) > w.region.width]
        assert cut, "the journal has rows wider than the screen"
        text = cut[0]
        assert rows_to_try(app, text)
        assert not any(text in row for row in whole)
        assert _on_screen(app, text) == (False, whole)


async def test_an_expect_reads_the_panes_under_a_notification() -> None:
    """A paced replay in a smaller terminal warns with a notification, which sat over
    the journal: the rows it covers still count, text nowhere still does not."""
    from vtdtui.tui.panes import JournalPane

    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("g", "5", "enter", "a")
        await pilot.pause()
        journal = app.main.query_one(JournalPane)
        line = journal.rows[len(journal.rows) - 1]
        text = "".join(part for part, _token in line).strip()[:60]
        app.notify("x" * 400, timeout=60, markup=False)
        await pilot.pause(0.3)
        covered = [y for y, row in enumerate(screen_lines(app)) if "xxxxxxxx" in row]
        assert covered and not any(text in screen_lines(app)[y] for y in range(len(screen_lines(app)))), \
            "the notification must cover the row for this test to mean something"
        assert _on_screen(app, text)[0]
        assert not _on_screen(app, "no such text anywhere")[0]
