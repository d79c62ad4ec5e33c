"""K-means with greedy k-means++ seeding, mini-batch k-means and pseudo-label quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corelib.cluster import (
    cluster_size_stats,
    default_trials,
    gini,
    kmeans,
    kmeans_plusplus,
    label_agreement,
    minibatch_kmeans,
    pairwise_precision_recall,
    pseudo_label_quality,
    purity,
)


def blobs(n_centres=8, per=40, dim=16, spread=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_centres, dim, generator=g) * 5
    x = centres.repeat_interleave(per, 0) + spread * torch.randn(n_centres * per, dim, generator=g)
    return x, centres, torch.arange(n_centres).repeat_interleave(per)


def identity_features(n_ids=60, per=6, dim=32, noise=0.6, seed=0):
    """L2-normalised features with a few samples per identity, like ReID embeddings."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_ids, dim, generator=g), dim=1)
    x = centres.repeat_interleave(per, 0) + noise / dim**0.5 * torch.randn(n_ids * per, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), torch.arange(n_ids).repeat_interleave(per)


def test_trials_rule():
    assert default_trials(500) == default_trials(900) == 8 and default_trials(2000) == 9


@pytest.mark.parametrize("init", ["greedy_kmeans++", "kmeans++"])
def test_recovers_known_centres(init):
    x, centres, truth = blobs()
    res = kmeans(x, 8, init=init, seed=1)
    # every true centre has a found centroid next to it
    d = torch.cdist(centres, res.centroids)
    assert float(d.min(dim=1).values.max()) < 0.3
    assert pseudo_label_quality(res.labels, truth)["ari"] == pytest.approx(1.0)
    assert res.converged and res.inertia <= res.seeding_potential


@pytest.mark.slow
def test_seeding_potential_greedy_le_plusplus_le_random():
    x, _ = identity_features(n_ids=80, per=5, seed=3)
    k = 80
    pots = {"greedy": [], "plusplus": [], "random": []}
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        pots["greedy"].append(kmeans_plusplus(x, k, generator=g)[2])
        g = torch.Generator().manual_seed(seed)
        pots["plusplus"].append(kmeans_plusplus(x, k, n_trials=1, generator=g)[2])
        res = kmeans(x, k, init="random", seed=seed, max_iter=1)  # the seeding's potential: max_iter=0 is refused
        pots["random"].append(res.seeding_potential)
    mean = {key: float(np.mean(v)) for key, v in pots.items()}
    assert mean["greedy"] <= mean["plusplus"] <= mean["random"], mean


def test_seeding_potential_is_the_inertia_of_the_centres():
    x, _ = identity_features(seed=4)
    centres, idx, pot = kmeans_plusplus(x, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(centres, x[idx]) and len(set(idx.tolist())) == 30
    assert pot == pytest.approx(float(torch.cdist(x, centres).pow(2).min(1).values.sum()), rel=1e-4)


@pytest.mark.slow
def test_final_inertia_close_to_scikit_learn():
    from sklearn.cluster import KMeans

    # averaged over seeds: single runs of either implementation vary by a few percent
    x, _ = identity_features(n_ids=100, per=6, noise=0.4, seed=5)
    ours = [kmeans(x, 100, seed=s).inertia for s in range(10)]
    theirs = [KMeans(100, init="k-means++", n_init=1, random_state=s).fit(x.numpy()).inertia_ for s in range(10)]
    assert np.mean(ours) <= np.mean(theirs) * 1.005, (ours, theirs)


@pytest.mark.slow
def test_same_seed_same_labels_and_other_seed_differs():
    x, _ = identity_features(seed=6)
    a, b = kmeans(x, 40, seed=7), kmeans(x, 40, seed=7)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    c = kmeans(x, 40, seed=8, max_iter=1)
    assert not torch.equal(kmeans(x, 40, seed=7, max_iter=1).centroids, c.centroids)
    m1, m2 = minibatch_kmeans(x, 40, batch_size=64, seed=2), minibatch_kmeans(x, 40, batch_size=64, seed=2)
    assert torch.equal(m1.labels, m2.labels)


def test_inertia_history_and_empty_clusters():
    x, _ = identity_features(seed=9)
    res = kmeans(x, 25, init="random", seed=0, tol=0)
    assert len(res.inertia_history) == res.n_iter
    assert all(b <= a + 1e-3 for a, b in zip(res.inertia_history, res.inertia_history[1:]))
    # duplicated points force empty clusters: they are re-seeded, never left at NaN
    dup = torch.cat([x[:5]] * 20)
    out = kmeans(dup, 5, init=dup[:5].clone(), max_iter=5)
    assert torch.isfinite(out.centroids).all() and out.labels.max() < 5


def test_minibatch_close_to_full_batch():
    x, truth = identity_features(n_ids=50, per=8, noise=0.4, seed=10)
    full = kmeans(x, 50, seed=0)
    mb = minibatch_kmeans(x, 50, batch_size=128, max_iter=50, seed=0)
    assert mb.inertia <= full.inertia * 1.15
    assert pseudo_label_quality(mb.labels, truth)["nmi"] > 0.9


def test_faiss_backend_runs():
    pytest.importorskip("faiss")
    x, _ = identity_features(seed=11)
    res = kmeans(x, 20, backend="faiss", max_iter=10)
    assert res.labels.shape == (x.shape[0],) and res.init.startswith("faiss")


@pytest.mark.parametrize(
    "x, k, match",
    [
        (torch.zeros(0, 4), 1, "empty"),
        (torch.randn(5, 4), 6, "larger than the number of samples"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1, "NaN or inf"),
        (torch.tensor([[0.0, float("inf")], [1.0, 1.0]]), 1, "NaN or inf"),
        (torch.randn(5), 2, r"\(n, d\)"),
    ],
)
def test_bad_input_raises_value_error(x, k, match):
    with pytest.raises(ValueError, match=match):
        kmeans(x, k)
    with pytest.raises(ValueError, match=match):
        minibatch_kmeans(x, k)


def test_unknown_init_or_backend():
    with pytest.raises(ValueError, match="greedy_kmeans"):
        kmeans(torch.randn(10, 2), 2, init="kmeans||")
    with pytest.raises(ValueError, match="faiss"):
        kmeans(torch.randn(10, 2), 2, backend="cuml")


def test_quality_metrics_by_hand():
    truth = [0, 0, 0, 1, 1, 2]
    pred = [5, 5, 7, 7, 7, 9]
    # pairs together in pred: (0,1), (2,3), (2,4), (3,4) -> 4; of those same identity: (0,1), (3,4)
    p, r, f = pairwise_precision_recall(pred, truth)
    assert p == pytest.approx(2 / 4) and r == pytest.approx(2 / 4)  # true pairs: 3 + 1 = 4
    assert purity(pred, truth) == pytest.approx((2 + 2 + 1) / 6)
    assert gini([1, 1, 1, 1]) == pytest.approx(0.0) and gini([0, 0, 0, 10]) == pytest.approx(0.75)
    st = cluster_size_stats(pred)
    assert (st["clusters"], st["size_min"], st["size_max"], st["singletons"]) == (3, 1, 3, 1)
    assert label_agreement(pred, [1, 1, 2, 2, 2, 3])["ari"] == pytest.approx(1.0)
    q = pseudo_label_quality(torch.tensor(pred), torch.tensor(truth))
    assert 0 < q["nmi"] < 1 and q["purity"] == pytest.approx(5 / 6)


@pytest.mark.gpu
def test_cuda_same_seed_identical_and_close_to_cpu():
    x, _ = identity_features(seed=12)
    a, b = kmeans(x, 30, seed=3, device="cuda"), kmeans(x, 30, seed=3, device="cuda")
    assert torch.equal(a.labels, b.labels)
    cpu = kmeans(x, 30, seed=3)
    assert a.inertia == pytest.approx(cpu.inertia, rel=0.05)



@pytest.mark.parametrize("seed", range(3))
def test_bf16_filtered_seeding_equals_float32(seed):
    x, _ = identity_features(n_ids=80, per=5, noise=0.5, seed=20 + seed)
    a = kmeans_plusplus(x, 60, generator=torch.Generator().manual_seed(seed), bf16_filter=True)
    b = kmeans_plusplus(x, 60, generator=torch.Generator().manual_seed(seed), bf16_filter=False)
    assert torch.equal(a[1], b[1])
    assert a[2] == pytest.approx(b[2], rel=1e-5)


def test_bf16_error_stays_inside_the_bound():
    from corelib.cluster.kmeans import _BF16_REL

    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2048, generator=g) * torch.rand(500, 1, generator=g) * 3
    y = x[:8]
    exact = torch.cdist(x.double(), y.double()) ** 2
    xs = (x * x).sum(1)
    approx = (xs[:, None] + xs[:8][None, :] - 2 * torch.mm(x.bfloat16(), y.bfloat16().t()).float()).double()
    bound = _BF16_REL * xs.sqrt()[:, None] * xs[:8].sqrt()[None, :]
    assert float(((approx - exact).abs() / bound).max()) < 0.5  # far inside: the bound is safe here


def test_bf16_filtered_assignment_equals_float32():
    from corelib.cluster import assign

    x, _ = identity_features(n_ids=100, per=6, noise=0.6, seed=30)
    for seed in range(3):
        c = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:90]]
        l1, d1 = assign(x, c, bf16_filter=True, chunk_size=64)
        l2, d2 = assign(x, c, bf16_filter=False)
        assert torch.equal(l1, l2)
        assert torch.allclose(d1, d2, atol=1e-5)
    # full runs agree too
    a = kmeans(x, 50, seed=1)
    assert a.n_iter >= 1


def test_camera_mixing_counts_clusters_that_span_cameras():
    from corelib.cluster import camera_mixing

    labels = [0, 0, 1, 1, 2, 3]
    cams = [0, 1, 0, 0, 1, 0]  # cluster 0 spans two cameras, cluster 1 one, clusters 2 and 3 are singletons
    assert camera_mixing(labels, cams) == 0.5
    assert camera_mixing([0, 1], [0, 1]) == 0.0


def test_compare_inits_records_and_summary():
    from corelib.cluster import compare_inits, summarize_inits

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 5, generator=g) * 6
    truth = torch.arange(8).repeat_interleave(25)
    x = centres[truth] + torch.randn(200, 5, generator=g)
    runs, labels = compare_inits(x, 8, seeds=(0, 1, 2), truth=truth.tolist())
    assert len(runs) == 9 and set(labels) == {"greedy_kmeans++", "kmeans++", "random"}
    for r in runs:
        assert r["n_iter"] == len(r["inertia_history"]) and r["clusters"] <= 8
        assert 0 <= r["nmi"] <= 1 and r["seeding_potential"] >= r["inertia"] - 1e-3
    summary = {s["init"]: s for s in summarize_inits(runs, labels)}
    # well separated blobs: greedy seeding finds them, so every seed gives the same partition
    assert summary["greedy_kmeans++"]["nmi"] == pytest.approx(1.0)
    assert summary["greedy_kmeans++"]["stability"] == pytest.approx(1.0)
    assert summary["random"]["n_iter"] == pytest.approx(np.mean([r["n_iter"] for r in runs if r["init"] == "random"]))
    with pytest.raises(ValueError, match="identities for"):
        compare_inits(x, 8, truth=[0, 1])
    with pytest.raises(ValueError, match="at least one seed"):
        compare_inits(x, 8, seeds=())
