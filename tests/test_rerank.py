"""k-reciprocal re-ranking: the sparse torch code against a dense NumPy transcription of the paper.

``reference_rerank`` below is written directly from the 7 steps (full argsort, dense N x N V,
Python loops, float64), independent of corelib's implementation; benchmarks/rerank.py times it.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from corelib.evaluation.rerank import k_reciprocal_chunks, rerank


def reference_rerank(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
                     lambda_value: float = 0.3) -> np.ndarray:
    """Dense k-reciprocal re-ranking (Zhong et al. 2017), (Q, G) float64."""
    x = np.concatenate([query, gallery]).astype(np.float64)
    n, nq = x.shape[0], query.shape[0]
    # 1. squared Euclidean distances, each row divided by its maximum
    sq = (x * x).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(dist, 0.0)
    dist /= dist.max(axis=1, keepdims=True)
    # 2. initial ranking
    rank = np.argsort(dist, axis=1)

    # 3. k-reciprocal neighbours and their expansion
    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, : k + 1]
        return np.array([j for j in forward if i in rank[j, : k + 1]], dtype=np.int64)

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r_i = reciprocal(i, k1)
        expanded = list(r_i)
        for j in r_i:
            r_j = reciprocal(j, half)
            if len(np.intersect1d(r_j, r_i)) > 2.0 / 3.0 * len(r_j):
                expanded.extend(r_j)
        e = np.unique(expanded)
        # 4. V row: normalised exp(-d')
        w = np.exp(-dist[i, e])
        v[i, e] = w / w.sum()
    # 5. query expansion
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    # 6. Jaccard distance from the sum of minima
    jaccard = np.empty((nq, n - nq))
    for i in range(nq):
        s = np.minimum(v[i][None, :], v[nq:]).sum(axis=1)
        jaccard[i] = 1.0 - s / (2.0 - s)
    # 7. mix with the original distance
    return (1.0 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]


def identity_features(seed: int, nq: int = 40, ng: int = 160, dim: int = 32, ids: int = 25,
                      noise: float = 0.6, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Float32 features with identity structure: samples scattered around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, ids, nq + ng)
    x = centres[labels] + noise * rng.standard_normal((nq + ng, dim)) / np.sqrt(dim)
    if normalise:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    else:  # arbitrary scale and offset: exercises the norms trick away from the unit sphere
        x = 5.0 * x + 3.0
    x = x.astype(np.float32)
    return x[:nq], x[nq:]


def ours(q: np.ndarray, g: np.ndarray, **kw) -> np.ndarray:
    return rerank(torch.from_numpy(q), torch.from_numpy(g), **kw).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_reference_defaults(seed):
    q, g = identity_features(seed)
    diff = np.abs(ours(q, g) - reference_rerank(q, g)).max()
    assert diff < 1e-5


@pytest.mark.parametrize(
    "kw",
    [
        dict(k2=1),
        dict(lambda_value=0.0),
        dict(lambda_value=1.0),
        dict(k1=5, k2=3),  # round(5/2) = 2: numpy rounds half to even
        dict(k1=7, k2=1, lambda_value=0.5),
        dict(k1=1, k2=2),
        dict(k1=20, k2=25),  # query expansion beyond the k1 + 1 list
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_matches_dense_reference_parameters(kw):
    q, g = identity_features(10)
    diff = np.abs(ours(q, g, **kw) - reference_rerank(q, g, **kw)).max()
    assert diff < 1e-5


def test_matches_dense_reference_unnormalised_and_small_gallery():
    q, g = identity_features(5, nq=30, ng=12, dim=16, ids=6, noise=1.0, normalise=False)
    diff = np.abs(ours(q, g) - reference_rerank(q, g)).max()
    assert diff < 1e-5


@pytest.mark.parametrize("keep_query_gallery", [True, False])
def test_matches_dense_reference_with_tiny_blocks(monkeypatch, keep_query_gallery):
    """Real sizes fit the small cases in one block; shrink every internal chunk so that the
    symmetric block pass (transposed top-k merges, blocks straddling the query/gallery border),
    the chunked V build, the feature gathers and the Jaccard pair batches all run many times."""
    rr = importlib.import_module("corelib.evaluation.rerank")  # the module, not the function of that name

    monkeypatch.setattr(rr, "_BLOCK_CPU", 37)
    monkeypatch.setattr(rr, "_ROW_CHUNK", 29)
    monkeypatch.setattr(rr, "_GATHER_ELEMS", 32 * 5)
    monkeypatch.setattr(rr, "_MAX_PAIRS", 50)
    monkeypatch.setattr(rr, "_CACHE_ELEMS", 1 << 28 if keep_query_gallery else 0)
    q, g = identity_features(11, nq=45)
    diff = np.abs(ours(q, g, query_chunk=16) - reference_rerank(q, g)).max()
    assert diff < 1e-5


def test_chunks_equal_one_block_and_cover_queries_in_order():
    q, g = identity_features(3)
    tq, tg = torch.from_numpy(q), torch.from_numpy(g)
    whole = rerank(tq, tg, query_chunk=10_000)
    parts = list(k_reciprocal_chunks(tq, tg, query_chunk=7))
    assert [p[0] for p in parts] == [slice(s, min(s + 7, 40)) for s in range(0, 40, 7)]
    assert torch.allclose(torch.cat([b for _, b in parts]), whole, rtol=0, atol=1e-6)


def test_shape_dtype_device_and_range():
    q, g = identity_features(4)
    out = rerank(torch.from_numpy(q).double(), torch.from_numpy(g).double(), device="cpu")
    assert out.shape == (40, 160) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6


def test_duplicates_do_not_break_self_first():
    q, g = identity_features(6)
    g[:40] = q  # every query has an exact duplicate in the gallery
    out = ours(q, g, k1=5, k2=2)
    assert np.isfinite(out).all()
    assert np.allclose(np.diag(out[:, :40]), 0.0, atol=1e-5)  # identical V rows, d' = 0
    same = np.zeros((3, 4), np.float32)  # all features equal: no NaN from a zero row maximum
    assert np.isfinite(ours(same[:1], same[1:], k1=2, k2=1)).all()


@pytest.mark.gpu
def test_cuda_matches_cpu():
    q, g = identity_features(7, nq=300, ng=900, dim=64, ids=150)
    tq, tg = torch.from_numpy(q), torch.from_numpy(g)
    cpu = rerank(tq, tg)
    gpu = rerank(tq.cuda(), tg.cuda(), query_chunk=128)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-4


@pytest.mark.parametrize(
    "q, g, kw, match",
    [
        (torch.zeros(4), torch.zeros(5, 4), {}, "2-D"),
        (torch.zeros(4, 3), torch.zeros(5, 4), {}, "feature dim"),
        (torch.zeros(0, 4), torch.zeros(5, 4), {}, "empty"),
        (torch.zeros(4, 4), torch.zeros(5, 4, dtype=torch.long), {}, "floating-point"),
        (torch.full((4, 4), float("nan")), torch.zeros(5, 4), {}, "query_feats contain NaN or inf"),
        (torch.zeros(4, 4), torch.full((5, 4), float("inf")), {}, "gallery_feats contain NaN or inf"),
        (torch.zeros(4, 4), torch.zeros(5, 4), dict(k1=9), "smaller than the number of images"),
        (torch.zeros(4, 4), torch.zeros(5, 4), dict(k1=0), "k1"),
        (torch.zeros(4, 4), torch.zeros(5, 4), dict(k2=0), "k2"),
        (torch.zeros(4, 4), torch.zeros(5, 4), dict(lambda_value=1.5), "lambda_value"),
        (torch.zeros(4, 4), torch.zeros(5, 4), dict(lambda_value=-0.1), "lambda_value"),
        (torch.zeros(4, 4), torch.zeros(5, 4), dict(query_chunk=0), "query_chunk"),
    ],
)
def test_validation_errors_at_call_time(q, g, kw, match):
    kw = {"k1": 2, **kw}
    with pytest.raises(ValueError, match=match):
        k_reciprocal_chunks(q, g, **kw)  # raises before the first next()
    with pytest.raises(ValueError, match=match):
        rerank(q, g, **kw)


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match="torch.from_numpy"):
        rerank(np.zeros((4, 4), np.float32), torch.zeros(5, 4), k1=2)
