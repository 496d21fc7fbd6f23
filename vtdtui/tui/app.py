"""The vtdtui application: the panes, the keys of DESIGN.md, prompts, help, palette.

Every state change is a machine command, so what a key does is exactly what a
fixture line or `vtdtui dump --do` does.  After each command the visible panes
recompute their views; hidden ones wait until they are shown.
"""

from __future__ import annotations

import gc
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Static

from ..hw.entries import bdf_str
from ..machine import CommandError, Machine, Outcome, ScenarioError
from ..limits import MAX_TYPE_CHARS
from ..machine.machine import OPTIONS
from ..outfile import write_atomic
from ..replay import Recorder, typed
from ..textsafe import clip, markup, printable
from ..views.journal import OUTCOMES, JournalFilter
from ..views.prompts import PROMPTS, check_filter
from ..views.status import sentence
from .footer import KeyFooter
from .help import HelpScreen
from .palette import VtdCommandPalette, VtdCommands
from .panes import PANES, JournalPane, Pane, TablesPane, IoptePane
from .prompt import PromptScreen

if TYPE_CHECKING:
    from .replayer import Replayer

# The key that starts and stops recording; it is not itself recorded.
RECORD_KEY = "R"

# Below this the panes do not fit side by side: one pane at a time, with tabs.
WIDE = (140, 40)

# The status line is one row: a refusal that quotes a pasted megabyte is cut here.
STATUS_LIMIT = 1000
# A name in the context line (scenario, unit, device), cut so that the rest still shows.
NAME_LIMIT = 60


class MainScreen(Screen):
    # Textual repaints the whole screen when the focus moves; the panes that gain and
    # lose it repaint themselves (and focus styles are updated), so Tab between panes
    # costs two panes, not 160x50 cells.  (textual < 8.3, pinned.)
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)

    # tab / shift+tab walk the panes in a fixed order, shown or not.
    BINDINGS = [
        Binding("tab", "app.pane(1)", "Next pane", show=False),
        Binding("shift+tab", "app.pane(-1)", "Previous pane", show=False),
    ]

    def on_mount(self) -> None:
        self.app.start()  # type: ignore[attr-defined]

    def on_descendant_focus(self) -> None:
        if self.app.panes:  # type: ignore[attr-defined]
            self.app.relayout()  # type: ignore[attr-defined]

    def on_resize(self) -> None:
        if self.app.panes:  # type: ignore[attr-defined]
            self.app.relayout()  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Static("", id="context")
        yield Static("", id="caption")
        yield Static("", id="tabs")
        with Container(id="panes"):
            for cls in PANES:
                yield cls(id=cls.SHORT)
        yield Static("", id="status", markup=False)  # says what the user typed: '[' is text
        yield KeyFooter()


class VtdApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "vtdtui"
    COMMANDS = App.COMMANDS | {VtdCommands}

    # (key, action, description, in footer): the single table behind the bindings,
    # the help screen and the palette.
    ACTIONS = (
        ("m", "toggle('CM')", "CM", "Toggle CAP.CM (caching mode) of the selected unit", True),
        ("c", "toggle('C')", "C", "Toggle ECAP.C (page-walk coherency) of the selected unit", True),
        ("s", "toggle('SC')", "SC", "Toggle ECAP.SC (snoop control) of the selected unit", True),
        ("]", "command('next-unit')", "unit", "Select the next unit", True),
        ("[", "command('prev-unit')", "unit", "Select the previous unit", False),
        ("g", "prompt('group')", "group", "Select a group (prompt for its number)", True),
        ("a", "group_command('attach')", "attach", "Attach the selected group", True),
        ("d", "group_command('detach')", "detach", "Detach the selected group", True),
        ("n", "prompt('map')", "map", "Map IOVA SIZE [r|w|rw] into the selected group's domain", True),
        ("x", "prompt('unmap')", "unmap", "Unmap IOVA SIZE from the selected group's domain", True),
        ("t", "prompt('dma')", "DMA", "DMA from the selected group's first device (IOVA [r|w])", True),
        ("u", "undo", "undo", "Undo the last command", True),
        ("ctrl+r", "redo", "redo", "Redo the last undone command", False),
        ("colon", "prompt('command')", "command", "Run any machine command (e.g. set lazy off)", True),
        ("o", "cycle_outcome", "outcome", "Journal: show all / issued / skipped", False),
        ("slash", "journal_filter", "filter", "Journal: filter by op, unit, actor, rule", False),
        ("p", "cycle_option('reuse')", "reuse", "VFIO reuse policy: mainline / prefer-reuse", False),
        ("k", "cycle_option('kvm-model')", "kvm", "KVM memory-type model: guest MTRR (≤6.10) / guest PAT (6.11+)", False),
        ("l", "cycle_option('lazy')", "lazy", "Lazy (flush-queue) unmaps on / off", False),
        ("f", "command('flush-queue')", "flush", "Run the flush-queue timer now", False),
        ("w", "cycle_option('skip-clflush')", "no-clflush", "What-if: the driver skips clflush", False),
        ("i", "cycle_option('skip-invalidation')", "no-inval", "What-if: the driver skips caching-mode invalidations", False),
        ("v", "cycle_option('qemu-force')", "force", "What-if: QEMU assigns the device without CM", False),
        ("z", "zoom", "zoom", "Zoom the focused pane (again: all panes)", True),
        ("1-7", "", "", "Focus pane 1-7: regs, tables, caches, vm, ioptes, graph, journal", False),
        ("tab / shift+tab", "", "", "Move focus between panes", False),
        ("up down pgup pgdn", "", "", "Move the cursor in the focused pane", False),
        ("enter", "", "", "Tables: open a bus, or a device's page tables; IOPTEs: expand or collapse", False),
        ("backspace", "", "", "Tables: back to the root table", False),
        ("ctrl+s", "screenshot", "shot", "Save an SVG screenshot in the current directory", False),
        (RECORD_KEY, "record", "rec", "Record this session's keys as a fixture (again: stop)", False),
        ("question_mark", "help", "help", "Help: panes and keys", True),
        ("ctrl+p", "", "", "Command palette: every action and switch", False),
        ("q", "quit", "quit", "Quit", True),
    )
    BINDINGS = [Binding(k, a, short, show=show, tooltip=d) for k, a, short, d, show in ACTIONS if a] + [
        Binding(str(i), f"pane_to({i - 1})", f"pane {i}", show=False) for i in range(1, 8)
    ]

    def __init__(self, machine: Machine, *, scenario_arg: str | None = None,
                 replayer: "Replayer | None" = None, record_to: str | None = None,
                 session_to: Path | None = None, check_invariants: bool = False) -> None:
        super().__init__()
        self.machine = machine
        self.scenario_arg = scenario_arg or machine.scenario.name
        self.replayer = replayer
        self.record_to = record_to
        self.recorder: Recorder | None = None
        self.session_to = session_to  # the session log: every key, always (see run())
        self.session: Recorder | None = None
        self.check_invariants = check_invariants  # --check-invariants: after every command
        # Every key the user typed, so that a recording started mid-session replays
        # from the start: (key, character, typed into a text field).
        self.keylog: list[tuple[str, str | None, bool]] = []
        self._injected: set[int] = set()  # keys sent by a replay or re-sent by a prompt
        self._replayed: set[int] = set()  # of those, a replay's: they go to the logs
        self._log_trouble: dict[str, str] = {}  # "session log"/"recording" → why it is behind
        self.zoomed = False
        self.version = 0  # bumped by every state change; panes redo their view when behind
        self.last_status = ""
        self.main: MainScreen | None = None  # built as the app starts, inside the running app
        self._prompt: PromptScreen | None = None
        self.panes: list[Pane] = []

    _OWN = frozenset(a.split("(")[0] for _k, a, *_ in ACTIONS if a) | {"pane", "pane_to"}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A prompt or modal takes keys only while open: the global keys wait.
        if action in self._OWN and self.main is not None and self.screen is not self.main:
            return False
        return True

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

    def _print_error_renderables(self) -> None:
        """A bug must not paint a traceback over the user's terminal: run() reports it
        as one line (status 70) and the session log still holds every key; with
        VTDTUI_DEBUG=1 Textual prints the traceback as usual."""
        if self._exception is not None and not os.environ.get("VTDTUI_DEBUG"):
            self._exit_renderables.clear()
            return
        super()._print_error_renderables()

    def _log_key(self, event: events.Key, screen: Screen | None) -> None:
        if event.key == RECORD_KEY and screen is self.main and screen is not None:
            return
        typing = isinstance(self.focused, Input)
        self.keylog.append((event.key, event.character, typing))
        for what, rec in (("recording", self.recorder), ("session log", self.session)):
            if rec is not None:
                rec.key(event.key, event.character, typing)
                self._log_health(what, rec)

    def _log_health(self, what: str, rec: Recorder) -> None:
        """A log that cannot be written (a full disk) holds the keys and tries again at
        the next key; until then every status line says so."""
        trouble = f"{what} {rec.path} not written: {rec.error.strerror or rec.error}" if rec.error else ""
        if trouble != self._log_trouble.get(what, ""):
            if trouble:
                self._log_trouble[what] = trouble
            else:
                self._log_trouble.pop(what, None)
            if self.main is not None and self.main.is_mounted:
                self.say(self._said, error=bool(self._log_trouble) or self._said_error)

    # ------------------------------------------------------------ layout
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
        # Everything built so far (the machine: a million table entries on a large
        # scenario) lives as long as the app: out of the cyclic collector's sight, a
        # full collection no longer stalls a keystroke for tens of milliseconds.
        gc.freeze()
        self.panes = list(self.main.query(Pane))
        self.panes[0].focus()
        self.relayout()
        no_log = self._start_session_log(self.session_to) if self.session_to is not None else None
        if self.record_to:
            self._start_recording(self.record_to)
            return
        m = self.machine
        self.say(f"{m.scenario.name} scenario: {len(m.units)} unit(s), {len(m.groups)} group(s). "
                 "g picks a group, a attaches it, n maps, t issues DMA; m c s flip CM, C, SC; ? explains every pane.")
        if no_log:  # the app runs without it, and says so where the eye goes
            self.say(no_log, error=True)

    def single(self) -> bool:
        w, h = self.size
        return self.zoomed or w < WIDE[0] or h < WIDE[1]

    def relayout(self) -> None:
        if not self.panes:
            return
        main = self.main
        single = self.single()
        main.set_class(single, "-single")
        main.query_one(KeyFooter).compact = single
        if single:  # -shown only matters to the single-pane layout's stylesheet
            focused = self.current_pane()
            for p in self.panes:
                p.set_class(p is focused, "-shown")
        self._tabs()
        self.refresh_panes()

    def current_pane(self) -> Pane:
        panes = self.panes
        f = self.main.focused
        return f if isinstance(f, Pane) else panes[0]

    def _tabs(self) -> None:
        cur = self.current_pane()
        parts = []
        for i, p in enumerate(self.panes, 1):
            label = f" {i} {p.SHORT} "
            parts.append(f"[reverse bold]{label}[/]" if p is cur else label)
        hint = "   tab / 1-7 switch" + ("   z: all panes" if self.zoomed else "")
        # One row high by the stylesheet: no layout pass for a new text.
        self.main.query_one("#tabs", Static).update("".join(parts) + f"[dim]{hint}[/]", layout=False)

    # ------------------------------------------------------------ refresh
    def refresh_panes(self) -> None:
        """Recompute what is on screen; panes hidden by the single-pane layout wait."""
        single = self.single()
        cur = self.current_pane()
        for p in self.panes:
            if (not single or p is cur) and p.seen != self.version:
                p.seen = self.version
                p.update_view()
        self._update_context_line()

    def _update_context_line(self) -> None:
        m = self.machine
        g = m.groups.get(m.selected_group)
        d = m.domain_of(g) if g else None
        gtext = "no group"
        if g is not None:
            devs = ", ".join(f"{s}" for s in g.bdfs[:2]) + (" …" if len(g.bdfs) > 2 else "")
            dom = f"domain {d.id}" if d else "detached"
            gtext = markup(f"group {g.spec_id} ({devs}, {clip(g.devices[0][1], NAME_LIMIT)}) → {dom}")
        undo = f" · {len(m.log)} command(s), u undoes" if m.log else ""
        rec = f"[bold red]● REC[/] {markup(clip(self.recorder.path.name, NAME_LIMIT))} · " if self.recorder else ""
        # Names are the scenario file's text: never markup (a unit called '[b]' is a name).
        scenario, unit = markup(clip(m.scenario.name, NAME_LIMIT)), markup(clip(m.selected_unit, NAME_LIMIT))
        text = (f"{rec}[b]vtdtui[/] · scenario [b]{scenario}[/] · unit [b]{unit}[/] · {gtext}{undo}"
                "  [dim]? help · ctrl+p palette[/]")
        self.main.query_one("#context", Static).update(text, layout=False)

    _said, _said_error = "", False

    def say(self, text: str, error: bool = False) -> None:
        self._said, self._said_error = text, error
        # One row, no markup (the widget's), no control character: the text quotes
        # names and typed or pasted input.
        text = clip(text, STATUS_LIMIT)
        if self._log_trouble:  # a log behind its keys is news until it catches up
            text += "  ⚠ " + "; ".join(self._log_trouble.values()) + " (kept; written when it can be)"
            error = True
        text = printable(text)
        self.last_status = text
        w = self.main.query_one("#status", Static)
        w.update(text, layout=False)
        w.set_class(error, "-error")

    # ------------------------------------------------------------ running commands
    def run_command(self, line: str) -> str | None:
        """Run one machine command; the status line says what it did. Returns the
        refusal (state unchanged) or None."""
        try:
            outcome = self.machine.execute(line)
        except CommandError as exc:
            self.say(f"{line}: {exc}", error=True)
            return str(exc)
        self._after(outcome)
        return None

    def _after(self, outcome: Outcome) -> None:
        self.say(sentence(outcome))
        if self.check_invariants:
            from ..machine.invariants import check, check_command

            broken = check(self.machine)
            if outcome.command not in ("undo", "redo"):  # those replay commands already checked
                broken += check_command(self.machine, outcome.command, outcome.events)
            if broken:
                more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
                self.say(f"INVARIANT BROKEN after {outcome.command!r}: {broken[0]}{more}", error=True)
        self.changed()

    def changed(self) -> None:
        self.version += 1
        self.refresh_panes()

    def action_command_palette(self) -> None:
        if self.use_command_palette and not VtdCommandPalette.is_open(self):
            self.push_screen(VtdCommandPalette(id="--command-palette"))

    def palette_action(self, action: str) -> None:
        self.call_later(self.run_action, action)

    # ------------------------------------------------------------ actions
    def action_toggle(self, bit: str) -> None:
        self.run_command(f"toggle {self.machine.selected_unit} {bit}")

    def action_command(self, line: str) -> None:
        self.run_command(line)

    def action_group_command(self, verb: str) -> None:
        self.run_command(f"{verb} {self.machine.selected_group}")

    def action_prompt(self, name: str) -> None:
        spec = PROMPTS[name]
        m = self.machine
        title = spec.title
        if name in ("map", "unmap", "dma"):
            g = m.groups[m.selected_group]
            d = m.domain_of(g)
            if d is None and name != "dma":  # a DMA from a detached device is a fair question
                self.say(f"group {g.spec_id} is not attached: attach it first (a), or pick another (g)", error=True)
                return
            where = f"domain {d.id}" if d else "detached: attach it first (a)"
            title = f"{spec.title}: group {g.spec_id} ({g.bdfs[0]}) · {where}"

        def submit(text: str) -> str | None:
            ok, hint = spec.validate(text)
            if not ok:
                return hint
            error = self.run_command(spec.command(text, m.selected_group))
            if name == "group" and error is None:
                self._follow_group()
            return error

        self.push_screen(self.prompt.open(title, spec.usage, spec.validate, submit))

    def show_page_tables(self, unit: str, sid: int) -> None:
        """Drill-down from a context entry: that device's page tables, focused."""
        ioptes = self.main.query_one(IoptePane)
        ioptes.pinned = (unit, sid)
        ioptes.update_view()
        ioptes.move_cursor(0)
        self.action_pane_to(self.panes.index(ioptes))
        self.say(f"page tables of {bdf_str(sid)} on {unit}; g or a group change goes back to the selected group")

    def _follow_group(self) -> None:
        for p in self.panes:
            if isinstance(p, IoptePane):
                p.pinned = None
            if isinstance(p, TablesPane):
                p.bus = None
        self.changed()

    def action_undo(self) -> None:
        self._history(self.machine.undo)

    def action_redo(self) -> None:
        self._history(self.machine.redo)

    def _history(self, step) -> None:
        try:
            outcome = step()
        except CommandError as exc:
            self.say(str(exc), error=True)
            return
        self._after(outcome)

    def action_cycle_option(self, opt: str) -> None:
        value = self.machine.option_value(opt)
        if value is None:
            self.say(f"{opt}: this scenario has nothing it applies to", error=True)
            return
        values = OPTIONS[opt]
        self.run_command(f"set {opt} {values[(values.index(value) + 1) % len(values)]}")

    def journal(self) -> JournalPane:
        return self.main.query_one(JournalPane)

    def action_cycle_outcome(self) -> None:
        j = self.journal()
        f = j.view.filter
        nxt = OUTCOMES[(OUTCOMES.index(f.outcome) + 1) % len(OUTCOMES)]
        j.view.set_filter(JournalFilter(nxt, f.op, f.unit, f.actor, f.rule))
        j.follow = True
        j.update_view()
        self.say(f"journal shows {nxt} events · filter: {j.view.filter.describe()}")

    def action_journal_filter(self) -> None:
        j = self.journal()

        def submit(text: str) -> str | None:
            ok, hint = check_filter(text)
            if not ok:
                return hint
            j.view.set_filter(JournalFilter.parse(text, keep_outcome=j.view.filter.outcome))
            j.follow = True
            j.update_view()
            self.say(f"journal filter: {j.view.filter.describe()} · {len(j.view.indices)} event(s)")
            return None

        usage = "KEY=VALUE …  keys: outcome op unit actor rule   e.g. op=iotlb unit=dmar1"
        current = " ".join(p for p in j.view.filter.describe().split() if not p.startswith("outcome=")
                           ) if j.view.filter.describe() != "none" else ""
        self.push_screen(self.prompt.open("Filter the journal", usage, check_filter, submit, value=current))

    def action_zoom(self) -> None:
        w, h = self.size
        if not self.zoomed and (w < WIDE[0] or h < WIDE[1]):
            self.say(f"the terminal is {w}x{h}: one pane at a time already (all panes from {WIDE[0]}x{WIDE[1]})")
            return
        self.zoomed = not self.zoomed
        self.relayout()
        self.say("zoomed: one pane, z again for all" if self.zoomed else "all panes")

    def action_pane(self, delta: int) -> None:
        panes = self.panes
        i = panes.index(self.current_pane())
        self.action_pane_to((i + delta) % len(panes))

    def action_pane_to(self, i: int) -> None:
        panes = self.panes
        if 0 <= i < len(panes):
            panes[i].add_class("-shown")
            panes[i].focus()

    def action_screenshot(self) -> None:
        from textual._files import generate_datetime_filename

        path = Path(generate_datetime_filename(self.title, ".svg"))
        try:  # whole or not at all: a full disk leaves no half SVG behind
            path = Path.cwd() / path  # the folder may be gone (removed under the session)
            write_atomic(path, self.export_screenshot())
        except OSError as exc:  # a read-only or full folder: say so, keep going
            self.say(f"screenshot not saved: {exc.filename or path}: {exc.strerror or exc}", error=True)
            return
        self.say(f"screenshot saved to {path}")

    # ------------------------------------------------------------ replay and recording
    def show_caption(self, caption: str, state: str, hint: str, error: str = "") -> None:
        """The replay banner: the current caption, progress, and the presenter's keys."""
        from rich.text import Text

        w = self.main.query_one("#caption", Static)
        text = Text.assemble((f" {state} ", "reverse"), "  ", (printable(clip(caption, STATUS_LIMIT)), "bold"))
        if error:
            text.append("\n" + printable(clip(error, STATUS_LIMIT)), "bold red")
        elif hint:
            text.append(f"\n{hint}", "dim")
        w.update(text)
        w.add_class("-on")
        w.set_class(bool(error), "-error")

    def _start_recording(self, path: str, exclusive: bool = False) -> bool:
        """Record to `path`; False when it exists and `exclusive` (a name the app
        chose: another one is tried), or when the status line says why not."""
        scenario = self._scenario_for(path)
        unsayable = _unsayable(scenario)
        if unsayable:
            self.say(f"cannot record: {unsayable}", error=True)
            return True
        try:
            rec = Recorder(path, scenario=scenario, size=tuple(self.size),
                           note=f"from the {self.machine.scenario.name} scenario", exclusive=exclusive)
        except FileExistsError:
            return False
        except OSError as exc:
            self.say(f"cannot record to {path}: {exc.strerror or exc}", error=True)
            return True
        for key, ch, typing in self.keylog:
            rec.key(key, ch, typing)
        self.recorder = rec
        self.record_to = path
        self._update_context_line()
        so_far = f" (with the {len(self.keylog)} key(s) so far)" if self.keylog else ""
        self.say(f"recording keys to {path}{so_far}; {RECORD_KEY} stops. Replay: vtdtui replay {path}")
        self._log_health("recording", rec)
        return True

    def _start_session_log(self, path: Path) -> str | None:
        """Start the session log; the reason when there is none (no reason to refuse to run)."""
        scenario = self._scenario_for(str(path))
        unsayable = _unsayable(scenario)
        if unsayable:
            return f"no session log: {unsayable}"
        try:
            self.session = Recorder(path, scenario=scenario, size=tuple(self.size),
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
        self._log_health("session log", self.session)
        return None

    def _scenario_for(self, path: str) -> str:
        """The scenario as the fixture must name it: a file relative to the fixture."""
        from ..machine.scenario import BUILTIN

        arg = self.scenario_arg
        if arg in BUILTIN:
            return arg
        return os.path.relpath(Path(arg).resolve(), Path(path).resolve().parent)

    def action_record(self) -> None:
        rec = self.recorder
        if rec is not None:
            rec.close()
            self.recorder = None
            self._update_context_line()
            self.say(f"recording stopped: {rec.keys} key(s) in {rec.path}. Replay: vtdtui replay {rec.path}")
            return
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        # The scenario's name is its file's text: only the safe characters make the file name.
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.machine.scenario.name[:40])
        for n in range(1, 100):  # R twice in a second must not write over the first recording
            path = f"vtdtui-{name}-{stamp}" + (f"-{n}" if n > 1 else "") + ".keys"
            if self._start_recording(path, exclusive=True):
                return
        self.say(f"cannot record: vtdtui-{name}-{stamp}-*.keys all exist", error=True)

    def action_help(self) -> None:
        keys = [(k.replace("question_mark", "?").replace("colon", ":").replace("slash", "/"), d)
                for k, _a, _short, d, _s in self.ACTIONS]
        self.push_screen(HelpScreen(keys))


def _unsayable(scenario: str) -> str:
    """Why a fixture's `scenario` line cannot name this path, or ''."""
    if "#" in scenario:  # a fixture line ends at '#'
        return f"the scenario path {scenario!r} holds a '#', which a fixture reads as a comment"
    if not scenario.isprintable() or scenario != scenario.strip():
        return f"the scenario path {scenario!r} holds a character a fixture line cannot hold"
    return ""


def _record_clash(record: str, scenario: str | None) -> str:
    """Why --record FILE would write over an input of this session, or ''."""
    try:
        target = Path(record).resolve()
        from ..machine.scenario import BUILTIN

        if scenario not in (None, *BUILTIN) and target == Path(scenario).resolve():
            return "is the scenario file of this session; recording would write over it"
        if target.parent == session_dir().resolve():
            return "is in the session-log folder; recording would write over a session's log"
    except (OSError, RuntimeError):  # a symlink loop: the open below says what is wrong
        pass
    return ""


def run(scenario: str | None, record: str | None = None, *, devices: int | None = None,
        map_spec: str | None = None, check_invariants: bool = False) -> int:
    """`vtdtui [--scenario NAME|PATH] [--devices N] [--map SIZE[:PAGE]] [--record FILE]`:
    build the machine, run the app."""
    from ..cli import EXIT_BAD_INPUT, EXIT_INTERNAL, error_line

    try:
        machine = Machine.from_scenario(scenario, devices=devices, map_spec=map_spec)
    except ScenarioError as exc:
        error_line(str(exc))
        return EXIT_BAD_INPUT
    if record is not None:
        clash = _record_clash(record, scenario)
        if clash:
            error_line(f"--record {record}: {clash}")
            return EXIT_BAD_INPUT
        try:
            Path(record).open("ab").close()  # fail now, not after the session
        except OSError as exc:
            error_line(f"--record {record}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
    # A recording holds keys only: with the mouse off, nothing unrecorded changes state.
    session = None if devices is not None or map_spec is not None else session_log_path()
    app = VtdApp(machine, scenario_arg=scenario, record_to=record, session_to=session,
                 check_invariants=check_invariants)
    app.run(mouse=record is None)
    for rec in (app.recorder, app.session):
        if rec is not None:
            rec.close()  # what a full disk held back gets its last chance; close never raises
    if app._exception is not None:
        exc = app._exception
        kept = f"; the keys are in {app.session.path}" if app.session is not None else ""
        error_line(f"internal error: {type(exc).__name__}: {exc} (VTDTUI_DEBUG=1 shows the traceback{kept})")
        return EXIT_INTERNAL
    return 0


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
