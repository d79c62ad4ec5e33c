"""The bf16-prefiltered evaluation is exact: equal to the float32 one on cases whose distance gaps
sit inside the bf16 bound (so that the bf16 distances alone would rank them wrongly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corelib.evaluation import evaluate_ranking, resolve_precision
from corelib.evaluation import ranking
from corelib.errors import InvalidInputError

from test_evaluation import reference


def near_tie_case(seed: int, nq: int = 6, per_query: int = 40, dim: int = 64, gap: float = 2e-4, dup: int = 4):
    """Queries far apart (random directions, norm 3), each with ``per_query`` gallery items at squared distances
    0.5 + k * gap (k shuffled) and random pids (about a third are positives, some in the query's
    own camera: junk), plus ``dup`` exact duplicates of its items under other pids (exact ties).

    The bf16 error of a distance here is ~1e-2, fifty times the gap; float32's is ~1e-6.
    """
    rng = np.random.default_rng(seed)
    qf = np.zeros((nq, dim))
    gal, g_pids, g_cams = [], [], []
    for i in range(nq):
        v = rng.normal(size=dim)
        qf[i] = 3.0 * v / np.linalg.norm(v)
        target = 0.5 + gap * rng.permutation(per_query)  # the squared distances, distinct by `gap`
        alpha = rng.uniform(0.8, 0.95, per_query)  # g = alpha q + beta u, u a unit vector orthogonal to q
        beta = np.sqrt(target - 9.0 * (alpha - 1.0) ** 2)  # |g - q|^2 = 9 (alpha - 1)^2 + beta^2 = target
        u = rng.normal(size=(per_query, dim))
        u -= (u @ qf[i])[:, None] * qf[i] / 9.0
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        g = alpha[:, None] * qf[i] + beta[:, None] * u  # q.g = 9 alpha varies: the bf16 product errs
        pids = np.where(rng.random(per_query) < 0.35, i, 100 + rng.integers(0, 50, per_query))
        cams = rng.integers(0, 3, per_query)
        pick = rng.choice(per_query, dup, replace=False)  # exact ties: the same row, another pid
        g = np.concatenate([g, g[pick]])
        pids = np.concatenate([pids, np.where(pids[pick] == i, 200 + i, i)])
        cams = np.concatenate([cams, rng.integers(0, 3, dup)])
        gal.append(g), g_pids.append(pids), g_cams.append(cams)
    gf = np.concatenate(gal)
    order = rng.permutation(len(gf))  # interleave the queries' neighbourhoods in the gallery
    q = torch.tensor(qf, dtype=torch.float32)
    g = torch.tensor(gf[order], dtype=torch.float32)
    return q, g, np.arange(nq), np.concatenate(g_pids)[order], rng.integers(0, 3, nq), np.concatenate(g_cams)[order]


def assert_same_result(a, b):
    np.testing.assert_array_equal(a.first_hit, b.first_hit)
    np.testing.assert_array_equal(a.num_positives, b.num_positives)
    np.testing.assert_array_equal(np.nan_to_num(a.ap, nan=-1), np.nan_to_num(b.ap, nan=-1))
    np.testing.assert_array_equal(np.nan_to_num(a.inp, nan=-1), np.nan_to_num(b.inp, nan=-1))
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert a.mAP == b.mAP and a.mINP == b.mINP


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_bf16_prefilter_equals_float32_on_near_ties(seed, metric, chunk):
    q, g, qp, gp, qc, gc = near_tie_case(seed)
    fp32 = evaluate_ranking(q, g, qp, gp, qc, gc, metric=metric, chunk_size=chunk, precision="float32")
    bf16 = evaluate_ranking(q, g, qp, gp, qc, gc, metric=metric, chunk_size=chunk, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("float32", "bf16")
    assert_same_result(bf16, fp32)
    # and both are the plain argsort reference on float64 distances
    qd, gd = q.double(), g.double()
    if metric == "cosine":
        qd, gd = torch.nn.functional.normalize(qd, dim=1), torch.nn.functional.normalize(gd, dim=1)
        d64 = 1.0 - qd @ gd.t()
    else:
        d64 = torch.cdist(qd, gd) ** 2
    ref = reference(d64.numpy(), qp, gp, qc, gc)
    np.testing.assert_allclose(bf16.ap, ref["ap"], rtol=0, atol=1e-12)


def test_the_near_tie_case_is_inside_the_bf16_bound(monkeypatch):
    """The case is hard: ranking the bf16 distances directly changes the result, and the bounded
    ranking rescored pairs exactly to get it right."""
    q, g, qp, gp, qc, gc = near_tie_case(0)
    gal = ranking._PreparedGallery(g, "euclidean", bf16=True)
    approx, eps = gal.bf16_block(q)
    gap = 2e-4
    assert float(eps.min()) > 10 * gap  # the bound is far wider than the gaps ...
    exact = torch.cdist(q.double(), g.double()) ** 2
    err = (approx.double() - exact).abs()
    assert bool((err <= eps.double()[:, None]).all())  # ... and it holds
    near = exact < 1.0  # each query's own neighbourhood
    assert float(err[near].median()) > gap  # the bf16 error is larger than the gaps
    naive = ranking.evaluate_distmat(approx, qp, gp, qc, gc)
    fp32 = evaluate_ranking(q, g, qp, gp, qc, gc, precision="float32")
    assert not np.array_equal(np.nan_to_num(naive.ap), np.nan_to_num(fp32.ap))
    calls = []
    real = ranking._PreparedGallery.exact_pairs

    def counting(self, qc_, rows, cols):
        calls.append(rows.numel())
        return real(self, qc_, rows, cols)

    monkeypatch.setattr(ranking._PreparedGallery, "exact_pairs", counting)
    evaluate_ranking(q, g, qp, gp, qc, gc, precision="bf16")
    assert len(calls) == 2 and calls[1] > 0  # the positives, then the undecided negatives


def test_bf16_prefilter_on_a_realistic_case_and_a_single_chunk():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 128))
    qp, gp = rng.integers(0, 40, 200), rng.integers(-1, 40, 1500)
    qf = torch.tensor(centres[qp] + 0.9 * rng.normal(size=(200, 128)), dtype=torch.float32)
    gf = torch.tensor(centres[gp.clip(0)] + 0.9 * rng.normal(size=(1500, 128)), dtype=torch.float32)
    qc, gc = rng.integers(0, 5, 200), rng.integers(0, 5, 1500)
    for chunk in (None, 37):
        assert_same_result(evaluate_ranking(qf, gf, qp, gp, qc, gc, precision="bf16", chunk_size=chunk),
                           evaluate_ranking(qf, gf, qp, gp, qc, gc, precision="float32", chunk_size=chunk))


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu, 10**9) == "float32"
    assert resolve_precision("bf16", cpu, 10) == "bf16"
    # auto never takes the bf16 pass: its bound leaves most pairs of realistic features undecided
    assert resolve_precision("auto", cpu, 10) == "float32"
    assert resolve_precision("auto", cpu, 10**9) == "float32"
    with pytest.raises(InvalidInputError, match="valid: auto, float32, bf16"):
        resolve_precision("fp8", cpu, 10)


@pytest.mark.gpu
def test_bf16_prefilter_on_cuda_equals_float32():
    q, g, qp, gp, qc, gc = near_tie_case(1)
    fp32 = evaluate_ranking(q, g, qp, gp, qc, gc, precision="float32")
    bf16 = evaluate_ranking(q.cuda(), g.cuda(), qp, gp, qc, gc, precision="bf16")
    assert_same_result(bf16, fp32)
