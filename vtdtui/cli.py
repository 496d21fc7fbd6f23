"""The `vtdtui` command line (DESIGN.md, "Command line").

Subcommands live in COMMANDS: add an entry (its arguments and a run function) to
add one, e.g. `dump` or `replay`.  Bad input anywhere gives one line on stderr,
`vtdtui: error: <place>: <what>`, and exit status 2.  main() is the one top-level
handler (README, "Guarantees"): Ctrl+C is 130 and one line, a reader that went away
141 and silence, an OSError one line with its path, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NoReturn

from vtdtui import __version__
# Exit statuses, the error type and the error line are shared with the TUI: they live
# below both (vtdtui/exits.py); cli.EXIT_BAD_INPUT and the others keep their names.
from vtdtui.exits import (EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_INTERRUPTED, MAX_ERROR_CHARS,
                          PROG, BadInput, error_line)
from vtdtui.exits import say as _say
from vtdtui.textsafe import clip, printable, quote


class StdoutGone(Exception):
    """Standard output is closed: there is nowhere to write the result."""


def _stdout():
    """sys.stdout, or StdoutGone when the process was started with it closed."""
    if sys.stdout is None:
        raise StdoutGone
    return sys.stdout


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
    p.add_argument(
        "--faults",
        metavar="FILE",
        help="kernel log: explain every DMAR fault report of any kernel era, with its dump; "
             "'-' reads standard input",
    )
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list, one object per unit; with --faults one object (faults, unparsed)")


def _read_log(path: str, flag: str = "--dmesg") -> tuple[bytes, str]:
    """The log's bytes, read up to MAX_LOG_BYTES and no further (/dev/zero, `yes |`)."""
    from vtdtui.limits import MAX_LOG_BYTES, LimitError, read_bounded, read_stream_bounded

    try:
        if path == "-":
            stdin = sys.stdin
            if stdin is None:
                raise BadInput(f"{flag} -: standard input is closed")
            stream = stdin.buffer if hasattr(stdin, "buffer") else None
            if stream is None:  # a text stream stood in for stdin (tests)
                text = stdin.read(MAX_LOG_BYTES + 1)
                if len(text) > MAX_LOG_BYTES:
                    raise LimitError(f"<stdin>: larger than {MAX_LOG_BYTES >> 20} MiB (MAX_LOG_BYTES)")
                return text.encode("utf-8", "surrogateescape"), "<stdin>"
            return read_stream_bounded(stream, MAX_LOG_BYTES, "<stdin>", "MAX_LOG_BYTES"), "<stdin>"
        return read_bounded(path, MAX_LOG_BYTES, "MAX_LOG_BYTES"), path
    except LimitError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"{'<stdin>' if path == '-' else path}: {exc.strerror or exc}") from None


def _run_decode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vtdtui.decode import DecodedUnit, parse_dmesg, render_table, unit_to_json
    from vtdtui.hw.regs import parse_reg_value

    registers = args.cap is not None or args.ecap is not None
    if args.faults is not None and (registers or args.dmesg is not None):
        parser.error("--faults cannot be combined with --dmesg, --cap or --ecap")
    if args.faults is not None:
        return _run_decode_faults(args)
    if args.dmesg is not None and registers:
        parser.error("--dmesg cannot be combined with --cap/--ecap")
    if args.dmesg is None and not registers:
        parser.error("give --cap HEX and/or --ecap HEX, or --dmesg FILE|-, or --faults FILE|-")

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

    out = _stdout()
    if args.json:
        out.write(json.dumps([unit_to_json(u) for u in units], indent=2) + "\n")
    else:
        _rich_console(out).print(render_table(units))
    out.flush()  # here, where a broken pipe is ours to handle, not at exit
    return 0


def _rich_console(out):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # Rich exits with status 1 on its own; main() gives every entry point
            # the same status for a reader that went away.
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return _Console(file=out, highlight=False)


def _run_decode_faults(args: argparse.Namespace) -> int:
    """`decode --faults FILE|-`: every DMAR fault report of a kernel log, explained
    (DESIGN.md, "The kernel's own text"); exit 2 when the log holds none."""
    from vtdtui.kernel.dmesg import log_to_json, read_kernel_log, render_table

    data, source = _read_log(args.faults, "--faults")
    # Logs copied off serial consoles carry stray bytes; they must not hide a fault.
    log = read_kernel_log(data.decode("utf-8", errors="replace"), source)
    if not log.faults:
        what = f"{log.lines:,} line{'s' * (log.lines != 1)} read"
        if log.unparsed:
            shown = ", ".join(str(n) for n in log.unparsed[:10]) + (", ..." if len(log.unparsed) > 10 else "")
            what += f"; {len(log.unparsed)} IOMMU line{'s' * (len(log.unparsed) != 1)} not understood: {shown}"
        raise BadInput(f"{source}: no DMAR fault report found ({what})")
    out = _stdout()
    if args.json:
        json.dump(log_to_json(log), out, indent=2)  # in pieces: a 32 MiB log is 200 MB of JSON
        out.write("\n")
    else:
        _rich_console(out).print(render_table(log))
    out.flush()
    return 0


# --- dump ---------------------------------------------------------------------------

def _devices(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a number of devices (1 to 65536), not {quote(text)}") from None
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
                   help="built-in scenario (desktop, viommu, server), a TOML file, or live (this machine's "
                        "sysfs; live:ROOT for a copy); default desktop")
    _generator_arguments(p)
    p.add_argument("--do", dest="commands", action="append", default=[], metavar="COMMAND",
                   help="apply a machine command first, e.g. --do 'attach 5' (repeatable)")
    p.add_argument("--json", metavar="OUT|-", help="write the state JSON to OUT, or - for stdout")
    p.add_argument("--debugfs", metavar="DIR", help="write the state as the newest kernel's debugfs files "
                   "(iommu_regset, dmar_translation_struct, invalidation_queue, <dev>/domain_translation_struct) "
                   "into DIR, a new or empty folder")


def _scenario_machine(scenario_arg: str | None, **generate):
    """The machine of a --scenario argument (`live`: this machine's sysfs), its
    refusals as BadInput."""
    from vtdtui.machine import Machine, ScenarioError

    try:
        return Machine.from_scenario(_scenario_source(scenario_arg), **generate)
    except ScenarioError as exc:
        raise BadInput(str(exc)) from None


def _apply_commands(machine, commands: list[str]) -> None:
    """--do COMMAND..., in order; the first refused one is BadInput naming its position."""
    from vtdtui.machine import CommandError

    for i, line in enumerate(commands, 1):
        try:
            machine.execute(line)
        except CommandError as exc:
            raise BadInput(f"--do #{i} {quote(line)}: {exc}") from None


def _run_dump(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vtdtui.machine.state import to_json_text

    if args.json is None and args.debugfs is None:
        raise BadInput("dump: the following arguments are required: --json OUT|- or --debugfs DIR (or both)")
    machine = _scenario_machine(args.dump_scenario, devices=args.devices, map_spec=args.map_spec)
    _apply_commands(machine, args.commands)
    if args.debugfs is not None:
        from vtdtui.kernel.debugfs_write import write_debugfs

        try:
            write_debugfs(machine, args.debugfs)
        except ValueError as exc:
            raise BadInput(f"--debugfs {exc}") from None
        if args.json is None:
            return 0
    if args.json != "-":
        _not_an_input(args.json, "--json", {machine.scenario.source: "the scenario file"})
    text = to_json_text(machine)
    if args.json == "-":
        out = _stdout()
        out.write(text)
        out.flush()
    else:
        from vtdtui.outfile import write_atomic

        try:  # the whole text exists before OUT is touched; OUT is replaced in one step
            write_atomic(args.json, text)
        except OSError as exc:
            raise BadInput(f"{args.json}: {exc.strerror or exc}") from None
    return 0


# --- import (sysfs roots) and --scenario live -----------------------------------------

LIVE = "live"
LIVE_NO_IOMMU = "live: /sys/class/iommu not found: this machine exposes no Intel IOMMU (is intel_iommu=on?)"
LIVE_NO_UNIT = ("live: /sys/class/iommu holds no Intel VT-d unit (dmar*): this machine exposes no Intel IOMMU "
                "(is intel_iommu=on?)")


def _live_root(scenario: str | None) -> str | None:
    """The sysfs root a --scenario value names: "/" for `live`, ROOT for `live:ROOT`
    (a copy of another machine's sysfs, README "Your own machine"), else None."""
    if scenario == LIVE:
        return "/"
    if scenario is not None and scenario.startswith(LIVE + ":"):
        root = scenario[len(LIVE) + 1:]
        if not root:
            raise BadInput("--scenario live:ROOT: ROOT is empty (live alone reads this machine's /sys)")
        return root
    return None


def _read_sysfs(root: str, place: str):
    """kernel/sysfs.read_sysfs, its refusals as BadInput naming `place`."""
    from vtdtui.kernel.sysfs import NoIntelUnit, NotSysfs, SysfsError, read_sysfs
    from vtdtui.limits import LimitError

    try:
        return read_sysfs(root)
    except NotSysfs:
        if place == LIVE:
            raise BadInput(LIVE_NO_IOMMU) from None
        raise BadInput(f"{place}: no sys/class/iommu here: not a sysfs root (import reads a folder holding "
                       "sys/class/iommu: / or a copy made as README 'Your own machine' says)") from None
    except NoIntelUnit:
        if place == LIVE:
            raise BadInput(LIVE_NO_UNIT) from None
        raise BadInput(f"{place}: sys/class/iommu holds no Intel VT-d unit (dmar*/intel-iommu)") from None
    except (SysfsError, LimitError) as exc:
        msg = str(exc)  # the reader's messages mostly name the path already
        raise BadInput(msg if msg.startswith(f"{place}:") else f"{place}: {msg}") from None


def _sysfs_scenario(root: str, place: str) -> tuple[str, object]:
    """(TOML text, Scenario) of the machine whose sysfs is at `root`."""
    from vtdtui.kernel.scenario_toml import TomlError, load
    from vtdtui.machine import ScenarioError

    m = _read_sysfs(root, place)
    origin = "this machine (/)" if place == LIVE else f"the copy in {m.root}"
    try:
        return load(m, name=LIVE if place.startswith(LIVE) else "imported", origin=origin)
    except (TomlError, ScenarioError) as exc:
        raise BadInput(f"{place}: {exc}") from None


def _scenario_source(scenario: str | None):
    """The --scenario value to hand to Machine.from_scenario / scenario.load: unchanged,
    or for `live` / `live:ROOT` the Scenario read from that sysfs (parsed once, here)."""
    root = _live_root(scenario)
    if root is None:
        return scenario
    return _sysfs_scenario(root, scenario)[1]


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", metavar="PATH", nargs="+",
                   help="a sysfs root (a folder holding sys/class/iommu: / for this machine, or a copy made as "
                        "README 'Your own machine' says), a debugfs folder (/sys/kernel/debug/iommu/intel) or "
                        "one of its files, or a kernel log (dmesg, journalctl -k); several are read together")
    p.add_argument("--toml", dest="import_toml", metavar="OUT|-",
                   help="write the scenario (units, groups, devices) to OUT, or - for stdout")
    p.add_argument("--json", dest="import_json", metavar="OUT|-",
                   help="write what was read as JSON to OUT, or - for stdout: for one sysfs root its units, groups, "
                        "devices, skipped; else the imported machine's state JSON with an 'import' key")


def import_machine(paths: list[str]):
    """The machine `vtdtui import PATH...` builds (kernel/importer.py), its refusals as
    BadInput; for `--import` and `translate --import`."""
    from vtdtui.kernel.importer import ImportError_
    from vtdtui.kernel.importer import import_machine as build

    try:
        return build(paths)
    except ImportError_ as exc:
        raise BadInput(str(exc)) from None


def _unparsed_note(m) -> None:
    """Lines no reader understood: listed with file:line on stderr (not fatal)."""
    unparsed = m.imported["unparsed"]
    if unparsed:
        shown = ", ".join(unparsed[:10]) + (", ..." if len(unparsed) > 10 else "")
        _say(f"{PROG}: import: {len(unparsed)} line{'s' * (len(unparsed) != 1)} not understood (skipped): {shown}")


def _write_out(target: str, text: str, flag: str) -> None:
    if target == "-":
        out = _stdout()
        out.write(text)
        out.flush()
        return
    from vtdtui.outfile import write_atomic

    try:
        write_atomic(target, text)
    except OSError as exc:
        raise BadInput(f"{flag} {target}: {exc.strerror or exc}") from None


def _run_import(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.import_toml == "-" and args.import_json == "-":
        parser.error("--toml - and --json - would both write to standard output; give one a file")
    from vtdtui.kernel.importer import looks_like_debugfs

    one = args.paths[0]
    if len(args.paths) > 1 or os.path.isfile(one) or looks_like_debugfs(one):
        return _run_import_machine(args)
    # One sysfs root (or a folder that is nothing else: the sysfs reader says what is missing).
    from vtdtui.kernel.sysfs import render_summary, to_json

    root = args.paths[0]
    m = _read_sysfs(root, root)
    texts: list[tuple[str, str, str]] = []
    if args.import_toml is not None:
        from vtdtui.kernel.scenario_toml import TomlError, load
        from vtdtui.machine import ScenarioError

        origin = "this machine (/)" if os.path.realpath(root) == "/" else f"the copy in {m.root}"
        try:
            text, _sc = load(m, name="imported", origin=origin)
        except (TomlError, ScenarioError) as exc:
            raise BadInput(f"{root}: {exc}") from None
        texts.append((args.import_toml, text, "--toml"))
    if args.import_json is not None:
        texts.append((args.import_json, json.dumps(to_json(m), indent=2) + "\n", "--json"))
    if not texts:
        from rich.console import Console

        class _Console(Console):
            def on_broken_pipe(self) -> None:
                self.quiet = True
                raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

        out = _stdout()
        _Console(file=out, highlight=False).print(render_summary(m))
        out.flush()
        return 0
    for target, text, flag in texts:  # every text exists before any output is touched
        _write_out(target, text, flag)
    return 0


def _run_import_machine(args: argparse.Namespace) -> int:
    """`import PATH...` of debugfs files and folders, kernel logs (and a sysfs root
    with them): the machine they describe (kernel/importer.py)."""
    from vtdtui.kernel.importer import ImportError_, render_summary, scenario_toml, state_json

    m = import_machine(args.paths)
    _unparsed_note(m)
    texts: list[tuple[str, str, str]] = []
    if args.import_toml is not None:
        try:
            texts.append((args.import_toml, scenario_toml(m), "--toml"))
        except ImportError_ as exc:
            raise BadInput(str(exc)) from None
    if args.import_json is not None:
        texts.append((args.import_json, json.dumps(state_json(m), indent=2) + "\n", "--json"))
    if not texts:
        out = _stdout()
        out.write(render_summary(m))
        out.flush()
        return 0
    for target, text, flag in texts:  # every text exists before any output is touched
        if target != "-":
            _not_an_input(target, flag, {p: "an input" for p in args.paths})
        _write_out(target, text, flag)
    return 0


# --- replay -------------------------------------------------------------------------

MAX_SPEED = 100.0


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fixture", metavar="FIXTURE", nargs="?",
                   help="a keystroke fixture (.keys), e.g. fixtures/caching-mode.keys, or the name of one "
                        "shipped with vtdtui, e.g. caching-mode (see --list)")
    p.add_argument("--list", dest="replay_list", action="store_true",
                   help="list the fixtures shipped with vtdtui, each with its story, and exit")
    p.add_argument("--headless", action="store_true",
                   help="no terminal, no pauses, as fast as possible (CI); at the fixture's size or --size")
    p.add_argument("--size", dest="replay_size", metavar="WxH",
                   help="replay at this size instead of the fixture's (40x12 to 500x200), e.g. 120x40; "
                        "a paced replay warns when the terminal is smaller")
    p.add_argument("--json", dest="replay_json", metavar="OUT|-",
                   help="write the state JSON after the last line to OUT, or - for stdout")
    p.add_argument("--svg-dir", metavar="DIR",
                   help="write an SVG for each 'snapshot NAME' (DIR/NAME.svg) and one at the end")
    p.add_argument("--speed", default="1", metavar="X",
                   help="paced replay: divide pauses and the per-key delay by X (default 1; 2 is twice as fast)")
    p.add_argument("--theme", dest="replay_theme", metavar="NAME",
                   help="colour theme (vtdtui, vtdtui-projector, any Textual theme); SVG snapshots follow it. "
                        "A paced replay takes config.toml's theme otherwise, a headless one reads no config")


def _speed(text: str, parser: argparse.ArgumentParser) -> float:
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not 0 < x <= MAX_SPEED:  # also false for nan
        parser.error(f"argument --speed: wants a number above 0 and at most {MAX_SPEED:g}, not {quote(text)}")
    return x


def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):  # a closed stream
        return False


def _run_replay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from vtdtui.machine import Machine, ScenarioError
    from vtdtui.replay import FixtureError, load

    from vtdtui.replay.library import parse_size, resolve

    if args.replay_list:
        if args.fixture is not None:
            parser.error("--list takes no FIXTURE")
        return _list_fixtures()
    if args.fixture is None:
        parser.error("the following arguments are required: FIXTURE (a .keys file, or the name of a shipped "
                     "one: vtdtui replay --list)")
    speed = _speed(args.speed, parser)
    size = None
    if args.replay_size is not None:
        try:
            size = parse_size(args.replay_size)
        except ValueError as exc:
            parser.error(f"argument --size: {exc}")
    try:
        fixture = load(resolve(args.fixture))
    except FixtureError as exc:
        raise BadInput(str(exc)) from None
    if size is not None:
        fixture.size = size
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
    # Outputs that cannot be written are refused now, not when the first snapshot or
    # the final state is written at the end of the replay.
    if svg_dir is not None and not os.access(svg_dir, os.W_OK | os.X_OK):
        raise BadInput(f"--svg-dir {args.svg_dir}: {os.strerror(errno.EACCES)}")
    if args.replay_json not in (None, "-"):
        _not_an_input(args.replay_json, "--json", {fixture.source: "the fixture", fixture.scenario: "the scenario file"})
        out = Path(args.replay_json)
        if not out.resolve().parent.is_dir():
            raise BadInput(f"--json {args.replay_json}: no such directory")
        if out.is_dir():
            raise BadInput(f"--json {args.replay_json}: {os.strerror(errno.EISDIR)}")
        if not os.access(out.resolve().parent, os.W_OK | os.X_OK):
            raise BadInput(f"--json {args.replay_json}: {os.strerror(errno.EACCES)}")
    if args.replay_json == "-" and sys.stdout is None:
        raise StdoutGone
    # `vtdtui serve -- replay NAME` runs under Textual's web driver: pipes, no terminal.
    web = bool(os.environ.get("TEXTUAL_DRIVER"))
    if not args.headless and not web and not (_isatty(sys.stdin) and _isatty(sys.stdout)):
        raise BadInput("replay: a paced replay needs a terminal; add --headless to run without one")
    # Headless, nothing of this machine's settings: CI gives the same result everywhere.
    theme, _keymap = _settings(args.replay_theme, read_config=not args.headless)
    app = importlib.import_module("vtdtui.tui.app")
    return app.replay(fixture, machine, headless=args.headless, speed=speed, svg_dir=svg_dir,
                      json_out=args.replay_json, theme=theme)


def _list_fixtures() -> int:
    """`vtdtui replay --list`: NAME  SIZE SCENARIO  STORY, one shipped fixture a line
    (cut to the terminal's width on a terminal, whole into a pipe)."""
    from vtdtui.replay import FixtureError, load
    from vtdtui.replay.library import shipped

    out = _stdout()
    fixtures = shipped()
    if not fixtures:
        raise BadInput("replay --list: no fixtures ship with this installation (vtdtui/fixtures is missing)")
    width = os.get_terminal_size(out.fileno()).columns if _isatty(out) else 0
    pad = max(len(f.name) for f in fixtures)
    for f in fixtures:
        try:
            fx = load(f.path)
            where = f"{fx.size[0]}x{fx.size[1]} {os.path.basename(fx.scenario)}"
        except FixtureError:
            where = "(bad fixture)"
        line = printable(f"{f.name:<{pad}}  {where:<16}  {f.story}")
        out.write((clip(line, width) if width else line) + "\n")
    return 0


# --- translate ----------------------------------------------------------------------

def _translate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bdf", metavar="BDF", help="the requester: bb:dd.f or 0000:bb:dd.f, e.g. 00:02.0")
    p.add_argument("iova", metavar="IOVA", help="the address it sends, e.g. 0x100000, 1048576, 0x10_0000")
    p.add_argument("access", metavar="r|w", nargs="?", default="r", help="a DMA read (default) or write")
    p.add_argument("--scenario", dest="translate_scenario", metavar="NAME|PATH",
                   help="built-in scenario (desktop, server, notebook, viommu ...), a TOML file, or live "
                        "(this machine's sysfs); default desktop")
    p.add_argument("--import", dest="translate_import", nargs="+", metavar="PATH",
                   help="walk on the machine `vtdtui import PATH...` builds (debugfs files or folders, kernel logs, "
                        "a sysfs root) instead of a scenario")
    p.add_argument("--do", dest="translate_commands", action="append", default=[], metavar="COMMAND",
                   help="apply a machine command first, e.g. --do 'attach 5' --do 'map 5 0x100000 64K' (repeatable)")
    p.add_argument("--pasid", dest="translate_pasid", metavar="N",
                   help="a request with PASID N (scalable mode); default: a request without PASID")
    p.add_argument("--unit", dest="translate_unit", metavar="NAME",
                   help="the unit to walk on, when the device sits behind more than one")
    p.add_argument("--json", dest="translate_json", action="store_true",
                   help="print JSON: bdf, iova, result, hpa, r, w, level, steps, fault (README, translate)")


def _run_translate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`translate BDF IOVA [r|w]`: the unit's walk for one request, step by step, and the
    line Linux would print when it faults (kernel/translate.py).  Exit 0 for a
    translation and for a fault alike: both are answers; 2 for bad input."""
    from vtdtui.hw.entries import bdf_str, parse_bdf
    from vtdtui.kernel.translate import IOVA_LIMIT, PASID_LIMIT, device_units, render, translate
    from vtdtui.machine.parse import parse_access, parse_int

    try:  # every argument is checked before the machine is built
        sid = parse_bdf(args.bdf)
    except ValueError as exc:
        raise BadInput(f"translate: BDF {exc}") from None
    try:
        iova = parse_int(args.iova, "translate: IOVA")
        write = parse_access(args.access)
        pasid = None if args.translate_pasid is None else parse_int(args.translate_pasid, "--pasid")
    except ValueError as exc:
        msg = str(exc)
        raise BadInput(msg if msg.startswith(("translate", "--")) else f"translate: {msg}") from None
    if iova >= IOVA_LIMIT:
        raise BadInput(f"translate: IOVA {quote(args.iova)} is wider than 64 bits")
    if pasid is not None and pasid >= PASID_LIMIT:
        raise BadInput(f"--pasid {quote(args.translate_pasid)}: a PASID is 20 bits (0 to 0xfffff)")
    if args.translate_import is not None and args.translate_scenario is not None:
        parser.error("--scenario and --import are two sources: give one")
    if args.translate_import is not None:
        machine = import_machine(args.translate_import)
        _unparsed_note(machine)
    else:
        machine = _scenario_machine(args.translate_scenario)
    _apply_commands(machine, args.translate_commands)
    found = device_units(machine, sid)
    if args.translate_unit is not None:
        if args.translate_unit not in machine.units:
            raise BadInput(f"--unit {quote(args.translate_unit)}: no such unit (units: {', '.join(machine.units)})")
        found = [f for f in found if f[0] == args.translate_unit]
    units = sorted({u for u, _ in found})
    unplaced = [k for k in getattr(machine, "domain_tables", {}) if k[0] is None and k[1] == sid]
    if not found and unplaced and args.translate_unit is not None:
        # kernel/importer.py: a domain_translation_struct of a device whose unit the input
        # does not say; --unit says it.
        found = [(args.translate_unit, f"{bdf_str(sid)}: its unit is not in the input, {args.translate_unit} "
                                       "as --unit says")]
    elif not found and unplaced:
        raise BadInput(f"translate: the input gives {bdf_str(sid)}'s page table (domain_translation_struct) but not "
                       f"the unit it sits behind: pick one with --unit ({', '.join(machine.units)}), or import the "
                       "sysfs root too")
    if not found:
        devices = sorted({bdf_str(s) for g in machine.groups.values() for s, _ in g.devices})
        shown = ", ".join(devices[:12]) + (", ..." if len(devices) > 12 else "")
        behind = f" behind {args.translate_unit}" if args.translate_unit is not None else ""
        raise BadInput(f"translate: no device {bdf_str(sid)}{behind} in scenario {machine.scenario.name} "
                       f"(devices: {shown})")
    if len(units) > 1:
        raise BadInput(f"translate: {bdf_str(sid)} sits behind {' and '.join(units)}: pick one with --unit")
    name, device = found[0]
    walk = translate(machine.units[name], sid, iova, write, pasid, unit_level=machine.level_of(name), device=device,
                     tables=getattr(machine, "domain_tables", None))  # an imported machine's (kernel/importer.py)
    out = _stdout()
    if args.translate_json:
        out.write(json.dumps(walk.to_json(), indent=2) + "\n")
    else:
        _rich_console(out).print(render(walk), soft_wrap=True)  # the fault line stays one line
    out.flush()
    return 0


# --- bench --------------------------------------------------------------------------

BENCHES = ("core", "build", "tui", "replay", "terminal")


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


# --- serve --------------------------------------------------------------------------

def _port(text: str) -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a TCP port number (1 to 65535), not {quote(text)}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is outside 1..65535")
    return n


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    from vtdtui.tui.serve import DEFAULT_HOST, DEFAULT_PORT

    p.add_argument("--host", default=DEFAULT_HOST, metavar="H",
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 for a room)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="N", help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--theme", dest="serve_theme", metavar="NAME",
                   help="colour theme of every browser session (vtdtui-projector for a room; any Textual theme)")
    p.add_argument("serve_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="what each browser session runs, as 'vtdtui ARGS': e.g. -- --scenario viommu, "
                        "or -- replay caching-mode")


def _run_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vtdtui.tui.serve import run, url

    served = list(args.serve_args)
    if served[:1] == ["--"]:
        served = served[1:]
    if args.serve_theme is not None:
        _settings(args.serve_theme, read_config=False)
        # `replay` takes --theme after its name, the TUI before any subcommand.
        at = 1 if served[:1] == ["replay"] else 0
        served = [*served[:at], "--theme", args.serve_theme, *served[at:]]
    _check_served(served)
    try:
        return run(args.host, args.port, served)
    except OSError as exc:
        raise BadInput(f"serve: cannot listen on {url(args.host, args.port)}: {exc.strerror or exc}") from None


def _check_served(served: list[str]) -> None:
    """What each browser session will run is checked now, once, in the terminal: a
    typo must not first show as a browser tab that closes."""
    parser, _subs = build_parser()
    place = f"serve -- {shlex.join(served)}" if served else "serve"
    try:
        inner = parser.parse_args(served)
    except SystemExit as exc:
        if exc.code:  # the parser has said what is wrong, in one line
            raise
        raise BadInput(f"{place}: --help and --version end at once; nothing to serve") from None
    if inner.command in ("serve", "decode", "dump", "bench", "import", "translate"):
        raise BadInput(f"{place}: a browser session runs the TUI or a replay, not '{inner.command}'")
    if inner.command == "replay":
        from vtdtui.replay import FixtureError, load
        from vtdtui.replay.library import resolve

        if inner.headless or inner.replay_list or inner.fixture is None:
            raise BadInput(f"{place}: a browser session runs a paced replay of one FIXTURE (no --headless, --list)")
        _settings(inner.replay_theme, place=place)
        try:
            load(resolve(inner.fixture))
        except FixtureError as exc:
            raise BadInput(f"{place}: {exc}") from None
        return
    if inner.import_paths is not None:
        # Each session imports the paths again: they must exist and import now.
        try:
            _tui_import_machine(inner)
        except BadInput as exc:
            raise BadInput(f"{place}: {exc}") from None
        _settings(inner.theme, config_file=inner.config, place=place)
        return
    from vtdtui.machine import ScenarioError
    from vtdtui.machine.scenario import load as load_scenario

    try:  # `live` is read now, once, to check it
        load_scenario(_scenario_source(inner.scenario), devices=inner.tui_devices, map_spec=inner.tui_map_spec)
    except ScenarioError as exc:
        raise BadInput(f"{place}: {exc}") from None
    _settings(inner.theme, config_file=inner.config, place=place)


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
    "import": Command(
        help="read a machine's sysfs root, debugfs files or kernel log: summary, --toml scenario, --json",
        add_arguments=_import_arguments,
        run=_run_import,
    ),
    "replay": Command(
        help="replay a keystroke fixture: paced with captions in a terminal, or --headless for CI",
        add_arguments=_replay_arguments,
        run=_run_replay,
    ),
    "translate": Command(
        help="walk one device's request for an IOVA, step by step, and the fault line Linux would print",
        add_arguments=_translate_arguments,
        run=_run_translate,
    ),
    "serve": Command(
        help="serve the app to web browsers (textual-serve): each tab runs 'vtdtui ARGS'",
        add_arguments=_serve_arguments,
        run=_run_serve,
    ),
    "bench": Command(
        help="run the benchmarks (bench/) from a source checkout: figures as ratios to baselines",
        add_arguments=_bench_arguments,
        run=_run_bench,
    ),
}


# --- the TUI --------------------------------------------------------------------------

def _settings(theme: str | None, *, read_config: bool = True, config_file: str | None = None,
              place: str = "") -> tuple[str, dict[str, str]]:
    """(theme, keymap): --theme over config.toml's (tui/config.py) over the default.
    Loads Textual (its themes): only for the commands that start the app."""
    config = importlib.import_module("vtdtui.tui.config")
    try:
        return config.settings(theme, config=read_config, path=None if config_file is None else Path(config_file))
    except config.ConfigError as exc:
        raise BadInput(f"{place}: {exc}" if place else str(exc)) from None


def run_tui(scenario: str | None, record: str | None = None, *, devices: int | None = None,
            map_spec: str | None = None, check_invariants: bool = False, theme: str | None = None,
            config_file: str | None = None) -> int:
    """Start the TUI.  Imported here so that the core commands never load Textual."""
    from vtdtui.machine import Machine, ScenarioError
    from vtdtui.machine.scenario import load

    if record is not None and _live_root(scenario) is not None:
        # A fixture names its scenario file, and `live` is read afresh from sysfs each time.
        raise BadInput(f"--record: a recording names its scenario file, and {scenario} has none: write it first "
                       f"(vtdtui import {_live_root(scenario)} --toml my.toml), then --scenario my.toml")
    source = _scenario_source(scenario)
    try:  # bad scenario input is reported before Textual loads
        sc = load(source, devices=devices, map_spec=map_spec)
    except ScenarioError as exc:
        raise BadInput(str(exc)) from None
    if record is not None:
        _not_an_input(record, "--record", {sc.source: "the scenario file"})
    for name, stream in (("input", sys.stdin), ("output", sys.stdout)):
        if stream is None:  # Textual would fail on it with a traceback
            raise BadInput(f"the TUI needs a terminal: standard {name} is closed")
    theme_name, keymap = _settings(theme, config_file=config_file)
    app = importlib.import_module("vtdtui.tui.app")
    # `live` is read from sysfs afresh each time: no file to name in a session log, so
    # the app gets the machine built, as for --import.
    machine = None if source is scenario else Machine.from_scenario(sc)
    return app.run(scenario, record, devices=devices, map_spec=map_spec, check_invariants=check_invariants,
                   theme=theme_name, keymap=keymap, machine=machine)


def _tui_import_machine(args: argparse.Namespace):
    """The machine `vtdtui --import PATH...` browses, or BadInput (one line): options
    that do not apply, an input that does not import, an input with no device."""
    for opt, flag in (("scenario", "--scenario"), ("record", "--record"), ("tui_devices", "--devices"),
                      ("tui_map_spec", "--map")):
        if getattr(args, opt) is not None:
            raise BadInput(f"--import: {flag} does not apply to an imported machine (it is built from the input alone)")
    machine = import_machine(args.import_paths)
    if not machine.groups:
        raise BadInput("--import: no device in the input (no context entry, domain_translation_struct, fault dump or "
                       "iommu group line names one): nothing to browse; 'vtdtui import PATH...' says what was read")
    return machine


def run_tui_import(args: argparse.Namespace) -> int:
    """`vtdtui --import PATH...`: the TUI over the machine `import PATH...` builds.  A
    scenario, generated devices or a recording do not apply (a fixture names a
    scenario file; an import has none)."""
    machine = _tui_import_machine(args)
    _unparsed_note(machine)
    for name, stream in (("input", sys.stdin), ("output", sys.stdout)):
        if stream is None:  # Textual would fail on it with a traceback
            raise BadInput(f"the TUI needs a terminal: standard {name} is closed")
    theme_name, keymap = _settings(args.theme, config_file=args.config)
    app = importlib.import_module("vtdtui.tui.app")
    return app.run(None, None, machine=machine, check_invariants=args.check_invariants, theme=theme_name,
                   keymap=keymap)


def _not_an_input(out: str, flag: str, inputs: dict[str, str]) -> None:
    """Refuse to write an output over an input of the same run (same file, by inode,
    whatever the spelling): `--record scenario.toml` destroyed the scenario it was
    about to use.  `inputs` maps a path to what it is ("the scenario file")."""
    try:
        target = os.stat(out)
    except OSError:  # not there yet: nothing to overwrite (a bad path is reported later)
        return
    for path, what in inputs.items():
        try:
            st = os.stat(path)
        except OSError:  # a built-in scenario: no file
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            raise BadInput(f"{flag} {out}: that is {what} of this run; write to another file")


# --- entry point ----------------------------------------------------------------------

def _version() -> str:
    """The installed distribution's version (what pip shows); the source's own when
    run from a checkout that is not installed."""
    from importlib import metadata

    try:
        return metadata.version("vtdtui")
    except metadata.PackageNotFoundError:
        return __version__


class _VersionAction(argparse.Action):
    """argparse's version action, the version looked up when asked for: the lookup
    (importlib.metadata) cost every other command 20-30 ms of its start."""

    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        parser._print_message(f"{PROG} {_version()}\n", sys.stdout)
        parser.exit()


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(
        prog=PROG,
        description="A terminal explorer for a virtual Intel VT-d IOMMU. "
        "Without a subcommand, starts the TUI.",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, dest=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, help="show program's version number and exit")
    parser.add_argument(
        "--scenario", metavar="NAME|PATH",
        help="scenario for the TUI (default: desktop): desktop, viommu, server, a TOML file, or live (this "
             "machine's IOMMU units and groups, read from /sys; live:ROOT reads a copy, README 'Your own machine')"
    )
    _generator_arguments(parser, "tui_")
    parser.add_argument(
        "--record", metavar="FILE",
        help="record the session's keys to FILE as a fixture (written as you type; replay with 'vtdtui replay FILE')",
    )
    parser.add_argument(
        "--theme", metavar="NAME",
        help="colour theme: vtdtui (default), vtdtui-projector (light, high contrast) or any Textual theme "
             "(textual-light, solarized-light, nord ...); also 'theme' in the config file",
    )
    parser.add_argument(
        "--config", metavar="FILE",
        help="settings and key remapping (default: $XDG_CONFIG_HOME/vtdtui/config.toml, "
             "else ~/.config/vtdtui/config.toml; see README, The TUI)",
    )
    parser.add_argument(
        "--import", dest="import_paths", nargs="+", metavar="PATH",
        help="browse a machine imported from the kernel's text instead of a scenario: debugfs folders or files, "
             "kernel logs, a sysfs root (as 'vtdtui import PATH...'; README 'Your own machine')",
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
    """The one entry point (console script and `python -m vtdtui`): every way out is a
    status and at most one line on stderr, never a traceback."""
    try:
        status = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, not at exit, where a broken pipe prints a traceback
        return status
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except (BrokenPipeError, StdoutGone):
        return _stdout_gone()
    except OSError as exc:  # writing stdout to a full disk, an unreadable path...
        if _is_stdout_error(exc):
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return _stdout_gone()
            error_line(f"<stdout>: {exc.strerror or exc}")
            _silence_stdout()
            return EXIT_BAD_INPUT
        where = exc.filename if exc.filename is not None else "vtdtui"
        error_line(f"{where}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    except RecursionError:
        error_line("input nested too deeply to process (see the limits in README, Guarantees)")
        return EXIT_BAD_INPUT
    except MemoryError:
        error_line("out of memory (see the limits in README, Guarantees)")
        return EXIT_BAD_INPUT
    except Exception as exc:
        if os.environ.get("VTDTUI_DEBUG"):
            raise
        error_line(f"internal error: {type(exc).__name__}: {exc} (VTDTUI_DEBUG=1 shows the traceback; "
                   "please report it)")
        return EXIT_INTERNAL


def _is_stdout_error(exc: OSError) -> bool:
    # An OSError from writing stdout names no file: tell it from a path error by that.
    return exc.filename is None and exc.errno in (errno.EPIPE, errno.EBADF, errno.ENOSPC, errno.EIO,
                                                  errno.EDQUOT, errno.EFBIG)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that Python's final flush of what is left in the
    stdout buffer at exit cannot fail again ("Exception ignored ... BrokenPipeError",
    status 120).  What Python's signal docs recommend for SIGPIPE."""
    if sys.stdout is not sys.__stdout__:  # replaced (tests, an embedding program): not ours
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _stdout_gone() -> int:
    _silence_stdout()
    return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser, subs = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None and args.import_paths:
            return run_tui_import(args)
        if args.command is None:
            return run_tui(args.scenario, args.record, devices=args.tui_devices, map_spec=args.tui_map_spec,
                           check_invariants=args.check_invariants, theme=args.theme, config_file=args.config)
        for opt, flag in (("scenario", "--scenario"), ("record", "--record"), ("tui_devices", "--devices"),
                          ("tui_map_spec", "--map"), ("check_invariants", "--check-invariants"),
                          ("theme", "--theme"), ("config", "--config"), ("import_paths", "--import")):
            if getattr(args, opt) not in (None, False):
                after = ((args.command == "dump" and opt not in ("record", "check_invariants", "theme", "config"))
                         or (args.command in ("replay", "serve") and opt == "theme"))
                where = " (give it after the subcommand)" if after else ""
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
