"""The prompt and the footer restyle only what changed (counts, never times).

Re-opening the installed prompt screen restyles it whole only when the stylesheet,
the theme or an app pseudo-class changed since it was last styled; Textual's
FooterKeys are born with the footer's compact value, not restyled twice each."""

from __future__ import annotations

from textual.widgets._footer import FooterKey

from vtdtui.tui.footer import KeyFooter
from vtdtui.tui.prompt import PromptScreen

from tuikit import started


def _count_screen_restyles(monkeypatch, screen_type):
    calls = []
    orig = screen_type.update_node_styles

    def spy(self, animate=True):
        if isinstance(self, screen_type):
            calls.append(self)
        return orig(self, animate=animate)

    monkeypatch.setattr(screen_type, "update_node_styles", spy)
    return calls


async def test_reopened_prompt_is_not_restyled_whole(monkeypatch):
    async with started() as (app, pilot):
        await pilot.press("g", "escape")
        await pilot.pause()
        calls = _count_screen_restyles(monkeypatch, PromptScreen)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        assert calls == []  # nothing it is styled by changed
        dark = app.screen.query_one("#prompt").styles.background
        await pilot.press("escape")
        await pilot.pause()
        app.theme = "textual-light"  # a theme change: the next prompt is restyled
        await pilot.pause()
        await pilot.press("g")
        await pilot.pause()
        assert len(calls) == 1
        assert app.screen.query_one("#prompt").styles.background != dark  # the light theme's colours


async def test_footer_keys_take_the_footers_compact_value():
    async with started() as (app, pilot):
        footer = app.main.query_one(KeyFooter)
        for size, compact in (((160, 50), False), ((120, 40), True), ((160, 50), False)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            assert footer.compact is compact
            keys = list(footer.query(FooterKey))
            assert keys
            for k in keys:
                want = True if k.has_class("-command-palette") else compact  # the palette key is not bound
                assert k.compact is want and k.has_class("-compact") is want, k.key
