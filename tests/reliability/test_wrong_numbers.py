"""Silently wrong numbers become clear errors (issue 33, "Silently wrong numbers" and the DBSCAN,
Cluster Contrast, milestones and lr lines of "Messages"): diverged features, float person ids,
k-means without iterations or with more clusters than distinct rows, DBSCAN finding no cluster,
Cluster Contrast without clusters, and settings that type-check but make no sense."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corelib.cli import main
from corelib.cluster import cluster_pseudo_labels, jaccard_distance, kmeans, minibatch_kmeans
from corelib.config import ClusterCfg, FinetuneCfg, PretrainCfg
from corelib.errors import ConfigError, InvalidInputError
from corelib.evaluation import evaluate_distmat, evaluate_ranking, evaluate_vehicleid, rerank

DIVERGED = 2.0**64  # about 1.8e19: finite in float32, but its squares are not


def _ranking_case(nq=30, ng=90, d=16, ids=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    qf, gf = torch.randn(nq, d, generator=g), torch.randn(ng, d, generator=g)
    q_pids, g_pids = np.arange(nq) % ids, np.arange(ng) % ids
    q_cams, g_cams = np.arange(nq) % 3, (np.arange(ng) // ids) % 3
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def _reference(qf, gf, q_pids, g_pids, q_cams, g_cams, metric):
    """Per-query AP and first-hit rank of the market protocol from float64 distances and a stable sort."""
    q, g = qf.double().numpy(), gf.double().numpy()
    if metric == "cosine":
        q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
        dist = 1.0 - q @ g.T
    else:
        dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    ap, first = [], []
    for i in range(len(q)):
        order = np.argsort(dist[i], kind="stable")
        junk = (g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])
        match = (g_pids[order] == q_pids[i])[~junk]
        ranks = np.flatnonzero(match) + 1
        ap.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
        first.append(int(ranks[0]))
    return np.array(ap), np.array(first)


# ------------------------------------------------------------------ (1) diverged features


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_diverged_features_are_refused_by_the_ranking(metric):
    """Before, on these features: mAP 0.977 instead of 0.107 (Euclidean: the squared norms overflow
    to inf) and 0.105 instead of 0.103 (cosine: normalising a row of infinite norm gives zeros),
    without a word."""
    qf, gf, qp, gp, qc, gc = _ranking_case()
    with pytest.raises(InvalidInputError, match=r"^query features diverged: their largest magnitude is .*e\+19 .*"
                                                r"check the training run .*learning rate.*L2-normalise"):
        evaluate_ranking(qf * DIVERGED, gf * DIVERGED, qp, gp, qc, gc, metric=metric)
    with pytest.raises(InvalidInputError, match="^gallery features diverged"):
        evaluate_ranking(qf, gf * DIVERGED, qp, gp, qc, gc, metric=metric)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_of_ordinary_magnitude_give_the_float64_reference_numbers(metric):
    """The check refuses nothing that was computed right: the metrics equal a float64 reference,
    and features scaled by 2^40 (exact in float32; norms about 4e12) give the very same result."""
    qf, gf, qp, gp, qc, gc = _ranking_case()
    res = evaluate_ranking(qf, gf, qp, gp, qc, gc, metric=metric)
    ap, first = _reference(qf, gf, qp, gp, qc, gc, metric)
    assert np.array_equal(res.first_hit, first)
    assert np.allclose(res.ap, ap, rtol=0, atol=1e-12) and res.mAP == pytest.approx(ap.mean(), abs=1e-12)
    assert res.rank1 == pytest.approx((first == 1).mean(), abs=1e-12)
    scaled = evaluate_ranking(qf * 2.0**40, gf * 2.0**40, qp, gp, qc, gc, metric=metric)
    assert np.array_equal(scaled.ap, res.ap) and np.array_equal(scaled.first_hit, res.first_hit)


def test_diverged_features_are_refused_by_k_means_and_every_other_distance_user():
    """Before: kmeans returned inertia=nan with converged=True, minibatch_kmeans raised a TypeError
    (None * None), re-ranking and the labellers computed on inf distances."""
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(1))
    big = x * DIVERGED
    res = kmeans(x, 5, seed=0)  # ordinary features: a finite inertia
    assert math.isfinite(res.inertia)
    for call in (lambda: kmeans(big, 5, seed=0), lambda: minibatch_kmeans(big, 5, batch_size=16, seed=0)):
        with pytest.raises(InvalidInputError, match=r"^features diverged: .*check the training run"):
            call()
    with pytest.raises(InvalidInputError, match="^query_feats diverged"):
        rerank(big[:10], x[10:], k1=5)
    with pytest.raises(InvalidInputError, match="^features diverged"):
        jaccard_distance(big, k1=5, k2=2)
    for labeler in ("kmeans", "dbscan"):
        cfg = ClusterCfg(labeler=labeler, num_clusters=5).with_overrides({"dbscan.k1": 5})
        with pytest.raises(InvalidInputError, match="^features of level 1 diverged"):
            cluster_pseudo_labels([x, big, x], np.zeros(60, int), cfg, seed=0)


# ------------------------------------------------------------------ (2) person and camera ids are integers


def test_float_person_ids_are_refused_naming_the_array():
    """Before: pids were truncated, so query pid 0.1 and gallery pid 0.9 counted as one person (here
    0.1 counted as person 0: the same mAP as the integer pids)."""
    qf, gf, qp, gp, qc, gc = _ranking_case(nq=4, ng=10, ids=3)
    fq = qp.astype(float)
    fq[0] = 0.1
    with pytest.raises(InvalidInputError, match=r"^query_pids must hold integer ids \(3, or 3.0\), but entry 0 is 0.1"):
        evaluate_ranking(qf, gf, fq, gp, qc, gc)
    for bad, shown in ((np.nan, "nan"), ("a", "'a'")):
        fg = list(gp)
        fg[2] = bad
        with pytest.raises(InvalidInputError, match=f"^gallery_pids must hold integer ids .* entry 2 is {shown}:"):
            evaluate_ranking(qf, gf, qp, fg, qc, gc)
    with pytest.raises(InvalidInputError, match="^gallery_pids must hold integer ids .* entry 0 is False:"):
        evaluate_ranking(qf, gf, qp, gp > 0, qc, gc)  # a mask passed for the pids
    with pytest.raises(InvalidInputError, match="^query_camids must hold integer ids .* entry 1 is 0.5"):
        evaluate_ranking(qf, gf, qp, gp, [0, 0.5, 1, 2], gc)
    with pytest.raises(InvalidInputError, match="^query_pids must hold integer ids"):
        evaluate_distmat(torch.rand(4, 10), fq, gp, qc, gc)
    with pytest.raises(InvalidInputError, match="^test_pids must hold integer ids .* entry 3 is 1.5"):
        evaluate_vehicleid(torch.randn(6, 4), [0, 0, 1, 1.5, 2, 2], draws=1)
    with pytest.raises(InvalidInputError, match="^camids must hold integer ids .* entry 1 is 0.5"):
        cluster_pseudo_labels([torch.randn(4, 3)], [0, 0.5, 1, None], ClusterCfg(num_clusters=2), seed=0)
    # integer-valued floats are ids: the same numbers as the integers
    as_ints = evaluate_ranking(qf, gf, qp, gp, qc, gc)
    as_floats = evaluate_ranking(qf, gf, qp.astype(float), torch.as_tensor(gp, dtype=torch.float64), qc, gc)
    assert as_floats.mAP == as_ints.mAP and np.array_equal(as_floats.first_hit, as_ints.first_hit)


# ------------------------------------------------------------------ (3) k-means that cannot do what it is asked


def test_k_means_without_iterations_or_with_more_clusters_than_distinct_rows_is_refused():
    """Before: max_iter=0 returned the seeding as if it were a clustering; k above the number of
    distinct rows left clusters empty without a word. k above the number of samples was refused already."""
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    for fit in (kmeans, minibatch_kmeans):
        with pytest.raises(InvalidInputError, match=r"^max_iter must be an integer >= 1, got 0"):
            fit(x, 4, max_iter=0)
        dup = torch.cat([x[:3]] * 10)  # 30 rows, 3 distinct
        with pytest.raises(InvalidInputError, match=r"^k = 5 clusters but the 30 feature rows hold only 3 distinct "
                                                    r"vectors.*use k <= 3"):
            fit(dup, 5)
        assert fit(dup, 3).labels.unique().numel() == 3  # as many clusters as distinct rows: fine
        with pytest.raises(InvalidInputError, match="k = 41 clusters is larger than the number of samples"):
            fit(x, 41)
    # rows of equal sums that differ: counted exactly, not refused
    perm = torch.stack([x[0][torch.randperm(6, generator=torch.Generator().manual_seed(s))] for s in range(10)])
    assert kmeans(perm, 8, seed=0).labels.unique().numel() == 8


# ------------------------------------------------------------------ (4) DBSCAN finding no cluster


@pytest.mark.parametrize("outliers, self_paced", [("drop", False), ("singletons", False), ("drop", True)])
def test_dbscan_finding_no_cluster_says_which_setting_to_change(outliers, self_paced):
    """Before: "labeller 'dbscan', level 0: every sample is an outlier; no cluster to train on" (no
    fix), and with outliers=singletons every sample silently became a class of its own."""
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(3))
    cfg = ClusterCfg(labeler="dbscan").with_overrides(
        {"dbscan": {"eps": 0.05, "k1": 5, "k2": 2, "outliers": outliers, "self_paced": self_paced}})
    with pytest.raises(InvalidInputError) as info:
        cluster_pseudo_labels([x, x, x], np.arange(40) % 2, cfg, seed=0)
    assert str(info.value) == (
        "DBSCAN found no cluster among the 40 samples (global features, cluster.dbscan.eps=0.05, "
        "cluster.dbscan.min_samples=4): every sample is noise; raise cluster.dbscan.eps (Jaccard distances lie in "
        "[0, 1)) or lower cluster.dbscan.min_samples")
    # the fix works: a larger eps finds clusters
    wide = cfg.with_overrides({"dbscan.eps": 0.9})
    assert (cluster_pseudo_labels([x, x, x], np.arange(40) % 2, wide, seed=0)[0].labels[0] >= 0).any()


# ------------------------------------------------------------------ (5) Cluster Contrast without clusters


def test_cluster_contrast_with_zero_clusters_names_the_labeller():
    """Before: the memory was built from no centre and the first step died in torch with
    "IndexError: Target 0 is out of bounds"."""
    from corelib.losses import build_criterion

    crit = build_criterion(FinetuneCfg().with_overrides({"loss.name": "cluster_contrast"}).loss, stage="finetune")
    with pytest.raises(InvalidInputError, match=r"^cluster_contrast: the pseudo-labeller found no cluster \(centres "
                                                r"of shape \(0, 8\)\), .* with cluster.labeler=dbscan raise "
                                                r"cluster.dbscan.eps or lower cluster.dbscan.min_samples"):
        crit.start_clustering(torch.zeros(0, 8))
    assert crit.memory is None


# ------------------------------------------------------------------ (6) settings that type-check but make no sense


@pytest.mark.parametrize("overrides, message", [
    ({"milestones": [40, "x"]}, r"milestones must be epochs, integers >= 1 \(e.g. \[40, 70\]\), got \[40, 'x'\]"),
    ({"milestones": [40, 55.5]}, r"milestones must be epochs, integers >= 1"),
    ({"lr": math.inf}, "lr must be greater than 0 and finite, got inf"),
    ({"lr": math.nan}, "lr must be greater than 0 and finite, got nan"),
    ({"lr": -1e-3}, "lr must be greater than 0 and finite, got -0.001"),
    (["lr=.inf"], "lr must be greater than 0 and finite, got inf"),
    ({"weight_decay": math.nan}, "weight_decay must be a finite number of at least 0, got nan"),
])
def test_nonsense_settings_are_refused_when_the_settings_are_made(overrides, message):
    """Before: milestones=[40, "x"] died in a comparison with a TypeError, [40, 55.5] was accepted,
    and lr=inf (Adam's first step turns every weight into inf) was accepted; nan and negative
    rates were refused already, now with the same words."""
    with pytest.raises(ConfigError, match=f"^{message}"):
        PretrainCfg().with_overrides(overrides)
    if "milestones" not in str(overrides):
        with pytest.raises(ConfigError, match=f"^{message}"):
            FinetuneCfg().with_overrides(overrides)


def test_a_config_file_and_pretrain_overrides_reach_the_same_checks(tmp_path, snapshot, one_line_error):
    """The command line's --config file and a chapter's PRETRAIN_OVERRIDES (through the pair's
    recipe) end in the same refusal, before anything is written."""
    from corelib.pairs import experiment_pairs

    run = tmp_path / "run"
    run.mkdir()
    for text, message in (("lr: .inf\n", "lr must be greater than 0 and finite, got inf"),
                          ("milestones: [40, x]\n", "milestones must be epochs, integers >= 1 (e.g. [40, 70]), "
                                                     "got [40, 'x']")):
        config = tmp_path / "settings.yaml"
        config.write_text(text)
        before = snapshot(tmp_path)
        assert main(["pretrain", "--source", "market_like", str(tmp_path / "data"), "--smoke", "--config", str(config),
                     "--run-dir", str(run)]) == 2
        assert one_line_error() == f"corelib pretrain: {message}"
        assert snapshot(tmp_path) == before
    person = experiment_pairs(["person"])["person"]
    with pytest.raises(ConfigError, match="^lr must be greater than 0 and finite, got inf"):
        person.pretrain_cfg(smoke=True, overrides={"lr": math.inf})
    with pytest.raises(ConfigError, match="^milestones must be epochs"):
        person.pretrain_cfg(smoke=True, overrides={"milestones": [40, "x"]})
