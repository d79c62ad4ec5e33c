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
  one random image per identity, drawn 10 times with seeds 0..9
  (:func:`corelib.evaluation.vehicleid.evaluate_vehicleid`).

Queries without any valid positive are skipped and counted in ``num_skipped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from ..array_checks import check_features, integer_ids
from ..errors import InvalidInputError

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
# distances against a prepared gallery


class _PreparedGallery:
    """The gallery side of ``d(q, g) = a(q) + b(g) - w q.g``, computed once for every chunk.

    ``euclidean``: a = |q|^2, b = |g|^2, w = 2 (the squared distance of :func:`pairwise_distance`);
    ``cosine``: rows L2-normalised first, a = b = 1/2, w = 1 (``1 - cos``). A block equals
    :func:`pairwise_distance` of the chunk (the same operations; the gallery norms are no longer
    recomputed per chunk).
    """

    def __init__(self, gf: torch.Tensor, metric: str) -> None:
        if metric not in ("euclidean", "cosine"):
            raise InvalidInputError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")
        self.metric = metric
        self.gf = torch.nn.functional.normalize(gf, dim=1) if metric == "cosine" else gf
        self.b32 = (self.gf * self.gf).sum(1) if metric == "euclidean" else None

    def features(self, qc: torch.Tensor) -> torch.Tensor:
        """The query rows as the metric uses them (normalised for ``cosine``)."""
        return torch.nn.functional.normalize(qc, dim=1) if self.metric == "cosine" else qc

    def distances(self, qc: torch.Tensor) -> torch.Tensor:
        """(B, G) float32 distances, as :func:`pairwise_distance` computes them (``qc`` from :meth:`features`)."""
        if self.metric == "cosine":
            return 1.0 - qc @ self.gf.t()
        d = torch.addmm((qc * qc).sum(1, keepdim=True), qc, self.gf.t(), alpha=-2.0)
        d += self.b32[None, :]
        return d.clamp_min_(0.0)


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
    gallery = _PreparedGallery(gf.to(dev, torch.float32), metric)
    step = chunk_size or default_chunk(gf.shape[0], dev)
    labels = _Labels(query_pids, gallery_pids, query_camids, gallery_camids, protocol).on(dev)

    def ranked():
        for s in range(0, qf.shape[0], step):
            rows = slice(s, min(s + step, qf.shape[0]))
            qc = gallery.features(qf[rows].to(dev, torch.float32))
            ranks, num_pos = _positive_ranks(gallery.distances(qc), *labels.chunk(rows))
            yield rows, ranks, num_pos

    return _evaluate_rank_chunks(ranked(), labels, protocol=protocol, max_rank=max_rank, metric=metric)
