"""Experiment sweeps: the chapters run over a grid of parameters, one run directory per point.

A sweep file (YAML) names the chapters, the parameters shared by every point and the grid::

    chapters: ["02", "03"]
    parameters: {PAIRS: ["person"]}
    grid:
      FINETUNE_OVERRIDES.cluster.num_clusters: [120, 160]   # A.b sets field b of the dict parameter A
      FINETUNE_OVERRIDES.model.ecab: [true, false]          # (b may be dotted: a setting of a group)

Every combination gets ``ROOT/<point name>/`` with ``sweep.json`` (the point's values) and its
figures in ``ROOT/<point name>/figures/`` (never in the curated ``figures/``). A point is
finished when ``sweep_done.json`` exists: running the sweep again skips it, and an interrupted
point starts again with ``RESUME`` (the training loops continue from their ``last.pt``).
:mod:`corelib.results` and notebook 07 gather the runs into tables.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .errors import ConfigError


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict]:
    """Every combination of the grid's values, in the order of its keys: ``[{key: value}, ...]``.

    Raises:
        ConfigError: a grid entry is not a non-empty list.
    """
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"grid entry {key!r} must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(point: Mapping[str, Any]) -> str:
    """A folder name for a grid point, readable and unique: ``num_clusters=120,ecab=true``."""
    def short(key: str) -> str:
        return key.split(".")[-1]

    parts = [f"{short(k)}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in point.items()]
    name = ",".join(parts) or "default"
    return re.sub(r"[^A-Za-z0-9=,._+-]", "_", name)


def point_parameters(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict:
    """``base`` with the point's values applied; ``A.b`` sets field ``b`` of the dict parameter ``A``
    (``FINETUNE_OVERRIDES.cluster.num_clusters`` sets the dotted override ``cluster.num_clusters``)."""
    params = json.loads(json.dumps(dict(base)))  # a deep copy of plain values
    for key, value in point.items():
        if "." in key:
            name, field = key.split(".", 1)
            if not isinstance(params.setdefault(name, {}), dict):
                raise ConfigError(f"{key}: parameter {name} is not a dict")
            params[name][field] = value
        else:
            params[key] = value
    return params


def load_sweep(path: Union[str, Path]) -> dict:
    """Read a sweep file: ``{"chapters": [...], "parameters": {...}, "grid": {...}}``.

    Raises:
        ConfigError: unknown top-level keys or no grid.
    """
    import yaml

    spec = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(spec) - {"chapters", "parameters", "grid"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; a sweep file has chapters, parameters and grid")
    if not spec.get("grid"):
        raise ConfigError(f"{path}: no grid; add e.g. grid: {{SEED: [1, 2]}}")
    return {"chapters": spec.get("chapters"), "parameters": spec.get("parameters") or {}, "grid": spec["grid"]}


def run_sweep(root: Union[str, Path], grid: Mapping[str, Sequence[Any]], *, parameters: Optional[Mapping] = None,
              chapters: Optional[Sequence[str]] = None, execution_timeout: Optional[int] = None) -> list[dict]:
    """Run ``chapters`` once per grid point into ``root/<point name>/``; finished points are skipped.

    Returns one record per point: name, run directory, the point, and whether it ran now.
    """
    from .notebooks import run_notebooks
    from .paths import atomic_write_text

    root = Path(root)
    points = expand_grid(grid)
    records = []
    for i, point in enumerate(points, 1):
        name = point_name(point)
        run_dir = root / name
        done = run_dir / "sweep_done.json"
        if done.is_file():
            print(f"[sweep {i}/{len(points)}] {name}: finished earlier, skipped", flush=True)
            records.append({"name": name, "run_dir": str(run_dir), "point": point, "ran": False})
            continue
        print(f"[sweep {i}/{len(points)}] {name} -> {run_dir}", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        params = point_parameters({**(parameters or {}), "RESUME": True}, point)
        atomic_write_text(run_dir / "sweep.json", json.dumps({"point": point, "parameters": params}, indent=2) + "\n")
        # a point's figures stay in its run directory (RUN_DIR/figures), never in the curated figures/
        previous = os.environ.get("COREREID_FIGURES")
        os.environ["COREREID_FIGURES"] = str((run_dir / "figures").resolve())
        try:
            chapter_records = run_notebooks(run_dir, parameters=params, chapters=chapters,
                                            execution_timeout=execution_timeout, progress=False)
        finally:
            if previous is None:
                os.environ.pop("COREREID_FIGURES", None)
            else:
                os.environ["COREREID_FIGURES"] = previous
        atomic_write_text(done, json.dumps({"point": point, "chapters": chapter_records}, indent=2) + "\n")
        records.append({"name": name, "run_dir": str(run_dir), "point": point, "ran": True})
    return records
