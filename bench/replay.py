"""Replay: headless keys per second for a long fixture.

The fixture is written here: the desktop scenario at 160x50, a few hundred keys that
each change state or the screen (CM / C / SC toggles, unit changes, selecting and
attaching the NIC and the dGPU, cursor moves, pane changes), typed prompts, and
expects along the way, so the replay checks what it claims to have done.  It runs
through `vtdtui replay --headless` as a user runs it (the CLI's own function, in this
process), timed from the start of the command to its exit.

Shipped fixtures: every fixture of `vtdtui replay --list`, each replayed headless at
its own size through the CLI (`vtdtui replay NAME --headless`), in a fresh process
that replays them all and times each replay call; this tree and the baseline tree
(the last commit before issue 16, bench/common.py) take turns, so the keys/s of the
two are a ratio from one run (target: ≥ 3x).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from vtdtui import cli
from vtdtui.replay.fixture import load

from .common import Figures, baseline_tree, child_env, report, verdict, vtdtui_tree

TARGET = 200  # keys per second
SHIPPED_TARGET = 3.0  # shipped fixtures: this tree's keys/s over the baseline's
CHILD = """\
import io, json, sys, time
from contextlib import redirect_stderr, redirect_stdout
from vtdtui import cli
from vtdtui.replay.fixture import load
from vtdtui.replay.library import shipped
out = []
for f in shipped():
    keys = load(f.path).key_count()
    err = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        status = cli.main(["replay", f.name, "--headless"])
    out.append([f.name, keys, time.perf_counter() - t0, status, err.getvalue()[-400:]])
print(json.dumps(out))
"""


def _shipped_in_child(tree: str) -> list:
    p = subprocess.run([sys.executable, "-c", CHILD], env=child_env(tree), cwd=tempfile.gettempdir(), capture_output=True,
                       text=True, check=False)
    if p.returncode:
        raise SystemExit(f"bench replay: the shipped fixtures from {tree} failed:\n{p.stderr}")
    rows = json.loads(p.stdout)
    bad = [r for r in rows if r[3] != 0]
    if bad:
        raise SystemExit(f"bench replay: {bad[0][0]} (from {tree}) exited {bad[0][3]}:\n{bad[0][4]}")
    return rows


def shipped_fixtures(quick: bool) -> tuple[Figures, list[str]]:
    """Every shipped fixture replayed headless, this tree and the baseline in turns."""
    repeat = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="vtdtui-baseline-") as tmp:
        base = baseline_tree(tmp)
        trees = {"now": vtdtui_tree(), **({"baseline": base} if base else {})}
        best: dict[str, dict[str, float]] = {name: {} for name in trees}
        keys: dict[str, int] = {}
        for _ in range(repeat):
            for name, tree in trees.items():
                for fx, n, dt, _status, _err in _shipped_in_child(tree):
                    keys[fx] = n
                    best[name][fx] = min(best[name].get(fx, dt), dt)
    # The ratio compares the fixtures both trees ship; newer ones are listed alone.
    common = [fx for fx in keys if all(fx in b for b in best.values())]
    total = sum(keys[fx] for fx in common)
    rate = {name: total / sum(b[fx] for fx in common) for name, b in best.items()}
    fig: Figures = {"shipped_fixtures": len(keys), "shipped_keys": total, "shipped_keys_per_s": round(rate["now"], 1)}
    lines = [f"shipped fixtures in both trees, {len(common)} ({', '.join(common)}), {total} keys, headless, "
             f"best of {repeat}: {rate['now']:,.0f} keys/s"]
    if "baseline" in rate:
        r = rate["now"] / rate["baseline"]
        fig.update(baseline_shipped_keys_per_s=round(rate["baseline"], 1), shipped_vs_baseline=round(r, 2))
        lines.append(f"  vs {rate['baseline']:,.0f} keys/s at the last commit before issue 16: {r:.2f}x "
                     f"(target ≥{SHIPPED_TARGET:g}x: {verdict(r >= SHIPPED_TARGET)})")
    for fx in keys:
        lines.append(f"  {fx:<22} {keys[fx]:4d} keys  {keys[fx] / best['now'][fx]:6.0f} keys/s"
                     + (f"  (baseline {keys[fx] / best['baseline'][fx]:5.0f})" if fx in best.get("baseline", {})
                        else "  (new: not in the baseline)" if "baseline" in best else ""))
    return fig, lines

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
    ship_fig, ship_lines = shipped_fixtures(quick)
    fig = {"keys": keys, "seconds": round(dt, 2), "keys_per_s": round(rate, 1), **ship_fig}
    summary = [f"headless replay            {keys} keys in {dt:.2f} s: {rate:,.0f} keys/s "
               f"(target ≥{TARGET}: {verdict(rate >= TARGET)})", *ship_lines]
    return report("replay", fig, summary)


if __name__ == "__main__":
    run()
