"""Losses: the functions (label-smoothed CE, soft-margin batch-hard triplet) and the criteria by name."""

from . import corereid  # noqa: F401  (registers the paper's criteria)
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
