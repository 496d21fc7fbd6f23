"""The fixtures shipped with the package: found by name from any directory, listed with
their stories; `--size` and the size warning of a paced replay."""

from __future__ import annotations

import asyncio
import glob
import textwrap
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from vtdtui.cli import main
from vtdtui.machine import Machine
from vtdtui.replay import parse
from vtdtui.replay.library import names, parse_size, resolve, shipped, story
from vtdtui.tui.app import WIDE, VtdApp
from vtdtui.tui.replayer import Replayer, size_warning

ROOT = Path(__file__).resolve().parent.parent
SOURCE = sorted(p.stem for p in (ROOT / "fixtures").glob("*.keys"))


# ------------------------------------------------------------ shipped with the package
def test_every_fixture_of_the_repository_ships_in_the_package():
    # importlib.resources reads the installed package: under .ci/run that is the wheel.
    folder = resources.files("vtdtui.fixtures")
    assert names() == SOURCE and "virtio-noncoherent" in SOURCE
    for name in SOURCE:
        shipped_bytes = folder.joinpath(f"{name}.keys").read_bytes()
        assert shipped_bytes == (ROOT / "fixtures" / f"{name}.keys").read_bytes()


def test_the_wheel_takes_the_fixtures_as_package_data():
    # What setuptools puts in the wheel: the package-data patterns of pyproject.toml,
    # matched from the package's folder (vtdtui/fixtures links to fixtures/).
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vtdtui"]
    package = ROOT / "vtdtui"  # the source tree (the installed package may be a built copy)
    matched = {Path(f).resolve() for pattern in conf for f in glob.glob(str(package / pattern))}
    for name in SOURCE:
        assert (ROOT / "fixtures" / f"{name}.keys").resolve() in matched, name


def test_replay_by_name_from_another_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "state.json"
    assert main(["replay", "virtio-noncoherent", "--headless", "--json", str(out)]) == 0, capsys.readouterr().err
    assert '"virtio_noncoherent": true' in out.read_text()
    assert Path(resolve("caching-mode.keys")).name == "caching-mode.keys"


def test_a_file_of_that_name_wins_over_the_shipped_fixture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "caching-mode").write_text("keys m\n")
    assert resolve("caching-mode") == "caching-mode"
    assert resolve(str(ROOT / "fixtures" / "tour.keys")) == str(ROOT / "fixtures" / "tour.keys")


def test_an_unknown_name_is_one_line_with_a_suggestion(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["replay", "cachng-mode", "--headless"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'cachng-mode'" in err and "did you mean 'caching-mode'?" in err
    assert main(["replay", "zzz", "--headless"]) == 2
    assert "shipped: caching-mode," in capsys.readouterr().err
    assert main(["replay", "--headless"]) == 2
    assert "required: FIXTURE (a .keys file, or the name of a shipped one" in capsys.readouterr().err


def test_list_names_each_shipped_fixture_with_its_story(capsys):
    assert main(["replay", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == SOURCE
    gpu = next(line for line in lines if line.startswith("integrated-gpu "))
    assert "160x50 desktop" in gpu and "The integrated GPU. Group 0 (00:02.0) sits behind dmar0" in gpu
    assert main(["replay", "--list", "tour"]) == 2


def test_story_is_the_first_comment_block_else_the_first_caption():
    assert story("# One.\n#  Two.\nsize 80x24\n# later\ncaption c\n") == "One. Two."
    assert story("\nscenario desktop\ncaption Attach it\nkeys a\n") == "Attach it"
    assert story("keys a\n") == ""
    assert all(f.story for f in shipped())


# ------------------------------------------------------------ --size
def test_parse_size_is_bounded():
    assert parse_size("120x40") == (120, 40) and parse_size("80X24") == (80, 24)
    for bad in ("120", "x40", "39x12", "120x201", "-1x5", "1e3x40", "9" * 20 + "x1"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_size_replays_headless_at_the_size_given(tmp_path, capsys):
    # The one-pane layout's tab strip is on screen only below the talk layout's size.
    fx = tmp_path / "narrow.keys"
    fx.write_text("size 160x50\ncaption c\nexpect 1-7 switch\n")
    assert main(["replay", str(fx), "--headless"]) == 1
    capsys.readouterr()
    assert main(["replay", str(fx), "--headless", "--size", f"{WIDE[0] - 50}x30"]) == 0, capsys.readouterr().err
    assert main(["replay", str(fx), "--headless", "--size", "20x5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--size: 20x5 is out of range" in err


def test_size_warning_names_both_sizes_the_layout_and_the_command():
    assert size_warning((160, 50), (160, 50), "caching-mode") == ""
    assert size_warning((200, 60), (160, 50), "caching-mode") == ""
    narrow = size_warning((120, 40), (160, 50), "caching-mode")
    assert "terminal is 120x40" in narrow and "160x50" in narrow and "the 120x40 talk layout" in narrow
    tiny = size_warning((80, 24), (160, 50), "caching-mode")
    assert "one pane at a time" in tiny and tiny.endswith("--size 80x24")
    assert narrow.endswith("vtdtui replay caching-mode --headless --size 120x40")
    roomy = size_warning((WIDE[0] + 5, 60), (160, 50), "my talk.keys")
    assert "all panes still fit" in roomy and roomy.endswith(f"'my talk.keys' --headless --size {WIDE[0] + 5}x50")
    assert "\n" not in narrow


async def test_a_paced_replay_warns_on_screen_when_the_terminal_is_smaller():
    fx = parse(textwrap.dedent("""\
        size 160x50
        caption one
        keys m
    """), "talk.keys")
    m = Machine.from_scenario("desktop")
    r = Replayer(fx, headless=False, speed=50)
    app = VtdApp(m, replayer=r)
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.wait_for(r.run(app), 20)
        await pilot.pause()
        said = [n.message for n in app._notifications]
        assert any("terminal is 120x40" in s and "--size 120x40" in s for s in said), said
