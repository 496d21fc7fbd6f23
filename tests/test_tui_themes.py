"""Themes: every pane takes its colours from the Textual theme (light ones too), the
projector theme, --theme, config.toml (theme and [keys]), and SVGs that render offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.color import Color
from textual.theme import BUILTIN_THEMES

from vtdtui.cli import main
from vtdtui.machine import Machine
from vtdtui.tui import config as cfg
from vtdtui.tui.app import VtdApp
from vtdtui.tui.panes import JournalPane, RegistersPane
from vtdtui.tui.svg import offline_svg
from vtdtui.tui.theme import DEFAULT_THEME, PROJECTOR, THEME, VTDTUI, theme_names, token_styles, vtd_variables
from vtdtui.views.style import TOKENS

# The fixed colours the panes had before themes: none may be left under a light theme.
OLD_DARK = ("#0d1117", "#161b22", "#1f2a37", "#262c36", "#2f4f7a", "#3d4651", "#484f58", "#1f3a5f")


def variables(theme) -> dict[str, str]:
    return theme.to_color_system().generate() | theme.variables


def luminance(hex_colour: str) -> float:
    return Color.parse(hex_colour).brightness


# ------------------------------------------------------------ token styles
def test_every_token_has_a_style_in_every_theme():
    for name, theme in {**BUILTIN_THEMES, PROJECTOR.name: PROJECTOR, VTDTUI.name: VTDTUI}.items():
        styles = token_styles(variables(theme))
        missing = [t for t in TOKENS if t not in styles]
        assert not missing, f"{name}: no style for {missing} (tui/theme.py TOKEN_VARS)"
        assert styles["cursor"].bgcolor is not None or styles["cursor"].reverse, name


def test_the_default_theme_keeps_the_old_colours():
    # Talks made with vtdtui keep their look: the default is the old fixed palette.
    assert DEFAULT_THEME == "vtdtui"
    s = token_styles(variables(VTDTUI))
    assert s[""].color.name == "#e6edf3" and s["issued"].color.name == "#56d364" and s["issued"].bold
    assert s["skipped"].color.name == "#e3b341" and s["sel"].bgcolor.name == "#ffd866"
    assert s["cursor"].bgcolor.name == "#2f4f7a" and s == THEME


def test_a_light_theme_gets_dark_text_and_readable_badges():
    v = vtd_variables(variables(BUILTIN_THEMES["textual-light"]))
    assert luminance(v["vtd-background"]) > 0.7
    s = token_styles(v)
    for token in ("", "head", "issued", "skipped", "bad", "addr", "key"):
        assert s[token].color.triplet is not None and sum(s[token].color.triplet) / 3 < 170, token
    on = s["badge-on"]
    assert abs(sum(on.color.triplet) - sum(on.bgcolor.triplet)) > 200  # text that reads on its badge


def test_the_projector_theme_is_light_and_its_tokens_far_apart():
    s = token_styles(variables(PROJECTOR))
    assert not PROJECTOR.dark and luminance(PROJECTOR.variables["vtd-background"]) == 1.0
    colours = {t: s[t].color.triplet for t in ("issued", "skipped", "bad", "head", "key")}
    names = list(colours)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            dist = sum((x - y) ** 2 for x, y in zip(colours[a], colours[b])) ** 0.5
            assert dist > 100, (a, b, dist)


def test_an_ansi_theme_keeps_a_visible_cursor():
    s = token_styles(variables(BUILTIN_THEMES["ansi-dark"]))
    assert s["cursor"].reverse


# ------------------------------------------------------------ on screen
def _bg(widget) -> str:
    return widget.styles.background.hex


async def test_a_light_theme_turns_every_pane_light():
    m = Machine.from_scenario("desktop")
    for line in ("attach 0", "map 0 0x100000 64K rw", "dma 0 0x100000"):
        m.execute(line)
    app = VtdApp(m, theme="textual-light")
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        for w in [*app.panes, app.main.query_one("#context"), app.main.query_one("#status"), app.screen]:
            assert luminance(_bg(w)) > 0.6, f"{w}: {_bg(w)}"
        # Every cell: no old dark colour, no dark background anywhere but badges and cursors.
        svg = app.export_screenshot()
        used = set(re.findall(r"#[0-9a-fA-F]{6}", svg.lower()))
        assert not used & set(OLD_DARK), used & set(OLD_DARK)
        # The cells' backgrounds (the window frame Rich draws around them is no pane).
        rects = re.findall(r'<rect fill="(#[0-9a-fA-F]{6})"[^>]*width="([\d.]+)"[^>]*crispEdges', svg)
        dark = [(c, w) for c, w in rects if luminance(c) < 0.35 and float(w) > 200]
        assert rects and not dark, dark[:5]


async def test_switching_the_theme_repaints_the_panes():
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        regs = app.main.query_one(RegistersPane)
        before = {seg.style.color for seg in regs.render_line(0) if seg.style and seg.style.color}
        app.theme = "vtdtui-projector"
        await pilot.pause()
        await pilot.pause()
        after = {seg.style.color for seg in regs.render_line(0) if seg.style and seg.style.color}
        assert before and after and before != after
        assert luminance(_bg(regs)) == 1.0
        journal = app.main.query_one(JournalPane)
        assert journal.palette is not THEME


async def test_the_what_if_badge_shows_while_a_what_if_is_on():
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        context = lambda: str(app.main.query_one("#context").render())  # noqa: E731
        assert "WHAT-IF" not in context()
        await pilot.press("w")
        await pilot.pause()
        assert "WHAT-IF: skip-clflush" in context()
        await pilot.press("i")
        await pilot.pause()
        assert "WHAT-IF: skip-clflush · skip-invalidation" in context()
        await pilot.press("w", "i")
        await pilot.pause()
        assert "WHAT-IF" not in context()


async def test_V_plays_the_virtio_story():
    m = Machine.from_scenario("desktop")
    app = VtdApp(m)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        assert m.option_value("virtio-noncoherent") == "off"
        await pilot.press("V")
        await pilot.pause()
        assert m.option_value("virtio-noncoherent") == "on"
        await pilot.press("V")
        await pilot.pause()
        assert m.option_value("virtio-noncoherent") == "off"


# ------------------------------------------------------------ config.toml
def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vtdtui" / "config.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_config_path_follows_xdg(tmp_path):
    assert cfg.config_path({"XDG_CONFIG_HOME": str(tmp_path), "HOME": "/h"}) == tmp_path / "vtdtui" / "config.toml"
    assert cfg.config_path({"XDG_CONFIG_HOME": "relative", "HOME": "/h"}) == Path("/h/.config/vtdtui/config.toml")
    assert cfg.config_path({"HOME": "/h"}) == Path("/h/.config/vtdtui/config.toml")


def test_config_theme_and_keys(tmp_path):
    p = write(tmp_path, 'theme = "vtdtui-projector"\n[keys]\ntoggle-cm = "M"\nzoom = ["z", "Z"]\nhelp = "?,f1"\n')
    c = cfg.load(p)
    assert c.theme == "vtdtui-projector"
    assert c.keymap == {"toggle-cm": "M", "zoom": "z,Z", "help": "question_mark,f1"}
    assert cfg.settings(None, path=p) == ("vtdtui-projector", c.keymap)
    assert cfg.settings("nord", path=p)[0] == "nord"  # --theme wins
    assert cfg.settings(None, config=False, path=p) == (DEFAULT_THEME, {})
    assert cfg.load(tmp_path / "none.toml").keymap == {}


@pytest.mark.parametrize("text, where, what", [
    ('theme = "vtdtui-projektor"\n', ":1:", "did you mean 'vtdtui-projector'"),
    ('\n\ncolour = "x"\n', ":3:", "unknown setting 'colour'"),
    ('[keys]\ntoggle-cn = "M"\n', ":2:", "no such binding id (did you mean 'toggle-c"),
    ('[keys]\ntoggle-cm = "notakey"\n', ":2:", "unknown key name 'notakey'"),
    ('[keys]\ntoggle-cm = "c"\n', ":2:", "also toggle-c's"),
    ('[keys]\nzoom = "up"\n', ":2:", "kept for"),
    ('[keys]\nzoom = 3\n', ":2:", "wants a key name"),
    ('theme = [\n', ":1:", "not TOML"),
    ('keys = 1\n', ":1:", "must be a table"),
])
def test_bad_config_is_one_line_naming_file_and_line(tmp_path, text, where, what):
    p = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as exc:
        cfg.load(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}{where}") and what in msg and "\n" not in msg


def test_every_binding_id_is_remappable_and_the_help_shows_the_new_key():
    from vtdtui.tui.bindings import ACTIONS, help_rows

    ids = cfg.remappable()
    assert {a.id for a in ACTIONS if a.action} <= set(ids) and "next-pane" in ids
    rows = dict(help_rows({"toggle-cm": "M"}))
    assert rows["M"].endswith("[toggle-cm]") and "m" not in rows


async def test_a_keymap_moves_the_key():
    m = Machine.from_scenario("desktop")
    app = VtdApp(m, keymap={"toggle-cm": "M"})
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        cm = m.units[m.selected_unit].cm
        await pilot.press("m")
        await pilot.pause()
        assert m.units[m.selected_unit].cm == cm
        await pilot.press("M")
        await pilot.pause()
        assert m.units[m.selected_unit].cm != cm
        # The palette names the key where it is now, not where it was.
        from vtdtui.tui.palette import VtdCommands

        keys = {title: key for title, key, _ in VtdCommands(app.main, None)._entries()}
        assert keys["Toggle CAP.CM (caching mode) of the selected unit"] == "key M"


def test_cli_theme_is_checked(capsys):
    assert main(["--theme", "nope", "--scenario", "desktop"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--theme: no theme 'nope'" in err and "vtdtui-projector" in err
    assert main(["replay", "caching-mode", "--headless", "--theme", "nope"]) == 2
    assert "--theme: no theme 'nope'" in capsys.readouterr().err
    assert main(["serve", "--theme", "textual-lite"]) == 2
    assert "did you mean 'textual-light'" in capsys.readouterr().err
    assert main(["--theme", "nord", "replay", "caching-mode"]) == 2
    assert "give it after the subcommand" in capsys.readouterr().err


def test_cli_bad_config_file_is_refused_before_the_app(tmp_path, capsys, monkeypatch):
    p = write(tmp_path, '[keys]\nnope = "x"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["--scenario", "desktop"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{p}:2: [keys] nope: no such binding id" in err
    # A headless replay reads no config: CI is the same on every machine.
    fx = tmp_path / "t.keys"
    fx.write_text("size 120x40\nkeys m\nexpect CM 1\n")
    assert main(["replay", str(fx), "--headless"]) == 0


def test_theme_names_lists_ours_first():
    names = theme_names()
    assert names[:2] == ["vtdtui", "vtdtui-projector"] and "textual-light" in names


# ------------------------------------------------------------ SVGs offline
def _style(svg: str) -> str:
    return svg[svg.index("<style>"):svg.index("</style>")]


def test_offline_svg_names_local_fonts_and_turns_ligatures_off():
    raw = '<svg><style>\n    @font-face {\n        font-family: "Fira Code";\n        src: local("FiraCode-Regular"),\n' \
          '                url("https://cdn/x.woff2") format("woff2");\n    }\n    .t-matrix {\n' \
          '        font-family: Fira Code, monospace;\n        font-size: 20px;\n    }\n    .t-title {\n' \
          '        font-family: arial;\n    }\n</style><text>url(https://x) 0x1000 -&gt;</text></svg>'
    out = offline_svg(raw)
    style = _style(out)
    assert "@font-face" not in style and "https://" not in style and "Fira" not in style
    assert '"DejaVu Sans Mono"' in style and "monospace" in style and "Consolas" in style
    assert "font-variant-ligatures: none" in style and '"liga" 0' in style and '"calt" 0' in style
    assert "sans-serif" in style
    assert "<text>url(https://x) 0x1000 -&gt;</text>" in out  # the screen's text is untouched


def test_replay_svgs_render_offline(tmp_path):
    fx = tmp_path / "shot.keys"
    fx.write_text("size 100x30\nkeys m\nsnapshot after-m\n")
    out = tmp_path / "svg"
    assert main(["replay", str(fx), "--headless", "--svg-dir", str(out), "--theme", "vtdtui-projector"]) == 0
    for name in ("after-m.svg", "shot-end.svg"):
        svg = (out / name).read_text()
        style = _style(svg)
        assert "@font-face" not in style and "cdnjs" not in svg and "font-variant-ligatures: none" in style
        assert "#ffffff" in svg.lower() and "#0d1117" not in svg.lower()  # the projector theme


async def test_ctrl_s_screenshot_renders_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = VtdApp(Machine.from_scenario("desktop"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
    shots = list(tmp_path.glob("*.svg"))
    assert len(shots) == 1
    style = _style(shots[0].read_text())
    assert "@font-face" not in style and "font-variant-ligatures: none" in style


async def test_the_help_screen_follows_the_theme():
    from rich.table import Table

    from vtdtui.tui.help import HelpScreen

    app = VtdApp(Machine.from_scenario("desktop"), theme="vtdtui-projector")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        tables = [w.content for w in app.screen.query("Static")]
        heads = [t.columns[0].style for t in tables if isinstance(t, Table)]
        assert heads and heads[0].color.name == PROJECTOR.variables["vtd-head"]


def test_serve_passes_the_theme_to_every_session(monkeypatch):
    import vtdtui.tui.serve

    seen = []
    monkeypatch.setattr(vtdtui.tui.serve, "run", lambda host, port, args: seen.append(args) or 0)
    assert main(["serve", "--theme", "vtdtui-projector", "--", "replay", "caching-mode"]) == 0
    assert main(["serve", "--theme", "nord", "--", "--scenario", "viommu"]) == 0
    assert seen == [["replay", "--theme", "vtdtui-projector", "caching-mode"],
                    ["--theme", "nord", "--scenario", "viommu"]]
