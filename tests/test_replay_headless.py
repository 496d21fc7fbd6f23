"""What a headless replay leaves out to go faster (tui/replayer.py) changes nothing a
fixture does or sees: it paints no frame, settles a line of text typed into a field
once, watches the message loops park instead of sending barriers, and still lands
every key on the state the key before it left."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from textual._compositor import Compositor

from vtdtui.cli import main
from vtdtui.machine import Machine
from vtdtui.replay import typed
from vtdtui.tui import replayer
from vtdtui.tui.app import VtdApp
from vtdtui.tui.replayer import FrameHold, settle, settle_layout


def write(tmp_path: Path, text: str, name: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def state(path: Path, capsys) -> dict:
    assert main(["replay", str(path), "--headless", "--json", "-"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_each_key_lands_where_the_key_before_it_left_the_app(tmp_path, capsys):
    # `enter` opens what the cursor moved to on the pane `2` focused on the unit `]`
    # picked; `/` filters the journal only once `7` has focused it, and the filter's
    # text goes to the prompt `/` opened.  Sent without waiting, the keys would land
    # on the pane focused before (the expects fail).
    together = write(tmp_path, """\
        keys ] 2 down down enter
        expect context table of bus 02
        type 7/op=iotlb
        keys enter
        expect filter: op=iotlb
    """, "together.keys")
    apart = write(tmp_path, """\
        keys ]
        keys 2
        keys down
        keys down
        keys enter
        expect context table of bus 02
        keys 7
        keys slash
        type op=iotlb
        keys enter
        expect filter: op=iotlb
    """, "apart.keys")
    assert state(together, capsys) == state(apart, capsys)


def test_a_typed_line_is_its_characters_pressed_one_at_a_time(tmp_path, capsys):
    lines = ["keys g", "type 5", "keys enter a n", "type 0x100000 64K rw", "keys enter t", "type 0x100000 r",
             "keys enter", "expect DMA read from 02:00.0 at 0x100000", "keys colon", "type map 0x200000 8K r",
             "keys enter", "expect 0x200000"]
    as_keys = [("keys " + " ".join(key for key, _ in typed(line[5:]))) if line.startswith("type ") else line
               for line in lines]
    a = write(tmp_path, "\n".join(lines) + "\n", "typed.keys")
    b = write(tmp_path, "\n".join(as_keys) + "\n", "pressed.keys")
    assert state(a, capsys) == state(b, capsys)


def test_a_headless_replay_paints_no_frame(tmp_path, monkeypatch, capsys):
    # Frames nobody sees: each expect renders the rows it reads, on its own.
    painted = []
    render_update = Compositor.render_update

    def counted(self, *args, **kwargs):
        painted.append(1)
        return render_update(self, *args, **kwargs)

    monkeypatch.setattr(Compositor, "render_update", counted)
    p = write(tmp_path, """\
        keys g
        type 5
        keys enter a
        expect attached
        keys question_mark
        expect unit & registers
        keys escape z
        expect unit dmar1
        snapshot zoomed
    """, "f.keys")
    assert main(["replay", str(p), "--headless"]) == 0, capsys.readouterr().err
    assert painted == []


async def test_a_frame_hold_ends_with_every_screen_as_it_was():
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle_layout(app)
        hold = FrameHold(app)
        hold.start()
        assert app._batch_count == 1 and "push_screen" in app.__dict__
        await pilot.press("g")
        await settle(app)
        shown = list(hold.screens)
        assert app.screen in shown and app.main in shown
        hold.stop()
        hold.stop()  # once only
        assert app._batch_count == 0 and "push_screen" not in app.__dict__
        assert not any("_compositor_refresh" in s.__dict__ for s in shown)
        await pilot.press("escape")


def test_settling_by_turns_of_the_loop_lands_where_barriers_do(tmp_path, monkeypatch, capsys):
    # settle() watches the message loops park for a few turns of the event loop, and
    # sends barriers only past them (_TURNS); with none, every key goes by barriers.
    p = write(tmp_path, """\
        keys g
        type 5
        keys enter a n
        type 0x100000 64K rw
        keys enter t
        type 0x100000 r
        keys enter
        expect DMA read from 02:00.0 at 0x100000
        keys 7 o question_mark escape slash
        type op=iotlb
        keys enter u m ] 2 down enter
        expect op=iotlb
    """, "turns.keys")
    by_turns = state(p, capsys)
    monkeypatch.setattr(replayer, "_TURNS", 0)
    assert state(p, capsys) == by_turns
