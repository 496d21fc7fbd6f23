"""bench/ runs (the benchmarks themselves are not tests and time nothing here): the pty
harness plays a terminal that supports synchronized output and counts the frames a
key causes, every key of the contract is in its script, and the core baselines are
timed in turn with the loops they are compared with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ lives in the checkout, not in the package
    sys.path.insert(0, str(ROOT))

from bench import common, terminal  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pty harness reads /proc")


def test_the_script_presses_every_key_of_the_contract_and_returns_to_its_start():
    contract = {"m", "c", "s", "]", "[", "g→Enter", "a", "d", "n→Enter", "x→Enter", "t→Enter", "u", "ctrl+r",
                "PgDn", "/→Enter", "tab"}
    for server in (False, True):
        rows = terminal.script(server)
        assert {label for label, *_ in rows} == contract
        timed = [key for _, _, key, _ in rows]
        for k in ("m", "c", "s"):  # each toggle twice: a round ends where it began
            assert timed.count(k) == 2
        assert timed.count("a") == 1 and timed.count("d") == 1
        for _, pre, key, _ in rows:  # every key has the bytes a terminal sends for it
            for k in [*pre, key]:
                assert terminal.key_bytes(k) and (len(k) == 1 or k in terminal.BYTES or " " in k or "=" in k
                                                  or k.isdigit()), k
    assert terminal.key_bytes("slash") == b"/" and terminal.key_bytes("pagedown") == b"\x1b[6~"


def test_paired_rates_times_the_baseline_in_turn_with_the_loop():
    calls: list[str] = []

    def fn() -> int:
        calls.append("fn")
        return 1

    def base() -> int:
        calls.append("base")
        return 1

    rate, base_rate = common.paired_rates(fn, base, repeat=3)
    assert calls == ["base", "fn"] * 3
    assert rate > 0 and base_rate > 0


def test_the_harness_answers_the_sync_query_and_counts_the_frames_of_a_key():
    """The bare app in a real pty: Textual asks whether the terminal supports
    synchronized output; the harness says yes, so each frame ends with ESC[?2026l and
    a key that repaints one pane is one frame showing the new text."""
    t = terminal.Term(terminal.BARE_ARGV, size=(100, 30))
    try:
        first, last = t.started()
        assert 0 < first <= last and t.frames, "the start drew no marked frame"
        seconds, frames = t.press("m")
        assert frames >= 1 and seconds > 0
        assert "line   0 ·     1" in t.text(), t.text()[:300]
        t.put(["]"])  # another key of the table: it repaints the pane too (untimed)
        seconds, frames = t.press("m")
        assert frames >= 1 and "line   0 ·     3" in t.text()
    finally:
        t.close()
    assert t.proc.poll() is not None


def test_the_harness_drives_vtdtui_as_a_whole_process():
    t = terminal.Term(terminal.vtdtui_argv(None), size=(160, 50))
    try:
        t.started()
        _, frames = t.press("m")
        assert frames >= 1 and "CM" in t.text()
        t.put(["g", "5"])
        _, frames = t.press("enter")
        assert frames >= 1 and "group 5" in t.text()
    finally:
        t.close()


def test_bench_knows_the_terminal_benchmark():
    from bench.__main__ import NAMES

    from vtdtui.cli import BENCHES

    assert "terminal" in NAMES and tuple(BENCHES) == tuple(NAMES)


def test_keycost_splits_a_key_into_command_views_and_frame(capsys):
    from bench import keycost

    keycost.main(["--rounds", "2", "m", "a"])
    out = capsys.readouterr().out
    for label in ("m: ms a press", "a: ms a press", "command", "views", "frame", "RegistersPane#regs"):
        assert label in out, out
    frame = float(out.split("frame")[1].split()[0])
    assert frame > 0  # a toggle paints: the registers line, the journal, the status
