"""CycleGAN's losses: least-squares GAN (LSGAN) and L1, computed in float32 at least, whatever the
autocast dtype."""

from __future__ import annotations

import torch
from torch import nn


def _loss_precision(x: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least: bf16 autocast outputs go up, float64 (the tests) stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Mean squared distance of the discriminator's patch scores to 1 (``real``) or 0."""
    return ((_loss_precision(scores) - (1.0 if real else 0.0)) ** 2).mean()


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of ``output`` and ``target`` (cycle and identity terms)."""
    return nn.functional.l1_loss(_loss_precision(output), target)
