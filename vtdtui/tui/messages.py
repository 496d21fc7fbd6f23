"""How the panes, screens and palette talk to the app without importing it.

They read what the app holds through `Host` (a Protocol: the app is never named), and
ask it for anything through these messages, which bubble up to it.  So the app
imports its widgets and no widget imports the app: no import circle (tests/test_layers.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from textual.message import Message

if TYPE_CHECKING:
    from ..machine import Machine
    from ..replay import Recorder


class Host(Protocol):
    """What a widget may read from the app it runs in."""

    machine: Machine
    version: int  # bumped by every state change; a pane redoes its view when behind

    @property
    def recorder(self) -> Recorder | None: ...


class Say(Message):
    """Put a line on the status line."""

    def __init__(self, text: str, error: bool = False) -> None:
        super().__init__()
        self.text, self.error = text, error


class RunCommand(Message):
    """Run one machine command, as typed at the `:` prompt."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


class RunAction(Message):
    """Run one of the app's actions (a key's), as if its key was pressed."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action


class OpenPageTables(Message):
    """Drill down from a context entry to that device's page tables."""

    def __init__(self, unit: str, sid: int) -> None:
        super().__init__()
        self.unit, self.sid = unit, sid


class BackToTables(Message):
    """Leave the page tables of a device opened by drill-down: back to the tables pane."""


class OpenEvent(Message):
    """Enter on a journal row: show that event whole (`index` into the journal's events)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
