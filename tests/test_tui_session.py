"""The key logs of a session (tui/session.py), without an app: the keylog, the session
log, the recording, and the trouble a log that cannot be written reports."""

from __future__ import annotations

import re

from tuikit import FullDisk
from vtdtui.replay import load
from vtdtui.tui.session import KeyLogs, recording_names, unsayable

SIZE = (160, 50)


def test_a_recording_starts_with_the_keys_so_far(tmp_path):
    logs = KeyLogs("desktop")
    logs.key("m", "m", False)
    logs.key("g", "g", False)
    path = tmp_path / "r.keys"
    assert logs.start_recording(str(path), SIZE, note="test") is None
    logs.key("5", "5", True)
    logs.close()
    fixture = load(path)
    assert fixture.scenario == "desktop" and fixture.key_count() == 3


def test_a_name_that_exists_is_passed_over_and_an_unsayable_one_refused(tmp_path):
    taken = tmp_path / "taken.keys"
    taken.write_text("keys m\n")
    assert KeyLogs("desktop").start_recording(str(taken), SIZE, note="", exclusive=True) == ""
    assert taken.read_text() == "keys m\n"
    odd = KeyLogs(str(tmp_path / "lab#1.toml"))
    refused = odd.start_recording(str(tmp_path / "r.keys"), SIZE, note="")
    assert refused.startswith("cannot record: ") and "'#'" in refused
    assert unsayable("desktop") == "" and unsayable(" x") != ""


def test_a_log_behind_its_keys_is_trouble_until_it_catches_up(tmp_path):
    logs = KeyLogs("desktop")
    assert logs.start_session_log(tmp_path / "s.keys", SIZE) is None
    assert (tmp_path / "last.keys").resolve() == (tmp_path / "s.keys").resolve()
    disk = logs.session._f = FullDisk(logs.session._f)
    assert logs.key("m", "m", False) is True  # trouble came: the status line must say so
    assert "No space left on device" in logs.trouble["session log"]
    assert logs.key("c", "c", False) is False  # still the same trouble: nothing new to say
    disk.full = False
    assert logs.key("s", "s", False) is True and logs.trouble == {}
    logs.close()
    assert load(tmp_path / "s.keys").key_count() == 3


def test_recording_names_are_safe_and_distinct():
    names = list(recording_names("[b]x \x1b/y"))
    assert len(set(names)) == len(names) == 99
    assert all(re.fullmatch(r"vtdtui-[A-Za-z0-9_.-]+\.keys", n) for n in names)
