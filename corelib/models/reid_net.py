"""The source network (pre-training) and the CORE-ReID fine-tuning network (docs/method.md §2.4, §3.2).

Model contract (torchreid style): in training mode a network returns a small named structure; in
eval mode it returns the L2-normalised retrieval descriptor ``(B, D)``. Both take
``forward(images, camids=None, viewids=None)`` and hand the camera and view ids to the backbone (registered by name,
:func:`corelib.models.build_backbone`), which uses them or not.

Source network: trunk -> GAP -> BN-neck (frozen zero bias) -> bias-free classifier.
  train: ``SourceOutput(features=GAP feature (pre-BN), logits)``; eval: ``normalize(BN(GAP))``.

Fine-tuning network, with M the trunk map ``(B, C, H, W)`` split along the height into top and
bottom halves:
  global  f_g   = BN_g(Pool(M))                           Pool = GAP + GMP (or GAP, a switch)
  top     f_top = BN_u(FC_u([GAP(M_top); GMP(M_top)]))    FC: 2C -> C with bias (C -> C for GAP)
  bottom  f_bot = BN_l(FC_l([GAP(M_bot); GMP(M_bot)]))
  ECAB    psi_top = ECAB_u(M_top), psi_bot = ECAB_l(M_bot) (inputs of Ensemble Fusion)
  logits  = W f_g (no bias; W can be reset from cluster centroids)
  train: ``FineTuneOutput``; eval: ``normalize([f_g; f_top; f_bot])``, 3C = 1536 or 6144 values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .attention import get_attention
from .fusion import bnneck, pool_map
from .registry import Backbone, build_backbone

BackboneName = Union[str, int]
"""A registered backbone name (``"resnet50"``); an int ``d`` is short for ``"resnet{d}"``."""


def backbone_name(backbone: BackboneName) -> str:
    """``"resnet50"`` for ``50``; names pass through."""
    return f"resnet{backbone}" if isinstance(backbone, int) else str(backbone)


def _trunk(backbone: BackboneName, weights, backbone_args: Optional[dict]) -> Backbone:
    return build_backbone(backbone_name(backbone), weights=weights, **dict(backbone_args or {}))


ODD_HEIGHT = ("bottom", "drop")
"""Where :class:`CoreReIDNet` puts the middle row of a trunk map of odd height (its ``odd_height``)."""


class SourceOutput(NamedTuple):
    """Training-mode output of :class:`SourceNet`."""

    features: torch.Tensor  # (B, C) pooled feature before the BN-neck (the triplet loss uses it)
    logits: torch.Tensor  # (B, num_classes)


class FineTuneOutput(NamedTuple):
    """Training-mode output of :class:`CoreReIDNet` (all per image)."""

    global_feat: torch.Tensor  # (B, C) f_g, after BN_g
    top_feat: torch.Tensor  # (B, C) f_top
    bottom_feat: torch.Tensor  # (B, C) f_bot
    logits: torch.Tensor  # (B, K) classifier on f_g
    psi_top: torch.Tensor  # (B, C) ECAB vector of the top half
    psi_bottom: torch.Tensor  # (B, C) ECAB vector of the bottom half
    feature_map: torch.Tensor  # (B, C, H, W) trunk output


def _classifier(channels: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(channels, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class SourceNet(nn.Module):
    """Supervised pre-training network: trunk, GAP, BN-neck, bias-free classifier.

    Args:
        backbone: a registered backbone (``resnet50`` ...; an int is a ResNet depth).
        num_classes: source identities.
        weights: backbone weights ("imagenet", a file, None).
        backbone_args: further keyword arguments of the backbone's builder.
        test_flip: the test protocol averages the descriptor with the flipped image's (BMFN; the
            evaluation reads it, :func:`corelib.features.uses_test_flip`).
    """

    def __init__(self, backbone: BackboneName = "resnet50", num_classes: int = 751, *,
                 weights: Union[str, Path, None] = "imagenet", backbone_args: Optional[dict] = None,
                 test_flip: bool = True) -> None:
        super().__init__()
        self.trunk = _trunk(backbone, weights, backbone_args)
        self.backbone = backbone_name(backbone)
        self.test_flip = bool(test_flip)
        c = self.trunk.out_channels
        self.bnneck = bnneck(c)
        self.classifier = _classifier(c, num_classes)

    @property
    def feature_dim(self) -> int:
        return self.trunk.out_channels

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> Union[SourceOutput, torch.Tensor]:
        f = self.trunk(x, camids, viewids).mean(dim=(2, 3))
        bn = self.bnneck(f)
        if not self.training:
            return F.normalize(bn, dim=1)
        return SourceOutput(f, self.classifier(bn))


class CoreReIDNet(nn.Module):
    """The fine-tuning network of CORE-ReID (student and teacher are two of these).

    Args:
        backbone: a registered backbone (``resnet50`` ...; an int is a ResNet depth).
        num_classes: number of pseudo-identity clusters K (the classifier's rows).
        ecab: ECAB on the top and bottom halves (False: plain GMP + GAP vectors, the ablation).
        pool: ``"gap+gmp"`` (authors' code) or ``"gap"`` (paper figure) for every branch.
        weights: backbone weights (for the ResNets see :func:`corelib.models.resnet.build_trunk`).
        backbone_args: further keyword arguments of the backbone's builder.
        reduction: ECAB reduction ratio per layer.
        test_flip: the test protocol averages the descriptor with the flipped image's (BMFN, on as
            the authors evaluate; :func:`corelib.features.uses_test_flip`).
        odd_height: where the middle row of a trunk map of odd height goes: ``"bottom"`` (this
            workbench: top = rows ``[0, h // 2)``, bottom = ``[h // 2, h)``) or ``"drop"`` (CORE-ReID
            V1's released code, ``x[:, :, h // 2 * s : h // 2 * (s + 1)]``: the last row is in neither
            half). The two agree for even heights (256 x 128 and 256 x 256 inputs give 16 rows).
    """

    def __init__(self, backbone: BackboneName = "resnet50", num_classes: int = 900, *, ecab: bool = True,
                 pool: str = "gap+gmp", weights: Union[str, Path, None] = "imagenet",
                 backbone_args: Optional[dict] = None, reduction: int = 4, test_flip: bool = True,
                 odd_height: str = "bottom") -> None:
        super().__init__()
        pool_map(torch.zeros(1, 1, 1, 1), pool)  # validate the name early
        if odd_height not in ODD_HEIGHT:
            raise InvalidInputError(f"odd_height must be one of {', '.join(ODD_HEIGHT)}, got {odd_height!r}")
        self.trunk: Backbone = _trunk(backbone, weights, backbone_args)
        self.backbone, self.pool, self.use_ecab = backbone_name(backbone), pool, ecab
        self.test_flip, self.odd_height = bool(test_flip), odd_height
        c = self.trunk.out_channels
        part_in = 2 * c if pool == "gap+gmp" else c  # concatenated [GAP; GMP] or GAP only
        self.bn_global = bnneck(c)
        self.fc_top, self.fc_bottom = nn.Linear(part_in, c), nn.Linear(part_in, c)
        for fc in (self.fc_top, self.fc_bottom):
            nn.init.kaiming_normal_(fc.weight, mode="fan_out")
            nn.init.zeros_(fc.bias)
        self.bn_top, self.bn_bottom = bnneck(c), bnneck(c)
        attn = get_attention("ecab" if ecab else "none")
        self.ecab_top, self.ecab_bottom = attn(c, reduction=reduction), attn(c, reduction=reduction)
        self.classifier = _classifier(c, num_classes)

    @property
    def feature_dim(self) -> int:
        """C: width of each branch feature."""
        return self.trunk.out_channels

    @property
    def descriptor_dim(self) -> int:
        """3C: width of the eval-mode descriptor (1536 for ResNet-18/34, 6144 for 50/101/152)."""
        return 3 * self.trunk.out_channels

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def _part(self, m: torch.Tensor) -> torch.Tensor:
        if self.pool == "gap+gmp":
            return torch.cat([m.mean(dim=(2, 3)), m.amax(dim=(2, 3))], dim=1)
        return m.mean(dim=(2, 3))

    def halves(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top and bottom halves of a trunk map ``m`` (B, C, H, W) along the height (``odd_height``)."""
        h = m.shape[2]
        if h < 2:
            raise InvalidInputError(f"feature map height {h} cannot be split into top and bottom; use taller inputs")
        end = 2 * (h // 2) if self.odd_height == "drop" else h
        return m[:, :, : h // 2], m[:, :, h // 2 : end]

    def branch_features(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f_g, f_top, f_bot)`` of a trunk map ``m`` (B, C, H, W), each (B, C), not normalised."""
        top, bottom = self.halves(m)
        f_g = self.bn_global(pool_map(m, self.pool))
        return f_g, self.bn_top(self.fc_top(self._part(top))), self.bn_bottom(self.fc_bottom(self._part(bottom)))

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> Union[FineTuneOutput, torch.Tensor]:
        m = self.trunk(x, camids, viewids)
        f_g, f_top, f_bot = self.branch_features(m)
        if not self.training:
            return F.normalize(torch.cat([f_g, f_top, f_bot], dim=1), dim=1)
        top, bottom = self.halves(m)
        return FineTuneOutput(f_g, f_top, f_bot, self.classifier(f_g), self.ecab_top(top), self.ecab_bottom(bottom), m)

    def ecab_vectors(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                     viewids: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The trunk map and the ECAB vectors of its halves (what Ensemble Fusion needs)."""
        m = self.trunk(x, camids, viewids)
        top, bottom = self.halves(m)
        return m, self.ecab_top(top), self.ecab_bottom(bottom)

    @torch.no_grad()
    def reset_classifier(self, centroids: torch.Tensor) -> None:
        """Overwrite the classifier with row-wise L2-normalised centroids ``(K, C)`` (method §3.9).

        A different K re-creates the layer on the same device and dtype, without drawing random
        numbers (its weights are the centroids), keeping the layer's ``requires_grad``. The caller
        must hand the new parameters to its optimiser (and DDP wrapper): the fine-tuning loop
        rebuilds both every epoch.
        """
        if centroids.dim() != 2 or centroids.shape[1] != self.feature_dim:
            raise InvalidInputError(f"centroids must be (K, {self.feature_dim}), got {tuple(centroids.shape)}")
        if centroids.shape[0] < 1:
            raise InvalidInputError("centroids must hold at least one cluster")
        w = F.normalize(centroids.float(), dim=1)
        old = self.classifier.weight
        if w.shape[0] != old.shape[0]:
            layer = nn.utils.skip_init(nn.Linear, self.feature_dim, w.shape[0], bias=False, device=old.device,
                                       dtype=old.dtype)
            layer.weight.requires_grad_(old.requires_grad)
            self.classifier = layer
        self.classifier.weight.copy_(w.to(old.device, old.dtype))


def bmfn(extract: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Bidirectional Mean Feature Normalisation: ``normalize((phi(x) + phi(flip(x))) / 2)``.

    ``images`` is ``(B, 3, H, W)``; the flip is horizontal (along the width), as in docs/method.md §3.6.
    """
    v = extract(images) + extract(torch.flip(images, dims=[3]))
    return F.normalize(v / 2, dim=1)
