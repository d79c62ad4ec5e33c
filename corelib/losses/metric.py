"""The loss functions the criteria combine: label-smoothed cross-entropy and the soft-margin
batch-hard triplet loss of CORE-ReID (docs/method.md §2.4, §3.8); the fixed-margin triplet and the centre
loss of the Bag-of-Tricks baseline that Learn by Guessing trains with (docs/baselines.md §2.3)."""

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
    positives, negatives = identity_masks(pids)
    return hardest_distances(pairwise_distances(features), positives, negatives)


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` Euclidean distances of the batch, clamped away from 0 (keeps sqrt differentiable there)."""
    return torch.cdist(features, features).clamp_min(1e-12)


def identity_masks(pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, B)`` masks of each anchor's positives (same pid, itself excluded) and negatives (other pid)."""
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    return same & ~eye, ~same


def hardest_distances(d: torch.Tensor, positives: torch.Tensor,
                      negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor (row): the largest distance among its ``positives`` (0 when none) and the smallest
    among its ``negatives`` (+inf when none): batch-hard mining over whatever candidates the masks allow."""
    d_ap = torch.where(positives, d, torch.zeros_like(d)).amax(dim=1)
    d_an = torch.where(negatives, d, torch.full_like(d, float("inf"))).amin(dim=1)
    return d_ap, d_an


class SoftTripletLoss(nn.Module):
    """Soft-margin batch-hard triplet loss: mean over anchors of ``softplus(d_ap - d_an)``.

    Equals ``-log(exp(d_an) / (exp(d_ap) + exp(d_an)))``, the authors' ``SoftTripletLoss`` with
    margin 0 (no fixed margin).
    """

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        return self.of_distances(*batch_hard_distances(features, pids))

    @staticmethod
    def of_distances(d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor:
        """The loss of already mined ``(d_ap, d_an)`` pairs (another mining rule, the same loss)."""
        return F.softplus(d_ap - d_an).mean()


class MarginTripletLoss(nn.Module):
    """Batch-hard triplet loss with a fixed margin: mean over anchors of ``max(0, d_ap - d_an + m)``
    (Hermans et al.; m = 0.3 in BoT and Learn by Guessing)."""

    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        if margin <= 0:
            raise InvalidInputError(f"triplet margin must be > 0 (0 is the soft margin: SoftTripletLoss), got {margin}")
        self.margin = margin

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        d_ap, d_an = batch_hard_distances(features, pids)
        return F.relu(d_ap - d_an + self.margin).mean()


def triplet_loss(margin: float) -> nn.Module:
    """The batch-hard triplet of a margin: soft (``softplus``) for 0, hinged otherwise."""
    return SoftTripletLoss() if margin == 0 else MarginTripletLoss(margin)


def center_loss(features: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``mean_i ||f_i - c_{y_i}||^2`` (Wen et al.; the batch mean of BoT's code, no factor 1/2).

    features: (B, d); labels: (B,) in [0, K); centres: (K, d).
    """
    if centres.shape[1] != features.shape[1]:
        raise InvalidInputError(f"centre loss: features have {features.shape[1]} values, centres {centres.shape[1]}")
    return (features - centres[labels]).pow(2).sum(dim=1).mean()
