"""CORE-ReID networks, their backbones and the two registries (timm style).

``build_model(name, **kw)`` builds a registered network; ``list_models(pattern)`` lists the names:

- ``source_net``: the pre-training network (:class:`SourceNet`);
- ``corereid_net``: one fine-tuning network (:class:`CoreReIDNet`, student or teacher);
- ``mean_teacher``: student + EMA teacher + Ensemble Fusion (:class:`MeanTeacher`);
- ``source_resnet{18,...,152}``, ``corereid_resnet{...}``, ``mean_teacher_resnet{...}``: the same
  with a ResNet backbone fixed.

Each takes ``backbone=`` a name of :func:`list_backbones` (``resnet18`` ... ``resnet152``, the
IBN-Net trunks ``resnet{18,34,50,101}_ibn_{a,b}`` of :mod:`.ibn`, TransReID's
ViTs ``transreid_vit_{base,small,tiny}`` of :mod:`.vit`, or one registered with
:func:`register_backbone`) and ``backbone_args`` for its builder.

- ``transreid_net`` / ``transreid_mean_teacher``: TransReID (ViT + SIE + JPM, :mod:`.transreid`)
  for the same two loops.

Example::

    model = build_model("corereid_net", backbone="resnet50", num_classes=900, weights=None)
    model.eval(); descriptor = model(images)          # (B, 6144), L2-normalised
"""

from __future__ import annotations

from functools import partial
from typing import Optional

from ..errors import InvalidInputError
from . import ibn  # noqa: F401,E402 - registers resnet{18,34,50,101}_ibn_{a,b}
from . import vit  # noqa: F401,E402 - registers transreid_vit_{base,small,tiny}
from .attention import ECAB, SECAB, get_attention
from .complexity import count_parameters, measure_flops, paper_parameter_count
from .convert import ConvertedCheckpoint, convert_checkpoint, list_formats, register_format
from .fusion import EnsembleFusion, FusedFeatures
from .mean_teacher import MeanTeacher
from .registry import (
    Backbone,
    CameraBlind,
    build_backbone,
    build_model,
    camera_count,
    list_backbones,
    list_models,
    model_context,
    register_backbone,
    register_model,
    view_count,
)
from .reid_net import CoreReIDNet, FineTuneOutput, SourceNet, SourceOutput, backbone_name, bmfn
from .resnet import DEPTHS, ResNetTrunk, build_trunk, feature_channels, load_trunk_state
from .transreid import TransReIDNet, TransReIDOutput, jigsaw_order  # registers transreid_net, transreid_mean_teacher
from .vit import TransReIDViT, patch_grid


def _fusion_has_secab(fusion: Optional[str], secab: Optional[bool]) -> bool:
    if fusion is None:
        return True if secab is None else secab
    if fusion not in ("v1", "v2"):
        raise InvalidInputError(f"fusion must be 'v1' (Ensemble Fusion) or 'v2' (Ensemble Fusion++), got {fusion!r}")
    if secab is not None and secab != (fusion == "v2"):
        raise InvalidInputError("fusion='v1' has no SECAB and fusion='v2' always has one; set only one of fusion/secab")
    return fusion == "v2"


@register_model("source_net")
def source_net(backbone="resnet50", num_classes: int = 751, **kw) -> SourceNet:
    """:class:`SourceNet` (pre-training)."""
    return SourceNet(backbone, num_classes, **kw)


@register_model("corereid_net")
def corereid_net(backbone="resnet50", num_classes: int = 900, **kw) -> CoreReIDNet:
    """:class:`CoreReIDNet` (one fine-tuning network)."""
    return CoreReIDNet(backbone, num_classes, **kw)


@register_model("mean_teacher")
def mean_teacher(backbone="resnet50", num_classes: int = 900, *, fusion: Optional[str] = None,
                 secab: Optional[bool] = None, alpha: float = 0.999, **kw) -> MeanTeacher:
    """:class:`MeanTeacher`: two :class:`CoreReIDNet` and an :class:`EnsembleFusion` (v2 = Fusion++)."""
    # student and teacher heads are initialised independently, as in the authors' code
    student, teacher = CoreReIDNet(backbone, num_classes, **kw), CoreReIDNet(backbone, num_classes, **kw)
    fuse = EnsembleFusion(student.feature_dim, secab=_fusion_has_secab(fusion, secab), pool=student.pool)
    return MeanTeacher(student, teacher, fuse, alpha=alpha)


for _depth in DEPTHS:  # the networks with their ResNet fixed, as the paper names them
    register_model(f"source_resnet{_depth}")(partial(source_net, f"resnet{_depth}"))
    register_model(f"corereid_resnet{_depth}")(partial(corereid_net, f"resnet{_depth}"))
    register_model(f"mean_teacher_resnet{_depth}")(partial(mean_teacher, f"resnet{_depth}"))

__all__ = [
    "Backbone",
    "CameraBlind",
    "ConvertedCheckpoint",
    "CoreReIDNet",
    "DEPTHS",
    "ECAB",
    "EnsembleFusion",
    "FineTuneOutput",
    "FusedFeatures",
    "MeanTeacher",
    "ResNetTrunk",
    "SECAB",
    "SourceNet",
    "SourceOutput",
    "TransReIDNet",
    "TransReIDOutput",
    "TransReIDViT",
    "backbone_name",
    "bmfn",
    "build_backbone",
    "build_model",
    "build_trunk",
    "convert_checkpoint",
    "camera_count",
    "count_parameters",
    "feature_channels",
    "get_attention",
    "list_backbones",
    "list_formats",
    "list_models",
    "jigsaw_order",
    "load_trunk_state",
    "model_context",
    "measure_flops",
    "paper_parameter_count",
    "patch_grid",
    "register_backbone",
    "register_format",
    "register_model",
    "view_count",
]
