"""The budget study: every method's target mAP against its fine-tuning budget, over seeds (chapter 08).

Chapter 07 compares the methods on one short budget. The study (``sweeps/budget_study.yaml``) runs
chapters 02 and 07 once per (seed, pair) with a longer budget, and chapter 07's runs score the target
after every epoch, so one run gives its recipe's scores at every budget up to its last epoch (the
fine-tuning keeps a constant learning rate and starts a fresh optimiser each epoch: the first
epochs of a long run are exactly a short run). This module reads those runs back:

- :func:`study_points`: one row per (seed, pair, recipe, epoch), with the optimiser steps and the
  fine-tuning seconds spent up to it, the target mAP / R-1, the pseudo-label counts, the starting
  point and the share of the gap to the oracle *of the same seed at the same budget* it closes;
- :func:`study_summary`: mean and standard deviation over the seeds per (pair, recipe, steps);
- :func:`ranking_table`: the order of the methods at each budget, with ``>`` only where the
  intervals (mean ± one standard deviation over the seeds) separate and ``≈`` where they overlap,
  and the budget from which that order no longer changes (:func:`settled_from`);
- :func:`headline_table`: the table a thesis quotes, at the study's largest budget and at chapter
  07's, as ``mean ± std``; :func:`beside_quick_run` lays chapter 07's quick run beside it;
- :func:`run_variant` / :func:`variant_table`: a recipe fine-tuned again with one change, from the
  same source networks and seeds, beside the study's run (how chapter 08 tests an explanation).

**The starting point of the gap.** A fine-tuning run with ``score_start`` scores its own network on
the target before its first step (``start_target_*`` of its first epoch's record): the descriptor the
adapted scores use, heads and fusion included. Chapter 07's ``direct`` is the source network's own
descriptor, which is not the same vector (the fine-tuning heads are new), so a gap measured from it
mixes the change of descriptor into the method's gain. The study measures from the start; runs
without a start score fall back to ``direct`` and say so in ``start from``.

:func:`save_study` (``corelib budget-study ROOT``) writes the study's tables and figures
(``figures/08_budget_*``, committed); :func:`committed_summary` reads the summary back, so that chapter 08
draws the study beside its own quick run without the runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence, Union

from . import viz
from .baseline_plan import DEFAULT_BUDGET, ORACLE, BaselinePlan, baseline_settings
from .baselines import BASELINES_DIR, read_baselines
from .config import DataCfg, FinetuneCfg
from .errors import InvalidInputError, MissingFileError
from .outputs import Run
from .pairs import experiment_pairs
from .paths import atomic_write_text, figures_dir, repo_root, resolve_in_repo
from .runtime.checkpoint import read_epoch_log
from .settings import merge_overrides, read_saved_config
from .sweeps import REPLACED_PATTERN, WRITTEN_BY
from .tables import GROUP_SEP
from .training import finetune

SUMMARY_TABLE = "08_budget_study"
"""The summary's table name (``figures/08_budget_study.csv``): what :func:`committed_summary` reads."""

VARIANTS_DIR = "variants"
"""``ROOT/variants/<variant>/<point>/<pair>/finetune/``: a recipe fine-tuned again with a change
(:func:`run_variant`), from the same source networks, seeds and budget as in the study."""

VARIANTS_TABLE = "08_budget_variants"
"""The table of the variants beside their recipe as the study ran it (:func:`variant_table`)."""

PREVIEW_STEPS = int(DEFAULT_BUDGET["epochs"] * DEFAULT_BUDGET["iters_per_epoch"])
"""Chapter 07's budget in ``make demo`` in optimiser steps (``budgets.embedded``: 2 epochs of 10): the
study's point beside the quick run."""


def _study_folders(root: Path) -> list[Path]:
    """The sweep points under ``root``: folders with a ``sweep.json`` the sweeps wrote (set-aside ones left out)."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not REPLACED_PATTERN.search(p.name)):
        record = folder / "sweep.json"
        if record.is_file() and json.loads(record.read_text()).get("written_by") == WRITTEN_BY:
            out.append(folder)
    return out


def _iters_per_epoch(config: Path) -> int:
    return int(read_saved_config(FinetuneCfg, config).iters_per_epoch)


def study_points(root: Union[str, Path]):
    """One row per (seed, pair, recipe, evaluated epoch) of the sweep points under ``root``.

    Columns: ``seed``, ``pair``, ``recipe``, ``epoch``, ``steps`` (optimiser steps so far), ``seconds``
    (fine-tuning seconds so far, its evaluations included), ``mAP`` and ``R-1`` (%), ``start mAP`` /
    ``start R-1`` (the run's network before its first step, see the module docstring), ``start from``
    (``"start"`` or ``"direct"``), ``direct mAP`` (the source network's own descriptor), ``oracle mAP``
    (the oracle of the same seed and pair at the same epoch), ``gap closed`` (NaN for the oracle and
    where the oracle does not beat the start), ``clusters``, ``outliers`` (share), ``NMI`` (global
    level), ``source seconds`` (pre-training of the recipe's own source network, or of chapter 02's).

    Raises:
        MissingFileError: ``root`` is not a folder, or holds no sweep point with a fine-tuning log.
    """
    import pandas as pd  # lazy: pandas is slow to import and only tables need it

    root = resolve_in_repo(root)  # a relative root is the repository's (a notebook's kernel runs in notebooks/)
    if not root.is_dir():
        raise MissingFileError(f"{root} is not a folder; run the study first: "
                               f"corelib sweep sweeps/budget_study.yaml --root {root}")
    rows = []
    for folder in _study_folders(root):
        seed = json.loads((folder / "sweep.json").read_text())["parameters"].get("SEED")
        for pair_dir in sorted(p for p in folder.iterdir() if (p / BASELINES_DIR).is_dir()):
            shared_source = sum(r.get("seconds", 0.0) for r in read_epoch_log(pair_dir / "pretrain" / "metrics.jsonl"))
            for recipe, run in read_baselines(pair_dir).items():
                config = pair_dir / BASELINES_DIR / recipe / "finetune" / "config.yaml"
                if not config.is_file():
                    continue
                iters = _iters_per_epoch(config)
                first = run.history[0] if run.history else {}
                has_start = isinstance(first.get("start_target_mAP"), float)
                start = {k: first[f"start_target_{k}"] if has_start else run.direct.get(k, math.nan)
                         for k in ("mAP", "rank1")}
                source_seconds = (sum(r.get("seconds", 0.0) for r in run.source_history) if run.own_source
                                  else shared_source)
                spent = 0.0
                for record in run.history:
                    spent += record.get("seconds", 0.0)
                    if "target_mAP" not in record:
                        continue
                    rows.append({
                        "seed": seed, "pair": pair_dir.name, "recipe": recipe, "epoch": record["epoch"],
                        "steps": record["epoch"] * iters, "seconds": spent,
                        "mAP": 100 * record["target_mAP"], "R-1": 100 * record["target_rank1"],
                        "start mAP": 100 * start["mAP"], "start R-1": 100 * start["rank1"],
                        "start from": "start" if has_start else "direct",
                        "direct mAP": 100 * run.direct.get("mAP", math.nan),
                        "clusters": record.get("clusters_global"), "outliers": record.get("outliers_global"),
                        "NMI": record.get("nmi_global"), "source seconds": source_seconds})
    if not rows:
        raise MissingFileError(f"no sweep point with chapter 07's runs under {root}; run "
                               f"corelib sweep sweeps/budget_study.yaml --root {root}")
    points = pd.DataFrame(rows)
    oracle = points[points["recipe"] == ORACLE].set_index(["seed", "pair", "epoch"])["mAP"]
    key = list(zip(points["seed"], points["pair"], points["epoch"]))
    points["oracle mAP"] = [oracle.get(k, math.nan) for k in key]
    gap = points["oracle mAP"] - points["start mAP"]
    points["gap closed"] = ((points["mAP"] - points["start mAP"]) / gap).where((gap > 0) & (points["recipe"] != ORACLE))
    return points


def study_summary(points):
    """Mean and standard deviation (ddof 1) over the seeds of :func:`study_points`, per (pair, recipe,
    steps): ``seeds`` (how many), ``mAP``, ``mAP std``, ``R-1``, ``R-1 std``, ``gap closed``, ``gap
    closed std``, ``start mAP``, ``direct mAP``, ``seconds`` (mean fine-tuning seconds to reach the
    budget), ``seconds std``, ``source seconds``, ``clusters``, ``outliers``, ``NMI`` (means)."""
    group = points.groupby(["pair", "recipe", "steps"], sort=False)
    summary = group.agg(**{
        "seeds": ("seed", "nunique"), "epoch": ("epoch", "first"),
        "mAP": ("mAP", "mean"), "mAP std": ("mAP", "std"), "R-1": ("R-1", "mean"), "R-1 std": ("R-1", "std"),
        "gap closed": ("gap closed", "mean"), "gap closed std": ("gap closed", "std"),
        "start mAP": ("start mAP", "mean"), "direct mAP": ("direct mAP", "mean"),
        "seconds": ("seconds", "mean"), "seconds std": ("seconds", "std"), "source seconds": ("source seconds", "mean"),
        "clusters": ("clusters", "mean"), "outliers": ("outliers", "mean"), "NMI": ("NMI", "mean"),
    }).reset_index()
    return summary.round(4)


def _separated(a, b) -> bool:
    """Do the intervals mean ± std of two summary rows not overlap? (one seed: never claimed)"""
    if not (a["mAP std"] >= 0 and b["mAP std"] >= 0):  # NaN with one seed
        return False
    hi, lo = (a, b) if a["mAP"] >= b["mAP"] else (b, a)
    return hi["mAP"] - hi["mAP std"] > lo["mAP"] + lo["mAP std"]


def ranking(summary, pair: str, steps: int) -> list[str]:
    """The recipes of ``pair`` (the oracle left out) by mean mAP at ``steps``, best first."""
    rows = summary[(summary["pair"] == pair) & (summary["steps"] == steps) & (summary["recipe"] != ORACLE)]
    return list(rows.sort_values("mAP", ascending=False, kind="stable")["recipe"])


def final_budget(summary, pair: str) -> Optional[int]:
    """The largest budget (steps) at which every recipe of ``pair`` was measured (None: none)."""
    mine = summary[summary["pair"] == pair]
    return None if not len(mine) else int(mine.groupby("recipe")["steps"].max().min())


def settled_from(summary, pair: str) -> Optional[int]:
    """The smallest budget (steps) of ``pair`` from which the order of the mean mAPs is the one at
    :func:`final_budget` at every budget measured up to it: what "settled" means here. None when only
    that budget has this order (not settled within the study's budget)."""
    final = final_budget(summary, pair)
    budgets = sorted(s for s in set(summary[summary["pair"] == pair]["steps"]) if final is not None and s <= final)
    if len(budgets) < 2:
        return None
    order = ranking(summary, pair, final)
    since = final
    for steps in reversed(budgets[:-1]):
        if ranking(summary, pair, steps) != order:
            break
        since = steps
    return None if since == final else since


def ranking_text(summary, pair: str, steps: int) -> str:
    """The order at ``steps`` as ``a > b ≈ c``: ``>`` where the two neighbours' intervals (mean ± std
    over the seeds) separate, ``≈`` where they overlap (no ranking claimed between them)."""
    rows = summary[(summary["pair"] == pair) & (summary["steps"] == steps)].set_index("recipe")
    order = ranking(summary, pair, steps)
    text = order[0] if order else ""
    for a, b in zip(order, order[1:]):
        text += f" {'>' if _separated(rows.loc[a], rows.loc[b]) else '≈'} {b}"
    return text


def separated_pairs(summary, pair: str, steps: int) -> list[tuple[str, str]]:
    """Every ``(a, b)`` of ``pair`` at ``steps`` (the oracle left out) with ``a`` above ``b`` and their
    intervals (mean ± std over the seeds) apart: the only order claimed, neighbours or not."""
    rows = summary[(summary["pair"] == pair) & (summary["steps"] == steps)].set_index("recipe")
    order = ranking(summary, pair, steps)
    return [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if _separated(rows.loc[a], rows.loc[b])]


def ranking_table(summary) -> list[dict]:
    """Per pair and budget: the order of the methods (:func:`ranking_text`), every pair of methods whose
    intervals separate (:func:`separated_pairs`, the only order claimed), and whether the order of the
    means is the settled one (:func:`settled_from`)."""
    rows = []
    for pair in dict.fromkeys(summary["pair"]):
        since, final = settled_from(summary, pair), final_budget(summary, pair)
        for steps in sorted(set(summary[summary["pair"] == pair]["steps"])):
            rows.append({"pair": pair, "steps": int(steps), "order (mean mAP; > separated, ≈ overlapping)":
                         ranking_text(summary, pair, steps),
                         "separated": ", ".join(f"{a} > {b}" for a, b in separated_pairs(summary, pair, steps)),
                         "settled": since is not None and since <= steps <= final})
    return rows


def _pm(mean: float, std: float, digits: int = 1) -> str:
    if mean != mean:  # NaN
        return ""
    return f"{mean:.{digits}f}" if std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def headline_table(summary, steps: Optional[Sequence[int]] = None) -> list[dict]:
    """The study at ``steps`` (default: chapter 07's budget, :data:`PREVIEW_STEPS`, and the largest
    budget every recipe of a pair reached), one row per (pair, steps, recipe): mAP, R-1 and gap closed
    as ``mean ± std`` over the seeds, the start and direct mAP, seconds of fine-tuning and of the
    source network, seeds."""
    rows = []
    for pair in dict.fromkeys(summary["pair"]):
        mine = summary[summary["pair"] == pair]
        for budget in (steps or sorted({PREVIEW_STEPS, final_budget(summary, pair)})):
            for _, r in mine[mine["steps"] == budget].iterrows():
                rows.append({"pair": pair, "steps": int(budget), "method": r["recipe"], "seeds": int(r["seeds"]),
                             "mAP": _pm(r["mAP"], r["mAP std"]), "R-1": _pm(r["R-1"], r["R-1 std"]),
                             "gap closed": _pm(r["gap closed"], r["gap closed std"], 2),
                             "start mAP": round(r["start mAP"], 1), "direct mAP": round(r["direct mAP"], 1),
                             "seconds": round(r["seconds"], 0), "source seconds": round(r["source seconds"], 0)})
    return rows


def below_start(summary) -> list[dict]:
    """The recipes whose mean mAP at their largest budget is below their own starting point: the ones
    chapter 08 has to explain (``pair``, ``recipe``, ``steps``, ``start mAP``, ``mAP``, ``mAP std``)."""
    out = []
    for (pair, recipe), rows in summary[summary["recipe"] != ORACLE].groupby(["pair", "recipe"], sort=False):
        last = rows.sort_values("steps").iloc[-1]
        if last["mAP"] < last["start mAP"]:
            out.append({"pair": pair, "recipe": recipe, "steps": int(last["steps"]), "start mAP": round(last["start mAP"], 1),
                        "mAP": round(last["mAP"], 1), "mAP std": round(last["mAP std"], 1)})
    return out


def label_table(summary, recipes: Optional[Sequence[str]] = None) -> list[dict]:
    """Per (pair, recipe, steps) of ``recipes`` (default: every recipe but the oracle): the mean number
    of clusters, outlier share and NMI of the global pseudo-labels of that epoch's clustering, with
    the mean mAP: how a labeller's clusters move as its network adapts."""
    keep = summary[summary["recipe"] != ORACLE] if recipes is None else summary[summary["recipe"].isin(recipes)]
    return [{"pair": r["pair"], "method": r["recipe"], "steps": int(r["steps"]), "clusters": round(r["clusters"], 1),
             "outliers": round(r["outliers"], 3), "NMI": round(r["NMI"], 3), "mAP": round(r["mAP"], 1)}
            for _, r in keep.iterrows()]


def committed_table(name: str, folder: Union[str, Path, None] = None):
    """A table of the study as :func:`save_study` wrote it (``<name>.csv``, a DataFrame): from ``folder``,
    else from the curated figures folder (``$COREREID_FIGURES``) and then the repository's ``figures/``,
    the committed one. What chapter 08 shows: the study does not run in ``make demo``.

    Raises:
        MissingFileError: no such table (the study has not been gathered there).
    """
    import pandas as pd  # lazy: see study_points

    folders = [Path(folder)] if folder else [figures_dir(), repo_root() / "figures"]
    path = next((f / f"{name}.csv" for f in folders if (f / f"{name}.csv").is_file()), None)
    if path is None:
        raise MissingFileError(f"no {name}.csv in {', '.join(map(str, folders))}: run the study "
                               f"(corelib sweep sweeps/budget_study.yaml --root ROOT) and gather it "
                               f"(corelib budget-study ROOT)")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def committed_summary(folder: Union[str, Path, None] = None):
    """The study's summary (:data:`SUMMARY_TABLE`) as :func:`committed_table` finds it, checked.

    Raises:
        MissingFileError: no such table.
        InvalidInputError: the file is not a study summary.
    """
    summary = committed_table(SUMMARY_TABLE, folder)
    missing = {"pair", "recipe", "steps", "seeds", "mAP", "mAP std", "gap closed", "gap closed std", "seconds"} - \
        set(summary.columns)
    if missing:
        raise InvalidInputError(f"{SUMMARY_TABLE}.csv is not a budget-study summary: no column(s) {sorted(missing)}")
    return summary


def save_study(root: Union[str, Path], *, smoke: bool = False) -> tuple[object, list[Path]]:
    """Gather the study under ``root`` and write it: the summary (:data:`SUMMARY_TABLE`), the tables
    ``08_budget_headline``, ``08_budget_ranking``, ``08_budget_labels`` (CSV, Markdown, LaTeX), the
    figures ``08_budget_<pair>`` and, when :func:`run_variant` ran, :data:`VARIANTS_TABLE`, into the curated figures folder (``figures/``, ``$COREREID_FIGURES``),
    or ``ROOT/figures/`` with ``smoke``. Only these files are written (the chapters' own tables are
    left alone). Returns the summary and the paths written.

    Raises:
        MissingFileError: as :func:`study_points`.
    """
    import matplotlib.pyplot as plt  # lazy: plotting only

    summary = study_summary(study_points(root))
    root = resolve_in_repo(root)
    shown = root.relative_to(repo_root()) if root.is_relative_to(repo_root()) else root  # no machine path in a sidecar
    out = Run(root, smoke=smoke, name="budget_study", params={"root": str(shown)})
    seeds = int(summary["seeds"].max())
    written = [*out.save_table(summary, SUMMARY_TABLE),
               *out.save_table(headline_table(summary), "08_budget_headline", latex=True,
                               caption=f"Every method at chapter 07's budget and at the study's largest: target mAP / "
                                       f"R-1 (%) and share of the start-to-oracle gap closed, mean ± std over {seeds} seeds"),
               *out.save_table(ranking_table(summary), "08_budget_ranking", latex=True,
                               caption="Order of the methods by mean target mAP at each budget: > where the intervals "
                                       "(mean ± std over the seeds) separate, ≈ where they overlap"),
               *out.save_table(label_table(summary), "08_budget_labels", latex=True,
                               caption="Pseudo-labels of each epoch's clustering: clusters, outlier share, NMI (means "
                                       "over the seeds)")]
    for pair in dict.fromkeys(summary["pair"]):
        fig = viz.budget_curves(summary, pair, title=f"{pair}: every method against its budget, mean ± std over "
                                                     f"{seeds} seeds")
        written += out.save_figure(fig, f"08_budget_{pair}")
        plt.close(fig)
    variants = variant_table(root)
    if variants:
        written += out.save_table(variants, VARIANTS_TABLE, latex=True,
                                  caption="A recipe fine-tuned again with one change, from the same source networks, "
                                          "seeds and budget as in the study: target mAP (%), mean ± std over seeds")
    return summary, written


def beside_quick_run(summary, results, run_name: str, *, steps: Optional[int] = None) -> list[dict]:
    """Chapter 07's quick run (the rows ``<run_name> · <recipe>`` of :func:`corelib.results.collect_results`:
    one seed, :data:`PREVIEW_STEPS`) beside the study at the same budget and at ``steps`` (default: the
    largest every recipe of the pair reached), per (pair, method): the preview's mAP, then the study's
    ``mean ± std`` mAP and gap closed. Methods the quick run did not train are left out."""
    quick = results[(results["stage"] == "adapted")] if len(results) else results
    rows = []
    for pair in dict.fromkeys(summary["pair"]):
        mine = summary[summary["pair"] == pair]
        final = steps or final_budget(summary, pair)
        for recipe in dict.fromkeys(mine["recipe"]):
            hit = quick[(quick["pair"] == pair) & (quick["run"] == f"{run_name}{GROUP_SEP}{recipe}")] if len(quick) else quick
            if not len(hit):
                continue
            at = {s: mine[(mine["recipe"] == recipe) & (mine["steps"] == s)] for s in (PREVIEW_STEPS, final)}
            cell = {s: (r.iloc[0] if len(r) else None) for s, r in at.items()}
            rows.append({
                "pair": pair, "method": recipe, f"preview mAP ({PREVIEW_STEPS} steps, 1 seed)": float(hit.iloc[0]["mAP"]),
                **{f"study mAP ({s} steps)": "" if c is None else _pm(c["mAP"], c["mAP std"]) for s, c in cell.items()},
                f"study gap closed ({final} steps)": "" if cell[final] is None else
                _pm(cell[final]["gap closed"], cell[final]["gap closed std"], 2)})
    return rows


def _point_parameters(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())["parameters"]


def run_variant(root: Union[str, Path], recipe: str, name: str, overrides: dict, *,
                pairs: Optional[Sequence[str]] = None, data_root: Union[str, Path, None] = None,
                progress: bool = True) -> list[Path]:
    """Fine-tune ``recipe`` again in every point of the study under ``root``, with chapter 07's settings of
    that point (seed, budget, ``score_start``) changed by ``overrides``, from the same source network the
    study's run started from (the recipe's own, or chapter 02's), into
    ``ROOT/variants/<name>/<point>/<pair>/finetune/``: what a change does, measured over the same seeds.
    ``pairs`` keeps the points of those pairs only (default: every pair). Resumable (a finished run is
    only re-read), so a variant started before the sweep ended is completed by running it again.
    Returns the run folders.

    Raises:
        MissingFileError: ``root`` holds no study point, or a point misses its source network.
        ConfigError: an override names a field the fine-tuning settings do not have.
        InvalidInputError: ``name`` is not a plain folder name.
    """
    root = resolve_in_repo(root)
    if not name or Path(name).name != name or name.startswith("."):
        raise InvalidInputError(f"variant name {name!r}: give a plain folder name such as 'lr_x0.1'")
    folders = _study_folders(root) if root.is_dir() else []
    if not folders:
        raise MissingFileError(f"no study point under {root}: run corelib sweep sweeps/budget_study.yaml --root {root}")
    record = root / VARIANTS_DIR / name / "variant.json"
    wanted = {"recipe": recipe, "overrides": merge_overrides([], overrides), "written_by": __name__}
    if record.is_file() and json.loads(record.read_text()) != wanted:
        raise InvalidInputError(f"{record.parent} holds the variant {json.loads(record.read_text())}; give this one "
                                f"({wanted['recipe']}, {wanted['overrides']}) another name")
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    out = []
    for folder in folders:
        params = _point_parameters(folder)
        where = str(data_root or params.get("DATA_ROOT") or "")
        data = DataCfg.smoke(root=where) if params.get("SMOKE") else DataCfg(root=where)
        for pair_name, pair in experiment_pairs(params.get("PAIRS", []), params.get("DATASETS") or {}).items():
            if pairs is not None and pair_name not in pairs:
                continue
            plan = BaselinePlan(recipes=[recipe], oracle=False, budget=params.get("BUDGET"),
                                source_budget=params.get("SOURCE_BUDGET"), smoke=bool(params.get("SMOKE")),
                                seed=params.get("SEED"), device=params.get("DEVICE"))
            pre_cfg, cfg = baseline_settings(pair, plan)[recipe]
            cfg = cfg.with_overrides(merge_overrides([], overrides))
            pair_dir = folder / pair_name
            source = (pair_dir / BASELINES_DIR / recipe / "pretrain" / "best.pt" if pre_cfg is not None
                      else pair_dir / "pretrain" / "best.pt")
            if not source.is_file():
                raise MissingFileError(f"{source} is missing: the study point {folder.name} has not trained "
                                       f"{recipe}'s source network yet; finish the sweep first")
            run_dir = root / VARIANTS_DIR / name / folder.name / pair_name
            _, target = pair.open(data)
            finetune(cfg, target, run_dir, source_checkpoint=source, resume=True, progress=progress)
            out.append(run_dir)
    return out


def variant_table(root: Union[str, Path]) -> list[dict]:
    """Every variant of ``ROOT/variants/`` (:func:`run_variant`) beside its recipe as the study ran it
    (variant ``as in the study``), per (pair, recipe, variant, steps): the change, mean ± std over the
    seeds of the target mAP and of the start mAP, and the mean clusters and outlier share of that
    epoch's clustering. Empty when there is no variant."""
    import pandas as pd  # lazy: see study_points

    root = resolve_in_repo(root)
    rows, changes = [], {}
    for variant in sorted(p for p in (root / VARIANTS_DIR).glob("*") if (p / "variant.json").is_file()):
        spec = json.loads((variant / "variant.json").read_text())
        changes[(spec["recipe"], variant.name)] = spec["overrides"]
        for folder in sorted(p for p in variant.iterdir() if (root / p.name / "sweep.json").is_file()):
            seed = _point_parameters(root / folder.name).get("SEED")
            for pair_dir in sorted(p for p in folder.iterdir() if (p / "finetune" / "config.yaml").is_file()):
                history = read_epoch_log(pair_dir / "finetune" / "metrics.jsonl")
                iters = _iters_per_epoch(pair_dir / "finetune" / "config.yaml")
                start = history[0].get("start_target_mAP", math.nan) if history else math.nan
                rows += [{"pair": pair_dir.name, "recipe": spec["recipe"], "variant": variant.name, "seed": seed,
                          "steps": r["epoch"] * iters, "mAP": 100 * r["target_mAP"], "start mAP": 100 * start,
                          "clusters": r.get("clusters_global"), "outliers": r.get("outliers_global")}
                         for r in history if "target_mAP" in r]
    if not rows:
        return []
    studied = study_points(root)
    studied = studied[studied["recipe"].isin({recipe for recipe, _ in changes})].assign(variant="as in the study")
    table = pd.concat([studied[["pair", "recipe", "variant", "seed", "steps", "mAP", "start mAP", "clusters",
                                "outliers"]], pd.DataFrame(rows)], ignore_index=True)
    out = []
    for (pair, recipe, variant, steps), group in table.groupby(["pair", "recipe", "variant", "steps"], sort=False):
        change = changes.get((recipe, variant))
        out.append({"pair": pair, "method": recipe, "variant": variant,
                    "change": "" if change is None else json.dumps(change, sort_keys=True), "steps": int(steps),
                    "seeds": int(group["seed"].nunique()), "mAP": _pm(group["mAP"].mean(), group["mAP"].std()),
                    "start mAP": _pm(group["start mAP"].mean(), group["start mAP"].std()),
                    "clusters": round(group["clusters"].mean(), 1), "outliers": round(group["outliers"].mean(), 3)})
    return out


def headline_metrics(summary) -> dict[str, float]:
    """The study's headline numbers at each pair's largest budget reached by every recipe:
    ``budget_study.<pair>.<recipe>.mAP`` and ``.gap_closed`` (means over the seeds; the oracle has no gap)."""
    out = {}
    for pair in dict.fromkeys(summary["pair"]):
        mine = summary[summary["pair"] == pair]
        final = mine[mine["steps"] == final_budget(summary, pair)]
        for _, r in final.iterrows():
            out[f"budget_study.{pair}.{r['recipe']}.mAP"] = round(float(r["mAP"]), 1)
            if r["gap closed"] == r["gap closed"]:  # not NaN
                out[f"budget_study.{pair}.{r['recipe']}.gap_closed"] = round(float(r["gap closed"]), 3)
    return out
