"""The notebook contract, checked without a kernel (design.md §3, style-anchors.md §3.3-3.4).

Each chapter: a file name ``NN_slug.ipynb``; exactly one cell tagged ``parameters`` holding
literal assignments only, with ``SMOKE``, ``SEED``, ``DEVICE`` and ``RUN_DIR``; no committed outputs
or execution counts; imports of ``corelib``'s public API only (no private helpers, no ``sys.path``
edits, no direct savefig / to_csv / torch.save: disk writes go through ``corelib.outputs``).
"""

from __future__ import annotations

import ast
import json
import re

import pytest

import corelib
from corelib.notebooks import CHAPTER_PATTERN
from corelib.paths import notebooks_dir

NOTEBOOKS = sorted(notebooks_dir().glob("*.ipynb"))
REQUIRED = {"SMOKE", "SEED", "DEVICE", "RUN_DIR"}
FORBIDDEN_CALLS = {"savefig", "to_csv", "save", "imwrite"}  # writers outside corelib.outputs
ALLOWED_MODULES = {"corelib"}


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def test_there_are_chapters():
    assert NOTEBOOKS and all(CHAPTER_PATTERN.match(p.name) for p in NOTEBOOKS), [p.name for p in NOTEBOOKS]
    prefixes = [p.name[:2] for p in NOTEBOOKS]
    assert len(set(prefixes)) == len(prefixes), "two chapters share a number"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_literal_parameters_cell(path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', need exactly 1"
    names = set()
    for node in ast.parse(_source(tagged[0])).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{path.name}: only assignments in the parameters cell"
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        assert isinstance(target, ast.Name)
        ast.literal_eval(node.value)  # raises on anything but a literal
        names.add(target.id)
    assert REQUIRED <= names, f"{path.name}: parameters cell lacks {REQUIRED - names}"
    # the first cell is the title; the parameters come right after it
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# ")
    assert "Reads" in _source(cells[0]) and "Writes" in _source(cells[0])
    # a newcomer learns how long a chapter takes before Run All
    assert re.search(r"^\*\*Takes:\*\* about \d", _source(cells[0]), flags=re.M), f"{path.name}: no **Takes:** line"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_committed_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name}: strip outputs before committing"
            assert cell.get("execution_count") is None, f"{path.name}: execution counts committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_public_corelib_api(path):
    public = set(corelib.__all__)
    aliases = set()
    for cell in _cells(path):
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse(_source(cell))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    assert a.name in ALLOWED_MODULES, f"{path.name}: imports {a.name}; use corelib's API"
                    aliases.add(a.asname or a.name)
            elif isinstance(node, ast.ImportFrom):
                assert node.module in ALLOWED_MODULES, f"{path.name}: imports from {node.module}"
                bad = [a.name for a in node.names if a.name not in public]
                assert not bad, f"{path.name}: {bad} are not in corelib.__all__"
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                assert node.attr in public, f"{path.name}: corelib.{node.attr} is not public API"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in FORBIDDEN_CALLS or (
                    isinstance(node.func.value, ast.Name) and node.func.value.id in aliases
                ), f"{path.name}: .{node.func.attr}() writes to disk; use corelib.save_figure/save_table"
        assert "sys.path" not in _source(cell), f"{path.name}: no sys.path edits, install the package"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_parameter_has_help_text(path):
    # `papermill --help-notebook` shows the comment after each parameter as its help text
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])][0]
    for line in _source(tagged).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "  # " in line and line.split("  # ", 1)[1].strip(), f"{path.name}: no help text in {line!r}"


def test_a_parameter_no_chapter_declares_is_refused_before_anything_runs(tmp_path):
    from corelib.errors import ConfigError
    from corelib.notebooks import run_notebooks

    with pytest.raises(ConfigError, match="no chapter has a parameter 'STYLE_SETS'; did you mean STYLE_SET"):
        run_notebooks(tmp_path / "run", parameters={"SMOKE": True, "STYLE_SETS": True}, chapters=["02"])
    assert not (tmp_path / "run").exists()
