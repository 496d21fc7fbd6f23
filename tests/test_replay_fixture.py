"""The keystroke fixture format (vtdtui.replay.fixture): what each line parses to,
and a file:line error for every mistake DESIGN.md names."""

from __future__ import annotations

from importlib import resources

import pytest

from vtdtui.replay import DEFAULT_SIZE, FixtureError, Step, load, parse
from vtdtui.replay.fixture import MAX_PAUSE, MAX_SIZE, MIN_SIZE

SRC = "demo.keys"


def _error(text: str) -> str:
    with pytest.raises(FixtureError) as info:
        parse(text, SRC)
    return str(info.value)


# ----------------------------------------------------------------------------- good input


def test_defaults():
    fx = parse("", SRC)
    assert (fx.size, fx.scenario, fx.scenario_line, fx.steps) == (DEFAULT_SIZE, "desktop", 0, [])
    assert DEFAULT_SIZE == (160, 50)
    assert fx.name == "demo"


def test_headers():
    fx = parse("size 100x30\nscenario viommu\nkeys g\n", SRC)
    assert (fx.size, fx.scenario, fx.scenario_line) == ((100, 30), "viommu", 2)


@pytest.mark.parametrize("line, step", [
    ("caption Attach the NIC with CM off", Step(1, "caption", "Attach the NIC with CM off")),
    ("keys g 3 enter a", Step(1, "keys", "g 3 enter a", keys=("g", "3", "enter", "a"))),
    ("type 0x100000 64K rw", Step(1, "type", "0x100000 64K rw")),
    ("pause 1.5", Step(1, "pause", "1.5", seconds=1.5)),
    ("pause 0", Step(1, "pause", "0", seconds=0.0)),
    (f"pause {MAX_PAUSE:g}", Step(1, "pause", f"{MAX_PAUSE:g}", seconds=MAX_PAUSE)),
    ("expect dmar1 CM=1", Step(1, "expect", "dmar1 CM=1")),
    ("snapshot after-attach", Step(1, "snapshot", "after-attach")),
    ("keys ctrl+r shift+tab question_mark ?", Step(1, "keys", "ctrl+r shift+tab question_mark ?",
                                                  keys=("ctrl+r", "shift+tab", "question_mark", "?"))),
])
def test_step(line, step):
    assert parse(line, SRC).steps == [step]


def test_design_doc_example():
    text = """\
size 160x50                     # terminal size, before any keys
scenario desktop                # built-in name or path, before any keys
caption Attach the NIC with CM off   # shown on screen during a paced replay
keys g 3 enter a                # Textual key names, space separated
type 0x100000 64K rw            # literal text, one key per character
pause 1.5                       # seconds; skipped when headless
expect dmar1 CM=1               # this text must be on screen now
snapshot after-attach           # SVG of the screen into --svg-dir
"""
    fx = parse(text, SRC)
    assert (fx.size, fx.scenario, fx.scenario_line) == ((160, 50), "desktop", 2)
    assert fx.steps == [
        Step(3, "caption", "Attach the NIC with CM off"),
        Step(4, "keys", "g 3 enter a", keys=("g", "3", "enter", "a")),
        Step(5, "type", "0x100000 64K rw"),
        Step(6, "pause", "1.5", seconds=1.5),
        Step(7, "expect", "dmar1 CM=1"),
        Step(8, "snapshot", "after-attach"),
    ]
    assert fx.key_count() == 4 + len("0x100000 64K rw")


def test_comments_and_blank_lines_keep_line_numbers():
    text = "# a fixture\n\n   \n  # indented comment\nkeys g\n\n#\nexpect x\n"
    fx = parse(text, SRC)
    assert [(s.line, s.kind) for s in fx.steps] == [(5, "keys"), (8, "expect")]


def test_crlf_line_endings():
    fx = parse("size 80x24\r\nkeys g\r\nexpect CM=1\r\n", SRC)
    assert fx.size == (80, 24)
    assert fx.steps == [Step(2, "keys", "g", keys=("g",)), Step(3, "expect", "CM=1")]


def test_tabs_between_directive_and_argument():
    fx = parse("size\t80x24\nscenario\tserver\nkeys\tg\tenter\ntype\t\tab c\nexpect\tCM=1\n", SRC)
    assert (fx.size, fx.scenario) == ((80, 24), "server")
    assert fx.steps[0].keys == ("g", "enter")
    assert fx.steps[1].arg == "ab c"
    assert fx.steps[2].arg == "CM=1"


def test_size_accepts_bounds_and_spaces():
    assert parse(f"size {MIN_SIZE[0]}x{MIN_SIZE[1]}", SRC).size == MIN_SIZE
    assert parse(f"size {MAX_SIZE[0]}X{MAX_SIZE[1]}", SRC).size == MAX_SIZE
    assert parse("size 120 x 40", SRC).size == (120, 40)


def test_key_count():
    fx = parse("keys g 3 enter\ncaption hi\ntype ab c\npause 1\nkeys ctrl+r\nexpect x\n", SRC)
    assert fx.key_count() == 3 + 4 + 1
    assert parse("caption only words here\n", SRC).key_count() == 0


# Trailing comments on every directive: the argument ends before '#', trimmed.
@pytest.mark.parametrize("line, attr, value", [
    ("size 80x24   # small", "size", (80, 24)),
    ("scenario server # big box", "scenario", "server"),
    ("caption Hello there  # shown", "arg", "Hello there"),
    ("keys g enter # go", "keys", ("g", "enter")),
    ("type 0x1000 rw# addr", "arg", "0x1000 rw"),
    ("pause 2 # wait", "seconds", 2.0),
    ("expect CM=1 # after", "arg", "CM=1"),
    ("snapshot shot-1 # svg", "arg", "shot-1"),
])
def test_trailing_comment(line, attr, value):
    fx = parse(line, SRC)
    got = getattr(fx, attr) if attr in ("size", "scenario") else getattr(fx.steps[0], attr)
    assert got == value


def test_load_file_with_bom(tmp_path):
    path = tmp_path / "bom.keys"
    path.write_bytes("\ufeffsize 80x24\nkeys g\n".encode())
    fx = load(path)
    assert fx.size == (80, 24)
    assert fx.steps == [Step(2, "keys", "g", keys=("g",))]
    assert fx.source == str(path)


def test_load_utf8_text(tmp_path):
    path = tmp_path / "u.keys"
    path.write_text("caption Gerät → dmar1\nexpect €\n", encoding="utf-8")
    assert [s.arg for s in load(path).steps] == ["Gerät → dmar1", "€"]


def test_scenario_relative_path(tmp_path):
    toml = resources.files("vtdtui.scenarios").joinpath("desktop.toml").read_bytes()
    (tmp_path / "mine.toml").write_bytes(toml)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.toml").write_bytes(toml)
    path = tmp_path / "f.keys"
    path.write_text("# header\nscenario mine.toml\n")
    fx = load(path)
    assert (fx.scenario, fx.scenario_line) == (str(tmp_path / "mine.toml"), 2)
    path.write_text("scenario sub/other.toml\n")
    assert load(path).scenario == str(tmp_path / "sub" / "other.toml")
    # Relative to the fixture's folder, not the current directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "g.keys").write_text("scenario mine.toml\n")
    with pytest.raises(FixtureError, match="no such scenario 'mine.toml'"):
        load(elsewhere / "g.keys")


def test_scenario_absolute_path(tmp_path):
    toml = tmp_path / "abs.toml"
    toml.write_bytes(resources.files("vtdtui.scenarios").joinpath("server.toml").read_bytes())
    assert parse(f"scenario {toml}", SRC).scenario == str(toml)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("text, line, phrase", [
    # unknown directives, with did-you-mean
    ("kyes g", 1, "unknown directive 'kyes'"),
    ("keys g\nexpcet x", 2, "did you mean 'expect'?"),
    ("Keys g", 1, "did you mean 'keys'?"),
    ("\n\nsnap shot", 3, "expected one of size, scenario, caption, keys, type, pause, expect, snapshot"),
    ("zzzzzz", 1, "unknown directive 'zzzzzz'"),
    # unknown key names, with did-you-mean
    ("keys g entr", 1, "unknown key name 'entr' (did you mean 'enter'?)"),
    ("# c\nkeys escpe", 2, "did you mean 'escape'?"),
    ("keys ctrl+", 1, "unknown key name 'ctrl+'"),
    ("keys foo+a", 1, "unknown key name 'foo+a'"),
    ("keys ctrl+ctrl+a", 1, "a modifier twice"),
    ("keys Enter", 1, "unknown key name 'Enter'"),
    # sizes: format
    ("size", 1, "size wants a value, e.g. 'size 160x50'"),
    ("size 160", 1, "size wants WIDTHxHEIGHT, e.g. 'size 160x50', not '160'"),
    ("size 160x", 1, "size wants WIDTHxHEIGHT"),
    ("size x50", 1, "size wants WIDTHxHEIGHT"),
    ("size -80x24", 1, "size wants WIDTHxHEIGHT"),
    ("size 80.5x24", 1, "size wants WIDTHxHEIGHT"),
    ("size 80x24x2", 1, "size wants WIDTHxHEIGHT"),
    ("size big", 1, "not 'big'"),
    # sizes: range
    (f"size {MIN_SIZE[0] - 1}x{MIN_SIZE[1]}", 1, "is out of range (40x12 to 500x200)"),
    (f"size {MIN_SIZE[0]}x{MIN_SIZE[1] - 1}", 1, "out of range"),
    (f"size {MAX_SIZE[0] + 1}x{MAX_SIZE[1]}", 1, "out of range"),
    (f"size {MAX_SIZE[0]}x{MAX_SIZE[1] + 1}", 1, "out of range"),
    ("size 0x0", 1, "size 0x0 is out of range"),
    # scenarios
    ("scenario", 1, "scenario wants a value, e.g. 'scenario desktop'"),
    ("scenario laptop", 1, "no such scenario 'laptop' (built-in: desktop, viommu, server"),
    ("scenario nowhere/x.toml", 1, "or a .toml file next to the fixture"),
    ("scenario Desktop", 1, "no such scenario 'Desktop'"),
    # headers after the first key, headers twice
    ("keys g\nsize 80x24", 2, "size is a header and must come before the first key (line 1)"),
    ("caption c\ntype ab\nscenario server", 3, "must come before the first key (line 2)"),
    ("size 80x24\nsize 90x30", 2, "size given twice (first on line 1)"),
    ("scenario desktop\n\nscenario server", 3, "scenario given twice (first on line 1)"),
    # empty arguments
    ("keys", 1, "keys wants key names, e.g. 'keys g 3 enter a'"),
    ("keys   # nothing", 1, "keys wants key names"),
    ("type", 1, "type wants text, e.g. 'type 0x100000 64K rw'"),
    ("type # only a comment", 1, "type wants text"),
    ("caption", 1, "caption wants text, e.g. 'caption Attach the NIC with CM off'"),
    ("expect   ", 1, "expect wants text, e.g. 'expect CM=1'"),
    ("type a\tb", 1, "unprintable character '\\t'"),
    # pauses
    ("pause", 1, "pause wants seconds from 0 to 600, e.g. 'pause 1.5', not ''"),
    ("pause -1", 1, "not '-1'"),
    ("pause -0.001", 1, "pause wants seconds"),
    ("pause nan", 1, "not 'nan'"),
    ("pause inf", 1, "not 'inf'"),
    ("pause -inf", 1, "pause wants seconds"),
    ("pause soon", 1, "not 'soon'"),
    ("pause 1.5s", 1, "not '1.5s'"),
    (f"pause {MAX_PAUSE + 0.5:g}", 1, "pause wants seconds from 0 to 600"),
    ("pause 1e9", 1, "pause wants seconds"),
    # snapshot names
    ("snapshot", 1, "snapshot wants a file name of letters, digits, '.', '-', '_' (up to 64)"),
    ("snapshot a/b", 1, "not 'a/b'"),
    ("snapshot a\\b", 1, "snapshot wants a file name"),
    ("snapshot ../up", 1, "snapshot wants a file name"),
    ("snapshot /abs", 1, "snapshot wants a file name"),
    ("snapshot .hidden", 1, "snapshot wants a file name"),
    ("snapshot two words", 1, "snapshot wants a file name"),
    ("snapshot " + "x" * 65, 1, "(up to 64)"),
    ("snapshot one\nkeys g\nsnapshot one", 3, "snapshot 'one' already taken on line 1"),
])
def test_error(text, line, phrase):
    msg = _error(text)
    assert msg.startswith(f"{SRC}:{line}: "), msg
    assert phrase in msg, msg


def test_error_is_a_value_error():
    assert issubclass(FixtureError, ValueError)


def test_snapshot_name_of_64_is_fine():
    assert parse("snapshot " + "x" * 64, SRC).steps[0].arg == "x" * 64


def test_headers_may_follow_captions_and_pauses():
    fx = parse("caption intro\npause 1\nsize 80x24\nscenario server\nkeys g", SRC)
    assert (fx.size, fx.scenario) == ((80, 24), "server")


@pytest.mark.parametrize("sep", ["\u2028", "\x0c", "\x85"])
def test_line_numbers_count_only_newlines(sep):
    # An editor shows two lines here; the bad key is on line 2.
    text = f"caption one{sep}# two\nkeys entr\n"
    msg = _error(text)
    assert msg.startswith(f"{SRC}:2: "), msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.keys"
    with pytest.raises(FixtureError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "No such file" in str(info.value)


def test_directory_is_not_a_fixture(tmp_path):
    with pytest.raises(FixtureError) as info:
        load(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


@pytest.mark.parametrize("data, line, byte", [
    (b"\xffsize 80x24\n", 1, "0xff"),
    (b"size 80x24\nkeys g\ncaption caf\xe9\n", 3, "0xe9"),
    (b"keys g\r\n\r\nexpect \xc3\nkeys g\n", 3, "0xc3"),  # a cut multi-byte sequence
    (b"\xef\xbb\xbfkeys g\nexpect \x80\n", 2, "0x80"),
])
def test_load_not_utf8(tmp_path, data, line, byte):
    path = tmp_path / "bad.keys"
    path.write_bytes(data)
    with pytest.raises(FixtureError) as info:
        load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert "not UTF-8" in msg and byte in msg


def test_load_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "x.keys"
    path.write_text("size 80x24\n\nkeys g entr\n")
    with pytest.raises(FixtureError, match=r"x\.keys:3: unknown key name 'entr'"):
        load(path)
