"""Losses: the functions (label-smoothed CE, soft-margin and fixed-margin batch-hard triplet, centre
loss) and the criteria by name (the paper's two, Cluster Contrast's cluster-memory InfoNCE, and the
Bag-of-Tricks CE + triplet + centre loss of Learn by Guessing, TransReID's ID + triplet over the
global and JPM features), and the orientation-aware triplet (same identity from another view,
another identity from a similar view) with the criteria built on it."""

from . import center, cluster_contrast, corereid, orientation, transreid  # noqa: F401  (register their criteria)
from .metric import (CrossEntropyLabelSmooth, MarginTripletLoss, SoftTripletLoss, batch_hard_distances, center_loss,
                     triplet_loss)
from .orientation import VIEW_RULES, OrientedDistances, orientation_batch_hard_distances, similar_views
from .registry import AdaptBatch, Criterion, build_criterion, list_losses, register_loss, require_views

__all__ = [
    "AdaptBatch",
    "OrientedDistances",
    "VIEW_RULES",
    "Criterion",
    "CrossEntropyLabelSmooth",
    "MarginTripletLoss",
    "SoftTripletLoss",
    "batch_hard_distances",
    "orientation_batch_hard_distances",
    "similar_views",
    "center_loss",
    "triplet_loss",
    "build_criterion",
    "list_losses",
    "register_loss",
    "require_views",
]
