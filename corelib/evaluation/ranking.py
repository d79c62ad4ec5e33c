"""Exact, protocol-explicit and memory-bounded retrieval metrics: mAP, CMC and mINP.

The peers argsort the whole query x gallery matrix in host memory (MSMT17: ~19 GB). Here the
queries are processed in chunks on the chosen device, and no gallery list is ever sorted: AP, CMC
and mINP only need the *rank of every positive* in the junk-filtered ranking, and that rank is

    rank(p_k) = k + #{valid negatives ranked before p_k}

where p_1..p_P are the positives sorted by (distance, gallery index). A negative n precedes p_k
exactly when fewer than k positives precede n, so one ``searchsorted`` of every negative distance
into the (few) sorted positive distances, a histogram and a cumulative sum give all ranks: one
pass over the chunk instead of a sort.

Ranking order: ascending distance; exact ties are broken by gallery index (the order of a *stable*
sort), the same rule as the reference implementation in the tests.

Protocols (recorded in every result):

- ``market``: Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP, VeRi-776. For each query, gallery
  images with the same pid *and* the same camid are junk (removed from its ranking), as are gallery
  images with a negative pid; distractors (e.g. Market's ``0000``) are ordinary negatives.
- ``veriwild``: the same rule with the Test3000/5000/10000 lists (it also removes the query itself
  when the gallery list contains it).
- ``vehicleid``: no cameras, no same-camera filtering (only negative pids are junk); the gallery is
  one random image per identity, drawn 10 times with seeds 0..9 (:func:`evaluate_vehicleid`).

Queries without any valid positive are skipped and counted in ``num_skipped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from ..array_checks import check_features, integer_ids
from ..errors import InvalidInputError
from ..precision import fast_bf16  # noqa: F401  (re-exported by corelib.evaluation)

PROTOCOLS = ("market", "veriwild", "vehicleid")
CMC_RANKS = (1, 5, 10, 20)
ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[int]]


# --------------------------------------------------------------------------------------------
# results


@dataclass
class RankingResult:
    """Metrics of one evaluation, with the per-query values for analysis."""

    protocol: str
    mAP: float
    mINP: float
    cmc: np.ndarray  # cmc[r - 1] = fraction of valid queries whose first match is within rank r
    ap: np.ndarray  # per query; NaN for skipped queries
    inp: np.ndarray  # per query INP = P / rank of the last positive; NaN for skipped queries
    first_hit: np.ndarray  # per query 1-based rank of the first positive; 0 for skipped queries
    num_positives: np.ndarray  # per query number of valid positives
    num_queries: int
    num_skipped: int
    metric: str = "euclidean"
    extras: dict = field(default_factory=dict)
    precision: str = "float32"  # how the distances were computed (evaluate_ranking's precision); not a metric

    def rank(self, r: int) -> float:
        """CMC at rank ``r`` (1-based)."""
        return float(self.cmc[min(r, len(self.cmc)) - 1])

    @property
    def rank1(self) -> float:
        return self.rank(1)

    def to_dict(self) -> dict:
        """The headline numbers, named, with the protocol (what run records store)."""
        out = {"protocol": self.protocol, "metric": self.metric, "mAP": self.mAP, "mINP": self.mINP}
        out.update({f"rank{r}": self.rank(r) for r in CMC_RANKS})
        out.update({"num_queries": self.num_queries, "num_skipped": self.num_skipped})
        out.update(self.extras)
        return out

    def __str__(self) -> str:
        ranks = " ".join(f"R{r} {100 * self.rank(r):.1f}" for r in CMC_RANKS)
        return (f"[{self.protocol}] mAP {100 * self.mAP:.1f}  {ranks}  mINP {100 * self.mINP:.1f}  "
                f"({self.num_queries - self.num_skipped} queries, {self.num_skipped} skipped)")


# --------------------------------------------------------------------------------------------
# distances


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distances between the rows of ``x`` (n, d) and ``y`` (m, d) as an (n, m) float32 matrix.

    ``euclidean`` is the *squared* Euclidean distance (the ranking of ``||x - y||``), computed as
    ``|x|^2 + |y|^2 - 2 x.y`` in one matrix product; on L2-normalised descriptors it equals
    ``2 - 2 cos``. ``cosine`` is ``1 - cos`` (rows normalised first).
    """
    check_features(x, "x")
    check_features(y, "y")
    x, y = x.float(), y.float()
    if metric == "euclidean":
        d = torch.addmm((x * x).sum(1, keepdim=True), x, y.t(), alpha=-2.0)
        d += (y * y).sum(1)[None, :]
        return d.clamp_min_(0.0)
    if metric == "cosine":
        xn = torch.nn.functional.normalize(x, dim=1)
        yn = torch.nn.functional.normalize(y, dim=1)
        return 1.0 - xn @ yn.t()
    raise InvalidInputError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")


# --------------------------------------------------------------------------------------------
# the core: ranks of the positives in one chunk of queries


class _GalleryIndex:
    """Gallery columns grouped by pid, so that the positives of a query are found without a pass
    over the whole (chunk x gallery) block."""

    def __init__(self, g_pids: torch.Tensor) -> None:
        order = torch.argsort(g_pids, stable=True)  # stable: columns stay ascending within a pid
        self.order = order
        self.sorted_pids = g_pids[order].contiguous()

    def positives(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) pairs of equal pids; columns ascending within each row."""
        start = torch.searchsorted(self.sorted_pids, q_pids, right=False)
        count = torch.searchsorted(self.sorted_pids, q_pids, right=True) - start
        rows = torch.repeat_interleave(torch.arange(len(q_pids), device=q_pids.device), count)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        offset = torch.arange(rows.numel(), device=q_pids.device) - first
        return rows, self.order[torch.repeat_interleave(start, count) + offset]


def _order_keys(d: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered like (row, d): float32 bits mapped to an order-preserving uint32."""
    bits = (d + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0 (they compare equal)
    u = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64) + 2**31
    return (rows.to(torch.int64) << 32) | u


_SPARSE_SHARE = 0.15  # above this share of selected entries, the dense search is cheaper


def _tie_corrected(c, tr, tc, d, pos_d, pos_i):
    """c(n) for negatives tied in distance with positives: add the tied positives of lower index."""
    p_max = pos_d.shape[1]
    extra = torch.zeros_like(c)
    run = c.clone()
    alive = torch.ones_like(c, dtype=torch.bool)
    while bool(alive.any()):  # walk along the run of positives with the same distance
        idx = run.clamp_max(p_max - 1)
        same = alive & (run < p_max) & (pos_d[tr, idx] == d)
        extra += (same & (pos_i[tr, idx] < tc)).long()
        alive = same
        run += 1
    return c + extra


def _histogram_dense(dist, q_pids, g_pids, pos_d, pos_i):
    """Per row, how many valid negatives have c = 0..P: one batched search over the whole chunk."""
    b, p_max = pos_d.shape
    neg = (q_pids[:, None] != g_pids[None, :]) & (g_pids >= 0)[None, :]
    c = torch.searchsorted(pos_d, dist.contiguous(), right=False)
    nxt = pos_d.gather(1, c.clamp_max(p_max - 1))
    tr, tc = ((nxt == dist) & (c < p_max) & neg).nonzero(as_tuple=True)
    if tr.numel():
        c[tr, tc] = _tie_corrected(c[tr, tc], tr, tc, dist[tr, tc], pos_d, pos_i)
    hist = torch.zeros(b, p_max + 1, device=dist.device, dtype=dist.dtype)
    return hist.scatter_add_(1, c, neg.to(dist.dtype)).round_().long()


def _valid_positives(b, q_pids, q_cams, g_cams, g_index):
    """(rows, cols) of each query's valid positives (same pid, other camera), and their count per row."""
    rows, cols = g_index.positives(q_pids)
    if q_cams is not None:  # same pid and same camera: junk, not a positive
        keep = q_cams[rows] != g_cams[cols]
        rows, cols = rows[keep], cols[keep]
    return rows, cols, torch.bincount(rows, minlength=b)


def _sorted_positives(b, g, rows, cols, pd, num_pos, p_max):
    """(B, Pmax) tables of the positives' distances and columns, sorted by (distance, gallery index).

    The columns come ascending within a row, and two stable sorts (by distance, then by row) keep
    that order among equal distances. Padding: distance +inf, column ``g``.
    """
    dev = pd.device
    o = torch.argsort(pd, stable=True)
    o = o[torch.argsort(rows[o], stable=True)]
    rows, cols, pd = rows[o], cols[o], pd[o]
    start = torch.cumsum(num_pos, 0) - num_pos
    slot = torch.arange(rows.numel(), device=dev) - start[rows]
    pos_d = torch.full((b, p_max), float("inf"), device=dev, dtype=pd.dtype)
    pos_i = torch.full((b, p_max), g, device=dev, dtype=torch.long)
    pos_d[rows, slot] = pd
    pos_i[rows, slot] = cols
    return pos_d, pos_i


def _ranks_from_histogram(hist, num_pos, p_max):
    """Ranks of p_1..p_P from the per-row histogram of c(n) over the valid negatives."""
    # negatives before p_k are those with c <= k - 1: a cumulative sum of the histogram
    neg_before = torch.cumsum(hist, dim=1)[:, :p_max]
    k = torch.arange(1, p_max + 1, device=hist.device)[None, :]
    return (k + neg_before) * (k <= num_pos[:, None])


def _positive_ranks(
    dist: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_cams: Optional[torch.Tensor],
    g_cams: Optional[torch.Tensor],
    g_index: _GalleryIndex,
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks of the valid positives of each query in a (B, G) chunk.

    Returns ``(ranks, num_pos)``: ``ranks`` is (B, Pmax) with the ranks of p_1..p_P in ascending
    order (padded with 0), ``num_pos`` is (B,). When the entries before each query's last positive
    are few (a good model), two dense passes select them and everything else works on them;
    otherwise one batched search over the whole chunk counts the negatives (``_histogram_dense``).
    """
    b, g = dist.shape
    dev = dist.device
    rows, cols, num_pos = _valid_positives(b, q_pids, q_cams, g_cams, g_index)
    p_max = int(num_pos.max()) if rows.numel() else 0
    if p_max == 0:
        return torch.zeros(b, 0, dtype=torch.long, device=dev), num_pos
    pos_d, pos_i = _sorted_positives(b, g, rows, cols, dist[rows, cols], num_pos, p_max)

    # Only negatives up to the last positive can precede a positive (c < P): select them. For a
    # good model they are a few percent of the chunk; when they are many (a weak model), one
    # batched searchsorted over the whole chunk is cheaper than working on the selection.
    last = torch.where(num_pos > 0, pos_d.gather(1, (num_pos - 1).clamp_min(0)[:, None])[:, 0],
                       torch.full_like(num_pos, float("-inf"), dtype=dist.dtype))
    before_last = dist <= last[:, None]
    if int(torch.count_nonzero(before_last)) > _SPARSE_SHARE * b * g:  # count_nonzero: no int64 copy of the mask
        hist = _histogram_dense(dist, q_pids, g_pids, pos_d, pos_i)
    else:
        nr, nc = before_last.nonzero(as_tuple=True)
        keep = (g_pids[nc] != q_pids[nr]) & (g_pids[nc] >= 0)  # negatives only: no positive, no junk
        nr, nc = nr[keep], nc[keep]
        dn = dist[nr, nc]
        # c(n) = number of positives at a strictly smaller distance ...
        pos_keys = _order_keys(pos_d.reshape(-1), torch.arange(b, device=dev).repeat_interleave(p_max))
        c = torch.searchsorted(pos_keys, _order_keys(dn, nr), right=False) - nr * p_max
        # ... plus the positives at the same distance with a lower gallery index (rare)
        ties = torch.nonzero((pos_d[nr, c.clamp_max(p_max - 1)] == dn) & (c < p_max))[:, 0]
        if ties.numel():
            c[ties] = _tie_corrected(c[ties], nr[ties], nc[ties], dn[ties], pos_d, pos_i)
        hist = torch.bincount(nr * (p_max + 1) + c, minlength=b * (p_max + 1)).view(b, p_max + 1)

    return _ranks_from_histogram(hist, num_pos, p_max), num_pos


def _as_tensor(x: Optional[ArrayLike], device: torch.device, name: str) -> Optional[torch.Tensor]:
    """Ids (pids or camids) as a long tensor on ``device``; a non-integer id is refused, not truncated."""
    if x is None:
        return None
    ids = integer_ids(x, name)
    if ids.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional, got shape {tuple(ids.shape)}")
    return torch.from_numpy(ids).to(device)


def _check_protocol(protocol: str, q_cams, g_cams) -> bool:
    """Whether the protocol filters same-camera matches (and has the camids to do it)."""
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    if protocol == "vehicleid":
        return False
    if q_cams is None or g_cams is None:
        raise InvalidInputError(
            f"protocol {protocol!r} removes same-id same-camera matches and needs query and gallery camids; "
            f"for a dataset without cameras (e.g. VehicleID) use protocol='vehicleid'"
        )
    return True


def _check_lengths(q_pids, g_pids, q_cams, g_cams) -> None:
    """One pid (and camid) per query and per gallery item, and neither side empty; otherwise
    camids past the end were silently ignored or ran into an ``IndexError`` deep in the ranking."""
    nq, ng = len(q_pids), len(g_pids)
    if nq == 0 or ng == 0:
        raise InvalidInputError(f"nothing to evaluate: {nq} query and {ng} gallery item(s); check that the query "
                                f"and gallery folders hold images")
    for name, cams, n, side in (("query_camids", q_cams, nq, "query_pids"), ("gallery_camids", g_cams, ng, "gallery_pids")):
        if cams is not None and len(cams) != n:
            raise InvalidInputError(f"{name} has {len(cams)} entries but {side} has {n}: one camera id per image")


def default_chunk(num_gallery: int, device: torch.device) -> int:
    """Queries per chunk so that one (chunk x gallery) block holds about 32M (CPU) or 64M (GPU) values."""
    budget = 2**26 if device.type == "cuda" else 2**25  # CPU: >= 400 rows at MSMT17, where the product runs at full rate
    return max(1, min(4096, budget // max(1, num_gallery)))


class _Labels:
    """The pids and camids of one evaluation, checked once, as tensors on the chunks' device."""

    def __init__(self, query_pids, gallery_pids, query_camids, gallery_camids, protocol: str) -> None:
        self.use_cams = _check_protocol(protocol, query_camids, gallery_camids)
        _check_lengths(query_pids, gallery_pids, query_camids if self.use_cams else None,
                       gallery_camids if self.use_cams else None)
        self.raw = (query_pids, gallery_pids, query_camids, gallery_camids)
        self.num_queries, self.num_gallery = len(query_pids), len(gallery_pids)
        self.device = None

    def on(self, dev: torch.device) -> "_Labels":
        if self.device != dev:
            query_pids, gallery_pids, query_camids, gallery_camids = self.raw
            self.g_pids = _as_tensor(gallery_pids, dev, "gallery_pids")
            self.g_cams = _as_tensor(gallery_camids, dev, "gallery_camids") if self.use_cams else None
            self.g_index = _GalleryIndex(self.g_pids)
            self.q_pids = _as_tensor(query_pids, dev, "query_pids")
            if bool((self.q_pids < 0).any()):
                raise InvalidInputError("query pids must be >= 0: drop junk (pid -1) queries before evaluating")
            self.q_cams = _as_tensor(query_camids, dev, "query_camids") if self.use_cams else None
            self.device = dev
        return self

    def chunk(self, rows: slice):
        """(q_pids, g_pids, q_cams, g_cams, g_index) of a chunk of query rows."""
        return (self.q_pids[rows], self.g_pids, self.q_cams[rows] if self.use_cams else None, self.g_cams,
                self.g_index)


def _evaluate_rank_chunks(chunk_ranks, labels: _Labels, *, protocol: str, max_rank: int, metric: str) -> RankingResult:
    """Metrics from ``(rows, ranks, num_pos)`` per chunk of queries (see :func:`_positive_ranks`)."""
    if int(max_rank) < 1:
        raise InvalidInputError(f"max_rank must be at least 1, got {max_rank!r}")
    nq = labels.num_queries
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    first = np.zeros(nq, dtype=np.int64)
    npos = np.zeros(nq, dtype=np.int64)
    seen = np.zeros(nq, dtype=bool)
    for rows, ranks, num_pos in chunk_ranks:
        dev = ranks.device
        r = ranks.double()
        k = torch.arange(1, r.shape[1] + 1, device=dev, dtype=torch.double)[None, :]
        valid = num_pos > 0
        prec = torch.where(r > 0, k / r.clamp_min(1), torch.zeros_like(r))
        chunk_ap = prec.sum(1) / num_pos.clamp_min(1)
        last = r.gather(1, (num_pos - 1).clamp_min(0)[:, None])[:, 0] if r.shape[1] else torch.zeros_like(chunk_ap)
        chunk_inp = num_pos.double() / last.clamp_min(1)
        chunk_first = r[:, 0].long() if r.shape[1] else torch.zeros_like(num_pos)
        idx = np.arange(nq)[rows]
        v = valid.cpu().numpy()
        ap[idx[v]] = chunk_ap.cpu().numpy()[v]
        inp[idx[v]] = chunk_inp.cpu().numpy()[v]
        first[idx] = np.where(v, chunk_first.cpu().numpy(), 0)
        npos[idx] = num_pos.cpu().numpy()
        seen[idx] = True
    if not seen.all():
        raise InvalidInputError(f"the distance chunks covered {int(seen.sum())} of {nq} queries")
    valid = npos > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise InvalidInputError("no query has a valid positive in the gallery: check pids, camids and the protocol")
    hits = first[valid]
    cmc = np.array([(hits <= r).mean() for r in range(1, max_rank + 1)])
    return RankingResult(
        protocol=protocol, mAP=float(np.nanmean(ap)), mINP=float(np.nanmean(inp)), cmc=cmc, ap=ap, inp=inp,
        first_hit=first, num_positives=npos, num_queries=nq, num_skipped=nq - n_valid, metric=metric,
    )


def evaluate_distance_chunks(
    chunks: Iterable[tuple[slice, torch.Tensor]],
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: Optional[ArrayLike] = None,
    gallery_camids: Optional[ArrayLike] = None,
    *,
    protocol: str = "market",
    max_rank: int = 50,
    metric: str = "precomputed",
) -> RankingResult:
    """Metrics from query-row chunks of a distance matrix: ``(rows, dist[rows])`` pairs.

    This is the entry point for distances that are produced chunk by chunk (re-ranking of large
    galleries); :func:`evaluate_ranking` and :func:`evaluate_distmat` call it.
    """
    labels = _Labels(query_pids, gallery_pids, query_camids, gallery_camids, protocol)

    def ranked():
        for rows, dist in chunks:
            lab = labels.on(dist.device)
            if dist.shape[1] != labels.num_gallery:
                raise InvalidInputError(f"distance chunk has {dist.shape[1]} columns but there are "
                                        f"{labels.num_gallery} gallery pids")
            if torch.isnan(dist).any():
                raise InvalidInputError("the distance matrix contains NaN: check the features (NaN descriptors?)")
            ranks, num_pos = _positive_ranks(dist.float(), *lab.chunk(rows))
            yield rows, ranks, num_pos

    return _evaluate_rank_chunks(ranked(), labels, protocol=protocol, max_rank=max_rank, metric=metric)


def evaluate_distmat(
    distmat: torch.Tensor,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: Optional[ArrayLike] = None,
    gallery_camids: Optional[ArrayLike] = None,
    *,
    protocol: str = "market",
    max_rank: int = 50,
    chunk_size: Optional[int] = None,
) -> RankingResult:
    """Metrics from a precomputed (Q, G) distance matrix (smaller is closer)."""
    distmat = torch.as_tensor(distmat)
    if distmat.dim() != 2 or distmat.shape != (len(query_pids), len(gallery_pids)):
        raise InvalidInputError(f"distmat must be (Q, G) = ({len(query_pids)}, {len(gallery_pids)}) for these pids, "
                                f"got {tuple(distmat.shape)}")
    q, g = distmat.shape
    step = chunk_size or default_chunk(g, distmat.device)
    chunks = ((slice(s, min(s + step, q)), distmat[s : s + step]) for s in range(0, q, step))
    return evaluate_distance_chunks(chunks, query_pids, gallery_pids, query_camids, gallery_camids,
                                    protocol=protocol, max_rank=max_rank)


# --------------------------------------------------------------------------------------------
# distances against a prepared gallery: float32, or a bf16 pass with a proven error bound

PRECISIONS = ("auto", "float32", "bf16")
_PAIR_BLOCK = 4096  # pairs per block of exact (float64) rescoring: two (block, D) float64 operands


def resolve_precision(precision: str, device: torch.device, num_pairs: int) -> str:
    """``float32`` or ``bf16`` for :func:`evaluate_ranking`'s ``precision`` argument."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        # float32 everywhere: the bf16 pass's proven bound (Cauchy-Schwarz on the input rounding,
        # about 8e-3 on unit-norm features, and bf16 output rounding on CPUs) leaves most negatives
        # of a realistic model undecided: 30 s instead of 0.3 s for 400 Market queries measured on
        # an AMX CPU (benchmarks/README.md). It stays an explicit choice for well-separated features.
        return "float32"
    return precision


class _PreparedGallery:
    """The gallery side of ``d(q, g) = a(q) + b(g) - w q.g``, computed once for every chunk.

    ``euclidean``: a = |q|^2, b = |g|^2, w = 2 (the squared distance of :func:`pairwise_distance`);
    ``cosine``: rows L2-normalised first, a = b = 1/2, w = 1 (``1 - cos``). The float32 block equals
    :func:`pairwise_distance` of the chunk (the same operations; the gallery norms are no longer
    recomputed per chunk). With ``bf16`` the gallery is also kept in bf16 with the norms of its
    rounding error, for the bound of :meth:`bf16_block`.
    """

    def __init__(self, gf: torch.Tensor, metric: str, bf16: bool) -> None:
        if metric not in ("euclidean", "cosine"):
            raise InvalidInputError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")
        self.metric = metric
        self.w = 2.0 if metric == "euclidean" else 1.0
        self.gf = torch.nn.functional.normalize(gf, dim=1) if metric == "cosine" else gf
        self.b32 = (self.gf * self.gf).sum(1) if metric == "euclidean" else None
        self.bf16 = bf16
        if bf16:
            self._prepare_bf16()

    # ---- float32
    def _a32(self, qc: torch.Tensor) -> torch.Tensor:
        return (qc * qc).sum(1, keepdim=True)

    def features(self, qc: torch.Tensor) -> torch.Tensor:
        """The query rows as the metric uses them (normalised for ``cosine``)."""
        return torch.nn.functional.normalize(qc, dim=1) if self.metric == "cosine" else qc

    def float32_block(self, qc: torch.Tensor) -> torch.Tensor:
        """(B, G) float32 distances, as :func:`pairwise_distance` computes them (``qc`` from :meth:`features`)."""
        if self.metric == "cosine":
            return 1.0 - qc @ self.gf.t()
        d = torch.addmm(self._a32(qc), qc, self.gf.t(), alpha=-2.0)
        d += self.b32[None, :]
        return d.clamp_min_(0.0)

    # ---- exact values of chosen pairs (float64), the reference of the bf16 pass
    def _a64(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() ** 2).sum(1) if self.metric == "euclidean" else torch.full((len(x),), 0.5, dtype=torch.double,
                                                                                     device=x.device)

    def exact_pairs(self, qc: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """float64 distances of the pairs (qc[rows], gallery[cols]), block by block."""
        out = torch.empty(rows.numel(), dtype=torch.double, device=qc.device)
        a64 = self._a64(qc)
        for s in range(0, rows.numel(), _PAIR_BLOCK):
            r, c = rows[s : s + _PAIR_BLOCK], cols[s : s + _PAIR_BLOCK]
            x, y = qc[r].double(), self.gf[c].double()
            dot = (x * y).sum(1)
            b = (y * y).sum(1) if self.metric == "euclidean" else 0.5
            out[s : s + _PAIR_BLOCK] = (a64[r] + b - self.w * dot).clamp_min_(0.0)
        return out

    # ---- bf16 pass with its bound
    def _prepare_bf16(self) -> None:
        gb = self.gf.to(torch.bfloat16)
        g_norm, gb_norm, eg_norm = (torch.zeros((), dtype=torch.double, device=self.gf.device) for _ in range(3))
        for s in range(0, len(gb), 8192):  # in slices: no float64 copy of the whole gallery
            g, b = self.gf[s : s + 8192].double(), gb[s : s + 8192].double()
            g_norm = torch.maximum(g_norm, g.norm(dim=1).max())
            gb_norm = torch.maximum(gb_norm, b.norm(dim=1).max())
            eg_norm = torch.maximum(eg_norm, (g - b).norm(dim=1).max())
        self.gb = gb
        # float32 |g|^2 correctly rounded from float64 (error <= 2^-24 |g|^2), for the bound
        self.b32_exact = torch.cat([(self.gf[s : s + 8192].double() ** 2).sum(1) for s in range(0, len(gb), 8192)]).float() \
            if self.metric == "euclidean" else None
        self.b_max = float((self.b32_exact.double().max() if self.b32_exact is not None else 0.5))
        self.g_norm, self.gb_norm, self.eg_norm = float(g_norm), float(gb_norm), float(eg_norm)

    def _bf16_product(self, qb: torch.Tensor) -> tuple[torch.Tensor, float]:
        """qb @ gb^T as float32 and the unit of its output rounding: float32 output where the
        device has it (CUDA ``out_dtype``), otherwise the bf16 result (8 significant bits)."""
        if qb.device.type == "cuda":
            try:
                return torch.mm(qb, self.gb.t(), out_dtype=torch.float32), 2.0**-23
            except (RuntimeError, TypeError, NotImplementedError):
                pass
        return (qb @ self.gb.t()).float(), 2.0**-7  # 2^-7: rounding or truncation to bf16

    def bf16_block(self, qc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, G) approximate distances from a bf16 product, and a per-row bound ``eps`` (float32)
        with ``|approx[i, j] - exact[i, j]| <= eps[i]`` for every j, ``exact`` being
        :meth:`exact_pairs`.

        The bound (q = q' + e_q, g = g' + e_g with q', g' the bf16 roundings, norms in float64):

        - inputs:  |q.g - q'.g'| = |q'.e_g + e_q.g| <= |q'| max|e_g| + |e_q| max|g|;
        - products of two bf16 numbers are exact in float32; the float32 sum of D of them is off by
          at most gamma_D |q'| max|g'|, gamma_D = D u / (1 - D u), u = 2^-23 (covers truncating
          accumulators, not only round-to-nearest);
        - the output rounding: at most r |q'| max|g'| (1 + gamma_D), r from :meth:`_bf16_product`;
        - then d = a + b - w s: w times the above, plus 2^-21 (a + max b + 2 w |q'| max|g'|) for the
          roundings of a and b to float32, the two float32 additions and the float64 reference.

        ``qc`` comes from :meth:`features`.
        """
        qb = qc.to(torch.bfloat16)
        q64, qb64 = qc.double(), qb.double()
        qb_norm = qb64.norm(dim=1)
        eq_norm = (q64 - qb64).norm(dim=1)
        a64 = self._a64(qc)
        s, r = self._bf16_product(qb)
        d = qc.shape[1]
        gamma = d * 2.0**-23 / (1.0 - d * 2.0**-23)
        scale = qb_norm * self.gb_norm
        eps_dot = qb_norm * self.eg_norm + eq_norm * self.g_norm + (gamma + r * (1.0 + gamma)) * scale
        eps = self.w * eps_dot + 2.0**-21 * (a64 + self.b_max + 2.0 * self.w * scale * (1.0 + r))
        eps = torch.nextafter(eps.float(), torch.tensor(float("inf"), device=eps.device))  # rounded up
        approx = s.mul_(-self.w).add_(a64.float()[:, None])
        if self.metric == "euclidean":
            approx.add_(self.b32_exact[None, :])
        else:
            approx.add_(0.5)
        return approx.clamp_min_(0.0), eps  # clamping never moves a value away from the exact one


def _positive_ranks_bounded(
    approx: torch.Tensor,
    eps: torch.Tensor,
    exact_pairs,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_cams: Optional[torch.Tensor],
    g_cams: Optional[torch.Tensor],
    g_index: _GalleryIndex,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_positive_ranks` from approximate distances with a per-row bound, exactly.

    ``|approx[i, j] - exact[i, j]| <= eps[i]``; ``exact_pairs(rows, cols)`` gives float64 exact
    distances. The positives' distances are computed exactly (a few per query). A negative n then
    precedes positive p for sure when approx(n) > exact(p) + eps, and follows it for sure when
    approx(n) < exact(p) - eps: with ``hi = exact(p) + eps`` rounded up and ``lo = exact(p) - eps``
    rounded down to float32,

        #{p surely before n} = #{p : hi_p < approx(n)},   #{p not surely after n} = #{p : lo_p <= approx(n)},

    and c(n) (the positives ranked before n) is decided when the two counts agree. Only the
    undecided negatives, those within eps of some positive, are rescored exactly; the others keep
    the decided count. So the ranks are those of the exact distances, ties (by gallery index)
    included, whatever the approximation.
    """
    b, g = approx.shape
    dev = approx.device
    rows, cols, num_pos = _valid_positives(b, q_pids, q_cams, g_cams, g_index)
    p_max = int(num_pos.max()) if rows.numel() else 0
    if p_max == 0:
        return torch.zeros(b, 0, dtype=torch.long, device=dev), num_pos
    pos_d, pos_i = _sorted_positives(b, g, rows, cols, exact_pairs(rows, cols), num_pos, p_max)
    inf = torch.tensor(float("inf"), device=dev)
    e = eps.double()[:, None]
    hi = torch.nextafter((pos_d + e).float(), inf)  # >= exact + eps (padding stays +inf)
    lo = torch.nextafter((pos_d - e).float(), -inf)  # <= exact - eps
    lo = torch.where(torch.isinf(pos_d), inf, lo)

    # negatives that surely follow the last positive never count (c = P): leave them out
    last_hi = hi.gather(1, (num_pos - 1).clamp_min(0)[:, None])
    nr, nc = (approx <= last_hi).nonzero(as_tuple=True)
    keep = (g_pids[nc] != q_pids[nr]) & (g_pids[nc] >= 0)  # negatives only: no positive, no junk
    nr, nc = nr[keep], nc[keep]
    dn = approx[nr, nc]
    row_keys = torch.arange(b, device=dev).repeat_interleave(p_max)
    n_keys = _order_keys(dn, nr)
    c = torch.searchsorted(_order_keys(hi.reshape(-1), row_keys), n_keys, right=False) - nr * p_max
    c_not_after = torch.searchsorted(_order_keys(lo.reshape(-1), row_keys), n_keys, right=True) - nr * p_max
    undecided = torch.nonzero(c != c_not_after)[:, 0]
    if undecided.numel():
        ur, uc = nr[undecided], nc[undecided]
        ud = exact_pairs(ur, uc)[:, None]
        before = (pos_d[ur] < ud) | ((pos_d[ur] == ud) & (pos_i[ur] < uc[:, None]))
        c[undecided] = before.sum(1)
    hist = torch.bincount(nr * (p_max + 1) + c, minlength=b * (p_max + 1)).view(b, p_max + 1)
    return _ranks_from_histogram(hist, num_pos, p_max), num_pos


def evaluate_ranking(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: Optional[ArrayLike] = None,
    gallery_camids: Optional[ArrayLike] = None,
    *,
    protocol: str = "market",
    metric: str = "euclidean",
    max_rank: int = 50,
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    precision: str = "auto",
) -> RankingResult:
    """Evaluate retrieval of ``query_feats`` against ``gallery_feats`` under a named protocol.

    Distances are computed query-chunk by query-chunk on ``device`` (default: the features'
    device), so memory holds the features plus one (chunk x gallery) block.

    Example::

        res = evaluate_ranking(qf, gf, q_pids, g_pids, q_camids, g_camids, protocol="market")
        print(res)                 # [market] mAP 71.3  R1 88.0 ...
        record = res.to_dict()     # names its protocol

    Args:
        query_feats: (Q, D) descriptors (L2-normalised for the CORE-ReID protocol).
        gallery_feats: (G, D) descriptors.
        query_pids, gallery_pids: identities; negative gallery pids are junk.
        query_camids, gallery_camids: 0-based cameras (required by ``market`` and ``veriwild``).
        protocol: ``market``, ``veriwild`` or ``vehicleid`` (see the module docstring).
        metric: ``euclidean`` (squared) or ``cosine``.
        max_rank: length of the CMC curve.
        device: where to compute (``"cuda"``, ``"cpu"``).
        chunk_size: queries per chunk (default: :func:`default_chunk`).
        precision: how the distances are computed; the metrics are exact in every mode.
            ``float32``: one float32 product per chunk. ``bf16``: a bf16 product (2-4x the
            float32 rate on GPUs and on CPUs with AVX-512 BF16 or AMX) with a proven error bound;
            only the pairs whose order against a positive the bound cannot decide, and the
            positives, are rescored exactly (float64), so the ranks equal those of the exact
            distances. The bound is wide (about 1e-2 in squared distance on unit-norm features),
            so ``bf16`` pays only when positives and negatives are well apart; on the features of
            a realistic model most negatives are rescored and it is many times slower.
            ``auto`` (default): ``float32``. The mode used is in ``result.precision``.
    """
    qf, gf = torch.as_tensor(query_feats), torch.as_tensor(gallery_feats)
    if qf.dim() != 2 or gf.dim() != 2 or qf.shape[1] != gf.shape[1]:
        raise InvalidInputError(f"features must be (Q, D) and (G, D) with the same D, got {tuple(qf.shape)} and {tuple(gf.shape)}")
    if len(query_pids) != qf.shape[0] or len(gallery_pids) != gf.shape[0]:
        raise InvalidInputError(f"there must be one pid per query and per gallery descriptor: {qf.shape[0]} query "
                                f"descriptors, {len(query_pids)} query pids; {gf.shape[0]} gallery descriptors, "
                                f"{len(gallery_pids)} gallery pids")
    check_features(qf, "query features")
    check_features(gf, "gallery features")
    dev = torch.device(device) if device is not None else qf.device
    mode = resolve_precision(precision, dev, qf.shape[0] * gf.shape[0])
    gallery = _PreparedGallery(gf.to(dev, torch.float32), metric, bf16=mode == "bf16")
    step = chunk_size or default_chunk(gf.shape[0], dev)
    labels = _Labels(query_pids, gallery_pids, query_camids, gallery_camids, protocol).on(dev)

    def ranked():
        for s in range(0, qf.shape[0], step):
            rows = slice(s, min(s + step, qf.shape[0]))
            qc = gallery.features(qf[rows].to(dev, torch.float32))
            if mode == "bf16":
                approx, eps = gallery.bf16_block(qc)
                ranks, num_pos = _positive_ranks_bounded(
                    approx, eps, lambda r, c: gallery.exact_pairs(qc, r, c), *labels.chunk(rows))
            else:
                ranks, num_pos = _positive_ranks(gallery.float32_block(qc), *labels.chunk(rows))
            yield rows, ranks, num_pos

    res = _evaluate_rank_chunks(ranked(), labels, protocol=protocol, max_rank=max_rank, metric=metric)
    res.precision = mode
    return res


# --------------------------------------------------------------------------------------------
# VehicleID: ten seeded gallery draws


@dataclass
class VehicleIDResult:
    """Mean and standard deviation over the draws, each draw, and the single seed-0 draw."""

    mean: dict
    std: dict
    draws: list[RankingResult]

    @property
    def seed0(self) -> RankingResult:
        return self.draws[0]

    def to_dict(self) -> dict:
        out = {"protocol": "vehicleid", "draws": len(self.draws)}
        out.update({k: v for k, v in self.mean.items()})
        out.update({f"{k}_std": v for k, v in self.std.items()})
        out.update({f"{k}_seed0": v for k, v in self.seed0.to_dict().items() if isinstance(v, float)})
        return out

    def __str__(self) -> str:
        return (f"[vehicleid x{len(self.draws)}] mAP {100 * self.mean['mAP']:.2f} ± {100 * self.std['mAP']:.2f}  "
                f"R1 {100 * self.mean['rank1']:.2f} ± {100 * self.std['rank1']:.2f}  "
                f"R5 {100 * self.mean['rank5']:.2f}  (seed 0: mAP {100 * self.seed0.mAP:.2f})")


def evaluate_vehicleid(
    test_feats: torch.Tensor,
    test_pids: ArrayLike,
    *,
    draws: int = 10,
    first_seed: int = 0,
    metric: str = "euclidean",
    device: Union[str, torch.device, None] = None,
    max_rank: int = 50,
) -> VehicleIDResult:
    """The VehicleID protocol on one test list (Test800/1600/2400): ``draws`` seeded gallery draws.

    Seeds ``first_seed .. first_seed + draws - 1``; no camera filtering (VehicleID has no cameras).
    """
    from ..data.vehicleid import vehicleid_draw  # here, not at the top: the evaluator stays free of the data stack

    pids = integer_ids(test_pids, "test_pids")
    feats = torch.as_tensor(test_feats)
    results = []
    for seed in range(first_seed, first_seed + draws):
        qi, gi = (np.asarray(ix, dtype=np.int64) for ix in vehicleid_draw(pids.tolist(), seed))
        res = evaluate_ranking(feats[torch.as_tensor(qi)], feats[torch.as_tensor(gi)], pids[qi], pids[gi],
                               protocol="vehicleid", metric=metric, device=device, max_rank=max_rank)
        res.extras["draw_seed"] = seed
        results.append(res)
    keys = ["mAP", "mINP"] + [f"rank{r}" for r in CMC_RANKS]
    table = {k: np.array([r.to_dict()[k] for r in results]) for k in keys}
    return VehicleIDResult({k: float(v.mean()) for k, v in table.items()},
                           {k: float(v.std()) for k, v in table.items()}, results)
