"""Retrieval evaluation: distances, ranking metrics per protocol, k-reciprocal re-ranking.

Example::

    from corelib.evaluation import evaluate_ranking
    res = evaluate_ranking(qf, gf, q_pids, g_pids, q_camids, g_camids, protocol="market")
"""

from .ranking import (
    CMC_RANKS,
    PROTOCOLS,
    RankingResult,
    evaluate_distance_chunks,
    evaluate_distmat,
    evaluate_ranking,
    pairwise_distance,
)
from .rerank import k_reciprocal_chunks, rerank
from .vehicleid import VehicleIDResult, evaluate_vehicleid

__all__ = [
    "CMC_RANKS",
    "PROTOCOLS",
    "RankingResult",
    "VehicleIDResult",
    "evaluate_distance_chunks",
    "evaluate_distmat",
    "evaluate_ranking",
    "evaluate_vehicleid",
    "k_reciprocal_chunks",
    "pairwise_distance",
    "rerank",
]
