"""How much does k-means seeding matter? Runs of several initialisations over several seeds.

The paper credits greedy k-means++ with fewer Lloyd iterations (4 against 7 for random seeding)
and better pseudo-labels. :func:`compare_inits` runs full-batch k-means on the same features with
each seeding and each seed and returns one record per run (iterations, inertia, seeding potential,
time, cluster-size balance, NMI / ARI against hidden identities when given);
:func:`summarize_inits` averages them per seeding and adds the run-to-run stability (mean ARI
between the labelings of different seeds). Chapter 04 plots both.
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..errors import InvalidInputError
from ..progress import tqdm
from .kmeans import kmeans
from .quality import cluster_size_stats, label_agreement, pseudo_label_quality


def compare_inits(
    features: Union[torch.Tensor, np.ndarray],
    k: int,
    *,
    inits: Sequence[str] = ("greedy_kmeans++", "kmeans++", "random"),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    truth: Optional[Sequence[int]] = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    device: Union[str, torch.device, None] = None,
    progress: bool = True,
) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """One full-batch k-means per (seeding, seed) on ``features`` (a progress bar over the runs).

    Returns:
        ``(runs, labels)``: ``runs`` holds one record per run (``init``, ``seed``, ``n_iter``,
        ``converged``, ``inertia``, ``seeding_potential``, ``inertia_history``, ``seconds_init``,
        ``seconds_total``, cluster-size statistics and, with ``truth``, ``nmi`` / ``ari`` /
        ``purity``); ``labels[init]`` the labelings in seed order, for :func:`summarize_inits`.

    Raises:
        ValueError: no seeds, or ``truth`` of another length than ``features`` (and k-means' own
            errors: k larger than the number of samples, NaN rows, an unknown init).
    """
    if not seeds:
        raise InvalidInputError("compare_inits needs at least one seed")
    if truth is not None and len(truth) != len(features):
        raise InvalidInputError(f"{len(truth)} identities for {len(features)} feature rows")

    runs, labels = [], {}
    bar = tqdm(total=len(inits) * len(seeds), desc=f"k-means k={k}", unit="run", disable=not progress)
    for init in inits:
        labels[init] = []
        for seed in seeds:
            bar.set_postfix_str(f"{init} seed {seed}")
            res = kmeans(features, k, init=init, seed=seed, max_iter=max_iter, tol=tol, device=device)
            lab = res.labels.cpu().numpy()
            labels[init].append(lab)
            rec = {"init": init, "seed": seed, "n_iter": res.n_iter, "converged": res.converged,
                   "inertia": res.inertia, "seeding_potential": res.seeding_potential,
                   "inertia_history": list(res.inertia_history),
                   "seconds_init": res.seconds.get("init", float("nan")), "seconds_total": res.seconds.get("total", float("nan"))}
            if truth is not None:
                q = pseudo_label_quality(lab, np.asarray(truth))
                rec.update({key: q[key] for key in ("nmi", "ari", "purity")})
            rec.update(cluster_size_stats(lab))
            runs.append(rec)
            bar.update()
    bar.close()
    return runs, labels


def summarize_inits(runs: Sequence[dict], labels: dict[str, list[np.ndarray]]) -> list[dict]:
    """Per seeding: the mean (and std) over seeds of iterations, inertia, time, size Gini and, when
    present, NMI / ARI; plus ``stability``, the mean ARI between the labelings of two seeds."""
    out = []
    for init, labs in labels.items():
        mine = [r for r in runs if r["init"] == init]
        row: dict = {"init": init, "runs": len(mine)}
        for key in ("n_iter", "inertia", "seeding_potential", "seconds_total", "size_gini", "nmi", "ari"):
            if key in mine[0]:
                vals = np.asarray([r[key] for r in mine], dtype=float)
                row[key] = float(vals.mean())
                row[f"{key}_std"] = float(vals.std())
        pairs = list(combinations(range(len(labs)), 2))
        row["stability"] = float(np.mean([label_agreement(labs[i], labs[j])["ari"] for i, j in pairs])) if pairs else float("nan")
        out.append(row)
    return out
