"""Key cost: where a key's CPU goes in the app, split as the frame trace cannot.

Runs the app in process (Textual's headless driver, 160x50), presses each key
ROUNDS times (the keys in turn, round by round: `a d` attaches and detaches) and
times, per press, four things Textual and vtdtui do for it:

  command   Machine.execute (the command the key runs)
  views     MainScreen.refresh_panes (the panes' views recomputed, their rows set)
  frame     Screen._on_timer_update (the tick that renders the changed lines: the
            compositor, each widget's render_lines, the update written)
  widgets   the frame's render_lines, widget by widget, with the lines rendered

    python -m bench.keycost [--devices N] [--attach] [--rounds R] KEY...

KEY is a key name, or keys joined by "/" pressed together ("n/0/x/4"); "PRE|KEY"
presses PRE untimed first (a prompt's text: "n/0/x/4/0/0/0/0/0/0/0/space/6/4/K|enter").
--devices N uses the server scenario (4,096 with 1M pages, as bench terminal does);
--attach attaches the selected group first.  A profiling aid, not a benchmark: the
terminal's cost and Textual's 60 Hz pacing are bench/terminal.py's to measure.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

from textual.screen import Screen
from textual.widget import Widget

from vtdtui.machine import Machine
from vtdtui.tui import mainscreen
from vtdtui.tui.app import VtdApp


class Meter:
    """Seconds and calls per name, with the methods it wraps."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.lines: Counter[str] = Counter()
        self.on = False

    def wrap(self, cls: type, name: str, label: str) -> None:
        orig = getattr(cls, name)
        meter = self

        def timed(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return orig(self, *args, **kwargs)
            finally:
                if meter.on:
                    meter.seconds[label] += time.perf_counter() - t0
                    meter.calls[label] += 1

        setattr(cls, name, timed)

    def wrap_render(self) -> None:
        orig = Widget.render_lines
        meter = self

        def render_lines(self, crop):
            t0 = time.perf_counter()
            try:
                return orig(self, crop)
            finally:
                if meter.on:
                    who = f"{type(self).__name__}#{self.id}" if self.id else type(self).__name__
                    meter.seconds["  " + who] += time.perf_counter() - t0
                    meter.calls["  " + who] += 1
                    meter.lines["  " + who] += crop.height

        Widget.render_lines = render_lines


def parse(argv: list[str]) -> tuple[int | None, bool, int, list[str]]:
    devices, attach, rounds, keys = None, False, 20, []
    it = iter(argv)
    for a in it:
        if a == "--devices":
            devices = int(next(it))
        elif a == "--attach":
            attach = True
        elif a == "--rounds":
            rounds = int(next(it))
        else:
            keys.append(a)
    if not keys:
        raise SystemExit(__doc__)
    return devices, attach, rounds, keys


async def measure(devices: int | None, attach: bool, rounds: int, keys: list[str]) -> None:
    meter = Meter()
    meter.wrap(Machine, "execute", "command")
    meter.wrap(mainscreen.MainScreen, "refresh_panes", "views")
    meter.wrap(Screen, "_on_timer_update", "frame")
    meter.wrap_render()
    machine = (Machine.from_scenario("server", devices=devices, map_spec="4G:4K" if devices == 4096 else None)
               if devices else Machine.from_scenario(None))
    app = VtdApp(machine)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(0.3)  # the start settled, the graph pane's networkx graph built
        if attach:
            await pilot.press("a")
            await pilot.pause()
        # Round by round, the keys in turn (a then d: each press does its work).
        per_key = {key: (Counter(), Counter(), Counter()) for key in keys}
        for _ in range(rounds):
            for key in keys:
                pre, _, timed = key.rpartition("|")
                if pre:
                    await pilot.press(*pre.split("/"))
                    await pilot.pause()
                meter.seconds, meter.calls, meter.lines = per_key[key]
                meter.on = True
                await pilot.press(*timed.split("/"))
                await pilot.pause()
                meter.on = False
        last = app.last_status
    # Printed once the app is gone (Textual captures what is printed while it runs).
    for key, (seconds, _calls, lines) in per_key.items():
        print(f"{key}: ms a press (mean of {rounds})")
        for label in ("command", "views", "frame"):
            print(f"  {label:8s} {seconds[label] / rounds * 1000:6.2f}")
        widgets = sorted((k for k in seconds if k.startswith("  ")), key=lambda k: -seconds[k])
        for k in widgets[:8]:
            print(f"  {k:30s} {seconds[k] / rounds * 1000:6.2f}  lines {lines[k] / rounds:5.1f}")
    print(f"the last key said: {last[:100]!r}")


def main(argv: list[str]) -> int:
    asyncio.run(measure(*parse(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
