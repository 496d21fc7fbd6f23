"""The key table: one row per key, behind the bindings, the footer, the help screen
and the command palette alike, so that they never disagree."""

from __future__ import annotations

from typing import NamedTuple

from textual.binding import Binding

# The key that starts and stops recording; it is not itself recorded.
RECORD_KEY = "R"


class KeyAction(NamedTuple):
    key: str          # Textual's key name, or a description for keys the panes handle
    action: str       # "" for a row that only documents keys (help screen)
    short: str        # the footer's word
    description: str  # the help screen's and the palette's sentence
    show: bool        # in the footer
    id: str = ""      # Binding id: what a keymap (App.set_keymap) names to remap the key


ACTIONS: tuple[KeyAction, ...] = (
    KeyAction("m", "toggle('CM')", "CM", "Toggle CAP.CM (caching mode) of the selected unit", True, "toggle-cm"),
    KeyAction("c", "toggle('C')", "C", "Toggle ECAP.C (page-walk coherency) of the selected unit", True, "toggle-c"),
    KeyAction("s", "toggle('SC')", "SC", "Toggle ECAP.SC (snoop control) of the selected unit", True, "toggle-sc"),
    KeyAction("]", "command('next-unit')", "unit", "Select the next unit", True, "next-unit"),
    KeyAction("[", "command('prev-unit')", "unit", "Select the previous unit", False, "prev-unit"),
    KeyAction("g", "prompt('group')", "group", "Select a group (prompt for its number)", True, "group"),
    KeyAction("a", "group_command('attach')", "attach", "Attach the selected group", True, "attach"),
    KeyAction("d", "group_command('detach')", "detach", "Detach the selected group", True, "detach"),
    KeyAction("n", "prompt('map')", "map", "Map IOVA SIZE [r|w|rw] into the selected group's domain", True, "map"),
    KeyAction("x", "prompt('unmap')", "unmap", "Unmap IOVA SIZE from the selected group's domain", True, "unmap"),
    KeyAction("t", "prompt('dma')", "DMA", "DMA from the selected group's first device (IOVA [r|w])", True, "dma"),
    KeyAction("u", "undo", "undo", "Undo the last command", True, "undo"),
    KeyAction("ctrl+r", "redo", "redo", "Redo the last undone command", False, "redo"),
    KeyAction("colon", "prompt('command')", "command", "Run any machine command (e.g. set lazy off)", True,
              "command"),
    KeyAction("o", "cycle_outcome", "outcome", "Journal: show all / issued / skipped", False, "journal-outcome"),
    KeyAction("slash", "journal_filter", "filter", "Journal: filter by op, unit, actor, rule", False,
              "journal-filter"),
    KeyAction("F", "journal_search", "find", "Journal: find text or /regex/ in the events (N next, B previous)",
              False, "journal-search"),
    KeyAction("N", "journal_next(1)", "next", "Journal: the next match of the last search", False, "journal-next"),
    KeyAction("B", "journal_next(-1)", "prev", "Journal: the previous match of the last search", False,
              "journal-previous"),
    KeyAction("W", "journal_wrap", "wrap", "Journal: wrap rows, every event in full (again: one line each)", False,
              "journal-wrap"),
    KeyAction("e", "journal_export", "export",
              "Journal: export the shown events (the filter honoured) as text and JSON in the current directory",
              False, "journal-export"),
    KeyAction("y", "journal_copy", "copy", "Journal: copy the selected event to the clipboard", False,
              "journal-copy"),
    KeyAction("p", "cycle_option('reuse')", "reuse", "VFIO reuse policy: mainline / prefer-reuse", False, "reuse"),
    KeyAction("b", "cycle_option('backend')", "backend",
              "VFIO backend of the VM's devices: type1 container / iommufd (IOAS, HWPTs)", False, "backend"),
    KeyAction("k", "cycle_option('kvm-model')", "kvm",
              "KVM memory-type model: guest MTRR (≤6.10) / guest PAT (6.11+)", False, "kvm-model"),
    KeyAction("l", "cycle_option('lazy')", "lazy", "Lazy (flush-queue) unmaps on / off", False, "lazy"),
    KeyAction("f", "command('flush-queue')", "flush", "Run the flush-queue timer now", False, "flush-queue"),
    KeyAction("w", "cycle_option('skip-clflush')", "no-clflush", "What-if: the driver skips clflush", False,
              "skip-clflush"),
    KeyAction("i", "cycle_option('skip-invalidation')", "no-inval",
              "What-if: the driver skips caching-mode invalidations", False, "skip-invalidation"),
    KeyAction("v", "cycle_option('qemu-force')", "force", "What-if: QEMU assigns the device without CM", False,
              "qemu-force"),
    KeyAction("V", "cycle_option('virtio-noncoherent')", "virtio",
              "Virtio story (2023 RFC): a virtio device declares non-coherent DMA to KVM, on / off", False,
              "virtio-noncoherent"),
    KeyAction("z", "zoom", "zoom", "Zoom the focused pane (again: all panes)", True, "zoom"),
    KeyAction("1-7", "", "", "Focus pane 1-7: regs, tables, caches, vm, ioptes, graph, journal", False),
    KeyAction("tab / shift+tab", "", "", "Move focus between panes", False),
    KeyAction("up down pgup pgdn", "", "", "Move the cursor in the focused pane", False),
    KeyAction("enter", "", "", "Tables: open a bus, or a device's page tables; IOPTEs: expand or collapse; "
              "journal: the whole event, with keys to jump to the entries it touched", False),
    KeyAction("backspace", "", "", "Tables: back to the root table", False),
    KeyAction("ctrl+s", "screenshot", "shot", "Save an SVG screenshot in the current directory", False,
              "screenshot"),
    KeyAction(RECORD_KEY, "record", "rec", "Record this session's keys as a fixture (again: stop)", False, "record"),
    KeyAction("question_mark", "help", "help", "Help: panes and keys", True, "help"),
    KeyAction("ctrl+p", "", "", "Command palette: every action and switch", False),
    KeyAction("q", "quit", "quit", "Quit", True, "quit"),
)

PANE_COUNT = 7

BINDINGS: list[Binding] = [
    Binding(a.key, a.action, a.short, show=a.show, tooltip=a.description, id=a.id) for a in ACTIONS if a.action
] + [Binding(str(i), f"pane_to({i - 1})", f"pane {i}", show=False, id=f"pane-{i}") for i in range(1, PANE_COUNT + 1)]

# The app's own actions: while a prompt or modal is open they wait (DESIGN.md, Keys).
OWN_ACTIONS = frozenset(a.action.split("(")[0] for a in ACTIONS if a.action) | {"pane", "pane_to"}


def _typed(key: str) -> str:
    return key.replace("question_mark", "?").replace("colon", ":").replace("slash", "/")


def help_rows(keymap: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(key as a person types it, what it does), for the help screen; a key the
    keymap (config.toml [keys]) moved is shown where it is now, with its id."""
    keymap = keymap or {}
    rows = []
    for a in ACTIONS:
        if a.id in keymap:
            rows.append((" ".join(_typed(k) for k in keymap[a.id].split(",")), f"{a.description} [{a.id}]"))
        else:
            rows.append((_typed(a.key), a.description))
    return rows
