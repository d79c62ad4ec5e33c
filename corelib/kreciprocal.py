"""The k-reciprocal encoding (Zhong et al., CVPR 2017), written once for its two users: test-time re-ranking
(:mod:`corelib.evaluation.rerank`) and the Jaccard distance that SpCL / Cluster Contrast cluster with
(:mod:`corelib.cluster.jaccard`).

Each user finds the nearest neighbours itself (they rank by different distances and break ties differently) and
passes ``rank``: (N, >= width) int64, row i = i first, then its nearest images by ascending distance. From there on
the algorithm is this module's, sparse and in row chunks, on any device:

1. :func:`reciprocal_mask`: R(i, k) = {j in rank[i, :k+1] : i in rank[j, :k+1]}.
2. :func:`encode`: E(i) = R(i, k1), united with every R(j, round(k1/2)), j in R(i, k1), that has more than 2/3 of
   its members in R(i, k1); V[i, E(i)] = the caller's Gaussian weights of the distances d(i, E(i)) (rows sum to 1);
   V is zero elsewhere (CSR :class:`~corelib.sparse_rows.SparseRows`).
3. :func:`query_expansion`: V[i] <- mean of the rows V[rank[i, :k2]] (local query expansion).
4. :func:`column_index` and :func:`min_sums`: s(i, j) = sum_k min(V[i, k], V[j, k]) through an inverted index over
   V's columns (only pairs that share a column are visited), one dense (rows x width) block at a time;
   :func:`jaccard_from_min_sums`: d_J = 1 - s / (2 - s).

The chunk sizes are the callers' (their module constants bound memory and are what their tests shrink): a boolean
mask does not depend on them, and the float results are computed in the same order as each caller did before this
module existed, so no distance moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .sparse_rows import SparseRows, expand_segments, progress_bar, sparse_rows, unique_rows

__all__ = ["ColumnIndex", "column_index", "encode", "jaccard_from_min_sums", "kept_or_computed", "min_sums",
           "pair_dots", "query_expansion", "reciprocal_mask"]


def reciprocal_mask(rank: torch.Tensor, width: int, max_elems: int) -> torch.Tensor:
    """(N, width) bool: is rank[i, m] in R(i, width - 1), i.e. is i among rank[rank[i, m], :width]?

    Row chunks hold at most ``max_elems`` elements of the (rows x width x width) membership test.
    """
    n = rank.shape[0]
    fwd = rank[:, :width].contiguous()
    out = torch.empty(fwd.shape, dtype=torch.bool, device=rank.device)
    step = max(1, max_elems // (width * width))
    for c0 in range(0, n, step):
        c1 = min(c0 + step, n)
        own = torch.arange(c0, c1, device=rank.device).view(-1, 1, 1)
        out[c0:c1] = (fwd[fwd[c0:c1]] == own).any(-1)  # (C, width, width) -> (C, width)
    return out


def encode(rank: torch.Tensor, k1: int, width: int,
           weights: Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor], *,
           max_elems: int, progress: bool, desc: str) -> SparseRows:
    """Sparse V: row i holds ``weights`` over the expanded k-reciprocal set E(i).

    Args:
        rank: (N, >= width) int64 neighbour lists, i first.
        k1: size of the k-reciprocal neighbourhood; the expansion uses R(j, round(k1/2)) (round half to even, like
            np.around: k1 = 5 -> 2).
        width: columns of ``rank`` that R(i, k1) reads, rank[i, :k1+1]: k1 + 1, or k1 where the caller keeps only
            k1 columns (SpCL's faiss ``search(x, k1)``, whose [:k1+1] slice is [:k1]).
        weights: ``weights(c0, c1, cand, valid)`` -> (C, W) float32 weights of rows c0:c1 over the padded column
            lists ``cand`` (ascending, padded with N; ``valid`` marks the real entries), each row summing to 1 over
            its valid entries; padding entries are ignored.
        max_elems: elements of one (rows x width x wh x width) membership test, wh = round(k1/2) + 1 capped at
            width; it sets the rows per chunk (and the padded width W of each chunk's lists).
        progress, desc: tqdm progress bar and its label.
    """
    n = rank.shape[0]
    wh = min(round(k1 / 2) + 1, width)  # columns of rank[:, :round(k1/2)+1]
    rec1 = reciprocal_mask(rank, width, max_elems)
    rech = reciprocal_mask(rank, wh, max_elems)
    rank_h = rank[:, :wh].contiguous()
    counts, cols, vals = [], [], []
    step = max(1, max_elems // (width * wh * width))
    bar = progress_bar(progress, math.ceil(n / step), desc)
    for c0 in range(0, n, step):
        c1 = min(c0 + step, n)
        r = rank[c0:c1, :width]  # (C, width): candidates j of R(i, k1)
        m1 = rec1[c0:c1]
        r_i = torch.where(m1, r, -1)  # R(i, k1), padded with -1
        rj = rank_h[r]  # (C, width, wh): forward lists of each candidate
        mj = rech[r]  # which of those are in R(j, round(k1/2))
        # |R(j) & R(i, k1)|: both sets have distinct members, so count the members of R(j) found in R(i, k1)
        inter = (torch.where(mj, rj, -2).unsqueeze(-1) == r_i[:, None, None, :]).any(-1).sum(-1)
        # |R(j) & R(i, k1)| > 2/3 |R(j)| in integers (3a > 2b), free of float rounding at the boundary (equal to the
        # published float test for every size up to 2000)
        take = m1 & (3 * inter > 2 * mj.sum(-1))
        cand = torch.cat([torch.where(m1, r, n), torch.where(take.unsqueeze(-1) & mj, rj, n).flatten(1)], 1)
        cand = unique_rows(cand, n)  # (C, W) ascending, padded with n
        valid = cand < n
        w = weights(c0, c1, cand, valid)
        counts.append(valid.sum(1))
        cols.append(cand[valid])
        vals.append(w[valid])
        bar.update(1)
    bar.close()
    return sparse_rows(torch.cat(counts), torch.cat(cols), torch.cat(vals))


def kept_or_computed(rank: torch.Tensor, kept: torch.Tensor, cand: torch.Tensor, valid: torch.Tensor, r0: int,
                     compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Values of the pairs (r0 + i, cand[i, m]) for a padded (C, W) column list (padding entries: arbitrary).

    Most members of E(i) are among i's nearest, whose values (distances or dot products) the neighbour pass kept
    in ``kept`` beside ``rank`` (rows r0:r0+C of both); they are looked up by binary search in the sorted rank row.
    Only the others are computed, by ``compute(rows, columns)`` on index vectors.
    """
    srt, perm = rank.sort(dim=1)
    pos = torch.searchsorted(srt, cand.contiguous()).clamp_(max=rank.shape[1] - 1)
    found = srt.gather(1, pos) == cand
    out = kept.gather(1, perm.gather(1, pos))
    missing = valid & ~found
    if bool(missing.any()):
        i, m = missing.nonzero(as_tuple=True)
        out[i, m] = compute(i + r0, cand[i, m])
    return out


def pair_dots(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, max_elems: int) -> torch.Tensor:
    """<x[a[p]], x[b[p]]> for index vectors a, b, gathering at most ``max_elems`` feature elements at once."""
    p, dim = a.shape[0], x.shape[1]
    step = max(1, min(p, max_elems // dim))
    # Reused buffers: a fresh large allocation per slice costs more in page faults than the copy.
    buf_a = torch.empty((step, dim), device=x.device)
    buf_b = torch.empty((step, dim), device=x.device)
    out = torch.empty(p, device=x.device)
    for s0 in range(0, p, step):
        s1 = min(s0 + step, p)
        xa = torch.index_select(x, 0, a[s0:s1], out=buf_a[: s1 - s0])
        xb = torch.index_select(x, 0, b[s0:s1], out=buf_b[: s1 - s0])
        torch.sum(xa.mul_(xb), 1, out=out[s0:s1])
    return out


def query_expansion(v: SparseRows, rank: torch.Tensor, k2: int, *, rows_per_chunk: int,
                    stable: bool) -> SparseRows:
    """Sparse V_qe[i] = mean of the rows V[rank[i, :k2]] (rank[i, 0] is i); k2 at most rank's columns.

    Equal (row, column) entries are summed in the order a sort of their keys leaves them: ``stable`` gives the order
    of rank[i, :k2] whatever the chunk; otherwise torch's default sort, whose order depends on the chunk (re-ranking
    keeps it so that no re-ranked distance moves).
    """
    n = rank.shape[0]
    nnz = v.rowptr[1:] - v.rowptr[:-1]
    counts, cols, vals = [], [], []
    for c0 in range(0, n, rows_per_chunk):
        c1 = min(c0 + rows_per_chunk, n)
        src = rank[c0:c1, :k2].reshape(-1)  # k2 source rows per output row
        seg, pos = expand_segments(v.rowptr[src], nnz[src])
        # Key (output row, column): after sorting, equal keys are adjacent and are summed.
        key, order = torch.sort(torch.div(seg, k2, rounding_mode="floor") * n + v.col[pos], stable=stable)
        first = torch.ones_like(key, dtype=torch.bool)
        first[1:] = key[1:] != key[:-1]
        group = torch.cumsum(first, 0) - 1
        uniq = key[first]
        summed = torch.zeros(uniq.shape[0], device=v.val.device).index_add_(0, group, v.val[pos[order]])
        counts.append(torch.bincount(torch.div(uniq, n, rounding_mode="floor"), minlength=c1 - c0))
        cols.append(uniq % n)
        vals.append(summed.div_(k2))
    return sparse_rows(torch.cat(counts), torch.cat(cols), torch.cat(vals))


class ColumnIndex(NamedTuple):
    """Inverted index of rows of V: column k's entries are colptr[k]:colptr[k+1] (rows ascending)."""

    colptr: torch.Tensor  # (N + 1,) int64
    row: torch.Tensor  # (nnz,) int64: row of each entry, counted from the first indexed row
    val: torch.Tensor  # (nnz,) float32


def column_index(v: SparseRows, first_row: int = 0) -> ColumnIndex:
    """Transpose rows first_row: of V (all of them, or re-ranking's gallery) into an inverted index by column."""
    n = v.rowptr.shape[0] - 1
    e0 = int(v.rowptr[first_row])
    col = v.col[e0:]
    row = torch.repeat_interleave(torch.arange(n - first_row, device=col.device),
                                  v.rowptr[first_row + 1 :] - v.rowptr[first_row:-1], output_size=col.shape[0])
    order = torch.argsort(col, stable=True)
    colptr = torch.zeros(n + 1, dtype=torch.long, device=col.device)
    torch.cumsum(torch.bincount(col, minlength=n), 0, out=colptr[1:])
    return ColumnIndex(colptr, row[order], v.val[e0:][order])


def min_sums(v: SparseRows, index: ColumnIndex, r0: int, r1: int, width: int, max_pairs: int) -> torch.Tensor:
    """s(i, j) = sum_k min(V[i, k], V[j, k]) for rows r0:r1 and the ``width`` indexed rows j, a dense block.

    Only (row entry, indexed entry) pairs that share a column contribute; they are listed through the inverted index
    in batches of at most ``max_pairs`` and scatter-added into the block (the published temp_min).
    """
    rows = r1 - r0
    out = torch.zeros(rows * width, device=v.val.device)
    e0, e1 = int(v.rowptr[r0]), int(v.rowptr[r1])
    i_row = torch.repeat_interleave(torch.arange(rows, device=out.device), v.rowptr[r0 + 1 : r1 + 1] - v.rowptr[r0:r1],
                                    output_size=e1 - e0)
    i_col, i_val = v.col[e0:e1], v.val[e0:e1]
    n_pairs = index.colptr[i_col + 1] - index.colptr[i_col]
    ends = torch.cumsum(n_pairs, 0)
    b0 = 0
    while b0 < i_col.shape[0]:
        done = int(ends[b0 - 1]) if b0 else 0
        b1 = int(torch.searchsorted(ends, done + max_pairs, right=True))
        b1 = max(b1, b0 + 1)  # an entry whose column alone exceeds the cap goes on its own
        seg, pos = expand_segments(index.colptr[i_col[b0:b1]], n_pairs[b0:b1])
        seg += b0
        out.index_add_(0, i_row[seg] * width + index.row[pos], torch.minimum(i_val[seg], index.val[pos]))
        b0 = b1
    return out.view(rows, width)


def jaccard_from_min_sums(s: torch.Tensor) -> torch.Tensor:
    """d_J = 1 - s / (2 - s), in place (each row of V sums to 1, so s lies in [0, 1] up to rounding)."""
    return s.div_(torch.rsub(s, 2.0)).neg_().add_(1.0)
