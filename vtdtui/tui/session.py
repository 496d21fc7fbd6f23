"""The keys of a session, kept three ways: in memory from the start (so that a
recording started mid-session replays from the start), in the session log (always),
and in a recording (R, or --record).  No Textual here: the app hands each key in
and says on its status line what comes back.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from ..machine.scenario import BUILTIN
from ..replay import Recorder


class KeyLogs:
    """The keylog, the session log and the recording of one app."""

    def __init__(self, scenario_arg: str) -> None:
        self.scenario_arg = scenario_arg  # --scenario as given: what a fixture's scenario line names
        # Every key the user typed: (key, character, typed into a text field).
        self.keylog: list[tuple[str, str | None, bool]] = []
        self.recorder: Recorder | None = None
        self.session: Recorder | None = None
        self.trouble: dict[str, str] = {}  # "session log"/"recording" → why it is behind

    def key(self, key: str, character: str | None, typing: bool) -> bool:
        """Log one key everywhere; True when a log's trouble came or went (the status
        line must say so)."""
        self.keylog.append((key, character, typing))
        changed = False
        for what, rec in (("recording", self.recorder), ("session log", self.session)):
            if rec is not None:
                rec.key(key, character, typing)
                changed |= self.health(what, rec)
        return changed

    def health(self, what: str, rec: Recorder) -> bool:
        """A log that cannot be written (a full disk) holds the keys and tries again at
        the next key; True when that changed."""
        trouble = f"{what} {rec.path} not written: {rec.error.strerror or rec.error}" if rec.error else ""
        if trouble == self.trouble.get(what, ""):
            return False
        if trouble:
            self.trouble[what] = trouble
        else:
            self.trouble.pop(what, None)
        return True

    def scenario_for(self, path: str) -> str:
        """The scenario as the fixture must name it: a file relative to the fixture."""
        arg = self.scenario_arg
        if arg in BUILTIN:
            return arg
        return os.path.relpath(Path(arg).resolve(), Path(path).resolve().parent)

    def start_session_log(self, path: Path, size: tuple[int, int]) -> str | None:
        """Start the session log; the reason when there is none (no reason to refuse to run)."""
        scenario = self.scenario_for(str(path))
        why = unsayable(scenario)
        if why:
            return f"no session log: {why}"
        try:
            self.session = Recorder(path, scenario=scenario, size=size,
                                    note="as the session's log: replay it to get back here")
            last = path.parent / "last.keys"
            tmp = path.parent / f".last-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(path.name)
            os.replace(tmp, last)
        except OSError as exc:
            if self.session is not None:
                self.session.close()
                self.session = None
            return f"no session log: {exc.filename or path}: {exc.strerror or exc}"
        self.health("session log", self.session)
        return None

    def start_recording(self, path: str, size: tuple[int, int], note: str, exclusive: bool = False) -> str | None:
        """Record to `path`, with the keys so far; None when recording, "" when `path`
        exists and `exclusive` (a name the app chose: try another), else why not."""
        scenario = self.scenario_for(path)
        why = unsayable(scenario)
        if why:
            return f"cannot record: {why}"
        try:
            rec = Recorder(path, scenario=scenario, size=size, note=note, exclusive=exclusive)
        except FileExistsError:
            return ""
        except OSError as exc:
            return f"cannot record to {path}: {exc.strerror or exc}"
        for key, ch, typing in self.keylog:
            rec.key(key, ch, typing)
        self.recorder = rec
        self.health("recording", rec)
        return None

    def stop_recording(self) -> Recorder | None:
        rec, self.recorder = self.recorder, None
        if rec is not None:
            rec.close()
        return rec

    def close(self) -> None:
        for rec in (self.recorder, self.session):
            if rec is not None:
                rec.close()  # what a full disk held back gets its last chance; close never raises


def recording_names(scenario_name: str, now: datetime | None = None):
    """File names for R, the first one free wins: R twice in a second must not write
    over the first recording."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    # The scenario's name is its file's text: only the safe characters make the file name.
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in scenario_name[:40])
    for n in range(1, 100):
        yield f"vtdtui-{name}-{stamp}" + (f"-{n}" if n > 1 else "") + ".keys"


def unsayable(scenario: str) -> str:
    """Why a fixture's `scenario` line cannot name this path, or ''."""
    if "#" in scenario:  # a fixture line ends at '#'
        return f"the scenario path {scenario!r} holds a '#', which a fixture reads as a comment"
    if not scenario.isprintable() or scenario != scenario.strip():
        return f"the scenario path {scenario!r} holds a character a fixture line cannot hold"
    return ""


def record_clash(record: str, scenario: str | None) -> str:
    """Why --record FILE would write over an input of this session, or ''."""
    try:
        target = Path(record).resolve()
        if scenario not in (None, *BUILTIN) and target == Path(scenario).resolve():
            return "is the scenario file of this session; recording would write over it"
        if target.parent == session_dir().resolve():
            return "is in the session-log folder; recording would write over a session's log"
    except (OSError, RuntimeError):  # a symlink loop: the open below says what is wrong
        pass
    return ""


def session_dir() -> Path:
    """Where session logs go: $VTDTUI_STATE_DIR, else $XDG_STATE_HOME/vtdtui, else
    ~/.local/state/vtdtui; `last.keys` there is the newest session's."""
    if os.environ.get("VTDTUI_STATE_DIR"):
        return Path(os.environ["VTDTUI_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "vtdtui"


def session_log_path() -> Path | None:
    """A new file for this session's keys, or None when there is nowhere to write.
    A generated scenario (--devices/--map) has no name a fixture could give: no log."""
    d = session_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return d / f"session-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.keys"
