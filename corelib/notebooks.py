"""Execute the notebook chapters in order with papermill, into one run directory.

Used by ``make demo`` (full parameters) and by the notebook tests (``SMOKE=True``). Chapters are
``notebooks/NN_*.ipynb`` in numeric order; each receives ``RUN_DIR``, ``SMOKE`` and ``SEED`` (plus
any other parameter its ``parameters`` cell declares) and later chapters read what earlier ones
wrote to ``RUN_DIR``. Executed copies go to ``RUN_DIR/notebooks/`` and are never committed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from . import paths

KERNEL_NAME = "corelib"
"""The Jupyter kernel ``make`` registers for the project's virtual environment."""

CHAPTER_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A chapter raised: the message names the notebook, the failing cell and the executed copy."""


def list_chapters(notebooks_dir: Optional[Path] = None) -> list[Path]:
    """The chapters ``NN_slug.ipynb`` in numeric order."""
    nb_dir = Path(notebooks_dir or paths.notebooks_dir())
    return sorted(p for p in nb_dir.glob("*.ipynb") if CHAPTER_PATTERN.match(p.name))


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The parameters a notebook declares (papermill's inspection of its ``parameters`` cell)."""
    import papermill as pm

    return pm.inspect_notebook(str(path))


def check_parameters(parameters: Mapping[str, Any], notebooks_dir: Optional[Path] = None) -> None:
    """Refuse a parameter that no chapter declares: a chapter only receives the parameters it
    declares, so a misspelt name (``STYLE_SETS``) would otherwise be dropped without a word.

    Raises:
        ConfigError: names the unknown parameter and the closest declared one.
    """
    import difflib

    from .errors import ConfigError

    declared = {"RUN_DIR"}.union(*(notebook_parameters(p) for p in list_chapters(notebooks_dir)))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(declared), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"no chapter has a parameter {unknown[0]!r}{hint} (`papermill --help-notebook "
                          f"notebooks/NN_....ipynb` lists a chapter's parameters)")


def pick_kernel() -> str:
    """``corelib`` when that kernel is registered, else ``python3`` (the running interpreter)."""
    from jupyter_client.kernelspec import KernelSpecManager

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
        parameters: values for the chapters' parameters (e.g. ``{"SMOKE": True}``); a value is
            only passed to chapters that declare that parameter.
        chapters: chapter prefixes or names to run (e.g. ``["00", "02"]``); default: all.
        kernel_name: default: :func:`pick_kernel`.
        execution_timeout: seconds allowed per cell.
        log_output: stream cell output to the log while running.
        progress: show a progress bar over each chapter's cells.

    Returns:
        One record per chapter: name, seconds, path of the executed copy.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    check_parameters(parameters or {}, notebooks_dir)
    run_dir = Path(run_dir).expanduser().resolve()
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = list_chapters(notebooks_dir)
    if chapters:
        wanted = [str(c) for c in chapters]
        selected = [p for p in selected if any(p.name.startswith(w) or p.stem == w for w in wanted)]
        if not selected:
            raise ValueError(f"no chapter matches {wanted}; chapters: {[p.name for p in list_chapters(notebooks_dir)]}")
    kernel = kernel_name or pick_kernel()
    records = []
    for i, nb in enumerate(selected, 1):
        declared = notebook_parameters(nb)
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
                f"the executed copy with the traceback is {out}"
            ) from e
        dt = time.perf_counter() - t0
        print(f"[{i}/{len(selected)}] {nb.stem} done in {dt:.1f} s -> {out}", flush=True)
        records.append({"chapter": nb.stem, "seconds": round(dt, 2), "executed": str(out)})
    return records
