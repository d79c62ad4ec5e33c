"""torchrun support: one process per device, the same global P x K batch sliced across ranks.

Under ``torchrun --nproc_per_node=W`` every rank builds the same identity sampler with the same
seed, so all ranks see the same stream of global batches; rank ``r`` loads only the ``r``-th slice
of each batch (``RankSliceBatchSampler``). Slices are multiples of K, so identities stay whole.
Losses are computed on the features gathered from all ranks (``gather_with_grad``), which makes the
step the single-process full-batch step with per-rank BatchNorm, the authors' multi-GPU setup.
Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is a no-op on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import InvalidInputError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (once per process).

    ``backend="auto"`` picks NCCL when CUDA is available and gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class RankSliceBatchSampler(Sampler[list]):
    """Groups an index stream into global batches and yields this rank's slice of each.

    Incomplete last batches are dropped (P x K training). With ``keyed=True`` every element is
    ``(index, (sampler.epoch, position in the stream))``: :class:`~corelib.data.ImageDataset` then
    seeds each image's augmentation from that key, so one process and several draw the same
    augmentation for the same place of the global batch (the sampler needs ``set_epoch``).
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, info: DistInfo, *, keyed: bool = False) -> None:
        if batch_size % info.world_size:
            raise InvalidInputError(f"batch size {batch_size} is not divisible by the {info.world_size} processes; "
                             f"choose a multiple of the world size")
        if keyed and not hasattr(sampler, "epoch"):
            raise InvalidInputError("keyed batches need a sampler with set_epoch() / .epoch (CameraAwareIdentitySampler)")
        self.sampler, self.batch_size, self.info, self.keyed = sampler, batch_size, info, keyed
        self.local = batch_size // info.world_size

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[list]:
        batch: list = []
        lo = self.info.rank * self.local
        epoch = int(getattr(self.sampler, "epoch", 0))
        for position, index in enumerate(self.sampler):
            batch.append((index, (epoch, position)) if self.keyed else index)
            if len(batch) == self.batch_size:
                yield batch[lo: lo + self.local]
                batch = []


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` of every rank in rank order; gradients flow back to each rank's part."""
    if not info.enabled:
        return x
    from torch.distributed.nn.functional import all_gather  # lazy: torch.distributed is missing from some builds; only a torchrun process needs it

    return torch.cat(all_gather(x), dim=0)


def gather_tensor(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equally-shaped tensors of every rank in rank order (no gradient)."""
    if not info.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def gather_shards(x: torch.Tensor, n_total: int, info: DistInfo) -> torch.Tensor:
    """Undo a strided split: rank ``r`` holds rows ``r, r + W, r + 2W ...`` of an ``n_total`` array.

    Shards differ in length by at most one row; they are padded to the same length for the
    collective, then interleaved back into the original order (on every rank).
    """
    if not info.enabled:
        return x
    w = info.world_size
    rows = -(-n_total // w)
    pad = torch.zeros((rows - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    full = gather_tensor(torch.cat([x, pad]), info).view(w, rows, *x.shape[1:])
    return full.transpose(0, 1).reshape(w * rows, *x.shape[1:])[:n_total]


def broadcast(x: torch.Tensor, info: DistInfo, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (in place; shapes must agree)."""
    if info.enabled:
        dist.broadcast(x, src=src)
    return x


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard(items: Sequence, info: DistInfo) -> list:
    """This rank's strided share ``items[rank::world]`` (see :func:`gather_shards`)."""
    return list(items[info.rank:: info.world_size])


def broadcast_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank."""
    if info.enabled:
        for b in module.buffers():
            dist.broadcast(b.data, src=src)


def all_reduce_mean_grads(module: torch.nn.Module, info: DistInfo) -> None:
    """Average the gradients of ``module`` over the ranks (what DDP does for the modules it wraps)."""
    if not info.enabled:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world_size
