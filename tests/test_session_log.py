"""Nothing lost: the TUI writes every key to a session log as it goes; after a kill,
replaying the log gives back the state the session had.

The app runs for real, in a pseudo-terminal, and is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from fcntl import ioctl

import pytest

from vtdtui.cli import main
from vtdtui.replay import load

KEYS = b"mcg5\ra"  # toggle CM and C of dmar0, select group 5, attach it
WANT = ["toggle dmar0 cm", "toggle dmar0 c", "select-group 5", "attach 5"]


def _wait(cond, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_killed_session_replays_to_where_it_was(tmp_path, capsys):
    state = tmp_path / "state"
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {**os.environ, "VTDTUI_STATE_DIR": str(state), "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "vtdtui", "--scenario", "desktop"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    # The terminal's output must be read, or the app blocks writing to it.
    threading.Thread(target=lambda: _drain(master), daemon=True).start()
    try:
        last = state / "last.keys"
        _wait(last.exists, 30, "the session log")
        time.sleep(0.5)  # the first frame: keys before it still count, but keep it real
        for b in KEYS:
            os.write(master, bytes([b]))
            time.sleep(0.05)
        _wait(lambda: load(last).key_count() == len(KEYS), 30, "every key in the log")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.close(master)
    assert proc.returncode == -signal.SIGKILL
    log = last.resolve()
    assert log.name.startswith("session-") and log.parent == state

    _same_state(log, WANT, tmp_path, capsys)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def test_no_session_log_where_nothing_can_be_written(tmp_path, monkeypatch):
    from vtdtui.tui.app import session_log_path

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("VTDTUI_STATE_DIR", str(blocker / "sub"))  # a file is in the way
    assert session_log_path() is None
    monkeypatch.setenv("VTDTUI_STATE_DIR", str(tmp_path / "ok"))
    p = session_log_path()
    assert p is not None and p.parent.is_dir() and p.suffix == ".keys"


def _pty_app(argv: list[str], env: dict) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "vtdtui", *argv], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    threading.Thread(target=lambda: _drain(master), daemon=True).start()
    return proc, master


def _kill(proc: subprocess.Popen, master: int) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    os.close(master)


# A paste arrives as the terminal sends it: one bracketed-paste sequence.
PASTE = b"\x1b[200~0x100000 64K rw\x1b[201~"
PASTED = ["select-group 5", "attach 5", "map 5 0x100000 64K rw"]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_pasted_input_survives_a_kill_and_a_resumed_session_keeps_logging(tmp_path, capsys):
    state = tmp_path / "state"
    env = {**os.environ, "VTDTUI_STATE_DIR": str(state), "TERM": "xterm-256color"}
    last = state / "last.keys"
    proc, master = _pty_app(["--scenario", "desktop"], env)
    try:
        _wait(last.exists, 30, "the session log")
        time.sleep(0.5)
        for chunk in (b"g", b"5", b"\r", b"a", b"n", PASTE, b"\r"):
            os.write(master, chunk)
            time.sleep(0.05)
        _wait(lambda: load(last).key_count() == 5 + 15 + 1, 30, "every key and the paste in the log")
    finally:
        _kill(proc, master)
    first = last.resolve()
    assert "type 0x100000 64K rw" in first.read_text()
    _same_state(first, PASTED, tmp_path, capsys)

    # The README's recovery: a paced replay of the log, then more keys; the replay
    # starts a new session log that holds the replayed keys and the new ones.
    proc, master = _pty_app(["replay", str(last), "--speed", "100"], env)
    try:
        _wait(lambda: last.resolve() != first and load(last).key_count() == 21, 30, "the replayed keys logged")
        time.sleep(1.0)  # the replay's last line done: the keyboard is the user's
        os.write(master, b"m")
        _wait(lambda: load(last).key_count() == 22, 30, "the new key in the new log")
    finally:
        _kill(proc, master)
    _same_state(last.resolve(), [*PASTED, "toggle dmar1 cm"], tmp_path, capsys)


def _same_state(log, commands: list[str], tmp_path, capsys) -> None:
    assert main(["replay", str(log), "--headless", "--json", str(tmp_path / "replayed.json")]) == 0
    args = ["dump", "--scenario", "desktop"]
    for c in commands:
        args += ["--do", c]
    capsys.readouterr()
    assert main([*args, "--json", str(tmp_path / "want.json")]) == 0
    assert json.loads((tmp_path / "replayed.json").read_text()) == json.loads((tmp_path / "want.json").read_text())


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_bug_in_the_app_ends_with_one_line_and_status_70_not_a_traceback(tmp_path):
    # The last line of defence: whatever goes wrong inside Textual, the user gets one
    # line, status 70 (EX_SOFTWARE), and the session log; VTDTUI_DEBUG=1 shows the traceback.
    state = tmp_path / "state"
    code = ("import sys; from vtdtui.tui.app import VtdApp; "
            "VtdApp.action_toggle = lambda self, bit: 1 / 0; "
            "from vtdtui.cli import main; sys.exit(main(['--scenario', 'desktop']))")
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {**os.environ, "VTDTUI_STATE_DIR": str(state), "TERM": "xterm-256color"}
    env.pop("VTDTUI_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, close_fds=True)
    os.close(slave)
    out = bytearray()
    reader = threading.Thread(target=lambda: _collect(master, out), daemon=True)
    reader.start()
    try:
        _wait((state / "last.keys").exists, 30, "the session log")
        time.sleep(0.5)
        os.write(master, b"m")
        assert proc.wait(30) == 70
    finally:
        if proc.poll() is None:
            _kill(proc, master)
    reader.join(5)
    text = out.decode(errors="replace")
    assert "vtdtui: error: internal error: ZeroDivisionError: division by zero" in text
    assert "Traceback" not in text and "the keys are in" in text
    assert load(state / "last.keys").key_count() == 1  # the key that hit the bug is kept


def _collect(fd: int, out: bytearray) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        out.extend(data)
