"""What each prompt asks for, checked as the user types, and the command it becomes.

The check is syntax only (numbers, sizes, alignment, permissions); the machine has
the last word when the command runs, and its refusal is shown in the prompt.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from collections.abc import Callable

from ..machine import COMMANDS, USAGE
from ..machine.parse import fmt_size, parse_access, parse_int, parse_perms, parse_size
from .journal import FilterError, JournalFilter


def _iova(text: str) -> int:
    iova = parse_int(text, "IOVA")
    if iova & 0xFFF:
        raise ValueError(f"IOVA {iova:#x} is not 4 KiB aligned (try {iova & ~0xFFF:#x})")
    return iova


def _size(text: str) -> int:
    size = parse_size(text)
    if size == 0 or size & 0xFFF:
        raise ValueError(f"size {text} must be a non-zero multiple of 4K")
    return size


def _check_group(words: list[str]) -> str:
    return f"select group {parse_int(words[0], 'group')}"


def _check_map(words: list[str]) -> str:
    iova, size = _iova(words[0]), _size(words[1])
    r, w = parse_perms(words[2] if len(words) > 2 else None)
    return f"map {iova:#x}+{fmt_size(size)} {'r' if r else ''}{'w' if w else ''}"


def _check_unmap(words: list[str]) -> str:
    iova, size = _iova(words[0]), _size(words[1])
    return f"unmap {iova:#x}+{fmt_size(size)}"


def _check_dma(words: list[str]) -> str:
    iova = parse_int(words[0], "IOVA")
    write = parse_access(words[1] if len(words) > 1 else None)
    return f"DMA {'write' if write else 'read'} at {iova:#x}"


def _check_command(words: list[str]) -> str:
    """While the arguments are short of the usage, say the usage; once they fit, say
    what Enter runs (the machine checks their values)."""
    verb = words[0].lower()
    if verb not in COMMANDS:
        raise ValueError(f"unknown command {verb!r} (commands: {', '.join(COMMANDS)})")
    params = USAGE[verb].split()[1:]
    required = sum(not p.startswith("[") for p in params)
    if len(words) - 1 < required:
        return f"usage: {USAGE[verb]}"
    if len(words) - 1 > len(params):
        raise ValueError(f"too many arguments: usage: {USAGE[verb]}")
    return "runs: " + " ".join(words)


@dataclass(frozen=True)
class PromptSpec:
    title: str
    usage: str
    min_args: int
    max_args: int
    check: Callable[[list[str]], str]
    template: str  # the machine command; {g} is the selected group, {text} the input

    def validate(self, text: str) -> tuple[bool, str]:
        """(ok, hint): the hint says what will happen or what is wrong."""
        try:
            words = shlex.split(text)
        except ValueError as exc:
            return False, str(exc)
        if not self.min_args <= len(words) <= self.max_args:
            return False, f"expected {self.usage}"
        try:
            return True, self.check(words)
        except ValueError as exc:
            return False, str(exc.args[0] if exc.args else exc)

    def command(self, text: str, group: int) -> str:
        return self.template.format(g=group, text=text.strip())


PROMPTS = {
    "group": PromptSpec("Select a group", "N (a group number)", 1, 1, _check_group, "select-group {text}"),
    "map": PromptSpec("Map into the group's domain", "IOVA SIZE [r|w|rw]   e.g. 0x100000 64K rw", 2, 3, _check_map,
                      "map {g} {text}"),
    "unmap": PromptSpec("Unmap from the group's domain", "IOVA SIZE   e.g. 0x100000 64K", 2, 2, _check_unmap,
                        "unmap {g} {text}"),
    "dma": PromptSpec("DMA from the group's first device", "IOVA [r|w]   e.g. 0x100000 w", 1, 2, _check_dma,
                      "dma {g} {text}"),
    "command": PromptSpec("Run a machine command", "COMMAND ARGS   e.g. set reuse prefer-reuse", 1, 8, _check_command,
                          "{text}"),
}


def check_filter(text: str) -> tuple[bool, str]:
    if not text.strip():
        return True, "empty: clear the filters"
    try:
        return True, "filter: " + JournalFilter.parse(text).describe()
    except FilterError as exc:
        return False, str(exc)
