"""Feature normalisation before clustering, by name: an option of every pseudo-labeller.

``none`` clusters the features as they are. ``camera_mean`` subtracts each camera's mean feature
and L2-normalises the rows again: a camera's colour cast and background shift all of its features
the same way, and removing the per-camera mean keeps the clustering from grouping by camera
instead of by identity (not in the paper; README, "Fine-tuning"). ``camera_guided`` is Learn by
Guessing's camera-guided normalisation (Pereira & de Campos, VISAPP 2022; docs/baselines.md §2): each
camera's features standardised per dimension, (f - mu_cam) / sigma_cam, then L2-normalised again,
so that no camera's spread dominates the distances either. A normalisation is a function
``fn(features (n, d), camids (n,)) -> (n, d)`` registered with :func:`register_normalization`.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..array_checks import integer_ids
from ..errors import InvalidInputError
from ..registry import Registry

Normalization = Callable[[torch.Tensor, np.ndarray], torch.Tensor]
NORMALIZATIONS: Registry[Normalization] = Registry(
    "feature normalisation (cluster.normalize)", "Register your own with corelib.cluster.register_normalization.")


def register_normalization(name: str) -> Callable[[Normalization], Normalization]:
    """Register ``fn(features, camids) -> features`` under ``name``."""
    return NORMALIZATIONS.register(name)


def list_normalizations() -> list[str]:
    return NORMALIZATIONS.names()


def camera_ids(camids: Sequence[Union[int, None]]) -> np.ndarray:
    """Camera ids as an int array, ``None`` (datasets without cameras) as -1; a camera id that is
    not an integer is refused (it used to be truncated: cameras 0.5 and 0.9 became one)."""
    return integer_ids([-1 if c is None else c for c in camids], "camids")


def normalize_features(features: torch.Tensor, camids, method: str = "none") -> torch.Tensor:
    """``features`` after the normalisation ``method`` (see the module docstring).

    Raises:
        UnknownNameError: an unknown method (the message lists the registered ones).
        ValueError: ``camids`` has another length than ``features``.
    """
    normalize = NORMALIZATIONS.get(method)
    cams = camera_ids(camids)
    if len(cams) != len(features):
        raise InvalidInputError(f"{len(features)} feature rows but {len(cams)} camera ids")
    return normalize(features, cams)


@register_normalization("none")
def _as_they_are(features: torch.Tensor, camids: np.ndarray) -> torch.Tensor:
    return features


@register_normalization("camera_mean")
def camera_centred(features: torch.Tensor, camids) -> torch.Tensor:
    """Subtract each camera's mean feature, then L2-normalise the rows again.

    Samples without a camera (``None`` or -1) are centred together.
    """
    cams = camera_ids(camids)
    out = features.clone()
    for cam in np.unique(cams):
        rows = torch.from_numpy(cams == cam)
        out[rows] -= out[rows].mean(dim=0, keepdim=True)
    return F.normalize(out, dim=1)


CAMERA_SIGMA_FLOOR = 0.05
"""``camera_guided`` floors each camera's per-dimension sigma at this fraction of that camera's median
sigma (and 1e-8): a dimension that hardly varies within a camera would otherwise be blown up by the
division (docs/baselines.md §2.4: "add an epsilon and clamp"). A workbench choice: the paper gives none."""


@register_normalization("camera_guided")
def camera_guided(features: torch.Tensor, camids) -> torch.Tensor:
    """Learn by Guessing's camera-guided normalisation: per camera and per dimension,
    ``(f - mu_cam) / max(sigma_cam, floor)`` over that camera's images, then L2 per row.

    ``sigma`` is the population standard deviation of the camera's rows; the floor is
    :data:`CAMERA_SIGMA_FLOOR` times the camera's median sigma. A camera with a single image has no
    spread to remove: its row is only L2-normalised. Samples without a camera (``None`` or -1) are
    standardised together.
    """
    cams = camera_ids(camids)
    x = features.float()
    out = x.clone()
    for cam in np.unique(cams):
        rows = torch.from_numpy(cams == cam).to(x.device)
        if int(rows.sum()) < 2:
            continue
        block = x[rows]
        mu = block.mean(dim=0, keepdim=True)
        sigma = block.std(dim=0, unbiased=False, keepdim=True)
        floor = torch.clamp_min(CAMERA_SIGMA_FLOOR * sigma.median(), 1e-8)
        out[rows] = (block - mu) / torch.maximum(sigma, floor)
    return F.normalize(out, dim=1).to(features.dtype)
