"""Issue 14 on the command line: inputs attacked from outside.

Giant and endless inputs (/dev/zero, a 1 GB sparse file, a FIFO nobody writes, 100,000
nested arrays, a million-line fixture) run in a child process with RLIMIT_AS 1 GiB and
RLIMIT_CPU (tests/hardenkit.py) and must end with one line naming the limit; standard
streams that are closed, full or a broken pipe end with the documented status and no
traceback; output files are replaced whole or not at all; one escaping path
(vtdtui/textsafe.py) keeps control characters and markup of names off the terminal.
"""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from hardenkit import assert_refused, run_cli_cases, run_process
from vtdtui import cli, limits, textsafe
from vtdtui.limits import LimitError, check_toml_shape, read_bounded

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

HOSTILE = ["[bold]x[/]", "[", "[/]", "[x=", "[$accent]", "[@click=app.quit]q", "a\\[b]", "x\\",
           "\x1b[2J\x1b[Hcleared", "over\rwritten", "bell\x07", "\x9b31mred", "\u202eevil", "nul\x00",
           "tab\tline\nbreak", "\udcff surrogate", "del\x7f", "é 日本 …", "n" * 5000]


# ------------------------------------------------------------ textsafe: the one escaping path

def test_printable_escapes_every_character_a_terminal_acts_on():
    unsafe = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
              *range(0x2066, 0x206A), 0xFEFF, 0xD800, 0xDCFF]
    for code in unsafe:
        shown = textsafe.printable(f"a{chr(code)}b")
        assert shown.isprintable() and chr(code) not in shown, (hex(code), shown)
        assert shown == f"a\\x{code:02x}b" if code <= 0xFF else shown == f"a\\u{code:04x}b"
        shown.encode("utf-8")  # a lone surrogate would make print() raise
    ordinary = "dmar0 · 02:00.0 → domain 1 é 日本 … [b] \\ 'q'"
    assert textsafe.printable(ordinary) == ordinary


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_markup_shows_a_hostile_name_as_written_in_textual(name):
    from textual.markup import to_content

    shown = to_content(textsafe.markup(name)).plain  # no MarkupError, no variable, no action
    assert shown == textsafe.printable(name)


def test_clip_and_quote_bound_what_an_error_line_echoes():
    assert textsafe.clip("x" * 10) == "x" * 10
    cut = textsafe.clip("x" * 10_000_000)
    assert len(cut) == textsafe.QUOTE_LIMIT and cut.endswith(textsafe.ELLIPSIS)
    assert textsafe.quote("\x1b" * 1000).startswith("'\\x1b\\x1b")
    assert len(textsafe.quote("\x1b" * 1000)) < 5 * textsafe.QUOTE_LIMIT


def test_an_error_line_is_printable_and_bounded_whatever_the_message(capsys):
    cli.error_line("bad: " + "\x1b[2J" * 100_000 + "\nsecond line\r")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err[:-1].isprintable() and len(err) <= cli.MAX_ERROR_CHARS + 1


# ------------------------------------------------------------ limits: bounded reading, TOML shape

def test_read_bounded_stops_at_the_limit_on_an_endless_file():
    start = time.perf_counter()
    with pytest.raises(LimitError, match=r"/dev/zero: larger than 1 MiB \(MAX_X\)"):
        read_bounded("/dev/zero", 1 << 20, "MAX_X")
    assert time.perf_counter() - start < 1


def test_read_bounded_does_not_hang_on_a_fifo_nobody_writes(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    t = threading.Thread(target=lambda: got.append(read_bounded(str(fifo), 100, "MAX_X")), daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the thread so the run can go on, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("read_bounded blocked on a FIFO with no writer")
    assert got == [b""]


def test_read_bounded_reads_a_pipe_to_its_end():
    """`--dmesg <(sudo dmesg)`: the shell passes /dev/fd/N, a pipe; opened non-blocking,
    it must still be read in full."""
    r, w = os.pipe()
    os.write(w, b"DMAR: dmar0\n" * 1000)
    os.close(w)
    try:
        assert read_bounded(f"/dev/fd/{r}", 1 << 20, "MAX_X") == b"DMAR: dmar0\n" * 1000
    finally:
        os.close(r)


VALID_TOML = '''
# brackets and dots in strings and comments are not structure: [[[[ a.b.c.d
title = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.A.B.C.D.E.F.G.H [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
lit = 'C:\\path\\[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[.....................................'
ml = """
[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ \\""" still in the string """
mll = \'\'\'[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\'\'\'
float = 1.5
date = 1979-05-27T07:32:00Z
"quoted.key.with.dots" = 1
site."google.com" = true
inline = { a.b = 1, c = [1.5, 2.5, [3.5, [4.5]]], d = "]]]]" }
multi = [
  [1, 2], # ]]]] [[[[
  [3, 4],
]
[[products]]
name = "Hammer"
[a.b.c]
x = 1
'''


def test_the_toml_scan_passes_valid_toml_with_brackets_and_dots_in_strings():
    check_toml_shape(VALID_TOML, "ok.toml")
    tomllib.loads(VALID_TOML)  # and it is TOML indeed


@pytest.mark.parametrize("text, limit", [
    ("x = " + "[" * 33 + "]" * 33, "MAX_TOML_DEPTH"),
    ("x = " + "{ a = " * 33 + "1" + " }" * 33, "MAX_TOML_DEPTH"),
    ("x = [" + "[1], " * 1000 + "[" * 32 + "]" * 33, "MAX_TOML_DEPTH"),
    ("a" + ".a" * 32 + " = 1", "MAX_TOML_KEY_PARTS"),
    ("[" + ".".join("t" * 33) + "]", "MAX_TOML_KEY_PARTS"),
    ("[[" + ".".join("t" * 33) + "]]", "MAX_TOML_KEY_PARTS"),
    ('s = "]]]"\nx = ' + "[" * 33, "MAX_TOML_DEPTH"),  # a bracket in a string does not close one
    ("m = '''\n]]]\n'''\nx = " + "[" * 33, "MAX_TOML_DEPTH"),
    ("# ]]]]\nx = " + "[" * 33, "MAX_TOML_DEPTH"),
    ("n = " + "9" * 5000, "int_max_str_digits"),
])
def test_the_toml_scan_refuses_what_tomllib_cannot_bear(text, limit):
    with pytest.raises(LimitError, match=re.escape(limit)):
        check_toml_shape(text, "s.toml")


def test_every_limit_is_named_in_the_readme():
    names = [n for n in vars(limits) if n.startswith("MAX_")]
    assert len(names) >= 12
    guarantees = README[README.index("## Guarantees"):]
    for name in names:
        value = getattr(limits, name)
        assert f"`{name}`" in guarantees, f"{name} is not in README's Limits table"
        row = next(line for line in guarantees.splitlines() if line.startswith(f"| `{name}`"))
        assert f"{value:,}" in row or _human(value) in row, (name, value, row)


def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,}"


# ------------------------------------------------------------ giant and endless inputs, bounded

UNIT = '[[unit]]\nname = "{n}"\nbase = "0xfed90000"\ncap = "0xd2008c40660462"\necap = "0xf050da"\n'
HEAD = 'name = "big"\nowner = "driver"\n' + UNIT.format(n="dmar0")


def _groups(n: int, devices: int = 1) -> str:
    out = []
    for g in range(n):
        devs = ", ".join(f'{{ bdf = "{(g * devices + d) >> 8 & 0xff:02x}:{(g * devices + d) >> 3 & 0x1f:02x}.'
                         f'{(g * devices + d) & 7}" }}' for d in range(devices))
        out.append(f'[[group]]\nid = {g}\nunit = "dmar0"\ndevices = [{devs}]\n')
    return "".join(out)


@pytest.fixture(scope="module")
def giants(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("giants")
    for name in ("gig.toml", "gig.keys", "gig.dmesg"):
        with open(d / name, "wb") as f:  # sparse: 1 GB on paper, nothing on disk
            f.truncate(1 << 30)
    os.mkfifo(d / "fifo")
    (d / "deep.toml").write_text(HEAD + "x = " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    (d / "deep-lines.toml").write_text(HEAD + "x = " + "[\n" * 100_000 + "]\n" * 100_000, encoding="utf-8")
    (d / "dotted-100k.toml").write_text(HEAD + "a" + ".a" * 100_000 + " = 1\n", encoding="utf-8")
    (d / "dotted-5k.toml").write_text(HEAD + "a" + ".a" * 5_000 + " = 1\n", encoding="utf-8")
    (d / "groups-4097.toml").write_text(HEAD + _groups(4097), encoding="utf-8")
    (d / "devices-16385.toml").write_text(HEAD + _groups(3277, 5), encoding="utf-8")
    (d / "million.keys").write_text("#\n" * 1_000_000 + "keys m\n", encoding="utf-8")
    (d / "lines.keys").write_text("keys m\n" * 100_001, encoding="utf-8")
    (d / "keys.keys").write_text(("keys " + " m" * 1000 + "\n") * 101, encoding="utf-8")
    (d / "type-10mb.keys").write_text("type " + "a" * 10_000_000 + "\n", encoding="utf-8")
    (d / "type-1mb.keys").write_text("type " + "a" * 1_000_000 + "\n", encoding="utf-8")
    (d / "dmesg-10mb-line.dmesg").write_text("DMAR: dmar0: reg_base_addr " + "f" * 10_000_000 + "\n",
                                             encoding="utf-8")
    return d


GIANT_CASES = [
    # (argv, the error line must contain)
    (["dump", "--scenario", "gig.toml", "--json", "out.json"], "gig.toml: larger than 1 MiB (MAX_SCENARIO_BYTES)"),
    (["replay", "gig.keys", "--headless"], "gig.keys: larger than 4 MiB (MAX_FIXTURE_BYTES)"),
    (["decode", "--dmesg", "gig.dmesg"], "gig.dmesg: larger than 32 MiB (MAX_LOG_BYTES)"),
    (["replay", "/dev/zero", "--headless"], "/dev/zero: larger than 4 MiB (MAX_FIXTURE_BYTES)"),
    (["decode", "--dmesg", "/dev/zero"], "/dev/zero: larger than 32 MiB (MAX_LOG_BYTES)"),
    (["dump", "--scenario", "/dev/zero", "--json", "-"], "/dev/zero: no such scenario"),
    (["replay", "fifo", "--headless"], "fifo: empty fixture"),
    (["decode", "--dmesg", "fifo"], "fifo: no 'DMAR: dmarN"),
    (["dump", "--scenario", "fifo", "--json", "-"], "fifo: no such scenario"),
    (["dump", "--scenario", "deep.toml", "--json", "-"], "deep.toml:8: line longer than 16,384 characters"),
    (["dump", "--scenario", "deep-lines.toml", "--json", "-"], "deep-lines.toml:40: arrays or inline tables"),
    (["dump", "--scenario", "dotted-100k.toml", "--json", "-"], "dotted-100k.toml:8: line longer than 16,384 "
                                                                "characters (MAX_LINE_CHARS)"),
    (["dump", "--scenario", "dotted-5k.toml", "--json", "-"], "dotted-5k.toml:8: a key of more than 32 dotted "
                                                              "parts (MAX_TOML_KEY_PARTS)"),
    (["--scenario", "groups-4097.toml"], "groups-4097.toml: 4,097 [[group]] tables, more than 4,096 (MAX_GROUPS"),
    (["dump", "--scenario", "devices-16385.toml", "--json", "-"], "16,385 devices in [[group]] tables, more "
                                                                  "than 16,384 (MAX_DEVICES)"),
    (["replay", "million.keys", "--headless"], "million.keys: 1,000,001 lines, more than 100,000 "
                                               "(MAX_FIXTURE_LINES)"),
    (["replay", "lines.keys", "--headless"], "lines.keys: 100,001 lines, more than 100,000 (MAX_FIXTURE_LINES)"),
    (["replay", "keys.keys", "--headless"], "keys.keys:101: more than 100,000 keys and typed characters "
                                            "(MAX_FIXTURE_KEYS)"),
    (["replay", "type-10mb.keys", "--headless"], "type-10mb.keys: larger than 4 MiB (MAX_FIXTURE_BYTES)"),
    (["replay", "type-1mb.keys", "--headless"], "type-1mb.keys:1: line longer than 16,384 characters"),
    (["decode", "--dmesg", "dmesg-10mb-line.dmesg"], "dmesg-10mb-line.dmesg:1: unit line longer than 16,384"),
    (["dump", "--do", "attach 5", "--do", "map 5 0x100000 " + "9" * 100_000, "--json", "-"], "--do #2 'map 5"),
    (["decode", "--cap", "f" * 100_000], "--cap: 'ffffffff"),
]


def test_giant_and_endless_inputs_end_quickly_with_one_line(giants, tmp_path):
    results, peak = run_cli_cases([argv for argv, _ in GIANT_CASES], tmp_path, cwd=giants)
    for (argv, expected), r in zip(GIANT_CASES, results):
        try:
            assert_refused(r, expected)
        except AssertionError as exc:
            raise AssertionError(f"{argv[:3]}: {exc}") from None
    assert peak < 512 << 20, f"peak RSS {peak >> 20} MiB"
    assert not (giants / "out.json").exists()


def test_groups_are_checked_in_linear_time(monkeypatch):
    """The duplicate-id check scanned every earlier group for each group: 20,000 groups
    (past MAX_GROUPS, lifted here to see the growth) took some 5 s of it; now the
    check is a set and the whole parse, TOML included, a small part of that."""
    from vtdtui.machine import scenario

    monkeypatch.setattr(scenario, "MAX_GROUPS", 1 << 20)
    monkeypatch.setattr(scenario, "MAX_DEVICES", 1 << 20)
    data = (HEAD + _groups(20_000)).encode()
    start = time.perf_counter()
    sc = scenario.parse(data, "many.toml")
    assert len(sc.groups) == 20_000
    assert time.perf_counter() - start < 1.5


def test_a_number_too_long_for_int_names_the_file_and_line(tmp_path, capsys):
    log = tmp_path / "big.dmesg"
    log.write_text("ok\nDMAR: dmar" + "1" * 5000 + ": reg_base_addr fed91000 ver 1:0 cap 0 ecap 0\n")
    assert cli.main(["decode", "--dmesg", str(log)]) == 2
    assert capsys.readouterr().err.startswith(f"vtdtui: error: {log}:2: unit number 111")
    toml = tmp_path / "big.toml"
    toml.write_text('name = "x"\n\nhaw = ' + "4" * 5000 + "\n")
    assert cli.main(["dump", "--scenario", str(toml), "--json", "-"]) == 2
    assert capsys.readouterr().err.startswith(f"vtdtui: error: {toml}:3: a number of 5,000 digits")


def test_a_dmesg_field_with_escapes_reaches_the_terminal_escaped(tmp_path, capsys):
    log = tmp_path / "esc.dmesg"
    log.write_text("DMAR: dmar0: reg_base_addr fed91000 ver \x1b[2J\x1b]0;t\x07 cap d2008c40660462 ecap f050da\n")
    assert cli.main(["decode", "--dmesg", str(log)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "ver \\x1b[2J\\x1b]0;t\\x07" in out
    assert cli.main(["decode", "--dmesg", str(log), "--json"]) == 0
    assert "\x1b" not in capsys.readouterr().out  # JSON escapes it as \u001b


# ------------------------------------------------------------ standard streams (in-process)

class _Failing(io.StringIO):
    def __init__(self, exc: OSError):
        super().__init__()
        self.exc = exc

    def write(self, s):
        raise self.exc

    def flush(self):
        raise self.exc


@pytest.mark.parametrize("argv", [["dump", "--json", "-"], ["decode", "--cap", "0x1"],
                                  ["decode", "--cap", "0x1", "--json"]])
def test_a_broken_pipe_ends_quietly_with_141(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _Failing(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    assert cli.main(argv) == cli.EXIT_BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_ends_quietly_with_141(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", None)
    assert cli.main(["dump", "--json", "-"]) == 141
    assert cli.main(["decode", "--cap", "0x1"]) == 141
    assert capsys.readouterr().err == ""


def test_a_full_stdout_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _Failing(OSError(errno.ENOSPC, "No space left on device")))
    assert cli.main(["dump", "--json", "-"]) == 2
    assert capsys.readouterr().err == "vtdtui: error: <stdout>: No space left on device\n"


@pytest.mark.parametrize("argv, expected", [
    (["decode", "--dmesg", "-"], "vtdtui: error: --dmesg -: standard input is closed\n"),
    (["--scenario", "server"], "vtdtui: error: the TUI needs a terminal: standard input is closed\n"),
    (["replay", str(ROOT / "fixtures" / "caching-mode.keys")],
     "vtdtui: error: replay: a paced replay needs a terminal; add --headless to run without one\n"),
])
def test_a_closed_stdin_is_one_line(argv, expected, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", None)
    monkeypatch.setattr(cli, "importlib", None)  # the app must not be reached
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == expected


def test_ctrl_c_anywhere_is_130_and_one_line(monkeypatch, capsys):
    def interrupted(args, parser):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "dump", cli.COMMANDS["dump"].__class__(
        help="", add_arguments=cli.COMMANDS["dump"].add_arguments, run=interrupted))
    assert cli.main(["dump", "--json", "-"]) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "vtdtui: interrupted\n"


def test_an_unexpected_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    def broken(args, parser):
        raise ZeroDivisionError("a bug")

    monkeypatch.delenv("VTDTUI_DEBUG", raising=False)
    monkeypatch.setitem(cli.COMMANDS, "dump", cli.COMMANDS["dump"].__class__(
        help="", add_arguments=cli.COMMANDS["dump"].add_arguments, run=broken))
    assert cli.main(["dump", "--json", "-"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("vtdtui: error: internal error: ZeroDivisionError: a bug") and err.count("\n") == 1


# ------------------------------------------------------------ standard streams (real processes)

def test_a_broken_pipe_as_a_process_prints_nothing_and_exits_141(tmp_path):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first byte: `| head -c 0`
    try:
        p = run_process(["dump", "--scenario", "server", "--json", "-"], cwd=tmp_path, stdout=w)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (141, b"")


def test_a_full_disk_as_stdout_is_one_line(tmp_path):
    with open("/dev/full", "wb") as full:
        p = run_process(["decode", "--cap", "0x1", "--json"], cwd=tmp_path, stdout=full)
    assert (p.returncode, p.stderr) == (2, b"vtdtui: error: <stdout>: No space left on device\n")


def test_ctrl_c_as_a_process_is_130_and_one_line(tmp_path):
    """SIGINT while `decode --dmesg -` waits on standard input (what Ctrl+C sends)."""
    p = subprocess.Popen([sys.executable, "-m", "vtdtui", "decode", "--dmesg", "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        # Wait until it blocks reading fd 0 (syscall 0 = read, first argument 0): past
        # the imports, inside main().
        while time.monotonic() < deadline:
            try:
                call = Path(f"/proc/{p.pid}/syscall").read_text().split()
            except OSError:
                pytest.skip("/proc/PID/syscall is not readable here")
            if call[:2] == ["0", "0x0"]:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert (p.returncode, out, err) == (130, b"", b"vtdtui: interrupted\n")


# ------------------------------------------------------------ output files: whole or not at all

def test_dump_json_leaves_out_untouched_when_the_work_fails(tmp_path, capsys):
    out = tmp_path / "state.json"
    out.write_text("old state\n")
    assert cli.main(["dump", "--do", "frobnicate", "--json", str(out)]) == 2
    assert out.read_text() == "old state\n"


def test_dump_json_leaves_out_whole_when_the_disk_fills_while_writing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "state.json"
    out.write_text("old state\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert cli.main(["dump", "--json", str(out)]) == 2
    assert capsys.readouterr().err == f"vtdtui: error: {out}: No space left on device\n"
    assert out.read_text() == "old state\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"], "a temporary file was left"


def test_dump_json_replaces_out_keeping_its_mode_and_following_a_symlink(tmp_path, capsys):
    out = tmp_path / "state.json"
    out.write_text("old")
    out.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(out)
    assert cli.main(["dump", "--json", str(link)]) == 0
    assert link.is_symlink() and out.read_text().startswith("{")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "state.json"]


def test_dump_json_to_a_device_writes_in_place(tmp_path, capsys):
    assert cli.main(["dump", "--json", "/dev/null"]) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null was replaced by a file"


def test_record_onto_the_scenario_file_is_refused(tmp_path, monkeypatch, capsys):
    scenario = tmp_path / "mine.toml"
    scenario.write_bytes((ROOT / "vtdtui" / "scenarios" / "server.toml").read_bytes())
    before = scenario.read_bytes()
    alias = tmp_path / "alias.keys"
    os.link(scenario, alias)  # the same file under another name
    monkeypatch.setattr(cli, "importlib", None)  # the app must not start
    for target in (str(scenario), str(alias), f"{tmp_path}/./mine.toml"):
        assert cli.main(["--scenario", str(scenario), "--record", target]) == 2
        err = capsys.readouterr().err
        assert err == (f"vtdtui: error: --record {target}: that is the scenario file of this run; "
                       "write to another file\n")
    assert scenario.read_bytes() == before


def test_replay_json_onto_its_scenario_file_is_refused(tmp_path, monkeypatch, capsys):
    scenario = tmp_path / "s.toml"
    scenario.write_bytes((ROOT / "vtdtui" / "scenarios" / "server.toml").read_bytes())
    fixture = tmp_path / "f.keys"
    fixture.write_text("scenario s.toml\nkeys m\n")
    monkeypatch.setattr(cli, "importlib", None)
    assert cli.main(["replay", str(fixture), "--headless", "--json", str(scenario)]) == 2
    assert "that is the scenario file of this run" in capsys.readouterr().err
    assert scenario.read_bytes() == (ROOT / "vtdtui" / "scenarios" / "server.toml").read_bytes()


def test_the_new_core_modules_never_load_textual():
    """limits, textsafe and outfile sit below cli and tui (both use them): importing
    them, and escaping for markup, must not load Textual."""
    code = ("import sys, vtdtui.limits, vtdtui.textsafe, vtdtui.outfile; vtdtui.textsafe.markup('[b]');"
            "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'vtdtui.tui', "
            "'vtdtui.cli'))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout.strip()) == (0, "[]"), p.stderr
