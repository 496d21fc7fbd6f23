"""python -m bench [core] [build] [tui] [replay] [terminal] [--quick]: run the benchmarks named
(all by default); each prints its JSON line and summary as it finishes."""

from __future__ import annotations

import sys
import time

NAMES = ("core", "build", "tui", "replay", "terminal")


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")] or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        print(f"bench: error: unknown benchmark {unknown[0]!r} (choose from {', '.join(NAMES)})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    for name in names:
        module = __import__(f"bench.{name}", fromlist=["run"])
        print(f"== {name}", flush=True)
        module.run(quick=quick)
    print(f"== all done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
