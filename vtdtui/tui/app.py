"""The vtdtui application: composes the main screen, the keys of DESIGN.md, the
prompts, help and palette, and the session's key logs.

What the keys do lives in actions.py and journal_actions.py, the layout in
mainscreen.py, the key table in bindings.py, the logs in session.py; here are what
only the app can do: route every key and paste (so that the logs hold exactly what
a replay types), run what the widgets ask for (messages.py), and start and end.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from textual import events
from textual.app import App
from textual.screen import Screen
from textual.widgets import Input

from ..exits import EXIT_BAD_INPUT, EXIT_INTERNAL, error_line
from ..limits import MAX_TYPE_CHARS
from ..machine import Machine, ScenarioError
from ..outfile import write_atomic
from ..replay import Fixture, typed
from ..textsafe import printable
from .actions import CommandActions
from .bindings import ACTIONS, BINDINGS, OWN_ACTIONS, RECORD_KEY, help_rows
from .journal_actions import JournalActions
from .mainscreen import NAME_LIMIT, STATUS_LIMIT, WIDE, MainScreen
from .messages import BackToTables, OpenPageTables, RunAction, RunCommand, Say
from .palette import VtdCommandPalette, VtdCommands
from .panes import Pane
from .prompt import PromptScreen
from .session import KeyLogs, record_clash, recording_names, session_dir, session_log_path
from .theme import DEFAULT_THEME, THEMES, vtd_variables

if TYPE_CHECKING:
    from ..replay import Recorder

# Not imported here: what no first frame needs (help.py, replayer.py, svg.py) loads
# when it is first used (startup: tests/test_startup_imports.py).

# Imported from here by the tests and the command line (run: the app; replay: the app
# under a keystroke fixture).
__all__ = ["NAME_LIMIT", "RECORD_KEY", "STATUS_LIMIT", "WIDE", "VtdApp", "replay", "run", "session_dir",
           "session_log_path"]


class Presenter(Protocol):
    """A paced replay, as the app sees it (tui/replayer.py): while `live` it may take
    a key the presenter pressed to steer it."""

    live: bool

    def control(self, key: str) -> bool: ...


class VtdApp(CommandActions, JournalActions, App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "vtdtui"
    COMMANDS = App.COMMANDS | {VtdCommands}
    ACTIONS = ACTIONS
    BINDINGS = BINDINGS

    def __init__(self, machine: Machine, *, scenario_arg: str | None = None,
                 replayer: Presenter | None = None, record_to: str | None = None,
                 session_to: Path | None = None, check_invariants: bool = False,
                 theme: str = DEFAULT_THEME, keymap: dict[str, str] | None = None) -> None:
        super().__init__()
        for t in THEMES:
            self.register_theme(t)
        self.theme = theme  # any Textual theme: the panes take their colours from it (theme.py)
        if keymap:
            self.set_keymap(keymap)  # config.toml [keys], checked by tui/config.py
        self.machine = machine
        self.scenario_arg = scenario_arg or machine.scenario.name
        self.replayer = replayer
        self.record_to = record_to
        self.session_to = session_to  # the session log: every key, always (see run())
        self.logs = KeyLogs(self.scenario_arg)
        self.check_invariants = check_invariants  # --check-invariants: after every command
        self._injected: set[int] = set()  # keys sent by a replay or re-sent by a prompt
        self._replayed: set[int] = set()  # of those, a replay's: they go to the logs
        self.version = 0  # bumped by every state change; panes redo their view when behind
        self.last_status = ""
        self.main: MainScreen | None = None  # built as the app starts, inside the running app
        self._prompt: PromptScreen | None = None

    def get_css_variables(self) -> dict[str, str]:
        # The $vtd-* variables app.tcss and the panes use, derived for a theme that
        # does not set them; theme_variables is what the panes' Rich styles come from.
        self.theme_variables = vtd_variables(super().get_css_variables())
        return self.theme_variables

    @property
    def recorder(self) -> Recorder | None:
        return self.logs.recorder

    @property
    def session(self) -> Recorder | None:
        return self.logs.session

    @property
    def panes(self) -> list[Pane]:
        return self.main.panes if self.main is not None else []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A prompt or modal takes keys only while open: the global keys wait.
        if action in OWN_ACTIONS and self.main is not None and self.screen is not self.main:
            return False
        return True

    # ------------------------------------------------------------ keys and pastes
    async def on_event(self, event: events.Event) -> None:
        # A key comes here first from the terminal (or inject_key), and again when it
        # bubbles back up from the focused widget: only the first visit is ours.
        if isinstance(event, events.Key):
            screen = self.screen if self._screen_stack else None
            if event.is_forwarded:
                pass
            elif id(event) in self._injected:
                self._injected.discard(id(event))
                if id(event) in self._replayed:  # a replay's key changes state like a typed one
                    self._replayed.discard(id(event))
                    self._log_key(event, screen)
            else:
                r = self.replayer
                if r is not None and r.live and r.control(event.key):
                    return
                self._log_key(event, screen)
            # Either visit: a key that beat the prompt it was typed for waits for it.
            if isinstance(screen, PromptScreen) and screen.hold(event.key, event.character):
                return
        elif isinstance(event, events.Paste) and not event.is_forwarded:
            self._paste(event.text)
            return
        await super().on_event(event)

    def _paste(self, text: str) -> None:
        """A paste types its text: one key event per character, exactly what the
        `type` line it is logged as replays, so the session log and a recording hold
        it and a replay gets the same prompt text.  As Textual's Input does, only the
        first line counts; characters no key can type (tabs, controls) are dropped."""
        r = self.replayer
        screen = self.screen if self._screen_stack else None
        if (r is not None and r.live) or not (isinstance(screen, PromptScreen) or isinstance(self.focused, Input)):
            return  # no text field takes it (a pane would ignore it): nothing happens
        line = text.splitlines()[0] if text else ""
        # A longer paste is refused whole rather than typed in part: it is no command,
        # and its `type` line would be more than a fixture takes.
        if len(line) > MAX_TYPE_CHARS:
            message = f"paste refused: {len(line):,} characters, more than {MAX_TYPE_CHARS:,} (MAX_TYPE_CHARS)"
            if not (isinstance(screen, PromptScreen) and screen.tell(message)):
                self.say(message, error=True)
            return
        for key, ch in typed("".join(ch for ch in line if ch.isprintable())):
            self.post_message(events.Key(key, ch))  # as if typed: logged, held, dispatched

    def inject_key(self, key: str, character: str | None, *, replayed: bool = False) -> None:
        """Send a key that the user did not type now (a replay, or a key a prompt
        kept and hands on): not a presenter's control.  A replay's keys (`replayed`)
        go to the session log and a recording, so that a session resumed by a replay
        logs from its start; a key a prompt hands on was logged when it was typed."""
        event = events.Key(key, character)
        event.set_sender(self)
        self._injected.add(id(event))
        if replayed:
            self._replayed.add(id(event))
        self.post_message(event)

    def _log_key(self, event: events.Key, screen: Screen | None) -> None:
        if event.key == RECORD_KEY and screen is self.main and screen is not None:
            return
        if self.logs.key(event.key, event.character, isinstance(self.focused, Input)) and self.main is not None:
            self.say_again()  # a log fell behind, or caught up

    def _print_error_renderables(self) -> None:
        """A bug must not paint a traceback over the user's terminal: run() reports it
        as one line (status 70) and the session log still holds every key; with
        VTDTUI_DEBUG=1 Textual prints the traceback as usual."""
        if self._exception is not None and not os.environ.get("VTDTUI_DEBUG"):
            self._exit_renderables.clear()
            return
        super()._print_error_renderables()

    # ------------------------------------------------------------ screens
    def get_default_screen(self) -> Screen:
        # The main screen is the default one: no empty screen to lay out and paint
        # before it (a third of the startup time).
        self.main = MainScreen()
        return self.main

    @property
    def prompt(self) -> PromptScreen:
        """The prompt screen, installed so that it is kept (not rebuilt) between prompts."""
        if self._prompt is None:
            self._prompt = PromptScreen()
            self.install_screen(self._prompt, "prompt")
        return self._prompt

    def start(self) -> None:
        # Called by MainScreen.on_mount, before the first layout: the first frame has rows.
        # Everything built so far (the machine: a million table entries on a large
        # scenario) lives as long as the app: out of the cyclic collector's sight, a
        # full collection no longer stalls a keystroke for tens of milliseconds.
        gc.freeze()
        self.main.begin()
        no_log = None
        if self.session_to is not None:
            no_log = self.logs.start_session_log(self.session_to, tuple(self.size))
        if self.record_to:
            self._start_recording(self.record_to)
            return
        m = self.machine
        self.say(f"{m.scenario.name} scenario: {len(m.units)} unit(s), {len(m.groups)} group(s). "
                 "g picks a group, a attaches it, n maps, t issues DMA; m c s flip CM, C, SC; ? explains every pane.")
        if no_log:  # the app runs without it, and says so where the eye goes
            self.say(no_log, error=True)

    def show_caption(self, caption: str, state: str, hint: str, error: str = "") -> None:
        """The replay banner (the replayer's)."""
        self.main.show_caption(caption, state, hint, error)

    # ------------------------------------------------------------ what widgets ask for
    def on_say(self, message: Say) -> None:
        self.say(message.text, error=message.error)

    def on_run_command(self, message: RunCommand) -> None:
        self.run_command(message.line)

    def on_run_action(self, message: RunAction) -> None:
        self.call_later(self.run_action, message.action)

    def on_open_page_tables(self, message: OpenPageTables) -> None:
        self.show_page_tables(message.unit, message.sid)

    def on_back_to_tables(self, message: BackToTables) -> None:
        self.back_to_tables()

    # ------------------------------------------------------------ app keys
    def action_zoom(self) -> None:
        self.say(self.main.zoom())

    def action_pane(self, delta: int) -> None:
        self.main.next_pane(delta)

    def action_pane_to(self, i: int) -> None:
        self.main.show_pane(i)

    def action_command_palette(self) -> None:
        if self.use_command_palette and not VtdCommandPalette.is_open(self):
            self.push_screen(VtdCommandPalette(id="--command-palette"))

    def action_help(self) -> None:
        from .help import HelpScreen

        self.push_screen(HelpScreen(help_rows(self._keymap)))

    def action_screenshot(self) -> None:
        from textual._files import generate_datetime_filename

        from .svg import offline_svg

        path = Path(generate_datetime_filename(self.title, ".svg"))
        try:  # whole or not at all: a full disk leaves no half SVG behind
            path = Path.cwd() / path  # the folder may be gone (removed under the session)
            write_atomic(path, offline_svg(self.export_screenshot()))
        except OSError as exc:  # a read-only or full folder: say so, keep going
            self.say(f"screenshot not saved: {exc.filename or path}: {exc.strerror or exc}", error=True)
            return
        self.say(f"screenshot saved to {path}")

    # ------------------------------------------------------------ recording
    def _start_recording(self, path: str, exclusive: bool = False) -> bool:
        """Record to `path`; False when it exists and `exclusive` (a name the app
        chose: another one is tried), or when the status line says why not."""
        refused = self.logs.start_recording(path, tuple(self.size), exclusive=exclusive,
                                            note=f"from the {self.machine.scenario.name} scenario")
        if refused is not None:
            if refused:
                self.say(refused, error=True)
            return bool(refused)
        self.record_to = path
        self.main.update_context_line()
        so_far = f" (with the {len(self.logs.keylog)} key(s) so far)" if self.logs.keylog else ""
        self.say(f"recording keys to {path}{so_far}; {RECORD_KEY} stops. Replay: vtdtui replay {path}")
        return True

    def action_record(self) -> None:
        rec = self.logs.stop_recording()
        if rec is not None:
            self.main.update_context_line()
            self.say(f"recording stopped: {rec.keys} key(s) in {rec.path}. Replay: vtdtui replay {rec.path}")
            return
        names = list(recording_names(self.machine.scenario.name))
        for path in names:
            if self._start_recording(path, exclusive=True):
                return
        self.say(f"cannot record: {names[0][:-len('.keys')]}-*.keys all exist", error=True)


def run(scenario: str | None, record: str | None = None, *, devices: int | None = None,
        map_spec: str | None = None, check_invariants: bool = False, theme: str = DEFAULT_THEME,
        keymap: dict[str, str] | None = None, machine: Machine | None = None) -> int:
    """`vtdtui [--scenario NAME|PATH] [--devices N] [--map SIZE[:PAGE]] [--record FILE]
    [--theme NAME]`: build the machine, run the app (theme and keymap: tui/config.py).
    `machine`: a machine built already (`vtdtui --import PATH...`); no session log is
    kept for it (a replay could not rebuild it from a scenario)."""
    given = machine is not None
    if machine is None:
        try:
            machine = Machine.from_scenario(scenario, devices=devices, map_spec=map_spec)
        except ScenarioError as exc:
            error_line(str(exc))
            return EXIT_BAD_INPUT
    if record is not None:
        clash = record_clash(record, scenario)
        if clash:
            error_line(f"--record {record}: {clash}")
            return EXIT_BAD_INPUT
        try:
            Path(record).open("ab").close()  # fail now, not after the session
        except OSError as exc:
            error_line(f"--record {record}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
    # A recording holds keys only: with the mouse off, nothing unrecorded changes state.
    session = None if devices is not None or map_spec is not None or given else session_log_path()
    app = VtdApp(machine, scenario_arg=scenario, record_to=record, session_to=session,
                 check_invariants=check_invariants, theme=theme, keymap=keymap)
    app.run(mouse=record is None)
    app.logs.close()
    return EXIT_INTERNAL if report_crash(app) else 0


def report_crash(app: VtdApp) -> bool:
    """One line for a bug that ended the app (its traceback is held back, see
    VtdApp._print_error_renderables); True when there was one."""
    exc = app._exception
    if exc is None:
        return False
    kept = f"; the keys are in {app.session.path}" if app.session is not None else ""
    error_line(f"internal error: {type(exc).__name__}: {exc} (VTDTUI_DEBUG=1 shows the traceback{kept})")
    return True


# ------------------------------------------------------------ vtdtui replay
def _terminal_size() -> tuple[int, int] | None:
    for stream in (sys.stdout, sys.stdin):
        try:
            columns, lines = os.get_terminal_size(stream.fileno())
            return columns, lines
        except (AttributeError, OSError, ValueError):  # not a terminal (the web driver), closed
            continue
    return None


def replay(fixture: Fixture, machine, *, headless: bool, speed: float = 1.0, svg_dir: Path | None = None,
           json_out: str | None = None, theme: str = DEFAULT_THEME) -> int:
    """`vtdtui replay`: run the app under the replay; 0 when every expect held, 1 when
    one failed or the fixture quit the app early.  No keymap: a fixture's keys are
    the default keys, whatever config.toml remaps."""
    from .replayer import Replayer, size_warning

    replayer = Replayer(fixture, headless=headless, speed=speed, svg_dir=svg_dir, json_out=json_out)
    # A paced replay hands the keyboard over (the README's recovery: replay last.keys):
    # its session is logged like any other, the replayed keys first.
    session = None if headless else session_log_path()
    app = VtdApp(machine, scenario_arg=fixture.scenario, replayer=replayer, session_to=session, theme=theme)

    if not headless:
        # Said before the app takes the screen (it stays above the prompt afterwards)
        # and again on the screen, where the presenter looks.
        term = _terminal_size()
        warning = size_warning(term, fixture.size, fixture.source) if term else ""
        if warning:
            print(printable(warning), file=sys.stderr)

    async def pilot(_pilot) -> None:
        await replayer.run(app)

    app.run(headless=headless, size=fixture.size if headless else None, auto_pilot=pilot, mouse=not headless)
    if app.session is not None:
        app.session.close()
    if report_crash(app):
        return EXIT_INTERNAL
    # The fixture's path and text are the user's: no control character reaches the terminal.
    for f in replayer.failures:
        print(printable(f.line()), file=sys.stderr)
        if headless and f.screen:
            print("  the screen was:", file=sys.stderr)
            print("\n".join("  | " + printable(line.rstrip()) for line in f.screen), file=sys.stderr)
    source = printable(fixture.source)
    if replayer.quit_early:
        print(f"{source}:{replayer.stopped_at}: the app quit at this line; "
              "the lines after it were not replayed", file=sys.stderr)
    elif replayer.stopped_at is not None:
        print(f"{source}:{replayer.stopped_at}: replay stopped here by the presenter", file=sys.stderr)
    if replayer.json_text is not None and json_out == "-":
        sys.stdout.write(replayer.json_text)
    elif json_out not in (None, "-") and replayer.json_text is None and not replayer.failures:
        print(f"{source}: the replay did not reach the last line; no JSON written", file=sys.stderr)
    if replayer.json_write_error:
        error_line(replayer.json_write_error)
        return EXIT_BAD_INPUT
    return 1 if replayer.failures or replayer.quit_early else 0
