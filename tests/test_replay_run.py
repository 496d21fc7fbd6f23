"""Replaying fixtures through the real app: the shipped stories, `vtdtui replay`'s exit
statuses and outputs, determinism, recording, and the presenter's keys."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vtdtui.cli import main
from vtdtui.machine import Machine
from vtdtui.machine.state import to_json
from vtdtui.replay import load, parse
from vtdtui.tui.app import RECORD_KEY, VtdApp, replay
from vtdtui.tui.replayer import Replayer

from tuikit import prompt

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").glob("*.keys"))
STORIES = {"caching-mode", "page-walk-coherency", "integrated-gpu", "domain-reuse", "viommu-shadow", "tour"}


def write(tmp_path: Path, text: str, name: str = "f.keys") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def replay_json(path: Path) -> dict:
    fx = load(path)
    m = Machine.from_scenario(fx.scenario)
    assert replay(fx, m, headless=True) == 0
    return to_json(m)


# ------------------------------------------------------------ the shipped stories
def test_the_six_stories_ship():
    assert STORIES <= {p.stem for p in FIXTURES}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_shipped_fixture_replays_headless(path, tmp_path, capsys):
    out, svgs = tmp_path / "state.json", tmp_path / "svg"
    rc = main(["replay", str(path), "--headless", "--json", str(out), "--svg-dir", str(svgs)])
    assert rc == 0, capsys.readouterr().err
    fx = load(path)
    kinds = [s.kind for s in fx.steps]
    assert "caption" in kinds and kinds.count("expect") >= 3, "a story shows and checks what it says"
    snaps = [s.arg for s in fx.steps if s.kind == "snapshot"]
    assert snaps and kinds[-1] in ("snapshot", "pause"), "a story ends with a snapshot"
    for name in snaps + [f"{path.stem}-end"]:
        assert (svgs / f"{name}.svg").read_text(encoding="utf-8").startswith("<svg")
    assert json.loads(out.read_text())["schema"] == "vtdtui.state/1"


def test_replay_json_is_byte_identical_across_runs(capsys):
    path = ROOT / "fixtures" / "viommu-shadow.keys"
    texts = []
    for _ in range(2):
        assert main(["replay", str(path), "--headless", "--json", "-"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].startswith("{")


def test_keys_are_exactly_the_machine_commands():
    # What the keys did is the command log: replaying it on a fresh machine (the
    # path `vtdtui dump --do` takes) gives the same state, journal included.
    fx = load(ROOT / "fixtures" / "domain-reuse.keys")
    m = Machine.from_scenario(fx.scenario)
    assert replay(fx, m, headless=True) == 0
    fresh = Machine.from_scenario(fx.scenario)
    for line in m.log:
        fresh.execute(line)
    assert m.log and to_json(fresh) == to_json(m)


# ------------------------------------------------------------ exit statuses
def test_a_failed_expect_exits_1_naming_the_line(tmp_path, capsys):
    p = write(tmp_path, """\
        size 80x24
        keys m
        expect CAP.CM=1
        expect no such text anywhere
        keys c
    """)
    svgs = tmp_path / "svg"
    assert main(["replay", str(p), "--headless", "--svg-dir", str(svgs)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{p}:4: expect 'no such text anywhere': not on the screen"
    assert "CAP.CM=1" in err  # the screen it saw
    assert (svgs / "f-failed-line4.svg").exists()


def test_an_expect_sees_the_prompt_on_screen(tmp_path):
    p = write(tmp_path, """\
        keys g
        type 42
        keys enter
        expect no group 42 (groups: 0, 1, 2, 3, 4, 5, 6)
        keys escape
        expect unit dmar0
    """)
    assert main(["replay", str(p), "--headless"]) == 0


@pytest.mark.parametrize("text, message", [
    ("sise 80x24\n", ":1: unknown directive 'sise'"),
    ("keys g entr\n", ":1: unknown key name 'entr' (did you mean 'enter'?)"),
    ("keys g\nsize 80x24\n", ":2: size is a header and must come before the first key"),
    ("size 10x5\n", ":1: size 10x5 is out of range"),
    ("scenario nowhere.toml\n", ":1: no such scenario 'nowhere.toml'"),
])
def test_a_bad_fixture_exits_2_with_one_line(tmp_path, capsys, text, message):
    p = write(tmp_path, text)
    assert main(["replay", str(p), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{p}{message}" in err


def test_a_bad_scenario_file_names_the_fixture_line(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[[unit]]\nname = 3\n")
    p = write(tmp_path, "size 80x24\nscenario bad.toml\nkeys m\n")
    assert main(["replay", str(p), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vtdtui: error: {p}:2: scenario: ") and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--speed", "0"], "--speed"), (["--speed", "fast"], "--speed"), (["--speed", "nan"], "--speed"),
    (["--json", "/no/such/dir/out.json"], "--json /no/such/dir/out.json: no such directory"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    p = write(tmp_path, "keys m\n")
    assert main(["replay", str(p), "--headless", *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_fixture_and_paced_without_a_terminal(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "none.keys"), "--headless"]) == 2
    assert "none.keys: No such file or directory" in capsys.readouterr().err
    p = write(tmp_path, "keys m\n")
    assert main(["replay", str(p)]) == 2  # pytest's stdin is not a terminal
    assert "add --headless" in capsys.readouterr().err


def test_quitting_before_the_end_is_a_failure(tmp_path, capsys):
    p = write(tmp_path, "keys m q\nkeys c\n")
    assert main(["replay", str(p), "--headless"]) == 1
    assert f"{p}:1: the app quit at this line" in capsys.readouterr().err


def test_quitting_on_the_last_key_still_writes_the_json(tmp_path, capsys):
    p = write(tmp_path, "keys m q\n")
    assert main(["replay", str(p), "--headless", "--json", "-"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["units"][0]["flags"]["cm"] is True


# ------------------------------------------------------------ recording
async def _session(app: VtdApp, keys_before_record=(), *, full: bool = True) -> dict:
    """A recorded session; `full`: every kind of key (filter, undo/redo, help, focus,
    drill-down, translate), else only the attach and map prompts: the tests of what
    the recording's header says need no more (the full one is replayed above)."""
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        await pilot.press(*keys_before_record)
        await prompt(pilot, "g", "5")
        await pilot.press("a")
        await prompt(pilot, "n", "0x100000 64K rw")
        if full:
            await prompt(pilot, "slash", "op=clflush #1")  # '#' typed in a prompt
            await pilot.press("m", "u", "ctrl+r", "question_mark", "escape", "2", "down", "down", "enter", "down",
                              "enter")
            await prompt(pilot, "t", "0x100000 r")
        await pilot.pause()
        return to_json(app.machine)


def test_a_recording_replays_to_the_same_state(tmp_path):
    rec = tmp_path / "session.keys"
    app = VtdApp(Machine.from_scenario("desktop"), scenario_arg="desktop", record_to=str(rec))
    state = asyncio.run(_session(app))
    app.recorder.close()
    assert "type 0x100000 64K rw" in rec.read_text()
    assert replay_json(rec) == state


def test_the_record_key_starts_with_the_keys_so_far(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = VtdApp(Machine.from_scenario("viommu"), scenario_arg="viommu")
    state = asyncio.run(_session(app, keys_before_record=("m", "m", "]", RECORD_KEY), full=False))
    (rec,) = tmp_path.glob("vtdtui-viommu-*.keys")
    assert RECORD_KEY not in rec.read_text().split("scenario viommu", 1)[1].split()
    assert replay_json(rec) == state


def test_a_scenario_file_is_named_relative_to_the_recording(tmp_path):
    scen = tmp_path / "lab" / "my.toml"
    scen.parent.mkdir()
    scen.write_bytes((ROOT / "vtdtui" / "scenarios" / "server.toml").read_bytes())
    rec = tmp_path / "out" / "s.keys"
    rec.parent.mkdir()
    app = VtdApp(Machine.from_scenario(str(scen)), scenario_arg=str(scen), record_to=str(rec))
    state = asyncio.run(_session(app, full=False))
    assert "scenario ../lab/my.toml" in rec.read_text()
    assert replay_json(rec) == state


KILLED = r"""
import json, os, signal, sys
from vtdtui.machine import Machine
from vtdtui.machine.state import to_json
from vtdtui.tui.app import VtdApp

m = Machine.from_scenario("desktop")
app = VtdApp(m, scenario_arg="desktop", record_to=sys.argv[1])

async def session(pilot):
    await pilot.pause()
    await pilot.press("g", "5", "enter", "a", "n", *"0x100000", "space", "6", "4", "K", "enter", "m")
    await pilot.pause()
    with open(sys.argv[2], "w") as f:
        json.dump(to_json(m), f)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush at exit

app.run(headless=True, size=(160, 50), auto_pilot=session)
"""


def test_a_killed_recording_replays_up_to_the_last_key(tmp_path):
    rec, state = tmp_path / "killed.keys", tmp_path / "state.json"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(rec), str(state)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    expected = json.loads(state.read_text())
    assert expected["groups"][5]["domain"] is not None
    assert replay_json(rec) == expected


# ------------------------------------------------------------ presenter keys (paced)
async def _until(pilot, cond, timeout=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await pilot.pause(0.02)


async def test_pause_step_next_caption_and_resume():
    fx = parse(textwrap.dedent("""\
        caption one
        keys g
        type 5
        keys enter
        pause 600
        caption two
        keys a
        caption three
        keys m
    """), "talk.keys")
    m = Machine.from_scenario("desktop")
    r = Replayer(fx, headless=False, speed=50)
    app = VtdApp(m, replayer=r)
    async with app.run_test(size=(160, 50)) as pilot:
        task = asyncio.create_task(r.run(app))
        await _until(pilot, lambda: r.index == 4)          # inside the long pause
        await pilot.press("space")                          # pause: the pause line ends, line 6 waits
        await _until(pilot, lambda: r.index == 5)
        await pilot.pause(0.2)
        assert r.paused and r.caption == "one" and m.log == ["select-group 5"]
        await pilot.press("right")                          # step: caption two only
        await _until(pilot, lambda: r.caption == "two")
        await pilot.pause(0.2)
        assert m.log == ["select-group 5"]
        await pilot.press("n")                              # to the next caption: 'a' runs, 'n' is not a map prompt
        await _until(pilot, lambda: r.index == 7)
        await pilot.pause(0.2)
        assert m.log == ["select-group 5", "attach 5"] and r.caption == "two" and app.screen is app.main
        await pilot.press("space")                          # resume
        await asyncio.wait_for(task, 20)
        assert r.finished and r.caption == "three"
        assert m.log == ["select-group 5", "attach 5", "toggle dmar1 CM"]
        assert "replay finished" in str(app.main.query_one("#caption").render())
        await pilot.press("m")                              # the keyboard is the presenter's again
        await pilot.pause()
        assert m.log[-1] == "toggle dmar1 CM" and len(m.log) == 4


async def test_escape_stops_the_replay():
    fx = parse("caption one\npause 600\nkeys m\n", "talk.keys")
    m = Machine.from_scenario("desktop")
    r = Replayer(fx, headless=False, speed=1)
    app = VtdApp(m, replayer=r)
    async with app.run_test(size=(160, 50)) as pilot:
        task = asyncio.create_task(r.run(app))
        await _until(pilot, lambda: r.index == 1)
        await pilot.press("escape")
        await asyncio.wait_for(task, 20)
        assert r.stopped_at == 3 and not r.finished and m.log == []
        assert "stopped at line 3" in str(app.main.query_one("#caption").render())


def test_headless_replay_ignores_pauses(tmp_path):
    # A 600-second pause must not cost anything headless (the suite would time out).
    p = write(tmp_path, "pause 600\nkeys m\nexpect CAP.CM=1\n")
    assert main(["replay", str(p), "--headless"]) == 0

