"""Run directories and the only writers notebooks use: figures, tables and metrics.

A *run directory* collects everything one experiment (one ``make demo``, one sweep point) produces:

```
RUN_DIR/
  env.json                 versions, device, git commit (corelib.repro.env_report)
  params/<notebook>.json   the resolved parameters of each chapter that ran
  metrics.json             headline numbers, written by record_metric (atomic)
  figures/                 figures and tables of smoke runs (full runs write to figures/)
  notebooks/               executed notebooks (corelib.notebooks.run_notebooks)
```

Smoke runs keep their figures inside the run directory so that CI never churns the committed
``figures/``; full runs save curated figures to ``figures/`` (``$COREREID_FIGURES``). Every figure
gets a JSON sidecar with its parameters, seed and git commit.

Example::

    run = start_run(RUN_DIR, smoke=SMOKE, seed=SEED, params={"K": 900}, name="03_finetuning")
    save_figure(fig, "03_map_per_epoch")
    record_metric("target_mAP", 0.412)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from . import paths
from .errors import InvalidInputError
from .paths import atomic_write_text
from .tables import markdown_table, to_latex
from .repro import env_report, git_sha


def _jsonable(x: Any) -> Any:
    """Turn numpy / torch scalars, paths and tuples into plain JSON values; NaN/inf become None."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


@dataclass
class Run:
    """One run directory and the settings its writers need."""

    run_dir: Path
    smoke: bool = False
    seed: Optional[int] = None
    params: dict = field(default_factory=dict)
    name: str = "run"
    recorded: list = field(default_factory=list)
    """Names of the metrics this chapter recorded, in order (:func:`chapter_metrics`)."""
    default_dir: bool = False
    """True when ``RUN_DIR`` was empty (``runs/<name>``): the analysis chapters then also read the
    networks of ``make demo`` (:func:`corelib.paths.demo_run_dir`) and share their quick networks."""

    @property
    def figures_dir(self) -> Path:
        """``RUN_DIR/figures`` for smoke runs, the curated ``figures/`` folder for full runs."""
        return self.run_dir / "figures" if self.smoke else paths.figures_dir()

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.json"

    def _sidecar(self, name: str, params: Optional[Mapping], files: Sequence[Path]) -> dict:
        return {
            "name": name,
            "files": [p.name for p in files],
            "notebook": self.name,
            "smoke": self.smoke,
            "seed": self.seed,
            "git_sha": git_sha(),
            "params": _jsonable({**self.params, **(params or {})}),
        }

    def save_figure(
        self,
        fig: Any,
        name: str,
        *,
        formats: Sequence[str] = ("png", "pdf"),
        params: Optional[Mapping] = None,
        dpi: int = 150,
    ) -> "SavedFiles":
        """Save a matplotlib figure as PNG + PDF with a JSON sidecar; returns the written paths.

        Metadata that changes on every save (creation date, software version) is stripped, so a
        re-run with the same inputs gives the same files.
        """
        _check_name(name)
        out = self.figures_dir
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            meta = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}.get(fmt)
            fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
            written.append(path)
        side = out / f"{name}.json"
        atomic_write_text(side, json.dumps(self._sidecar(name, params, written), indent=2, sort_keys=True) + "\n")
        return SavedFiles(written + [side])

    def save_table(self, table: Any, name: str, *, params: Optional[Mapping] = None, latex: bool = False,
                   caption: str = "") -> "SavedFiles":
        """Save a table (pandas DataFrame or list of dicts) as CSV and Markdown (and a booktabs
        ``.tex`` when ``latex``, with ``caption``), with a sidecar."""
        import pandas as pd  # lazy: pandas is slow to import and only tables need it

        _check_name(name)
        df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
        out = self.figures_dir
        out.mkdir(parents=True, exist_ok=True)
        csv, md = out / f"{name}.csv", out / f"{name}.md"
        atomic_write_text(csv, df.to_csv(index=False))
        atomic_write_text(md, markdown_table(df.columns, df.itertuples(index=False)))
        files = [csv, md]
        if latex:
            files.append(out / f"{name}.tex")
            atomic_write_text(files[-1], to_latex(df, caption=caption, label=f"tab:{name}"))
        side = out / f"{name}.json"
        atomic_write_text(side, json.dumps(self._sidecar(name, params, files), indent=2, sort_keys=True) + "\n")
        return SavedFiles([*files, side])

    def record_metric(self, name: str, value: Any) -> None:
        """Add or replace one headline number in ``RUN_DIR/metrics.json`` (atomic)."""
        metrics = read_metrics(self.run_dir)
        metrics[name] = _jsonable(value)
        if name not in self.recorded:
            self.recorded.append(name)
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


class SavedFiles(list):
    """The paths :meth:`Run.save_figure` / :meth:`Run.save_table` wrote: a list of ``Path``, shown
    in a notebook as one line ("saved 05_rank_lists: .csv .md .json in figures/") instead of a
    list of ``PosixPath(...)`` above the figure."""

    def _summary(self) -> str:
        if not self:
            return "saved nothing"
        first = Path(self[0])
        return f"saved {first.stem}: {' '.join(Path(p).suffix for p in self)} in {first.parent}"

    def _ipython_display_(self) -> None:
        print(self._summary())


def show_table(table: Any):
    """A table (list of dicts, or a DataFrame) as a pandas DataFrame, which a notebook renders as
    a table rather than a list of dicts; ``None`` or an empty table (one the chapter did not build,
    e.g. no sweep point, or ``STYLE_COPIES`` off) shows nothing."""
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    if table is None or len(table) == 0:
        return None
    return table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))


def chapter_metrics(run: Optional[Run] = None):
    """The metrics the current chapter recorded (not the whole run's ``metrics.json``), as a
    two-column table of name and value."""
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    run = run or current_run()
    metrics = read_metrics(run.run_dir)
    rows = [{"metric": name, "value": metrics[name]} for name in run.recorded if name in metrics]
    return pd.DataFrame(rows, columns=["metric", "value"])


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InvalidInputError(f"output name {name!r} must be a plain file stem such as '05_cluster_sizes'")


_CURRENT: Optional[Run] = None


def start_run(
    run_dir: Optional[str | Path] = None,
    *,
    smoke: bool = False,
    seed: Optional[int] = None,
    params: Optional[Mapping] = None,
    name: str = "run",
) -> Run:
    """Open (or create) a run directory and make it the target of the module-level writers.

    Args:
        run_dir: the directory; None or "" creates ``runs/<name>`` under :func:`paths.runs_root`.
            A relative path is taken from the repository root (``"runs/demo"`` is the folder
            ``make demo`` writes, wherever the notebook's kernel was started), as on the command line
            run from the checkout.
        smoke: smoke runs keep figures inside the run directory.
        seed: recorded in sidecars and ``params/<name>.json``.
        params: the notebook's parameters, recorded as given.
        name: the chapter or experiment name, e.g. ``00_data_tour``.
    """
    global _CURRENT
    rd = paths.resolve_in_repo(run_dir) if run_dir else paths.runs_root() / name
    rd.mkdir(parents=True, exist_ok=True)
    run = Run(rd.resolve(), smoke=smoke, seed=seed, params=dict(params or {}), name=name, default_dir=not run_dir)
    atomic_write_text(rd / "env.json", json.dumps(_jsonable(env_report()), indent=2, sort_keys=True) + "\n")
    record = {"name": name, "smoke": smoke, "seed": seed, "params": _jsonable(run.params)}
    atomic_write_text(rd / "params" / f"{name}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    _CURRENT = run
    return run


def current_run() -> Run:
    """The run opened last by :func:`start_run`."""
    if _CURRENT is None:
        raise RuntimeError("no run is open: call corelib.start_run(RUN_DIR, smoke=SMOKE, seed=SEED) first")
    return _CURRENT


def save_figure(fig: Any, name: str, **kwargs: Any) -> SavedFiles:
    """Save a figure into the current run (see :meth:`Run.save_figure`)."""
    return current_run().save_figure(fig, name, **kwargs)


def save_table(table: Any, name: str, **kwargs: Any) -> SavedFiles:
    """Save a table into the current run (see :meth:`Run.save_table`)."""
    return current_run().save_table(table, name, **kwargs)


def record_metric(name: str, value: Any) -> None:
    """Record a headline number in the current run's ``metrics.json``."""
    current_run().record_metric(name, value)


def read_metrics(run_dir: str | Path) -> dict:
    """The metrics recorded so far in a run directory (empty when none)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
