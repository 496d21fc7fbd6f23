"""Helpers for the TUI tests: start the app on a scenario, type into prompts, read panes."""

from __future__ import annotations

import errno
from contextlib import asynccontextmanager

from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp
from vtdtui.tui.prompt import PromptScreen
from vtdtui.views.style import text_of

TALK = (160, 50)
SMALL = (80, 24)


class FullDisk:
    """The session log's file on a disk that fills up (ENOSPC) until `full` is reset."""

    def __init__(self, f) -> None:
        self.f, self.full = f, True

    def write(self, data) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


@asynccontextmanager
async def started(scenario: str = "desktop", size=TALK, *, commands=()):
    m = Machine.from_scenario(scenario)
    for c in commands:
        m.execute(c)
    app = VtdApp(m)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        yield app, pilot


async def prompt(pilot, key: str, text: str, submit: bool = True) -> None:
    """Open a prompt with `key`, type `text`, press Enter."""
    await pilot.press(key)
    await pilot.pause()
    assert isinstance(pilot.app.screen, PromptScreen), f"{key} did not open a prompt"
    await pilot.press(*[_key(ch) for ch in text])
    if submit:
        await pilot.press("enter")
    await pilot.pause()


def _key(ch: str) -> str:
    return {" ": "space", ":": "colon", "/": "slash", "=": "equals_sign", "+": "plus", "-": "minus",
            ".": "full_stop", "_": "underscore"}.get(ch, ch)


def hint(app) -> str:
    return str(app.screen.query_one("#prompt-hint").render())


def status(app) -> str:
    return app.last_status


def pane_text(pane) -> list[str]:
    return [text_of(line) for line in pane.header] + [text_of(pane.rows[i]) for i in range(len(pane.rows))]


def journal_ops(app) -> list[tuple[str, str]]:
    return [(e.op, e.outcome) for e in app.machine.journal.events]
