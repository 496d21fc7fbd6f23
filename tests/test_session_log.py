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

    assert main(["replay", str(log), "--headless", "--json", str(tmp_path / "replayed.json")]) == 0
    args = ["dump", "--scenario", "desktop"]
    for c in WANT:
        args += ["--do", c]
    capsys.readouterr()
    assert main([*args, "--json", str(tmp_path / "want.json")]) == 0
    replayed = json.loads((tmp_path / "replayed.json").read_text())
    want = json.loads((tmp_path / "want.json").read_text())
    assert replayed == want


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
