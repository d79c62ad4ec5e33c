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
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from .errors import InvalidInputError

METRICS = {"mAP": "mAP", "rank1": "R-1", "rank5": "R-5", "rank10": "R-10"}
"""Logged metric -> column name in the tables (values in %)."""

STAGE_FILES = {"source": ("pretrain", "source_"), "direct": ("pretrain", "target_"), "adapted": ("finetune", "target_")}


def find_runs(roots: Union[str, Path, Sequence[Union[str, Path]]], *, max_depth: int = 3) -> list[Path]:
    """Run directories at or below ``roots``: folders with ``<pair>/pretrain`` or ``<pair>/finetune`` logs.

    Folders set aside by a rerun (``<point>.replaced-<UTC time>``, see :mod:`corelib.sweeps`) are left
    out below a root: they hold the results the rerun replaced, which would otherwise be tabulated
    beside the new ones. A root given by name is read whatever its name.
    """
    from .sweeps import REPLACED_PATTERN

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
    """The epochs of a ``metrics.jsonl`` (none when the stage has not run)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def _last_evaluated(rows: list[dict], prefix: str) -> Optional[dict]:
    """The last epoch that logged ``<prefix>mAP`` (an evaluated one)."""
    rows = [r for r in rows if isinstance(r.get(f"{prefix}mAP"), (int, float))]
    return rows[-1] if rows else None


def _pair_label(pair_dir: Path) -> str:
    """The task ``source → target``: from the pair's record (``pair.json``, written by the training
    chapters), else the embedded pair of that name, else the folder name."""
    from .config import EMBEDDED_PAIRS
    from .pairs import read_pair

    record = read_pair(pair_dir)
    if record and record.get("task"):
        return record["task"]
    pair = pair_dir.name
    return f"{EMBEDDED_PAIRS[pair][0]} → {EMBEDDED_PAIRS[pair][1]}" if pair in EMBEDDED_PAIRS else pair


SETTING_COLUMNS = {"backbone": "model.backbone", "labeler": "cluster.labeler", "num_clusters": "cluster.num_clusters",
                   "ecab": "model.ecab", "fusion": "model.fusion"}
"""Result column -> the fine-tuning setting it shows (read from ``finetune/config.yaml``)."""


def _settings(path: Path) -> dict:
    """The :data:`SETTING_COLUMNS` of a fine-tuning ``config.yaml`` (None each when there is none;
    a config of the flat layout written before the groups is read too)."""
    from .config import FinetuneCfg
    from .settings import read_saved_config

    if not path.is_file():
        return dict.fromkeys(SETTING_COLUMNS)
    flat = read_saved_config(FinetuneCfg, path).flat()
    return {column: flat[name] for column, name in SETTING_COLUMNS.items()}


def collect_results(runs: Iterable[Union[str, Path]], *, names: Optional[Sequence[str]] = None):
    """One row per (run, pair, stage) with the scores in % and the run's settings.

    Columns: ``run``, ``pair``, ``task`` (source → target), ``stage``, ``epoch``, ``mAP``, ``R-1``,
    ``R-5``, ``R-10``, then the fine-tuning settings that sweeps vary (:data:`SETTING_COLUMNS`:
    ``backbone``, ``labeler``, ``num_clusters``, ``ecab``, ``fusion``) and, for sweep points, the
    grid values (from ``sweep.json``).

    Args:
        runs: run directories (see :func:`find_runs`).
        names: a label per run (default: the folder names).
    """
    import pandas as pd

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
            for stage, (folder, prefix) in STAGE_FILES.items():
                last = _last_evaluated(logs[folder], prefix)
                if last is None:
                    continue
                row = {"run": name, "pair": pair_dir.name, "task": _pair_label(pair_dir), "stage": stage,
                       "epoch": last.get("epoch")}
                row.update({col: round(100 * last[f"{prefix}{key}"], 1) for key, col in METRICS.items()
                            if isinstance(last.get(f"{prefix}{key}"), (int, float))})
                row.update(settings)
                row.update(point)
                rows.append(row)
    return pd.DataFrame(rows)


def pair_table(results, *, stage: str = "adapted", metrics: Sequence[str] = ("mAP", "R-1", "R-5", "R-10")):
    """The paper's layout: one row per run, for each task its ``metrics`` (columns ``task · metric``)."""
    sub = results[results["stage"] == stage] if "stage" in results else results
    if sub.empty:
        present = sorted(set(results["stage"])) if "stage" in results else []
        raise InvalidInputError(f"no {stage!r} results in these runs (stages present: {present}); run chapters 02 and 03 "
                         f"(make demo) or `corelib sweep` first")
    table = sub.pivot_table(index="run", columns="task", values=list(metrics), aggfunc="first")
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


GROUP_SEP = " · "
"""Separates a column's group from its name (``task · metric``, as :func:`pair_table` names them)."""


def to_latex(table, *, caption: str = "", label: str = "") -> str:
    """A booktabs LaTeX table of ``table`` (numbers with one decimal).

    Columns named ``group · name`` (the tasks of :func:`pair_table`) get a two-row header, as the
    paper's tables have it: each group once over its columns (``\\multicolumn`` and ``\\cmidrule``),
    the names below.
    """
    cols = [str(c) for c in table.columns]
    esc = lambda s: str(s).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%").replace("→", r"$\rightarrow$").replace("·", r"$\cdot$")  # noqa: E731

    def cell(v) -> str:
        return f"{v:.1f}" if isinstance(v, float) else esc(v)

    header = [r"\toprule"]
    if any(GROUP_SEP in c for c in cols):
        groups: list[tuple[str, int, int]] = []  # (group, first column, last column), 1-based
        names = []
        for i, c in enumerate(cols, 1):
            group, sep, name = c.partition(GROUP_SEP) if GROUP_SEP in c else ("", "", c)
            names.append(name)
            if groups and groups[-1][0] == group and group:
                groups[-1] = (group, groups[-1][1], i)
            else:
                groups.append((group, i, i))
        header.append(" & ".join(r"\multicolumn{%d}{c}{%s}" % (b - a + 1, esc(g)) if g else "" for g, a, b in groups) + r" \\")
        header.append(" ".join(r"\cmidrule(lr){%d-%d}" % (a, b) for g, a, b in groups if g))
        header.append(" & ".join(esc(n) for n in names) + r" \\")
    else:
        header.append(" & ".join(esc(c) for c in cols) + r" \\")
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" + "r" * (len(cols) - 1) + "}",
             *header, r"\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + esc(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


BASE_COLUMNS = ("run", "pair", "task", "stage", "epoch", *METRICS.values(), *SETTING_COLUMNS)


def grid_keys(results) -> list[str]:
    """The sweep grid's keys present in ``results`` (the columns :func:`collect_results` took from
    ``sweep.json``)."""
    return [c for c in results.columns if c not in BASE_COLUMNS]


def complexity_results(depths: Sequence[int] = (18, 34, 50, 101, 152), *, timing: bool = True, device=None,
                       input_size: tuple[int, int] = (256, 128), batch: int = 16):
    """The paper's complexity table (parameters, GMACs, images/s) as a DataFrame, from
    :func:`corelib.models.complexity.complexity_table`; ``timing=False`` skips the images/s."""
    import pandas as pd

    from .models.complexity import complexity_table

    rows = complexity_table(tuple(depths), device=device, input_size=input_size, batch=batch, iters=2 if timing else 0)
    df = pd.DataFrame(rows)
    out = pd.DataFrame({"backbone": df["backbone"], "params (M)": (df["params"] / 1e6).round(2),
                        "params, paper's count (M)": (df["params_paper_convention"] / 1e6).round(2),
                        "params, paper (M)": (df["params_paper"] / 1e6).round(2), "GMACs": df["gmacs"].round(2),
                        "GFLOPs, paper (counts MACs)": df["gflops_paper"]})
    if timing:
        out[f"images/s ({df['device'][0]}, batch {batch})"] = df["images_per_s"].round(1)
    return out
