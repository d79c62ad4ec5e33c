"""Clustering for pseudo-labels: labellers by name (k-means with greedy k-means++ seeding first),
feature normalisation before clustering, the multi-level clustering of fine-tuning, label quality, and the
k-reciprocal Jaccard distance that SpCL / Cluster Contrast feed to DBSCAN (the ``dbscan`` labeller)."""

from .dbscan import dbscan_labels  # importing it registers the dbscan labeller
from .jaccard import jaccard_distance
from .kmeans import INITS, KMeansResult, assign, default_trials, kmeans, kmeans_plusplus, minibatch_kmeans, random_init
from .labelers import (
    LEVELS,
    PseudoLabels,
    check_labeler,
    class_means,
    cluster_pseudo_labels,
    get_labeler,
    kmeans_labels,
    label_report,
    list_labelers,
    register_labeler,
)
from .normalize import (
    camera_centred,
    camera_guided,
    camera_ids,
    list_normalizations,
    normalize_features,
    register_normalization,
)
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
    "LEVELS",
    "PseudoLabels",
    "assign",
    "camera_centred",
    "camera_guided",
    "camera_ids",
    "camera_mixing",
    "check_labeler",
    "class_means",
    "cluster_pseudo_labels",
    "cluster_size_stats",
    "compare_inits",
    "dbscan_labels",
    "default_trials",
    "get_labeler",
    "gini",
    "jaccard_distance",
    "kmeans",
    "kmeans_labels",
    "kmeans_plusplus",
    "label_agreement",
    "label_report",
    "list_labelers",
    "list_normalizations",
    "minibatch_kmeans",
    "normalize_features",
    "pairwise_precision_recall",
    "pseudo_label_quality",
    "purity",
    "random_init",
    "register_labeler",
    "register_normalization",
    "summarize_inits",
]
