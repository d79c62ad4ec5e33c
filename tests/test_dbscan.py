"""The ``dbscan`` pseudo-labeller and camera-guided normalisation (issue 19, first part)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corelib.cluster import cluster_pseudo_labels, jaccard_distance, normalize_features
from corelib.cluster.dbscan import dbscan_cluster, outliers_as_singletons
from corelib.config import ClusterCfg, FinetuneCfg, PretrainCfg
from corelib.errors import ConfigError, InvalidInputError


def _blobs(n_per=12, k=5, d=16, spread=0.08, seed=0, cameras=2):
    """``k`` tight identities on the unit sphere, each seen by every camera, camera c shifting every
    feature by the same offset (what a camera's style does)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=1)
    pids = np.repeat(np.arange(k), n_per)
    cams = np.tile(np.arange(cameras), k * n_per // cameras + 1)[: k * n_per]
    x = centres[pids] + spread * torch.randn(k * n_per, d, generator=g)
    return x, pids, cams


def test_camera_guided_normalisation_standardises_each_camera_then_l2():
    x, _, cams = _blobs()
    offset = torch.zeros_like(x)
    offset[cams == 1] = 3.0 * torch.linspace(-1, 1, x.shape[1])  # camera 1's style
    y = normalize_features(x + offset, cams, "camera_guided")
    assert torch.allclose(y.norm(dim=1), torch.ones(len(y)), atol=1e-5)
    # the reference: per camera, per dimension (f - mu) / sigma (population), then L2
    ref = torch.empty_like(x)
    for c in (0, 1):
        b = (x + offset)[torch.from_numpy(cams == c)]
        ref[torch.from_numpy(cams == c)] = (b - b.mean(0)) / b.std(0, unbiased=False)
    assert torch.allclose(y, F.normalize(ref, dim=1), atol=1e-5)
    # the camera's offset is gone: the two cameras' normalised features are the same whether shifted or not
    assert torch.allclose(y, normalize_features(x, cams, "camera_guided"), atol=1e-4)


def test_camera_guided_normalisation_floors_sigma_and_keeps_single_image_cameras():
    x = torch.randn(9, 4)
    x[:8, 2] = 0.5  # no spread in one dimension of camera 0
    cams = np.r_[np.zeros(8, int), [1]]
    y = normalize_features(x, cams, "camera_guided")
    assert torch.isfinite(y).all() and torch.allclose(y.norm(dim=1), torch.ones(9), atol=1e-5)
    assert torch.allclose(y[8], F.normalize(x[8], dim=0), atol=1e-6)  # one image: nothing to standardise


def test_dbscan_settings_are_checked():
    with pytest.raises(ConfigError, match="cluster.dbscan.outliers must be one of 'drop', 'singletons'"):
        ClusterCfg(labeler="dbscan").with_overrides({"dbscan.outliers": "keep"})
    with pytest.raises(ConfigError, match="cluster.dbscan.eps"):
        FinetuneCfg().with_overrides({"cluster.dbscan.eps": 1.5})
    assert FinetuneCfg().with_overrides({"cluster.labeler": "dbscan"}).cluster.dbscan.eps == 0.6


def test_dbscan_labels_equal_scikit_learns_on_the_dense_jaccard_distance():
    from sklearn.cluster import DBSCAN

    x, pids, cams = _blobs()
    cfg = ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"k1": 10, "k2": 3, "eps": 0.5}})
    pseudo, feats = cluster_pseudo_labels([x, x, x], cams, cfg, seed=0)
    dense = jaccard_distance(F.normalize(x, dim=1), k1=10, k2=3, dense=True).numpy()
    expected = DBSCAN(eps=0.5, min_samples=4, metric="precomputed").fit_predict(dense)
    assert np.array_equal(pseudo.labels[0], expected)
    assert pseudo.num_classes[0] == 5 and (pseudo.labels[0] >= 0).mean() > 0.9  # the five identities
    assert pseudo.info["dbscan_noise_global"] == pytest.approx((expected < 0).mean())


def test_outliers_are_dropped_or_made_singletons():
    lab = np.array([0, -1, 1, -1, 0])
    assert outliers_as_singletons(lab).tolist() == [0, 2, 1, 3, 0]
    x, _, cams = _blobs(k=3)
    x = torch.cat([x, 5 * torch.eye(16)[:2]])  # two points far from everything: noise
    cams = np.r_[cams, [0, 1]]
    drop = ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"k1": 8, "k2": 1, "eps": 0.5}})
    kept = drop.with_overrides({"dbscan.outliers": "singletons"})
    d = cluster_pseudo_labels([x] * 3, cams, drop, seed=0)[0].labels[0]
    s = cluster_pseudo_labels([x] * 3, cams, kept, seed=0)[0].labels[0]
    assert (d[-2:] == -1).all() and (s >= 0).all() and len(set(s[-2:])) == 2 and s[-2:].min() > d.max()


def test_dbscan_refuses_k1_not_below_the_sample_count():
    from corelib.cluster import check_labeler

    with pytest.raises(InvalidInputError, match="cluster.dbscan.k1=30 needs more than 30"):
        check_labeler(ClusterCfg(labeler="dbscan"), 20)


def test_dbscan_cluster_takes_a_sparse_graph():
    x, _, _ = _blobs()
    unit = F.normalize(x, dim=1)
    graph = jaccard_distance(unit, k1=10, k2=3, max_distance=float(np.nextafter(0.5, 2.0)), dense=False)
    dense = jaccard_distance(unit, k1=10, k2=3, dense=True)
    assert np.array_equal(dbscan_cluster(graph, 0.5, 4), dbscan_cluster(dense, 0.5, 4))


def test_camera_guided_normalisation_undoes_a_camera_split_before_dbscan():
    """A strong per-camera offset makes DBSCAN cluster by camera; camera-guided normalisation
    restores the identities (the effect Learn by Guessing reports)."""
    from corelib.cluster import camera_mixing, pseudo_label_quality

    x, pids, cams = _blobs(n_per=16, k=4, spread=0.05, seed=3)
    offset = torch.zeros_like(x)
    offset[cams == 1] = 1.5 * F.normalize(torch.ones(x.shape[1]), dim=0)
    shifted = x + offset
    cfg = ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"k1": 12, "k2": 3, "eps": 0.55}})
    plain = cluster_pseudo_labels([shifted] * 3, cams, cfg, seed=0)[0].labels[0]
    guided = cluster_pseudo_labels([shifted] * 3, cams, cfg.with_overrides({"normalize": "camera_guided"}),
                                   seed=0)[0].labels[0]
    keep_p, keep_g = plain >= 0, guided >= 0
    assert camera_mixing(plain[keep_p], cams[keep_p]) < camera_mixing(guided[keep_g], cams[keep_g])
    assert pseudo_label_quality(guided[keep_g], pids[keep_g])["nmi"] > pseudo_label_quality(plain[keep_p],
                                                                                            pids[keep_p])["nmi"]


@pytest.fixture(scope="module")
def source_checkpoint(synthetic_small, tmp_path_factory):
    from corelib.data import load_synthetic
    from corelib.training import pretrain

    source = load_synthetic(synthetic_small["market_like"])
    run = tmp_path_factory.mktemp("dbscan_source")
    pretrain(PretrainCfg.smoke(), source, run, progress=False)
    return run / "pretrain" / "best.pt"


@pytest.mark.slow
def test_a_resumed_dbscan_run_ends_like_a_straight_run(synthetic_small, source_checkpoint, tmp_path):
    """DBSCAN's cluster count changes between epochs; a run stopped after epoch 2 and resumed ends
    with the weights, pseudo-labels and log of a run that was never stopped (CPU, same seed)."""
    from corelib.data import load_synthetic
    from corelib.runtime import load_checkpoint
    from corelib.training import finetune

    target = load_synthetic(synthetic_small["cuhk_like"])

    def cfg(epochs, eps):
        return FinetuneCfg.smoke(epochs=epochs, batch_size=8, cluster={
            "labeler": "dbscan", "normalize": "camera_guided", "dbscan": {"k1": 10, "k2": 3, "eps": eps}})

    # the point is a cluster count that changes between epochs; on this tiny set which eps gives one
    # depends on the CPU's float kernels (0.55 gave 4, 4, 4 on an AVX-512 EPYC, 0.6 gave 4, 6, 5)
    tried = {}
    for eps in (0.55, 0.6, 0.5):
        straight = finetune(cfg(3, eps), target, tmp_path / f"a{eps}", source_checkpoint=source_checkpoint,
                            progress=False)
        tried[eps] = [h["clusters_global"] for h in straight.history]
        if len(set(tried[eps])) > 1:
            break
    else:
        pytest.fail(f"the cluster count did not change between epochs at any eps tried: {tried}")
    finetune(cfg(2, eps), target, tmp_path / "b", source_checkpoint=source_checkpoint, progress=False)
    resumed = finetune(cfg(3, eps), target, tmp_path / "b", source_checkpoint=source_checkpoint, resume=True,
                       progress=False)

    def untimed(history):
        return [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in history]

    assert untimed(resumed.history) == untimed(straight.history)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["num_clusters"] == b["num_clusters"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["pseudo_labels"], b["pseudo_labels"])


# --- SpCL's self-paced cluster reliability criterion (cluster.dbscan.self_paced; docs/baselines.md §3.3) ---


def _self_paced_cfg(**dbscan):
    return ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"k1": 8, "k2": 3, "eps": 0.55, "eps_gap": 0.1,
                                                                   "self_paced": True, **dbscan}})


def _noisy_levels(seeds=(0, 1, 2), spreads=(0.25, 0.35, 0.25)):
    """Three levels of blobs loose enough that the tight, main and loose clusterings disagree."""
    return [_blobs(n_per=10, k=8, spread=s, seed=seed)[0] for seed, s in zip(seeds, spreads)]


def _reference_self_paced(x, cfg, threshold=None):
    """The criterion written out sample by sample from its definition, on the dense Jaccard matrix.

    Returns ``(labels, threshold, dissolved)``; labels are -1 for a rejected or noise sample (the
    caller compares partitions, so the numbering does not matter)."""
    from sklearn.cluster import DBSCAN

    d = cfg.dbscan
    dense = jaccard_distance(F.normalize(x, dim=1), k1=d.k1, k2=d.k2, dense=True).numpy()
    n = len(dense)

    def clustering(eps):
        raw = DBSCAN(eps=eps, min_samples=d.min_samples, metric="precomputed").fit_predict(dense)
        unique, nxt = [], raw.max() + 1
        for lab in raw:  # every noise point its own label
            unique.append(int(lab) if lab >= 0 else int(nxt))
            nxt += lab < 0
        return raw, unique

    raw, main = clustering(d.eps)
    _, tight = clustering(d.eps - d.eps_gap)
    _, loose = clustering(d.eps + d.eps_gap)

    def members(labels, i):
        return {j for j in range(n) if labels[j] == labels[i]}

    comp, indep = [], []
    for i in range(n):
        own, t, lo = members(main, i), members(tight, i), members(loose, i)
        comp.append(1.0 - len(own & t) / len(own | t))
        indep.append(1.0 - len(own & lo) / len(own | lo))
    clusters: dict = {}
    for i in range(n):
        clusters.setdefault(main[i], []).append(i)
    best_indep = {c: min(indep[i] for i in m) for c, m in clusters.items()}
    best_comp = {c: min(comp[i] for i in m) for c, m in clusters.items()}
    if threshold is None:
        values = sorted(best_indep[c] for c, m in clusters.items() if len(m) > 1)
        threshold = values[min(len(values) - 1, round(d.independence_quantile * len(values)))]
    out = []
    for i in range(n):
        c = main[i]
        ok = raw[i] >= 0 and best_indep[c] <= threshold and comp[i] <= best_comp[c]
        out.append(int(raw[i]) if ok else -1)
    dissolved = sum(1 for c, m in clusters.items() if len(m) > 1 and best_indep[c] > threshold)
    return np.array(out), threshold, dissolved


def _same_partition(got, want, singletons):
    """``got`` groups the samples as ``want`` does; ``want``'s -1 are singletons or -1 in ``got``."""
    got, want = np.asarray(got), np.asarray(want)
    if singletons:
        assert (got >= 0).all()
        want = want.copy()
        want[want < 0] = want.max() + 1 + np.arange((want < 0).sum())
    else:
        assert np.array_equal(got < 0, want < 0)
    pairs = set(zip(got.tolist(), want.tolist()))
    assert len(pairs) == len(set(got.tolist())) == len(set(want.tolist()))  # a bijection between the labels
    kept = got[got >= 0]
    assert set(kept.tolist()) == set(range(int(kept.max()) + 1))  # contiguous 0 .. K - 1


@pytest.mark.parametrize("outliers", ["drop", "singletons"])
@pytest.mark.parametrize("quantile", [0.9, 0.5])
def test_self_paced_labels_equal_a_per_sample_reference(outliers, quantile):
    levels = _noisy_levels()
    cfg = _self_paced_cfg(outliers=outliers, independence_quantile=quantile)
    state: dict = {}
    pseudo, _ = cluster_pseudo_labels(levels, np.zeros(80, int), cfg, seed=0, state=state)
    rejected = dissolved = 0
    for i, (name, x) in enumerate(zip(("global", "top", "bottom"), levels)):
        want, threshold, n_dissolved = _reference_self_paced(x, cfg)
        _same_partition(pseudo.labels[i], want, outliers == "singletons")
        assert state["spcl_threshold"][i] == pseudo.info[f"spcl_threshold_{name}"] == threshold
        plain = dbscan_cluster(jaccard_distance(F.normalize(x, dim=1), k1=8, k2=3, dense=True), 0.55, 4)
        share = ((plain >= 0) & (want < 0)).mean()
        assert pseudo.info[f"spcl_unreliable_{name}"] == pytest.approx(share)
        assert pseudo.info[f"dbscan_noise_{name}"] == pytest.approx((plain < 0).mean())
        rejected, dissolved = rejected + share, dissolved + n_dissolved
    assert rejected > 0  # the cases exercise the criterion, not only plain DBSCAN
    if quantile == 0.5:
        assert dissolved > 0


def test_self_paced_threshold_is_frozen_at_the_first_call():
    cfg = _self_paced_cfg(independence_quantile=0.5)
    first, second = _noisy_levels(), _noisy_levels(seeds=(3, 4, 5), spreads=(0.35, 0.25, 0.35))
    cams = np.zeros(80, int)
    state: dict = {}
    cluster_pseudo_labels(first, cams, cfg, seed=0, epoch=0, state=state)
    frozen = list(state["spcl_threshold"])
    assert len(frozen) == 3 and all(type(t) is float for t in frozen)  # plain values for last.pt
    fresh: dict = {}
    again, _ = cluster_pseudo_labels(second, cams, cfg, seed=0, epoch=1, state=state)
    recomputed, _ = cluster_pseudo_labels(second, cams, cfg, seed=0, epoch=1, state=fresh)
    assert state["spcl_threshold"] == frozen
    assert fresh["spcl_threshold"] != frozen  # the second features would give other thresholds
    for i, (name, x) in enumerate(zip(("global", "top", "bottom"), second)):
        assert again.info[f"spcl_threshold_{name}"] == frozen[i]
        _same_partition(again.labels[i], _reference_self_paced(x, cfg, threshold=frozen[i])[0], False)
        want, threshold, _ = _reference_self_paced(x, cfg)
        assert fresh["spcl_threshold"][i] == threshold
        _same_partition(recomputed.labels[i], want, False)
    # a resumed run hands back the state it saved: the thresholds survive a round trip through torch.save
    import io

    buffer = io.BytesIO()
    torch.save({"labeller_state": state}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["labeller_state"]
    resumed, _ = cluster_pseudo_labels(second, cams, cfg, seed=0, epoch=1, state=loaded)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.labels, again.labels))


def test_without_self_paced_the_state_is_untouched_and_labels_are_plain():
    from corelib.cluster.dbscan import dbscan_labels

    assert dbscan_labels.stateful is True
    x, _, cams = _blobs(n_per=10, k=8, spread=0.25, seed=0)
    cfg = ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"k1": 8, "k2": 3, "eps": 0.55}})
    state: dict = {}
    pseudo, _ = cluster_pseudo_labels([x] * 3, cams, cfg, seed=0, state=state)
    assert state == {}
    assert not any(k.startswith("spcl") for k in pseudo.info)
    dense = jaccard_distance(F.normalize(x, dim=1), k1=8, k2=3, dense=True)
    expected = dbscan_cluster(dense, 0.55, 4)
    assert all(np.array_equal(lab, expected) for lab in pseudo.labels)
    # the option changes these labels, so the equality above is not vacuous
    spcl, _ = cluster_pseudo_labels([x] * 3, cams, cfg.with_overrides({"dbscan.self_paced": True,
                                                                       "dbscan.eps_gap": 0.1}), seed=0)
    assert not np.array_equal(spcl.labels[0], expected)


def test_self_paced_settings_are_checked():
    with pytest.raises(ConfigError, match="cluster.dbscan.eps_gap must be greater than 0"):
        ClusterCfg(labeler="dbscan").with_overrides({"dbscan.eps_gap": 0.0})
    with pytest.raises(ConfigError, match="cluster.dbscan.eps_gap must lie in"):
        ClusterCfg(labeler="dbscan").with_overrides({"dbscan.eps_gap": 1.5})
    with pytest.raises(ConfigError, match=r"radii eps -/\+ eps_gap must lie in \(0, 1\)"):
        ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"self_paced": True, "eps": 0.1, "eps_gap": 0.1}})
    with pytest.raises(ConfigError, match=r"radii eps -/\+ eps_gap must lie in \(0, 1\)"):
        ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"self_paced": True, "eps": 0.9, "eps_gap": 0.15}})
    with pytest.raises(ConfigError, match="cluster.dbscan.independence_quantile must lie in"):
        ClusterCfg(labeler="dbscan").with_overrides({"dbscan.independence_quantile": 1.5})
    # the radii are checked only when the criterion is on; SpCL's defaults pass
    assert ClusterCfg(labeler="dbscan").with_overrides({"dbscan": {"eps": 0.1, "eps_gap": 0.1}}).dbscan.eps_gap == 0.1
    spcl = ClusterCfg(labeler="dbscan").with_overrides({"dbscan.self_paced": True}).dbscan
    assert (spcl.eps, spcl.eps_gap, spcl.independence_quantile) == (0.6, 0.02, 0.9)


def test_one_sparse_graph_gives_the_dense_labels_at_all_three_radii():
    """scikit-learn counts only the graph entries <= eps, so the graph built up to the loose radius
    is exact for the tight and main radii too."""
    from corelib.cluster.dbscan import _graph_limit

    for x in _noisy_levels():
        unit = F.normalize(x, dim=1)
        eps, gap = 0.55, 0.1
        graph = jaccard_distance(unit, k1=8, k2=3, max_distance=_graph_limit(eps + gap), dense=False)
        dense = jaccard_distance(unit, k1=8, k2=3, dense=True)
        assert (graph.data > eps).any() and (graph.data > eps - gap).any()  # the graph holds longer distances
        for radius in (eps - gap, eps, eps + gap):
            assert np.array_equal(dbscan_cluster(graph, radius, 4), dbscan_cluster(dense, radius, 4))
    # a float32 distance equal to the loose radius is still in the graph (DBSCAN counts it)
    for radius in (0.6, 0.62, 0.58, 0.3):
        assert (torch.tensor([radius], dtype=torch.float32) < _graph_limit(radius)).item()
