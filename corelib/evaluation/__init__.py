"""Retrieval evaluation: distances, ranking metrics per protocol, k-reciprocal re-ranking.

Example::

    from corelib.evaluation import evaluate_ranking
    res = evaluate_ranking(qf, gf, q_pids, g_pids, q_camids, g_camids, protocol="market")
"""

from .ranking import (
    CMC_RANKS,
    PRECISIONS,
    PROTOCOLS,
    RankingResult,
    VehicleIDResult,
    evaluate_distance_chunks,
    evaluate_distmat,
    evaluate_ranking,
    evaluate_vehicleid,
    fast_bf16,
    pairwise_distance,
    resolve_precision,
)
from .rerank import k_reciprocal_chunks, rerank

__all__ = [
    "CMC_RANKS",
    "PRECISIONS",
    "PROTOCOLS",
    "RankingResult",
    "VehicleIDResult",
    "evaluate_distance_chunks",
    "evaluate_distmat",
    "evaluate_ranking",
    "evaluate_vehicleid",
    "k_reciprocal_chunks",
    "fast_bf16",
    "pairwise_distance",
    "resolve_precision",
    "rerank",
]
