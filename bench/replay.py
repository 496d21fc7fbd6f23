"""Replay: headless keys per second for a long fixture.

The fixture is written here: the desktop scenario at 160x50, a few hundred keys that
each change state or the screen (CM / C / SC toggles, unit changes, selecting and
attaching the NIC and the dGPU, cursor moves, pane changes), typed prompts, and
expects along the way, so the replay checks what it claims to have done.  It runs
through `vtdtui replay --headless` as a user runs it (the CLI's own function, in this
process), timed from the start of the command to its exit.
"""

from __future__ import annotations

import io
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from vtdtui import cli
from vtdtui.replay.fixture import load

from .common import Figures, report, verdict

TARGET = 200  # keys per second

ROUND = """\
keys m c s ] [ m c s down down up tab tab tab
keys g
type 5
keys enter a down up d
keys g
type 1
keys enter a tab down d
expect detached group 1
"""


def write_fixture(path: Path, rounds: int) -> None:
    text = "# bench/replay.py: a long fixture, written for the benchmark\nsize 160x50\nscenario desktop\n"
    path.write_text(text + ROUND * rounds, encoding="utf-8")


def run(quick: bool = False) -> Figures:
    rounds = 10 if quick else 40
    with tempfile.TemporaryDirectory() as tmp:
        fx = Path(tmp) / "long.keys"
        write_fixture(fx, rounds)
        keys = load(fx).key_count()
        err = io.StringIO()
        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            status = cli.main(["replay", str(fx), "--headless"])
        dt = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"bench replay: the fixture failed (exit {status}):\n{err.getvalue()}")
    rate = keys / dt
    fig = {"keys": keys, "seconds": round(dt, 2), "keys_per_s": round(rate, 1)}
    summary = [f"headless replay            {keys} keys in {dt:.2f} s: {rate:,.0f} keys/s "
               f"(target ≥{TARGET}: {verdict(rate >= TARGET)})"]
    return report("replay", fig, summary)


if __name__ == "__main__":
    run()
