"""Jaccard distance of k-reciprocal encodings for clustering (SpCL / Cluster Contrast), memory-bounded, in torch.

Before every clustering epoch, SpCL (Ge et al., NeurIPS 2020) and Cluster Contrast (Dai et al., 2021) turn the N
target features into an N x N Jaccard distance (their ``compute_jaccard_distance``) and hand it to DBSCAN. This module
computes exactly what that published code computes:

1. initial_rank[i] = the k1 nearest rows of i by Euclidean distance, i itself first (faiss ``search(x, k1)``: k1
   columns, not k1 + 1).
2. R(i, k) = {j in initial_rank[i, :k+1] : i in initial_rank[j, :k+1]}. Because initial_rank has only k1 columns,
   ``[:k1+1]`` is ``[:k1]`` for R(i, k1); for R(i, round(k1/2)) it is ``[:round(k1/2)+1]``.
3. E(i) = R(i, k1), united with every R(j, round(k1/2)), j in R(i, k1), with
   |R(j, k1/2) & R(i, k1)| > 2/3 |R(j, k1/2)|; then unique.
4. V[i, E(i)] = softmax(-d2(i, E(i))) with d2(i, j) = 2 - 2 <f_i, f_j> (the squared distance of unit vectors, taken
   from the dot product as in the published code: no division by the row maximum, unlike test-time re-ranking, and
   exp(-d2), not exp(-d)); V is zero elsewhere.
5. Query expansion (k2 != 1): V[i] <- mean of the rows V[initial_rank[i, :k2]] (i first). Like numpy's slicing of
   the k1-column initial_rank, k2 > k1 averages k1 rows.
6. d_J(i, j) = 1 - s / (2 - s) with s = sum_k min(V[i, k], V[j, k]); negative values (float rounding) set to 0.
   Pairs that share no nonzero column have s = 0, distance 1.

The published code holds several dense N x N float32 matrices (V, its query expansion, the result: 0.67 GB each for
Market-1501, 4.3 GB for MSMT17). Here the largest blocks are (chunk x N): the neighbour search is one matrix product
per row chunk keeping the top-k1 of each row; V is sparse (CSR, at most k1 (round(k1/2) + 2) entries per row, k2 times
that after query expansion); the sums of minima come from an inverted index over V's columns (only pairs that share a
column are visited, as in the published code) scattered into one (chunk x N) block at a time. Large N give a
``scipy.sparse.csr_matrix`` of the distances below ``max_distance`` instead of a dense result. This module does step 1
and V's weights; steps 2-6 are the k-reciprocal encoding of :mod:`corelib.kreciprocal`, shared with re-ranking.

Example::

    from sklearn.cluster import DBSCAN
    from corelib.cluster import jaccard_distance

    graph = jaccard_distance(features, k1=30, k2=6, dense=False)     # csr_matrix, rows sorted by distance
    labels = DBSCAN(eps=0.6, min_samples=4, metric="precomputed").fit_predict(graph)

Ties: initial_rank orders equal float32 distances by column index (lower first), except that i always comes first in
its own row, even next to an exact duplicate. Distances that differ by less than float32 rounding (~1e-7) may swap
places against a float64 computation. On CUDA the sums of minima use atomic adds, so their last bits may vary from run
to run.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import numpy as np
import scipy.sparse
import torch

from ..array_checks import check_features
from ..errors import InvalidInputError, InvalidTypeError
from ..kreciprocal import (ColumnIndex, column_index, encode, jaccard_from_min_sums, kept_or_computed, min_sums,
                           pair_dots, query_expansion)
from ..sparse_rows import SparseRows, progress_bar

__all__ = ["jaccard_distance"]

# Rows up to which ``dense=None`` returns the dense (N, N) matrix (64 MB of float32).
DENSE_MAX_ROWS = 4096
# Allowed deviation of a row's L2 norm from 1.
_NORM_TOL = 1e-3
# Elements of one (chunk x N) block in the neighbour and Jaccard passes: a float32 block is 64 MB on the CPU (the
# neighbour pass holds ~16 bytes per element: dots, distances and int64 sort keys), 512 MB on CUDA.
_BLOCK_ELEMS_CPU = 1 << 24
_BLOCK_ELEMS_GPU = 1 << 27
# Elements of the (rows x k1 x k1/2 x k1) membership test of the expansion step, and of the per-row candidate lists.
_EXPAND_ELEMS = 1 << 24
# Entries of V gathered at once in the query expansion (~30 bytes each).
_QE_ENTRIES = 1 << 23
# (row entry, column entry) pairs expanded at once in the Jaccard pass (~40 bytes each).
_MAX_PAIRS = 1 << 22
# Feature elements gathered at once for dot products the neighbour pass did not keep (64 MB).
_GATHER_ELEMS = 1 << 24


def jaccard_distance(
    features: Union[torch.Tensor, np.ndarray],
    k1: int = 30,
    k2: int = 6,
    *,
    device: Union[str, torch.device, None] = None,
    max_distance: Optional[float] = None,
    dense: Optional[bool] = None,
    chunk_size: Optional[int] = None,
    progress: bool = False,
) -> Union[torch.Tensor, scipy.sparse.csr_matrix]:
    """Jaccard distances between the k-reciprocal encodings of N features (SpCL's ``compute_jaccard_distance``).

    Args:
        features: (N, D) L2-normalised features (torch tensor or numpy array); computed in float32.
        k1: neighbours of the k-reciprocal sets (SpCL / Cluster Contrast use 30); 1 <= k1 < N.
        k2: rows averaged in the query expansion (i and its k2 - 1 nearest); 1 switches it off.
        device: where to compute; None means the device of ``features`` (the CPU for numpy arrays).
        max_distance: sparse output only: keep the pairs with distance < max_distance, in (0, 1]. Default 1.0:
            every pair that shares a nonzero column of V (all others have distance exactly 1).
        dense: True: a dense (N, N) tensor; False: a sparse graph; None: dense when N <= 4096 and
            ``max_distance`` is not given, else sparse.
        chunk_size: rows per (chunk x N) block in the neighbour and Jaccard passes (bounds memory); default from
            a budget of 2^24 elements per block on the CPU, 2^27 on CUDA.
        progress: show tqdm progress bars.

    Returns:
        Dense: an (N, N) float32 tensor on ``device``, values in [0, 1], diagonal 0.
        Sparse: a ``scipy.sparse.csr_matrix`` (N, N) float32 holding every pair with distance < ``max_distance``,
        including the diagonal and every other distance 0 as explicit entries, each row sorted by distance (what
        scikit-learn's ``sort_graph_by_row_values`` produces). A missing entry means "distance >= max_distance", so
        ``DBSCAN(eps, min_samples, metric="precomputed")`` gives the same labels on it as on the dense matrix for
        every eps < max_distance.

    Raises:
        InvalidTypeError: ``features`` is neither a tensor nor a numpy array.
        InvalidInputError: the features are not 2-D, empty, not floating point, not finite or not L2-normalised,
            or a parameter is out of range (k1 >= N, k2 < 1, max_distance outside (0, 1] ...).
    """
    x = _validate(features, k1, k2, max_distance, dense, chunk_size)
    n = x.shape[0]
    dev = torch.device(device) if device is not None else x.device
    if dense is None:
        dense = n <= DENSE_MAX_ROWS and max_distance is None
    x = x.to(dev, torch.float32).contiguous()
    k1, k2 = int(k1), int(k2)
    budget = _BLOCK_ELEMS_GPU if dev.type == "cuda" else _BLOCK_ELEMS_CPU
    rows = int(chunk_size) if chunk_size is not None else max(1, min(n, budget // n))

    rank, dots = _neighbours(x, k1, rows, progress)  # step 1
    # steps 2-4; initial_rank[:, :k1+1] is all k1 columns
    v = encode(rank, k1, k1, _weights(x, rank, dots), max_elems=_EXPAND_ELEMS, progress=progress,
               desc="jaccard encoding")
    del dots
    k2e = min(k2, k1)  # initial_rank[i, :k2] of a k1-column array
    if k2e > 1:  # step 5, in chunks of k2 source rows of at most the widest row's entries each
        widest = max(1, int((v.rowptr[1:] - v.rowptr[:-1]).max()))
        v = query_expansion(v, rank, k2e, rows_per_chunk=max(1, _QE_ENTRIES // (k2e * widest)), stable=True)
    del rank
    index = column_index(v)
    limit = 1.0 if max_distance is None else float(max_distance)
    return _jaccard(v, index, n, rows, dense, limit, progress)  # step 6


def _validate(features, k1, k2, max_distance, dense, chunk_size) -> torch.Tensor:
    """Raise InvalidInputError / InvalidTypeError naming the problem and the fix; return features as a tensor."""
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise InvalidTypeError(f"features must be a torch.Tensor or numpy array, got {type(features).__name__}; "
                               "stack the feature vectors into one (N, D) tensor")
    if features.dim() != 2:
        raise InvalidInputError(f"features must be 2-D (num_images, feature_dim), got shape {tuple(features.shape)}; "
                                "reshape or stack the features first")
    n = features.shape[0]
    if n == 0 or features.shape[1] == 0:
        raise InvalidInputError(f"features are empty (shape {tuple(features.shape)}); the Jaccard distance needs at "
                                "least k1 + 1 images with non-empty features")
    if not features.is_floating_point():
        raise InvalidInputError(f"features must be floating point, got {features.dtype}; convert with .float()")
    norms = torch.linalg.vector_norm(features.float(), dim=1)  # no (N, D) temporary
    check_features(features, "features", sq_norms=norms**2)
    off = (norms - 1.0).abs() > _NORM_TOL
    if bool(off.any()):
        first = int(torch.nonzero(off)[0, 0])
        raise InvalidInputError(
            f"features must be L2-normalised (every row norm within {_NORM_TOL:g} of 1), but {int(off.sum())} rows "
            f"are not (row {first} has norm {float(norms[first]):.4g}); L2-normalise them first, e.g. "
            "torch.nn.functional.normalize(features, dim=1)")
    if isinstance(k1, bool) or not isinstance(k1, numbers.Integral) or k1 < 1:
        raise InvalidInputError(f"k1 must be an integer >= 1, got {k1!r}")
    if k1 >= n:
        raise InvalidInputError(f"k1={k1} must be smaller than the number of images ({n}); lower k1 or cluster a "
                                "larger set")
    if isinstance(k2, bool) or not isinstance(k2, numbers.Integral) or k2 < 1:
        raise InvalidInputError(f"k2 must be an integer >= 1 (1 switches the query expansion off), got {k2!r}")
    if max_distance is not None:
        if isinstance(max_distance, bool) or not isinstance(max_distance, numbers.Real) or \
                not 0.0 < float(max_distance) <= 1.0:
            raise InvalidInputError(f"max_distance must be a number in (0, 1] (Jaccard distances lie in [0, 1]), "
                                    f"got {max_distance!r}; use e.g. the largest DBSCAN eps you will try plus a margin")
        if dense:
            raise InvalidInputError("max_distance applies to the sparse output only; drop it or pass dense=False")
    if dense is not None and not isinstance(dense, bool):
        raise InvalidInputError(f"dense must be True, False or None, got {dense!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
                                   or chunk_size < 1):
        raise InvalidInputError(f"chunk_size must be an integer >= 1 (rows per block) or None, got {chunk_size!r}")
    return features


def _neighbours(x: torch.Tensor, k1: int, rows: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: initial_rank (N, k1) int64, i first then ascending distance, ties by index; and the dot products
    <f_i, f_initial_rank[i, m]> (N, k1) float32, for step 4.

    One (rows x N) matrix product per row chunk. Each distance becomes an int64 key (float32 bits << 32 | column):
    non-negative floats order like their bit patterns, so one exact top-k on the keys breaks ties by column.
    """
    n = x.shape[0]
    sq = torch.linalg.vector_norm(x, dim=1).square_()
    col = torch.arange(n, device=x.device)
    rank = torch.empty((n, k1), dtype=torch.long, device=x.device)
    dots = torch.empty((n, k1), device=x.device)
    bar = progress_bar(progress, math.ceil(n / rows), "jaccard neighbours")
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        dot = x[r0:r1] @ x.T  # (C, N)
        # ||f_i - f_j||^2 = |f_i|^2 + |f_j|^2 - 2 <f_i, f_j> (faiss' L2 search ranks by this)
        d = torch.add(sq.unsqueeze(0), dot, alpha=-2.0).add_(sq[r0:r1].unsqueeze(1))
        # Negative rounding results (and -0.0) have the sign bit set: clamping the int32 bits at 0 maps them to +0.0.
        key = d.view(torch.int32).to(torch.long).clamp_(min=0).bitwise_left_shift_(32).add_(col)
        del d
        key[torch.arange(r1 - r0, device=x.device), col[r0:r1]] = -1  # i first, even beside an exact duplicate
        idx = torch.topk(key, k1, dim=1, largest=False, sorted=True).indices
        del key
        rank[r0:r1] = idx
        dots[r0:r1] = dot.gather(1, idx)
        bar.update(1)
    bar.close()
    return rank, dots


def _weights(x: torch.Tensor, rank: torch.Tensor, dots: torch.Tensor):
    """Step 4 weights for :func:`corelib.kreciprocal.encode`: softmax(-(2 - 2 <f_i, f_j>)) over E(i)."""

    def weights(c0: int, c1: int, cand: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        dot = kept_or_computed(rank[c0:c1], dots[c0:c1], cand, valid, c0,
                               lambda a, b: pair_dots(x, a, b, _GATHER_ELEMS))
        # softmax(-dist) with dist = 2 - 2 <f_i, f_j>, exactly the published expression; padding gets weight 0
        logits = torch.rsub(dot, 2.0, alpha=2.0).neg_().masked_fill_(~valid, -math.inf)
        return torch.softmax(logits, dim=1)

    return weights


def _to_distance(s: torch.Tensor) -> torch.Tensor:
    """d = 1 - s / (2 - s), negatives set to 0 (in place)."""
    return jaccard_from_min_sums(s).clamp_(min=0.0)


def _jaccard(v: SparseRows, index: ColumnIndex, n: int, rows: int, dense: bool, limit: float, progress: bool
             ) -> Union[torch.Tensor, scipy.sparse.csr_matrix]:
    """Step 6, row chunk by row chunk: the dense (N, N) tensor or the sparse graph of distances < limit."""
    dev = v.val.device
    out = torch.empty((n, n), device=dev) if dense else None
    counts, cols, vals = [], [], []
    bar = progress_bar(progress, math.ceil(n / rows), "jaccard distances")
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        s = min_sums(v, index, r0, r1, n, _MAX_PAIRS)
        local = torch.arange(r1 - r0, device=dev)
        if out is not None:
            d = _to_distance(s)
            # Each row of V sums to 1, so s(i, i) = 1 and d(i, i) = 0 up to rounding: store the exact 0.
            d[local, local + r0] = 0.0
            out[r0:r1] = d
        else:
            # Pairs that share no column have s = 0, d = 1 >= limit: only the touched entries are candidates.
            r, c = torch.nonzero(s, as_tuple=True)
            d = _to_distance(s[r, c])
            d[r + r0 == c] = 0.0
            keep = d < limit
            r, c, d = r[keep], c[keep], d[keep]
            # Sort each row by distance, ties by column (nonzero lists columns ascending; the sort is stable): one
            # sort of int64 keys (row << 32 | float32 bits; non-negative floats order like their bit patterns).
            key = d.view(torch.int32).to(torch.long).clamp_(min=0).add_(r << 32)
            if dev.type == "cpu":  # numpy's stable sort (timsort) uses the runs: keys are already grouped by row
                order = torch.from_numpy(np.argsort(key.numpy(), kind="stable"))
            else:
                order = torch.sort(key, stable=True).indices
            del key
            counts.append(torch.bincount(r, minlength=r1 - r0).cpu().numpy())
            cols.append(c[order].to(torch.int32).cpu().numpy())
            vals.append(d[order].cpu().numpy())
        bar.update(1)
    bar.close()
    if out is not None:
        return out
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    nnz = int(indptr[-1])
    # Copied chunk by chunk, freeing each chunk: the OS commits the pages of np.empty only when written, so the
    # resident peak stays near one copy of the graph (a concatenation would hold two).
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    at = 0
    while cols:
        c, d = cols.pop(0), vals.pop(0)
        indices[at : at + c.shape[0]] = c
        data[at : at + c.shape[0]] = d
        at += c.shape[0]
        del c, d
    if nnz < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    # The (data, indices, indptr) constructor keeps explicit zeros and the given order within rows.
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, n))
