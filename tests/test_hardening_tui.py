"""Issue 14 on the TUI side: every promise holds when attacked from outside.

- Hostile names (markup, terminal escapes, a bidi override, a name at the length
  limit) show as written, escaped, on every pane, prompt, palette and the status and
  context lines; nothing reaches the terminal raw, nothing ends the app, and a headless
  replay of them ends (it hung).
- A screenshot or a log that cannot be written (read-only folder, full disk, a path
  with markup) is one line on the status line; the app keeps running, the state is
  what the keys made it, and a log catches up when it can.
- A paste into a prompt is typed, logged and recorded as a `type` line, and replays
  to the same state; a paste is bounded (MAX_TYPE_CHARS).
- `--record` refuses to write over the session's own inputs; `R` never writes over an
  earlier recording.
"""

from __future__ import annotations

import asyncio
import errno
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from textual import events

from tuikit import TALK, FullDisk, status
from vtdtui.cli import main
from vtdtui.limits import MAX_TYPE_CHARS
from vtdtui.machine import Machine
from vtdtui.machine.state import to_json_text
from vtdtui.replay import load
from vtdtui.tui import app as app_module
from vtdtui.tui.app import RECORD_KEY, VtdApp
from vtdtui.tui.prompt import PromptScreen
from vtdtui.tui.replayer import screen_lines

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "data" / "hostile"
NAMES = HOSTILE / "names.toml"
# What must never reach the terminal as it is: C0/C1 controls, DEL, bidi overrides.
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A bounded child: enough for Python + Textual, far from what an unbounded input takes.
CHILD_MEMORY = 1 << 30
CHILD_CPU_SECONDS = 20


def run_bounded(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`vtdtui ARGV` in a child with its memory and CPU time limited (and a wall-clock
    timeout): a hang or a runaway fails the test instead of the machine."""
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
        resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU_SECONDS, CHILD_CPU_SECONDS))

    return subprocess.run([sys.executable, "-m", "vtdtui", *argv], capture_output=True, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, preexec_fn=limits, timeout=2 * CHILD_CPU_SECONDS)


def screen_is_clean(app) -> list[str]:
    """The screen as text, after checking that no control character is on it."""
    lines = screen_lines(app)
    raw = [(i, line) for i, line in enumerate(lines) if RAW.search(line)]
    assert not raw, f"raw control characters on screen: {raw[:3]!r}"
    return lines


def state(app) -> tuple:
    m = app.machine
    return to_json_text(m), list(m.log), m.selected_unit, m.selected_group


def one_line(text: str) -> None:
    assert text and "\n" not in text and not RAW.search(text), repr(text)


# ------------------------------------------------------------ hostile names

async def test_hostile_names_show_as_written_on_every_pane_prompt_and_palette():
    m = Machine.from_scenario(str(NAMES))
    app = VtdApp(m, scenario_arg=str(NAMES))
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        text = "\n".join(screen_is_clean(app))
        # Markup shows as text, controls as escapes: the names are readable as written.
        assert "scenario [bold]x[/] \\x1b[2J [" in text
        assert "unit & registers · [x=" in text
        # Text goes in as pastes (one event each: Pilot's keys cost a frame apiece).
        steps = [("right_square_bracket", "g"), "5", ("enter", "a", "n"), "0x100000 64K", ("enter", "t"),
                 ("escape", "colon"), "select-unit [x", ("enter", "escape", "question_mark"),
                 ("escape", "ctrl+p"), "[x", ("escape", "2", "enter", "enter")]
        for step in steps:
            if isinstance(step, str):
                paste(app, step)
            else:
                await pilot.press(*step)
            await pilot.pause()
            screen_is_clean(app)
        text = "\n".join(screen_is_clean(app))
        assert "[/]\\x1b[2J\\x0d[x=\\u202eevil\\x07" in text  # group 5's device, on a pane
        one_line(status(app))
        await pilot.resize_terminal(80, 24)  # one pane at a time, titles cut
        await pilot.pause()
        for i in range(1, 8):
            await pilot.press(str(i))
            await pilot.pause()
            screen_is_clean(app)
    assert app.return_code in (None, 0)


def test_hostile_names_replay_headless_to_the_end(tmp_path):
    # It hung: a markup error ended the app and the replay waited for it forever.
    out = tmp_path / "state.json"
    p = run_bounded(["replay", str(HOSTILE / "names.keys"), "--headless", "--json", str(out)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert p.stderr == b""
    assert '"scenario": "[bold]x[/] \\u001b[2J ["' in out.read_text()


def test_a_replay_ends_when_the_app_fails(tmp_path):
    # Whatever ends the app (here a failure injected into its start), the replay
    # must not wait for the dead app to handle its keys.
    fixture = tmp_path / "f.keys"
    fixture.write_text("keys m c\nexpect CM=1\n", encoding="utf-8")
    code = ("import sys; from vtdtui.tui.app import VtdApp\n"
            "def boom(self): raise RuntimeError('injected')\n"
            "VtdApp.start = boom\n"
            "from vtdtui.cli import main; sys.exit(main(['replay', sys.argv[1], '--headless']))\n")

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
        resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU_SECONDS, CHILD_CPU_SECONDS))

    p = subprocess.run([sys.executable, "-c", code, str(fixture)], capture_output=True, cwd=tmp_path,
                       stdin=subprocess.DEVNULL, preexec_fn=limits, timeout=20)
    assert p.returncode != 0 and b"injected" in p.stderr


# ------------------------------------------------------------ what cannot be written

async def test_ctrl_s_where_nothing_can_be_written_is_one_line(tmp_path, monkeypatch):
    def refuse(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(app_module, "write_atomic", refuse)
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        before = state(app)
        await pilot.press("ctrl+s")
        await pilot.pause()
        one_line(status(app))
        assert "screenshot not saved" in status(app) and "Permission denied" in status(app)
        assert state(app) == before
        await pilot.press("m")  # still running, still taking keys
        assert "CM" in status(app) and state(app) != before
    assert not any(tmp_path.iterdir())


async def test_ctrl_s_in_a_folder_removed_under_the_session(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        one_line(status(app))
        assert "screenshot not saved" in status(app)


def replays_to(log: Path, want: str, tmp_path: Path) -> None:
    out = tmp_path / "replayed.json"
    assert main(["replay", str(log), "--headless", "--json", str(out)]) == 0
    assert out.read_text() == want


def test_a_state_directory_that_fills_up_mid_session_loses_nothing(tmp_path):
    log = tmp_path / "session.keys"
    app = VtdApp(Machine.from_scenario("desktop"), session_to=log)
    asyncio.run(_fill_up(app, log))
    replays_to(log, to_json_text(app.machine), tmp_path)


async def _fill_up(app, log: Path) -> None:
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        await pilot.press("m")
        disk = app.session._f = FullDisk(app.session._f)
        await pilot.press("c", "g", "5", "enter")
        await pilot.pause()
        one_line(status(app))
        assert "No space left on device" in status(app) and "session log" in status(app)
        assert app.machine.log == ["toggle dmar0 CM", "toggle dmar0 C", "select-group 5"]
        assert load(log).key_count() == 1  # the disk took only the first key
        disk.full = False  # room again: the next key writes what was held back
        await pilot.press("a")
        await pilot.pause()
        assert "No space left" not in status(app) and "attached group 5" in status(app)
        assert load(log).key_count() == 6


async def test_a_state_directory_path_with_markup_is_one_warning(tmp_path):
    where = tmp_path / "[/]x[=" / "missing" / "session.keys"  # '[/]' was a MarkupError
    app = VtdApp(Machine.from_scenario("desktop"), session_to=where)
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        one_line(status(app))
        assert "no session log" in status(app) and "[/]x[=" in status(app)
        await pilot.press("m")
        assert app.machine.log == ["toggle dmar0 CM"]


async def test_a_scenario_path_a_fixture_cannot_name_gets_no_broken_log(tmp_path):
    scen = tmp_path / "lab#1.toml"  # a fixture's scenario line would end at '#'
    scen.write_bytes(NAMES.read_bytes())
    log = tmp_path / "session.keys"
    app = VtdApp(Machine.from_scenario(str(scen)), scenario_arg=str(scen), session_to=log)
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        assert "no session log" in status(app) and "'#'" in status(app)
    assert not log.exists()


# ------------------------------------------------------------ pastes

def paste(app, text: str) -> None:
    app.post_message(events.Paste(text))


def test_a_paste_into_a_prompt_is_typed_logged_and_replays(tmp_path):
    log = tmp_path / "session.keys"
    app = VtdApp(Machine.from_scenario("desktop"), session_to=log)
    asyncio.run(_paste_a_map(app))
    assert "type 0x100000 64K rw\n" in log.read_text()
    replays_to(log, to_json_text(app.machine), tmp_path)


async def _paste_a_map(app) -> None:
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        await pilot.press("g", "5", "enter", "a", "n")
        await pilot.pause()
        # Only the first line counts (as Textual's Input takes it); a tab or ESC no key types is dropped.
        paste(app, "0x1\t00000 64K\x1b rw\nunmap 5 0 4K")
        await pilot.pause()
        assert app.screen.query_one("#prompt-input").value == "0x100000 64K rw"
        await pilot.press("enter")
        await pilot.pause()
        assert app.machine.log[-1] == "map 5 0x100000 64K rw"


async def test_a_paste_before_the_prompt_is_ready_waits_for_it(tmp_path):
    log = tmp_path / "session.keys"
    app = VtdApp(Machine.from_scenario("desktop"), session_to=log)
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        await pilot.press("g")
        paste(app, "5")  # the prompt was asked for, maybe not drawn yet
        await pilot.press("enter")
        await pilot.pause()
        assert app.machine.log == ["select-group 5"]
    assert load(log).key_count() == 3


async def test_a_paste_outside_a_text_field_does_nothing(tmp_path):
    log = tmp_path / "session.keys"
    app = VtdApp(Machine.from_scenario("desktop"), session_to=log)
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        before = state(app)
        paste(app, "mca")  # typed, these would be three commands
        await pilot.pause()
        assert state(app) == before
    assert load(log).key_count() == 0


async def test_a_paste_longer_than_a_type_line_is_refused_whole(tmp_path, monkeypatch):
    # The limit is MAX_TYPE_CHARS (4,096); a smaller one here keeps the test quick.
    limit = 64
    monkeypatch.setattr(app_module, "MAX_TYPE_CHARS", limit)
    log = tmp_path / "session.keys"
    app = VtdApp(Machine.from_scenario("desktop"), session_to=log)
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        await pilot.press("colon")
        await pilot.pause()
        paste(app, "x" * (limit + 1))
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        hint = str(app.screen.query_one("#prompt-hint").render())
        one_line(hint)
        assert "MAX_TYPE_CHARS" in hint
        assert app.screen.query_one("#prompt-input").value == ""
        paste(app, "x" * limit)  # at the limit: typed
        await pilot.pause()
        assert len(app.screen.query_one("#prompt-input").value) == limit
    assert load(log).key_count() == 1 + limit
    assert limit < MAX_TYPE_CHARS  # what a fixture's type line takes, so the log replays


# ------------------------------------------------------------ recordings

def test_record_onto_the_scenario_file_is_refused(tmp_path, capsys):
    scen = tmp_path / "lab.toml"
    scen.write_bytes(NAMES.read_bytes())
    before = scen.read_bytes()
    assert app_module.run(str(scen), record=str(tmp_path / "." / "lab.toml")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--record" in err and "scenario file" in err
    assert scen.read_bytes() == before


def test_record_into_the_session_log_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VTDTUI_STATE_DIR", str(tmp_path))
    earlier = tmp_path / "session-earlier.keys"
    earlier.write_text("keys m\n")
    assert app_module.run("desktop", record=str(earlier)) == 2
    assert "session-log folder" in capsys.readouterr().err
    assert earlier.read_text() == "keys m\n"


async def test_the_record_key_never_writes_over_an_earlier_recording(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = VtdApp(Machine.from_scenario(str(NAMES)), scenario_arg=str(NAMES))
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        await pilot.press(RECORD_KEY, "m", RECORD_KEY, RECORD_KEY, "c", RECORD_KEY)  # within a second
        await pilot.pause()
        one_line(status(app))
    files = sorted(tmp_path.glob("*.keys"))
    assert len(files) == 2, files
    # The scenario's hostile name gave no hostile file name.
    assert all(re.fullmatch(r"vtdtui-[A-Za-z0-9_.-]+\.keys", f.name) for f in files), files
    assert sorted(load(f).key_count() for f in files) == [1, 2]


def test_an_svg_dir_that_cannot_be_written_is_one_line(tmp_path):
    fixture = tmp_path / "f.keys"
    fixture.write_text("keys m\nsnapshot one\n", encoding="utf-8")
    # /proc/self exists, and nobody (root included) can create a file in it.
    p = run_bounded(["replay", str(fixture), "--headless", "--svg-dir", "/proc/self"], cwd=tmp_path)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2 and err.count("\n") == 1 and "--svg-dir /proc/self" in err, err
    assert "Traceback" not in err
