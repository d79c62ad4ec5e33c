"""Ensemble Fusion (CORE-ReID V1) and Ensemble Fusion++ (V2), docs/method.md §3.5.

Inputs: the teacher's global feature map ``tau`` ``(B, C, H, W)`` and the student's ECAB vectors of
the top and bottom halves ``psi_top``, ``psi_bottom`` ``(B, C)``. Products with a C-vector broadcast
over H x W.

- V1: ``tau_top = tau * psi_top``, ``tau_bot = tau * psi_bottom``; outputs
  ``theta_g = BN1(Pool(tau))``, ``theta_top = BN2(Pool(tau_top))``, ``theta_bot = BN3(Pool(tau_bot))``.
- V2 (Fusion++): first ``tau' = tau * SECAB(tau)``, then the same with ``tau'`` in place of ``tau``.

``Pool`` is GAP + GMP (the authors' code) or GAP only (the paper's figure), a switch. BN1..3 are
BatchNorm1d with weight 1 and a frozen zero bias (BNNeck style). SECAB is a registered sub-module,
so it is saved, loaded and (optionally) trained; the authors' code re-creates it with fresh random
weights on every call (docs/method.md §3.4), which we do not reproduce.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import InvalidInputError
from .attention import SECAB


class FusedFeatures(NamedTuple):
    """The three Fusion outputs that are clustered for the global / top / bottom pseudo-labels."""

    global_feat: torch.Tensor
    top_feat: torch.Tensor
    bottom_feat: torch.Tensor


def bnneck(channels: int) -> nn.BatchNorm1d:
    """BatchNorm1d with weight 1 and a zero bias that never trains (the BNNeck convention)."""
    bn = nn.BatchNorm1d(channels)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


def pool_map(x: torch.Tensor, pool: str) -> torch.Tensor:
    """``(B, C, h, w) -> (B, C)`` by GAP + GMP (``"gap+gmp"``) or GAP only (``"gap"``)."""
    if pool == "gap+gmp":
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))
    if pool == "gap":
        return x.mean(dim=(2, 3))
    raise InvalidInputError(f"unknown pooling {pool!r}; use 'gap+gmp' (authors' code) or 'gap' (paper figure)")


class EnsembleFusion(nn.Module):
    """Ensemble Fusion (``secab=False``, V1) or Ensemble Fusion++ (``secab=True``, V2)."""

    def __init__(self, channels: int, *, secab: bool = True, pool: str = "gap+gmp", reduction: int = 4) -> None:
        super().__init__()
        pool_map(torch.zeros(1, 1, 1, 1), pool)  # validate early
        self.pool = pool
        self.secab = SECAB(channels, reduction) if secab else None
        self.bn_global, self.bn_top, self.bn_bottom = bnneck(channels), bnneck(channels), bnneck(channels)

    @property
    def version(self) -> str:
        return "v2" if self.secab is not None else "v1"

    def forward(self, teacher_map: torch.Tensor, psi_top: torch.Tensor, psi_bottom: torch.Tensor) -> FusedFeatures:
        tau = teacher_map
        if self.secab is not None:
            tau = tau * self.secab(tau)[:, :, None, None]  # tau' = tau * SECAB(tau)
        top = tau * psi_top[:, :, None, None]
        bottom = tau * psi_bottom[:, :, None, None]
        return FusedFeatures(
            self.bn_global(pool_map(tau, self.pool)),
            self.bn_top(pool_map(top, self.pool)),
            self.bn_bottom(pool_map(bottom, self.pool)),
        )
