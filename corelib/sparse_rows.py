"""Row-sparse matrices for the k-reciprocal encodings: test-time re-ranking
(:mod:`corelib.evaluation.rerank`) and the Jaccard distance of pseudo-labelling
(:mod:`corelib.cluster.jaccard`) both store V with a few tens of entries per row.

Plain torch tensors on any device: :class:`SparseRows` is CSR (row pointers, columns, values), and
the helpers build it from per-row counts, flatten row segments and deduplicate candidate lists.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .progress import tqdm


class SparseRows(NamedTuple):
    """Sparse rows: entries rowptr[r]:rowptr[r+1] of col/val belong to row r (columns ascending)."""

    rowptr: torch.Tensor  # (rows + 1,) int64
    col: torch.Tensor  # (nnz,) int64
    val: torch.Tensor  # (nnz,) float32


def sparse_rows(counts: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> SparseRows:
    """A :class:`SparseRows` from per-row entry counts and the concatenated row entries."""
    rowptr = torch.zeros(counts.shape[0] + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts, 0, out=rowptr[1:])
    return SparseRows(rowptr, col, val)


def expand_segments(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten segments [starts[s], starts[s] + counts[s]): (segment of each element, its position)."""
    total = int(counts.sum())
    seg = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts, output_size=total)
    # position = starts[seg] + (element number - number of the first element of seg)
    shift = starts - (torch.cumsum(counts, 0) - counts)
    return seg, torch.arange(total, device=counts.device) + shift[seg]


def unique_rows(cand: torch.Tensor, fill: int) -> torch.Tensor:
    """Per row: the distinct values below ``fill`` ascending, then ``fill``; trimmed to the widest row."""
    cand = cand.sort(dim=1).values
    dup = torch.zeros_like(cand, dtype=torch.bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    cand = cand.masked_fill_(dup, fill).sort(dim=1).values
    width = int((cand < fill).sum(1).max())
    return cand[:, :width]


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar, or a do-nothing stand-in when progress is off."""
    return tqdm(total=total, desc=desc, disable=not enabled, mininterval=0.5)
