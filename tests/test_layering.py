"""Imports go downwards only (DESIGN.md, *Layout*).

* importing ``anatssl.config`` imports neither torch nor any method;
* importing ``anatssl.downstream`` (and each of its modules) imports no SSL method;
* among the modules outside ``cli/`` and ``bench/`` there is no import cycle: every ``import`` /
  ``from ... import`` statement is parsed, at module level and inside functions alike (only
  ``if TYPE_CHECKING:`` blocks are left out: they never run), and a strongly connected component of
  more than one module fails the test, naming its modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "anatssl"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, name: str, is_package: bool) -> set[str]:
    """Every module name an import statement of ``path`` names (function-level ones included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # ``from pkg import module``
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph(exclude: tuple[str, ...] = ("anatssl.cli", "anatssl.bench")) -> dict[str, set[str]]:
    """module -> the anatssl modules it imports (a package import also counts as its ``__init__``)."""
    mods = all_modules()
    keep = {m for m in mods if not any(m == e or m.startswith(e + ".") for e in exclude)}
    graph: dict[str, set[str]] = {}
    for m in keep:
        path = mods[m]
        names = imported_names(path, m, path.name == "__init__.py")
        deps = set()
        for n in names:
            if not n.startswith("anatssl"):
                continue
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            parts = n.split(".")
            for i in range(2, len(parts) + 1):
                cand = ".".join(parts[:i])
                if cand in keep and cand != m:
                    deps.add(cand)
        graph[m] = deps
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; -> the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return comps


def test_no_import_cycle_outside_cli_and_bench() -> None:
    graph = import_graph()
    # a package __init__ that imports its own submodules, which import siblings through the package
    # name, is the ordinary re-export pattern: count an edge to a package as an edge to its __init__
    # only when the importer is outside that package
    for m, deps in graph.items():
        graph[m] = {
            d for d in deps if not (m.startswith(d + ".") and (PKG / Path(*d.split(".")[1:])).is_dir())
        }
    comps = strongly_connected(graph)
    assert not comps, "import cycles (strongly connected components):\n" + "\n".join(
        " <-> ".join(c) for c in comps
    )


def test_cycle_detector_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_are_seen(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import anatssl.hidden\n"
        "def g():\n    from anatssl.methods import METHODS\n    import anatssl.engine.trainer\n"
    )
    names = imported_names(f, "anatssl.x.m", False)
    assert "anatssl.methods" in names and "anatssl.engine.trainer" in names
    assert "anatssl.hidden" not in names


_PROBE = """
import importlib, json, sys
def methods():
    return sorted(m for m in sys.modules if m.startswith("anatssl.methods"))
out = {}
import anatssl.config, anatssl.config.finetune
out["config"] = {"torch": "torch" in sys.modules, "methods": methods()}
for name in STAGES:
    importlib.import_module(name)
    out[name] = {"methods": methods()}
print(json.dumps(out))
"""

STAGES = [
    "anatssl.runs",
    "anatssl.anatomy.cache",
    "anatssl.anatomy.correspondence",
    "anatssl.anatomy.pairing",
    "anatssl.downstream",
    *[
        f"anatssl.downstream.{p.stem}"
        for p in sorted((PKG / "downstream").glob("*.py"))
        if p.stem != "__init__"
    ],
]


@pytest.fixture(scope="module")
def probe() -> dict[str, dict[str, object]]:
    """Import, in one fresh interpreter, config first, then each module of STAGES in turn, recording
    which method modules are loaded after each (importing MONAI takes a while on a loaded CPU)."""
    import json

    code = f"STAGES = {STAGES!r}\n" + _PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_config_imports_no_method_and_no_torch(probe: dict[str, dict[str, object]]) -> None:
    assert probe["config"] == {"torch": False, "methods": []}


def test_downstream_anatomy_and_runs_import_no_ssl_method(probe: dict[str, dict[str, object]]) -> None:
    loaded = {k: v["methods"] for k, v in probe.items() if v["methods"]}
    assert not loaded, f"importing these pulled in SSL methods: {loaded}"


def test_no_run_folder_reading_below_runs() -> None:
    """Nothing below ``runs/`` imports it, and the run folder's file names are spelled in one place
    (``engine/checkpoint.py``, whose trainer writes the folder that ``runs.RunDir`` reads)."""
    below = ("config", "data", "views", "models", "losses", "methods", "anatomy", "engine")
    layout = {"last.pt", "config.yaml", "metrics.jsonl", "checkpoints"}
    importers, spellers = [], []
    for sub in below:
        for p in sorted((PKG / sub).rglob("*.py")):
            name = module_name(p)
            if any(
                n == "anatssl.runs" or n.startswith("anatssl.runs.") for n in imported_names(p, name, False)
            ):
                importers.append(name)
            if name == "anatssl.engine.checkpoint":
                continue
            consts = {n.value for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Constant)}
            if consts & layout:
                spellers.append(f"{name}: {sorted(consts & layout)}")
    assert not importers, f"modules below runs/ that import it: {importers}"
    assert not spellers, f"run-folder file names spelled outside engine/checkpoint.py: {spellers}"
