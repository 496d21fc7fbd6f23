"""Importing the core (hardware model, decoder, actors, machine) must not load textual:
the TUI and its dependencies load only when the TUI starts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

# Every core module; optional ones are checked when they exist.
REQUIRED = ["vtdtui", "vtdtui.exits", "vtdtui.hw", "vtdtui.decode", "vtdtui.cli", "vtdtui.sw", "vtdtui.machine", "vtdtui.graph",
            "vtdtui.views", "vtdtui.views.registers", "vtdtui.views.tables", "vtdtui.views.ioptes",
            "vtdtui.views.caches", "vtdtui.views.graph", "vtdtui.views.journal", "vtdtui.views.status",
            "vtdtui.views.prompts", "vtdtui.machine.state", "vtdtui.replay", "vtdtui.replay.fixture",
            "vtdtui.replay.keys", "vtdtui.replay.recorder", "vtdtui.kernel", "vtdtui.kernel.dmesg",
            "vtdtui.kernel.faults", "vtdtui.kernel.debugfs"]
OPTIONAL: list[str] = []

SCRIPT = r"""
import importlib, importlib.util, json, sys
required, optional = json.loads(sys.argv[1])
loaded = []
for name in required:
    importlib.import_module(name)
    loaded.append(name)
for name in optional:
    if importlib.util.find_spec(name) is not None:
        importlib.import_module(name)
        loaded.append(name)
bad = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
print(json.dumps({"loaded": loaded, "textual": bad}))
"""


def run(modules_required, modules_optional):
    import json

    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([modules_required, modules_optional])],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_imports_do_not_load_textual():
    res = run(REQUIRED, OPTIONAL)
    assert "vtdtui.hw" in res["loaded"]
    assert res["textual"] == [], f"textual loaded by {res['loaded']}"


@pytest.mark.skipif(importlib.util.find_spec("textual") is None, reason="textual not installed")
def test_the_probe_can_see_textual():
    # The check above must be able to fail: importing textual itself is noticed.
    res = run(["vtdtui.hw", "textual"], [])
    assert "textual" in res["textual"]
