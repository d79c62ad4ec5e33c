"""The VehicleID protocol: ten seeded gallery draws, each ranked exactly, averaged.

VehicleID has no cameras and no fixed gallery: for each test list (Test800/1600/2400) one image per
vehicle is drawn into the gallery and the rest are queries. The standard protocol averages the
draws with seeds 0..9; the draw is :func:`vehicleid_draw`, defined here and used by the
VehicleID loader too, so a seed means the same split in training and evaluation. Each draw is ranked by
:func:`~corelib.evaluation.ranking.evaluate_ranking` with ``protocol="vehicleid"``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

from ..array_checks import integer_ids
from .ranking import CMC_RANKS, ArrayLike, RankingResult, evaluate_ranking


def vehicleid_draw(pids: Sequence[int], seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(query, gallery)`` of one seeded VehicleID draw over a list of pids.

    Vehicle ids are visited in sorted order and ``random.Random(seed)`` picks one of each id's
    images (in list order) for the gallery; every other image is a query (in list order). The
    loader and the evaluator (:func:`corelib.evaluation.evaluate_vehicleid`) both draw with this
    function, so a seed means the same split everywhere.
    """
    rng = random.Random(seed)
    by_pid: dict[int, list[int]] = defaultdict(list)
    for i, pid in enumerate(pids):
        by_pid[int(pid)].append(i)
    gallery = [rng.choice(by_pid[pid]) for pid in sorted(by_pid)]
    chosen = set(gallery)
    return [i for i in range(len(pids)) if i not in chosen], gallery


@dataclass
class VehicleIDResult:
    """Mean and standard deviation over the draws, each draw, and the single seed-0 draw."""

    mean: dict
    std: dict
    draws: list[RankingResult]

    @property
    def seed0(self) -> RankingResult:
        return self.draws[0]

    def to_dict(self) -> dict:
        out = {"protocol": "vehicleid", "draws": len(self.draws)}
        out.update({k: v for k, v in self.mean.items()})
        out.update({f"{k}_std": v for k, v in self.std.items()})
        out.update({f"{k}_seed0": v for k, v in self.seed0.to_dict().items() if isinstance(v, float)})
        return out

    def __str__(self) -> str:
        return (f"[vehicleid x{len(self.draws)}] mAP {100 * self.mean['mAP']:.2f} ± {100 * self.std['mAP']:.2f}  "
                f"R1 {100 * self.mean['rank1']:.2f} ± {100 * self.std['rank1']:.2f}  "
                f"R5 {100 * self.mean['rank5']:.2f}  (seed 0: mAP {100 * self.seed0.mAP:.2f})")


def evaluate_vehicleid(
    test_feats: torch.Tensor,
    test_pids: ArrayLike,
    *,
    draws: int = 10,
    first_seed: int = 0,
    metric: str = "euclidean",
    device: Union[str, torch.device, None] = None,
    max_rank: int = 50,
) -> VehicleIDResult:
    """The VehicleID protocol on one test list (Test800/1600/2400): ``draws`` seeded gallery draws.

    Seeds ``first_seed .. first_seed + draws - 1``; no camera filtering (VehicleID has no cameras).
    """

    pids = integer_ids(test_pids, "test_pids")
    feats = torch.as_tensor(test_feats)
    results = []
    for seed in range(first_seed, first_seed + draws):
        qi, gi = (np.asarray(ix, dtype=np.int64) for ix in vehicleid_draw(pids.tolist(), seed))
        res = evaluate_ranking(feats[torch.as_tensor(qi)], feats[torch.as_tensor(gi)], pids[qi], pids[gi],
                               protocol="vehicleid", metric=metric, device=device, max_rank=max_rank)
        res.extras["draw_seed"] = seed
        results.append(res)
    keys = ["mAP", "mINP"] + [f"rank{r}" for r in CMC_RANKS]
    table = {k: np.array([r.to_dict()[k] for r in results]) for k in keys}
    return VehicleIDResult({k: float(v.mean()) for k, v in table.items()},
                           {k: float(v.std()) for k, v in table.items()}, results)
