"""Clustering for pseudo-labels: k-means with greedy k-means++ seeding, and label quality."""

from .kmeans import INITS, KMeansResult, assign, default_trials, kmeans, kmeans_plusplus, minibatch_kmeans, random_init
from .quality import (
    camera_mixing,
    cluster_size_stats,
    gini,
    label_agreement,
    pairwise_precision_recall,
    pseudo_label_quality,
    purity,
)
from .study import compare_inits, summarize_inits

__all__ = [
    "INITS",
    "KMeansResult",
    "assign",
    "camera_mixing",
    "cluster_size_stats",
    "compare_inits",
    "default_trials",
    "gini",
    "kmeans",
    "kmeans_plusplus",
    "label_agreement",
    "minibatch_kmeans",
    "pairwise_precision_recall",
    "pseudo_label_quality",
    "purity",
    "random_init",
    "summarize_inits",
]
