"""DESIGN.md, "Layers (imports only point down)": checked on the source, not by running it.

Every module of vtdtui is parsed (ast) and every import it holds counts, wherever it
is: at the top, inside a function, under `if TYPE_CHECKING:`, or as
`importlib.import_module("vtdtui....")` with a literal name.  A type-only import is
still a dependency a reader must follow, and the one under TYPE_CHECKING today is
the circle of tomorrow.

The layers, bottom up (a module may import its own layer and the ones below it):
  base     the package itself, limits, textsafe, outfile, exits: no vtdtui imports above them
  hw < sw < machine < views (views/, graph) < kernel text (decode, kernel/) < replay
  tui      the Textual app (tui/serve.py serves it to browsers)
  entry    cli, __main__: what starts everything.  cli starts the TUI, so it may
           name tui/, but only inside a function: the core commands (decode, dump...)
           never load Textual (tests/test_core_no_textual.py checks that at run time).
Nothing below tui/ imports tui/ or an entry module; inside tui/ nothing imports the app
(tui/app.py): panes, screens and the replayer are given it or talk to it through
messages, and only an entry module builds it; and the import graph, module by module,
has no cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vtdtui"

# The first part of a module's name under vtdtui → its layer's rank.
RANKS: dict[str, int] = {
    "": 0, "limits": 0, "textsafe": 0, "outfile": 0, "exits": 0,
    "hw": 1,
    "sw": 2,
    "machine": 3,
    "views": 4, "graph": 4,
    "decode": 5, "kernel": 5,
    "replay": 6,
    "tui": 7,
    "cli": 8, "__main__": 8,
}
LAYER_NAMES = {0: "base", 1: "hw", 2: "sw", 3: "machine", 4: "views", 5: "kernel text", 6: "replay", 7: "tui",
               8: "entry"}
TUI = RANKS["tui"]
ENTRY = RANKS["cli"]
APP = "vtdtui.tui.app"


@dataclass(frozen=True)
class Import:
    source: str     # the importing module, "vtdtui.tui.app"
    target: str     # the imported vtdtui module (or package), "vtdtui.cli"
    line: int
    local: bool     # inside a function: runs only when called


def modules(root: Path) -> dict[str, Path]:
    """Every module under the package folder `root`, by dotted name."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str:
    """`name` or the nearest package above it that is a module we have ("a.b.Class" → "a.b")."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def imports(root: Path) -> list[Import]:
    known = modules(root)
    top = root.name
    found: list[Import] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        local_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                # `from . import app` names a module; `from .app import VtdApp` a name in one.
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
            elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
                  and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                targets = [node.args[0].value]
            for t in targets:
                if t == top or t.startswith(top + "."):
                    imp = Import(name, _resolve(t, known), node.lineno, id(node) in local_nodes)
                    if imp not in found:  # `from .x import a, b` is one import of x
                        found.append(imp)
    return found


def rank(module: str) -> int | None:
    parts = module.split(".")
    return RANKS.get(parts[1] if len(parts) > 1 else "")


def layer_problems(root: Path) -> list[str]:
    problems = []
    for name in modules(root):
        if rank(name) is None:
            problems.append(f"{name}: in no layer; give it one in tests/test_layers.py RANKS (DESIGN.md, Layers)")
    for imp in imports(root):
        src, dst = rank(imp.source), rank(imp.target)
        if src is None or dst is None or imp.source == imp.target:
            continue
        where = f"{imp.source} (line {imp.line}) imports {imp.target}"
        if src == ENTRY and dst == TUI:
            if not imp.local:
                problems.append(f"{where} at the top: the TUI loads only when it starts (import it in a function)")
        elif dst > src:
            problems.append(f"{where}: {LAYER_NAMES[src]} may not import {LAYER_NAMES[dst]} (imports only point down)")
        elif imp.target == APP:
            problems.append(f"{where}: only an entry module builds the app; give this module the app, "
                            "or send it a message (tui/messages.py)")
    return problems


def cycles(root: Path) -> list[list[str]]:
    """Import cycles between modules (a package's __init__ counts as the package): for
    each module on one, the shortest way round from it back to it, each loop once."""
    graph: dict[str, set[str]] = {name: set() for name in modules(root)}
    for imp in imports(root):
        if imp.source != imp.target:
            graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components, iteratively (no recursion limit).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sets: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    sets.append(sorted(comp))
    loops: list[list[str]] = []
    for comp in sets:
        for start in comp:
            loop = _round_trip(graph, start, set(comp))
            if all(set(loop) != set(seen) for seen in loops):
                loops.append(loop)
    return loops


def _round_trip(graph: dict[str, set[str]], start: str, inside: set[str]) -> list[str]:
    """A shortest path from `start` back to it, through the modules `inside` (a
    strongly connected set: there always is one)."""
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for t in sorted(graph[node] & inside):
                if t == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [*reversed(path), start]
                if t not in came:
                    came[t] = node
                    nxt_frontier.append(t)
        frontier = nxt_frontier
    raise AssertionError(f"{start}: no way back inside {sorted(inside)}")


# ------------------------------------------------------------ the rules, on vtdtui

def test_every_import_points_down():
    problems = layer_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    found = cycles(PACKAGE)
    assert not found, "import cycles:\n" + "\n".join(" → ".join(c) for c in found)


def test_the_scan_sees_the_modules_it_checks():
    # A scan that found nothing would pass both tests above.
    names = modules(PACKAGE)
    assert {"vtdtui.cli", "vtdtui.tui.app", "vtdtui.hw.unit", "vtdtui.exits"} <= set(names)
    seen = {(i.source, i.target) for i in imports(PACKAGE)}
    assert ("vtdtui.tui.app", "vtdtui.machine") in seen
    assert ("vtdtui.cli", "vtdtui.tui.app") in seen  # importlib.import_module, inside run_tui


# ------------------------------------------------------------ the rules can fail

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "vtdtui"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("source, why", [
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..tui.app import VtdApp\n", "type-only"),
    ("def f():\n    from vtdtui.cli import EXIT_BAD_INPUT\n", "function-local"),
    ("import importlib\ndef f():\n    return importlib.import_module('vtdtui.tui.app')\n", "importlib"),
    ("from .. import cli\n", "relative, a module by name"),
])
def test_an_upward_import_is_found_wherever_it_is(tmp_path, source, why):
    root = _package(tmp_path, {"__init__.py": "", "cli.py": "", "tui/__init__.py": "", "tui/app.py": "",
                               "views/__init__.py": "", "views/journal.py": source})
    problems = layer_problems(root)
    assert len(problems) == 1 and problems[0].startswith("vtdtui.views.journal (line"), (why, problems)
    assert "views may not import" in problems[0]


def test_the_entry_starts_the_tui_only_from_a_function(tmp_path):
    files = {"__init__.py": "", "tui/__init__.py": "", "tui/app.py": ""}
    lazy = _package(tmp_path / "a", {**files, "cli.py": "def run():\n    from vtdtui.tui import app\n"})
    eager = _package(tmp_path / "b", {**files, "cli.py": "from vtdtui.tui.app import run\n"})
    assert layer_problems(lazy) == []
    assert ["at the top" in p for p in layer_problems(eager)] == [True]


@pytest.mark.parametrize("source", [
    "from .app import VtdApp\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .app import VtdApp\n",
    "def run():\n    from .app import VtdApp\n",
])
def test_nothing_beside_the_app_imports_it(tmp_path, source):
    # Panes, screens and the replayer are given the app or send it messages; only an
    # entry module (cli) builds it.
    root = _package(tmp_path, {"__init__.py": "", "cli.py": "def run():\n    from vtdtui.tui import app\n",
                               "tui/__init__.py": "", "tui/app.py": "from .replayer import Replayer\n",
                               "tui/replayer.py": source})
    problems = layer_problems(root)
    assert len(problems) == 1 and "only an entry module builds the app" in problems[0], problems


def test_a_module_in_no_layer_is_named(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "gadget.py": ""})
    assert layer_problems(root) == [
        "vtdtui.gadget: in no layer; give it one in tests/test_layers.py RANKS (DESIGN.md, Layers)"]


def test_a_cycle_is_named_module_by_module(tmp_path):
    # Inside one layer, as tui/app and tui/panes were (here a screen, since nothing but an
    # entry module may import the app): the layer rule allows each import.
    root = _package(tmp_path, {
        "__init__.py": "", "tui/__init__.py": "",
        "tui/mainscreen.py": "from .panes import Pane\n",
        "tui/panes.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .rows import R\n",
        "tui/rows.py": "def f():\n    from . import mainscreen\n",
        "tui/theme.py": "from .rows import f\n",
    })
    assert layer_problems(root) == []
    assert cycles(root) == [["vtdtui.tui.mainscreen", "vtdtui.tui.panes", "vtdtui.tui.rows", "vtdtui.tui.mainscreen"]]


def test_a_package_importing_its_own_modules_is_no_cycle(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "hw/__init__.py": "from .unit import Unit\n",
                               "hw/unit.py": "from .regs import R\n", "hw/regs.py": ""})
    assert cycles(root) == []
