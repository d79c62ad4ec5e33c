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

    def cfg(epochs):
        return FinetuneCfg.smoke(epochs=epochs, batch_size=8, cluster={
            "labeler": "dbscan", "normalize": "camera_guided", "dbscan": {"k1": 10, "k2": 3, "eps": 0.55}})

    straight = finetune(cfg(3), target, tmp_path / "a", source_checkpoint=source_checkpoint, progress=False)
    finetune(cfg(2), target, tmp_path / "b", source_checkpoint=source_checkpoint, progress=False)
    resumed = finetune(cfg(3), target, tmp_path / "b", source_checkpoint=source_checkpoint, resume=True,
                       progress=False)

    def untimed(history):
        return [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in history]

    assert untimed(resumed.history) == untimed(straight.history)
    clusters = [h["clusters_global"] for h in straight.history]
    assert len(set(clusters)) > 1, f"the cluster count did not change between epochs: {clusters}"
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["num_clusters"] == b["num_clusters"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["pseudo_labels"], b["pseudo_labels"])
