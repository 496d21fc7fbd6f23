"""`vtdtui --import PATH...`: the app on a machine imported from the kernel's debugfs
files (kernel/importer.py; DESIGN.md "The kernel's own text, in and out").  The
folder is written by kernel/debugfs_write.py from a model machine; every check
compares with that machine, not with numbers written here."""

from __future__ import annotations

import pytest

from tuikit import TALK, pane_text, prompt, status
from vtdtui.kernel.debugfs_write import write_debugfs
from vtdtui.kernel.importer import NOT_KNOWN, import_machine
from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp
from vtdtui.tui.panes import IoptePane, TablesPane

PAGE = ~0xFFF & ((1 << 64) - 1)


@pytest.fixture(scope="module")
def desktop_debugfs(tmp_path_factory):
    orig = Machine.from_scenario("desktop")
    for c in ("attach 5", "map 5 0x200000 64K rw"):
        orig.execute(c)
    d = tmp_path_factory.mktemp("tui-import") / "debugfs"
    write_debugfs(orig, str(d))
    return orig, d


async def test_the_app_on_an_imported_machine(desktop_debugfs):
    orig, d = desktop_debugfs
    m = import_machine([str(d)])
    app = VtdApp(m)
    async with app.run_test(size=TALK) as pilot:
        await pilot.pause()
        # The tables pane: the imported root entry of bus 02 on the device's unit, as read.
        assert m.selected_unit == "dmar1"
        u = orig.units["dmar1"]
        rta = u.rta_latched & PAGE
        root_lo, root_hi = u.cpu_read_q(rta + 2 * 16), u.cpu_read_q(rta + 2 * 16 + 8)
        tables = pane_text(app.main.query_one(TablesPane))
        assert f"root table @ {rta:#x}" in tables[0]
        assert any(line.startswith("bus 02") and f"{root_hi:016x}:{root_lo:016x}" in line for line in tables)
        ctx = (root_lo & PAGE) + 0x00 * 16
        ctx_lo, ctx_hi = u.cpu_read_q(ctx), u.cpu_read_q(ctx + 8)
        assert any(f"{ctx_hi:016x}:{ctx_lo:016x}" in line for line in tables)

        # `a` needs the driver's books: refused with the importer's line, nothing changes.
        g = m.selected_group
        events, domain = len(m.journal), m.groups[g].domain
        await pilot.press("a")
        await pilot.pause()
        assert NOT_KNOWN in status(app)
        assert len(m.journal) == events and m.groups[g].domain is domain

        # `t`: a DMA through the imported tables gives the original machine's address.
        want = orig.execute("dma 5 0x203000 w").translation
        await prompt(pilot, "t", "0x203000 w")
        assert want.ok and status(app).startswith("DMA write from 02:00.0 at 0x203000 → ")
        assert f"{want.hpa:#x}" in status(app)

        # Key 5: the IOPTE pane shows the imported page tables, leaf by leaf.
        await pilot.press("5")
        ioptes = app.main.query_one(IoptePane)
        assert app.focused is ioptes
        lines = pane_text(ioptes)
        dom = orig.domain_of(orig.groups[5])
        assert f"SLPTPTR {dom.pgd:#x}" in lines[0]
        leaves = [line for line in lines if " 4K " in line]
        assert len(leaves) == 16
        for i, line in enumerate(leaves):
            hpa = orig.execute(f"dma 5 {0x200000 + i * 0x1000:#x} r").translation.hpa
            assert f"→ {hpa:#x}" in line
