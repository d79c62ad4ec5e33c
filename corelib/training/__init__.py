"""Training machinery: atomic, full-state checkpoints (the loops arrive with issue 6)."""

from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]
