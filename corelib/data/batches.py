"""Reading samples into tensors: a Dataset over ``Sample`` lists and a reproducible DataLoader.

:class:`ImageDataset` decodes images with :func:`corelib.data.dataset.read_image`, so a corrupt
file stops training with an error that names it instead of a bare PIL traceback from a worker, and
keeps the decoded pixels (:func:`read_image_cached`): the embedded datasets are decoded once per
process instead of once per epoch.

:func:`build_loader` seeds everything that a DataLoader randomises: the shuffle order and each
worker's torch seed come from a ``torch.Generator`` seeded with ``seed``, and :func:`seed_worker`
derives python's and numpy's seeds from the worker's torch seed. Two loaders built with the same
arguments therefore yield the same augmented batches, with any number of workers. With
``num_workers=0`` the transforms run in the main process on the global torch RNG, so seed it with
``torch.manual_seed`` for the same guarantee.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import InvalidInputError
from .dataset import Sample, read_image


DECODED_CACHE_BYTES = 768 * 2**20
"""Decoded images kept per process (768 MiB): the embedded datasets fit several times over (a
64 x 64 RGB image is 12 KiB), so every epoch after the first decodes nothing; a larger dataset
fills it and the rest is decoded on each read, as before."""

_decoded: "OrderedDict[str, tuple[tuple[int, int], object]]" = OrderedDict()
_decoded_bytes = 0


def read_image_cached(path) -> object:
    """:func:`~corelib.data.dataset.read_image` with the decoded pixels kept in memory.

    The same pixels as a fresh decode (the cache stores the decoded RGB image and hands out a
    copy, so no transform can change it); an entry is used only while the file's modification
    time and size are those it was read with. Until :data:`DECODED_CACHE_BYTES` are held, new
    images are added; then the cache stops growing (random access would thrash an LRU).
    """
    global _decoded_bytes
    key = os.fspath(path)
    try:
        st = os.stat(key)
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        return read_image(path)  # read_image raises the error that names the problem
    hit = _decoded.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1].copy()
    image = read_image(path)
    size = image.width * image.height * len(image.getbands())
    if hit is not None:
        _decoded_bytes -= hit[1].width * hit[1].height * len(hit[1].getbands())
        del _decoded[key]
    if _decoded_bytes + size <= DECODED_CACHE_BYTES:
        _decoded[key] = (stamp, image.copy())
        _decoded_bytes += size
    return image


class ImageDataset(Dataset):
    """A torch Dataset over a list of ``Sample(path, pid, camid, viewid)``.

    ``dataset[i]`` is ``(image, pid, camid, i)``: the image after ``transform`` (the PIL RGB image
    when ``transform`` is None), and a camid of ``-1`` for samples whose camid is ``None`` (datasets
    without cameras) because the default collate cannot batch ``None``. The index lets a training
    loop look pseudo-labels or features up by sample.

    Args:
        samples: the images to read.
        transform: applied to each PIL image, e.g. from
            :func:`corelib.data.transforms.build_transforms`.
    """

    def __init__(self, samples: Sequence[Sample], transform: Optional[Callable] = None, *, seed: int = 0) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Union[int, tuple[int, tuple[int, ...]]]) -> tuple[object, int, int, int]:
        # key: an index, or (index, draw key) from a keyed batch sampler: then the transform's
        # random draws come from a generator seeded by (seed, draw key), so an image's augmentation
        # depends on its place in the sample stream, not on the worker or process that loads it
        index, draw = key if isinstance(key, tuple) else (key, None)
        path, pid, camid = self.samples[index][:3]  # a Sample's viewid is looked up by index, not returned
        image = read_image_cached(path)  # raises CorruptImageError naming the file
        if self.transform is not None:
            if draw is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(np.random.SeedSequence([self.seed, *draw]).generate_state(1)[0]))
                    image = self.transform(image)
        return image, int(pid), -1 if camid is None else int(camid), index

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.samples)} samples, transform={self.transform!r})"


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python ``random`` and numpy from the worker's torch seed.

    Torch seeds each worker with ``base_seed + worker_id`` by itself, but not the other RNGs; this
    is the recipe of the PyTorch reproducibility notes.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def build_loader(
    samples: Sequence[Sample],
    transform: Optional[Callable],
    batch_size: int,
    *,
    sampler: Optional[Sampler] = None,
    batch_sampler: Optional[Sampler] = None,
    shuffle: bool = False,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``ImageDataset(samples, transform)`` whose randomness is seeded.

    Args:
        samples: the images to load.
        transform: per-image transform (None keeps PIL images, which the default collate rejects).
        batch_size: images per batch (``P * K`` with an identity sampler).
        sampler: e.g. a :class:`~corelib.data.samplers.CameraAwareIdentitySampler`; excludes
            ``shuffle``.
        batch_sampler: yields whole batches of indices (e.g. a rank's slice of each P x K batch
            under torchrun); replaces ``batch_size``, ``sampler``, ``shuffle`` and ``drop_last``.
            Batches of ``(index, draw key)`` pairs make augmentation a function of ``seed`` and the
            key (see :class:`ImageDataset`).
        shuffle: random order each epoch (drawn from the seeded generator).
        num_workers: loader processes; 0 loads in the main process.
        drop_last: drop the last incomplete batch (use True for P x K batches).
        seed: seeds the loader's generator (shuffle order and worker seeds).
        pin_memory: pin batches for faster host-to-GPU copies.

    Raises:
        ValueError: both ``sampler`` and ``shuffle`` given, or a non-positive batch size.
    """
    if sampler is not None and shuffle:
        raise InvalidInputError(
            "pass either sampler or shuffle=True, not both: the sampler sets the order"
        )
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    if batch_sampler is not None:
        if sampler is not None or shuffle:
            raise InvalidInputError("batch_sampler sets the order and the batches: pass neither sampler nor shuffle")
        return DataLoader(ImageDataset(samples, transform, seed=seed), batch_sampler=batch_sampler, num_workers=num_workers,
                          worker_init_fn=seed_worker, generator=generator, pin_memory=pin_memory)
    return DataLoader(
        ImageDataset(samples, transform),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=pin_memory,
    )
