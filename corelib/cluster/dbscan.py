"""The ``dbscan`` pseudo-labeller: DBSCAN on the k-reciprocal Jaccard distance of the target features.

This is how MMT, SpCL and Cluster Contrast label an unlabelled target (docs/baselines.md §3). Each
level's features are L2-normalised, which the Jaccard encoding assumes (d^2 = 2 - 2 cos), and their
Jaccard distance (:func:`corelib.cluster.jaccard_distance`, k1 / k2 of ``cluster.dbscan``) is handed
to scikit-learn's DBSCAN as a precomputed sparse neighbourhood graph. The graph holds only the
distances below ``eps``, so memory stays bounded at the sizes of real targets. The number of
clusters is whatever DBSCAN finds, so it changes from epoch to epoch; the fine-tuning loop resizes
its classifiers to it. Noise points are dropped from training (label -1: MMT, Cluster Contrast) or
made classes of their own (``outliers="singletons"``: SpCL's un-clustered instances).

``self_paced=True`` adds SpCL's self-paced cluster reliability criterion (docs/baselines.md §3.3): two
more DBSCANs, at eps - eps_gap (tight) and eps + eps_gap (loose), run on the same graph (built once,
up to the loose radius). A cluster whose best member's 1 - IoU with its loose cluster exceeds a
threshold (a quantile of those values at the first call, then frozen in the fine-tuning loop's
labeller ``state``, so it survives a resume) is dissolved, and in the clusters left only the members
of maximal compactness (least 1 - IoU with their tight cluster) keep their label. The samples it
rejects become what ``outliers`` says: singletons (SpCL) or -1.

Select it with ``cluster.labeler=dbscan``; its settings are ``cluster.dbscan``
(:class:`DBSCANCfg`). The camera normalisations of :mod:`corelib.cluster.normalize`
(``cluster.normalize``) apply before it, as for every labeller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InvalidInputError
from ..settings import Settings, check_at_least, check_choice, check_positive, check_within
from .jaccard import jaccard_distance
from .labelers import PseudoLabels, register_labeler


@dataclass(frozen=True)
class DBSCANCfg(Settings):
    """The DBSCAN labeller on k-reciprocal Jaccard distances (MMT, SpCL, Cluster Contrast;
    docs/baselines.md §3.1-3.2). Defaults are SpCL's and Cluster Contrast's for real data."""

    eps: float = 0.6
    """DBSCAN radius on the Jaccard distance (0.6 in SpCL / Cluster Contrast; not portable between
    k1 settings, features or backbones: docs/baselines.md §3.8)."""
    min_samples: int = 4
    """DBSCAN core-point size (4 in all three codebases)."""
    k1: int = 30
    """k-reciprocal neighbourhood of the Jaccard distance (30 in SpCL / Cluster Contrast, 20 in MMT)."""
    k2: int = 6
    """Local query expansion of the Jaccard distance (6 everywhere; 1 switches it off)."""
    outliers: str = "drop"
    """What DBSCAN's noise points become: "drop" (left out of training: MMT, Cluster Contrast) or
    "singletons" (one class each: SpCL's un-clustered instances). The samples ``self_paced`` finds
    unreliable become the same."""
    self_paced: bool = False
    """SpCL's self-paced cluster reliability criterion (docs/baselines.md §3.3): two more DBSCANs at
    eps -/+ ``eps_gap`` dissolve the clusters that are not independent and keep, in the others, only
    the most compact members; the rest become what ``outliers`` says. Off: plain DBSCAN."""
    eps_gap: float = 0.02
    """``self_paced`` only: the tight and loose clusterings run at eps - eps_gap and eps + eps_gap
    (SpCL's ``--eps-gap 0.02``, docs/baselines.md §3.3)."""
    independence_quantile: float = 0.9
    """``self_paced`` only: the independence threshold is this quantile of the first epoch's
    cluster-level (1 - IoU) with the loose clustering, then frozen for the run (SpCL's 0.9,
    docs/baselines.md §3.3)."""

    def __post_init__(self) -> None:
        check_within("cluster.dbscan.eps", self.eps, 0.0, 1.0, high_open=True)
        check_positive("cluster.dbscan.eps", self.eps)
        check_at_least("cluster.dbscan.min_samples", self.min_samples, 1)
        check_at_least("cluster.dbscan.k1", self.k1, 1)
        check_at_least("cluster.dbscan.k2", self.k2, 1)
        check_choice("cluster.dbscan.outliers", self.outliers, ("drop", "singletons"))
        check_within("cluster.dbscan.eps_gap", self.eps_gap, 0.0, 1.0, high_open=True)
        check_positive("cluster.dbscan.eps_gap", self.eps_gap)
        check_within("cluster.dbscan.independence_quantile", self.independence_quantile, 0.0, 1.0)
        if self.self_paced and not 0.0 < self.eps - self.eps_gap < self.eps + self.eps_gap < 1.0:
            # the tight and loose radii must stay inside the range of Jaccard distances, (0, 1)
            raise ConfigError(f"cluster.dbscan.eps_gap={self.eps_gap!r} with eps={self.eps!r}: the self-paced tight "
                              f"and loose radii eps -/+ eps_gap must lie in (0, 1), got {self.eps - self.eps_gap:.4g} "
                              f"and {self.eps + self.eps_gap:.4g}; choose eps_gap < "
                              f"{min(self.eps, 1.0 - self.eps):.4g}")


def dbscan_cluster(distances, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn DBSCAN on a precomputed distance matrix (dense, or a sparse graph that holds
    every distance below ``eps``): ``(n,)`` labels, -1 for noise."""
    from sklearn.cluster import DBSCAN  # lazy: scikit-learn pulls in SciPy; only this step needs it

    if isinstance(distances, torch.Tensor):
        distances = distances.detach().cpu().numpy()
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=1).fit_predict(distances)


def outliers_as_singletons(labels: np.ndarray) -> np.ndarray:
    """Each noise point (-1) becomes a class of its own, numbered after the clusters (SpCL)."""
    out = labels.copy()
    noise = np.flatnonzero(out < 0)
    out[noise] = out.max(initial=-1) + 1 + np.arange(len(noise))
    return out


def _graph_limit(radius: float) -> float:
    """``max_distance`` of a sparse graph that holds every distance DBSCAN counts at ``radius``.

    The graph keeps the float32 distances ``d < max_distance`` and scikit-learn counts ``d <= radius``
    with ``radius`` cast to float32 (a Python float against a float32 array), so the bound is the next
    float32 above float32(radius): then every ``eps <= radius`` gives the labels of the dense matrix.
    """
    return min(float(np.nextafter(np.float32(radius), np.float32(2.0))), 1.0)


def _one_minus_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample i, ``1 - |A_i ∩ B_i| / |A_i ∪ B_i|`` where A_i (B_i) holds the samples sharing i's
    label in ``a`` (``b``), two labellings without outliers. The intersection is the count of i's
    (a, b) label pair, so no (n, n) matrix and no loop over samples is needed."""
    size_a = np.bincount(a)[a]
    size_b = np.bincount(b)[b]
    _, pair, count = np.unique(a * (int(b.max()) + 1) + b, return_inverse=True, return_counts=True)
    inter = count[pair.reshape(-1)]
    return 1.0 - inter / (size_a + size_b - inter)


def independence_threshold(values: np.ndarray, quantile: float) -> float:
    """SpCL's quantile of the cluster-level independence values (1 - IoU): the sorted value at rank
    ``round(quantile * m)``, the last one at most (SpCL's rank rule, not ``np.quantile``'s
    interpolation; ``np.round`` rounds halves to even, as SpCL's code does)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if not len(v):
        raise InvalidInputError("the independence threshold needs at least one cluster with more than one member")
    return float(v[min(len(v) - 1, int(np.round(len(v) * quantile)))])


def spcl_reliable(labels: np.ndarray, tight: np.ndarray, loose: np.ndarray, threshold: Optional[float],
                  quantile: float = 0.9) -> tuple[np.ndarray, Optional[float]]:
    """SpCL's self-paced reliability criterion on three DBSCAN labellings of the same samples
    (docs/baselines.md §3.3; -1 = noise, each noise point counts as a cluster of its own).

    Per sample, compactness is 1 - IoU of its cluster with its tight cluster and independence
    1 - IoU with its loose cluster (lower is better). A cluster's independence is its best member's;
    a cluster is kept when that is ``<= threshold``, and in a kept cluster a member keeps its label
    only with the cluster's best compactness.

    Args:
        labels, tight, loose: ``(n,)`` labels at eps, eps - gap and eps + gap.
        threshold: the frozen threshold; None computes it (:func:`independence_threshold` of the
            clusters with more than one member).
        quantile: the quantile of that computation.

    Returns:
        ``(reliable, threshold)``: the ``(n,)`` mask of the samples that keep their label, and the
        threshold used (None when there was none to freeze: no cluster has two members, and then
        every sample is reliable, as there is nothing to dissolve).
    """
    main, tight_s, loose_s = (outliers_as_singletons(np.asarray(x, dtype=np.int64)) for x in (labels, tight, loose))
    comp = _one_minus_iou(main, tight_s)
    indep = _one_minus_iou(main, loose_s)
    k = int(main.max()) + 1
    cluster_indep = np.full(k, np.inf)
    np.minimum.at(cluster_indep, main, indep)
    cluster_comp = np.full(k, np.inf)
    np.minimum.at(cluster_comp, main, comp)
    if threshold is None:
        multi = np.bincount(main, minlength=k) > 1
        if not multi.any():
            return np.ones(len(main), dtype=bool), None
        threshold = independence_threshold(cluster_indep[multi], quantile)
    reliable = (cluster_indep[main] <= threshold) & (comp <= cluster_comp[main])
    return reliable, threshold


def _contiguous(labels: np.ndarray) -> np.ndarray:
    """The labels renumbered ``0 .. K - 1`` in their order (dissolved clusters leave gaps), -1 kept."""
    out = np.full_like(labels, -1)
    keep = labels >= 0
    out[keep] = np.unique(labels[keep], return_inverse=True)[1].reshape(-1)
    return out


def _stored_thresholds(state: dict, levels: int) -> list[Optional[float]]:
    """The per-level thresholds a previous call froze in ``state`` (None: not frozen yet)."""
    stored = state.get("spcl_threshold")
    if stored is None:
        return [None] * levels
    if not isinstance(stored, (list, tuple)) or any(
            t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))) for t in stored):
        raise InvalidInputError(f"labeller state 'spcl_threshold' must be a list of numbers (one per level), got "
                                f"{stored!r}; the checkpoint's labeller_state is not the dbscan labeller's")
    out = [None if t is None else float(t) for t in stored][:levels]
    return out + [None] * (levels - len(out))  # a level not frozen yet is computed at this call


def _found_clusters(labels: np.ndarray, d, level: str) -> np.ndarray:
    """``labels`` when DBSCAN found a cluster; all noise is a setting to change, not pseudo-labels (with
    ``outliers="singletons"`` every sample would silently become a class of its own)."""
    if (labels >= 0).any():
        return labels
    raise InvalidInputError(f"DBSCAN found no cluster among the {len(labels)} samples ({level} features, "
                            f"cluster.dbscan.eps={d.eps}, cluster.dbscan.min_samples={d.min_samples}): every sample "
                            f"is noise; raise cluster.dbscan.eps (Jaccard distances lie in [0, 1)) or lower "
                            f"cluster.dbscan.min_samples")


@register_labeler("dbscan", settings=DBSCANCfg, needs_k=False)
def dbscan_labels(features: Sequence[torch.Tensor], camids: np.ndarray, cfg, *, seed: int, epoch: int = 0,
                  device=None, state: Optional[dict] = None) -> PseudoLabels:
    """One DBSCAN per level on the Jaccard distance of its L2-normalised features (deterministic:
    ``seed`` is not used).

    With ``cluster.dbscan.self_paced``, SpCL's reliability criterion (:func:`spcl_reliable`) turns
    the unreliable samples into outliers / singletons. Its per-level thresholds are computed at the
    first call and kept in ``state["spcl_threshold"]`` (the fine-tuning loop's labeller state, saved
    in ``last.pt``); later calls with that state reuse them, whatever ``epoch`` is. Without the
    option ``state`` is not touched.
    """
    d = cfg.dbscan
    labels, info = [], {}
    if d.self_paced:
        state = {} if state is None else state
        thresholds = _stored_thresholds(state, len(features))
    for i, (level, x) in enumerate(zip(("global", "top", "bottom"), features)):
        unit = F.normalize(x.float(), dim=1)
        if not d.self_paced:
            # DBSCAN counts neighbours at distance <= eps: the graph keeps everything up to eps itself
            graph = jaccard_distance(unit, k1=d.k1, k2=d.k2, device=device,
                                     max_distance=_graph_limit(d.eps), dense=False)
            lab = _found_clusters(dbscan_cluster(graph, d.eps, d.min_samples).astype(np.int64), d, level)
            info[f"dbscan_noise_{level}"] = float((lab < 0).mean())
        else:
            # one graph up to the loose radius serves all three radii: DBSCAN ignores the longer entries
            graph = jaccard_distance(unit, k1=d.k1, k2=d.k2, device=device,
                                     max_distance=_graph_limit(d.eps + d.eps_gap), dense=False)
            lab = _found_clusters(dbscan_cluster(graph, d.eps, d.min_samples).astype(np.int64), d, level)
            tight = dbscan_cluster(graph, d.eps - d.eps_gap, d.min_samples)
            loose = dbscan_cluster(graph, d.eps + d.eps_gap, d.min_samples)
            del graph
            info[f"dbscan_noise_{level}"] = float((lab < 0).mean())
            reliable, thresholds[i] = spcl_reliable(lab, tight, loose, thresholds[i], d.independence_quantile)
            rejected = (lab >= 0) & ~reliable  # noise is an outlier / singleton already
            if thresholds[i] is not None:
                info[f"spcl_threshold_{level}"] = thresholds[i]
            info[f"spcl_unreliable_{level}"] = float(rejected.mean())
            lab = _contiguous(np.where(rejected, -1, lab))
        if d.outliers == "singletons":
            lab = outliers_as_singletons(lab)
        labels.append(lab)
    if d.self_paced:
        state["spcl_threshold"] = thresholds  # plain floats (None: no cluster to judge yet), for last.pt
    return PseudoLabels(labels, info=info)


dbscan_labels.stateful = True  # type: ignore[attr-defined]  # called with state= (labelers.py)


def _check_dbscan(cfg, num_samples: int) -> None:
    if cfg.dbscan.k1 >= num_samples:
        raise InvalidInputError(f"cluster.dbscan.k1={cfg.dbscan.k1} needs more than {cfg.dbscan.k1} target training "
                                f"images, there are {num_samples}; choose k1 < {num_samples}")


dbscan_labels.check = _check_dbscan  # type: ignore[attr-defined]
