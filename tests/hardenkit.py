"""Running hostile inputs in a child process with bounded memory and CPU (issue 14).

A case that reads /dev/zero to its end, or parses a 100,000-part TOML key, must not
take the test run down with it: the child has RLIMIT_AS (address space) and
RLIMIT_CPU set before it starts, and a wall-clock timeout.  `run_cli_cases` runs many
command lines in ONE child (one interpreter start for the lot, so the corpus stays
fast) and times each; `run_process` runs one command line as `python -m vtdtui`, for
the cases that need their own standard streams (a closed stdout, a broken pipe).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vtdtui.cli import MAX_ERROR_CHARS

ROOT = Path(__file__).resolve().parent.parent

MEMORY_LIMIT = 1 << 30       # RLIMIT_AS of the child: 1 GiB of address space
CPU_LIMIT = 30               # RLIMIT_CPU of the child, seconds (a hang ends here at the latest)
TIMEOUT = 60                 # wall clock for the whole child
CASE_SECONDS = 3.0           # what one case may take inside the child (slow CI included)
PEAK_RSS = 512 << 20         # what the child may have held at its peak, bytes


def _limit() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT, CPU_LIMIT))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VTDTUI_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float


# The child: cli.main for each command line, in-process, with the TUI unreachable (a
# bad input that slipped through would start the app: it fails instead).
_CHILD = r"""
import contextlib, io, json, resource, sys, time, types
from vtdtui import cli

def no_app(name):
    raise AssertionError(f"bad input reached {name}: the app would start")

cli.importlib = types.SimpleNamespace(import_module=no_app)
with open(sys.argv[1], encoding="utf-8") as f:
    cases = json.load(f)
results = []
for argv in cases:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    results.append([rc, out.getvalue()[:2000], err.getvalue()[:20000], time.perf_counter() - start])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
sys.__stdout__.write(json.dumps({"results": results, "peak": peak}))
"""


def run_cli_cases(cases: list[list[str]], tmp: Path, cwd: Path | None = None) -> tuple[list[Result], int]:
    """Each command line's result, and the child's peak RSS in bytes."""
    spec = tmp / "cases.json"
    spec.write_text(json.dumps(cases), encoding="utf-8")
    p = subprocess.run([sys.executable, "-c", _CHILD, str(spec)], capture_output=True, timeout=TIMEOUT,
                       preexec_fn=_limit, env=_env(), cwd=cwd or tmp, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and p.stderr == b"", (p.returncode, p.stderr.decode(errors="replace")[-3000:])
    data = json.loads(p.stdout)
    return [Result(*r) for r in data["results"]], data["peak"]


def run_process(argv: list[str], *, cwd: Path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m vtdtui ARGV` under the same limits; stdout may be a file descriptor."""
    return subprocess.run([sys.executable, "-m", "vtdtui", *argv], stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=timeout, preexec_fn=_limit, cwd=cwd,
                          env={**_env(), **(env or {})})


def assert_refused(r: Result, expected: str, place: str = "") -> str:
    """Exit 2, nothing on stdout, one printable stderr line 'vtdtui: error: PLACE...'
    holding `expected`, no traceback, within CASE_SECONDS."""
    assert "Traceback" not in r.out + r.err, r.err[-2000:]
    assert r.rc == 2, (r.rc, r.err[:500])
    assert r.out == "", r.out[:200]
    assert r.err.endswith("\n") and r.err.count("\n") == 1, f"not one line: {r.err[:500]!r}"
    line = r.err[:-1]
    assert line.startswith(f"vtdtui: error: {place}"), line[:300]
    assert expected in line, f"{expected!r} not in {line[:500]!r}"
    assert line.isprintable(), f"a control character reaches the terminal: {line[:300]!r}"
    assert len(line) <= MAX_ERROR_CHARS, f"{len(line):,} characters: {line[:200]!r}"
    assert r.seconds < CASE_SECONDS, f"{r.seconds:.2f} s: {line[:200]}"
    return line
