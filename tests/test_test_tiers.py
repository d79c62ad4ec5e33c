"""The test tiers: ``make test`` runs the whole suite, ``make test-fast`` (``pytest -m "not slow"``) the edit loop.

A test that trains or runs a notebook belongs to the slow tier. This file reads every test module (``ast``) and
fails when a test reaches a training or notebook entry point of corelib, or runs such a command through
``corelib.cli.main`` with success expected (``main(["pretrain", ...]) == 0``), directly, through a helper
function of its module or through a fixture of its module or of ``conftest.py``, without the ``slow`` marker on
the test, its class or its module. Calls inside ``with pytest.raises(...)`` are refusals, not training; a
notebook entry point whose chapters never execute (papermill's ``execute_notebook`` or corelib's
``run_notebooks`` replaced by a stand-in) is not a notebook run. Tests that are slow for other reasons (over about 5 s) are found by ``pytest --durations``, not here.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from corelib import paths

ROOT = paths.repo_root()
TESTS = ROOT / "tests"

TRAINING = {"pretrain", "finetune", "train_cyclegan", "train_cyclegans", "train_style_models", "run_baselines"}
"""corelib's entry points that train a network."""
NOTEBOOKS = {"run_notebooks", "run_sweep"}
"""corelib's entry points that execute chapters with papermill (a sweep runs chapters per point)."""
COMMANDS = {"pretrain": "pretrain", "finetune": "finetune", "style": "train_style_models",
            "run-notebooks": "run_notebooks", "sweep": "run_sweep"}
"""The command line's commands that reach those entry points (``style train``; ``style generate`` and
``--print-config`` train nothing)."""
STAND_INS = {"execute_notebook", "run_notebooks"}
"""papermill's and corelib's functions; a test that replaces one executes no chapter."""
READ_ONLY_FLAGS = {"--print-config", "--status"}
"""Options with which a command reads and prints, and runs nothing (``sweep --status``)."""


@dataclass
class _Function:
    node: ast.FunctionDef
    slow: bool = False
    entry_points: set[str] = field(default_factory=set)
    stands_in: bool = False
    callees: set[str] = field(default_factory=set)
    fixtures: set[str] = field(default_factory=set)


def _is_slow_mark(node: ast.AST) -> bool:
    """``pytest.mark.slow`` (also inside a list such as ``pytestmark = [pytest.mark.notebooks, pytest.mark.slow]``)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow_mark(e) for e in node.elts)
    return isinstance(node, ast.Attribute) and node.attr == "slow" and isinstance(node.value, ast.Attribute) \
        and node.value.attr == "mark"


def _has_pytestmark_slow(body: list[ast.stmt]) -> bool:
    return any(isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in s.targets)
               and _is_slow_mark(s.value) for s in body)


def _is_fixture(fn: ast.FunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def _is_raises(item: ast.withitem) -> bool:
    call = item.context_expr
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "raises"


def _corelib_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names bound to corelib modules, names bound to corelib's entry points) by the module's imports."""
    modules, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "corelib":
                    modules.add(alias.asname or "corelib")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "corelib":
            for alias in node.names:
                name = alias.asname or alias.name
                (functions if alias.name in TRAINING | NOTEBOOKS | {"main"} else modules).add(name)
    return modules, functions


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _Calls(ast.NodeVisitor):
    """The entry points, local callees and papermill stand-ins of one function body (refusals left out)."""

    def __init__(self, modules: set[str], functions: set[str], argv_helpers: dict[str, list[str]]):
        self.modules, self.functions, self.argv_helpers = modules, functions, argv_helpers
        self.entry_points: set[str] = set()
        self.callees: set[str] = set()
        self.stands_in = False

    def visit_With(self, node: ast.With) -> None:
        if any(_is_raises(item) for item in node.items):
            return  # a refusal: the entry point stops before any training
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        """``main([COMMAND, ...]) == 0``: the command line is expected to run the command to its end."""
        call = node.left
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "main"
                and "main" in self.functions and call.args and [type(o) for o in node.ops] == [ast.Eq]
                and isinstance(node.comparators[0], ast.Constant) and node.comparators[0].value == 0):
            words = _argv_words(call.args[0], self.argv_helpers)
            if words and words[0] in COMMANDS and words[:2] != ["style", "generate"] and not READ_ONLY_FLAGS & set(words) \
                    and not _on_slurm(words):
                self.entry_points.add(COMMANDS[words[0]])
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in self.functions and func.id != "main":
                self.entry_points.add(func.id)
            self.callees.add(func.id)
        elif isinstance(func, ast.Attribute):
            if func.attr in TRAINING | NOTEBOOKS and _root_name(func) in self.modules:
                self.entry_points.add(func.attr)
            if func.attr == "setattr" and any(isinstance(a, ast.Constant) and a.value in STAND_INS for a in node.args):
                self.stands_in = True
        self.generic_visit(node)


def _on_slurm(words: list[str]) -> bool:
    """A command submitted to Slurm (``--launcher slurm``) runs nothing in this process: without a cluster
    a test can only reach it with submitit's submission replaced."""
    return any(w == "--launcher" and nxt == "slurm" for w, nxt in zip(words, words[1:])) or "--launcher=slurm" in words


def _argv_words(node: ast.AST, argv_helpers: dict[str, list[str]]) -> list[str]:
    """The words of a command line: a list literal, or a call of a module helper returning one (``_argv(...)``)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return argv_helpers.get(node.func.id, [])
    if isinstance(node, ast.List):
        return [e.value for e in node.elts if isinstance(e, ast.Constant)]
    return []


def _functions(tree: ast.Module) -> dict[str, _Function]:
    """Every function of the module (test classes' methods named ``Class.method``), with its calls."""
    modules, functions = _corelib_names(tree)
    argv_helpers = {node.name: _argv_words(ret.value, {}) for node in tree.body if isinstance(node, ast.FunctionDef)
                    for ret in ast.walk(node) if isinstance(ret, ast.Return) and isinstance(ret.value, ast.List)}
    found: dict[str, _Function] = {}

    def add(fn: ast.FunctionDef, name: str, class_slow: bool) -> None:
        calls = _Calls(modules, functions, argv_helpers)
        for statement in fn.body:
            calls.visit(statement)
        args = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        found[name] = _Function(fn, slow=class_slow or any(_is_slow_mark(d) for d in fn.decorator_list),
                                entry_points=calls.entry_points, stands_in=calls.stands_in,
                                callees=calls.callees, fixtures=args)

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            add(node, node.name, False)
        elif isinstance(node, ast.ClassDef):
            class_slow = _has_pytestmark_slow(node.body) or any(_is_slow_mark(d) for d in node.decorator_list)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    add(item, f"{node.name}.{item.name}", class_slow)
    return found


def _reach(name: str, local: dict[str, _Function], shared: dict[str, _Function]) -> tuple[set[str], bool]:
    """The entry points a test reaches through its helpers and fixtures, and whether papermill is stood in."""
    entry_points, stands_in, seen, todo = set(), False, set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        fn = local.get(current) or shared.get(current)
        if fn is None:
            continue
        entry_points |= fn.entry_points
        stands_in |= fn.stands_in
        helpers = {c for c in fn.callees if c in local and not _is_fixture(local[c].node)}
        fixtures = {f for f in fn.fixtures if (f in local and _is_fixture(local[f].node)) or f in shared}
        todo += sorted(helpers | fixtures)
    return entry_points, stands_in


def unmarked_slow_tests(source: str, conftest: str = "") -> list[str]:
    """The tests of ``source`` (a test module's text) that train or run a notebook without the slow marker."""
    tree = ast.parse(source)
    if _has_pytestmark_slow(tree.body):
        return []
    local = _functions(tree)
    shared = {name: fn for name, fn in _functions(ast.parse(conftest)).items() if _is_fixture(fn.node)}
    unmarked = []
    for name, fn in local.items():
        if not name.split(".")[-1].startswith("test") or fn.slow:
            continue
        entry_points, stands_in = _reach(name, local, shared)
        if stands_in:
            entry_points -= NOTEBOOKS
        if entry_points:
            unmarked.append(f"{name} ({', '.join(sorted(entry_points))})")
    return unmarked


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "browser" not in p.parts)


def _conftest_for(path: Path) -> str:
    return "\n".join(c.read_text() for c in sorted(TESTS.rglob("conftest.py"))
                     if c.parent in path.parents and "browser" not in c.parts)


def test_every_test_that_trains_or_runs_a_notebook_is_marked_slow():
    files = _test_files()
    assert len(files) > 40
    missing = [f"{path.relative_to(ROOT)}::{test}" for path in files
               for test in unmarked_slow_tests(path.read_text(), _conftest_for(path))]
    assert not missing, f"mark these @pytest.mark.slow (or the module with pytestmark): {missing}"


def test_the_check_finds_an_unmarked_training_test():
    """The check above can fail: a training test without the marker is reported, through a helper, a local
    fixture and a conftest fixture alike; the marker, a refusal or a papermill stand-in clears it."""
    source = '''
import pytest
import corelib as cl
from corelib.cli import main
from corelib.notebooks import run_notebooks

def _train(tmp):
    return cl.pretrain(cfg, data, tmp)

@pytest.fixture
def trained(tmp_path):
    return _train(tmp_path)

def test_direct(tmp_path):
    cl.finetune(cfg, data, tmp_path)

def test_through_helper(tmp_path):
    _train(tmp_path)

def test_through_fixture(trained):
    assert trained

def test_through_conftest(source_network):
    assert source_network

def test_notebooks(tmp_path):
    run_notebooks(tmp_path)

@pytest.mark.slow
def test_marked(tmp_path):
    _train(tmp_path)

def test_refusal(tmp_path):
    with pytest.raises(ValueError):
        cl.pretrain(bad_cfg, data, tmp_path)

def test_stand_in(tmp_path, monkeypatch):
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: None)
    run_notebooks(tmp_path)

def test_settings_named_like_a_loop():
    recipe.pretrain(context)

def test_command_line(tmp_path):
    assert main(["finetune", "--target", "cuhk_like", str(tmp_path)]) == 0

def test_command_line_refusal(tmp_path):
    assert main(["pretrain", "--source", "nowhere"]) == 2

def _argv(root):
    return ["pretrain", "--source", "market_like", root]

@pytest.fixture
def finished(tmp_path):
    assert main(_argv(str(tmp_path))) == 0

def test_command_line_through_fixture(finished):
    assert finished is None

def test_command_line_prints_its_recipe():
    assert main(["finetune", "--target", "market_like", "--print-config"]) == 0
'''
    conftest = '''
import pytest
from corelib.training import finetune

@pytest.fixture(scope="session")
def source_network(tmp_path_factory):
    return finetune(cfg, data, tmp_path_factory.mktemp("x"))
'''
    assert unmarked_slow_tests(source, conftest) == [
        "test_direct (finetune)", "test_through_helper (pretrain)", "test_through_fixture (pretrain)",
        "test_through_conftest (finetune)", "test_notebooks (run_notebooks)", "test_command_line (finetune)",
        "test_command_line_through_fixture (pretrain)"]
    assert unmarked_slow_tests("import pytest\npytestmark = pytest.mark.slow\n" + source, conftest) == []


def _rule(makefile: str, target: str) -> str:
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n?)+)", makefile, flags=re.M)
    assert match, f"the Makefile has no {target} target"
    return match.group(1)


def test_make_test_runs_everything_and_test_fast_leaves_out_the_slow_tier():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"-m\s+pytest\s+-m\s+\"not slow\"", _rule(makefile, "test-fast"))
    assert re.search(r"-m\s+pytest\s*$", _rule(makefile, "test"), flags=re.M), "make test runs the whole suite"


def test_every_test_has_a_time_limit():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(dep.startswith("pytest-timeout==") for dep in project["project"]["optional-dependencies"]["dev"])
    assert int(project["tool"]["pytest"]["ini_options"]["timeout"]) > 0
