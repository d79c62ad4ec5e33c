"""Identity samplers for P x K training batches (P identities, K images each), by name.

Triplet losses need several images of each identity in a batch, and re-identification is about
matching across cameras, so :class:`CameraAwareIdentitySampler` fills each identity block with
images from cameras other than the anchor's whenever it can (the semantics of the authors'
``RandomMultipleGallerySampler``, docs/method.md §2.5).

The sampler yields indices identity-block by identity-block; the DataLoader groups them into batches
of ``P * K`` with ``drop_last=True``. Unlike the authors' sampler it draws from its own
``torch.Generator`` seeded with ``seed + epoch``, so the order is reproducible and independent of
whatever else consumed the global RNG; call :meth:`CameraAwareIdentitySampler.set_epoch` at the
start of every epoch, as with ``DistributedSampler``, or every epoch repeats the same order.

The loops build their sampler by name (``TrainingCfg.sampler``) with :func:`build_sampler`;
``"camera_aware"`` is :class:`CameraAwareIdentitySampler`, ``"orientation_aware"``
:class:`OrientationAwareIdentitySampler` (followers from other views first, for the
orientation-aware triplet). A sampler of your own is a class (or function) ``fn(samples,
num_instances, seed)`` registered with :func:`register_sampler`.

Example::

    sampler = build_sampler("camera_aware", ds.train, num_instances=4, seed=0)
    loader = build_loader(ds.train, tf, batch_size=128, sampler=sampler, drop_last=True)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, pids, camids, indices in loader: ...
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from ..errors import InvalidInputError
from ..registry import Registry

if TYPE_CHECKING:  # only for the annotation: the sampler needs nothing else from the registry
    from .dataset import Sample


SAMPLERS: Registry[Callable[..., Sampler[int]]] = Registry(
    "sampler", "Register your own with corelib.data.samplers.register_sampler.")
"""The P x K identity samplers by name: builders ``fn(samples, num_instances, seed) -> Sampler``."""


def register_sampler(name: str) -> Callable:
    """Register a sampler builder ``fn(samples, num_instances, seed)`` (a class works) under ``name``.

    The sampler yields indices identity block by identity block and has ``set_epoch(epoch)``
    (the loops call it at every wrap of the loader)."""
    return SAMPLERS.register(name)


def list_samplers() -> list[str]:
    """The registered sampler names."""
    return SAMPLERS.names()


def build_sampler(name: str, samples: Sequence[Sample], num_instances: int, seed: int) -> Sampler[int]:
    """The sampler registered as ``name`` over ``samples``.

    Raises:
        UnknownNameError: no sampler of that name (the message lists those there are).
    """
    return SAMPLERS.get(name)(samples, num_instances=num_instances, seed=seed)


def pids_per_batch(batch_size: int, num_instances: int) -> int:
    """Number of identities P in a batch of ``batch_size`` = P * ``num_instances`` images.

    Raises:
        ValueError: a non-positive argument, or ``batch_size`` not a multiple of ``num_instances``.
    """
    if num_instances < 1 or batch_size < 1:
        raise InvalidInputError(
            f"batch_size ({batch_size}) and num_instances ({num_instances}) must both be >= 1"
        )
    if batch_size % num_instances:
        lower = batch_size - batch_size % num_instances
        upper = lower + num_instances
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise InvalidInputError(
            f"batch_size {batch_size} is not a multiple of num_instances {num_instances}: "
            f"a P x K batch needs batch_size = P * {num_instances}; use batch_size {hint}, "
            f"or change num_instances to a divisor of {batch_size}"
        )
    return batch_size // num_instances


@register_sampler("camera_aware")
class CameraAwareIdentitySampler(Sampler[int]):
    """Sample K images per identity, preferring cameras other than the anchor's.

    Each epoch visits every identity once, in a random order. For an identity it takes one random
    image (the anchor), then ``num_instances - 1`` followers:

    - from the identity's images taken by other cameras than the anchor's, without replacement when
      there are at least ``num_instances - 1`` of them, otherwise with replacement;
    - if there are none, from its other images (all from the anchor's camera), with the same
      replacement rule;
    - an identity with a single image contributes just that image.

    Samples whose camid is ``None`` (datasets without cameras) all count as one camera, so their
    identities always take the fallback branch.

    The authors switch to sampling without replacement only at ``num_instances`` candidates; here
    ``num_instances - 1`` candidates suffice, since that is exactly how many followers are drawn.

    Args:
        samples: the training list; only ``pid`` and ``camid`` are used.
        num_instances: K, the images per identity block.
        seed: base seed; epoch ``e`` uses a ``torch.Generator`` seeded with ``seed + e``.
    """

    def __init__(self, samples: Sequence[Sample], num_instances: int = 4, seed: int = 0) -> None:
        if len(samples) == 0:
            raise InvalidInputError(
                "CameraAwareIdentitySampler got no samples: the training list is empty"
            )
        if num_instances < 1:
            raise InvalidInputError(f"num_instances must be >= 1, got {num_instances}")
        self.num_instances = int(num_instances)
        self.seed = int(seed)
        self.epoch = 0
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, sample in enumerate(samples):
            by_pid[sample.pid].append(index)
        # Identity order of first appearance: deterministic for a given sample list.
        self._pids: list[int] = list(by_pid)
        self._indices: list[list[int]] = [by_pid[pid] for pid in self._pids]
        # Camera of every sample; None (no camera information) is one shared camera.
        self._cams: list[int | None] = [sample.camid for sample in samples]

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (call once per epoch, before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        k = self.num_instances
        return sum(1 if len(indices) == 1 else k for indices in self._indices)

    def _draw(self, candidates: list[int], gen: torch.Generator) -> list[int]:
        """``num_instances - 1`` draws from ``candidates``, without replacement when enough."""
        need = self.num_instances - 1
        if len(candidates) >= need:
            picks = torch.randperm(len(candidates), generator=gen)[:need]
        else:
            picks = torch.randint(len(candidates), (need,), generator=gen)
        return [candidates[i] for i in picks.tolist()]

    def _anchored_blocks(self) -> Iterator[tuple[list[int], int, torch.Generator]]:
        """The epoch's identity blocks in their seeded random order: each identity's images, its random
        anchor, and the generator its followers are drawn from (before the next block's anchor)."""
        gen = torch.Generator()
        gen.manual_seed(self.seed + self.epoch)
        for block in torch.randperm(len(self._indices), generator=gen).tolist():
            indices = self._indices[block]
            yield indices, indices[int(torch.randint(len(indices), (1,), generator=gen).item())], gen

    def __iter__(self) -> Iterator[int]:
        out: list[int] = []
        for indices, anchor, gen in self._anchored_blocks():
            out.append(anchor)
            if len(indices) == 1 or self.num_instances == 1:
                continue
            anchor_cam = self._cams[anchor]
            other_cams = [i for i in indices if self._cams[i] != anchor_cam]
            if other_cams:
                out.extend(self._draw(other_cams, gen))
            else:
                out.extend(self._draw([i for i in indices if i != anchor], gen))
        return iter(out)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(identities={len(self._pids)}, "
            f"num_instances={self.num_instances}, seed={self.seed}, epoch={self.epoch})"
        )


@register_sampler("orientation_aware")
class OrientationAwareIdentitySampler(CameraAwareIdentitySampler):
    """Sample K images per identity so that each block holds several orientations.

    Each epoch visits every identity once, in a random order. For an identity it takes one random
    image (the anchor), then ``num_instances - 1`` followers one at a time, each drawn uniformly from
    the first non-empty of:

    1. the identity's images not yet in the block whose view is none of the views already in it;
    2. its images not yet in the block taken by another camera than the anchor's;
    3. its images not yet in the block;

    once every image of the identity is in the block, the same tiers over all its images but the
    anchor (with replacement). An identity with a single image contributes just that image. Images
    without a view (``viewid`` None or absent) never count as a new view, so a split without views
    gives camera-aware blocks. The orientation-aware triplet (``loss.name`` "ce_triplet_orientation",
    "corereid_orientation") needs such blocks: a positive from another view exists only when the
    block holds one.

    Draws come from the sampler's own ``torch.Generator`` seeded with ``seed + epoch``
    (:meth:`set_epoch`), as for :class:`CameraAwareIdentitySampler`.
    """

    def __init__(self, samples: Sequence[Sample], num_instances: int = 4, seed: int = 0) -> None:
        super().__init__(samples, num_instances, seed)
        self._views: list[int | None] = [getattr(sample, "viewid", None) for sample in samples]

    def _follower(self, pool: list[int], block: list[int], anchor: int, gen: torch.Generator) -> int:
        seen = {self._views[i] for i in block}
        tiers = ([i for i in pool if self._views[i] is not None and self._views[i] not in seen],
                 [i for i in pool if self._cams[i] != self._cams[anchor]], pool)
        candidates = next(tier for tier in tiers if tier)
        return candidates[int(torch.randint(len(candidates), (1,), generator=gen).item())]

    def __iter__(self) -> Iterator[int]:
        out: list[int] = []
        for indices, anchor, gen in self._anchored_blocks():
            block = [anchor]
            if len(indices) > 1:
                others = [i for i in indices if i != anchor]
                left = list(others)
                for _ in range(self.num_instances - 1):
                    pick = self._follower(left or others, block, anchor, gen)
                    block.append(pick)
                    if pick in left:
                        left.remove(pick)
            out.extend(block)
        return iter(out)
