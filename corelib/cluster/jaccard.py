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
``scipy.sparse.csr_matrix`` of the distances below ``max_distance`` instead of a dense result.

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
from typing import NamedTuple, Optional, Union

import numpy as np
import scipy.sparse
import torch

from ..array_checks import check_features
from ..errors import InvalidInputError, InvalidTypeError
from ..sparse_rows import SparseRows, expand_segments, progress_bar, sparse_rows, unique_rows

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
    v = _encode(x, rank, dots, k1, progress)  # steps 2-4
    del dots
    k2e = min(k2, k1)  # initial_rank[i, :k2] of a k1-column array
    if k2e > 1:
        v = _query_expansion(v, rank, k2e)  # step 5
    del rank
    index = _column_index(v, n)
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


def _reciprocal(rank: torch.Tensor, width: int) -> torch.Tensor:
    """Step 2 mask (N, width): is rank[i, m] in R(i, width - 1), i.e. is i in rank[rank[i, m], :width]?"""
    n = rank.shape[0]
    fwd = rank[:, :width].contiguous()
    out = torch.empty(fwd.shape, dtype=torch.bool, device=rank.device)
    step = max(1, _EXPAND_ELEMS // (width * width))
    for c0 in range(0, n, step):
        c1 = min(c0 + step, n)
        own = torch.arange(c0, c1, device=rank.device).view(-1, 1, 1)
        out[c0:c1] = (fwd[fwd[c0:c1]] == own).any(-1)  # (C, width, width) -> (C, width)
    return out


def _encode(x: torch.Tensor, rank: torch.Tensor, dots: torch.Tensor, k1: int, progress: bool) -> SparseRows:
    """Steps 2-4: sparse V, row i = softmax(-(2 - 2 <f_i, f_j>)) over j in the expanded set E(i)."""
    n = rank.shape[0]
    half = round(k1 / 2)  # Python's round and np.around both round half to even: k1 = 5 -> 2
    wh = min(half + 1, k1)  # columns of initial_rank[:, :half+1]
    rec1 = _reciprocal(rank, k1)  # initial_rank[:, :k1+1] is all k1 columns
    rech = _reciprocal(rank, wh)
    rank_h = rank[:, :wh].contiguous()
    counts, cols, vals = [], [], []
    step = max(1, _EXPAND_ELEMS // (k1 * wh * k1))
    bar = progress_bar(progress, math.ceil(n / step), "jaccard encoding")
    for c0 in range(0, n, step):
        c1 = min(c0 + step, n)
        r = rank[c0:c1]  # (C, k1): candidates j of R(i, k1)
        m1 = rec1[c0:c1]
        r_i = torch.where(m1, r, -1)  # R(i, k1), padded with -1
        rj = rank_h[r]  # (C, k1, wh): forward lists of each candidate
        mj = rech[r]  # which of those are in R(j, half)
        # |R(j, half) & R(i, k1)|: both sets have distinct members, so count the members of R(j) found in R(i)
        inter = (torch.where(mj, rj, -2).unsqueeze(-1) == r_i[:, None, None, :]).any(-1).sum(-1)
        # inter > 2/3 |R(j)|, in integers (3a > 2b); equal to the published float test for every size up to 2000
        take = m1 & (3 * inter > 2 * mj.sum(-1))
        cand = torch.cat([torch.where(m1, r, n), torch.where(take.unsqueeze(-1) & mj, rj, n).flatten(1)], 1)
        cand = unique_rows(cand, n)  # (C, W) ascending, padded with n
        valid = cand < n
        dot = _expanded_dots(x, rank[c0:c1], dots[c0:c1], cand, valid, c0)
        # softmax(-dist) with dist = 2 - 2 <f_i, f_j>, exactly the published expression; padding gets weight 0
        logits = torch.rsub(dot, 2.0, alpha=2.0).neg_().masked_fill_(~valid, -math.inf)
        w = torch.softmax(logits, dim=1)
        counts.append(valid.sum(1))
        cols.append(cand[valid])
        vals.append(w[valid])
        bar.update(1)
    bar.close()
    return sparse_rows(torch.cat(counts), torch.cat(cols), torch.cat(vals))


def _expanded_dots(x: torch.Tensor, rank: torch.Tensor, dots: torch.Tensor, cand: torch.Tensor, valid: torch.Tensor,
                   r0: int) -> torch.Tensor:
    """<f_(r0+i), f_cand[i, m]> for a padded (C, W) column list.

    Most members of E(i) are among i's k1 nearest, whose dot products the neighbour pass kept (looked up by binary
    search in the sorted rank row); only the others are computed from the features.
    """
    srt, perm = rank.sort(dim=1)
    pos = torch.searchsorted(srt, cand.contiguous()).clamp_(max=rank.shape[1] - 1)
    found = srt.gather(1, pos) == cand
    out = dots.gather(1, perm.gather(1, pos))
    missing = valid & ~found
    if bool(missing.any()):
        i, m = missing.nonzero(as_tuple=True)
        out[i, m] = _pair_dots(x, i + r0, cand[i, m])
    return out


def _pair_dots(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<x[a[p]], x[b[p]]> for index vectors a, b, gathering feature rows in slices."""
    p, dim = a.shape[0], x.shape[1]
    step = max(1, min(p, _GATHER_ELEMS // dim))
    out = torch.empty(p, device=x.device)
    for s0 in range(0, p, step):
        s1 = min(s0 + step, p)
        torch.sum(x[a[s0:s1]].mul_(x[b[s0:s1]]), 1, out=out[s0:s1])
    return out


def _query_expansion(v: SparseRows, rank: torch.Tensor, k2: int) -> SparseRows:
    """Step 5: sparse V_qe[i] = mean of the rows V[rank[i, :k2]] (rank[i, 0] is i)."""
    n = rank.shape[0]
    nnz = v.rowptr[1:] - v.rowptr[:-1]
    # Rows per chunk from the widest possible chunk: k2 source rows of at most max(nnz) entries each.
    step = max(1, _QE_ENTRIES // (k2 * max(1, int(nnz.max()))))
    counts, cols, vals = [], [], []
    for c0 in range(0, n, step):
        c1 = min(c0 + step, n)
        src = rank[c0:c1, :k2].reshape(-1)  # k2 source rows per output row
        seg, pos = expand_segments(v.rowptr[src], nnz[src])
        # Key (output row, column): after sorting, equal keys are adjacent and are summed (a stable sort: in the order
        # of rank[i, :k2], whatever the chunk).
        key, order = torch.sort(torch.div(seg, k2, rounding_mode="floor") * n + v.col[pos], stable=True)
        first = torch.ones_like(key, dtype=torch.bool)
        first[1:] = key[1:] != key[:-1]
        group = torch.cumsum(first, 0) - 1
        uniq = key[first]
        summed = torch.zeros(uniq.shape[0], device=v.val.device).index_add_(0, group, v.val[pos[order]])
        counts.append(torch.bincount(torch.div(uniq, n, rounding_mode="floor"), minlength=c1 - c0))
        cols.append(uniq % n)
        vals.append(summed.div_(k2))
    return sparse_rows(torch.cat(counts), torch.cat(cols), torch.cat(vals))


class _ColumnIndex(NamedTuple):
    """Inverted index of V: column k's entries are colptr[k]:colptr[k+1] (rows ascending)."""

    colptr: torch.Tensor  # (N + 1,) int64
    row: torch.Tensor  # (nnz,) int64
    val: torch.Tensor  # (nnz,) float32


def _column_index(v: SparseRows, n: int) -> _ColumnIndex:
    """Transpose V into an inverted index by column (the published code's invIndex)."""
    row = torch.repeat_interleave(torch.arange(n, device=v.col.device), v.rowptr[1:] - v.rowptr[:-1],
                                  output_size=v.col.shape[0])
    order = torch.argsort(v.col, stable=True)
    colptr = torch.zeros(n + 1, dtype=torch.long, device=v.col.device)
    torch.cumsum(torch.bincount(v.col, minlength=n), 0, out=colptr[1:])
    return _ColumnIndex(colptr, row[order], v.val[order])


def _min_sums(v: SparseRows, index: _ColumnIndex, r0: int, r1: int, n: int) -> torch.Tensor:
    """s(i, j) = sum_k min(V[i, k], V[j, k]) for rows r0:r1 and all j, as a dense (rows, N) block.

    Only (row entry, column entry) pairs that share a column contribute; they are listed through the inverted index
    in batches of at most _MAX_PAIRS and scatter-added into the block (the published temp_min).
    """
    rows = r1 - r0
    out = torch.zeros(rows * n, device=v.val.device)
    e0, e1 = int(v.rowptr[r0]), int(v.rowptr[r1])
    i_row = torch.repeat_interleave(torch.arange(rows, device=out.device), v.rowptr[r0 + 1 : r1 + 1] - v.rowptr[r0:r1],
                                    output_size=e1 - e0)
    i_col, i_val = v.col[e0:e1], v.val[e0:e1]
    n_pairs = index.colptr[i_col + 1] - index.colptr[i_col]
    ends = torch.cumsum(n_pairs, 0)
    b0 = 0
    while b0 < i_col.shape[0]:
        done = int(ends[b0 - 1]) if b0 else 0
        b1 = int(torch.searchsorted(ends, done + _MAX_PAIRS, right=True))
        b1 = max(b1, b0 + 1)  # an entry whose column alone exceeds the cap goes on its own
        seg, pos = expand_segments(index.colptr[i_col[b0:b1]], n_pairs[b0:b1])
        seg += b0
        out.index_add_(0, i_row[seg] * n + index.row[pos], torch.minimum(i_val[seg], index.val[pos]))
        b0 = b1
    return out.view(rows, n)


def _to_distance(s: torch.Tensor) -> torch.Tensor:
    """d = 1 - s / (2 - s), negatives set to 0 (in place)."""
    return s.div_(torch.rsub(s, 2.0)).neg_().add_(1.0).clamp_(min=0.0)


def _jaccard(v: SparseRows, index: _ColumnIndex, n: int, rows: int, dense: bool, limit: float, progress: bool
             ) -> Union[torch.Tensor, scipy.sparse.csr_matrix]:
    """Step 6, row chunk by row chunk: the dense (N, N) tensor or the sparse graph of distances < limit."""
    dev = v.val.device
    out = torch.empty((n, n), device=dev) if dense else None
    counts, cols, vals = [], [], []
    bar = progress_bar(progress, math.ceil(n / rows), "jaccard distances")
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        s = _min_sums(v, index, r0, r1, n)
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
