"""TransReID (He et al., ICCV 2021; docs/baselines.md §1): the ViT trunk with SIE, the Jigsaw Patch
Module, five BN-necks and classifiers, as registered networks for both training loops.

Registered networks:

- ``transreid_net``: supervised source training and evaluation (:class:`TransReIDNet`);
- ``transreid_mean_teacher``: UDA fine-tuning, two :class:`TransReIDNet` (student, EMA teacher; with
  ``model.alpha=0`` one network) and no Ensemble Fusion (the ViT has no ECAB halves).

**JPM** (``jpm=True``; docs/baselines.md §1.3). After the trunk's weights are loaded, its last block and
final LayerNorm are taken away from it: they become the global branch ``b1``, and a deep copy the
jigsaw branch ``b2`` (one copy shared by the k groups), so every parameter of the module is used in
the forward pass (the official code keeps the unused originals: docs/baselines.md §1.7). With X the
N + 1 tokens after the trunk's remaining blocks:

1. ``f_g = b1(X)[:, 0]``;
2. shift: the official code moves patch tokens 1 .. m - 1 to the end (``shift_reading="code"``,
   m = ``shift`` = 5 moves 4); the paper's "first m patches" is ``shift_reading="paper"``;
3. patch shuffle with G = 2 groups: view ``(G, N / G)``, transpose, flatten (the halves interleave);
   an odd N first duplicates its second-to-last token (441 -> 442 at 256 x 256);
4. k = 4 groups of ``L = N // k`` consecutive tokens (the last N mod k are dropped: 210 -> 208);
5. ``f_l^j = b2([cls_X; group_j])[:, 0]``, each group led by the [cls] token of X (block 11's in
   ViT-B), not by ``f_g``.

:func:`jigsaw_order` gives the token indices of steps 2-4 (a test checks them against the official
code's, written out). **Heads**: a BN-neck (frozen zero bias) and a bias-free classifier
(N(0, 0.001)) per feature: five with JPM, one without. **Training output**
(:class:`TransReIDOutput`): the pre-BN features (the triplet loss's) and the post-BN logits (the ID
loss's), global and local. **Eval descriptor**: ``normalize([f_g, f_l^1 / k, ..., f_l^k / k])``
before the BN-necks (3,840 values for ViT-B with JPM, 768 without).

The loops pass ``num_cameras`` and ``num_views`` (the dataset's; SIE) and ``img_size`` (the input size; the position
embedding's grid) to the builders, and record them, so a checkpoint rebuilds the same network.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .fusion import bnneck
from .mean_teacher import MeanTeacher
from .registry import build_backbone, register_model
from .reid_net import _classifier  # bias-free, N(0, 0.001): the same heads as CORE-ReID's networks
from .vit import TransReIDViT

SHIFT_READINGS = ("code", "paper")


def jigsaw_order(num_patches: int, *, shift: int = 5, groups: int = 2, num_groups: int = 4,
                 reading: str = "code") -> torch.Tensor:
    """Token indices (the [cls] token is 0, patches 1..N) of JPM's k groups: ``(k, N // k)``.

    ``reading="code"`` moves patches 1 .. shift - 1 to the end (the official ``shuffle_unit`` with
    ``begin=1``); ``"paper"`` moves the first ``shift`` patches. Then the patch shuffle over
    ``groups`` interleaves the parts (an indivisible length duplicates its second-to-last token
    first), and the first ``num_groups * (N // num_groups)`` tokens are cut into the groups.
    """
    if reading not in SHIFT_READINGS:
        raise InvalidInputError(f"shift_reading must be one of {', '.join(SHIFT_READINGS)}, got {reading!r}")
    if num_patches < num_groups or num_groups < 1:
        raise InvalidInputError(f"JPM needs at least num_groups={num_groups} >= 1 patches, got {num_patches}")
    moved = shift - 1 if reading == "code" else shift
    if not 0 <= moved < num_patches:
        raise InvalidInputError(f"shift={shift} moves {moved} of {num_patches} patches; choose 1 <= shift < N")
    order = list(range(1 + moved, num_patches + 1)) + list(range(1, 1 + moved))
    if groups > 1:
        if len(order) % groups:
            order.append(order[-2])  # the official code pads with the second-to-last token
        per = len(order) // groups
        order = [order[g * per + i] for i in range(per) for g in range(groups)]
    length = num_patches // num_groups  # from N, before any padding (the official feature_length)
    return torch.tensor(order[: num_groups * length]).view(num_groups, length)


class TransReIDOutput(NamedTuple):
    """Training-mode output of :class:`TransReIDNet` (all per image)."""

    features: torch.Tensor  # (B, D) f_g before its BN-neck (the triplet loss's)
    logits: torch.Tensor  # (B, K) global classifier on BN(f_g)
    local_features: torch.Tensor  # (B, k, D) f_l^j before their BN-necks; (B, 0, D) without JPM
    local_logits: torch.Tensor  # (B, k, K)

    @property
    def global_feat(self) -> torch.Tensor:
        """f_g (what the fine-tuning criteria of the global feature read)."""
        return self.features

    @property
    def query(self) -> torch.Tensor:
        """The training-mode retrieval vector ``[f_g, f_l / k]`` (unnormalised): what a cluster memory
        compares with the centres of the clustered descriptors."""
        k = self.local_features.shape[1]
        if not k:
            return self.features
        return torch.cat([self.features, (self.local_features / k).flatten(1)], dim=1)


class TransReIDNet(nn.Module):
    """ViT + SIE + JPM + BN-necks (the module docstring).

    Args:
        backbone: a registered ViT backbone (``transreid_vit_base``, ``transreid_vit_small``,
            ``transreid_vit_tiny``).
        num_classes: identities (pre-training) or clusters (fine-tuning).
        num_cameras, num_views: the dataset's camera and view counts (the loops pass them,
            :func:`~corelib.models.model_context`); the switches say which the SIE table uses.
        sie: False builds no SIE table (the ablation "without SIE").
        sie_camera, sie_view: the official ``SIE_CAMERA`` / ``SIE_VIEW``: the table has a camera
            axis (``num_cameras`` rows) and / or a view axis (``num_views`` rows); both give the
            ``C * V``-row camera x view table (the released VeRi-776 config), the camera alone the
            released Market-1501 / MSMT17 one. An axis with a count <= 1 is left out.
        sie_coe: lambda of SIE (3.0).
        jpm: False is the ViT baseline: all blocks, the [cls] output, one head.
        shift, shuffle_groups, num_groups, shift_reading: JPM's m (5; 8 for vehicles in the released
            configs), G (2), k (4) and the reading of the shift (``"code"`` / ``"paper"``).
        img_size: ``(H, W)`` of the inputs (the position embedding's grid).
        weights: the trunk's weights (None, "imagenet", a timm-layout file).
        backbone_args: further keyword arguments of the ViT builder (``stride``, ``drop_path`` ...).
        test_flip: the test protocol averages the descriptor with the flipped image's; off, as the
            official code tests (its published numbers are without flips; :func:`corelib.features.uses_test_flip`).
    """

    def __init__(self, backbone: str = "transreid_vit_base", num_classes: int = 751, *, num_cameras: int = 0,
                 num_views: int = 0, sie: bool = True, sie_camera: bool = True, sie_view: bool = False,
                 sie_coe: float = 3.0, jpm: bool = True, shift: int = 5,
                 shuffle_groups: int = 2, num_groups: int = 4, shift_reading: str = "code",
                 img_size: tuple[int, int] = (256, 128), weights: Union[str, Path, None] = None,
                 backbone_args: Optional[dict] = None, test_flip: bool = False) -> None:
        super().__init__()
        self.test_flip = bool(test_flip)
        args = dict(backbone_args or {})
        args.update(img_size=tuple(img_size), num_cameras=num_cameras if sie and sie_camera else 0,
                    num_views=num_views if sie and sie_view else 0, sie_coe=sie_coe)
        trunk = build_backbone(backbone, weights=weights, **args)
        if not isinstance(trunk, TransReIDViT):
            raise InvalidInputError(f"transreid_net needs a ViT backbone (transreid_vit_*), got {backbone!r}")
        self.trunk: TransReIDViT = trunk
        self.backbone, self.jpm, self.num_groups = backbone, bool(jpm), int(num_groups) if jpm else 0
        d = trunk.embed_dim
        if self.jpm:  # after the weights are loaded: the last block and norm become b1, a copy b2
            block, norm = trunk.detach_last_block()
            self.b1 = nn.Sequential(block, norm)
            self.b2 = copy.deepcopy(self.b1)
            self.register_buffer("order", jigsaw_order(trunk.num_patches, shift=shift, groups=shuffle_groups,
                                                       num_groups=num_groups, reading=shift_reading), persistent=False)
        self.bottleneck = bnneck(d)
        self.classifier = _classifier(d, num_classes)
        self.local_bottlenecks = nn.ModuleList(bnneck(d) for _ in range(self.num_groups))
        self.local_classifiers = nn.ModuleList(_classifier(d, num_classes) for _ in range(self.num_groups))

    @property
    def feature_dim(self) -> int:
        """D: width of each feature (the global one, and each local one)."""
        return self.trunk.embed_dim

    @property
    def descriptor_dim(self) -> int:
        """(1 + k) D: the eval descriptor's width (3,840 for ViT-B with JPM)."""
        return (1 + self.num_groups) * self.trunk.embed_dim

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def features(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                 viewids: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``f_g (B, D)`` and ``f_l (B, k, D)``, before the BN-necks (``camids``, ``viewids``: ``(B,)``, -1
        unknown; they pick the SIE row, :meth:`~corelib.models.vit.TransReIDViT.side_information`, and
        are ignored by an axis the table does not have)."""
        tokens = self.trunk.forward_tokens(x, camids, viewids)
        if not self.jpm:
            return tokens[:, 0], tokens.new_zeros(tokens.shape[0], 0, tokens.shape[2])
        f_g = self.b1(tokens)[:, 0]
        b, _, d = tokens.shape
        k, length = self.order.shape
        groups = tokens[:, self.order.flatten()].view(b * k, length, d)  # (B k, L, D)
        cls = tokens[:, :1].repeat_interleave(k, dim=0)  # each group led by the trunk's [cls]
        f_l = self.b2(torch.cat([cls, groups], dim=1))[:, 0].view(b, k, d)
        return f_g, f_l

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> Union[TransReIDOutput, torch.Tensor]:
        f_g, f_l = self.features(x, camids, viewids)
        if not self.training:
            k = f_l.shape[1]
            return F.normalize(torch.cat([f_g, (f_l / max(k, 1)).flatten(1)], dim=1), dim=1)
        logits = self.classifier(self.bottleneck(f_g))
        if self.num_groups:
            local_logits = torch.stack([fc(bn(f_l[:, j])) for j, (bn, fc) in
                                        enumerate(zip(self.local_bottlenecks, self.local_classifiers))], dim=1)
        else:
            local_logits = logits.new_zeros(logits.shape[0], 0, logits.shape[1])
        return TransReIDOutput(f_g, logits, f_l, local_logits)

    # ------------------------------------------------------------------ fine-tuning hooks

    @torch.no_grad()
    def reset_classifier(self, centroids: torch.Tensor) -> None:
        """Every classifier from its part of the ``(K, (1 + k) D)`` centres of the clustered
        descriptors (or ``(K, D)``), each row L2-normalised (the loop's rule, docs/method.md §3.9)."""
        d = self.feature_dim
        parts = 1 + self.num_groups
        if centroids.dim() != 2 or centroids.shape[1] not in (d, parts * d) or centroids.shape[0] < 1:
            raise InvalidInputError(f"centroids must be (K >= 1, {parts * d}) or (K, {d}), got {tuple(centroids.shape)}")
        chunks = centroids.float().split(d, dim=1)
        if len(chunks) == 1:
            chunks = chunks * parts
        self.classifier = _reset(self.classifier, chunks[0])
        for j in range(self.num_groups):
            self.local_classifiers[j] = _reset(self.local_classifiers[j], chunks[1 + j])

    def load_source_state(self, state: dict, *, where: str = "source checkpoint") -> None:
        """Start fine-tuning from a source :class:`TransReIDNet`: the trunk and both JPM branches
        move; the heads are new (another class count; TransReID-SSL re-initialises the BN-necks too)
        and the SIE table is the target's own, its rows starting from the mean of the source's (the
        camera-blind embedding the direct transfer used), so training starts from that network."""
        own = self.state_dict()
        moving = [k for k in own if k.startswith(("trunk.", "b1.", "b2.")) and k != "trunk.sie_embed"]
        bad = [k for k in moving if k not in state or state[k].shape != own[k].shape]
        if bad:
            k = bad[0]
            got = tuple(state[k].shape) if k in state else "missing"
            raise InvalidInputError(f"{where} does not fit a {self.backbone} TransReID network (jpm={self.jpm}): {k} is "
                                    f"{got}, expected {tuple(own[k].shape)}. Use the backbone, JPM switch and input size "
                                    f"the source model was trained with.")
        self.load_state_dict({k: state[k] for k in moving}, strict=False)
        if self.trunk.sie_embed is not None and "trunk.sie_embed" in state:
            with torch.no_grad():
                self.trunk.sie_embed.copy_(state["trunk.sie_embed"].mean(dim=0, keepdim=True).expand_as(self.trunk.sie_embed))


def _reset(layer: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    """``layer`` with the L2-normalised ``rows`` as weights (re-created when the count differs)."""
    w = F.normalize(rows, dim=1)
    if w.shape[0] != layer.out_features:
        new = nn.utils.skip_init(nn.Linear, layer.in_features, w.shape[0], bias=False, device=layer.weight.device,
                                 dtype=layer.weight.dtype)
        new.weight.requires_grad_(layer.weight.requires_grad)
        layer = new
    layer.weight.copy_(w.to(layer.weight.device, layer.weight.dtype))
    return layer


CONTEXT_ARGS = ("num_cameras", "num_views", "img_size")
"""What the loops pass to these builders from the data (and record in the checkpoints)."""


@register_model("transreid_net")
def transreid_net(backbone: str = "transreid_vit_base", num_classes: int = 751, **kw) -> TransReIDNet:
    """:class:`TransReIDNet` (source training, evaluation)."""
    return TransReIDNet(backbone, num_classes, **kw)


@register_model("transreid_mean_teacher")
def transreid_mean_teacher(backbone: str = "transreid_vit_base", num_classes: int = 500, *, alpha: float = 0.999,
                           ecab: bool = False, pool: str = "gap", fusion: Optional[str] = None, **kw):
    """Student and EMA teacher :class:`TransReIDNet` without a fusion block (UDA fine-tuning).

    ``ecab``, ``pool`` and ``fusion`` (settings of CORE-ReID's heads) are accepted and have no
    effect; ``ecab=True`` is refused, as there are no halves to attend to.
    """
    if ecab:
        raise InvalidInputError("the TransReID network has no ECAB (no top / bottom halves); set model.ecab=false")
    student, teacher = TransReIDNet(backbone, num_classes, **kw), TransReIDNet(backbone, num_classes, **kw)
    return MeanTeacher(student, teacher, None, alpha=alpha)


for _fn in (transreid_net, transreid_mean_teacher):
    _fn.context_args = CONTEXT_ARGS
