"""CycleGAN's losses: least-squares GAN (LSGAN) and L1, one value per stacked pair.

Each returns a ``(stack,)`` tensor: the loss of every CycleGAN of a stack
(:mod:`corelib.style.stacking`), each pair's mean over its own channels only; with ``stack=1`` it is
the plain mean. Losses are computed in float32 at least, whatever the autocast dtype.
"""

from __future__ import annotations

import torch
from torch import nn


def _pair_means(values: torch.Tensor, stack: int) -> torch.Tensor:
    """``(stack,)`` means of a ``(N, stack * c, ...)`` tensor, one per stacked pair."""
    if stack == 1:  # the plain mean, so that one pair computes exactly what it always did
        return values.mean().view(1)
    return values.reshape(values.shape[0], stack, -1).mean(dim=(0, 2))


def _loss_precision(x: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least: bf16 autocast outputs go up, float64 (the tests) stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def lsgan_loss(scores: torch.Tensor, real: bool, stack: int = 1) -> torch.Tensor:
    """Mean squared distance of the discriminator's patch scores to 1 (``real``) or 0, per pair."""
    return _pair_means((_loss_precision(scores) - (1.0 if real else 0.0)) ** 2, stack)


def l1_loss(output: torch.Tensor, target: torch.Tensor, stack: int) -> torch.Tensor:
    """Mean absolute difference of ``output`` and ``target`` (cycle and identity terms), per pair."""
    if stack == 1:
        return nn.functional.l1_loss(_loss_precision(output), target).view(1)
    return _pair_means((_loss_precision(output) - target).abs(), stack)

