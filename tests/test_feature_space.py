"""Feature-space analysis of chapter 06 (corelib.feature_space) and its figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from corelib import viz
from corelib.feature_space import PAIR_KINDS, cluster_sizes, similarity_histograms, umap_projection


def _reference(x: np.ndarray, pids, cams) -> dict:
    """Plain loops over i < j: the definition of the four kinds of pairs."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = {k: [] for k in PAIR_KINDS}
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            kind = PAIR_KINDS[(0 if pids[i] == pids[j] else 2) + (0 if cams[i] == cams[j] else 1)]
            out[kind].append(float(x[i] @ x[j]))
    return out


def test_similarity_histograms_match_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(23, 6, generator=g)
    pids = [i % 5 for i in range(23)]
    cams = [i % 3 for i in range(23)]
    h = similarity_histograms(x, pids, cams, bins=20, chunk=4)  # several chunks, one partial
    ref = _reference(x.numpy(), pids, cams)
    for kind in PAIR_KINDS:
        assert h.pairs[kind] == len(ref[kind])
        assert h.means[kind] == pytest.approx(np.mean(ref[kind]), abs=1e-5)
        expected, _ = np.histogram(np.clip(ref[kind], -1, 1), bins=h.edges)
        assert np.abs(h.counts[kind] - expected).sum() <= 2  # bin-edge rounding only
    assert sum(h.pairs.values()) == 23 * 22 // 2
    assert h.camera_gap == pytest.approx(h.means["different id, same camera"] - h.means["different id, cross camera"])


def test_camera_bias_shows_as_a_positive_gap():
    g = torch.Generator().manual_seed(1)
    cams = [i % 2 for i in range(40)]
    pids = list(range(40))
    offset = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0]])
    biased = torch.randn(40, 4, generator=g) + offset[cams]
    assert similarity_histograms(biased, pids, cams).camera_gap > 0.3
    with pytest.raises(ValueError, match="40 features but 39 pids"):
        similarity_histograms(biased, pids[:-1], cams)


def test_cluster_sizes_ignore_outliers():
    assert cluster_sizes([0, 0, 1, 2, 2, 2, -1, -1]).tolist() == [3, 2, 1]


@pytest.mark.slow
def test_umap_projection_is_repeatable_and_keeps_blobs_apart():
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(30, 8, generator=g) * 0.1 + 2, torch.randn(30, 8, generator=g) * 0.1 - 2])
    a, b = umap_projection(x, seed=0, metric="euclidean"), umap_projection(x, seed=0, metric="euclidean")
    assert a.shape == (60, 2) and np.allclose(a, b)
    centre_gap = np.linalg.norm(a[:30].mean(0) - a[30:].mean(0))
    assert centre_gap > 3 * max(a[:30].std(0).max(), a[30:].std(0).max())
    with pytest.raises(ValueError, match="at least 4"):
        umap_projection(x[:3])


def test_feature_space_figures():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 5, generator=g)
    h = similarity_histograms(x, [i % 6 for i in range(30)], [i % 2 for i in range(30)])
    assert isinstance(viz.similarity_histograms({"before": h, "after": h}, title="t"), Figure)
    pts = np.random.default_rng(0).normal(size=(30, 2))
    colourings = {"domain": ["source"] * 10 + ["target"] * 20, "identity": [-1] * 10 + list(range(20))}
    fig = viz.umap_panels({"before": pts, "after": pts}, {"before": colourings, "after": colourings})
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert isinstance(viz.cluster_size_histogram({"true": np.array([3, 2, 2]), "pseudo": np.array([4, 1, 1, 1])}), Figure)


@pytest.mark.slow
def test_study_feature_space_on_a_small_pair(synthetic_small):
    from corelib.data.synthetic import load_synthetic
    from corelib.feature_space import study_feature_space
    from corelib.models import SourceNet
    from corelib.training import TrainedModel

    source, target = load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])
    torch.manual_seed(0)
    trained = TrainedModel(SourceNet(18, num_classes=3, weights="none").eval(), "pretrain", {"augment": {"height": 64, "width": 32}}, 1)
    fs = study_feature_space(trained, source, target, k=5, source_images=20, seed=0)
    n_t = len(target.train)
    assert len(fs.source.pids) == 20 and len(fs.target.pids) == n_t and fs.points.shape == (20 + n_t, 2)
    assert len(fs.pseudo_labels) == n_t and set(fs.pseudo_labels.tolist()) <= set(range(5))
    assert 0.0 <= fs.quality["nmi"] <= 1.0
    assert sum(fs.similarities.pairs.values()) == n_t * (n_t - 1) // 2
    col = fs.colourings("market", "cuhk")
    assert col["domain"][:20] == ["source: market"] * 20 and col["pseudo-label"][:20] == [None] * 20
    assert all(len(v) == 20 + n_t for v in col.values())
    with pytest.raises(ValueError, match=f"use k <= {n_t}"):
        study_feature_space(trained, source, target, k=n_t + 1)
