"""The import graph of corelib as a reader can trust it: every import counted, those inside functions
too; no cycle between modules; no edge from a lower layer up to a higher one; and an import deferred
into a function only for a heavy optional library, marked ``# lazy:`` on its line.

The layers below are the picture of the package a newcomer reads first (docs/user-guide.md,
"How the package is built"): a module may import the modules of lower layers and of its own unit
(its subpackage, or itself), never a higher layer. A new module takes its place in this table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "corelib"

LAYERS: tuple[tuple[str, ...], ...] = (  # lowest first; a unit is a top-level module or subpackage
    ("errors",),
    ("progress", "registry", "yamlfile", "array_checks", "precision", "tables"),
    ("paths", "sparse_rows"),
    ("kreciprocal",),
    ("ownership", "repro", "settings", "published"),
    ("cluster", "evaluation", "losses"),
    ("runtime", "data"),
    ("models", "outputs", "features", "launch"),
    ("report", "orientation"),
    ("config",),
    ("recipes", "style", "explain", "viz", "filtering"),
    ("pairs",),
    ("training", "baseline_plan"),
    ("baselines", "notebooks", "export"),
    ("sweeps", "feature_space", "widgets"),
    ("results", "budget_study"),
    ("cli",),
    ("__main__",),
)

HEAVY_OPTIONAL = {  # libraries slow to import or not needed by every command: the only deferred imports
    "pandas", "matplotlib", "papermill", "nbformat", "nbconvert", "nbclient", "jupyter_client", "jinja2",
    "ipywidgets", "IPython", "faiss", "umap", "timm", "sklearn", "pytorch_grad_cam", "onnx", "onnxruntime",
    "submitit", "playwright", "scipy", "torch.utils.tensorboard", "torch.distributed",
    "tqdm.auto",
}
LAZY_MARK = "# lazy:"


class Edge(NamedTuple):
    source: str  # corelib.x.y
    target: str
    deferred: bool  # inside a function
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def deferred_nodes(tree: ast.AST) -> set[int]:
    return {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}


def import_edges(known: dict[str, Path]) -> list[Edge]:
    """Every import of a corelib module by a corelib module (``from . import x`` names submodule x)."""
    edges = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        inside = deferred_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if not target.startswith("corelib"):
                    continue
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    edges.append(Edge(name, target, id(node) in inside, node.lineno))
    return edges


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "corelib"


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as [a, b, ..., a], or [] when it has none (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return []


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return known, import_edges(known)


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_every_module_has_a_layer(graph):
    known, _ = graph
    placed = {u for layer in LAYERS for u in layer}
    missing = sorted({unit(m) for m in known} - placed - {"corelib"})
    assert not missing, f"modules without a layer in LAYERS: {missing} (give each its place in the table)"


def test_no_cycle_between_modules(graph):
    known, edges = graph
    adjacency: dict[str, set[str]] = {m: set() for m in known}
    for e in edges:
        adjacency[e.source].add(e.target)
    cycle = find_cycle(adjacency)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_edge_runs_up_a_layer(graph):
    _, edges = graph
    layer_of = {u: i for i, layer in enumerate(LAYERS) for u in layer}
    upward = [f"{e.source} (line {e.line}) imports {e.target}" for e in edges
              if unit(e.source) != "corelib" and unit(e.source) != unit(e.target)
              and layer_of[unit(e.target)] >= layer_of[unit(e.source)]]
    assert not upward, "imports at or above their own layer:\n" + "\n".join(upward)


def test_deferred_imports_are_heavy_optional_libraries_marked_lazy():
    wrong = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(path))
        inside = deferred_nodes(tree)
        for node in ast.walk(tree):
            if id(node) not in inside:
                continue
            if isinstance(node, ast.ImportFrom):
                libs = ["." if node.level else (node.module or "")]
            else:
                libs = [a.name for a in node.names]
            heavy = all(any(lib == h or lib.startswith(h + ".") for h in HEAVY_OPTIONAL) for lib in libs)
            marked = LAZY_MARK in lines[node.lineno - 1]
            if not (heavy and marked):
                wrong.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}"
                             + ("" if heavy else "  (not a heavy optional library: import it at the top)")
                             + ("" if marked or not heavy else f"  (mark it '{LAZY_MARK} <why>')"))
    assert not wrong, "imports inside functions:\n" + "\n".join(wrong)


def test_the_user_guide_shows_these_layers():
    guide = (PACKAGE.parent / "docs" / "user-guide.md").read_text()
    section = guide.split("How the package is built", 2)[-1]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, flags=re.M)
    shown = tuple(tuple(re.findall(r"`([\w_]+)`", units)) for _, units in rows)
    assert shown == LAYERS, "docs/user-guide.md 'How the package is built' and LAYERS disagree: update the table"
