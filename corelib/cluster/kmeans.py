"""K-means in torch on CPU or CUDA, with greedy k-means++ seeding (CORE-ReID's pseudo-labels).

Seeding (docs/method.md Appendix A; Arthur & Vassilvitskii 2007; Grunau et al. 2023):

- ``greedy_kmeans++``: every step draws L = 2 + floor(ln k) candidates with probability
  proportional to the current squared distance D(x) and keeps the one that lowers the potential
  sum_x D(x) the most (scikit-learn's ``kmeans_plusplus``);
- ``kmeans++``: the same with L = 1;
- ``random``: k distinct points drawn uniformly (faiss's default).

Lloyd: full-batch iterations until the labels stop changing, the squared centre shift falls below
``tol`` x the mean per-feature variance (scikit-learn's rule), or ``max_iter``. Distances use the
norms trick ``|x|^2 + |c|^2 - 2 x.c`` in float32 matrix products, in row chunks so that memory holds
the data plus one (chunk x k) block. Empty clusters are re-seeded at the points farthest from their
centres. Every random draw comes from one seeded ``torch.Generator``: the same seed on the same
device gives identical labels.

``minibatch_kmeans`` follows scikit-learn's ``MiniBatchKMeans`` (per-centre learning rates, random
reassignment of small clusters, early stopping on an averaged batch inertia) for very large N.
``backend="faiss"`` runs faiss's k-means instead, for comparison.

Example::

    res = kmeans(features, k=900, init="greedy_kmeans++", seed=0, device="cuda")
    res.labels, res.centroids, res.inertia, res.n_iter
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch

from ..array_checks import check_features
from ..errors import InvalidInputError
from ..precision import fast_bf16

INITS = ("greedy_kmeans++", "kmeans++", "random")


@dataclass
class KMeansResult:
    """Outcome of one k-means run (tensors on the device it ran on)."""

    centroids: torch.Tensor  # (k, d) float32
    labels: torch.Tensor  # (n,) int64
    inertia: float  # sum of squared distances of the points to their centre
    n_iter: int  # Lloyd iterations (or mini-batch steps) run
    inertia_history: list[float]  # inertia of the assignment made in each iteration
    seeding_potential: float  # inertia of the initial centres
    init: str
    converged: bool
    seconds: dict = field(default_factory=dict)  # {"init": ..., "iterations": ..., "total": ...}

    @property
    def k(self) -> int:
        return self.centroids.shape[0]


def default_trials(k: int) -> int:
    """L = 2 + floor(ln k): 8 for k = 500..1096, 9 for k = 2000 (scikit-learn's choice)."""
    return 2 + int(math.log(k))


def _validate(x: torch.Tensor, k: int, max_iter: int) -> torch.Tensor:
    """Refuse what k-means cannot cluster into k non-empty clusters; return the squared row norms
    (every distance uses them: computed once, here, and checked for NaN, inf and overflow)."""
    if x.dim() != 2:
        raise InvalidInputError(f"k-means needs an (n, d) matrix, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n == 0:
        raise InvalidInputError("k-means got no samples: the feature matrix is empty")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise InvalidInputError(f"k = {k} clusters is larger than the number of samples ({n}); use k <= {n}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidInputError(f"max_iter must be an integer >= 1, got {max_iter!r}; for the seeding alone call "
                                f"kmeans_plusplus or random_init")
    x_sq = (x * x).sum(1)
    check_features(x, "features", sq_norms=x_sq)
    # Identical rows always get the same nearest centre, so k-means cannot fill more clusters than
    # there are distinct rows. Rows of different sums differ: the exact count only when the sums
    # cannot tell (one pass and a sort of n numbers otherwise).
    if torch.unique(x.sum(1)).numel() < k:
        distinct = torch.unique(x, dim=0).shape[0]
        if distinct < k:
            raise InvalidInputError(f"k = {k} clusters but the {n} feature rows hold only {distinct} distinct vectors, "
                                    f"and identical rows always share a cluster; use k <= {distinct}, or check the "
                                    f"features (many identical rows: a collapsed network, or duplicated images)")
    return x_sq


def _chunk_rows(n_cols: int, device: torch.device) -> int:
    # values in one (chunk x k) block; on the CPU ~1k-row blocks stay in cache and run fastest
    budget = 2**26 if device.type == "cuda" else 2**20
    return max(256, budget // max(1, n_cols))


# Bound on |d_bf16 - d| for squared distances from bf16 inputs with float32 accumulation and a bf16
# result: input rounding 2u + u^2 (u = 2^-8), float32 sums, output rounding u, times 2 for -2 x.y,
# with a margin: 0.025 |x| |y|. The observed error on 2048-d features is below 10% of it.
_BF16_REL = 0.025


def assign(
    x: torch.Tensor,
    centroids: torch.Tensor,
    *,
    x_sq: Optional[torch.Tensor] = None,
    chunk_size: Optional[int] = None,
    bf16_filter: Optional[bool] = None,
    x_bf16: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of every row: ``(labels, squared distances)``, computed in row chunks.

    With ``bf16_filter`` (default: on a CPU with fast bf16, :func:`corelib.precision.fast_bf16`) the scores are first computed from bf16 copies (a
    ~3x faster product); a row whose best approximate score is not ahead of every other centre by
    more than the proven bf16 error is rescored exactly in float32. On ReID features well under 1%
    of the rows need that, and the labels are those of the float32 computation.
    """
    n = x.shape[0]
    c_sq = (centroids * centroids).sum(1)
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    step = chunk_size or _chunk_rows(centroids.shape[0], x.device)
    c_t = centroids.t().contiguous()  # (d, k) once: a contiguous right operand is ~5% faster on the CPU
    use_filter = (x.device.type == "cpu" and fast_bf16(x.device)) if bf16_filter is None else bf16_filter
    if use_filter:
        cb_t = c_t.to(torch.bfloat16)
        xb = x.to(torch.bfloat16) if x_bf16 is None else x_bf16
        c_norm_max, c_sq_max = float(c_sq.max().sqrt()), float(c_sq.max())
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    dmin = torch.empty(n, dtype=torch.float32, device=x.device)
    for s in range(0, n, step):
        xs, xs_sq = x[s : s + step], x_sq[s : s + step]
        if use_filter:
            approx = torch.addcmul(c_sq[None, :], torch.mm(xb[s : s + step], cb_t),
                                   torch.tensor(-2.0, dtype=torch.float32))
            two = torch.topk(approx, min(2, approx.shape[1]), dim=1, largest=False)
            idx = two.indices[:, 0].clone()
            # the true nearest centre scores within 2 x slack of the best approximate score: when
            # the runner-up is that close, the row is rescored exactly
            slack = _BF16_REL * xs_sq.sqrt() * c_norm_max + 1e-5 * (xs_sq + c_sq_max) + 1e-7
            gap = two.values[:, -1] - two.values[:, 0] if approx.shape[1] > 1 else torch.full_like(slack, float("inf"))
            amb = torch.nonzero(gap <= 2.0 * slack)[:, 0]
            if amb.numel():
                idx[amb] = torch.addmm(c_sq[None, :], xs[amb], c_t, alpha=-2.0).argmin(dim=1)
            labels[s : s + step] = idx
            # exact squared distance to the chosen centre: one dot product per row
            dmin[s : s + step] = (xs_sq + c_sq[idx] - 2.0 * (xs * centroids[idx]).sum(1)).clamp_min_(0.0)
        else:
            # argmin_c |x|^2 + |c|^2 - 2 x.c == argmin_c (|c|^2 - 2 x.c): |x|^2 added after the min
            scores = torch.addmm(c_sq[None, :], xs, c_t, alpha=-2.0)
            val, idx = scores.min(dim=1)
            labels[s : s + step] = idx
            dmin[s : s + step] = (val + xs_sq).clamp_min_(0.0)
    return labels, dmin


def kmeans_plusplus(
    x: torch.Tensor,
    k: int,
    *,
    n_trials: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    x_sq: Optional[torch.Tensor] = None,
    bf16_filter: Optional[bool] = None,
    x_bf16: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Greedy k-means++ seeding; ``n_trials=1`` is plain k-means++.

    Each step draws L candidates with probability D(x) / sum D and keeps the one whose addition
    lowers the potential sum_x D(x) most. In float32 every step reads all of X (memory-bound), so
    on the CPU the candidate distances are first computed from a bf16 copy of X (half the bytes,
    a ~3x faster product); only the rows that a candidate might bring closer, given a proven bound on
    the bf16 error, are recomputed exactly in float32 (after the first steps, a few percent). The
    result is the float32 algorithm's: a row left out provably keeps its D(x).

    Args:
        bf16_filter: use the bf16 pre-filter (default: on a CPU with fast bf16 only; on GPUs the float32 product
            is fast and reduced-precision reductions would void the bound).
        x_bf16: a bf16 copy of ``x`` to reuse (made here when needed and not given).

    Returns ``(centres (k, d), indices (k,), potential)`` where potential = sum_x min_c |x - c|^2.
    """
    n, _ = x.shape
    trials = default_trials(k) if n_trials is None else n_trials
    if trials < 1:
        raise InvalidInputError(f"n_trials must be >= 1, got {trials}")
    dev = x.device
    gdev = generator.device if generator is not None else torch.device("cpu")
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    use_filter = (dev.type == "cpu" and fast_bf16(dev)) if bf16_filter is None else bf16_filter
    if use_filter:
        xb, x_norm = (x.to(torch.bfloat16) if x_bf16 is None else x_bf16), x_sq.sqrt()
    indices = torch.empty(k, dtype=torch.long, device=dev)
    first = torch.randint(n, (1,), generator=generator, device=gdev).to(dev)
    indices[0] = first[0]
    closest = (x_sq + x_sq[first] - 2.0 * torch.mm(x, x[first].t())[:, 0]).clamp_min_(0.0)
    potential = closest.sum(dtype=torch.float64)
    filter_failed_at = -(10**9)
    for j in range(1, k):
        # L candidates drawn with probability D(x) / potential: inverse-CDF search in a float64
        # running sum (float32 cumulative sums of 10^5 terms lose the small ones)
        cdf = torch.cumsum(closest, 0, dtype=torch.float64)
        r = torch.rand(trials, generator=generator, dtype=torch.float64, device=gdev).to(dev) * cdf[-1]
        cand = torch.searchsorted(cdf, r).clamp_max_(n - 1)
        y, y_sq = x[cand], x_sq[cand]
        rows = None
        # in the first steps most rows are undecided: after a failed filter, wait 8 steps to retry
        if use_filter and j - filter_failed_at >= 8:
            approx = torch.mm(xb, xb[cand].t()).float().mul_(-2.0).add_(x_sq[:, None]).add_(y_sq[None, :])
            slack = (_BF16_REL * x_norm[:, None] * x_norm[cand][None, :]
                     + 1e-5 * (x_sq[:, None] + y_sq[None, :]) + 1e-7)
            rows = torch.nonzero(((approx - slack) < closest[:, None]).any(1))[:, 0]
            if rows.numel() > n // 2:  # most rows undecided: the full product is cheaper than gathers
                rows, filter_failed_at = None, j
        if rows is None:
            # (n, L) squared distances to the candidates: one (n x d) @ (d x L) product
            # (this orientation is ~1.5x faster on the CPU than (L x d) @ (d x n))
            d = torch.mm(x, y.t()).mul_(-2.0).add_(x_sq[:, None]).add_(y_sq[None, :]).clamp_min_(0.0)
            torch.minimum(d, closest[:, None], out=d)
            pots = d.sum(0, dtype=torch.float64)
            best = int(torch.argmin(pots))
            closest = d[:, best].contiguous()
        else:
            d = torch.mm(x[rows], y.t()).mul_(-2.0).add_(x_sq[rows][:, None]).add_(y_sq[None, :]).clamp_min_(0.0)
            cur = closest[rows]
            torch.minimum(d, cur[:, None], out=d)
            pots = potential - (cur[:, None] - d).sum(0, dtype=torch.float64)
            best = int(torch.argmin(pots))
            closest[rows] = d[:, best]
        indices[j] = cand[best]
        potential = pots[best]
    return x[indices].clone(), indices, float(potential)


def random_init(x: torch.Tensor, k: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """k distinct rows drawn uniformly (faiss's default seeding)."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randperm(x.shape[0], generator=generator, device=gdev)[:k].to(x.device)
    return x[idx].clone()


def _tol_abs(x: torch.Tensor, tol: float) -> float:
    # scikit-learn scales tol by the mean per-feature variance of the data
    return float(x.var(dim=0, unbiased=False).mean()) * tol if tol > 0 else 0.0


def _update(x: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(k, x.shape[1], device=x.device, dtype=torch.float32).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    return sums, counts


def _fill_empty(centroids: torch.Tensor, counts: torch.Tensor, x: torch.Tensor, dmin: torch.Tensor) -> int:
    """Re-seed empty clusters at the points farthest from their current centres."""
    empty = torch.nonzero(counts == 0)[:, 0]
    if empty.numel() == 0:
        return 0
    far = torch.topk(dmin, empty.numel()).indices
    centroids[empty] = x[far]
    return int(empty.numel())


def _generator(seed: int, device: torch.device) -> torch.Generator:
    # CUDA generators draw on the device (no host round-trip per seeding step)
    g = torch.Generator(device=device if device.type == "cuda" else "cpu")
    g.manual_seed(seed)
    return g


def _prepare(x, device) -> torch.Tensor:
    x = torch.as_tensor(x)
    dev = torch.device(device) if device is not None else x.device
    return x.to(dev, torch.float32).contiguous()


def kmeans(
    x: Union[torch.Tensor, np.ndarray],
    k: int,
    *,
    init: Union[str, torch.Tensor] = "greedy_kmeans++",
    n_trials: Optional[int] = None,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    backend: str = "torch",
) -> KMeansResult:
    """Full-batch k-means.

    Args:
        x: (n, d) features (converted to float32 on ``device``).
        k: number of clusters (``k <= n``).
        init: ``"greedy_kmeans++"``, ``"kmeans++"``, ``"random"`` or a (k, d) tensor of centres.
        n_trials: candidates per seeding step (default 2 + floor(ln k) for greedy, 1 for kmeans++).
        max_iter: Lloyd iterations at most.
        tol: relative tolerance on the squared centre shift (x mean feature variance); 0 disables
            it (then only unchanged labels or ``max_iter`` stop).
        seed: seed of the torch Generator that makes every random draw.
        device: where to run (default: the device of ``x``).
        chunk_size: rows per distance block.
        backend: ``"torch"`` or ``"faiss"`` (faiss's own k-means, CPU or GPU build, for comparison;
            it is seeded with ``seed`` and started from our init when ``init`` is a tensor or a
            k-means++ variant, from faiss's random sample when ``init="random"``).

    Raises:
        ValueError: empty input, k larger than the number of samples or of distinct rows, NaN or inf
            rows, diverged features (norms that overflow float32 distances), max_iter < 1, unknown init.
    """
    x = _prepare(x, device)
    x_sq = _validate(x, k, max_iter)
    if isinstance(init, str) and init not in INITS:
        raise InvalidInputError(f"unknown init {init!r}; valid inits: {', '.join(INITS)} or a (k, d) tensor")
    if backend not in ("torch", "faiss"):
        raise InvalidInputError(f"unknown backend {backend!r}; use 'torch' or 'faiss'")
    dev = x.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = _generator(seed, dev)
    x_bf16 = x.to(torch.bfloat16) if dev.type == "cpu" and fast_bf16(dev) else None  # shared by the bf16 pre-filters
    t0 = time.perf_counter()
    if isinstance(init, torch.Tensor):
        centroids = init.to(dev, torch.float32).clone()
        if centroids.shape != (k, x.shape[1]):
            raise InvalidInputError(f"init centres must be ({k}, {x.shape[1]}), got {tuple(centroids.shape)}")
        init_name = "given"
    elif init == "random":
        centroids, init_name = random_init(x, k, generator=gen), init
    else:
        trials = n_trials if n_trials is not None else (default_trials(k) if init == "greedy_kmeans++" else 1)
        centroids, _, _ = kmeans_plusplus(x, k, n_trials=trials, generator=gen, x_sq=x_sq, x_bf16=x_bf16)
        init_name = init
    sync()
    t_init = time.perf_counter() - t0
    if backend == "faiss":
        return _faiss_kmeans(x, k, centroids if init_name != "random" else None, max_iter, seed, init_name, t_init)

    tol_abs = _tol_abs(x, tol)
    history: list[float] = []
    labels, dmin = assign(x, centroids, x_sq=x_sq, chunk_size=chunk_size, x_bf16=x_bf16)
    seeding_potential = float(dmin.sum(dtype=torch.float64))
    converged = False
    it = 0
    t1 = time.perf_counter()
    for it in range(1, max_iter + 1):
        history.append(float(dmin.sum(dtype=torch.float64)))
        sums, counts = _update(x, labels, k)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None].float(), centroids)
        _fill_empty(new, counts, x, dmin)
        shift = float(((new - centroids) ** 2).sum())
        centroids = new
        new_labels, dmin = assign(x, centroids, x_sq=x_sq, chunk_size=chunk_size, x_bf16=x_bf16)
        if torch.equal(new_labels, labels):
            labels, converged = new_labels, True  # strict convergence: nothing moves any more
            break
        labels = new_labels
        if shift <= tol_abs:
            converged = True
            break
    sync()
    t_iter = time.perf_counter() - t1
    return KMeansResult(
        centroids=centroids, labels=labels, inertia=float(dmin.sum(dtype=torch.float64)), n_iter=it,
        inertia_history=history, seeding_potential=seeding_potential, init=init_name, converged=converged,
        seconds={"init": t_init, "iterations": t_iter, "total": t_init + t_iter},
    )


def _faiss_kmeans(x, k, init_centroids, max_iter, seed, init_name, t_init) -> KMeansResult:
    try:
        import faiss  # lazy: optional extra (faiss-cpu or faiss-gpu)
    except ImportError as e:  # pragma: no cover - faiss is an optional extra
        raise ImportError("backend='faiss' needs faiss: pip install faiss-cpu (or conda install faiss-gpu)") from e
    xs = x.detach().cpu().numpy()
    km = faiss.Kmeans(xs.shape[1], k, niter=max_iter, seed=seed, verbose=False,
                      gpu=x.device.type == "cuda", min_points_per_centroid=1, max_points_per_centroid=10**9)
    t0 = time.perf_counter()
    if init_centroids is not None:
        km.train(xs, init_centroids=init_centroids.detach().cpu().numpy())
    else:
        km.train(xs)
    dist, lab = km.index.search(xs, 1)
    dt = time.perf_counter() - t0
    hist = [float(v) for v in km.obj]
    return KMeansResult(
        centroids=torch.from_numpy(km.centroids).to(x.device), labels=torch.from_numpy(lab[:, 0]).long().to(x.device),
        inertia=float(dist.sum(dtype=np.float64)), n_iter=len(hist), inertia_history=hist,
        seeding_potential=float("nan"), init=f"faiss/{init_name}", converged=True,
        seconds={"init": t_init, "iterations": dt, "total": t_init + dt},
    )


# --------------------------------------------------------------------------------------------
# mini-batch k-means (scikit-learn MiniBatchKMeans semantics, docs/method.md Appendix B)


def minibatch_kmeans(
    x: Union[torch.Tensor, np.ndarray],
    k: int,
    *,
    batch_size: int = 1024,
    max_iter: int = 100,
    init: str = "greedy_kmeans++",
    init_size: Optional[int] = None,
    n_init: int = 3,
    reassignment_ratio: float = 0.01,
    max_no_improvement: Optional[int] = 10,
    tol: float = 0.0,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
) -> KMeansResult:
    """Mini-batch k-means with scikit-learn's ``MiniBatchKMeans`` semantics.

    - init: ``n_init`` candidate seedings, each on its own random subset of ``init_size`` points
      (default 3 x batch_size, raised to 3k when smaller than k, capped at n), scored by inertia on
      a common validation subset; the best is kept;
    - ``floor(max_iter * n / batch_size)`` steps; each draws ``batch_size`` points with replacement,
      assigns them and moves every centre with new members by ``c <- (c * count + sum) / (count + m)``;
    - random reassignment: when some count is 0 or 10k samples were seen since the last one, centres
      with ``count < reassignment_ratio * max(count)`` move to random points of the batch;
    - early stop after ``max_no_improvement`` steps without a new minimum of the exponentially
      averaged batch inertia, or when the squared centre shift falls below ``tol`` x variance.
    """
    x = _prepare(x, device)
    x_sq = _validate(x, k, max_iter)
    if init not in INITS:
        raise InvalidInputError(f"unknown init {init!r}; valid inits: {', '.join(INITS)}")
    n, _ = x.shape
    dev = x.device
    gen = _generator(seed, dev)
    gdev = gen.device
    t0 = time.perf_counter()
    size = init_size if init_size is not None else 3 * batch_size
    if size < k:
        size = 3 * k
    size = min(size, n)
    val_idx = torch.randint(n, (size,), generator=gen, device=gdev).to(dev)
    best, best_inertia = None, math.inf
    for _ in range(max(1, n_init)):
        sub = torch.randint(n, (size,), generator=gen, device=gdev).to(dev)
        xs = x[sub]
        if init == "random":
            cent = random_init(xs, k, generator=gen)
        else:
            trials = default_trials(k) if init == "greedy_kmeans++" else 1
            cent, _, _ = kmeans_plusplus(xs, k, n_trials=trials, generator=gen, x_sq=x_sq[sub])
        _, d = assign(x[val_idx], cent, x_sq=x_sq[val_idx])
        inertia = float(d.sum(dtype=torch.float64))
        if inertia < best_inertia:
            best, best_inertia = cent, inertia
    centroids = best
    t_init = time.perf_counter() - t0

    counts = torch.zeros(k, device=dev, dtype=torch.float32)
    steps = max(1, (max_iter * n) // batch_size)
    tol_abs = _tol_abs(x, tol)
    ewa, ewa_min, no_improve = None, math.inf, 0
    alpha = min(1.0, 2.0 * batch_size / (n + 1))
    since_reassign = 0
    history: list[float] = []
    step = 0
    converged = False
    t1 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(n, (batch_size,), generator=gen, device=gdev).to(dev)
        xb = x[idx]
        lab, d = assign(xb, centroids, x_sq=x_sq[idx])
        batch_inertia = float(d.sum(dtype=torch.float64)) / batch_size
        history.append(batch_inertia)
        sums, m = _update(xb, lab, k)
        old = centroids
        moved = m > 0
        new_counts = counts + m
        centroids = torch.where(moved[:, None], (old * counts[:, None] + sums) / new_counts.clamp_min(1)[:, None], old)
        counts = new_counts
        # random reassignment of (nearly) empty clusters
        since_reassign += batch_size
        if reassignment_ratio > 0 and (bool((counts == 0).any()) or since_reassign >= 10 * k):
            since_reassign = 0
            low = counts < reassignment_ratio * counts.max()
            n_low = int(low.sum())
            if n_low:
                n_move = min(n_low, batch_size // 2)
                move = torch.nonzero(low)[:n_move, 0]
                pick = torch.randperm(batch_size, generator=gen, device=gdev)[:n_move].to(dev)
                centroids[move] = xb[pick]
                keep = counts[~low]
                counts[move] = keep.min() if keep.numel() else 0.0
        shift = float(((centroids - old) ** 2).sum())
        if tol_abs > 0 and shift <= tol_abs:
            converged = True
            break
        ewa = batch_inertia if ewa is None else ewa * (1 - alpha) + batch_inertia * alpha
        if step > 1 and max_no_improvement is not None:
            if ewa < ewa_min:
                ewa_min, no_improve = ewa, 0
            else:
                no_improve += 1
                if no_improve >= max_no_improvement:
                    converged = True
                    break
    labels, dmin = assign(x, centroids, x_sq=x_sq)
    t_iter = time.perf_counter() - t1
    return KMeansResult(
        centroids=centroids, labels=labels, inertia=float(dmin.sum(dtype=torch.float64)), n_iter=step,
        inertia_history=history, seeding_potential=best_inertia * n / size, init=init, converged=converged,
        seconds={"init": t_init, "iterations": t_iter, "total": t_init + t_iter},
    )
