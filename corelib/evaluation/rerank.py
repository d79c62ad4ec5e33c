"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), exact and memory-bounded, in torch.

Re-ranking replaces the query-to-gallery distance by a mix of the original distance and a Jaccard
distance between k-reciprocal neighbour sets, computed over all N = Q + G images (queries first):

1. d(i, j) = ||x_i - x_j||^2, each row divided by its maximum over all N columns: d'.
2. initial_rank[i] = the columns of row i of d' in ascending order (i itself first).
3. R(i, k) = {j in initial_rank[i, :k+1] : i in initial_rank[j, :k+1]}. E(i) = R(i, k1) united with
   every R(j, round(k1/2)), j in R(i, k1), that has more than 2/3 of its members in R(i, k1).
4. V[i, E(i)] = exp(-d'[i, E(i)]) normalised to sum 1; V is zero elsewhere.
5. Query expansion (k2 > 1): V[i] <- mean of the rows V[initial_rank[i, :k2]].
6. jaccard(i, j) = 1 - s / (2 - s) with s = sum_k min(V[i, k], V[j, k]).
7. final(i, j) = (1 - lambda) * jaccard(i, j) + lambda * d'(i, j), query rows by gallery columns.

The classic numpy code stores several dense N x N matrices (1.5 GB each for Market-1501, 35 GB for
MSMT17). Here nothing N x N is ever held: distances are computed block by block (one GEMM per
block pair, using the symmetry of d to do half of them) keeping only the top-(k1+1) neighbours and
the maximum of every row; V is sparse (CSR, at most (k1+1)(round(k1/2)+2) entries per row, k2
times that after query expansion); the Jaccard overlaps come from an inverted index over V's
columns, accumulated into one dense (query_chunk x G) block at a time. The result is the dense
algorithm's, computed in float32, not an approximation of it. This module does steps 1, 2 and 7
and V's weights; steps 3-6 are the k-reciprocal encoding of :mod:`corelib.kreciprocal`, shared
with the clustering Jaccard distance.

Example::

    from corelib.evaluation.rerank import rerank
    dist = rerank(query_feats, gallery_feats)               # (Q, G) float32 tensor
    for rows, block in k_reciprocal_chunks(q, g, query_chunk=512):   # bounded memory
        ...                                                 # evaluate block = dist[rows]

Ties: initial_rank orders exactly tied distances the way torch.topk happens to (and block merging
may change that), which can differ from numpy's argsort in the classic code; the one tie that is
broken on purpose is self against an exact duplicate: i always comes first in its own row.
Likewise, neighbours whose distances differ by less than float32 rounding (~1e-6 relative) may
swap places against a float64 computation. On CUDA the Jaccard sums use atomic adds, so their
last bits can vary from run to run.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import NamedTuple, Optional, Union

import torch

from ..array_checks import check_features
from ..errors import InvalidInputError, InvalidTypeError
from ..kreciprocal import (column_index, encode, jaccard_from_min_sums, kept_or_computed, min_sums, pair_dots,
                           query_expansion)
from ..sparse_rows import progress_bar

__all__ = ["k_reciprocal_chunks", "rerank"]

# Block edge of the N x N distance pass. Larger blocks run the GEMM closer to peak, but the
# transposed top-k (dim=0) slows down past ~2k on CPU; a GPU prefers big blocks.
_BLOCK_CPU = 2048
_BLOCK_GPU = 8192
# Rows per chunk when building V and its query expansion: bounds the (rows x 21 x 11 x 21)
# membership test and the per-row candidate lists to tens of MB.
_ROW_CHUNK = 2048
# Feature elements gathered at once for distances the first pass did not keep (64 MB).
_GATHER_ELEMS = 1 << 24
# The (Q, G) distances of the first pass are kept, not recomputed, up to this size (1 GiB).
_CACHE_ELEMS = 1 << 28
# (query entry, gallery entry) pairs expanded at once in the Jaccard pass (~40 bytes each).
_MAX_PAIRS = 1 << 23


def rerank(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    device: Union[str, torch.device, None] = None,
    query_chunk: int = 1024,
    progress: bool = False,
) -> torch.Tensor:
    """Re-ranked query-to-gallery distances (k-reciprocal encoding with Jaccard distance).

    Args:
        query_feats: (Q, D) float features of the queries.
        gallery_feats: (G, D) float features of the gallery, same D.
        k1: size of the k-reciprocal neighbourhood (paper default 20).
        k2: number of neighbours averaged in the query expansion; 1 switches it off.
        lambda_value: weight of the original distance in the result, in [0, 1].
        device: where to compute and return; None means the device of ``query_feats``.
        query_chunk: query rows handled at once in the Jaccard pass (bounds memory).
        progress: show tqdm progress bars.

    Returns:
        (Q, G) float32 tensor on ``device``; smaller means more similar.

    Raises:
        ValueError: on malformed inputs or parameters (see ``k_reciprocal_chunks``).
    """
    chunks = k_reciprocal_chunks(query_feats, gallery_feats, k1=k1, k2=k2,
                                 lambda_value=lambda_value, device=device,
                                 query_chunk=query_chunk, progress=progress)
    out: Optional[torch.Tensor] = None
    for rows, block in chunks:
        if out is None:  # filled in place: concatenating a list would need the result twice
            out = torch.empty((query_feats.shape[0], block.shape[1]), dtype=block.dtype,
                              device=block.device)
        out[rows] = block
    assert out is not None  # validation guarantees Q >= 1
    return out


def k_reciprocal_chunks(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    device: Union[str, torch.device, None] = None,
    query_chunk: int = 1024,
    progress: bool = False,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Re-ranked distances, yielded as blocks of query rows so the (Q, G) matrix need not be held.

    Everything that involves all N = Q + G images (neighbour lists, sparse V) is computed on the
    first ``next()``; then each step yields one block of at most ``query_chunk`` query rows.

    Args:
        query_feats: (Q, D) float features of the queries (CPU or CUDA).
        gallery_feats: (G, D) float features of the gallery, same D.
        k1: size of the k-reciprocal neighbourhood (paper default 20); must be < Q + G.
        k2: number of neighbours averaged in the query expansion; 1 switches it off.
        lambda_value: weight of the original distance in the result, in [0, 1].
        device: where to compute; None means the device of ``query_feats``.
        query_chunk: query rows per yielded block.
        progress: show tqdm progress bars.

    Returns:
        An iterator of ``(rows, block)``: ``rows`` a ``slice`` of query indices, in order, and
        ``block`` the (rows, G) float32 re-ranked distances on ``device``.

    Raises:
        ValueError: if the features are not 2-D, empty, of different widths or not finite, or a
            parameter is out of range. Raised at call time, not at the first ``next()``.
    """
    _validate(query_feats, gallery_feats, k1, k2, lambda_value, query_chunk)
    dev = torch.device(device) if device is not None else query_feats.device
    return _generate(query_feats, gallery_feats, int(k1), int(k2), float(lambda_value), dev,
                     int(query_chunk), progress)


def _validate(query: torch.Tensor, gallery: torch.Tensor, k1: int, k2: int, lam: float,
              query_chunk: int) -> None:
    """Raise ValueError (TypeError for non-tensors) naming the problem and the fix."""
    for name, t in (("query_feats", query), ("gallery_feats", gallery)):
        if not isinstance(t, torch.Tensor):
            raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; "
                            "wrap numpy arrays with torch.from_numpy")
        if t.dim() != 2:
            raise InvalidInputError(f"{name} must be 2-D (num_images, feature_dim), got shape "
                             f"{tuple(t.shape)}; reshape or stack the features first")
        if not t.is_floating_point():
            raise InvalidInputError(f"{name} must be a floating-point tensor, got {t.dtype}; "
                             "convert it with .float()")
        if t.shape[0] == 0 or t.shape[1] == 0:
            raise InvalidInputError(f"{name} is empty (shape {tuple(t.shape)}); re-ranking needs at "
                             "least one query and one gallery image with non-empty features")
    if query.shape[1] != gallery.shape[1]:
        raise InvalidInputError(f"query_feats has feature dim {query.shape[1]} but gallery_feats has "
                         f"{gallery.shape[1]}; extract both with the same model and head")
    for name, t in (("query_feats", query), ("gallery_feats", gallery)):
        check_features(t, name)
    if not isinstance(k1, numbers.Integral) or k1 < 1:
        raise InvalidInputError(f"k1 must be an integer >= 1, got {k1!r}")
    if not isinstance(k2, numbers.Integral) or k2 < 1:
        raise InvalidInputError(f"k2 must be an integer >= 1 (1 disables query expansion), got {k2!r}")
    if not 0.0 <= float(lam) <= 1.0:
        raise InvalidInputError(f"lambda_value must lie in [0, 1], got {lam!r}")
    if not isinstance(query_chunk, numbers.Integral) or query_chunk < 1:
        raise InvalidInputError(f"query_chunk must be an integer >= 1, got {query_chunk!r}")
    n = query.shape[0] + gallery.shape[0]
    if k1 >= n:
        raise InvalidInputError(f"k1={k1} must be smaller than the number of images (queries + "
                         f"gallery = {n}); lower k1 or re-rank a larger set")


def _generate(query: torch.Tensor, gallery: torch.Tensor, k1: int, k2: int, lam: float,
              dev: torch.device, query_chunk: int, progress: bool
              ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Body of ``k_reciprocal_chunks`` (a separate generator so validation runs eagerly)."""
    nq, ng = query.shape[0], gallery.shape[0]
    x = torch.cat([query.to(dev, torch.float32), gallery.to(dev, torch.float32)])
    # Distances do not change under translation, but the norms trick ||a||^2 + ||b||^2 - 2ab
    # cancels less when the norms are small: centring keeps float32 close to the exact value.
    x -= x.mean(0, keepdim=True)
    n = x.shape[0]
    sq = torch.empty(n, device=dev)
    for s0 in range(0, n, _ROW_CHUNK):  # chunked: x * x whole would be another N x D copy
        part = x[s0 : s0 + _ROW_CHUNK]
        torch.sum(part * part, 1, out=sq[s0 : s0 + _ROW_CHUNK])
    block = _BLOCK_GPU if dev.type == "cuda" else _BLOCK_CPU

    # Only the first k1 + 1 neighbours matter, unless the query expansion averages more rows.
    k = min(max(k1 + 1, k2), n)
    keep_qg = 0.0 < lam and nq * ng <= _CACHE_ELEMS
    nb = _neighbours(x, sq, k, block, nq if keep_qg else 0, progress)
    # V in chunks of _ROW_CHUNK rows: the budget of their (rows x (k1+1) x (round(k1/2)+1) x (k1+1)) membership test
    v = encode(nb.rank, k1, k1 + 1, _weights(x, sq, nb),
               max_elems=_ROW_CHUNK * (k1 + 1) ** 2 * (round(k1 / 2) + 1), progress=progress, desc="rerank sparse V")
    if k2 > 1:  # like numpy's slicing, k2 > N averages all N rows
        v = query_expansion(v, nb.rank, min(k2, n), rows_per_chunk=_ROW_CHUNK, stable=False)
    gallery_index = column_index(v, nq) if lam < 1.0 else None

    bar = progress_bar(progress, math.ceil(nq / query_chunk), "rerank queries")
    for r0 in range(0, nq, query_chunk):
        r1 = min(r0 + query_chunk, nq)
        if nb.query_gallery is not None:
            dist = nb.query_gallery[r0:r1].div(nb.row_max[r0:r1].unsqueeze(1))
        elif lam > 0.0:  # not kept (too large): one GEMM per chunk, as in the first pass
            dist = _block_distances(x, sq, r0, r1, nq, n).div_(nb.row_max[r0:r1].unsqueeze(1))
        if gallery_index is not None:
            out = jaccard_from_min_sums(min_sums(v, gallery_index, r0, r1, ng, _MAX_PAIRS))
            if lam > 0.0:
                out.mul_(1.0 - lam).add_(dist, alpha=lam)
        else:
            out = dist
        bar.update(1)
        yield slice(r0, r1), out
    bar.close()


def _block_distances(x: torch.Tensor, sq: torch.Tensor, a0: int, a1: int, b0: int, b1: int
                     ) -> torch.Tensor:
    """Squared Euclidean distances between rows a0:a1 and b0:b1 of x, clamped at 0."""
    d = torch.addmm(sq[b0:b1].unsqueeze(0), x[a0:a1], x[b0:b1].T, alpha=-2.0)
    return d.add_(sq[a0:a1].unsqueeze(1)).clamp_(min=0.0)


class _Neighbours(NamedTuple):
    """What the N x N distance pass keeps."""

    rank: torch.Tensor  # (N, k) int64: nearest columns, ascending distance, self first
    dist: torch.Tensor  # (N, k) float32: their squared distances (self: 0)
    row_max: torch.Tensor  # (N,) float32: maximum distance of each row, never 0
    query_gallery: Optional[torch.Tensor]  # (Q, G) squared distances if kept, else None


def _neighbours(x: torch.Tensor, sq: torch.Tensor, k: int, block: int, nq: int, progress: bool
                ) -> _Neighbours:
    """Top-k nearest columns of every row, every row's maximum and optionally the Q x G block.

    d is symmetric, so only blocks on and above the diagonal are computed; each block updates
    its rows directly and the rows of its column range through the transpose. Queries come
    first, so every query-gallery pair lies in such a block, untransposed.

    Args:
        nq: number of query rows whose distances to the gallery are kept; 0 keeps none.
    """
    n = x.shape[0]
    best_d = torch.full((n, k), math.inf, device=x.device)
    best_i = torch.zeros((n, k), dtype=torch.long, device=x.device)
    row_max = torch.zeros(n, device=x.device)
    qg = torch.empty((nq, n - nq), device=x.device) if nq else None
    nblocks = math.ceil(n / block)
    bar = progress_bar(progress, nblocks * (nblocks + 1) // 2, "rerank distances")
    for a0 in range(0, n, block):
        a1 = min(a0 + block, n)
        for b0 in range(a0, n, block):
            b1 = min(b0 + block, n)
            d = _block_distances(x, sq, a0, a1, b0, b1)
            if qg is not None and a0 < nq and b1 > nq:
                c0 = max(b0, nq)
                qg[a0 : min(a1, nq), c0 - nq : b1 - nq] = d[: min(a1, nq) - a0, c0 - b0 :]
            torch.maximum(row_max[a0:a1], d.amax(1), out=row_max[a0:a1])
            if b0 == a0:
                # Below every real distance: i ranks first in its own row even next to an exact
                # duplicate. Only the ranking sees this value; d(i, i) is stored as 0.
                d.diagonal().fill_(-1.0)
            else:
                torch.maximum(row_max[b0:b1], d.amax(0), out=row_max[b0:b1])
                vals, idx = torch.topk(d, min(k, a1 - a0), dim=0, largest=False, sorted=False)
                _merge(best_d, best_i, b0, b1, vals.T, idx.T + a0)
            vals, idx = torch.topk(d, min(k, b1 - b0), dim=1, largest=False, sorted=False)
            _merge(best_d, best_i, a0, a1, vals, idx + b0)
            bar.update(1)
    bar.close()
    # All-identical features give a zero maximum (0/0 in the classic code); every d is 0 then,
    # so dividing by 1 keeps d' = 0 instead of NaN.
    row_max = torch.where(row_max > 0, row_max, torch.ones_like(row_max))
    return _Neighbours(best_i, best_d.clamp_(min=0.0), row_max, qg)


def _merge(best_d: torch.Tensor, best_i: torch.Tensor, r0: int, r1: int, vals: torch.Tensor,
           idx: torch.Tensor) -> None:
    """Fold candidate (vals, idx) of rows r0:r1 into the running sorted top-k lists."""
    k = best_d.shape[1]
    cand_d = torch.cat([best_d[r0:r1], vals], 1)
    cand_i = torch.cat([best_i[r0:r1], idx], 1)
    top_d, pos = torch.topk(cand_d, k, dim=1, largest=False, sorted=True)
    best_d[r0:r1] = top_d
    best_i[r0:r1] = cand_i.gather(1, pos)


def _weights(x: torch.Tensor, sq: torch.Tensor, nb: _Neighbours):
    """Weights for :func:`corelib.kreciprocal.encode`: exp(-d'(i, E(i))) normalised to sum 1."""

    def weights(c0: int, c1: int, cand: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        d = kept_or_computed(nb.rank[c0:c1], nb.dist[c0:c1], cand, valid, c0,
                             lambda a, b: _pair_distances(x, sq, a, b))
        d.div_(nb.row_max[c0:c1].unsqueeze(1))
        w = torch.exp(d.neg_()).masked_fill_(~valid, 0.0)
        return w.div_(w.sum(1, keepdim=True))

    return weights


def _pair_distances(x: torch.Tensor, sq: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                    ) -> torch.Tensor:
    """d(a[p], b[p]) for index vectors a, b."""
    dots = pair_dots(x, a, b, _GATHER_ELEMS)
    d = (sq[a] + sq[b]).sub_(dots, alpha=2.0).clamp_(min=0.0)
    return d.masked_fill_(a == b, 0.0)  # d(i, i) is exactly 0
