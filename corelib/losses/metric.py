"""The loss functions CORE-ReID's criteria combine (method.md §2.4, §3.8): label-smoothed
cross-entropy and the soft-margin batch-hard triplet loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing: targets ``(1 - eps) * onehot + eps / K``, batch mean.

    ``eps = 0.1`` in both stages of CORE-ReID.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise InvalidInputError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.epsilon)


def batch_hard_distances(features: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each anchor: the largest distance to a positive and the smallest to a negative.

    Distances are Euclidean (not squared) between the unnormalised features, as in the authors'
    code. An anchor without any positive (a lone identity in the batch) gets ``d_ap = 0``; one
    without a negative gets ``d_an = +inf`` (its loss is then 0).
    """
    d = torch.cdist(features, features).clamp_min(1e-12)  # the clamp keeps sqrt differentiable at 0
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=features.device)
    d_ap = torch.where(same & ~eye, d, torch.zeros_like(d)).amax(dim=1)
    d_an = torch.where(~same, d, torch.full_like(d, float("inf"))).amin(dim=1)
    return d_ap, d_an


class SoftTripletLoss(nn.Module):
    """Soft-margin batch-hard triplet loss: mean over anchors of ``softplus(d_ap - d_an)``.

    Equals ``-log(exp(d_an) / (exp(d_ap) + exp(d_an)))``, the authors' ``SoftTripletLoss`` with
    margin 0 (no fixed margin).
    """

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        d_ap, d_an = batch_hard_distances(features, pids)
        return F.softplus(d_ap - d_an).mean()
