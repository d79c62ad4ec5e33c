"""Pseudo-label quality: how well a clustering matches the hidden identities, and its shape.

Research datasets carry identity labels for their training images even when a UDA method may not
use them; logging the agreement of the pseudo-labels with them each epoch shows whether the
adaptation is working (peers.md §6, item 4). Scores come from scikit-learn where it has them (NMI,
ARI); purity and pairwise precision / recall are computed from the contingency table.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from ..errors import InvalidInputError


# scikit-learn (and the scipy / pandas it loads, ~1 s) is imported on first use, so that
# ``import corelib.cluster`` stays light
def contingency_matrix(*args, **kwargs):
    from sklearn.metrics.cluster import contingency_matrix as impl  # lazy: scikit-learn pulls in SciPy; only this step needs it

    return impl(*args, **kwargs)


def normalized_mutual_info_score(*args, **kwargs):
    from sklearn.metrics import normalized_mutual_info_score as impl  # lazy: scikit-learn pulls in SciPy; only this step needs it

    return impl(*args, **kwargs)


def adjusted_rand_score(*args, **kwargs):
    from sklearn.metrics import adjusted_rand_score as impl  # lazy: scikit-learn pulls in SciPy; only this step needs it

    return impl(*args, **kwargs)

Labels = Union[np.ndarray, torch.Tensor, list]


def _np(labels: Labels) -> np.ndarray:
    a = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if a.ndim != 1:
        raise InvalidInputError(f"labels must be one-dimensional, got shape {a.shape}")
    return a


def _pairs(n: np.ndarray) -> float:
    n = n.astype(np.float64)
    return float((n * (n - 1) / 2).sum())


def pairwise_precision_recall(pred: Labels, truth: Labels) -> tuple[float, float, float]:
    """Precision, recall and F-score over pairs of samples put in the same cluster.

    Precision: of the pairs sharing a pseudo-label, the share that share an identity; recall: of
    the pairs sharing an identity, the share that share a pseudo-label.
    """
    p, t = _np(pred), _np(truth)
    c = contingency_matrix(t, p, sparse=True)
    together = _pairs(c.data)
    pred_pairs = _pairs(np.asarray(c.sum(axis=0)).ravel())
    true_pairs = _pairs(np.asarray(c.sum(axis=1)).ravel())
    precision = together / pred_pairs if pred_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f


def purity(pred: Labels, truth: Labels) -> float:
    """Share of samples whose cluster's majority identity is their own."""
    c = contingency_matrix(_np(truth), _np(pred), sparse=True).tocsc()
    return float(c.max(axis=0).sum() / c.sum())


def gini(values: Labels) -> float:
    """Gini coefficient of non-negative values (0: all equal; near 1: one holds everything)."""
    v = np.sort(_np(values).astype(np.float64))
    if v.size == 0 or v.sum() == 0:
        return 0.0
    cum = np.cumsum(v)
    return float((v.size + 1 - 2 * (cum / cum[-1]).sum()) / v.size)


def cluster_size_stats(labels: Labels) -> dict:
    """Number of clusters and the min / max / mean / std / Gini of their sizes, and singletons."""
    lab = _np(labels)
    lab = lab[lab >= 0]  # -1 marks outliers in density-based clusterings
    sizes = np.bincount(np.unique(lab, return_inverse=True)[1]) if lab.size else np.zeros(0, int)
    return {
        "clusters": int(sizes.size),
        "size_min": int(sizes.min()) if sizes.size else 0,
        "size_max": int(sizes.max()) if sizes.size else 0,
        "size_mean": float(sizes.mean()) if sizes.size else 0.0,
        "size_std": float(sizes.std()) if sizes.size else 0.0,
        "size_gini": gini(sizes),
        "singletons": int((sizes == 1).sum()),
    }


def label_agreement(a: Labels, b: Labels) -> dict:
    """Agreement of two labelings of the same samples (e.g. epoch t vs t-1, global vs top)."""
    x, y = _np(a), _np(b)
    if x.shape != y.shape:
        raise InvalidInputError(f"labelings differ in length: {x.shape[0]} vs {y.shape[0]}")
    return {"nmi": float(normalized_mutual_info_score(x, y)), "ari": float(adjusted_rand_score(x, y))}


def pseudo_label_quality(pred: Labels, truth: Labels) -> dict:
    """Everything at once: NMI, ARI, purity, pairwise precision / recall / F and size statistics."""
    p, t = _np(pred), _np(truth)
    if p.shape != t.shape:
        raise InvalidInputError(f"{p.shape[0]} pseudo-labels for {t.shape[0]} ground-truth labels")
    prec, rec, f = pairwise_precision_recall(p, t)
    out = {
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
        "purity": purity(p, t),
        "pair_precision": prec,
        "pair_recall": rec,
        "pair_f": f,
    }
    out.update(cluster_size_stats(p))
    return out


def camera_mixing(pred: Labels, camids: Labels) -> float:
    """Fraction of the clusters with two or more members that hold images of two or more cameras.

    Needs no identity labels, so it can be watched on a real unlabelled target: clusters that
    never span cameras teach the network to separate cameras, not identities.
    """
    p, c = _np(pred), _np(camids)
    multi = mixed = 0
    for label in np.unique(p):
        cams = c[p == label]
        if len(cams) > 1:
            multi += 1
            mixed += len(np.unique(cams)) > 1
    return mixed / multi if multi else 0.0
