"""Jaccard distance for clustering: the sparse torch code against a dense NumPy transcription of SpCL's code.

``reference_jaccard`` below is written from the published ``compute_jaccard_distance`` (SpCL, Cluster Contrast):
full argsort, dense N x N V, a Python loop per row, float64; independent of corelib's implementation.
benchmarks/jaccard.py times it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.cluster import DBSCAN
from sklearn.exceptions import EfficiencyWarning

from corelib.cluster import jaccard
from corelib.cluster.jaccard import jaccard_distance
from corelib.errors import CorelibError, InvalidInputError, InvalidTypeError


def reference_jaccard(features: np.ndarray, k1: int = 30, k2: int = 6) -> np.ndarray:
    """Dense Jaccard distance of k-reciprocal encodings, (N, N) float64.

    1. initial_rank: the k1 nearest rows by Euclidean distance (self first, ties by index), k1 columns like faiss'
       ``search(x, k1)``; 2. R(i, k) = forward initial_rank[i, :k+1] filtered by i in initial_rank[j, :k+1];
    3. expansion by R(j, round(k1/2)) when more than 2/3 of it lies in R(i, k1); 4. V[i, E] = softmax(-(2 - 2 f_i.f_E));
    5. V[i] <- mean of V[initial_rank[i, :k2]] when k2 != 1; 6. 1 - s / (2 - s), s = sum_k min(V[i, k], V[j, k]),
    negatives set to 0. The sum of step 6 runs over row i's nonzero columns only (the other terms are min(0, .) = 0),
    for all N rows j at once.
    """
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    gram = x @ x.T
    sq = np.einsum("ij,ij->i", x, x)
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    np.fill_diagonal(dist, -np.inf)  # i first in its own row
    initial_rank = np.argsort(dist, axis=1, kind="stable")[:, :k1]
    del dist

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.any(backward == i, axis=1)]

    half = int(np.around(k1 / 2))
    r_full = [reciprocal(i, k1) for i in range(n)]
    r_half = [reciprocal(i, half) for i in range(n)]
    v = np.zeros((n, n))
    for i in range(n):
        expanded = [r_full[i]]
        for j in r_full[i]:
            if len(np.intersect1d(r_half[j], r_full[i])) > 2.0 / 3.0 * len(r_half[j]):
                expanded.append(r_half[j])
        e = np.unique(np.concatenate(expanded))
        logits = -(2.0 - 2.0 * gram[i, e])
        w = np.exp(logits - logits.max())
        v[i, e] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(axis=0) for i in range(n)])
    vt = np.ascontiguousarray(v.T)
    out = np.empty((n, n))
    for i in range(n):
        cols = np.flatnonzero(v[i])
        s = np.minimum(vt[cols], v[i, cols][:, None]).sum(axis=0)
        out[i] = 1.0 - s / (2.0 - s)
    out[out < 0] = 0.0
    return out


def clustered(seed: int, n: int = 200, dim: int = 32, ids: int = 20, noise: float = 0.7) -> np.ndarray:
    """Float32 unit vectors scattered around random unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, ids, n)] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def tied(seed: int, n: int = 150, ids: int = 8, flips: int = 3) -> np.ndarray:
    """Unit vectors with entries +-1/4 in 16-d (centres with a few flipped signs, some exact duplicates).

    Every dot product is a multiple of 1/16, exact in float32 in any summation order: many exactly tied distances,
    computed identically by both implementations, so the tie-breaking itself is compared.
    """
    rng = np.random.default_rng(seed)
    centres = rng.choice([-1.0, 1.0], size=(ids, 16))
    x = centres[rng.integers(0, ids, n)]
    for row in x:
        row[rng.choice(16, size=rng.integers(0, flips + 1), replace=False)] *= -1.0
    x[n // 2 : n // 2 + 10] = x[:10]  # exact duplicates
    return (x / 4.0).astype(np.float32)


def dense(x: np.ndarray, **kw) -> np.ndarray:
    out = jaccard_distance(torch.from_numpy(x), dense=True, **kw)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (len(x), len(x))
    return out.numpy()


CASES = [  # (name, features, k1, k2)
    ("random", lambda: clustered(0, n=80, dim=16, ids=80, noise=3.0), 8, 3),
    ("clustered", lambda: clustered(1, n=240, dim=32, ids=20), 20, 6),
    ("clustered-k2=1", lambda: clustered(2, n=150, dim=24, ids=12), 30, 1),
    ("odd-k1-big-k2", lambda: clustered(3, n=120, dim=8, ids=15), 5, 8),  # round(5/2) = 2; k2 > k1 averages k1 rows
    ("ties", lambda: tied(4), 10, 4),
    ("ties-k2=1", lambda: tied(5, n=100, ids=5, flips=2), 12, 1),
    ("k1=1", lambda: clustered(13, n=6, dim=4, ids=3), 1, 3),  # V = identity rows: every other pair is 1
    ("k1=N-1", lambda: clustered(14, n=30, dim=4, ids=3), 29, 30),
]


@pytest.mark.parametrize("name,make,k1,k2", CASES, ids=[c[0] for c in CASES])
def test_equals_reference(name, make, k1, k2):
    x = make()
    ours = dense(x, k1=k1, k2=k2)
    ref = reference_jaccard(x, k1=k1, k2=k2)
    assert np.abs(ours - ref).max() <= 1e-5
    assert (np.diag(ours) == 0).all() and ours.min() >= 0.0 and ours.max() <= 1.0
    # pairs that share no column are exactly 1 in both
    assert ((ref == 1.0) == (ours == 1.0)).all()


def test_norms_within_tolerance():
    """Rows a little off the unit sphere: ranking by Euclidean distance, encoding by 2 - 2 f_i.f_j, as published."""
    x = clustered(6, n=120, dim=16, ids=10)
    x *= 1.0 + np.random.default_rng(6).uniform(-9e-4, 9e-4, (len(x), 1)).astype(np.float32)
    assert np.abs(dense(x, k1=15, k2=4) - reference_jaccard(x, k1=15, k2=4)).max() <= 1e-5


def test_small_budgets_give_the_same_result(monkeypatch):
    """Chunking and pair batching do not change the result beyond rounding (tiny budgets: many chunks and batches)."""
    x = clustered(7, n=160, dim=16, ids=12)
    full = dense(x, k1=12, k2=5)
    for name, value in (("_EXPAND_ELEMS", 500), ("_QE_ENTRIES", 300), ("_MAX_PAIRS", 97), ("_GATHER_ELEMS", 40)):
        monkeypatch.setattr(jaccard, name, value)
    small = dense(x, k1=12, k2=5, chunk_size=7)
    # not bit-identical: the softmax of step 4 reduces over a padded width that depends on the chunk
    assert np.abs(small - full).max() <= 1e-6


def test_numpy_and_float64_input():
    x = clustered(8, n=90, dim=16, ids=9)
    ref = dense(x, k1=10, k2=3)
    assert np.abs(jaccard_distance(x.astype(np.float64), k1=10, k2=3).numpy() - ref).max() <= 1e-6


def check_graph(graph, full: np.ndarray, limit: float) -> None:
    """Stored entries equal the dense matrix, exactly the pairs below ``limit`` are stored, rows sorted."""
    assert isinstance(graph, scipy.sparse.csr_matrix) and graph.shape == full.shape and graph.dtype == np.float32
    rows = np.repeat(np.arange(full.shape[0]), np.diff(graph.indptr))
    np.testing.assert_array_equal(graph.data, full[rows, graph.indices])
    assert graph.nnz == int((full < limit).sum())  # so every pair below the limit is stored, zeros included
    diagonal = graph.indices == rows
    assert diagonal.sum() == full.shape[0] and (graph.data[diagonal] == 0).all()  # stored as explicit zeros
    same_row = rows[1:] == rows[:-1]
    assert (np.diff(graph.data)[same_row] >= 0).all()  # each row sorted by distance


def dbscan(matrix, eps: float) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", EfficiencyWarning)  # would mean scikit-learn had to re-sort the graph
        return DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(matrix)


@pytest.mark.parametrize("make", [lambda: clustered(9, n=300, dim=32, ids=25, noise=0.8), lambda: tied(10, n=200)],
                         ids=["clustered", "ties"])
def test_sparse_graph_and_dbscan(make):
    x = make()
    full = dense(x, k1=20, k2=6)
    graph = jaccard_distance(torch.from_numpy(x), k1=20, k2=6, dense=False)
    check_graph(graph, full, 1.0)
    assert graph.nnz < full.size  # some pairs share no column
    cut = jaccard_distance(torch.from_numpy(x), k1=20, k2=6, max_distance=0.7)  # dense=None + max_distance: sparse
    check_graph(cut, full, 0.7)
    n_clusters = set()
    for eps in (0.1, 0.3, 0.5, 0.6, 0.69, 0.8, 0.95):
        labels = dbscan(full, eps)
        np.testing.assert_array_equal(dbscan(graph, eps), labels)
        if eps < 0.7:
            np.testing.assert_array_equal(dbscan(cut, eps), labels)
        n_clusters.add(labels.max() + 1)
    assert len(n_clusters) > 2  # the eps values give different clusterings: the comparison means something


def test_dense_default_by_size():
    x = torch.from_numpy(clustered(11, n=50, dim=8, ids=5))
    assert isinstance(jaccard_distance(x, k1=5, k2=2), torch.Tensor)
    assert scipy.sparse.issparse(jaccard_distance(x, k1=5, k2=2, dense=False, progress=True))


@pytest.mark.parametrize("kwargs,error,words", [
    ({"features": torch.zeros(10)}, InvalidInputError, "2-D"),
    ({"features": torch.zeros(0, 4)}, InvalidInputError, "empty"),
    ({"features": torch.ones(10, 4, dtype=torch.long)}, InvalidInputError, ".float()"),
    ({"features": [[1.0, 0.0]] * 5}, InvalidTypeError, "torch.Tensor"),
    ({"nan": True}, InvalidInputError, "NaN"),
    ({"scale": 2.0}, InvalidInputError, "L2-normalise"),
    ({"scale": 1.002}, InvalidInputError, "normalize(features, dim=1)"),
    ({"k1": 20}, InvalidInputError, "lower k1"),
    ({"k1": 0}, InvalidInputError, "k1 must be"),
    ({"k2": 0}, InvalidInputError, "k2 must be"),
    ({"max_distance": 1.5}, InvalidInputError, "max_distance must be"),
    ({"max_distance": 0.0}, InvalidInputError, "max_distance must be"),
    ({"max_distance": 0.5, "dense": True}, InvalidInputError, "dense=False"),
    ({"chunk_size": 0}, InvalidInputError, "chunk_size"),
])
def test_input_checks(kwargs, error, words):
    x = torch.nn.functional.normalize(torch.randn(20, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    if kwargs.pop("nan", False):
        x[3, 1] = float("nan")
    x = x * kwargs.pop("scale", 1.0)
    kwargs = {"features": x, "k1": 5, "k2": 2, **kwargs}
    with pytest.raises(error) as info:
        jaccard_distance(**kwargs)
    assert isinstance(info.value, CorelibError)
    assert words in str(info.value)


@pytest.mark.gpu
def test_cuda_equals_cpu():
    x = torch.from_numpy(clustered(12, n=500, dim=64, ids=30))
    cpu = jaccard_distance(x, k1=20, k2=6, dense=True)
    gpu = jaccard_distance(x, k1=20, k2=6, dense=True, device="cuda")
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() <= 1e-5
    graph = jaccard_distance(x.cuda(), k1=20, k2=6, dense=False)
    rows = np.repeat(np.arange(len(x)), np.diff(graph.indptr))
    assert np.abs(graph.data - cpu.numpy()[rows, graph.indices]).max() <= 1e-5
