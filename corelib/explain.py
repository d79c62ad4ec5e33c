"""Why does the network match two images? Grad-CAM for embeddings and the paper's activation maps.

Re-ID networks output embeddings, not class scores, so "explain the prediction" needs a scalar:
here the cosine similarity between an image's embedding and a reference embedding (a query's
for a gallery image, and the reverse). Two tools:

- :func:`similarity_cam`: Grad-CAM (pytorch-grad-cam) on the last block of the trunk, for one
  branch of the network (:class:`EmbeddingOf`: ``global``, ``top``, ``bottom`` or the retrieval
  ``descriptor``) and the target :class:`SimilarityTarget`. The CAM object is used as a context
  manager, so its hooks are released even when the call fails.
- :func:`activation_maps`: what the authors' figures actually show (method.md §7), gradient-free:
  ``A(h, w) = sum_c M(c, h, w)^2`` of the trunk's last map, L2-normalised over positions, resized
  to the image and min-max scaled; ``flip=True`` adds the horizontally flipped image, as in the
  paper's figure pairs.

:func:`overlay` blends a map onto its image (``0.3 image + 0.7 jet(map)``, the authors' blend).

Example::

    q, g = images[:1], images[1:6]
    ref = embed(model, q)                                  # (1, D) query embedding
    maps = similarity_cam(model, g, ref.expand(len(g), -1), branch="global")   # (5, H, W) in [0, 1]
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .errors import UnknownNameError
from .models.reid_net import CoreReIDNet, SourceNet

BRANCHES = ("global", "top", "bottom", "descriptor")
"""Embeddings :class:`EmbeddingOf` exposes: the three branch features and the retrieval descriptor."""


class EmbeddingOf(nn.Module):
    """One embedding of a re-ID network as a plain ``images -> (B, D)`` module.

    ``descriptor`` is what the network returns in eval mode (the L2-normalised retrieval vector);
    ``global``, ``top`` and ``bottom`` are the branch features of :class:`CoreReIDNet` before
    normalisation (a :class:`SourceNet` has ``global`` and ``descriptor`` only). The wrapped network
    is put in eval mode: BatchNorm uses its running statistics, as at test time.
    """

    def __init__(self, model: nn.Module, branch: str = "descriptor") -> None:
        super().__init__()
        if branch not in BRANCHES:
            raise UnknownNameError(f"unknown branch {branch!r}; valid branches: {', '.join(BRANCHES)}")
        if isinstance(model, SourceNet) and branch in ("top", "bottom"):
            raise UnknownNameError(f"a SourceNet has no {branch!r} branch; use 'global' or 'descriptor'")
        if not isinstance(model, (SourceNet, CoreReIDNet)):
            raise TypeError(f"EmbeddingOf expects a SourceNet or CoreReIDNet, got {type(model).__name__}")
        self.model, self.branch = model.eval(), branch

    @property
    def trunk(self) -> nn.Module:
        return self.model.trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch == "descriptor":
            return self.model(x)
        m = self.model.trunk(x)
        if isinstance(self.model, SourceNet):
            return self.model.bnneck(m.mean(dim=(2, 3)))
        return self.model.branch_features(m)[("global", "top", "bottom").index(self.branch)]


class SimilarityTarget:
    """Grad-CAM target: cosine similarity between an image's embedding and ``reference`` (D,)."""

    def __init__(self, reference: torch.Tensor) -> None:
        self.reference = reference.detach().flatten()

    def __call__(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(embedding.flatten(), self.reference.to(embedding.device), dim=0)


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, branch: str = "descriptor") -> torch.Tensor:
    """Embeddings ``(B, D)`` of ``images`` from one branch (see :class:`EmbeddingOf`)."""
    net = EmbeddingOf(model, branch)
    return net(images.to(next(net.parameters()).device))


def similarity_cam(
    model: nn.Module,
    images: torch.Tensor,
    references: torch.Tensor,
    *,
    branch: str = "descriptor",
    target_layer: Optional[nn.Module] = None,
) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1]: where image ``i`` supports its similarity to ``references[i]``.

    Args:
        model: a :class:`SourceNet` or :class:`CoreReIDNet` (e.g. the teacher).
        images: normalised image batch ``(B, 3, H, W)``.
        references: ``(B, D)`` embeddings of the same ``branch`` (e.g. the query's, repeated).
        branch: which embedding is explained (:data:`BRANCHES`).
        target_layer: default: the last block of the trunk's ``layer4``.

    Raises:
        ValueError: ``references`` does not have one row per image.
    """
    from pytorch_grad_cam import GradCAM

    if references.dim() != 2 or len(references) != len(images):
        raise ValueError(f"references must be (B, D) with B = {len(images)} images, got {tuple(references.shape)}")
    net = EmbeddingOf(model, branch)
    layer = target_layer if target_layer is not None else net.trunk.layer4[-1]
    device = next(net.parameters()).device
    targets = [SimilarityTarget(r) for r in references]
    with GradCAM(model=net, target_layers=[layer]) as cam:  # hooks released on exit
        return cam(input_tensor=images.to(device), targets=targets)


def activation_map(feature_map: torch.Tensor) -> torch.Tensor:
    """The authors' gradient-free map of a trunk map ``(B, C, h, w)``: ``sum_c M^2``, L2-normalised
    over the ``h * w`` positions of each image; returns ``(B, h, w)``."""
    a = feature_map.float().pow(2).sum(dim=1)
    return F.normalize(a.flatten(1), dim=1).view_as(a)


@torch.no_grad()
def activation_maps(model: nn.Module, images: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    """:func:`activation_map` of the trunk's last map, resized to the images and min-max scaled to
    [0, 1]: ``(B, H, W)``, or ``(2B, H, W)`` with the flipped images after the originals (``flip``)."""
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device)
    if flip:
        x = torch.cat([x, torch.flip(x, dims=[3])])
    a = activation_map(model.trunk(x)).unsqueeze(1)
    a = F.interpolate(a, size=x.shape[2:], mode="bilinear", align_corners=False).squeeze(1)
    lo, hi = a.flatten(1).min(1).values, a.flatten(1).max(1).values
    return ((a - lo[:, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None]).cpu()


def overlay(image: Image.Image, heat: np.ndarray | torch.Tensor, *, image_weight: float = 0.3) -> Image.Image:
    """``image_weight * image + (1 - image_weight) * jet(heat)``; ``heat`` in [0, 1], resized to the image."""
    from matplotlib import colormaps

    heat = heat.numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    h = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR)
    colour = colormaps["jet"](np.asarray(h) / 255.0)[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    out = image_weight * base + (1 - image_weight) * colour
    return Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))


def cam_panels(images: Sequence[Image.Image], maps: np.ndarray | torch.Tensor) -> list[tuple[str, list[Image.Image]]]:
    """Rows for :func:`corelib.viz.samples_overview`: the images, their maps, the overlays."""
    maps = maps.numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    return [("image", list(images)), ("map", [overlay(im, m, image_weight=0.0) for im, m in zip(images, maps)]),
            ("overlay", [overlay(im, m) for im, m in zip(images, maps)])]
