"""Orientation-aware batch-hard triplet mining and the two criteria built on it (docs/method.md §3.14).

Plain batch-hard mining ignores how an object is seen. The CORE-ReID V2 authors name the problem in
their future work: the hardest positive of an anchor is often the same identity seen from the same
side (easy for a network that has learned pose), and its hardest negative may be another identity
seen from the opposite side (too easy: the network can push it away by pose alone). A network trained
that way can learn orientation instead of identity. Their orientation-aware triplet restricts the
mining:

- the positive of an anchor with orientation ``o`` is the hardest image of the SAME identity seen
  from a DIFFERENT orientation (the network must match an identity across views);
- the negative is the hardest image of a DIFFERENT identity seen from a SIMILAR orientation (the
  network cannot separate identities by pose).

What "similar" means is a setting (:class:`~corelib.config.OrientationCfg`, ``loss.orientation.*``):

- ``rule="same_view"``: similar = the same view id, different = another view id;
- ``rule="angular"``: each view id has an angle in degrees (``view_angles``, indexed by view id);
  similar = angular distance ``<= similar_within`` degrees, different = farther. With the embedded
  generators' three views (0 front, 1 back / rear, 2 side at 0, 180, 90 degrees) and
  ``similar_within=90``, a side view is similar to the front and to the back, while front and back
  are different from each other.

Fallbacks, so that every anchor gets a triplet: an anchor with no different-orientation positive in
the batch takes its hardest positive of any orientation, one with no similar-orientation negative its
hardest negative of any orientation (plain batch-hard mining); an anchor whose view is unknown (-1)
is mined plainly, and a candidate whose view is unknown belongs to no oriented set (only to the plain
fallback). ``fell_back`` marks the anchors that had positives (or negatives) but none the rule allows,
or an unknown view; the criteria log its share as the term ``fallback_share`` every epoch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from ..errors import InvalidInputError
from .corereid import CoreReIDAdaptation, SupervisedCETriplet
from .metric import SoftTripletLoss, hardest_distances, identity_masks, pairwise_distances
from .registry import AdaptBatch, register_loss

VIEW_RULES = ("same_view", "angular")
"""How two orientations compare: the same view id, or an angular distance within a bound."""


class OrientedDistances(NamedTuple):
    """Per anchor: the mined positive and negative distances, and whether the anchor fell back."""

    d_ap: torch.Tensor  # (B,) hardest allowed positive, 0 when the anchor has no positive at all
    d_an: torch.Tensor  # (B,) hardest allowed negative, +inf when the anchor has no negative at all
    fell_back: torch.Tensor  # (B,) bool: plain mining took over for the positive or the negative


def similar_views(views: torch.Tensor, rule: str = "same_view", *, view_angles: Sequence[float] = (),
                  similar_within: float = 45.0) -> torch.Tensor:
    """``(B, B)`` bool: the two images' orientations are similar under ``rule`` (False where either is unknown, -1).

    Raises:
        InvalidInputError: an unknown rule, or (``angular``) a view id without an angle in ``view_angles``.
    """
    if rule not in VIEW_RULES:
        raise InvalidInputError(f"unknown orientation rule {rule!r}; valid rules: {', '.join(VIEW_RULES)}")
    views = views.long()
    known = views >= 0
    both = known[:, None] & known[None, :]
    if rule == "same_view":
        return both & (views[:, None] == views[None, :])
    largest = int(views.max()) if len(views) else -1
    if largest >= len(view_angles):
        raise InvalidInputError(f"view id {largest} has no angle: loss.orientation.view_angles holds "
                                f"{len(view_angles)} ({list(view_angles)}); give one angle in degrees per view id")
    angles = torch.tensor([float(a) for a in view_angles] or [0.0], dtype=torch.float64, device=views.device)
    a = angles[views.clamp_min(0)]
    gap = torch.remainder(a[:, None] - a[None, :], 360.0)
    gap = torch.minimum(gap, 360.0 - gap)  # angular distance in [0, 180]
    return both & (gap <= similar_within + 1e-9)


def orientation_batch_hard_distances(features: torch.Tensor, pids: torch.Tensor, views: torch.Tensor,
                                     rule: str = "same_view", *, view_angles: Sequence[float] = (),
                                     similar_within: float = 45.0) -> OrientedDistances:
    """Orientation-aware batch-hard mining: per anchor, the hardest positive seen from a different
    orientation and the hardest negative seen from a similar one, with the documented fallbacks
    (module docstring); distances as :func:`~corelib.losses.batch_hard_distances` measures them.

    Args:
        features: (B, d); pids: (B,); views: (B,) view ids, -1 where unknown.
        rule, view_angles, similar_within: what "similar" means (:func:`similar_views`).

    Raises:
        InvalidInputError: ``views`` does not hold one view per feature row.
    """
    views = torch.as_tensor(views, device=features.device).long().reshape(-1)
    if views.shape[0] != features.shape[0]:
        raise InvalidInputError(f"orientation triplet: {features.shape[0]} features but {views.shape[0]} views; pass "
                                f"one view id per image (-1 where unknown), gathered like the labels")
    positives, negatives = identity_masks(pids.to(features.device))
    similar = similar_views(views, rule, view_angles=view_angles, similar_within=similar_within)
    known = views >= 0
    different = known[:, None] & known[None, :] & ~similar
    oriented_pos, oriented_neg = positives & different, negatives & similar
    has_pos, has_neg = oriented_pos.any(dim=1), oriented_neg.any(dim=1)
    # an anchor with an empty oriented set keeps the plain set: plain batch-hard for that side
    pos = torch.where(has_pos[:, None], oriented_pos, positives)
    neg = torch.where(has_neg[:, None], oriented_neg, negatives)
    d_ap, d_an = hardest_distances(pairwise_distances(features), pos, neg)
    fell_back = (~has_pos & positives.any(dim=1)) | (~has_neg & negatives.any(dim=1)) | ~known
    return OrientedDistances(d_ap, d_an, fell_back)


class OrientationTripletLoss(torch.nn.Module):
    """Soft-margin triplet (:class:`~corelib.losses.SoftTripletLoss`) on orientation-aware mining;
    returns ``(loss, share of anchors that fell back)``."""

    def __init__(self, orientation) -> None:
        super().__init__()
        self.rule = orientation.rule
        self.view_angles = tuple(float(a) for a in orientation.view_angles)
        self.similar_within = float(orientation.similar_within)

    def forward(self, features: torch.Tensor, pids: torch.Tensor,
                views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mined = orientation_batch_hard_distances(features, pids, views, self.rule, view_angles=self.view_angles,
                                                 similar_within=self.similar_within)
        return SoftTripletLoss.of_distances(mined.d_ap, mined.d_an), mined.fell_back.float().mean().detach()


def _views_of(views, where: str) -> torch.Tensor:
    if views is None:
        raise InvalidInputError(f"{where} reads the view id of every image but got none; train on a split whose "
                                f"samples carry viewid (corelib.orientation.with_estimated_views for a target without)")
    return views


@register_loss("ce_triplet_orientation", stage="pretrain")
class SupervisedCEOrientationTriplet(SupervisedCETriplet):
    """``ce_triplet`` with the orientation-aware triplet: ``L = CE_ls(logits, pid) + oriented soft triplet``;
    also logs ``fallback_share`` (not part of the loss)."""

    terms = ("loss", "ce", "triplet", "fallback_share")
    uses_views = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.oriented = OrientationTripletLoss(cfg.orientation)
        self._shares: list[torch.Tensor] = []

    def forward(self, outputs, pids: torch.Tensor, gather=lambda x: x, views=None) -> dict[str, torch.Tensor]:
        _views_of(views, "loss 'ce_triplet_orientation'")
        self._shares = []
        terms = super().forward(outputs, pids, gather, views)
        return {**terms, "fallback_share": self._shares[0]}

    def triplet_term(self, features: torch.Tensor, pids: torch.Tensor, views=None) -> torch.Tensor:
        loss, share = self.oriented(features, pids, views)
        self._shares.append(share)
        return loss


@register_loss("corereid_orientation", stage="finetune")
class CoreReIDOrientationAdaptation(CoreReIDAdaptation):
    """``corereid`` with every triplet term orientation-aware (global, top, bottom and, with
    ``fused_loss``, the fused ones), each on its own batch's views (``AdaptBatch.views``);
    ``fallback_share`` is the mean share of anchors that fell back over the triplet terms (logged,
    not part of the loss)."""

    uses_views = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.oriented = OrientationTripletLoss(cfg.orientation)
        self.terms = self.terms + ("fallback_share",)
        self._shares: list[torch.Tensor] = []

    def forward(self, batch: AdaptBatch) -> dict[str, torch.Tensor]:
        _views_of(getattr(batch, "views", None), "loss 'corereid_orientation'")
        self._shares = []
        terms = super().forward(batch)
        return {**terms, "fallback_share": torch.stack(self._shares).mean()}

    def triplet_term(self, features: torch.Tensor, labels: torch.Tensor, views=None) -> torch.Tensor:
        loss, share = self.oriented(features, labels, views)
        self._shares.append(share)
        return loss
