"""The help screen: what each pane shows and every key, generated from the bindings."""

from __future__ import annotations

from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .theme import token_styles

PANE_HELP = (
    ("unit & registers", "the selected unit: badges for CM, C, SC, RWBF, PSI, QI (green = 1), GSTS, FSTS, faults, "
                         "CAP and ECAP decoded by field"),
    ("root / context tables", "present root entries, then the context table of one bus (DID, TT, AW, SLPTPTR, FPD, "
                              "raw 128 bits). Enter on a bus opens its context table; Enter on a device opens its "
                              "page tables; Backspace goes back. ⚠ rows: the unit would read something else"),
    ("IOTLB & context cache", "what the unit has cached; NP = a cached not-present entry (CM=1 only); "
                              "✗ stale = memory no longer says this, because an invalidation was skipped"),
    ("KVM · VFIO · QEMU", "KVM's noncoherent-DMA count, WBINVD emulation and EPT memory type; the VFIO container's "
                          "reuse policy, or iommufd's IOAS and HWPTs (b switches the backend): paging or nested, "
                          "NEST_PARENT, enforce_cache_coherency, devices, a nested HWPT's parent and guest "
                          "first-stage table; "
                          "QEMU's shadow of the guest's tables, or its nested HWPT (x-flts); the policy and what-if "
                          "switches"),
    ("IOPTEs", "the second-level page tables of the selected group's domain: → / ← / Space expand and collapse; "
               "large leaves say so"),
    ("domain graph", "VM → VFIO container → domain → group → device, or VM → IOAS → HWPT → domain (a nested "
                     "HWPT under the parent it nests on), kernel domains, units; non-coherent domains and KVM's "
                     "state are called out"),
    ("journal", "every invalidation and flush the driver, VFIO, iommufd, KVM and QEMU issued (green) or skipped "
                "(amber), with the rule and reason; o cycles the outcome filter, / filters by op, unit, actor, "
                "rule; Enter on a DMA or fault shows its walk (under a nested PASID entry, both stages)"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close help")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        # The theme's colours (a light theme gets dark headings): headings as the
        # panes' headings, keys in the colour of the selection badge.
        palette = token_styles(self.app.theme_variables)
        panes = Table.grid(padding=(0, 2))
        panes.add_column(style=palette["head"], no_wrap=True)
        panes.add_column()
        for name, text in PANE_HELP:
            panes.add_row(name, text)
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style=Style(bold=True, color=palette["sel"].bgcolor or palette["key"].color), no_wrap=True)
        keys.add_column()
        for key, text in self.bindings:
            keys.add_row(escape(key), escape(text))
        with VerticalScroll(id="help"):
            yield Static(Text("vtdtui — a virtual Intel VT-d IOMMU and the software around it", style="bold"))
            yield Static(Text("Panes", style="bold underline"))
            yield Static(panes)
            yield Static(Text("Keys (also in the command palette, ctrl+p)", style="bold underline"))
            yield Static(keys)
            yield Static(Text("Escape, ? or q closes this help.", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
