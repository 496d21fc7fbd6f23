"""The `vtdtui` command line (DESIGN.md, "Command line").

Subcommands live in COMMANDS: add an entry (its arguments and a run function) to
add one, e.g. `dump` or `replay`.  Bad input anywhere gives one line on stderr,
`vtdtui: error: <place>: <what>`, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from typing import Callable, NoReturn

from vtdtui import __version__

PROG = "vtdtui"
EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """Bad input from the user; the message starts with the place."""


def error_line(message: str) -> None:
    # A path or pasted value could hold a newline; the contract is one line.
    print(f"{PROG}: error: {message}".replace("\n", "\\n"), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the subcommand, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        sub = self.prog[len(PROG):].strip()
        place = f"{sub}: " if sub else ""
        hint = f"{PROG} {sub} --help" if sub else f"{PROG} --help"
        error_line(f"{place}{message} (see '{hint}')")
        raise SystemExit(EXIT_BAD_INPUT)


@dataclass(frozen=True)
class Command:
    """A subcommand: `add_arguments(parser)` declares it, `run(args, parser)` returns the
    exit status; `parser.error(...)` reports a usage error, BadInput any other bad input."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int]


# --- decode -------------------------------------------------------------------------

def _decode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cap", metavar="HEX", help="CAP register value, hex with or without 0x")
    p.add_argument("--ecap", metavar="HEX", help="ECAP register value, hex with or without 0x")
    p.add_argument(
        "--dmesg",
        metavar="FILE",
        help="boot log (dmesg, journalctl -k, syslog); '-' reads standard input",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per unit")


def _read_log(path: str) -> tuple[bytes, str]:
    if path == "-":
        stdin = sys.stdin
        data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode()
        return data, "<stdin>"
    try:
        with open(path, "rb") as f:
            return f.read(), path
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror or exc}") from None


def _run_decode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vtdtui.decode import DecodedUnit, parse_dmesg, render_table, unit_to_json
    from vtdtui.hw.regs import parse_reg_value

    registers = args.cap is not None or args.ecap is not None
    if args.dmesg is not None and registers:
        parser.error("--dmesg cannot be combined with --cap/--ecap")
    if args.dmesg is None and not registers:
        parser.error("give --cap HEX and/or --ecap HEX, or --dmesg FILE|-")

    try:
        if args.dmesg is not None:
            data, source = _read_log(args.dmesg)
            # Logs copied off serial consoles carry stray bytes; they must not hide a unit.
            units = parse_dmesg(data.decode("utf-8", errors="replace"), source)
        else:
            cap = None if args.cap is None else parse_reg_value(args.cap, "--cap")
            ecap = None if args.ecap is None else parse_reg_value(args.ecap, "--ecap")
            units = [DecodedUnit(name="cmdline", cap=cap, ecap=ecap)]
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    if args.json:
        print(json.dumps([unit_to_json(u) for u in units], indent=2))
    else:
        from rich.console import Console

        Console(highlight=False).print(render_table(units))
    return 0


# --- dump ---------------------------------------------------------------------------

def _devices(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a number of devices (1 to 65536), not {text!r}") from None
    if not 1 <= n <= 65536:
        raise argparse.ArgumentTypeError(f"{n} is outside 1..65536")
    return n


def _generator_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument("--devices", dest=f"{prefix}devices", type=_devices, metavar="N",
                   help="generate N devices, each in its own group and domain (replaces the scenario's [generate])")
    p.add_argument("--map", dest=f"{prefix}map_spec", metavar="SIZE[:PAGE]",
                   help="map SIZE in total, spread evenly over the generated domains, in PAGE pages "
                        "(4K, 2M or 1G; default 4K), e.g. 4G:4K is 1,048,576 leaf entries")

def _dump_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", dest="dump_scenario", metavar="NAME|PATH",
                   help="built-in scenario (desktop, viommu, server) or a TOML file; default desktop")
    _generator_arguments(p)
    p.add_argument("--do", dest="commands", action="append", default=[], metavar="COMMAND",
                   help="apply a machine command first, e.g. --do 'attach 5' (repeatable)")
    p.add_argument("--json", required=True, metavar="OUT|-", help="write the state JSON to OUT, or - for stdout")


def _run_dump(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vtdtui.machine import CommandError, Machine, ScenarioError
    from vtdtui.machine.state import to_json_text

    try:
        machine = Machine.from_scenario(args.dump_scenario, devices=args.devices, map_spec=args.map_spec)
    except ScenarioError as exc:
        raise BadInput(str(exc)) from None
    for i, line in enumerate(args.commands, 1):
        try:
            machine.execute(line)
        except CommandError as exc:
            raise BadInput(f"--do #{i} {line!r}: {exc}") from None
    text = to_json_text(machine)
    if args.json == "-":
        sys.stdout.write(text)
    else:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise BadInput(f"{args.json}: {exc.strerror or exc}") from None
    return 0


# --- replay -------------------------------------------------------------------------

MAX_SPEED = 100.0


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fixture", metavar="FIXTURE", help="a keystroke fixture (.keys), e.g. fixtures/caching-mode.keys")
    p.add_argument("--headless", action="store_true",
                   help="no terminal, no pauses, as fast as possible (CI); the fixture's size is used")
    p.add_argument("--json", dest="replay_json", metavar="OUT|-",
                   help="write the state JSON after the last line to OUT, or - for stdout")
    p.add_argument("--svg-dir", metavar="DIR",
                   help="write an SVG for each 'snapshot NAME' (DIR/NAME.svg) and one at the end")
    p.add_argument("--speed", default="1", metavar="X",
                   help="paced replay: divide pauses and the per-key delay by X (default 1; 2 is twice as fast)")


def _speed(text: str, parser: argparse.ArgumentParser) -> float:
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not 0 < x <= MAX_SPEED:  # also false for nan
        parser.error(f"argument --speed: wants a number above 0 and at most {MAX_SPEED:g}, not {text!r}")
    return x


def _run_replay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from vtdtui.machine import Machine, ScenarioError
    from vtdtui.replay import FixtureError, load

    speed = _speed(args.speed, parser)
    try:
        fixture = load(args.fixture)
    except FixtureError as exc:
        raise BadInput(str(exc)) from None
    try:
        machine = Machine.from_scenario(fixture.scenario)
    except ScenarioError as exc:
        where = f"{fixture.source}:{fixture.scenario_line}" if fixture.scenario_line else fixture.source
        raise BadInput(f"{where}: scenario: {exc}") from None
    svg_dir = None
    if args.svg_dir is not None:
        svg_dir = Path(args.svg_dir)
        try:
            svg_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--svg-dir {args.svg_dir}: {exc.strerror or exc}") from None
    if args.replay_json not in (None, "-") and not Path(args.replay_json).resolve().parent.is_dir():
        raise BadInput(f"--json {args.replay_json}: no such directory")
    if not args.headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BadInput("replay: a paced replay needs a terminal; add --headless to run without one")
    replayer = importlib.import_module("vtdtui.tui.replayer")
    return replayer.run(fixture, machine, headless=args.headless, speed=speed, svg_dir=svg_dir,
                        json_out=args.replay_json)


# --- bench --------------------------------------------------------------------------

BENCHES = ("core", "build", "tui", "replay")


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"which benchmarks: {', '.join(BENCHES)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a first look (not the figures)")


def _run_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`vtdtui bench`: the benchmarks of bench/, which live in the source tree (they
    are not tests and not installed): run from a checkout, as `python -m bench`."""
    for name in args.names:
        if name not in BENCHES:
            parser.error(f"argument NAME: invalid choice {name!r} (choose from {', '.join(BENCHES)})")
    from pathlib import Path

    checkout = Path.cwd()
    if not (checkout / "bench" / "__main__.py").is_file():
        raise BadInput("bench: no bench/ here: run it from a vtdtui source checkout (python -m bench works too)")
    sys.path.insert(0, str(checkout))
    bench_main = importlib.import_module("bench.__main__")
    return bench_main.main([*args.names, *(["--quick"] if args.quick else [])])


COMMANDS: dict[str, Command] = {
    "decode": Command(
        help="decode CAP/ECAP values, or every unit in a boot log",
        add_arguments=_decode_arguments,
        run=_run_decode,
    ),
    "dump": Command(
        help="build a scenario (optionally apply commands) and write its state JSON",
        add_arguments=_dump_arguments,
        run=_run_dump,
    ),
    "replay": Command(
        help="replay a keystroke fixture: paced with captions in a terminal, or --headless for CI",
        add_arguments=_replay_arguments,
        run=_run_replay,
    ),
    "bench": Command(
        help="run the benchmarks (bench/) from a source checkout: figures as ratios to baselines",
        add_arguments=_bench_arguments,
        run=_run_bench,
    ),
}


# --- the TUI --------------------------------------------------------------------------

def run_tui(scenario: str | None, record: str | None = None, *, devices: int | None = None,
            map_spec: str | None = None, check_invariants: bool = False) -> int:
    """Start the TUI.  Imported here so that the core commands never load Textual."""
    from vtdtui.machine import ScenarioError
    from vtdtui.machine.scenario import load

    try:  # bad scenario input is reported before Textual loads
        load(scenario, devices=devices, map_spec=map_spec)
    except ScenarioError as exc:
        raise BadInput(str(exc)) from None
    app = importlib.import_module("vtdtui.tui.app")
    return app.run(scenario, record, devices=devices, map_spec=map_spec, check_invariants=check_invariants)


# --- entry point ----------------------------------------------------------------------

def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(
        prog=PROG,
        description="A terminal explorer for a virtual Intel VT-d IOMMU. "
        "Without a subcommand, starts the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--scenario", metavar="NAME|PATH", help="scenario for the TUI (default: desktop)"
    )
    _generator_arguments(parser, "tui_")
    parser.add_argument(
        "--record", metavar="FILE",
        help="record the session's keys to FILE as a fixture (written as you type; replay with 'vtdtui replay FILE')",
    )
    parser.add_argument(
        "--check-invariants", action="store_true",
        help="debug: after every command check the machine's invariants (machine/invariants.py); "
        "a broken one shows on the status line",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs = {}
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        subs[name] = sub
    return parser, subs


def main(argv: list[str] | None = None) -> int:
    parser, subs = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            return run_tui(args.scenario, args.record, devices=args.tui_devices, map_spec=args.tui_map_spec,
                           check_invariants=args.check_invariants)
        for opt, flag in (("scenario", "--scenario"), ("record", "--record"), ("tui_devices", "--devices"),
                          ("tui_map_spec", "--map"), ("check_invariants", "--check-invariants")):
            if getattr(args, opt) not in (None, False):
                where = (" (give it after the subcommand)" if args.command == "dump" and opt not in ("record", "check_invariants")
                         else "")
                parser.error(f"{flag} starts the TUI; it does not apply to "
                             f"'{args.command}'{where}")
        return COMMANDS[args.command].run(args, subs[args.command])
    except SystemExit as exc:
        # --help, --version and usage errors: return the status rather than exit, so
        # that main() can be called from tests and scripts.
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except BadInput as exc:
        error_line(str(exc))
        return EXIT_BAD_INPUT
