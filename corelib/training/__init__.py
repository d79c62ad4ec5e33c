"""Training: atomic full-state checkpoints and source pre-training (fine-tuning follows, issue 6)."""

from .checkpoint import load_checkpoint, save_checkpoint
from .pretrain import PretrainResult, evaluate_source, pretrain

__all__ = ["PretrainResult", "evaluate_source", "load_checkpoint", "pretrain", "save_checkpoint"]
