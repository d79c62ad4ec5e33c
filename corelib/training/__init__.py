"""Training loops: source pre-training and mean-teacher fine-tuning, built on :mod:`corelib.runtime`."""

from ..runtime import load_checkpoint, save_checkpoint
from .analysis import analysis_features, analysis_model, analysis_models
from .evaluate import TrainedModel, evaluate_checkpoint, evaluate_model, load_trained_model, model_record
from .finetune import FinetuneResult, extract_cluster_features, finetune
from .pretrain import PretrainResult, pretrain

__all__ = [
    "analysis_features",
    "analysis_model",
    "analysis_models",
    "FinetuneResult",
    "PretrainResult",
    "TrainedModel",
    "evaluate_checkpoint",
    "evaluate_model",
    "load_trained_model",
    "extract_cluster_features",
    "finetune",
    "load_checkpoint",
    "model_record",
    "pretrain",
    "save_checkpoint",
]
