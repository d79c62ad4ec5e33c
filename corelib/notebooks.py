"""Execute the notebook chapters in order with papermill, into one run directory.

Used by ``make demo`` (full parameters) and by the notebook tests (``SMOKE=True``). Chapters are
``notebooks/NN_*.ipynb`` in numeric order; each receives ``RUN_DIR``, ``SMOKE`` and ``SEED`` (plus
any other parameter its ``parameters`` cell declares) and later chapters read what earlier ones
wrote to ``RUN_DIR``. Executed copies go to ``RUN_DIR/notebooks/`` and are never committed.

Everything is checked before the first chapter starts, so that a mistake costs a second, not the
hours of training before the chapter that trips over it:

- **Chapters.** Each entry of ``chapters`` names exactly one chapter, by its number (``02``), its
  file stem (``02_pretraining``) or its file name; ``2``, ``0`` or ``3O`` are refused with the list.
- **Parameter names.** A parameter that no chapter declares is refused (a chapter only receives
  the parameters it declares, so a misspelt name would otherwise be dropped without a word).
- **Parameter types.** Each parameter's type is the type of the literal its chapter's
  ``parameters`` cell assigns (``SMOKE: bool = False`` makes SMOKE a bool); a value of another type
  is refused, naming the parameter and the chapter. Values that already have types (a YAML file,
  the python API) are checked as they are: a bool is not an int, an int is a float, a tuple is a
  list; a ``None`` default takes anything. A parameter several chapters declare is checked against
  each chapter that receives it. Command-line text is read as the declared type first
  (:func:`coerce_parameter`): ``True/true/1/yes`` and ``False/false/0/no`` for a bool (anything
  else is refused, never a truthy string), ``"3"`` for an int (not ``3.5`` or ``abc``), a number
  for a float, the text itself for a str, a JSON / YAML list or mapping for a list or a dict.
- **Pairs and recipes.** A chapter's pairs (``PAIRS``, ``DATASETS``) and the recipes its
  ``PRETRAIN_OVERRIDES`` / ``FINETUNE_OVERRIDES`` change are resolved for every pair, with the functions
  the chapter calls and without training or reading a dataset: a misspelt field such as
  ``{"optim.lrr": 0.1}`` is refused, naming the parameter, the field and the closest valid one.
- **Parameter sizes.** A value whose JSON text is longer than :data:`MAX_PARAMETER_CHARS` is refused
  (papermill writes every value into the executed copy of each chapter that receives it, and a
  value is a setting, not data: pass a large input as a file path). An error message quotes at most
  :data:`EXCERPT_CHARS` characters of a value.
"""

from __future__ import annotations

import ast
import difflib
import functools
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from . import paths
from .baseline_plan import BASELINE_PARAMETERS, check_baseline_parameters
from .errors import ConfigError, CorelibError, InvalidInputError
from .ownership import LOCK_ENV, RunLock
from .pairs import experiment_pairs
from .progress import headless_environment
from .yamlfile import parse_yaml

KERNEL_NAME = "corelib"
"""The Jupyter kernel ``make`` registers for the project's virtual environment."""

CHAPTER_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")

ALWAYS_DECLARED = frozenset({"RUN_DIR"})
"""Parameters :func:`run_notebooks` passes itself, whatever the chapters declare."""

MAX_PARAMETER_CHARS = 64 * 1024
"""Longest JSON text of one parameter value: the largest the chapters take (a ``DATASETS`` mapping
of every task) is a few KB."""

EXCERPT_CHARS = 200
"""Characters of a value an error message quotes (then ``... (N characters)``)."""


LAB_SETTINGS = {
    "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}
"""JupyterLab settings ``make lab`` installs: the widget manager saves the widgets' state into a
notebook when it is saved, so the explorers and progress bars of a reopened notebook show their last
view instead of "Error displaying widget: model not found"; and the lab neither asks to fetch Jupyter's
news nor looks for updates (the workbench runs offline; the prompt otherwise covers a corner of every
chapter's first screen)."""


def install_lab_settings(prefix: Optional[Union[str, Path]] = None) -> Path:
    """Merge :data:`LAB_SETTINGS` into ``<prefix>/share/jupyter/lab/settings/overrides.json`` (the
    defaults of the JupyterLab that environment runs; ``prefix`` defaults to ``sys.prefix``, the
    virtual environment); returns its path.

    The user's file wins: a setting already in it is the user's choice and is kept, even where it
    differs from ours (``saveState: false``); only missing settings are added, and one printed line
    says what was added and which of ours were not applied because the user chose otherwise. A file
    that is a symbolic link (a dotfile kept in a dotfiles repository) is written through: its target
    is replaced atomically and the link stays. A file that needs nothing is not rewritten.

    Raises:
        InvalidInputError: the file exists but is not a JSON object of settings (it is left untouched).
    """
    path = Path(prefix or sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    target = path.resolve()  # the file a symbolic link points at: replacing the link would cut it off
    current: dict = {}
    if target.exists():
        try:
            current = json.loads(target.read_text() or "{}")
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"{path} is not valid JSON ({e}); fix or remove it, then run make lab again") from e
        if not isinstance(current, dict):
            raise InvalidInputError(f"{path} holds {type(current).__name__}, not a JSON object of settings; fix it")
    merged = json.loads(json.dumps(current))  # a copy: current stays what the user wrote
    added, kept = [], []
    for plugin, values in LAB_SETTINGS.items():
        mine = merged.setdefault(plugin, {})
        if not isinstance(mine, dict):
            raise InvalidInputError(f"{path}: {plugin!r} holds {type(mine).__name__}, not a JSON object of "
                                    f"settings; fix it, then run make lab again")
        for key, value in values.items():
            if key not in mine:
                mine[key] = value
                added.append(f"{plugin}:{key}={json.dumps(value)}")
            elif mine[key] != value:
                kept.append(f"{plugin}:{key}={json.dumps(mine[key])} (ours: {json.dumps(value)})")
    if added:  # a missing file reads as {}: written; an up-to-date one is left alone
        paths.atomic_write_text(target, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    if added or kept:
        print(f"lab settings {path}: " + "; ".join(
            part for part in (f"added {', '.join(added)}" if added else "",
                              f"kept your {', '.join(kept)}" if kept else "") if part))
    return path


class NotebookFailed(CorelibError, RuntimeError):
    """A chapter raised: the message names the notebook, the failing cell and the executed copy (which
    holds the chapter's own traceback; the command line prints this message, not a traceback of papermill).
    ``executed`` is the executed copy's path (a sweep records it for the failed point)."""

    def __init__(self, message: str, executed: Optional[Path] = None) -> None:
        super().__init__(message)
        self.executed = executed


def list_chapters(notebooks_dir: Optional[Path] = None) -> list[Path]:
    """The chapters ``NN_slug.ipynb`` in numeric order."""
    nb_dir = Path(notebooks_dir or paths.notebooks_dir())
    return sorted(p for p in nb_dir.glob("*.ipynb") if CHAPTER_PATTERN.match(p.name))


def select_chapters(chapters: Optional[Sequence[Union[str, Path]]] = None,
                    notebooks_dir: Optional[Path] = None) -> list[Path]:
    """The chapters ``chapters`` names, in numeric order (all of them when ``chapters`` is empty).

    An entry names exactly one chapter: its number (``"02"``), its file stem (``"02_pretraining"``)
    or its file name (``"02_pretraining.ipynb"``). A prefix such as ``"0"`` or ``"2"`` is no name:
    it would pick several chapters, or none, without a word.

    Raises:
        InvalidInputError: an entry names no chapter or several; the message lists the chapters.
    """
    available = list_chapters(notebooks_dir)
    if not chapters:
        return available
    names = ", ".join(p.stem for p in available) or "none"
    picked: set[Path] = set()
    for entry in chapters:
        text = entry.name if isinstance(entry, Path) else str(entry)
        matches = [p for p in available if text in (p.name[:2], p.stem, p.name)]
        if len(matches) == 1:
            picked.add(matches[0])
            continue
        if matches:
            raise InvalidInputError(f"chapter {text!r} matches {[p.name for p in matches]}; name one by its file "
                                    f"stem (chapters: {names})")
        # YAML reads an unquoted 02 as the number 2: say so rather than only listing the chapters
        hint = (f"; quote chapter numbers in YAML ('{entry:02d}'), unquoted they are read as numbers"
                if isinstance(entry, int) and not isinstance(entry, bool) else "")
        raise InvalidInputError(f"no chapter is named {text!r}; name each chapter by its two-digit number (02), "
                                f"its file stem (02_pretraining) or its file name{hint} (chapters: {names})")
    return [p for p in available if p in picked]


@dataclass(frozen=True)
class ChapterParameter:
    """One assignment of a chapter's ``parameters`` cell.

    Attributes:
        name: the variable, e.g. ``SMOKE``.
        chapter: the chapter's file stem, e.g. ``02_pretraining``.
        default: the value the cell assigns (None when it is no literal).
        literal: whether the default is a Python literal (only then does it give a type).
    """

    name: str
    chapter: str
    default: Any = None
    literal: bool = True

    @property
    def kind(self) -> Optional[type]:
        """The type every value must have; None (anything goes) for a None or non-literal default."""
        return None if (self.default is None or not self.literal) else type(self.default)


def chapter_parameters(path: Path) -> dict[str, ChapterParameter]:
    """The parameters a chapter declares, read from its cell tagged ``parameters`` with :mod:`ast`
    (what papermill replaces; the notebook contract makes every value a literal). The defaults are
    shared between calls: copy one before changing it."""
    path = Path(path)
    stat = path.stat()
    # every parameter of a sweep point is checked against every chapter: read each file once
    return dict(_read_parameters(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _read_parameters(path_text: str, _mtime_ns: int, _size: int) -> dict[str, ChapterParameter]:
    """:func:`chapter_parameters` of one version of a file (the time and size key the cache)."""
    path = Path(path_text)
    cells = json.loads(path.read_text()).get("cells", [])
    tagged = [c for c in cells if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    if not tagged:
        return {}
    source = tagged[0].get("source", "")
    source = source if isinstance(source, str) else "".join(source)
    try:
        body = ast.parse(source).body
    except SyntaxError as e:
        raise ConfigError(f"{path.name}: the parameters cell is not valid Python ({e.msg}, line {e.lineno}); "
                          f"fix the chapter") from e
    found: dict[str, ChapterParameter] = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            targets, value = node.targets, node.value
        else:
            continue
        try:
            default, literal = ast.literal_eval(value), True
        except (ValueError, TypeError, SyntaxError):  # not a literal: the chapter computes it, no type to check
            default, literal = None, False
        for target in targets:
            found[target.id] = ChapterParameter(target.id, path.stem, default, literal)
    return found


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The parameters a notebook declares (papermill's inspection of its ``parameters`` cell)."""
    import papermill as pm  # lazy: the notebook stack, needed only to run chapters

    return pm.inspect_notebook(str(path))


def _receivers(name: str, selected: Sequence[Path], everything: Sequence[Path]) -> list[ChapterParameter]:
    """The declarations of ``name`` a value is checked against: those of the selected chapters (the
    ones that receive it), else those of any chapter (an unused value is still a wrong one)."""
    chosen = [d for d in (chapter_parameters(p).get(name) for p in selected) if d is not None]
    return chosen or [d for d in (chapter_parameters(p).get(name) for p in everything) if d is not None]


_KIND_NAMES = {bool: "a bool", int: "an int", float: "a float", str: "a str", list: "a list", dict: "a dict"}


def _expected_form(decl: ChapterParameter) -> str:
    """How to write a value of ``decl``'s type, on the command line too (the chapter's default as the
    example of a list or mapping)."""
    kind = decl.kind
    if kind is bool:
        return "True or False (on the command line also true/false, 1/0, yes/no)"
    if kind is int:
        return f"a whole number, e.g. -p {decl.name} 3"
    if kind is float:
        return f"a number, e.g. -p {decl.name} 0.5"
    if kind is str:
        return "a text"
    if kind in (list, dict):
        example = decl.default if decl.default else (["a", "b"] if kind is list else {"key": 1})
        return f"a JSON / YAML {'list' if kind is list else 'mapping'}, e.g. -p {decl.name} '{json.dumps(example)}'"
    return f"a {kind.__name__} literal"


def _fits(kind: Optional[type], value: Any) -> bool:
    """Whether ``value`` has the declared ``kind`` (bool is no int; an int is a float)."""
    if kind is None:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, (list, tuple))
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _excerpt(value: Any) -> str:
    """``repr(value)``, cut to :data:`EXCERPT_CHARS` characters and its length when longer (the value
    has passed :func:`_check_size`, so its repr is bounded too)."""
    text = repr(value)
    return text if len(text) <= EXCERPT_CHARS else f"{text[:EXCERPT_CHARS]}... ({len(text):,} characters)"


def _check_size(name: str, value: Any) -> None:
    """Refuse a value whose JSON text is longer than :data:`MAX_PARAMETER_CHARS`. The text is written
    piece by piece and abandoned past the bound, so a value of shared parts (a list holding the same
    list ten times, ten levels deep) costs no more than the bound."""
    size = 0
    try:
        for piece in json.JSONEncoder(default=str).iterencode(value):
            size += len(piece)
            if size > MAX_PARAMETER_CHARS:
                break
    except (ValueError, RecursionError):  # a list or mapping that contains itself, or nests thousands deep
        raise ConfigError(f"parameter {_excerpt(name)} contains itself or nests too deeply to be written as "
                          f"JSON; give a plain value") from None
    if size > MAX_PARAMETER_CHARS:
        raise ConfigError(f"parameter {_excerpt(name)} is at least {size:,} characters long as JSON, more than the "
                          f"{MAX_PARAMETER_CHARS:,} allowed (corelib.notebooks.MAX_PARAMETER_CHARS): a parameter is a "
                          f"setting, not data; pass a large input as a file path instead")


def _refusal(decl: ChapterParameter, value: Any, where: str = "") -> ConfigError:
    """The one-line error for a value of the wrong type: the parameter, the chapter, the expected form."""
    expected = _KIND_NAMES.get(decl.kind, f"a {decl.kind.__name__}")
    got = f"{_excerpt(value)} ({type(value).__name__})"
    return ConfigError(f"parameter {decl.name} of chapter {decl.chapter} is {expected} (its default is "
                       f"{decl.default!r}); got {got}{where}; give {_expected_form(decl)}")


def check_parameters(parameters: Mapping[str, Any], notebooks_dir: Optional[Path] = None, *,
                     chapters: Optional[Sequence[Union[str, Path]]] = None) -> None:
    """Refuse, before anything runs, a parameter that no chapter declares, a value longer than
    :data:`MAX_PARAMETER_CHARS` as JSON, or a value whose type is not the one its chapters declare
    (see the module docstring); then resolve the pairs and recipes of each chapter a value reaches, as
    the chapter would (:func:`_check_recipes`), so that a misspelt field inside a value is refused too.

    Args:
        parameters: name -> value, typed (command-line text goes through :func:`coerce_parameters`).
        notebooks_dir: where the chapters are (default: the repository's ``notebooks/``).
        chapters: the chapters that will run (entries as :func:`select_chapters` takes); their
            declarations are the ones a value is checked against.

    Raises:
        ConfigError: names the unknown parameter and the closest declared one, a value longer than
            :data:`MAX_PARAMETER_CHARS` as JSON, or the parameter, its chapter, its declared type and
            the value given.
        InvalidInputError: a ``chapters`` entry names no chapter.
    """
    everything = list_chapters(notebooks_dir)
    selected = select_chapters(chapters, notebooks_dir)
    declared = set(ALWAYS_DECLARED).union(*(chapter_parameters(p) for p in everything))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        close = difflib.get_close_matches(unknown[0][:EXCERPT_CHARS], sorted(declared), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"no chapter has a parameter {_excerpt(unknown[0])}{hint} (`papermill --help-notebook "
                          f"notebooks/NN_....ipynb` lists a chapter's parameters)")
    for name, value in parameters.items():
        _check_size(name, value)
    for name, value in parameters.items():
        for decl in _receivers(name, selected, everything):
            if not _fits(decl.kind, value):
                raise _refusal(decl, value)
    # the chapters a value reaches (or, for a value no selected chapter takes, those declaring it)
    receivers = {d.chapter for name in parameters for d in _receivers(name, selected, everything)}
    for chapter in everything:
        if chapter in selected or chapter.stem in receivers:
            _check_recipes(chapter, parameters)


RECIPE_PARAMETERS = {"PRETRAIN_OVERRIDES": "pretrain", "FINETUNE_OVERRIDES": "finetune"}
"""Chapter parameters that change the recipe of one stage (:meth:`corelib.pairs.ExperimentPair.pretrain_cfg`
...): resolved for every pair before the first chapter runs, as the chapter resolves them."""

def _check_recipes(chapter: Path, parameters: Mapping[str, Any]) -> None:
    """Resolve what ``chapter`` builds from its parameters before it trains anything, with the functions
    it calls: its pairs (``PAIRS``, ``DATASETS``: :func:`corelib.pairs.experiment_pairs`, which reads
    committed manifests and no dataset) and each pair's recipe under each :data:`RECIPE_PARAMETERS` it
    declares, and chapter 07's baseline recipes (:func:`corelib.baseline_plan.check_baseline_parameters`).
    A misspelt field would otherwise stop the chapter that uses it, after the chapters before it ran.

    Raises:
        ConfigError: names the parameter, the chapter (and pair), the field and the closest valid one.
    """
    declared = chapter_parameters(chapter)
    if "PAIRS" not in declared:
        return
    values = {name: parameters.get(name, decl.default) for name, decl in declared.items()}
    try:
        pairs = experiment_pairs(values["PAIRS"], values.get("DATASETS") or {})
    except CorelibError as e:
        raise ConfigError(f"parameters PAIRS / DATASETS of chapter {chapter.stem}: {e}") from e
    for name, stage in RECIPE_PARAMETERS.items():
        if name not in declared:
            continue
        for pair in pairs.values():
            try:
                getattr(pair, f"{stage}_cfg")(smoke=values.get("SMOKE", False), seed=values.get("SEED"),
                                              device=values.get("DEVICE"), overrides=values[name])
            except CorelibError as e:
                raise ConfigError(f"parameter {name} of chapter {chapter.stem} (pair {pair.name}): {e}") from e

    if not BASELINE_PARAMETERS <= set(declared):
        return
    for pair in pairs.values():
        try:
            check_baseline_parameters(pair, values)
        except CorelibError as e:
            given = sorted(n for n in BASELINE_PARAMETERS if n in parameters) or ["RECIPES"]
            raise ConfigError(f"parameter{'s' if len(given) > 1 else ''} {' / '.join(given)} of chapter "
                              f"{chapter.stem} (pair {pair.name}): {e}") from e


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _untyped(text: str) -> Any:
    """Text for a parameter without a type: a JSON literal (true, 3, [1, 2]) or else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _from_text(kind: Optional[type], text: str) -> Any:
    """``text`` read as ``kind``; raises ValueError when it is not written as one."""
    if kind is None:
        return _untyped(text)
    stripped = text.strip()
    if kind is bool:
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ValueError(text)
    if kind is int:
        if not re.fullmatch(r"[+-]?\d+", stripped):
            raise ValueError(text)
        return int(stripped)
    if kind is float:
        value = float(stripped)  # ValueError on "abc"
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if kind is str:
        # a JSON string ('"cpu"') is what the command line took before the parameters had types
        if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return text
            return value if isinstance(value, str) else text
        return text
    if kind in (list, dict):
        value = parse_yaml(text, source="a -p value")  # its ConfigError is a ValueError
        if not isinstance(value, kind):
            raise ValueError(text)
        return value
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError) as e:
        raise ValueError(text) from e


def coerce_parameter(name: str, text: str, *, chapters: Optional[Sequence[Union[str, Path]]] = None,
                     notebooks_dir: Optional[Path] = None) -> Any:
    """A command-line value (``-p NAME TEXT``) read as the type of ``NAME``'s default in the chapters
    that receive it (see the module docstring); a name no chapter declares is read as JSON or text
    and left to :func:`check_parameters` to refuse with a suggestion.

    Raises:
        ConfigError: the text is not written as the declared type, or is longer than
            :data:`MAX_PARAMETER_CHARS`; names the parameter, the chapter and the form expected.
    """
    _check_size(name, text)
    receivers = _receivers(name, select_chapters(chapters, notebooks_dir), list_chapters(notebooks_dir))
    if not receivers:
        return _untyped(text)
    # chapters may declare a parameter with different types: the first reading all of them accept
    for kind in dict.fromkeys(d.kind for d in receivers):
        try:
            value = _from_text(kind, text)
        except ValueError:
            continue
        if all(_fits(other.kind, value) for other in receivers):
            return value
    first = receivers[0]
    try:
        value = _from_text(first.kind, text)
    except ValueError:
        raise _refusal(first, text, " from the command line") from None
    raise _refusal(next(d for d in receivers if not _fits(d.kind, value)), value, " from the command line")


def coerce_parameters(texts: Mapping[str, str], *, chapters: Optional[Sequence[Union[str, Path]]] = None,
                      notebooks_dir: Optional[Path] = None) -> dict:
    """:func:`coerce_parameter` for each ``NAME: TEXT`` of the command line."""
    return {name: coerce_parameter(name, text, chapters=chapters, notebooks_dir=notebooks_dir)
            for name, text in texts.items()}


def pick_kernel() -> str:
    """``corelib`` when that kernel is registered, else ``python3`` (the running interpreter)."""
    from jupyter_client.kernelspec import KernelSpecManager  # lazy: the notebook stack, needed only to run chapters

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebooks(
    run_dir: str | Path,
    *,
    parameters: Optional[Mapping[str, Any]] = None,
    chapters: Optional[Sequence[str]] = None,
    notebooks_dir: Optional[Path] = None,
    kernel_name: Optional[str] = None,
    execution_timeout: Optional[int] = None,
    log_output: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Run chapters in order; stop at the first failure with the failing cell named.

    Args:
        run_dir: the shared run directory, passed to every chapter as ``RUN_DIR``.
        parameters: values for the chapters' parameters (e.g. ``{"SMOKE": True}``), typed as the
            chapters' defaults are; a value is only passed to chapters that declare that parameter.
        chapters: chapters to run, each by number, file stem or file name (e.g. ``["00", "02"]``);
            default: all.
        notebooks_dir: the folder of the chapters (default: the repository's ``notebooks/``).
        kernel_name: default: :func:`pick_kernel`.
        execution_timeout: seconds allowed per cell.
        log_output: stream cell output to the log while running.
        progress: show a progress bar over each chapter's cells.

    Returns:
        One record per chapter: name, seconds, path of the executed copy.

    Raises:
        InvalidInputError: a ``chapters`` entry names no chapter (nothing has run).
        ConfigError: an unknown parameter or a value of the wrong type (nothing has run).
        NotebookFailed: a chapter raised.
    """
    import papermill as pm  # lazy: the notebook stack, needed only to run chapters
    from papermill.exceptions import PapermillExecutionError  # lazy: the notebook stack, needed only to run chapters

    selected = select_chapters(chapters, notebooks_dir)
    if not selected:
        raise InvalidInputError(f"no chapters in {Path(notebooks_dir or paths.notebooks_dir())}; chapters are "
                                f"NN_slug.ipynb files")
    check_parameters(parameters or {}, notebooks_dir, chapters=selected)
    run_dir = Path(run_dir).expanduser().resolve()
    out_dir = run_dir / "notebooks"
    kernel = kernel_name or pick_kernel()
    records = []
    # one owner per run directory: a second run-notebooks (or a CLI stage) on it is refused; the
    # chapters' kernels inherit the lock through the environment and work inside it
    with RunLock(run_dir, what="run-notebooks") as lock:
        out_dir.mkdir(parents=True, exist_ok=True)  # once the run directory is ours: a refused run writes nothing
        # no front end draws widgets here: progress bars write lines, explorers a static view
        headless = headless_environment()
        inherited = {name: os.environ.get(name) for name in (LOCK_ENV, *headless)}
        os.environ.update(lock.environment())
        os.environ.update(headless)
        try:
            for i, nb in enumerate(selected, 1):
                declared = chapter_parameters(nb)
                params = {"RUN_DIR": str(run_dir)}
                params.update({k: v for k, v in (parameters or {}).items() if k in declared})
                out = out_dir / nb.name
                print(f"[{i}/{len(selected)}] {nb.stem} ...", flush=True)
                t0 = time.perf_counter()
                try:
                    pm.execute_notebook(
                        str(nb), str(out), parameters=params, kernel_name=kernel, cwd=str(nb.parent),
                        execution_timeout=execution_timeout, log_output=log_output, progress_bar=progress,
                    )
                except PapermillExecutionError as e:
                    raise NotebookFailed(
                        f"{nb.name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                        f"the executed copy with the traceback is {out}", executed=out,
                    ) from e
                dt = time.perf_counter() - t0
                print(f"[{i}/{len(selected)}] {nb.stem} done in {dt:.1f} s -> {out}", flush=True)
                records.append({"chapter": nb.stem, "seconds": round(dt, 2), "executed": str(out)})
        finally:
            for name, value in inherited.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return records
