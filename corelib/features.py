"""Feature extraction in eval mode, flip-averaged and L2-normalised (BMFN, docs/method.md §3.6).

:func:`extract_split` is the one way the workbench turns a list of samples into descriptors (the
evaluation, the fine-tuning clusterings and the analysis chapters all call it); :func:`extract_features`
is the loop underneath, for a loader of your own.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .data.batches import build_loader
from .data.transforms import build_transforms
from .errors import InvalidInputError
from .progress import tqdm


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
    flip: bool = True,
    channels_last: bool = True,
    progress: bool = False,
) -> Features:
    """Run ``model`` in eval mode over ``loader`` (batches of ``(images, pids, camids, index)``).

    Args:
        model: called as ``model(images, camids)`` (camids ``(B,)``, -1 where unknown): every
            network of the workbench takes the camera ids and hands them to its backbone.
        flip: BMFN, ``normalize((f(x) + f(flip(x))) / 2)``; otherwise ``normalize(f(x))``.
        channels_last: NHWC memory format (1.6x faster for ResNet-50 on the 2-core CPU, and the
            fast layout for bf16 on GPUs).
    """
    dev = torch.device(device)
    was_training = getattr(model, "training", False)
    relayout = False
    if isinstance(model, nn.Module):
        model.eval().to(dev)
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        relayout = channels_last and conv is not None and not conv.weight.is_contiguous(memory_format=torch.channels_last)
        if relayout:
            model.to(memory_format=torch.channels_last)
    feats, pids, camids = [], [], []
    for images, pid, camid, _ in tqdm(loader, desc="extract", unit="batch", disable=not progress):
        x = images.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cams = torch.as_tensor(camid).to(dev)
        f = model(x, cams).float()
        if flip:
            f = f + model(torch.flip(x, dims=[3]), cams).float()
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
                  batch_size: int = 128, channels_last: bool = True, progress: bool = False) -> Features:
    """BMFN descriptors of ``samples`` (a split of ``(path, pid, camid)``) at the test transform of
    size ``height`` x ``width``.

    Raises:
        ValueError: ``samples`` is empty.
    """
    if not len(samples):
        raise InvalidInputError("no images to extract features from: the split is empty")
    loader = build_loader(samples, build_transforms("test", height, width), batch_size)
    return extract_features(model, loader, device=device, channels_last=channels_last, progress=progress)
