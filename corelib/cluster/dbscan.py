"""The ``dbscan`` pseudo-labeller: DBSCAN on the k-reciprocal Jaccard distance of the target features.

This is how MMT, SpCL and Cluster Contrast label an unlabelled target (baselines.md §3). Each
level's features are L2-normalised, which the Jaccard encoding assumes (d^2 = 2 - 2 cos), and their
Jaccard distance (:func:`corelib.cluster.jaccard_distance`, k1 / k2 of ``cluster.dbscan``) is handed
to scikit-learn's DBSCAN as a precomputed sparse neighbourhood graph. The graph holds only the
distances below ``eps``, so memory stays bounded at the sizes of real targets. The number of
clusters is whatever DBSCAN finds, so it changes from epoch to epoch; the fine-tuning loop resizes
its classifiers to it. Noise points are dropped from training (label -1: MMT, Cluster Contrast) or
made classes of their own (``outliers="singletons"``: SpCL's un-clustered instances).

Select it with ``cluster.labeler=dbscan``; its settings are ``cluster.dbscan``
(:class:`~corelib.config.DBSCANCfg`). The camera normalisations of :mod:`corelib.cluster.normalize`
(``cluster.normalize``) apply before it, as for every labeller.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .labelers import PseudoLabels, register_labeler


def dbscan_cluster(distances, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn DBSCAN on a precomputed distance matrix (dense, or a sparse graph that holds
    every distance below ``eps``): ``(n,)`` labels, -1 for noise."""
    from sklearn.cluster import DBSCAN

    if isinstance(distances, torch.Tensor):
        distances = distances.detach().cpu().numpy()
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=1).fit_predict(distances)


def outliers_as_singletons(labels: np.ndarray) -> np.ndarray:
    """Each noise point (-1) becomes a class of its own, numbered after the clusters (SpCL)."""
    out = labels.copy()
    noise = np.flatnonzero(out < 0)
    out[noise] = out.max(initial=-1) + 1 + np.arange(len(noise))
    return out


@register_labeler("dbscan")
def dbscan_labels(features: Sequence[torch.Tensor], camids: np.ndarray, cfg, *, seed: int, epoch: int = 0,
                  device=None) -> PseudoLabels:
    """One DBSCAN per level on the Jaccard distance of its L2-normalised features (deterministic:
    ``seed`` is not used)."""
    from .jaccard import jaccard_distance

    d = cfg.dbscan
    labels, info = [], {}
    for level, x in zip(("global", "top", "bottom"), features):
        unit = F.normalize(x.float(), dim=1)
        # DBSCAN counts neighbours at distance <= eps: the graph keeps everything up to eps itself
        graph = jaccard_distance(unit, k1=d.k1, k2=d.k2, device=device, max_distance=float(np.nextafter(d.eps, 2.0)),
                                 dense=False)
        lab = dbscan_cluster(graph, d.eps, d.min_samples).astype(np.int64)
        info[f"dbscan_noise_{level}"] = float((lab < 0).mean())
        if d.outliers == "singletons":
            lab = outliers_as_singletons(lab)
        labels.append(lab)
    return PseudoLabels(labels, info=info)


def _check_dbscan(cfg, num_samples: int) -> None:
    if cfg.dbscan.k1 >= num_samples:
        raise InvalidInputError(f"cluster.dbscan.k1={cfg.dbscan.k1} needs more than {cfg.dbscan.k1} target training "
                                f"images, there are {num_samples}; choose k1 < {num_samples}")


dbscan_labels.check = _check_dbscan  # type: ignore[attr-defined]
