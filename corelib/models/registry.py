"""Registries of backbones and networks, timm style: a part is one file that registers itself by name.

- A **backbone** (trunk) is built by ``build_backbone(name, weights=..., **kwargs)``. It states its
  output channels (``out_channels``) and maps ``forward(x, camids=None, viewids=None)``: images
  ``(B, 3, H, W)`` -> a feature map ``(B, C, h, w)`` (a ViT reshapes its patch tokens to their grid).
  A trunk that uses side information (camera and view embeddings, SIE) reads the camera and view
  ids (``(B,)`` LongTensors, -1 unknown); the others ignore them. Every network takes them too,
  ``net(x, camids=None, viewids=None)``, and hands them to its trunk.
  ``cam_layers()`` names the modules whose outputs Grad-CAM and the activation maps can show,
  shallow to deep (the last one is the default).
- A **network** is built by ``build_model(name, **kwargs)``: in training mode it returns a named
  structure of outputs, in eval mode the retrieval descriptor. The training loops record the
  name and the arguments in every checkpoint, so that :func:`corelib.load_trained_model`
  rebuilds it.

A backbone declares at registration what the recipes and tables need (:class:`BackboneInfo`,
read back with :func:`backbone_info`): its input size per object kind, the builder arguments it
needs from the data, and whether (and in which network) the complexity table measures it.

Example (the test suite registers such a toy backbone in its own file)::

    @register_backbone("tiny_cnn", complexity="corereid_net")
    def tiny_cnn(weights=None, width=16):
        return TinyCNN(width)            # a Backbone: out_channels, forward(x, camids=None, viewids=None)

    net = build_model("corereid_net", backbone="tiny_cnn", num_classes=10)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from ..errors import InvalidTypeError
from ..registry import Registry


class Backbone(nn.Module):
    """Base class of the trunks: ``out_channels`` and ``forward(x, camids=None, viewids=None) -> (B, C, h, w)``."""

    out_channels: int

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def cam_layers(self) -> dict[str, nn.Module]:
        """Modules whose outputs can be shown (Grad-CAM target layers), shallow to deep.

        The default is the whole trunk: its output map is the last one.
        """
        return {"output": self}


INPUT_SIZES: dict[str, tuple[int, int]] = {"person": (256, 128), "vehicle": (256, 256)}
"""(height, width) of the paper recipes per object kind (docs/method.md §2.5 and §9-Q5): what a
backbone declares unless it says otherwise."""


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone declares at registration (:func:`register_backbone`)."""

    input_size: Mapping[str, tuple[int, int]] = field(default_factory=lambda: dict(INPUT_SIZES))
    """(height, width) the real-data recipes train it at, per object kind ("person", "vehicle")."""
    needs: tuple[str, ...] = ()
    """Builder arguments it cannot do without beyond ``weights``: ``("img_size",)`` for a ViT, whose
    position embedding is laid out for one input size."""
    complexity: Optional[str] = None
    """The network the complexity table measures it in: "corereid_net" (CORE-ReID V2's, with the
    paper's columns) or "transreid_net" (SIE, JPM); None keeps it out of the table."""
    paper: Optional[Mapping[str, float]] = None
    """The CORE-ReID V2 paper's ``{"params": ..., "params_m": ..., "gflops": ...}`` of its row (docs/method.md
    §6), None when the paper has no row for it."""


BACKBONES: Registry[Callable[..., Backbone]] = Registry(
    "backbone", "Register your own with corelib.models.register_backbone.", info=BackboneInfo)
MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "Register your own with corelib.models.register_model.")


def register_backbone(name: str, **info) -> Callable:
    """Register a builder ``fn(weights=None, **kwargs) -> Backbone`` under ``name``, with what it
    declares (fields of :class:`BackboneInfo`: ``input_size``, ``needs``, ``complexity``, ``paper``).

    ``weights`` is None / "none" for random initialisation, or whatever else the backbone can
    load ("imagenet", a file path ...).
    """
    return BACKBONES.register(name, **info)


def backbone_info(name: str) -> BackboneInfo:
    """What the backbone ``name`` declared at registration (:class:`BackboneInfo`)."""
    return BACKBONES.info(name)


def list_backbones(pattern: str = "*") -> list[str]:
    """Names :func:`build_backbone` accepts that match ``pattern`` (shell-style, e.g. ``"resnet*"``)."""
    return BACKBONES.names(pattern)


def build_backbone(name: str, *, weights=None, **kwargs) -> Backbone:
    """Build a registered backbone and check its contract.

    Raises:
        UnknownNameError: the name is not registered (the message lists the valid ones).
        TypeError: the builder returned something without an integer ``out_channels``.
    """
    trunk = BACKBONES.get(name)(weights=weights, **kwargs)
    if not isinstance(trunk, nn.Module) or not isinstance(getattr(trunk, "out_channels", None), int):
        raise InvalidTypeError(f"backbone {name!r} must build an nn.Module with an int out_channels (the feature map's C), "
                        f"got {type(trunk).__name__}")
    trunk.backbone_name = name
    return trunk


def register_model(name: str) -> Callable:
    """Register a network builder ``fn(**kwargs) -> nn.Module`` under ``name``."""
    return MODELS.register(name)


def list_models(pattern: str = "*") -> list[str]:
    """Names :func:`build_model` accepts that match ``pattern`` (shell-style, e.g. ``"*resnet50"``)."""
    return MODELS.names(pattern)


class CameraBlind(nn.Module):
    """``net`` called without camera and view ids: how a network with side-information embeddings
    (SIE) meets a domain whose cameras it was not trained on (the direct transfer to a target); the
    ViT then uses the mean of its table, the row a fine-tuned target table starts from. Networks that
    ignore the ids are unchanged by it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None):
        return self.net(x)

    @property
    def test_flip(self) -> bool:
        """The wrapped network's test protocol (:func:`corelib.features.uses_test_flip`)."""
        return bool(getattr(self.net, "test_flip", True))



def camera_count(dataset) -> int:
    """Cameras of a dataset: the largest 0-based camid of its splits + 1 (0 without cameras)."""
    top = -1
    for split in (dataset.train, dataset.query, dataset.gallery):
        for s in split:
            if s.camid is not None and s.camid > top:
                top = int(s.camid)
    return top + 1


def view_count(dataset) -> int:
    """Views (orientations) of a dataset: the largest 0-based viewid of its splits + 1 (0 when no
    sample has a view; a sample without ``viewid`` counts as unknown)."""
    top = -1
    for split in (dataset.train, dataset.query, dataset.gallery):
        for s in split:
            view = getattr(s, "viewid", None)
            if view is not None and view > top:
                top = int(view)
    return top + 1


def model_context(name: str, dataset, height: int, width: int) -> dict:
    """What a network builder takes from the data it trains on: those of ``num_cameras`` and
    ``num_views`` (the dataset's camera and view counts, for side-information embeddings) and
    ``img_size`` (``(H, W)``, for a position embedding) that the builder declares in its
    ``context_args``. The loops add them to the model's arguments (and so to the checkpoint's
    record); the ResNet networks take none."""
    wants = getattr(MODELS.get(name), "context_args", ())
    known = {"num_cameras": camera_count(dataset) if "num_cameras" in wants else 0,
             "num_views": view_count(dataset) if "num_views" in wants else 0, "img_size": [int(height), int(width)]}
    return {k: known[k] for k in wants}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered network; an unknown name raises an error listing the valid ones.

    Example::

        model = build_model("corereid_net", backbone="resnet50", num_classes=900, weights=None)
        model.eval(); descriptor = model(images)          # (B, 6144), L2-normalised
    """
    return MODELS.get(name)(**kwargs)
