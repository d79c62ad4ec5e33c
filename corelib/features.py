"""Feature extraction in eval mode, L2-normalised, flip-averaged (BMFN, docs/method.md §3.6) where
the network's test protocol says so (:func:`corelib.features.uses_test_flip`: CORE-ReID's networks
yes, TransReID's no).

:func:`extract_split` is the one way the workbench turns a list of samples into descriptors (the
evaluation, the fine-tuning clusterings and the analysis chapters all call it); :func:`extract_features`
is the loop underneath, for a loader of your own. :func:`split_has_views` and :func:`batch_viewids`
give the view ids (orientations) of a batch from the sample list its loader is built on, as every
loop hands them to the networks: ``(B,)`` with -1 where a sample has no view, None for a list without
any view (a network or callable is then called as before views existed, ``model(x, camids)``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .data.batches import build_loader
from .data.transforms import build_transforms
from .errors import InvalidInputError
from .progress import tqdm


def uses_test_flip(model) -> bool:
    """Whether ``model``'s published test protocol averages each descriptor with the one of the
    horizontally flipped image (BMFN, docs/method.md §3.6): the network's ``test_flip`` setting
    (CORE-ReID's networks: on, as its authors evaluate; TransReID's: off, as its official code
    tests; a mean teacher and a camera-blind wrapper answer for the network they evaluate). A module
    or callable that declares none is flip-averaged."""
    return bool(getattr(model, "test_flip", True))


def split_has_views(samples: Sequence) -> bool:
    """Whether any sample of ``samples`` has a view id (``viewid`` not None)."""
    return any(getattr(s, "viewid", None) is not None for s in samples)


def batch_viewids(samples: Sequence, index, *, has_views: Optional[bool] = None) -> Optional[torch.Tensor]:
    """The view ids ``(B,)`` (int64, -1 unknown) of the samples at ``index`` (a batch's 4th entry), or
    None when ``samples`` has no view at all (``has_views``: that answer, when the caller knows it)."""
    if has_views is None:
        has_views = split_has_views(samples)
    if not has_views:
        return None
    rows = torch.as_tensor(index).flatten().tolist()
    views = [getattr(samples[int(i)], "viewid", None) for i in rows]
    return torch.tensor([-1 if v is None else int(v) for v in views], dtype=torch.long)


def call_with_ids(model, x: torch.Tensor, camids: Optional[torch.Tensor], viewids: Optional[torch.Tensor] = None):
    """``model(x, camids, viewids)``, or ``model(x, camids)`` without view ids (a callable written
    before views existed keeps working on data without them)."""
    return model(x, camids) if viewids is None else model(x, camids, viewids)


class Features(NamedTuple):
    """Descriptors of a split, with its labels (camid -1 where the dataset has no cameras)."""

    features: torch.Tensor  # (N, D) float32, on the CPU
    pids: np.ndarray
    camids: np.ndarray


@torch.no_grad()
def extract_features(
    model: Union[nn.Module, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    loader: DataLoader,
    *,
    device: Union[str, torch.device] = "cpu",
    flip: Optional[bool] = None,
    channels_last: bool = True,
    progress: bool = False,
) -> Features:
    """Run ``model`` in eval mode over ``loader`` (batches of ``(images, pids, camids, index)``).

    Args:
        model: called as ``model(images, camids, viewids)`` (each ``(B,)``, -1 where unknown; the
            view ids looked up by index in the loader's sample list, :func:`batch_viewids`), or as
            ``model(images, camids)`` when that list has no views: every network of the workbench
            takes the ids and hands them to its backbone.
        flip: BMFN, ``normalize((f(x) + f(flip(x))) / 2)``; False: ``normalize(f(x))``; None: the
            network's published test protocol (:func:`corelib.features.uses_test_flip`).
        channels_last: NHWC memory format (1.6x faster for ResNet-50 on the 2-core CPU, and the
            fast layout for bf16 on GPUs).
    """
    dev = torch.device(device)
    if flip is None:
        flip = uses_test_flip(model)
    was_training = getattr(model, "training", False)
    relayout = False
    if isinstance(model, nn.Module):
        model.eval().to(dev)
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        relayout = channels_last and conv is not None and not conv.weight.is_contiguous(memory_format=torch.channels_last)
        if relayout:
            model.to(memory_format=torch.channels_last)
    feats, pids, camids = [], [], []
    samples = getattr(getattr(loader, "dataset", None), "samples", None)  # any iterable of batches is a loader
    has_views = samples is not None and split_has_views(samples)
    for images, pid, camid, index in tqdm(loader, desc="extract", unit="batch", disable=not progress):
        x = images.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cams = torch.as_tensor(camid).to(dev)
        views = batch_viewids(samples, index, has_views=True).to(dev) if has_views else None
        f = call_with_ids(model, x, cams, views).float()
        if flip:
            f = f + call_with_ids(model, torch.flip(x, dims=[3]), cams, views).float()
        feats.append(torch.nn.functional.normalize(f, dim=1).cpu())
        pids.append(np.asarray(pid))
        camids.append(np.asarray(camid))
    if relayout:  # hand the model back in the layout it came in (training continues bit-exactly)
        model.to(memory_format=torch.contiguous_format)
    if isinstance(model, nn.Module) and was_training:
        model.train()
    if not feats:
        raise InvalidInputError("the loader yielded no batch: is the split empty?")
    return Features(torch.cat(feats), np.concatenate(pids), np.concatenate(camids))


def extract_split(model, samples: Sequence, height: int, width: int, *, device: Union[str, torch.device] = "cpu",
                  batch_size: int = 128, channels_last: bool = True, progress: bool = False,
                  flip: Optional[bool] = None) -> Features:
    """Descriptors of ``samples`` (a split of ``(path, pid, camid[, viewid])``) at the test transform of
    size ``height`` x ``width``, flip-averaged as ``flip`` says (None: the network's test protocol).

    Raises:
        ValueError: ``samples`` is empty.
    """
    if not len(samples):
        raise InvalidInputError("no images to extract features from: the split is empty")
    loader = build_loader(samples, build_transforms("test", height, width), batch_size)
    return extract_features(model, loader, device=device, channels_last=channels_last, progress=progress, flip=flip)
