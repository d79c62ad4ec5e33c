"""The field's methods beside CORE-ReID V2 on the same data, source network and budget (chapter 07).

:func:`run_baselines` trains, for one source -> target pair, every recipe it is given from the
chapter-02 source network (``RUN_DIR/<pair>/pretrain/best.pt``), each with the same fine-tuning
budget (epochs x steps, :data:`DEFAULT_BUDGET` or the caller's), and the ``supervised_oracle``
upper bound. A recipe whose pre-training differs from ``corereid_v2``'s (Learn by Guessing's IBN
source network with a centre loss) trains its own source network first, with its own budget. Each
recipe owns ``RUN_DIR/<pair>/baselines/<recipe>/`` (``pretrain/`` when it has its own source,
``finetune/``); the folders are resumable like every stage, and a finished one is only re-read.

Then, per recipe: the target mAP / R-1 per epoch, the direct transfer of its source network, the
share of the direct -> oracle gap it closes (:func:`gap_closed`), cluster count, outlier share and
NMI per epoch, and the seconds it took (summed from its logs, so a re-read run reports what it
cost). :func:`baseline_table` lays them out; :func:`compare_normalisations` measures what
camera-guided normalisation does to DBSCAN's clusters (camera mixing, NMI) on one set of features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from .baseline_plan import (  # noqa: F401 - the chapters' names, kept where chapters 07 and 09 read them
    BASELINE_PARAMETERS,
    DEFAULT_BUDGET,
    DEFAULT_SOURCE_BUDGET,
    ORACLE,
    SMOKE_BUDGET,
    BaselinePlan,
    baseline_settings,
    chapter_budgets,
    chapter_recipes,
    check_baseline_parameters,
    orientation_recipes,
    recipe_views,
)
from .cluster import cluster_pseudo_labels, label_report
from .errors import InvalidInputError, MissingFileError
from .features import extract_split
from .repro import resolve_device
from .runtime import load_checkpoint
from .runtime.checkpoint import read_epoch_log
from .training import evaluate_model, finetune, load_trained_model, pretrain

BASELINES_DIR = "baselines"
"""``RUN_DIR/<pair>/baselines/<recipe>/``: one folder per recipe."""


@dataclass
class BaselineRun:
    """What one recipe measured on one pair."""

    recipe: str
    direct: dict  # the recipe's source network on the target (fractions, not %)
    history: list[dict]  # fine-tuning log, one record per epoch
    seconds: float  # pre-training of its own source (if any) + fine-tuning, from the logs
    own_source: bool = False  # trained its own source network (else chapter 02's)
    source_history: list[dict] = field(default_factory=list)

    @property
    def last(self) -> dict:
        """The last evaluated fine-tuning epoch."""
        evaluated = [h for h in self.history if "target_mAP" in h]
        if not evaluated:
            raise InvalidInputError(f"{self.recipe}: no evaluated fine-tuning epoch in the log")
        return evaluated[-1]

    @property
    def adapted_mAP(self) -> float:
        return float(self.last["target_mAP"])

    @property
    def adapted_rank1(self) -> float:
        return float(self.last["target_rank1"])


def gap_closed(direct: float, adapted: float, oracle: float) -> float:
    """``(adapted - direct) / (oracle - direct)``: the share of the direct -> oracle gap a method
    closes (1 = as good as training with the target's labels, 0 = no better than direct transfer,
    negative = worse). NaN when the oracle does not beat direct transfer (no gap to close)."""
    gap = oracle - direct
    return float("nan") if gap <= 0 else (adapted - direct) / gap


def _seconds(history: Sequence[Mapping]) -> float:
    return float(sum(h.get("seconds", 0.0) for h in history))


def run_baselines(pair, source, target, pair_dir: Union[str, Path], plan: BaselinePlan = BaselinePlan(), *,
                  resume: bool = True, train_missing_source: bool = True,
                  progress: bool = True) -> dict[str, BaselineRun]:
    """Train the recipes of ``plan`` (and the oracle) on one pair, each from the same source network and budget.

    Args:
        pair: the :class:`~corelib.pairs.ExperimentPair` (its recipe is replaced by each recipe of the plan).
        source, target: its datasets (the source only when a recipe trains its own source network).
        pair_dir: ``RUN_DIR/<pair>``; its ``pretrain/best.pt`` (chapter 02) is the shared source network.
        plan: the recipes, budgets, seed, device and per-recipe overrides (:class:`BaselinePlan`;
            chapter 07 makes it with :meth:`BaselinePlan.from_parameters`).
        resume: continue (or re-read) what a previous call left in the recipe folders.
        train_missing_source: without chapter 02's network, train it into ``pair_dir`` first with
            the pair's own (``corereid_v2``) pre-training recipe, as chapter 02 would (else refuse).

    Returns:
        ``{recipe: BaselineRun}``, the oracle under :data:`ORACLE` when ``plan.oracle``.

    Raises:
        MissingFileError: no chapter-02 source network in ``pair_dir`` and ``train_missing_source`` off.
        UnknownNameError, InvalidInputError, ConfigError: as :func:`baseline_settings`, before anything trains.
    """
    pair_dir = Path(pair_dir)
    # every recipe's settings first: a misspelt field of the last one is named before the first trains
    settings = baseline_settings(pair, plan)
    smoke, seed, device = plan.smoke, plan.seed, plan.device
    out: dict[str, BaselineRun] = {}
    measured: dict = {}  # (source checkpoint, input size) -> its direct transfer: measured once
    for name, (pre_cfg, cfg) in settings.items():
        folder = pair_dir / BASELINES_DIR / name
        own = pre_cfg is not None
        source_history: list[dict] = []
        if own:
            pre = pretrain(pre_cfg, source, folder, target=target, resume=resume, progress=progress)
            source_history = pre.history
            checkpoint = pre.best_checkpoint
        else:
            checkpoint = shared_source_network(pair, source, target, pair_dir, smoke=smoke, seed=seed, device=device,
                                               resume=resume, train_missing=train_missing_source, progress=progress)
        fresh = not (resume and (folder / "finetune" / "last.pt").is_file())
        direct = None
        if fresh and own:  # its pre-training already scored best.pt on the target (camera-blind, at this size)
            direct = _direct_from_log(source_history, pre.best_epoch, pre_cfg, cfg)
        if fresh and direct is None:
            direct = _direct_transfer(checkpoint, target, cfg, measured)
        res = finetune(cfg, target, folder, source_checkpoint=checkpoint, resume=resume, direct_transfer=direct,
                       progress=progress)
        out[name] = BaselineRun(name, dict(res.direct_transfer), list(res.history),
                                _seconds(source_history) + _seconds(res.history), own, source_history)
    return out


def shared_source_network(pair, source, target, pair_dir: Union[str, Path], *, smoke: bool = False,
                          seed: Optional[int] = None, device: Optional[str] = None, resume: bool = True,
                          train_missing: bool = True, progress: bool = True) -> Path:
    """``pair_dir/pretrain/best.pt``, chapter 02's source network of ``pair``, which the recipes without a
    source network of their own start from; trained there first with the pair's own pre-training recipe
    when it is missing (and said), as chapter 02 would.

    Raises:
        MissingFileError: it is missing and ``train_missing`` is off.
    """
    pair_dir = Path(pair_dir)
    shared = pair_dir / "pretrain" / "best.pt"
    if not shared.is_file():
        if not train_missing:
            raise MissingFileError(f"{shared} is missing: the recipes start from chapter 02's source network; "
                                   f"run notebooks/02_pretraining.ipynb with the same RUN_DIR first")
        print(f"{pair.name}: no source network of chapter 02 in {pair_dir}; training it here with chapter 02's "
              f"recipe ({'smoke' if smoke else 'full'})")
        pretrain(pair.pretrain_cfg(smoke=smoke, seed=seed, device=device), source, pair_dir, target=target,
                 resume=resume, progress=progress)
    return shared


def finetuned_checkpoint(pair_dir: Union[str, Path], recipe: str) -> Path:
    """The adapted network :func:`run_baselines` left for ``recipe`` in ``pair_dir``: its fine-tuning's
    ``best.pt`` (the teacher of the best evaluated epoch)."""
    return Path(pair_dir) / BASELINES_DIR / recipe / "finetune" / "best.pt"


def _direct_from_log(history: Sequence[Mapping], best_epoch: int, pre_cfg, cfg) -> Optional[dict]:
    """The target scores a pre-training run logged for its best epoch (the network in ``best.pt``),
    when it evaluated the target at the fine-tuning input size: the direct transfer, without
    evaluating the same network again (the numbers are the same, bit for bit). None otherwise."""
    if (pre_cfg.augment.height, pre_cfg.augment.width) != (cfg.augment.height, cfg.augment.width):
        return None
    record = next((h for h in history if h.get("epoch") == best_epoch and "target_mAP" in h), None)
    if record is None:
        return None
    return {k[len("target_"):]: float(v) for k, v in record.items() if k.startswith("target_") and isinstance(v, float)}


def _direct_transfer(checkpoint: Path, target, cfg, measured: dict) -> dict:
    """The source network's scores on the target at the fine-tuning input size, measured once per
    (checkpoint, size) for all the recipes that start from it."""
    key = (str(Path(checkpoint).resolve()), cfg.augment.height, cfg.augment.width)
    if key not in measured:
        device = resolve_device(cfg.runtime.device)
        trained = load_trained_model(checkpoint, device=device)
        scores = evaluate_model(trained.model, target, cfg.augment.height, cfg.augment.width, device=device,
                                channels_last=cfg.runtime.channels_last, cameras=False)  # SIE: camera-blind
        measured[key] = {k: v for k, v in scores.items() if isinstance(v, float)}
    return measured[key]


def read_baselines(pair_dir: Union[str, Path]) -> dict[str, BaselineRun]:
    """The recipes chapter 07 left in ``RUN_DIR/<pair>/baselines/`` (finished or not), from their
    logs and last checkpoints: ``{recipe: BaselineRun}``; empty when there are none."""
    root = Path(pair_dir) / BASELINES_DIR
    out: dict[str, BaselineRun] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and "." not in p.name):
        log = folder / "finetune" / "metrics.jsonl"
        last = folder / "finetune" / "last.pt"
        if not log.is_file():
            continue
        history = read_epoch_log(log)
        direct = dict(load_checkpoint(last, stage="finetune").get("direct_transfer", {})) if last.is_file() else {}
        source_history = read_epoch_log(folder / "pretrain" / "metrics.jsonl")
        out[folder.name] = BaselineRun(folder.name, direct, history, _seconds(source_history) + _seconds(history),
                                       bool(source_history), source_history)
    return out


TEST_PROTOCOLS = {True: "flip", False: "one view"}
"""How :func:`baseline_table` names the test protocol of a run's records (their ``test_flip``)."""


def baseline_table(runs: Mapping[str, Mapping[str, BaselineRun]], *, tasks: Optional[Mapping[str, str]] = None
                   ) -> list[dict]:
    """One row per (pair, method): direct and adapted mAP / R-1 (%), the test protocol they were
    measured on (each method's own: ``flip`` for BMFN, ``one view`` for TransReID), gap closed, last epoch's
    clusters / outliers / NMI of the global level, and seconds. Each method's gap runs from its
    own source network's direct transfer (Learn by Guessing's is its IBN network) to the oracle's
    adapted mAP, so a better source network alone closes none of it; ``tasks`` names each pair's
    task (``source → target``)."""
    rows = []
    for pair, by_recipe in runs.items():
        oracle = by_recipe.get(ORACLE)
        for name, run in by_recipe.items():
            last = run.last
            direct = float(run.direct.get("mAP", float("nan")))
            gap = gap_closed(direct, run.adapted_mAP, oracle.adapted_mAP) if oracle is not None and name != ORACLE \
                else float("nan")
            rows.append({
                "pair": pair, "task": (tasks or {}).get(pair, pair), "method": name,
                "source": "own" if run.own_source else "chapter 02",
                "direct mAP": round(100 * direct, 1), "direct R-1": round(100 * run.direct.get("rank1", float("nan")), 1),
                "mAP": round(100 * run.adapted_mAP, 1), "R-1": round(100 * run.adapted_rank1, 1),
                "test": TEST_PROTOCOLS.get(last.get("test_flip"), ""),
                "gap closed": None if math.isnan(gap) else round(gap, 3),
                "clusters": last.get("clusters_global"), "outliers": round(last.get("outliers_global", 0.0), 3),
                "NMI": None if "nmi_global" not in last else round(last["nmi_global"], 3),
                "seconds": round(run.seconds, 1)})
    return rows


def compare_normalisations(features, camids, pids, cluster_cfg, *,
                           normalizations: Sequence[str] = ("none", "camera_mean", "camera_guided"),
                           device=None) -> list[dict]:
    """DBSCAN (or ``cluster_cfg``'s labeller) on the same ``(N, d)`` features under each camera
    normalisation: clusters, outlier share, camera mixing (the share of clusters spanning more than
    one camera) and NMI / ARI against ``pids``, of the global level. The features are L2-normalised
    by the labeller."""
    rows = []
    truth = np.asarray(pids)
    for norm in normalizations:
        cfg = cluster_cfg.with_overrides({"normalize": norm})
        pseudo, _ = cluster_pseudo_labels([features], camids, cfg, seed=0, device=device)
        rep = label_report(pseudo, camids, truth, levels=("global",))
        rows.append({"normalisation": norm, "clusters": rep["clusters_global"], "outliers": round(rep["outliers_global"], 3),
                     "camera mixing": round(rep["camera_mixing_global"], 3), "NMI": round(rep.get("nmi_global", float("nan")), 3),
                     "ARI": round(rep.get("ari_global", float("nan")), 3)})
    return rows


def normalisation_study(checkpoint: Union[str, Path], target, cluster_cfg, *, device="cpu",
                        normalizations: Sequence[str] = ("none", "camera_mean", "camera_guided")) -> list[dict]:
    """:func:`compare_normalisations` on the target training images' descriptors from the network
    of ``checkpoint`` (e.g. chapter 02's source network, ``RUN_DIR/<pair>/pretrain/best.pt``), at
    the size it was trained at."""
    trained = load_trained_model(checkpoint, device=device)
    height, width = trained.input_size
    feats = extract_split(trained.model, target.train, height, width, device=device,
                          channels_last=trained.channels_last).features.cpu()
    camids = np.array([-1 if s.camid is None else s.camid for s in target.train])
    pids = np.array([s.pid for s in target.train])
    return compare_normalisations(feats, camids, pids, cluster_cfg, normalizations=normalizations, device=device)


def transfer_table(runs: Mapping[str, Mapping[str, BaselineRun]], pair_dirs: Mapping[str, Union[str, Path]], *,
                   recipes: Optional[Sequence[str]] = None) -> list[dict]:
    """Per (pair, method): the source network's mAP on its own source test split, its direct
    transfer to the target and the adapted target mAP (%), for ``recipes`` (all when None): the
    TransReID rows and their ablation beside the ResNet ones. A recipe starting from chapter 02's
    network reads that network's source mAP from ``RUN_DIR/<pair>/pretrain/metrics.jsonl``."""
    rows = []
    for pair, by_recipe in runs.items():
        shared = read_epoch_log(Path(pair_dirs[pair]) / "pretrain" / "metrics.jsonl")
        for name, run in by_recipe.items():
            if name == ORACLE or (recipes is not None and name not in recipes):
                continue
            history = run.source_history if run.own_source else shared
            scored = [h["source_mAP"] for h in history if "source_mAP" in h]
            rows.append({"pair": pair, "method": name, "source": "own" if run.own_source else "chapter 02",
                         "source mAP": round(100 * max(scored), 1) if scored else None,  # best.pt
                         "direct mAP": round(100 * float(run.direct.get("mAP", float("nan"))), 1),
                         "adapted mAP": round(100 * run.adapted_mAP, 1), "adapted R-1": round(100 * run.adapted_rank1, 1),
                         "seconds": round(run.seconds, 1)})
    return rows
