"""Gather the results of many runs into the paper's tables (pandas, Markdown, LaTeX).

Each run directory (``make demo``, one sweep point) keeps what the training loops logged:
``RUN_DIR/<pair>/pretrain/metrics.jsonl`` and ``RUN_DIR/<pair>/finetune/metrics.jsonl``, with the
configuration beside them. :func:`collect_results` reads them, so the tables never depend on
what a notebook chose to print:

- ``source``: the source network on its own domain (last evaluated pre-training epoch);
- ``direct``: the same network on the target, unadapted (direct transfer);
- ``adapted``: the fine-tuned teacher on the target (last evaluated fine-tuning epoch).

:func:`pair_table` lays them out as the paper's tables: one row per run, for each source → target
pair the mAP, R-1, R-5 and R-10 in %. :func:`sweep_table` lines the grid values of a sweep up with
the adapted scores; :func:`to_latex` writes any of them for a thesis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from numbers import Real
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from .baselines import BASELINES_DIR, read_baselines
from .cluster.labelers import labeler_info
from .config import EMBEDDED_PAIRS, FinetuneCfg
from .errors import InvalidInputError, UnknownNameError
from .models.complexity import complexity_table, table_backbones, vit_complexity_table
from .models.registry import backbone_info
from .pairs import read_pair
from .published import canonical_task, published_results
from .runtime.checkpoint import read_epoch_log
from .settings import read_saved_config
from .sweeps import REPLACED_PATTERN
from .tables import GROUP_SEP, to_latex  # noqa: F401 - to_latex is this module's public name too

METRICS = {"mAP": "mAP", "rank1": "R-1", "rank5": "R-5", "rank10": "R-10"}
"""Logged metric -> column name in the tables (values in %)."""

STAGE_FILES = {"source": ("pretrain", "source_"), "direct": ("pretrain", "target_"), "adapted": ("finetune", "target_")}


def find_runs(roots: Union[str, Path, Sequence[Union[str, Path]]], *, max_depth: int = 3) -> list[Path]:
    """Run directories at or below ``roots``: folders with ``<pair>/pretrain`` or ``<pair>/finetune`` logs.

    Folders set aside by a rerun (``<point>.replaced-<UTC time>``, see :mod:`corelib.sweeps`) are left
    out below a root: they hold the results the rerun replaced, which would otherwise be tabulated
    beside the new ones. A root given by name is read whatever its name.
    """
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    found: list[Path] = []

    def is_run(d: Path) -> bool:
        return any((p / s / "metrics.jsonl").is_file() for p in d.iterdir() if p.is_dir() for s in ("pretrain", "finetune"))

    def walk(d: Path, depth: int) -> None:
        if not d.is_dir():
            return
        if is_run(d):
            found.append(d)
            return
        if depth < max_depth:
            for child in sorted(p for p in d.iterdir()
                                if p.is_dir() and not p.name.startswith(".") and not REPLACED_PATTERN.search(p.name)):
                walk(child, depth + 1)

    for r in roots:
        walk(Path(r), 0)
    return sorted(dict.fromkeys(p.resolve() for p in found))


def _read_log(log: Path) -> list[dict]:
    """The epochs of a ``metrics.jsonl`` (none when the stage has not run; a last line cut short by a
    killed run is skipped with a warning, see :func:`corelib.runtime.checkpoint.read_epoch_log`)."""
    return read_epoch_log(log)


def _last_evaluated(rows: list[dict], prefix: str) -> Optional[dict]:
    """The last epoch that logged ``<prefix>mAP`` (an evaluated one)."""
    rows = [r for r in rows if isinstance(r.get(f"{prefix}mAP"), (int, float))]
    return rows[-1] if rows else None


def _pair_label(pair_dir: Path) -> str:
    """The task ``source → target``: from the pair's record (``pair.json``, written by the training
    chapters), else the embedded pair of that name, else the folder name."""
    record = read_pair(pair_dir)
    if record and record.get("task"):
        return record["task"]
    pair = pair_dir.name
    return f"{EMBEDDED_PAIRS[pair][0]} → {EMBEDDED_PAIRS[pair][1]}" if pair in EMBEDDED_PAIRS else pair


SETTING_COLUMNS = {"backbone": "model.backbone", "labeler": "cluster.labeler", "num_clusters": "cluster.num_clusters",
                   "ecab": "model.ecab", "fusion": "model.fusion"}
"""Result column -> the fine-tuning setting it shows (read from ``finetune/config.yaml``). ``num_clusters``
is shown for a pseudo-labeller that declares ``needs_k`` (k-means, or one registered outside corelib
with ``register_labeler(name, needs_k=True)``), and is empty for the others (DBSCAN finds its own K)."""


def _settings(path: Path) -> dict:
    """The :data:`SETTING_COLUMNS` of a fine-tuning ``config.yaml`` (None each when there is none)."""
    if not path.is_file():
        return dict.fromkeys(SETTING_COLUMNS)
    flat = read_saved_config(FinetuneCfg, path).flat()
    shown = {column: flat[name] for column, name in SETTING_COLUMNS.items()}
    if not labeler_info(shown["labeler"]).needs_k:
        shown["num_clusters"] = None
    return shown


def collect_results(runs: Iterable[Union[str, Path]], *, names: Optional[Sequence[str]] = None):
    """One row per (run, pair, stage) with the scores in % and the run's settings.

    Columns: ``run``, ``pair``, ``task`` (source → target), ``method`` (the recipe), ``stage``,
    ``epoch``, ``mAP``, ``R-1``,
    ``R-5``, ``R-10``, then the fine-tuning settings that sweeps vary (:data:`SETTING_COLUMNS`:
    ``backbone``, ``labeler``, ``num_clusters``, ``ecab``, ``fusion``) and, for sweep points, the
    grid values (from ``sweep.json``). The recipes chapter 07 compared on a pair
    (``<pair>/baselines/<recipe>/``) are rows of their own, run ``<run> · <recipe>``, so the main
    table lists every method under its name.

    Args:
        runs: run directories (see :func:`find_runs`).
        names: a label per run (default: the folder names).
    """
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    runs = [Path(r) for r in runs]
    names = list(names) if names is not None else [r.name for r in runs]
    rows = []
    for run, name in zip(runs, names):
        point = {}
        if (run / "sweep.json").is_file():
            point = json.loads((run / "sweep.json").read_text()).get("point", {})
        for pair_dir in sorted(p for p in run.iterdir() if p.is_dir()):
            settings = _settings(pair_dir / "finetune" / "config.yaml")
            logs = {folder: _read_log(pair_dir / folder / "metrics.jsonl") for folder in ("pretrain", "finetune")}
            method = (_pair_record(pair_dir) or {}).get("recipe", "corereid_v2")
            for stage, (folder, prefix) in STAGE_FILES.items():
                last = _last_evaluated(logs[folder], prefix)
                if last is None:
                    continue
                row = {"run": name, "pair": pair_dir.name, "task": _pair_label(pair_dir), "method": method,
                       "stage": stage, "epoch": last.get("epoch")}
                row.update({col: round(100 * last[f"{prefix}{key}"], 1) for key, col in METRICS.items()
                            if isinstance(last.get(f"{prefix}{key}"), (int, float))})
                row.update(settings)
                row.update(point)
                rows.append(row)
            rows.extend(_baseline_rows(pair_dir, name, point))
    return pd.DataFrame(rows)


def _pair_record(pair_dir: Path) -> Optional[dict]:
    return read_pair(pair_dir)


def _baseline_rows(pair_dir: Path, run_name: str, point: dict) -> list[dict]:
    """Rows of the recipes chapter 07 trained in ``pair_dir/baselines/`` (direct and adapted), each
    under the run name ``<run> · <recipe>`` and ``method`` = the recipe."""
    rows = []
    for recipe, res in read_baselines(pair_dir).items():
        settings = _settings(pair_dir / BASELINES_DIR / recipe / "finetune" / "config.yaml")
        stages = {"direct": res.direct}
        evaluated = [h for h in res.history if "target_mAP" in h]
        if evaluated:
            last = evaluated[-1]
            stages["adapted"] = {k[len("target_"):]: v for k, v in last.items() if k.startswith("target_")}
            stages["adapted"]["epoch"] = last.get("epoch")
        for stage, scores in stages.items():
            if not isinstance(scores.get("mAP"), (int, float)):
                continue
            row = {"run": f"{run_name}{GROUP_SEP}{recipe}", "pair": pair_dir.name, "task": _pair_label(pair_dir),
                   "method": recipe, "stage": stage, "epoch": scores.get("epoch", 0)}
            row.update({col: round(100 * scores[key], 1) for key, col in METRICS.items()
                        if isinstance(scores.get(key), (int, float))})
            row.update(settings)
            row.update(point)
            rows.append(row)
    return rows


def pair_table(results, *, stage: str = "adapted", metrics: Sequence[str] = ("mAP", "R-1", "R-5", "R-10")):
    """The paper's layout: one row per run, for each task its ``metrics`` (columns ``task · metric``)."""
    sub = results[results["stage"] == stage] if "stage" in results else results
    if sub.empty:
        present = sorted(set(results["stage"])) if "stage" in results else []
        raise InvalidInputError(f"no {stage!r} results in these runs (stages present: {present}); run chapters 02 and 03 "
                         f"(make demo) or `corelib sweep` first")
    table = sub.pivot_table(index="run", columns="task", values=[m for m in metrics if m in sub], aggfunc="first")
    table = table.reorder_levels([1, 0], axis=1)
    tasks = list(dict.fromkeys(sub["task"]))
    table = table[[(t, m) for t in tasks for m in metrics if (t, m) in table.columns]]
    table.columns = [f"{t} · {m}" for t, m in table.columns]
    return table.reset_index()


def adaptation_table(results):
    """Direct transfer against adaptation per run and task: mAP and R-1 of both and the mAP gain."""
    keys = ["run", "pair", "task"]
    direct = results[results["stage"] == "direct"].set_index(keys)[["mAP", "R-1"]]
    adapted = results[results["stage"] == "adapted"].set_index(keys)[["mAP", "R-1"]]
    table = direct.add_prefix("direct ").join(adapted.add_prefix("adapted "), how="inner")
    table["mAP gain"] = (table["adapted mAP"] - table["direct mAP"]).round(1)
    return table.reset_index()


def sweep_table(results, grid_keys: Sequence[str], *, stage: str = "adapted"):
    """The grid values of each sweep point beside its ``stage`` scores, one row per (point, task);
    runs that are not sweep points (no grid value) are left out."""
    missing = [k for k in grid_keys if k not in results.columns]
    if missing:
        raise InvalidInputError(f"grid keys {missing} are not in the results; are these sweep runs (sweep.json)?")
    sub = results[(results["stage"] == stage) & results[list(grid_keys)].notna().any(axis=1)]  # sweep points only
    return sub[["run", "task", *grid_keys, "mAP", "R-1", "R-5", "R-10"]].reset_index(drop=True)


BASE_COLUMNS = ("run", "pair", "task", "method", "stage", "epoch", *METRICS.values(), *SETTING_COLUMNS)


def grid_keys(results) -> list[str]:
    """The sweep grid's keys present in ``results`` (the columns :func:`collect_results` took from
    ``sweep.json``)."""
    return [c for c in results.columns if c not in BASE_COLUMNS]


def complexity_results(backbones: Optional[Sequence[str]] = None, *, timing: bool = True, device=None,
                       input_size: tuple[int, int] = (256, 128), batch: int = 16, smoke: bool = False):
    """The paper's complexity table (parameters, GMACs, images/s) as a DataFrame; ``timing=False``
    skips the images/s.

    Each backbone goes into the network its registration names (``register_backbone(...,
    complexity=...)``): CORE-ReID V2's (:func:`~corelib.models.complexity.complexity_table`, with the
    paper's columns) or TransReID's (:func:`~corelib.models.complexity.vit_complexity_table`: SIE for 6
    cameras, JPM, 751 classes; below the ResNets, without paper columns). ``backbones`` None or empty:
    every backbone registered for the table; ``smoke``: the first of each network.
    """
    import pandas as pd  # lazy: pandas is slow to import and only the tables need it

    names = list(backbones) if backbones else [*table_backbones("corereid_net"), *table_backbones("transreid_net")]
    networks = {name: backbone_info(name).complexity for name in names}
    unknown = [name for name, network in networks.items() if network not in ("corereid_net", "transreid_net")]
    if unknown:
        raise InvalidInputError(f"backbones {unknown} are not registered for the complexity table; register them "
                                "with register_backbone(..., complexity='corereid_net') or leave them out")
    resnets = [n for n in names if networks[n] == "corereid_net"]
    vits = [n for n in names if networks[n] == "transreid_net"]
    if smoke:
        resnets, vits = resnets[:1], vits[:1]
    rows = complexity_table(resnets, device=device, input_size=input_size, batch=batch, iters=2 if timing else 0)
    if vits:
        rows += vit_complexity_table(vits, device=device, input_size=input_size, batch=batch,
                                     iters=2 if timing else 0)
    df = pd.DataFrame(rows)
    out = pd.DataFrame({"backbone": df["backbone"], "params (M)": (df["params"] / 1e6).round(2),
                        "params, paper's count (M)": (df["params_paper_convention"] / 1e6).round(2),
                        "params, paper (M)": (df["params_paper"] / 1e6).round(2), "GMACs": df["gmacs"].round(2),
                        "GFLOPs, paper (counts MACs)": df["gflops_paper"]})
    if timing:
        out[f"images/s ({df['device'][0]}, batch {batch})"] = df["images_per_s"].round(1)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Published numbers beside one's own (corelib.published holds the transcribed tables)


KIND_COLUMN = "kind"
"""Column of :func:`beside_published` that says where a row's numbers come from: ``measured`` or ``paper``."""

MEASURED, PAPER = "measured", "paper"

_METRIC_KEYS = {"map": "mAP", "r1": "R-1", "rank1": "R-1", "r5": "R-5", "rank5": "R-5", "r10": "R-10", "rank10": "R-10"}
"""Spellings of the metrics accepted in one's own rows (lower case, without ``-``, ``_``, spaces) -> column."""


def _metric_column(name) -> Optional[str]:
    """The table column of metric ``name`` ("mAP", "R-1", "rank1", "Rank-5" ...), None for any other name."""
    return _METRIC_KEYS.get(str(name).lower().replace("-", "").replace("_", "").replace(" ", ""))


def published_table(task: Optional[str] = None, method: Optional[str] = None, setting: Optional[str] = None):
    """The published results (:mod:`corelib.published`) as a DataFrame, one row per record.

    Columns: ``method``, ``backbone``, ``mAP``, ``R-1``, ``R-5``, ``R-10`` (in %, NaN where the source
    gives none), ``source``, ``note``; ``task`` and ``setting`` come first when the rows span several.
    ``task`` takes any spelling :func:`corelib.published.canonical_task` reads; the filters are those of
    :func:`corelib.published.published_results`.
    """
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    records = published_results(task, method, setting)
    columns = ["task", "setting", "method", "backbone", *METRICS.values(), "source", "note"]
    rows = [{"task": r.task, "setting": r.setting, "method": r.method, "backbone": r.backbone,
             **{METRICS[k]: v for k, v in r.metrics.items()}, "source": r.source, "note": r.note} for r in records]
    table = pd.DataFrame(rows, columns=columns)
    table[list(METRICS.values())] = table[list(METRICS.values())].astype(float)  # None -> NaN, also in empty columns
    # One task (or one setting) needs no column repeating it on every row.
    single = [c for c in ("task", "setting") if table[c].nunique() <= 1]
    return table.drop(columns=single)


def _own_metrics(values: Mapping, where: str) -> dict[str, float]:
    """``{"R-1": ..}`` of one own row given as a mapping of metric -> value (in %)."""
    out = {}
    for name, value in values.items():
        column = _metric_column(name)
        if column is None:
            raise InvalidInputError(f"{where}: unknown metric {name!r}; give mAP, R-1, R-5 or R-10 (in %)")
        out[column] = _number(value, f"{where} {name}")
    return out


def _number(value, where: str) -> float:
    """``value`` as a float (NaN for None); anything else is an error naming ``where``."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidInputError(f"{where}: {value!r} is not a number (scores are in %)")
    return float(value)


def _pick_group(groups: Sequence[str], task: str, what: str) -> str:
    """The one task label among ``groups`` (a workbench table's tasks) that stands for ``task``.

    A label that reads as the published task is taken; a table of a single task is taken whatever its
    label (an embedded pair such as ``market_like → cuhk_like`` is laid beside the task the caller names)
    unless that label reads as another published task.
    """
    def read(label: str) -> Optional[str]:
        try:
            return canonical_task(label)
        except UnknownNameError:
            return None

    matching = [g for g in groups if read(g) == task]
    if len(matching) == 1:
        return matching[0]
    if len(groups) == 1 and read(groups[0]) is None:
        return groups[0]
    raise InvalidInputError(f"{what} holds the tasks {list(groups)}; none (or more than one) of them is {task!r}: "
                            f"pass the rows of that task alone")


def _own_rows(own, task: str, label: str, stage: str) -> list[tuple[str, dict[str, float]]]:
    """(name, {column: value}) of each measured row in ``own`` (see :func:`beside_published`)."""
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    if own is None:
        return []
    if isinstance(own, pd.DataFrame):
        cols = [str(c) for c in own.columns]

        def run_names(frame) -> list[str]:
            runs = [str(r) for r in (frame["run"] if "run" in frame.columns else frame.index)]
            return [label] if len(runs) == 1 else [f"{label}, {r}" for r in runs]

        if any(GROUP_SEP in c for c in cols):  # pair_table: "<task> · <metric>" columns, one row per run
            groups = list(dict.fromkeys(c.partition(GROUP_SEP)[0] for c in cols if GROUP_SEP in c))
            group = _pick_group(groups, task, "the pair table")
            picked = {c: _metric_column(c.partition(GROUP_SEP)[2]) for c in cols if c.startswith(group + GROUP_SEP)}
            picked = {c: m for c, m in picked.items() if m}
            return [(name, {m: _number(row[c], f"{name} {m}") for c, m in picked.items()})
                    for name, (_, row) in zip(run_names(own), own.iterrows())]
        if {"stage", "task"} <= set(cols):  # collect_results: one row per (run, pair, stage)
            sub = own[own["stage"] == stage]
            if sub.empty:
                raise InvalidInputError(f"no {stage!r} rows in these results (stages present: "
                                        f"{sorted(set(own['stage']))})")
            sub = sub[sub["task"] == _pick_group(list(dict.fromkeys(sub["task"])), task, "the results")]
            metric_cols = [c for c in METRICS.values() if c in sub.columns]
            return [(name, {c: _number(row[c], f"{name} {c}") for c in metric_cols})
                    for name, (_, row) in zip(run_names(sub), sub.iterrows())]
        if "method" in cols:  # a frame of one's own: a method column and metric columns
            metric_cols = {c: _metric_column(c) for c in cols if _metric_column(c)}
            return [(str(row["method"]), {m: _number(row[c], f"{row['method']} {m}") for c, m in metric_cols.items()})
                    for _, row in own.iterrows()]
        raise InvalidInputError(f"cannot read measured rows from a table with columns {cols}: give the output of "
                                f"pair_table or collect_results, or a table with a 'method' column")
    if isinstance(own, Mapping):
        if all(_metric_column(k) is not None for k in own) and not any(isinstance(v, Mapping) for v in own.values()):
            return [(label, _own_metrics(own, label))] if own else []  # one row: {"mAP": .., "R-1": ..}
        rows = []
        for name, values in own.items():
            if not isinstance(values, Mapping):
                raise InvalidInputError(f"measured row {name!r}: give its scores as a mapping such as "
                                        f"{{'mAP': 66.4, 'R-1': 66.9}}, not {values!r}")
            rows.append((str(name), _own_metrics(values, f"measured row {name!r}")))
        return rows
    raise InvalidInputError(f"own results are a mapping (method -> {{'mAP': .., 'R-1': ..}}) or a DataFrame, "
                            f"not {type(own).__name__}")


def beside_published(own, task: str, *, label: str = "ours (measured)", method: Optional[str] = None,
                     setting: Optional[str] = None, stage: str = "adapted", formatted: bool = True,
                     missing: str = "–", source: bool = True, notes: bool = True):
    """One's measured scores on ``task`` laid beside the published rows of that task, for a thesis table.

    The published rows come first (in the order of the source notes), then the measured ones; the
    ``kind`` column says ``paper`` or ``measured``. Columns: ``method``, ``backbone``, ``kind``, ``mAP``,
    ``R-1``, ``R-5``, ``R-10``, then ``source`` and ``note`` (the latter only when a row has one).
    ``to_latex(beside_published(...))`` writes it.

    Args:
        own: the measured rows, scores in %: a mapping ``method -> {"mAP": .., "R-1": ..}`` (also
            ``rank1`` / ``R1`` ...), or one such score mapping alone (named ``label``); the output of
            :func:`pair_table` or :func:`collect_results` (the rows of ``task``, or of their only task:
            an embedded pair stands for the task named; ``stage`` picks collect_results' stage; rows are
            named ``label``, or ``label, run`` when there are several runs); a DataFrame with a ``method``
            column and metric columns; or None for the published rows alone.
        task: the published task, any spelling :func:`corelib.published.canonical_task` reads
            (an unknown one raises :class:`~corelib.errors.UnknownNameError` naming the known tasks).
        method, setting: filters on the published rows (see :func:`corelib.published.published_results`).
        formatted: cells as text, each published number with the decimals its source prints (49.50 stays
            49.50, where :func:`to_latex` alone would print 49.5) and the measured ones with the most
            decimals of the task, ``missing`` for an empty cell (:func:`to_latex` would print "nan").
            False keeps floats and NaN, for arithmetic.
        source, notes: keep the ``source`` and ``note`` columns.
    """
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    task = canonical_task(task)
    records = published_results(task, method, setting)
    measured = _own_rows(own, task, label, stage)
    metric_cols = list(METRICS.values())
    decimals = max((r.decimals for r in records), default=1)

    def cell(value, digits: int):
        if value is None or value != value:  # None or NaN
            return missing if formatted else float("nan")
        return f"{value:.{digits}f}" if formatted else float(value)

    rows = [{"method": r.method, "backbone": r.backbone, KIND_COLUMN: PAPER,
             **{METRICS[k]: cell(v, r.decimals) for k, v in r.metrics.items()}, "source": r.source, "note": r.note}
            for r in records]
    rows += [{"method": name, "backbone": "", KIND_COLUMN: MEASURED,
              **{c: cell(values.get(c), decimals) for c in metric_cols}, "source": "", "note": ""}
             for name, values in measured]
    table = pd.DataFrame(rows, columns=["method", "backbone", KIND_COLUMN, *metric_cols, "source", "note"])
    drop = [] if source else ["source"]
    if not notes or not any(table["note"]):
        drop.append("note")
    return table.drop(columns=drop).reset_index(drop=True)


def published_beside_runs(results, tasks: Sequence[str], *, stage: str = "adapted") -> dict:
    """For each published ``task``: :func:`beside_published` with the rows of ``results`` (of
    :func:`collect_results`) measured on that very task, or the published rows alone when no run
    trained on it (the embedded pairs only imitate real tasks: their numbers are never laid beside
    a real task's). Returns one table, the canonical ``task`` first, tasks in the order given."""
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    def same(label: str, wanted: str) -> bool:
        try:
            return canonical_task(label) == wanted
        except (UnknownNameError, InvalidInputError):
            return False

    tables = []
    for task in tasks:
        wanted = canonical_task(task)
        mine = results[results["task"].map(lambda t: same(t, wanted))] if len(results) else results
        own = mine if len(mine) and (mine["stage"] == stage).any() else None
        table = beside_published(own, wanted, stage=stage)
        table.insert(0, "task", wanted)
        tables.append(table)
    if not tables:
        raise InvalidInputError("no published task asked for; name some, e.g. 'market1501->cuhk03np' "
                                "(corelib.published.list_tasks())")
    return pd.concat(tables, ignore_index=True).fillna("")
