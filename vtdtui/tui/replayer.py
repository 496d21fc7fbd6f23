"""Driving the app with a keystroke fixture: headless for CI, paced for a talk.

The replay runs inside the app (Textual's auto-pilot task) and injects the same key
events a keyboard or Pilot would.  After each key (headless, after a line of text
typed into a field) it waits until every widget has handled what it caused, so the
next key lands on the same state whatever the machine's speed: that, and a
deterministic core, make a fixture give the same JSON every time.  Paced, `expect`
and `snapshot` also wait for the screen to be redrawn; headless, nobody sees a
frame, so none is painted (FrameHold): the screen is laid out where a frame would
lay it out before it is read, and an expect renders the rows likeliest to hold its
text, each alone (the whole screen only when none does; nothing for a status
message the main screen shows whole).

While a paced replay runs, the presenter's own keys steer it (see CONTROLS) and are
not passed to the app; once it ends the keyboard is the presenter's again.
"""

from __future__ import annotations

import asyncio
import shlex
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from textual._context import visible_screen_stack
from textual.screen import Screen
from textual.strip import Strip
from textual.widgets import Input
from textual.widgets._toast import Toast, ToastHolder, ToastRack

from ..machine.state import to_json_text
from ..outfile import write_atomic
from ..replay import Fixture, Step, key_event, typed
from ..textsafe import printable
from .compositor import chop_rows
from .rows import RowsPane
from .svg import offline_svg

if TYPE_CHECKING:
    # The app this drives: any Textual App with vtdtui's attributes (main, machine,
    # replayer ...); the replayer is given it, it never builds one (app.replay does).
    from textual.app import App as VtdApp

# Paced replay, at --speed 1: the delay after each key of a `keys` line, and after
# each character of a `type` line (typing reads better a little faster).
KEY_DELAY = 0.35
TYPE_DELAY = 0.06

CONTROLS = (
    ("space", "pause / resume"),
    ("→ or .", "step one line (pauses)"),
    ("n or pgdn", "jump to the next caption"),
    ("esc", "stop the replay: the keyboard is yours"),
    ("q", "quit"),
)
_PAUSE = {"space"}
_STEP = {"right", "full_stop"}
_NEXT = {"pagedown", "n"}
_STOP = {"escape"}
_QUIT = {"q", "ctrl+c", "ctrl+q"}


@dataclass
class Failure:
    where: str    # file:line
    message: str
    screen: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.where}: {self.message}"


def screen_lines(app: "VtdApp") -> list[str]:
    """The text now on the screen, one string per row (what `expect` searches).

    Textual has no public text export; this is the compositor call behind
    App.export_screenshot, without its side effect of clearing the dirty regions a
    live terminal still has to paint."""
    visible_screen_stack.set(app._background_screens)
    return [strip.text for strip in app.screen._compositor.render_strips()]


# Notifications (Textual's toasts) are not what an expect reads: a paced replay in a
# terminal smaller than its fixture warns with one, which sat over the journal for
# twelve seconds and hid the rows the next expects were written for.
_NOTIFICATIONS = (Toast, ToastHolder, ToastRack)


def screen_rows(app: "VtdApp", top: int, bottom: int) -> list[str]:
    """Rows [top, bottom) of screen_lines(), under any notification, each widget over
    them rendering those rows alone (compositor.chop_rows).  (Textual's Compositor
    internals, as screen_lines(); textual < 8.3, pinned.)"""
    visible_screen_stack.set(app._background_screens)
    return [Strip.join(chops.values()).text
            for chops in chop_rows(app.screen._compositor, top, bottom, skip=_NOTIFICATIONS)]


def screen_row(app: "VtdApp", y: int) -> str:
    """Row `y` of screen_lines(), rendered alone, under any notification."""
    return screen_rows(app, y, y + 1)[0]


# A widget this short (status, context, caption, footer) is tried row by row: cheaper
# than guessing which of its rows says what.
_FEW_ROWS = 3


def rows_to_try(app: "VtdApp", text: str) -> list[int]:
    """Screen rows that may hold `text`, likeliest first: the rows where a pane shows
    a line holding it (a guess: a row cut short on screen, a line that wraps), then
    the rows of every widget a few rows high.  An expect renders these alone and
    renders the whole screen only when none holds the text."""
    panes: list[int] = []
    short: list[int] = []
    height = app.screen._compositor.size.height
    for widget, (region, clip) in app.screen._compositor.visible_widgets.items():
        shown = region.intersection(clip)
        if not shown.width:
            continue
        if isinstance(widget, RowsPane):
            top = widget.content_region.y
            panes += [top + i for i, (line, _cursor) in enumerate(widget._visible_signature()[-1])
                      if text in "".join(part for part, _token in line)]
        elif shown.height <= _FEW_ROWS:
            short += shown.line_range
    rows = dict.fromkeys(y for y in panes + short if 0 <= y < height)
    return list(rows)


def _on_screen(app: "VtdApp", text: str) -> tuple[bool, list[str]]:
    """Whether a row of the screen holds `text` (under any notification), and the
    screen's lines when none does (a failed expect shows them).  The rows likeliest to
    hold it are rendered alone first: an expect that holds renders a row or a few, not
    the screen."""
    if any(text in screen_row(app, y) for y in rows_to_try(app, text)):
        return True, []
    if any(text in row for row in screen_rows(app, 0, app.screen._compositor.size.height)):
        return True, []
    return False, screen_lines(app)  # what the terminal shows, notifications included


def _field_takes(app: "VtdApp", keys: list[str]) -> bool:
    """The focused widget is a text field, which keeps every printable key it gets
    (Input._on_key stops it), and no priority binding (the app tries those before
    the field sees the key) is one of `keys`."""
    if not isinstance(app.focused, Input):
        return False
    priority = {key for _node, bindings in app.screen._binding_chain
                for key, found in bindings.key_to_bindings.items() if any(b.priority for b in found)}
    return not priority.intersection(keys)


def _gone(app: "VtdApp") -> bool:
    """The app is ending: it exits, or an error ended it (then nothing it was asked to
    do will ever be done, and waiting for it would hang the replay)."""
    return bool(app._exit or getattr(app, "_exception", None) is not None or app._closing or app._closed)


async def _barrier(nodes: list) -> None:
    """Wait until each node has handled everything queued to it before now."""
    waiting: dict[int, object] = {}
    done = asyncio.Event()

    def fired(key: int) -> None:
        waiting.pop(key, None)
        if not waiting:
            done.set()

    for node in nodes:
        if node.call_later(fired, id(node)):
            waiting[id(node)] = node
    for _ in range(40):  # 2 s: a node that never gets to its queue must not hang a replay
        if not waiting or _gone(nodes[0]):
            return
        try:
            await asyncio.wait_for(done.wait(), 0.05)
        except TimeoutError:
            # A widget removed meanwhile (a prompt that closed) never runs its queue.
            for key, node in list(waiting.items()):
                if node._closing or node._closed:
                    waiting.pop(key, None)


def _parked(node) -> bool:
    """The node's message loop waits for its next message: it has handled every one
    before (and the Idle and callbacks that follow them), or it is gone.  (Textual's
    MessagePump and Queue internals, its Queue's get() waits on an asyncio.Event;
    textual < 8.3, pinned.)"""
    if node._closing or node._closed:
        return True
    queue = node._message_queue
    return (queue.empty() and node._pending_message is None and not node._next_callbacks
            and any(not waiter.done() for waiter in queue.ready_event._waiters))


# Turns of the event loop a settle waits for every node to be parked before it
# sends barriers: a key is mostly handled within a few.
_TURNS = 16


async def settle(app: "VtdApp", redraw: bool = False) -> None:
    """Wait until the app has handled every event the last key caused (screens
    pushed or popped included); with `redraw`, also until the screen is redrawn."""
    for _ in range(_TURNS):
        await asyncio.sleep(0)
        if _gone(app):
            return
        screen = app.screen
        if getattr(screen, "ready", True) and all(map(_parked, [app, *screen.walk_children(with_self=True)])):
            break
    else:
        await _settle_by_barriers(app)
    if redraw and not _gone(app):
        drawn = asyncio.Event()
        app.screen.call_after_refresh(drawn.set)
        try:
            await asyncio.wait_for(drawn.wait(), 2.0)
        except TimeoutError:
            pass


async def _settle_by_barriers(app: "VtdApp") -> None:
    """settle() for a key whose handling awaits more than a few turns of the loop."""
    for _ in range(200):
        if _gone(app):
            return
        screen = app.screen
        nodes = [app, *screen.walk_children(with_self=True)]
        # A barrier costs a message per node: send it to those with something queued
        # and to the ones a key goes through (app, screen, focus); the test below
        # goes round again if anything was queued meanwhile.
        keyed = {id(app), id(screen), id(screen.focused)}
        await _barrier([n for n in nodes if id(n) in keyed or not n._message_queue.empty()])
        if (app.screen is screen and getattr(screen, "ready", True)
                and all(n._message_queue.empty() for n in nodes)):
            break


def _no_frame() -> None:
    """A screen's frame while a headless replay holds them: nothing to paint."""


class FrameHold:
    """Headless: no screen renders a frame until the hold ends.

    App.batch_update keeps frames from the terminal but not their rendering: a
    relayout under it (a screen pushed or popped, settle_layout) still renders the
    screen's dirty regions a moment later (Screen._refresh_layout's
    call_later(_compositor_refresh)), a render nobody sees.  The hold takes that
    refresh away from every screen shown meanwhile: screens on the stack now, and
    each one pushed later as it is pushed (before its ScreenResume is handled, where
    it lays out).  An expect renders the rows it reads (screen_row, else
    screen_lines), a snapshot the whole screen (export_screenshot).  (Textual's
    Screen and App internals, as screen_lines(); textual < 8.3, pinned.)"""

    def __init__(self, app: "VtdApp") -> None:
        self.app = app
        self.screens: weakref.WeakSet[Screen] = weakref.WeakSet()
        self.held = False

    def _hold(self, screen: object) -> None:
        if isinstance(screen, Screen) and screen not in self.screens:
            screen._compositor_refresh = _no_frame
            self.screens.add(screen)

    def start(self) -> None:
        app = self.app
        app._begin_batch()
        self.held = True
        push = type(app).push_screen.__get__(app)

        def push_screen(*args, **kwargs):
            result = push(*args, **kwargs)
            self._hold(app.screen)
            return result

        app.push_screen = push_screen
        for screen in app.screen_stack:
            self._hold(screen)

    def stop(self) -> None:
        if not self.held:
            return
        self.held = False
        app = self.app
        app.__dict__.pop("push_screen", None)
        for screen in list(self.screens):
            screen.__dict__.pop("_compositor_refresh", None)
        self.screens.clear()
        app._end_batch()


async def settle_layout(app: "VtdApp") -> None:
    """settle(), then the layout brought up to date without drawing a frame: what a
    frame would lay out, so that a render of its own (screen_row, screen_lines)
    reads what a frame would show.  A relayout sends Resize events (a pane that
    follows its cursor answers them), so it settles again until nothing moves.  (Textual's Screen internals,
    as screen_lines(); textual < 8.3, pinned.)"""
    for _ in range(20):
        await settle(app)
        if _gone(app):
            return
        screen = app.screen
        if not (screen._layout_required or screen._scroll_required):
            if not screen._callbacks:
                return
            await screen._invoke_and_clear_callbacks()  # what runs after a frame
            continue
        screen._refresh_layout(scroll=screen._scroll_required)
        screen._layout_required = screen._scroll_required = False


class Replayer:
    """One replay of one fixture.  Results: `failures`, `stopped_at`, `finished`."""

    def __init__(self, fixture: Fixture, *, headless: bool, speed: float = 1.0,
                 svg_dir: Path | None = None, json_out: str | None = None) -> None:
        self.fixture = fixture
        self.headless = headless
        self.speed = speed
        self.svg_dir = svg_dir
        self.json_out = json_out
        self.failures: list[Failure] = []
        self.finished = False        # every line ran
        self.stopped_at: int | None = None  # line where the presenter stopped it, or the app quit
        self.quit_early = False
        self._frames: FrameHold | None = None  # headless: no frames painted (see _drawn)
        self.live = False            # the replay owns the keyboard
        self.caption = ""
        self.index = 0
        self.paused = False
        self._steps = 0              # lines granted by "step" while paused
        self._line_pass = False      # the current line was granted by a step
        self._skip = False           # running ahead to the next caption
        self._stop = False
        self._wake = asyncio.Event()
        self.app: VtdApp | None = None
        self.json_text: str | None = None  # the state after the last line, for --json
        self.json_write_error = ""  # the first output (--json, --svg-dir) that could not be written
        self._shown: tuple[str, ...] = ()  # the banner on screen (see _banner)

    # ------------------------------------------------------------ presenter keys
    def control(self, key: str) -> bool:
        """A key the presenter pressed; True when the replay used it."""
        if key in _QUIT:
            return False
        if key in _PAUSE:
            self.paused = not self.paused
        elif key in _STEP:
            self.paused = True
            self._steps += 1
        elif key in _NEXT:
            self._skip = True
        elif key in _STOP:
            self._stop = True
        self._wake.set()
        self._banner()
        return True

    async def _hold(self, line_start: bool) -> None:
        """Wait here while paused, unless a step lets this line run."""
        if line_start:
            self._line_pass = False
        while self.paused and not self._skip and not self._stop and not self._line_pass:
            if self._steps:
                self._steps -= 1
                self._line_pass = True
                break
            self._banner()
            self._wake.clear()
            await self._wake.wait()

    async def _delay(self, seconds: float) -> None:
        if self.headless or self._skip or self._stop or seconds <= 0:
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds / self.speed)
        except TimeoutError:
            pass

    # ------------------------------------------------------------ banner
    def _banner(self, error: str = "") -> None:
        app = self.app
        if app is None or _gone(app):
            return
        total = len(self.fixture.steps)
        if self.headless:
            # What a slide shows: no progress counter, no keys to press.
            state, hint = self.fixture.name, ""
        elif self.finished or self.stopped_at is not None:
            state = "■ replay finished" if self.finished else f"■ replay stopped at line {self.stopped_at}"
            hint = "the keyboard is yours · q quits"
        else:
            state = ("⏸" if self.paused else "▶") + f" {min(self.index + 1, total)}/{total}"
            hint = " · ".join(f"{k} {what.split(' (')[0].split(':')[0]}" for k, what in CONTROLS[:4])
        banner = (self.caption, state, hint, error or (self.failures[-1].line() if self.failures else ""))
        # The same text again would lay the screen out again (a Static's update does).
        if banner != self._shown:
            self._shown = banner
            app.show_caption(*banner)

    # ------------------------------------------------------------ running
    async def run(self, app: "VtdApp") -> None:
        self.app = app
        self.live = not self.headless
        try:
            if self.headless:
                # Nobody sees a headless replay's frames, the first one included:
                # the screen is laid out as a frame would, and read where it is read.
                self._frames = FrameHold(app)
                self._frames.start()
                # The banner goes up before the first layout, which then lays the
                # panes out once, under it, instead of a second time when it shows.
                await settle(app)
                self._banner()
                await settle_layout(app)
            else:
                await settle(app, redraw=True)
                self._warn_size(app)
            await self._run(app)
        finally:
            self.live = False
            if self._frames is not None:
                self._frames.stop()
        if _gone(app):
            return
        if self.headless:
            app.exit(1 if self.failures else 0)

    def _warn_size(self, app: "VtdApp") -> None:
        """On the screen too: the warning run() printed is hidden once the app draws."""
        warning = size_warning((app.size.width, app.size.height), self.fixture.size, self.fixture.source)
        if warning:
            app.notify(printable(warning), severity="warning", timeout=12, markup=False)

    async def _run(self, app: "VtdApp") -> None:
        steps = self.fixture.steps
        self._banner()
        for self.index, step in enumerate(steps):
            if self._skip and step.kind == "caption":
                self._skip = False
            if not self.headless:
                self._banner()
            await self._hold(True)
            if self._stop:
                self.stopped_at = step.line
                break
            ok = await self._do(app, step)
            if _gone(app):
                if self.index < len(steps) - 1:
                    self.quit_early = True
                    self.stopped_at = step.line
                else:  # the fixture's last key quit: the state is whole, the screen gone
                    self.finished = True
                    self._write_outputs(app)
                return
            if not ok and self.headless:
                self._banner()
                return
        else:
            self.finished = True
        await self._drawn(app)
        if self.finished:
            self._write_outputs(app)
        self._banner()

    async def _do(self, app: "VtdApp", step: Step) -> bool:
        kind = step.kind
        if kind == "caption":
            self.caption = step.arg
            self._banner()
        elif kind == "pause":
            await self._delay(step.seconds)
        elif kind in ("keys", "type"):
            events = [key_event(k) for k in step.keys] if kind == "keys" else typed(step.arg)
            delay = KEY_DELAY if kind == "keys" else TYPE_DELAY
            if kind == "type" and self.headless and _field_takes(app, [key for key, _ in events]):
                # Typed into the field that has the focus: each character goes from
                # the app to the field, in order, and the field keeps it, so none
                # changes where the next one lands.  One settle for the line.
                for key, ch in events:
                    app.inject_key(key, ch, replayed=True)
                await settle(app)
                return True
            for key, ch in events:
                await self._hold(False)
                app.inject_key(key, ch, replayed=True)
                await settle(app)
                if _gone(app):
                    return True
                await self._delay(delay)
        elif kind == "expect":
            await self._drawn(app)  # headless: laid out, not drawn
            # A status line that wraps at this width is on screen whole, over two rows
            # (the main screen keeps the whole texts it shows: no render needed).
            wrapped = app.main.wrapped_texts() if app.main is not None and app.screen is app.main else []
            seen, lines = (True, []) if any(step.arg in t for t in wrapped) else _on_screen(app, step.arg)
            if not seen:
                self.failures.append(Failure(step.where(self.fixture), f"expect {step.arg!r}: not on the screen",
                                             lines))
                self._save_svg(app, f"{self.fixture.name}-failed-line{step.line}")
                self._banner()
                return False
        elif kind == "snapshot":
            await self._drawn(app)
            self._save_svg(app, step.arg)
        return True

    async def _drawn(self, app: "VtdApp") -> None:
        """The screen laid out and drawn as it is now.  Headless, nobody sees a
        frame: the replay holds Textual's screen updates (App.batch_update, and
        FrameHold) and lays the screen out as a frame would where it is read
        (an expect renders the rows it reads, a snapshot's export_screenshot the
        whole screen)."""
        if self.headless:
            await settle_layout(app)
            return
        await settle(app, redraw=True)

    def _save_svg(self, app: "VtdApp", name: str) -> None:
        if self.svg_dir is None or _gone(app):
            return
        svg = offline_svg(app.export_screenshot(title=f"vtdtui · {self.fixture.name} · {name}"))
        path = self.svg_dir / f"{name}.svg"
        try:  # whole or not at all; an unwritable folder is bad input, not a crash
            write_atomic(path, svg)
        except OSError as exc:
            self.json_write_error = self.json_write_error or f"--svg-dir {self.svg_dir}: {exc.strerror or exc}"

    def _write_outputs(self, app: "VtdApp") -> None:
        self._save_svg(app, f"{self.fixture.name}-end")
        if self.json_out is None:
            return
        # Taken now: in a paced replay the presenter may go on with the keyboard.
        self.json_text = to_json_text(app.machine)
        if self.json_out != "-":  # stdout belongs to the terminal until the app exits
            try:
                write_atomic(self.json_out, self.json_text)
            except OSError as exc:
                self.json_write_error = self.json_write_error or f"--json {self.json_out}: {exc.strerror or exc}"



def size_warning(terminal: tuple[int, int], want: tuple[int, int], replay_arg: str) -> str:
    """'' when the terminal holds the size the fixture is replayed at (its `size`, or
    --size); else one line naming both sizes, the layout the app will show instead,
    and the command that checks the fixture at the nearest size that fits."""
    from .mainscreen import TALK, WIDE

    def layout_of(w: int, h: int) -> str:
        return "wide" if w >= WIDE[0] and h >= WIDE[1] else "talk" if w >= TALK[0] and h >= TALK[1] else "single"

    (tw, th), (ww, wh) = terminal, want
    if tw >= ww and th >= wh:
        return ""
    nearest = (min(tw, ww), min(th, wh))
    now, made = layout_of(*nearest), layout_of(ww, wh)
    if now == made:
        layout = {"wide": f"all panes still fit (from {WIDE[0]}x{WIDE[1]})",
                  "talk": f"the same five panes still fit (the talk layout, from {TALK[0]}x{TALK[1]})",
                  "single": "one pane at a time, as it was made"}[now] + ", with less room: rows are cut sooner"
    elif now == "talk":
        layout = (f"it shows the 120x40 talk layout: five panes, caches / IOPTEs / graph sharing one place "
                  f"(all panes need {WIDE[0]}x{WIDE[1]})")
    else:
        layout = f"it shows one pane at a time (five panes need {TALK[0]}x{TALK[1]}, all {WIDE[0]}x{WIDE[1]})"
    return (f"warning: the terminal is {tw}x{th}, smaller than the {ww}x{wh} this replay is made for: "
            f"{layout}, and its expects may fail. Enlarge the terminal (or shrink the font) to {ww}x{wh}, "
            f"or check it at {nearest[0]}x{nearest[1]} first: "
            f"vtdtui replay {shlex.quote(replay_arg)} --headless --size {nearest[0]}x{nearest[1]}")
