"""Training loops: source pre-training and mean-teacher fine-tuning, with atomic checkpoints."""

from .analysis import analysis_features, analysis_model, analysis_models
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import TrainedModel, evaluate_checkpoint, evaluate_model, load_trained_model
from .finetune import FinetuneResult, cluster_pseudo_labels, extract_cluster_features, finetune
from .pretrain import PretrainResult, pretrain

__all__ = [
    "analysis_features",
    "analysis_model",
    "analysis_models",
    "FinetuneResult",
    "PretrainResult",
    "cluster_pseudo_labels",
    "TrainedModel",
    "evaluate_checkpoint",
    "evaluate_model",
    "load_trained_model",
    "extract_cluster_features",
    "finetune",
    "load_checkpoint",
    "pretrain",
    "save_checkpoint",
]
