"""What a CycleGAN trains on: the image transforms, the seeded batches of each domain, the image pool.

- :func:`style_transforms`: PIL image -> tensor in [-1, 1]; training adds CycleGAN's
  resize-crop-flip jitter. :func:`to_pil` turns generator outputs back into images.
- :class:`StyleJob`: one CycleGAN to train, its two unpaired image sets and its folder.
- :class:`EpochBatches`: each domain's batches of an epoch, a function of the seed and the epoch
  only, so that a resumed run replays the same images.
- :class:`ImagePool`: the history of generated images the discriminators also see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Sampler
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..config import StyleCfg
from ..data.dataset import Sample
from ..errors import InvalidInputError


def style_transforms(cfg: StyleCfg, *, train: bool) -> T.Compose:
    """PIL image -> tensor in [-1, 1] at (height, width); training adds the resize-crop-flip jitter."""
    norm = [T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    size = (cfg.height, cfg.width)
    if not train:
        return T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC), *norm])
    load = (round(cfg.height * cfg.load_scale), round(cfg.width * cfg.load_scale))
    return T.Compose([T.Resize(load, interpolation=InterpolationMode.BICUBIC), T.RandomCrop(size),
                      T.RandomHorizontalFlip(), *norm])


def to_pil(images: torch.Tensor) -> list:
    """Generator outputs in [-1, 1] (N, 3, H, W) -> PIL RGB images."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


@dataclass
class StyleJob:
    """One CycleGAN to train: its two unpaired image sets, its folder and its progress label."""

    images_a: Sequence[Union[str, Path, Sample]]
    images_b: Sequence[Union[str, Path, Sample]]
    out_dir: Union[str, Path]
    desc: str = "cyclegan"


def job_samples(job: StyleJob) -> list[list[Sample]]:
    """The two domains' images of ``job`` as ``Sample``s (paths get pid and camera 0)."""
    samples = []
    for name, items in (("A", job.images_a), ("B", job.images_b)):
        if len(items) == 0:
            raise InvalidInputError(f"{job.desc}: domain {name} has no images: a CycleGAN needs images on both sides")
        samples.append([s if isinstance(s, Sample) else Sample(str(s), 0, 0) for s in items])
    return samples


def steps_per_epoch(cfg: StyleCfg, samples: Sequence[Sequence[Sample]]) -> int:
    """``cfg.iters_per_epoch``, or enough batches to see the larger domain once."""
    return cfg.iters_per_epoch or math.ceil(max(len(s) for s in samples) / cfg.batch_size)


class EpochBatches(Sampler):
    """``steps`` batches of one domain per epoch, drawn from seeded random permutations.

    Batches are lists of ``(index, (domain, epoch, step, slot))`` keys, so each image's crop and
    flip are a function of the seed and its place in the stream (:class:`ImageDataset` keyed
    draws): an epoch replays identically after a resume, with any number of workers.
    """

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, domain: int) -> None:
        self.n, self.batch_size, self.steps, self.seed, self.domain, self.epoch = n, batch_size, steps, seed, domain, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list]:
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.domain, self.epoch]).generate_state(1)[0]))
        need = self.steps * self.batch_size
        order = torch.cat([torch.randperm(self.n, generator=gen) for _ in range(math.ceil(need / self.n))])[:need]
        for step in range(self.steps):
            chunk = order[step * self.batch_size:(step + 1) * self.batch_size].tolist()
            yield [(i, (self.domain, self.epoch, step, slot)) for slot, i in enumerate(chunk)]


class ImagePool:
    """History of generated images (Shrivastava et al. 2017, as CycleGAN uses it).

    Until the pool holds ``size`` images every fake is stored and returned; afterwards each fake
    is, with probability 1/2, swapped for a stored one (which is returned instead). The
    discriminator thus also sees older generator outputs, which damps oscillation.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.images = size, []
        self.gen = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.cpu())
                out.append(img)
            elif torch.rand(1, generator=self.gen).item() < 0.5:
                j = int(torch.randint(self.size, (1,), generator=self.gen))
                old = self.images[j]
                self.images[j] = img.cpu()
                out.append(old.to(img.device))
            else:
                out.append(img)
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"images": torch.cat(self.images) if self.images else torch.empty(0), "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"].split(1)) if state["images"].numel() else []
        self.gen.set_state(state["rng"])

