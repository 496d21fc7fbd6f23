"""Terminal: what a user feels, measured from outside through a pseudo-terminal.

The real app runs as a whole process (`python -m vtdtui ARGS`, Textual's Linux driver,
its default 60 fps: TEXTUAL_FPS is removed from the environment) in a pty of 160x50.
This process plays the terminal: it reads everything the app writes and answers the
one query that matters here.  Textual 8 asks the terminal at start whether it supports
synchronized output (DECRQM `ESC [ ? 2026 $ p`); when the terminal says yes
(`ESC [ ? 2026 ; 2 $ y`, as kitty, WezTerm, foot, iTerm2, Windows Terminal do), Textual
wraps every frame in `ESC [ ? 2026 h` … `ESC [ ? 2026 l`.  So a frame's end is its
`ESC [ ? 2026 l`, and frames are counted exactly.  (Without the answer Textual writes
unmarked frames; the first frame or two of a start are unmarked anyway, because they
are written before the answer is read.)

A key is timed from the write of its bytes to the end of the last frame it causes.
"Last" means: after it no output for QUIET seconds while the process is idle (its
CPU time, from /proc/PID/stat, grew by at most IDLE_TICKS clock ticks over that
window), so a key whose work runs long between two frames is not cut short.  A key
that causes no frame within NO_FRAME seconds counts as a failure of the run.

Measured on the default scenario and on generated machines of 64 / 512 / 4,096 /
7,680 devices (`--scenario server --devices N`; 4,096 with `--map 4G:4K`, 1,048,576
pages): every key of the contract (m c s ] [, g→Enter, a d, n→Enter x→Enter t→Enter),
u, ctrl+r, PgDn (journal pane), the journal filter `/`→Enter (set, and clear), tab.
The prompts' own keys (`g`, the typed text) are pressed and settled but not timed:
the timed key is the Enter that runs the command.

Baseline: bench/bareapp.py, a bare Textual app with the same panes and footer whose
key repaints one pane, runs alongside in its own pty; before every timed vtdtui key
the bare app gets one key, so the two samples interleave (drift and the other core's
noise hit both alike).  Startup (spawn → the end of the last frame of the start, the
app idle) alternates vtdtui on the default scenario with the bare app, after one
untimed start of each.

Both run from cached bytecode, as an installed package does (pip compiles it; a
checkout writes its __pycache__ on the first run): the apps' environment drops
PYTHONDONTWRITEBYTECODE and keeps every .pyc under PYCACHE (PYTHONPYCACHEPREFIX,
outside the source tree), and the untimed starts fill it.  With
PYTHONDONTWRITEBYTECODE set, as in some sandboxes, vtdtui's ~75 modules were compiled
from source at every start (~120 ms of a ~450 ms start) while Textual's came from
site-packages' .pyc: a cost no user pays after the first run, charged to vtdtui alone.

Targets (issue 16): every key's median ≤ 1.5x the bare key's median (default
scenario); at 4,096 devices ≤ 1.5x its own median on the default scenario, at 7,680
≤ 1.2x its median at 4,096; startup ≤ 1.3x the bare app's.

    python -m bench terminal [--quick]      (VTDTUI_BENCH_ROUNDS=N: N rounds of every key, default 3)
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass, field

from .common import Figures, percentile, report, verdict, vtdtui_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The vtdtui source tree the app runs from (first on PYTHONPATH): this checkout, or
# another one (`--tree DIR`, e.g. `git archive HEAD | tar -x -C DIR` for the last commit).
TREE = os.environ.get("VTDTUI_BENCH_TREE") or vtdtui_tree()
SIZE = (160, 50)
QUIET = 0.12          # s without output, the process idle, after a key's last frame
IDLE_TICKS = 1        # clock ticks of CPU allowed over that window (10 ms at 100 Hz)
NO_FRAME = 20.0       # s: a key with no frame by then fails the run
PUT_FRAME_WAIT = 1.0  # s: an untimed key's frame, if it has one
START_MAX = 120.0     # s: a start that has not settled by then fails the run
SYNC_QUERY = b"\x1b[?2026$p"
SYNC_YES = b"\x1b[?2026;2$y"
SYNC_END = b"\x1b[?2026l"
ANSI = re.compile(r"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|[\r\n]")

KEY_TARGET = 1.5       # default scenario: key median / bare key median
FLAT_TARGET = 1.5      # 4,096 devices / default
FLAT_7680_TARGET = 1.2  # 7,680 / 4,096
STARTUP_TARGET = 1.3
# Where the apps keep their bytecode (see the docstring): one per user, kept between runs.
PYCACHE = os.path.join(tempfile.gettempdir(), f"vtdtui-bench-pycache-{os.getuid()}")

BYTES = {"enter": b"\r", "tab": b"\t", "pagedown": b"\x1b[6~", "home": b"\x1b[H", "ctrl+r": b"\x12",
         "ctrl+u": b"\x15", "slash": b"/"}


def key_bytes(key: str) -> bytes:
    return BYTES.get(key) or key.encode()


class Term:
    """One app in one pseudo-terminal: spawn, press keys, read frames."""

    def __init__(self, argv: list[str], size: tuple[int, int] = SIZE) -> None:
        self.argv = argv
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.cfg = tempfile.TemporaryDirectory(prefix="vtdtui-bench-")
        env = {k: v for k, v in os.environ.items()
               if k not in ("TEXTUAL_FPS", "TEXTUAL", "TERM_PROGRAM", "PYTHONDONTWRITEBYTECODE")}
        env.update(TERM="xterm-256color", COLORTERM="truecolor", XDG_CONFIG_HOME=self.cfg.name,
                   PYTHONPYCACHEPREFIX=PYCACHE,
                   PYTHONPATH=os.pathsep.join(dict.fromkeys(p for p in [TREE, ROOT, env.get("PYTHONPATH", "")] if p)))
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=self.cfg.name, start_new_session=True, close_fds=True)
        os.close(slave)
        self.fd = master
        self.tail = b""
        self.frames: list[float] = []     # end of each marked frame (perf_counter)
        self.last_out = 0.0               # time of the last output
        self.first_paint = 0.0            # first output that draws cells
        self.bytes = 0
        self.dead = False
        self.capture = bytearray()        # output since the last press

    # ------------------------------------------------------------------ reading
    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting up to `timeout`); True if anything came."""
        if self.dead:
            time.sleep(max(0.0, timeout))
            return False
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not r:
            return False
        try:
            data = os.read(self.fd, 1 << 16)
        except OSError:
            data = b""
        now = time.perf_counter()
        if not data:
            self.dead = True
            return False
        self.bytes += len(data)
        self.capture += data
        self.last_out = now
        scan = self.tail + data
        if SYNC_QUERY in scan and SYNC_QUERY not in self.tail:
            os.write(self.fd, SYNC_YES)
        if not self.first_paint and b"H\x1b[" in scan and len(data) > 200:
            self.first_paint = now
        n = scan.count(SYNC_END) - self.tail.count(SYNC_END)
        self.frames.extend([now] * n)
        self.tail = scan[-16:]
        return True

    def _cpu_ticks(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            return 0

    def settle(self, *, need_frame_after: float | None = None, limit: float = NO_FRAME) -> None:
        """Read until QUIET without output with the process idle (and, if asked, until a
        frame ended after `need_frame_after`)."""
        deadline = time.perf_counter() + limit
        while True:
            if self.dead:
                tail = ANSI.sub(" ", bytes(self.capture[-600:]).decode("utf-8", "replace"))
                raise RuntimeError(f"bench terminal: {' '.join(self.argv)} exited: {tail.strip()}")
            now = time.perf_counter()
            if now > deadline:
                raise RuntimeError(f"bench terminal: {' '.join(self.argv)}: no frame / not idle within {limit:g} s")
            if need_frame_after is not None and not (self.frames and self.frames[-1] > need_frame_after):
                self._read(min(0.05, deadline - now))
                continue
            ticks = self._cpu_ticks()
            window_end = max(self.last_out, now) + QUIET
            while (left := window_end - time.perf_counter()) > 0:
                if self._read(left):
                    window_end = self.last_out + QUIET
            if self._cpu_ticks() - ticks <= IDLE_TICKS:
                return

    # ------------------------------------------------------------------ keys
    def press(self, key: str) -> tuple[float, int]:
        """Press `key` on a settled app: seconds to the end of its last frame, frames."""
        before = len(self.frames)
        self.capture.clear()
        t0 = time.perf_counter()
        os.write(self.fd, key_bytes(key))
        self.settle(need_frame_after=t0)
        return self.frames[-1] - t0, len(self.frames) - before

    def text(self) -> str:
        """The text written since the last press, escape sequences removed (the cells a
        frame changed, row by row as Textual writes them)."""
        return ANSI.sub(" ", self.capture.decode("utf-8", "replace"))

    def put(self, keys: list[str]) -> None:
        """Untimed keys, each settled; a key of several characters that is no key name
        is typed text, written at once (a prompt's text: one key per character).  Each
        waits for a frame (up to PUT_FRAME_WAIT: a key may change nothing on screen)."""
        for k in keys:
            t0 = time.perf_counter()
            os.write(self.fd, key_bytes(k))
            try:
                self.settle(need_frame_after=t0, limit=PUT_FRAME_WAIT)
            except RuntimeError:
                if self.dead:
                    raise
                self.settle()

    def started(self) -> tuple[float, float]:
        """Wait for the start to settle: (first paint, end of the last frame), from spawn."""
        self.settle(need_frame_after=self.t_spawn, limit=START_MAX)
        return self.first_paint - self.t_spawn, self.frames[-1] - self.t_spawn

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.close(self.fd)
        self.cfg.cleanup()


def vtdtui_argv(devices: int | None) -> list[str]:
    if devices is None:
        return ["-m", "vtdtui"]
    args = ["-m", "vtdtui", "--scenario", "server", "--devices", str(devices)]
    return args + (["--map", "4G:4K"] if devices == 4096 else [])


BARE_ARGV = [os.path.join(ROOT, "bench", "bareapp.py")]  # by path: a --tree may hold a bench/ of its own


def script(server: bool) -> list[tuple[str, list[str], str, str]]:
    """One round: (label, untimed keys first, the timed key, text its frames must show).
    The state at the end of a round is the state at its start (each unit bit toggles
    twice, the group is attached and detached, the map unmapped, the filter cleared)."""
    iova = "0x40000000"
    attach = [("a", [], "a", "→ domain")]
    if server:  # generated groups start attached
        attach = [("d", [], "d", "→ detached"), *attach]
    detach = [] if server else [("d", [], "d", "→ detached")]
    return [
        ("m", [], "m", "CM"), ("m", [], "m", "CM"), ("c", [], "c", ""), ("c", [], "c", ""),
        ("s", [], "s", "SC"), ("s", [], "s", "SC"), ("]", [], "]", ""), ("[", [], "[", ""),
        ("g→Enter", ["g", "5"], "enter", "group 5"),
        *attach,
        ("n→Enter", ["n", f"{iova} 64K rw"], "enter", ""),
        ("t→Enter", ["t", f"{iova} r"], "enter", ""),
        ("x→Enter", ["x", f"{iova} 64K"], "enter", ""),
        *detach,
        ("u", [], "u", ""), ("ctrl+r", [], "ctrl+r", ""),
        ("PgDn", ["7", "home"], "pagedown", ""),
        ("/→Enter", ["slash", "actor=driver"], "enter", "actor=driver"),
        ("/→Enter", ["slash", "ctrl+u"], "enter", "journal filter"),
        ("tab", [], "tab", ""),
    ]


@dataclass
class Series:
    keys: dict[str, list[float]] = field(default_factory=dict)
    frames: dict[str, list[int]] = field(default_factory=dict)
    bare: list[float] = field(default_factory=list)

    def add(self, label: str, dt: float, frames: int) -> None:
        self.keys.setdefault(label, []).append(dt)
        self.frames.setdefault(label, []).append(frames)


def _run_keys(devices: int | None, rounds: int, bare: Term) -> tuple[Series, float]:
    s = Series()
    t = Term(vtdtui_argv(devices))
    try:
        _, start = t.started()
        for _ in range(rounds):
            for label, pre, key, shows in script(devices is not None):
                bare_dt, _ = bare.press("m")
                s.bare.append(bare_dt)
                t.put(pre)
                dt, frames = t.press(key)
                if shows not in t.text():
                    raise RuntimeError(f"bench terminal: {' '.join(t.argv)}: {label} did not show {shows!r}")
                s.add(label, dt, frames)
            t.put(["1"])  # back to the first pane: the next round's tab starts where this one did
    finally:
        t.close()
    return s, start


def _startup(rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"vtd_first": [], "vtd_last": [], "bare_first": [], "bare_last": []}
    for i in range(rounds + 1):  # the first round untimed: bytecode (PYCACHE) and the OS's file cache
        for who, argv in (("bare", BARE_ARGV), ("vtd", vtdtui_argv(None))):
            t = Term(argv)
            try:
                first, last = t.started()
            finally:
                t.close()
            if i:
                out[f"{who}_first"].append(first)
                out[f"{who}_last"].append(last)
    return out


def median(v: list[float]) -> float:
    return percentile(v, 50)


def run(quick: bool = False) -> Figures:
    t_all = time.perf_counter()
    sizes: list[int | None] = [None, 64, 512] if quick else [None, 64, 512, 4096, 7680]
    # More presses steady the medians (a key costs about one 16.7 ms frame period, so
    # three presses can move a median by a frame): VTDTUI_BENCH_ROUNDS=N.
    rounds = int(os.environ.get("VTDTUI_BENCH_ROUNDS", 1 if quick else 3))
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    st = _startup(2 if quick else 5)
    bare = Term(BARE_ARGV)
    results: dict[str, Series] = {}
    starts: dict[str, float] = {}
    try:
        bare.started()
        for n in sizes:
            name = "default" if n is None else str(n)
            results[name], starts[name] = _run_keys(n, rounds, bare)
    finally:
        bare.close()
    bare_all = [v for s in results.values() for v in s.bare]
    bare_med = median(bare_all)
    fig: Figures = {
        "size": f"{SIZE[0]}x{SIZE[1]}", "rounds": rounds, "quiet_s": QUIET,
        "startup_ms": ms(median(st["vtd_last"])), "bare_startup_ms": ms(median(st["bare_last"])),
        "startup_ratio": round(median(st["vtd_last"]) / median(st["bare_last"]), 2),
        "first_paint_ms": ms(median(st["vtd_first"])), "bare_first_paint_ms": ms(median(st["bare_first"])),
        "bare_key_p50_ms": ms(bare_med), "bare_key_p90_ms": ms(percentile(bare_all, 90)),
        "scenario_start_ms": {k: ms(v) for k, v in starts.items()},
        "keys": {name: {label: {"p50_ms": ms(median(v)), "p90_ms": ms(percentile(v, 90)),
                                "frames": max(s.frames[label]), "n": len(v)}
                        for label, v in s.keys.items()} for name, s in results.items()},
    }
    fig["tree"] = TREE
    summary = [
        f"vtdtui from {TREE}",
        f"pty {SIZE[0]}x{SIZE[1]}, Textual at its default 60 fps, {rounds} round(s) of every key per machine; "
        f"key → end of its last frame (synchronized-output markers), p50 / p90 ms [frames]",
        f"startup to its last frame  {fig['startup_ms']:7.1f} ms vs bare {fig['bare_startup_ms']:.1f} ms: "
        f"{fig['startup_ratio']:.2f}x (target ≤{STARTUP_TARGET}x: {verdict(fig['startup_ratio'] <= STARTUP_TARGET)}); "
        f"first paint {fig['first_paint_ms']:.0f} vs {fig['bare_first_paint_ms']:.0f} ms",
        f"bare app key (repaints one pane): p50 {fig['bare_key_p50_ms']} ms, p90 {fig['bare_key_p90_ms']} ms "
        f"over {len(bare_all)} presses, interleaved",
    ]
    names = list(results)
    head = f"{'key':<10}" + "".join(f"{n:>20}" for n in names) + "   ×bare  ×default@4096  ×4096@7680"
    summary.append(head)
    d = results["default"].keys
    for label in d:
        cells = []
        for n in names:
            v = results[n].keys.get(label)
            cells.append(f"{ms(median(v)):7.1f}/{ms(percentile(v, 90)):6.1f} [{max(results[n].frames[label])}]"
                         if v else f"{'-':>19}")
        ratio = median(d[label]) / bare_med
        flat = (median(results["4096"].keys[label]) / median(d[label])) if "4096" in results else None
        flat2 = (median(results["7680"].keys[label]) / median(results["4096"].keys[label])) if "7680" in results else None
        marks = f"{ratio:6.2f}{'' if ratio <= KEY_TARGET else '!'}"
        marks += f"  {flat:12.2f}{'' if flat <= FLAT_TARGET else '!'}" if flat is not None else ""
        marks += f"  {flat2:10.2f}{'' if flat2 <= FLAT_7680_TARGET else '!'}" if flat2 is not None else ""
        summary.append(f"{label:<10}" + "".join(f"{c:>20}" for c in cells) + "  " + marks)
        fig["keys"]["default"][label]["x_bare"] = round(ratio, 2)
        if flat is not None:
            fig["keys"]["4096"][label]["x_default"] = round(flat, 2)
        if flat2 is not None:
            fig["keys"]["7680"][label]["x_4096"] = round(flat2, 2)
    over = [lb for lb in d if median(d[lb]) / bare_med > KEY_TARGET]
    summary.append(f"keys within {KEY_TARGET}x the bare key on the default scenario: {len(d) - len(over)}/{len(d)} "
                   f"({verdict(not over)}{': ' + ' '.join(over) if over else ''})")
    if "4096" in results:
        miss = [lb for lb in d if median(results['4096'].keys[lb]) / median(d[lb]) > FLAT_TARGET]
        summary.append(f"flat to 4,096 devices / 1M pages (≤{FLAT_TARGET}x default): {len(d) - len(miss)}/{len(d)} "
                       f"({verdict(not miss)}{': ' + ' '.join(miss) if miss else ''})")
    if "7680" in results:
        miss = [lb for lb in d if median(results['7680'].keys[lb]) / median(results['4096'].keys[lb]) > FLAT_7680_TARGET]
        summary.append(f"flat to 7,680 devices (≤{FLAT_7680_TARGET}x 4,096): {len(d) - len(miss)}/{len(d)} "
                       f"({verdict(not miss)}{': ' + ' '.join(miss) if miss else ''})")
    summary.append("machine starts (spawn → settled) " + ", ".join(f"{k} {v:.0f} ms" for k, v in fig["scenario_start_ms"].items())
                   + f"; the whole bench {time.perf_counter() - t_all:.0f} s")
    return report("terminal", fig, summary)


if __name__ == "__main__":
    if "--tree" in sys.argv:
        TREE = os.path.abspath(sys.argv[sys.argv.index("--tree") + 1])
    run(quick="--quick" in sys.argv)
