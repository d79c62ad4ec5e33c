"""Losses: the functions (label-smoothed CE, soft-margin batch-hard triplet) and the criteria by name
(the paper's two, and Cluster Contrast's cluster-memory InfoNCE)."""

from . import cluster_contrast, corereid  # noqa: F401  (register their criteria)
from .metric import CrossEntropyLabelSmooth, SoftTripletLoss, batch_hard_distances
from .registry import AdaptBatch, Criterion, build_criterion, list_losses, register_loss

__all__ = [
    "AdaptBatch",
    "Criterion",
    "CrossEntropyLabelSmooth",
    "SoftTripletLoss",
    "batch_hard_distances",
    "build_criterion",
    "list_losses",
    "register_loss",
]
