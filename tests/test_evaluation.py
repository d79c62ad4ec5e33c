"""Retrieval evaluation against a plain reference written from the definitions.

Reference: for each query, drop the junk gallery entries of the protocol, sort the rest by distance
with a *stable* sort (ties in gallery-index order), and read off the 1-based ranks of the matches:
AP = mean over matches of (matches so far / rank), INP = matches / rank of the last match, CMC from
the first match; queries without a match are skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corelib.data.dataset import Sample
from corelib.data.vehicleid import draw_vehicleid_gallery
from corelib.evaluation.vehicleid import vehicleid_draw
from corelib.evaluation import (
    evaluate_distmat,
    evaluate_ranking,
    evaluate_vehicleid,
    pairwise_distance,
)


def reference(dist, q_pids, g_pids, q_cams=None, g_cams=None, max_rank=50):
    dist = np.asarray(dist, dtype=np.float64)
    aps, inps, firsts = [], [], []
    per_query_ap = []
    for i in range(dist.shape[0]):
        keep = g_pids >= 0
        if q_cams is not None:
            keep &= ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        order = np.argsort(dist[i][keep], kind="stable")
        matches = g_pids[keep][order] == q_pids[i]
        if not matches.any():
            per_query_ap.append(np.nan)
            continue
        ranks = np.nonzero(matches)[0] + 1
        ap = np.mean(np.arange(1, len(ranks) + 1) / ranks)
        aps.append(ap)
        per_query_ap.append(ap)
        inps.append(len(ranks) / ranks[-1])
        firsts.append(ranks[0])
    firsts = np.array(firsts)
    cmc = np.array([(firsts <= r).mean() for r in range(1, max_rank + 1)])
    return {"mAP": np.mean(aps), "mINP": np.mean(inps), "cmc": cmc, "ap": np.array(per_query_ap),
            "skipped": int(np.isnan(per_query_ap).sum())}


def random_case(seed, nq=40, ng=120, n_ids=12, n_cams=3, tie_levels=None):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, n_ids + 3, nq)  # some query ids never appear in the gallery
    g_pids = rng.integers(0, n_ids + 1, ng)  # pid 0: distractors
    g_pids[rng.random(ng) < 0.05] = -1  # junk
    q_cams, g_cams = rng.integers(0, n_cams, nq), rng.integers(0, n_cams, ng)
    # an all-junk query: every gallery image of its id sits in its own camera
    q_pids[0] = n_ids + 5
    g_pids[:3] = n_ids + 5
    g_cams[:3] = q_cams[0]
    if tie_levels:
        dist = rng.integers(0, tie_levels, (nq, ng)).astype(np.float32)  # many exact ties
    else:
        dist = rng.random((nq, ng)).astype(np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [None, 3, 8])
@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_equals_reference_with_ties_junk_and_distractors(seed, ties, chunk, path, monkeypatch):
    from corelib.evaluation import ranking

    # both ways of counting the negatives before each positive must agree with the reference
    monkeypatch.setattr(ranking, "_SPARSE_SHARE", 0.0 if path == "dense" else 1.0)
    dist, qp, gp, qc, gc = random_case(seed, tie_levels=ties)
    ref = reference(dist, qp, gp, qc, gc)
    res = evaluate_distmat(torch.from_numpy(dist), qp, gp, qc, gc, protocol="market", chunk_size=chunk)
    assert res.mAP == pytest.approx(ref["mAP"], abs=1e-6)
    assert res.mINP == pytest.approx(ref["mINP"], abs=1e-6)
    np.testing.assert_allclose(res.cmc, ref["cmc"], atol=1e-6)
    np.testing.assert_allclose(res.ap, ref["ap"], atol=1e-6)  # NaN where skipped
    assert res.num_skipped == ref["skipped"] >= 1  # at least the all-junk query


def test_feature_path_matches_reference_on_its_distances():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(15, 32))
    q_pids, g_pids = rng.integers(0, 15, 60), rng.integers(0, 15, 300)
    qf = torch.nn.functional.normalize(torch.tensor(centres[q_pids] + 0.8 * rng.normal(size=(60, 32))), dim=1)
    gf = torch.nn.functional.normalize(torch.tensor(centres[g_pids] + 0.8 * rng.normal(size=(300, 32))), dim=1)
    q_cams, g_cams = rng.integers(0, 4, 60), rng.integers(0, 4, 300)
    for metric in ("euclidean", "cosine"):
        res = evaluate_ranking(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, chunk_size=16)
        ref = reference(pairwise_distance(qf, gf, metric).numpy(), q_pids, g_pids, q_cams, g_cams)
        assert res.mAP == pytest.approx(ref["mAP"], abs=1e-6) and 0.2 < res.mAP < 1.0
        np.testing.assert_allclose(res.cmc, ref["cmc"], atol=1e-6)
    d = pairwise_distance(qf, gf, "euclidean")
    assert torch.allclose(d, torch.cdist(qf.float(), gf.float()) ** 2, atol=1e-5)


def test_result_record_names_its_protocol():
    dist, qp, gp, qc, gc = random_case(1)
    rec = evaluate_distmat(torch.from_numpy(dist), qp, gp, qc, gc, protocol="veriwild").to_dict()
    assert rec["protocol"] == "veriwild"
    assert {"mAP", "mINP", "rank1", "rank5", "rank10", "rank20", "num_skipped"} <= set(rec)


def test_veriwild_query_contained_in_gallery_is_removed():
    # VERI-Wild's gallery list can contain the query image itself: distance 0, same id, same camera
    qf = torch.eye(3)
    gf = torch.cat([torch.eye(3), torch.eye(3) * 0.9 + 0.05])
    q_pids, g_pids = np.array([1, 2, 3]), np.array([1, 2, 3, 1, 2, 3])
    q_cams, g_cams = np.array([0, 0, 0]), np.array([0, 0, 0, 1, 1, 1])
    res = evaluate_ranking(qf, gf, q_pids, g_pids, q_cams, g_cams, protocol="veriwild")
    assert res.mAP == pytest.approx(1.0) and res.num_positives.tolist() == [1, 1, 1]


def test_cuhk03np_single_positive_gives_map_equal_to_mean_reciprocal_rank():
    rng = np.random.default_rng(3)
    n = 20  # CUHK03-NP: one query per identity and camera; the other camera holds the match
    q_pids, g_pids = np.arange(n), np.arange(n)
    q_cams, g_cams = np.zeros(n, int), np.ones(n, int)
    dist = torch.from_numpy(rng.random((n, n)).astype(np.float32))
    res = evaluate_distmat(dist, q_pids, g_pids, q_cams, g_cams, protocol="market")
    assert res.mAP == pytest.approx(np.mean(1.0 / res.first_hit)) and res.mINP == pytest.approx(res.mAP)


def test_vehicleid_keeps_every_true_match_without_cameras():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(30), 4)
    feats = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(30, 16))[pids] + 1.0 * rng.normal(size=(120, 16))), dim=1)
    res = evaluate_vehicleid(feats, pids, draws=10)
    assert len(res.draws) == 10 and all(d.protocol == "vehicleid" for d in res.draws)
    assert all(d.num_skipped == 0 for d in res.draws), "no true match may be filtered out"
    assert all((d.num_positives == 1).all() for d in res.draws)  # one gallery image per vehicle
    assert res.std["mAP"] > 0 and res.seed0.extras["draw_seed"] == 0
    assert res.to_dict()["protocol"] == "vehicleid" and "mAP_std" in res.to_dict()
    # market protocol needs cameras; a fake constant camera would filter every match
    with pytest.raises(ValueError, match="vehicleid"):
        evaluate_ranking(feats, feats, pids, pids, protocol="market")


def test_vehicleid_draw_is_the_loaders_draw():
    pids = [5, 5, 5, 7, 7, 9]
    samples = [Sample(f"img{i}.jpg", p, None) for i, p in enumerate(pids)]
    for seed in range(4):
        qi, gi = vehicleid_draw(pids, seed)
        q, g = draw_vehicleid_gallery(samples, seed)
        assert [s.path for s in q] == [f"img{i}.jpg" for i in qi]
        assert [s.path for s in g] == [f"img{i}.jpg" for i in gi]
        assert sorted(qi + gi) == list(range(6)) and len(gi) == 3


def test_bad_inputs_name_the_problem():
    qf, gf = torch.randn(4, 8), torch.randn(10, 8)
    qp, gp = np.arange(4), np.arange(10) % 4
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_ranking(qf * float("nan"), gf, qp, gp, np.zeros(4), np.ones(10))
    with pytest.raises(ValueError, match="same D"):
        evaluate_ranking(qf, torch.randn(10, 9), qp, gp, np.zeros(4), np.ones(10))
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_ranking(qf, gf, qp, gp, np.zeros(4), np.ones(10), protocol="cuhk")
    with pytest.raises(ValueError, match="no query has a valid positive"):
        evaluate_ranking(qf, gf, qp + 100, gp, np.zeros(4), np.ones(10))


@pytest.mark.gpu
def test_cuda_equals_cpu():
    dist, qp, gp, qc, gc = random_case(2, tie_levels=4)
    cpu = evaluate_distmat(torch.from_numpy(dist), qp, gp, qc, gc)
    gpu = evaluate_distmat(torch.from_numpy(dist).cuda(), qp, gp, qc, gc)
    assert gpu.mAP == pytest.approx(cpu.mAP, abs=1e-9)
    np.testing.assert_allclose(gpu.cmc, cpu.cmc)


def test_reranked_distances_evaluate_chunk_by_chunk():
    from corelib.evaluation import evaluate_distance_chunks, k_reciprocal_chunks, rerank

    rng = np.random.default_rng(7)
    centres = rng.normal(size=(10, 16))
    q_pids, g_pids = rng.integers(0, 10, 30), rng.integers(0, 10, 120)
    qf = torch.nn.functional.normalize(torch.tensor(centres[q_pids] + 0.9 * rng.normal(size=(30, 16)), dtype=torch.float32), dim=1)
    gf = torch.nn.functional.normalize(torch.tensor(centres[g_pids] + 0.9 * rng.normal(size=(120, 16)), dtype=torch.float32), dim=1)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 120)
    chunked = evaluate_distance_chunks(k_reciprocal_chunks(qf, gf, k1=10, k2=3, query_chunk=8),
                                       q_pids, g_pids, q_cams, g_cams)
    whole = evaluate_distmat(rerank(qf, gf, k1=10, k2=3), q_pids, g_pids, q_cams, g_cams)
    assert chunked.mAP == pytest.approx(whole.mAP, abs=1e-9)
