"""TUI: startup to first frame, and keystroke to completed refresh, measured in the app.

Startup: from constructing the app (vtdtui: building the default scenario's machine
first) to the first frame drawn, headless at 160x50, against a bare Textual app with
the same number of panes (bordered Static widgets in a grid) and the same footer keys,
started in the same run (at Textual's default frame rate, in this process).

Keystrokes: state-changing keys (m toggles CAP.CM and journals it; down / up move the
focused pane's cursor; tab moves the focus; ] / [ change the unit) go in one at a
time the way the terminal driver delivers them (App.post_message of a Key event; no
Pilot, so none of its pauses).  The time runs until the app has handled the key and
the screen has been redrawn with the result.  Textual paces redraws to TEXTUAL_FPS
(60 by default, so a redraw waits up to a frame for its tick); this benchmark raises
it to 1000 (in a child process: Textual reads it once) so that the figure is the
app's own work, not the phase of that timer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time

from textual.app import App, ComposeResult
from textual.widgets import Footer, Static

from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp
from vtdtui.tui.panes import PANES
from vtdtui.tui.replayer import settle

from .common import Figures, child_env, percentile, report, verdict, vtdtui_tree

KEYS_FPS = "1000"  # the keystroke child's TEXTUAL_FPS: see above
SIZE = (160, 50)
STARTUP_TARGET = 1.5
P99_TARGET_MS = 16.0
KEYS = ["m", "down", "down", "down", "m", "up", "]", "[", "tab"]


class BareApp(App):
    """The baseline: as many panes as vtdtui, each a Static, laid out in a grid, and
    the same key bindings, so that its footer shows the same keys."""

    BINDINGS = VtdApp.BINDINGS
    CSS = "Screen { layout: grid; grid-size: 3; } Static { border: round $accent; height: 1fr; }"

    def compose(self) -> ComposeResult:
        for i in range(len(PANES)):
            yield Static(f"pane {i}")
        yield Footer()


async def _redrawn(app: App) -> None:
    drawn = asyncio.Event()
    app.screen.call_after_refresh(drawn.set)
    await asyncio.wait_for(drawn.wait(), 5.0)


async def _first_frame(make) -> float:
    t0 = time.perf_counter()
    app = make()
    async with app.run_test(headless=True, size=SIZE):
        await settle(app)
        await _redrawn(app)
        t1 = time.perf_counter()
    return t1 - t0


async def _startup(rounds: int) -> tuple[float, float]:
    vtd, bare = [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        bare.append(await _first_frame(BareApp))
        vtd.append(await _first_frame(lambda: VtdApp(Machine.from_scenario(None))))
    return sorted(vtd)[len(vtd) // 2], sorted(bare)[len(bare) // 2]


async def _keystrokes(machine: Machine, n: int) -> list[tuple[str, float]]:
    app = VtdApp(machine)
    times: list[tuple[str, float]] = []
    async with app.run_test(headless=True, size=SIZE):
        await settle(app, redraw=True)
        keys = (KEYS * (n // len(KEYS) + 1))[:n]
        for key in keys:
            t0 = time.perf_counter()
            app.inject_key(key, key if len(key) == 1 else None)
            await settle(app)
            await _redrawn(app)
            times.append((key, time.perf_counter() - t0))
        assert machine.log, "the keys changed no state"
    return times


def _keystrokes_in_child(n: int, big: tuple | None) -> list[tuple[str, float]]:
    """Keystroke figures come from a child process whose Textual runs at KEYS_FPS
    (read once, when Textual is imported); startup stays at Textual's own rate."""
    env = {**child_env(vtdtui_tree()), "TEXTUAL_FPS": KEYS_FPS}
    args = [sys.executable, "-m", "bench.tui", "--keys", str(n), *(map(str, big) if big else ())]
    out = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"bench tui: the keystroke run failed:\n{out.stderr}")
    return json.loads(out.stdout)


def _child_keys(argv: list[str]) -> None:
    n = int(argv[0])
    m = Machine.from_scenario(argv[1], devices=int(argv[2]), map_spec=argv[3]) if len(argv) > 1 else Machine.from_scenario(None)
    print(json.dumps(asyncio.run(_keystrokes(m, n))))


def run(quick: bool = False) -> Figures:
    n = 60 if quick else 216
    big = ("server", 1024, "256M:4K") if quick else ("server", 4096, "4G:4K")
    vtd_s, bare_s = asyncio.run(_startup(3 if quick else 7))
    default = _keystrokes_in_child(n, None)
    large = _keystrokes_in_child(n, big)
    ms = lambda v: round(v * 1000, 2)  # noqa: E731

    def slowest(pairs: list[tuple[str, float]]) -> str:
        kinds = sorted({k for k, _ in pairs})
        worst = max(kinds, key=lambda k: percentile([t for kk, t in pairs if kk == k], 99))
        return f"{worst} ({ms(percentile([t for k, t in pairs if k == worst], 99))} ms)"

    default_keys, large_keys = default, large
    default, large = [t for _, t in default], [t for _, t in large]
    fig = {
        "size": f"{SIZE[0]}x{SIZE[1]}", "keystroke_textual_fps": int(KEYS_FPS),
        "startup_s": round(vtd_s, 3), "bare_startup_s": round(bare_s, 3),
        "startup_ratio": round(vtd_s / bare_s, 2),
        "keys": n,
        "default_p50_ms": ms(percentile(default, 50)), "default_p99_ms": ms(percentile(default, 99)),
        "large_scenario": f"{big[0]} --devices {big[1]} --map {big[2]}",
        "large_p50_ms": ms(percentile(large, 50)), "large_p99_ms": ms(percentile(large, 99)),
        "default_slowest_key": slowest(default_keys), "large_slowest_key": slowest(large_keys),
    }
    summary = [
        f"startup to first frame     {vtd_s * 1000:8.1f} ms vs bare Textual {bare_s * 1000:.1f} ms: "
        f"{fig['startup_ratio']:.2f}x (target ≤{STARTUP_TARGET}x: {verdict(fig['startup_ratio'] <= STARTUP_TARGET)})",
        f"key → redraw, default      p50 {fig['default_p50_ms']:6.2f} ms  p99 {fig['default_p99_ms']:6.2f} ms "
        f"over {n} keys (target p99 <{P99_TARGET_MS:g}: {verdict(fig['default_p99_ms'] < P99_TARGET_MS)})",
        f"key → redraw, {fig['large_scenario']}: p50 {fig['large_p50_ms']:6.2f} ms  p99 {fig['large_p99_ms']:6.2f} ms "
        f"(target p99 <{P99_TARGET_MS:g}: {verdict(fig['large_p99_ms'] < P99_TARGET_MS)})",
        f"slowest key by p99: {fig['default_slowest_key']} on default, {fig['large_slowest_key']} on the large one",
    ]
    return report("tui", fig, summary)


if __name__ == "__main__":
    if "--keys" in sys.argv:
        _child_keys(sys.argv[sys.argv.index("--keys") + 1:])
    else:
        run()
