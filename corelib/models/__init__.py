"""CORE-ReID networks and the model registry.

``build_model(name, **kw)`` builds a registered model; ``list_models()`` lists the names:

- ``source_resnet{18,34,50,101,152}``: the pre-training network (:class:`SourceNet`);
- ``corereid_resnet{...}``: one fine-tuning network (:class:`CoreReIDNet`, student or teacher);
- ``mean_teacher_resnet{...}``: student + EMA teacher + Ensemble Fusion (:class:`MeanTeacher`).

Example::

    model = build_model("corereid_resnet50", num_classes=900, weights=None)
    model.eval(); descriptor = model(images)          # (B, 6144), L2-normalised
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from ..errors import UnknownNameError
from .attention import ECAB, SECAB, get_attention
from .backbone import DEPTHS, ResNetTrunk, build_trunk, feature_channels, load_trunk_state
from .complexity import count_parameters, measure_flops, paper_parameter_count
from .fusion import EnsembleFusion, FusedFeatures
from .mean_teacher import MeanTeacher
from .reid_net import CoreReIDNet, FineTuneOutput, SourceNet, SourceOutput, bmfn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    """Register a builder ``fn(**kw) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_MODELS, key=lambda n: (n.rsplit("resnet", 1)[0], int(n.rsplit("resnet", 1)[1])))


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name raises an error listing the valid ones."""
    if name not in _MODELS:
        raise UnknownNameError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)


def _fusion_has_secab(fusion: Optional[str], secab: Optional[bool]) -> bool:
    if fusion is None:
        return True if secab is None else secab
    if fusion not in ("v1", "v2"):
        raise ValueError(f"fusion must be 'v1' (Ensemble Fusion) or 'v2' (Ensemble Fusion++), got {fusion!r}")
    if secab is not None and secab != (fusion == "v2"):
        raise ValueError("fusion='v1' has no SECAB and fusion='v2' always has one; set only one of fusion/secab")
    return fusion == "v2"


def _make(depth: int) -> None:
    @register_model(f"source_resnet{depth}")
    def source(num_classes: int = 751, **kw) -> SourceNet:
        return SourceNet(depth, num_classes, **kw)

    @register_model(f"corereid_resnet{depth}")
    def corereid(num_classes: int = 900, **kw) -> CoreReIDNet:
        return CoreReIDNet(depth, num_classes, **kw)

    @register_model(f"mean_teacher_resnet{depth}")
    def mean_teacher(num_classes: int = 900, *, fusion: Optional[str] = None, secab: Optional[bool] = None,
                     alpha: float = 0.999, **kw) -> MeanTeacher:
        # student and teacher heads are initialised independently, as in the authors' code
        student, teacher = CoreReIDNet(depth, num_classes, **kw), CoreReIDNet(depth, num_classes, **kw)
        fuse = EnsembleFusion(student.feature_dim, secab=_fusion_has_secab(fusion, secab), pool=student.pool)
        return MeanTeacher(student, teacher, fuse, alpha=alpha)


for _d in DEPTHS:
    _make(_d)

__all__ = [
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
    "bmfn",
    "build_model",
    "build_trunk",
    "count_parameters",
    "feature_channels",
    "get_attention",
    "list_models",
    "load_trunk_state",
    "measure_flops",
    "paper_parameter_count",
    "register_model",
]
