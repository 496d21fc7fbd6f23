"""Bad input anywhere gives one clear line naming the place, exit status 2 (or an inline
message in the app), and changes nothing; no traceback reaches the user (DESIGN.md,
"Command line").

The corpus lives in tests/data/bad/: scenario files, keystroke fixtures and boot logs
with the text their error line must hold in an expect.txt beside them, command lines in
args.txt, machine commands in commands.txt and prompt texts in prompts.txt.  The
command line runs in-process (cli.main) with the TUI made unreachable, so that a bad
input that slips through fails the test instead of starting the app; a handful of
cases run as real processes, and the whole corpus runs again in one child process with
bounded memory and CPU (tests/hardenkit.py), each case timed.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

from hardenkit import assert_refused, run_cli_cases
from vtdtui import cli
from vtdtui.machine import CommandError, Machine
from vtdtui.machine.state import to_json_text
from vtdtui.views.prompts import PROMPTS, check_filter

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
BAD = DATA / "bad"
SCENARIOS = BAD / "scenarios"
FIXTURES = BAD / "fixtures"
LOGS = BAD / "dmesg"


def _rows(path: Path, fields: int) -> list[tuple[str, ...]]:
    """The data lines of a corpus table: '#' lines are comments, ' | ' separates fields."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ", fields - 1)]
        assert len(parts) == fields and parts[-1], f"{path.name}:{n}: want {fields} fields split by ' | '"
        rows.append(tuple(parts))
    return rows


SCENARIO_CASES = _rows(SCENARIOS / "expect.txt", 2)
FIXTURE_CASES = _rows(FIXTURES / "expect.txt", 3)
LOG_CASES = _rows(LOGS / "expect.txt", 3)
# args.txt and commands.txt: the expected text follows the last bar.
ARG_CASES = [tuple(p.strip() for p in line.rsplit(" | ", 1)) for (line,) in _rows(BAD / "args.txt", 1)]
COMMAND_CASES = [tuple(p.strip() for p in line.rsplit(" | ", 1)) for (line,) in _rows(BAD / "commands.txt", 1)]
PROMPT_CASES = [(prompt.strip(), text.strip(), expected)
                for (case, expected) in _rows(BAD / "prompts.txt", 2) for prompt, text in [case.split(";", 1)]]


def _ids(cases) -> list[str]:
    return [c[0] for c in cases]


# ------------------------------------------------------------ helpers

@pytest.fixture
def no_tui(monkeypatch):
    """cli loads the TUI (app, replayer) through cli.importlib: bad input must be
    refused before that, so reaching it fails the test instead of starting the app."""
    def import_module(name):
        raise AssertionError(f"bad input reached {name}: the app would start")
    monkeypatch.setattr(cli, "importlib", types.SimpleNamespace(import_module=import_module))


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(rc: int, out: str, err: str, expected: str, place: str = "") -> str:
    """Exit 2, nothing on stdout, one stderr line 'vtdtui: error: PLACE...' holding
    `expected`, and no traceback."""
    assert "Traceback" not in out + err
    assert rc == 2, (rc, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    line = err[:-1]
    assert line.startswith(f"vtdtui: error: {place}"), line
    assert expected in line, f"{expected!r} not in {line!r}"
    # Control characters of the input are shown escaped, and the line is bounded.
    assert line.isprintable(), f"a control character reaches the terminal: {line!r}"
    assert len(line) <= cli.MAX_ERROR_CHARS, len(line)
    return line


def _at_place(line: str, path: str) -> None:
    """The line names the file, and the line in it where there is one: 'FILE: ' or 'FILE:N: '."""
    rest = line.removeprefix(f"vtdtui: error: {path}")
    assert rest != line and re.match(r"(:\d+)?: ", rest), line


def _state(m: Machine) -> tuple:
    return to_json_text(m), list(m.log), list(m.redo_stack), m.selected_unit, m.selected_group


def _one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, repr(message)


# ------------------------------------------------------------ scenario files

@pytest.mark.parametrize("name, expected", SCENARIO_CASES, ids=_ids(SCENARIO_CASES))
def test_bad_scenario_file_dump(name, expected, capsys, tmp_path, no_tui):
    path = str(SCENARIOS / name)
    out = tmp_path / "state.json"
    rc, stdout, err = _run(capsys, ["dump", "--scenario", path, "--json", str(out)])
    line = _refused(rc, stdout, err, expected, place=path)
    _at_place(line, path)
    assert line.count(path) == 1, f"the place is named twice: {line!r}"
    assert not out.exists()


@pytest.mark.parametrize("name, expected", SCENARIO_CASES, ids=_ids(SCENARIO_CASES))
def test_bad_scenario_file_tui(name, expected, capsys, no_tui):
    # `vtdtui --scenario FILE` reports it before Textual loads.
    path = str(SCENARIOS / name)
    rc, stdout, err = _run(capsys, ["--scenario", path])
    _at_place(_refused(rc, stdout, err, expected, place=path), path)


@pytest.mark.parametrize("path", sorted((DATA / "scenarios").glob("bad-*.toml")), ids=lambda p: p.name)
def test_older_bad_scenario_files_through_the_cli(path, capsys, no_tui):
    rc, stdout, err = _run(capsys, ["dump", "--scenario", str(path), "--json", "-"])
    line = _refused(rc, stdout, err, "", place=f"{path}: ")
    assert line.count(str(path)) == 1, line


@pytest.mark.parametrize("path", sorted((DATA / "dmesg").glob("bad-*")), ids=lambda p: p.name)
def test_bad_boot_logs_through_the_cli(path, capsys):
    rc, stdout, err = _run(capsys, ["decode", "--dmesg", str(path)])
    _refused(rc, stdout, err, "", place=f"{path}")


@pytest.mark.parametrize("name, line, expected", LOG_CASES, ids=_ids(LOG_CASES))
def test_bad_boot_log_corpus(name, line, expected, capsys):
    path = str(LOGS / name)
    rc, stdout, err = _run(capsys, ["decode", "--dmesg", path])
    place = f"{path}: " if line == "-" else f"{path}:{int(line)}: "
    _refused(rc, stdout, err, expected, place=place)


# ------------------------------------------------------------ keystroke fixtures

@pytest.mark.parametrize("name, line, expected", FIXTURE_CASES, ids=_ids(FIXTURE_CASES))
def test_bad_fixture(name, line, expected, capsys, tmp_path, no_tui):
    path = str(FIXTURES / name)
    out = tmp_path / "state.json"
    rc, stdout, err = _run(capsys, ["replay", path, "--headless", "--json", str(out)])
    place = f"{path}: " if line == "-" else f"{path}:{int(line)}: "
    _refused(rc, stdout, err, expected, place=place)
    assert not out.exists()


# ------------------------------------------------------------ command lines

@pytest.fixture
def placeholders(tmp_path) -> dict[str, str]:
    good = tmp_path / "good.keys"
    good.write_text("keys m\n", encoding="utf-8")
    folder = tmp_path / "empty"
    folder.mkdir()
    return {"out": str(tmp_path / "out.json"), "tmp": str(folder), "bad": str(BAD), "data": str(DATA),
            "good": str(good), "esc": "\x1b", "bel": "\x07", "csi": "\x9b", "long": "x" * 100_000}


@pytest.mark.parametrize("args, expected", ARG_CASES, ids=_ids(ARG_CASES))
def test_bad_arguments(args, expected, capsys, placeholders, no_tui):
    argv = [a.format(**placeholders) for a in shlex.split(args)]
    rc, stdout, err = _run(capsys, argv)
    _refused(rc, stdout, err, expected.format(**placeholders))
    assert not Path(placeholders["out"]).exists()
    assert not any(Path(placeholders["tmp"]).iterdir())


# ------------------------------------------------------------ machine commands

def _machine(scenario: str, setup: list[str]) -> Machine:
    m = Machine.from_scenario(str(BAD / scenario) if "/" in scenario else scenario)
    for line in setup:
        m.execute(line)
    return m


@pytest.mark.parametrize("case, expected", COMMAND_CASES, ids=_ids(COMMAND_CASES))
def test_bad_command(case, expected):
    scenario, *setup, command = [part.strip() for part in case.split(" ; ")]
    m = _machine(scenario, setup)
    before = _state(m)
    with pytest.raises(CommandError) as info:
        m.execute(command)
    message = str(info.value)
    _one_line(message)
    assert expected in message, message
    assert _state(m) == before, f"{command!r} changed the state"


# ------------------------------------------------------------ prompt texts

PROMPT_GROUP = 5


@pytest.fixture
def prompted() -> Machine:
    """The app's state when the prompt opens: group 5 attached, selected, 64K mapped."""
    return _machine("desktop", [f"attach {PROMPT_GROUP}", f"map {PROMPT_GROUP} 0x100000 64K",
                                f"select-group {PROMPT_GROUP}"])


@pytest.mark.parametrize("prompt, text, expected", PROMPT_CASES, ids=[f"{p}:{t}" for p, t, _ in PROMPT_CASES])
def test_bad_prompt_text(prompt, text, expected, prompted):
    m = prompted
    before = _state(m)
    if prompt == "filter":  # the journal filter changes no state
        ok, hint = check_filter(text)
        assert not ok
        _one_line(hint)
        assert expected in hint, hint
        return
    spec = PROMPTS[prompt]
    ok, hint = spec.validate(text)
    _one_line(hint)
    command = spec.command(text, PROMPT_GROUP)
    # The prompt's check is syntax only; the machine has the last word, and refuses
    # whatever the check refuses too.
    with pytest.raises(CommandError) as info:
        m.execute(command)
    message = str(info.value)
    _one_line(message)
    assert expected in (message if ok else hint), (ok, hint, message)
    assert _state(m) == before, f"{command!r} changed the state"


# ------------------------------------------------------------ the corpus itself

def test_every_file_has_an_expectation():
    assert {p.name for p in SCENARIOS.glob("*.toml")} == {name for name, _ in SCENARIO_CASES}
    assert {p.name for p in FIXTURES.glob("*.keys")} == {name for name, _, _ in FIXTURE_CASES}
    assert {p.name for p in LOGS.glob("*.dmesg")} == {name for name, _, _ in LOG_CASES}
    assert len(SCENARIO_CASES) == len({n for n, _ in SCENARIO_CASES})
    assert len(FIXTURE_CASES) == len({n for n, _, _ in FIXTURE_CASES})
    assert all(line == "-" or line.isdigit() for _, line, _ in FIXTURE_CASES)
    assert all(p in PROMPTS or p == "filter" for p, _, _ in PROMPT_CASES)


def test_the_corpus_has_at_least_40_entries_of_every_kind():
    counts = {"scenarios": len(SCENARIO_CASES), "fixtures": len(FIXTURE_CASES), "arguments": len(ARG_CASES),
              "commands": len(COMMAND_CASES), "prompts": len(PROMPT_CASES)}
    assert sum(counts.values()) >= 40, counts
    assert all(n >= 10 for n in counts.values()), counts
    # The kinds of mistake the issue names are all there.
    scenario_names = " ".join(n for n, _ in SCENARIO_CASES)
    for kind in ("wrong-type", "unknown-unit", "overlapping-devices", "duplicate-group", "huge", "nonutf8", "empty",
                 "limit-toml-deep", "limit-toml-dotted", "limit-toml-huge-integer", "limit-line", "limit-name",
                 "limit-too-many", "hostile-"):
        assert kind in scenario_names, kind
    fixture_names = " ".join(n for n, _, _ in FIXTURE_CASES)
    for kind in ("limit-type", "limit-line", "hostile-"):
        assert kind in fixture_names, kind
    log_names = " ".join(n for n, _, _ in LOG_CASES)
    for kind in ("limit-unit-number", "limit-too-many", "limit-long", "hostile-"):
        assert kind in log_names, kind
    prompt_texts = " ".join(e for _, _, e in PROMPT_CASES)
    for kind in ("not 4 KiB aligned", "size 0", "MGAW", "overlaps", "nothing is mapped"):
        assert kind in prompt_texts, kind


# ------------------------------------------------------------ as real processes

def _process_cases():
    return [
        pytest.param(["dump", "--scenario", str(SCENARIOS / "nonutf8-utf16.toml"), "--json", "-"],
                     "nonutf8-utf16.toml: line 1: not UTF-8 text", id="scenario-utf16"),
        pytest.param(["replay", str(FIXTURES / "nonutf8.keys"), "--headless"],
                     "nonutf8.keys:3: not UTF-8 (byte 0xe9)", id="fixture-latin1"),
        pytest.param(["--scenario", "nosuch"], "nosuch: no such scenario", id="tui-scenario"),
        pytest.param(["--record", "/nonexistent-dir/rec.keys"], "--record /nonexistent-dir/rec.keys: ",
                     id="tui-record"),
        pytest.param(["dump", "--scenario", b"caf\xe9.toml", "--json", "-"], ".toml: no such scenario",
                     id="argv-not-utf8"),
    ]


@pytest.mark.parametrize("argv, expected", _process_cases())
def test_bad_input_as_a_process(argv, expected, tmp_path):
    p = subprocess.run([sys.executable, "-m", "vtdtui", *argv], capture_output=True, timeout=60, cwd=tmp_path,
                       stdin=subprocess.DEVNULL)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    _refused(p.returncode, out, err, expected)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------ bounded: the corpus in a limited child

def _digest(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_the_corpus_is_bounded_in_time_and_memory(tmp_path, placeholders):
    """Every file case and command line of the corpus again, in one child process with
    RLIMIT_AS 1 GiB and RLIMIT_CPU (tests/hardenkit.py): each ends within its time, the
    child's peak memory stays bounded, and no input file changes (state unchanged)."""
    cases, expect = [], []
    for name, expected in SCENARIO_CASES:
        path = str(SCENARIOS / name)
        cases.append(["dump", "--scenario", path, "--json", placeholders["out"]])
        expect.append((expected, path))
    for name, line, expected in FIXTURE_CASES:
        path = str(FIXTURES / name)
        cases.append(["replay", path, "--headless", "--json", placeholders["out"]])
        expect.append((expected, path))
    for name, line, expected in LOG_CASES:
        path = str(LOGS / name)
        cases.append(["decode", "--dmesg", path])
        expect.append((expected, path))
    for args, expected in ARG_CASES:
        cases.append([a.format(**placeholders) for a in shlex.split(args)])
        expect.append((expected.format(**placeholders), ""))
    inputs = [p for d in (SCENARIOS, FIXTURES, LOGS) for p in sorted(d.iterdir())]
    before = _digest(inputs)
    results, peak = run_cli_cases(cases, tmp_path)
    for argv, (expected, place), r in zip(cases, expect, results):
        try:
            assert_refused(r, expected, place)
        except AssertionError as exc:
            raise AssertionError(f"{argv[:3]}: {exc}") from None
    assert peak < 512 << 20, f"peak RSS {peak >> 20} MiB"
    assert _digest(inputs) == before, "an input file changed"
    assert not Path(placeholders["out"]).exists()
