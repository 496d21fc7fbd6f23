"""Frame trace: why a key costs the frames it costs (a profiling aid for bench/terminal.py).

Runs vtdtui (or the bare app) as bench/terminal.py does — a whole process in a pty at
Textual's default 60 fps — with Textual's frame machinery instrumented: for every
frame written (`App._display`) the log holds when it was written, how long its render
took, what made the screen dirty since the frame before (a layout asked for by which
widget, a scroll, which widgets repainted and who called their `refresh`), and the
keys that arrived.  Nothing of vtdtui is changed; Textual's methods are wrapped.

    python -m bench.frametrace [--devices N] [--profile] KEY... ; KEY: a key name,
        "=text" (typed, untimed), "!key" (pressed, untimed), e.g.
    python -m bench.frametrace n =0x40000000 64K rw enter

Each timed key prints: ms to its last frame (and the cyclic GC's collections in it,
their ms and oldest generation), then each frame with what caused it.
FRAMETRACE_GC_DUMP=1 adds, at each collection of generation 1 or 2, how many objects
it walks and the largest containers among them (a machine-sized one should never be).
--profile adds a cProfile of the app process over the timed keys (top functions by
cumulative time, the textual/rich/vtdtui ones), written when the app quits.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
import traceback

# ---------------------------------------------------------------------------- in the app


def _caller() -> str:
    """The innermost frame outside textual/rich/asyncio: who asked."""
    for fs in reversed(traceback.extract_stack(limit=28)[:-2]):
        f = fs.filename
        if "/textual/" in f or "/rich/" in f or "/asyncio/" in f or f.endswith("frametrace.py"):
            continue
        return f"{os.path.basename(f)}:{fs.lineno} {fs.name}"
    return "textual"


def _textual_caller() -> str:
    out = []
    for fs in reversed(traceback.extract_stack(limit=40)[:-2]):
        if fs.filename.endswith("frametrace.py"):
            continue
        out.append(f"{os.path.basename(fs.filename)}:{fs.lineno} {fs.name}")
        if len(out) == int(os.environ.get("FRAMETRACE_DEPTH", "4")):
            break
    return " < ".join(out)


def instrument(log_path: str) -> None:
    from textual import events
    from textual.app import App
    from textual.message_pump import MessagePump
    from textual.screen import Screen
    from textual.widget import Widget

    log = open(log_path, "w", buffering=1)
    pending: list[dict] = []

    def note(kind: str, **kw) -> None:
        pending.append({"t": time.perf_counter(), "kind": kind, **kw})

    def name(w) -> str:
        return f"{type(w).__name__}#{w.id}" if getattr(w, "id", None) else type(w).__name__

    # Collections of the cyclic GC, each with its generation and what it cost: a
    # full one walking a machine-sized structure shows here, not in any repaint.
    started = [0.0]
    dump = os.environ.get("FRAMETRACE_GC_DUMP")

    def on_gc(phase, info):
        if phase == "start":
            if dump and info["generation"] >= 1:
                young = [o for g in range(info["generation"] + 1) for o in gc.get_objects(g)]
                big = sorted(((len(o), type(o).__name__) for o in young if isinstance(o, (dict, list, set, tuple))),
                             reverse=True)[:6]
                note("gc-young", n=len(young), big=big)
            started[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - started[0]) * 1000
            note("gc", gen=info["generation"], ms=round(ms, 2), collected=info["collected"])

    gc.callbacks.append(on_gc)

    orig_display = App._display

    def _display(self, screen, renderable):
        t0 = time.perf_counter()
        orig_display(self, screen, renderable)
        t1 = time.perf_counter()
        if renderable is not None:
            log.write(json.dumps({"t": t1, "kind": "frame", "ms": round((t1 - t0) * 1000, 2),
                                  "screen": type(screen).__name__, "why": pending[:]}) + "\n")
            pending.clear()

    App._display = _display

    orig_refresh = Widget.refresh

    def refresh(self, *regions, repaint=True, layout=False, recompose=False):
        if self.is_mounted:
            note("refresh", w=name(self), layout=layout, by=_caller() if not os.environ.get("FRAMETRACE_DEPTH") else _textual_caller())
        return orig_refresh(self, *regions, repaint=repaint, layout=layout, recompose=recompose)

    Widget.refresh = refresh

    orig_on_layout = Screen._on_layout

    async def _on_layout(self, message):
        note("layout-msg", w=name(message.widget))
        return await orig_on_layout(self, message)

    Screen._on_layout = _on_layout

    orig_timer = Screen._on_timer_update

    def _on_timer_update(self):
        note("tick", screen=type(self).__name__, layout=self._layout_required, scroll=self._scroll_required,
             repaint=self._repaint_required, dirty=sorted(name(w) for w in self._dirty_widgets)[:12])
        t0 = time.perf_counter()
        r = orig_timer(self)
        note("tick-done", ms=round((time.perf_counter() - t0) * 1000, 2))
        return r

    Screen._on_timer_update = _on_timer_update

    orig_car = MessagePump.call_after_refresh

    def call_after_refresh(self, callback, *args, **kwargs):
        note("after-refresh", cb=getattr(callback, "__qualname__", repr(callback)), by=_caller())
        return orig_car(self, callback, *args, **kwargs)

    MessagePump.call_after_refresh = call_after_refresh

    orig_on_event = App.on_event

    async def on_event(self, event):
        if isinstance(event, events.Key) and not event.is_forwarded:
            note("key", key=event.key)
        if isinstance(event, events.Resize):
            note("resize")
        return await orig_on_event(self, event)

    App.on_event = on_event

    orig_rl = Screen._refresh_layout

    def _refresh_layout(self, size=None, scroll=False):
        note("refresh-layout", screen=type(self).__name__, scroll=scroll, widgets=len(self._layout_widgets),
             by=_textual_caller())
        return orig_rl(self, size, scroll)

    Screen._refresh_layout = _refresh_layout

    orig_resume = Screen._on_screen_resume

    def _on_screen_resume(self, event):
        note("screen-resume", screen=type(self).__name__)
        return orig_resume(self, event)

    Screen._on_screen_resume = _on_screen_resume

    orig_post = MessagePump.post_message

    def post_message(self, message):
        if isinstance(message, (events.Resize, events.Show, events.Hide)) and isinstance(self, Widget):
            note(type(message).__name__.lower(), w=name(self))
        return orig_post(self, message)

    MessagePump.post_message = post_message

    orig_invoke = Screen._invoke_and_clear_callbacks

    async def _invoke_and_clear_callbacks(self):
        if self._callbacks:
            note("callbacks", screen=type(self).__name__,
                 cbs=[getattr(c, "__qualname__", repr(c)) for c, _ in self._callbacks])
        return await orig_invoke(self)

    Screen._invoke_and_clear_callbacks = _invoke_and_clear_callbacks

    from textual.scroll_view import ScrollView
    def watcher(orig):
        def watch_scroll_y(self, old, new):
            note("scroll-y", w=name(self), old=old, new=new, by=_caller())
            return orig(self, old, new)
        return watch_scroll_y

    for cls in (Widget, ScrollView):
        cls.watch_scroll_y = watcher(cls.__dict__["watch_scroll_y"])

    if os.environ.get("FRAMETRACE_LAYOUT_STACKS"):
        def _get_lr(self):
            return self.__dict__.get("_lr_", False)

        def _set_lr(self, v):
            if v and not self.__dict__.get("_lr_", False) and self.is_mounted:
                note("layout-set", w=name(self), by=_textual_caller() + " | " + _caller())
            self.__dict__["_lr_"] = v

        Widget._layout_required = property(_get_lr, _set_lr)

    orig_scroll_update = Widget._scroll_update if hasattr(Widget, "_scroll_update") else None
    if orig_scroll_update is not None:
        def _scroll_update(self, virtual_size):
            note("scroll-update", w=name(self), by=_caller())
            return orig_scroll_update(self, virtual_size)
        Widget._scroll_update = _scroll_update


def app_main(argv: list[str]) -> None:
    log_path, prof_path, rest = argv[0], argv[1], argv[2:]
    instrument(log_path)
    if rest and rest[0] == "--bare":
        sys.argv = ["bareapp"]
        from bench.bareapp import BareApp
        BareApp().run()
        return
    sys.argv = ["vtdtui", *rest]
    from vtdtui.cli import main
    if prof_path != "-":
        import cProfile
        import signal

        prof = cProfile.Profile()
        # Profiling starts at SIGUSR1 (the driver sends it before the timed keys) and
        # is written at SIGUSR2.
        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
        signal.signal(signal.SIGUSR2, lambda *_: (prof.disable(), prof.dump_stats(prof_path)))
    raise SystemExit(main())


# ---------------------------------------------------------------------------- the driver


def drive(args: list[str]) -> None:
    import signal

    from .terminal import Term

    devices = None
    profile = "--profile" in args
    args = [a for a in args if a != "--profile"]
    bare = "--bare" in args
    args = [a for a in args if a != "--bare"]
    if "--devices" in args:
        i = args.index("--devices")
        devices = int(args[i + 1])
        del args[i:i + 2]
    tmp = tempfile.mkdtemp(prefix="vtdtui-frametrace-")
    log_path = os.path.join(tmp, "frames.jsonl")
    prof_path = os.path.join(tmp, "prof.out") if profile else "-"
    extra = ["--bare"] if bare else []
    if devices is not None:
        extra = ["--scenario", "server", "--devices", str(devices)] + (["--map", "4G:4K"] if devices == 4096 else [])
    t = Term(["-m", "bench.frametrace", "--app", log_path, prof_path, *extra])
    try:
        t.started()
        if profile:
            os.kill(t.proc.pid, signal.SIGUSR1)
        marks = []
        for a in args:
            if a.startswith("="):
                t.put([a[1:]])
            elif a.startswith("!"):
                t.put([a[1:]])
            else:
                t0 = time.perf_counter()
                dt, frames = t.press(a)
                marks.append((a, t0, dt, frames))
        if profile:
            os.kill(t.proc.pid, signal.SIGUSR2)
            time.sleep(1.0)
    finally:
        t.close()
    recs = [json.loads(line) for line in open(log_path)]
    gcs = [r for rec in recs if rec["kind"] == "frame" for r in rec["why"] if r["kind"] == "gc"]
    for key, t0, dt, frames in marks:
        in_key = [g for g in gcs if t0 <= g["t"] <= t0 + dt + 0.001]
        gc_note = f", gc {sum(g['ms'] for g in in_key):.1f} ms (gen {max(g['gen'] for g in in_key)})" if in_key else ""
        print(f"=== {key}: {dt * 1000:.1f} ms, {frames} frame(s){gc_note}")
        for r in recs:
            if r["kind"] == "frame" and t0 <= r["t"] <= t0 + dt + 0.001:
                print(f"  frame at {1000 * (r['t'] - t0):7.1f} ms (render {r['ms']} ms, {r['screen']})")
                for w in r["why"]:
                    at = 1000 * (w["t"] - t0)
                    rest = {k: v for k, v in w.items() if k not in ("t", "kind")}
                    print(f"     {at:7.1f} {w['kind']:<13} {rest}")
    if profile and os.path.exists(prof_path):
        import pstats
        pstats.Stats(prof_path).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--app"]:
        app_main(sys.argv[2:])
    else:
        drive(sys.argv[1:])
