"""Grad-CAM for embeddings and the authors' activation maps (corelib.explain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from corelib.errors import UnknownNameError
from corelib.explain import (
    EmbeddingOf,
    SimilarityTarget,
    activation_map,
    activation_maps,
    cam_panels,
    embed,
    overlay,
    similarity_cam,
)
from corelib.models import CoreReIDNet, SourceNet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return CoreReIDNet(18, num_classes=4, weights="none").eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 128, 64, generator=g)  # layer4 map 4 x 2: enough positions for a map


def test_activation_map_matches_its_definition():
    m = torch.zeros(1, 2, 2, 3)
    m[0, 0] = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    m[0, 1] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    # sum over channels of squares: [[2, 0, 4], [0, 9, 0]], then divided by its L2 norm sqrt(4+16+81)
    expected = torch.tensor([[2.0, 0.0, 4.0], [0.0, 9.0, 0.0]]) / np.sqrt(101.0)
    assert torch.allclose(activation_map(m)[0], expected)
    assert torch.allclose(activation_map(-m), activation_map(m))  # signs do not matter


def test_activation_maps_resized_scaled_and_flipped(net, images):
    maps = activation_maps(net, images, flip=True)
    assert maps.shape == (6, 128, 64)
    assert torch.allclose(maps.flatten(1).min(1).values, torch.zeros(6), atol=1e-6)
    assert torch.allclose(maps.flatten(1).max(1).values, torch.ones(6), atol=1e-6)
    # the flipped image's map is (up to the trunk's asymmetry) the mirror image of the original's
    mirror = torch.flip(maps[3:], dims=[2])
    assert F.cosine_similarity(mirror.flatten(1), maps[:3].flatten(1)).mean() > 0.8


def test_branches_rebuild_the_descriptor(net, images):
    parts = [EmbeddingOf(net, b)(images) for b in ("global", "top", "bottom")]
    with torch.no_grad():
        assert torch.allclose(F.normalize(torch.cat(parts, 1), dim=1), net(images), atol=1e-6)
        assert torch.allclose(embed(net, images), net(images))
    src = SourceNet(18, num_classes=3, weights="none").eval()
    with torch.no_grad():
        assert torch.allclose(F.normalize(EmbeddingOf(src, "global")(images), dim=1), src(images), atol=1e-6)
    with pytest.raises(UnknownNameError, match="valid branches"):
        EmbeddingOf(net, "upper")
    with pytest.raises(UnknownNameError, match="no 'top' branch"):
        EmbeddingOf(src, "top")


def test_similarity_target_is_the_cosine():
    ref = torch.tensor([1.0, 0.0])
    assert SimilarityTarget(ref)(torch.tensor([2.0, 0.0])).item() == pytest.approx(1.0)
    assert SimilarityTarget(ref)(torch.tensor([0.0, 3.0])).item() == pytest.approx(0.0)


def test_cam_depends_on_the_reference_and_releases_its_hooks(net, images):
    query, gallery = images[:1], images[1:]
    for branch in ("global", "descriptor"):
        ref = embed(net, query, branch)
        # explain the query's similarity to each of two different gallery images
        gal = embed(net, gallery, branch)
        maps = similarity_cam(net, query.expand(2, -1, -1, -1), gal, branch=branch)
        assert maps.shape == (2, 128, 64)
        assert maps.min() >= 0 and maps.max() <= 1
        assert not np.allclose(maps[0], maps[1], atol=1e-3), "the map must depend on the gallery image"
        same = similarity_cam(net, gallery, ref.expand(2, -1), branch=branch)
        assert same.shape == (2, 128, 64)
    frozen = CoreReIDNet(18, num_classes=4, weights="none").eval().requires_grad_(False)  # like an EMA teacher
    maps = similarity_cam(frozen, gallery, embed(frozen, query).expand(2, -1), layer="layer3")
    assert maps.shape == (2, 128, 64) and maps.max() > 0
    layer = net.trunk.layer4[-1]
    assert not layer._forward_hooks and not layer._backward_hooks and not layer._forward_pre_hooks
    with pytest.raises(ValueError, match="one row per image|\\(B, D\\)"):
        similarity_cam(net, images, ref)


def test_overlay_and_panels():
    img = Image.new("RGB", (16, 32), (0, 0, 0))
    heat = np.zeros((8, 4))
    heat[0, 0] = 1.0
    out = overlay(img, heat)
    assert out.size == img.size
    # jet(0) is dark blue: the overlay of a black image with a zero map is 0.7 * jet(0)
    assert np.asarray(out)[-1, -1, 2] > 80 and np.asarray(out)[-1, -1, 0] < 5
    rows = cam_panels([img, img], np.stack([heat, heat]))
    assert [r[0] for r in rows] == ["image", "map", "overlay"] and all(len(r[1]) == 2 for r in rows)


def _features(vectors, pids, cams):
    from corelib.features import Features

    return Features(torch.tensor(vectors, dtype=torch.float32), np.asarray(pids), np.asarray(cams))


def test_rank_lists_follow_the_protocol():
    from corelib.data.dataset import Sample
    from corelib.explain import rank_lists

    q = _features([[1.0, 0.0]], [7], [0])
    # gallery 0: same pid, same camera (junk, left out); 1: same pid, other camera; 2, 3: other pids
    g = _features([[1.0, 0.0], [0.8, 0.6], [0.9, 0.1], [0.0, 1.0]], [7, 7, 3, 4], [0, 1, 1, 0])
    qs = [Sample("q.jpg", 7, 0)]
    gs = [Sample(f"g{i}.jpg", p, c) for i, (p, c) in enumerate([(7, 0), (7, 1), (3, 1), (4, 0)])]
    (rl,) = rank_lists(q, g, qs, gs, indices=[0], topk=5)
    assert [s.path for s in rl.gallery] == ["g2.jpg", "g1.jpg", "g3.jpg"]  # by cosine similarity, junk gone
    assert rl.correct == [False, True, False]
    assert rl.scores[0] == pytest.approx(0.9 / np.hypot(0.9, 0.1)) and rl.scores == sorted(rl.scores, reverse=True)
    assert len(rank_lists(q, g, qs, gs, indices=[0], topk=2)[0].gallery) == 2
    with pytest.raises(ValueError, match="out of range"):
        rank_lists(q, g, qs, gs, indices=[1])
    with pytest.raises(ValueError, match="disagree"):
        rank_lists(q, g, qs, gs[:3], indices=[0])


@pytest.mark.slow
def test_rank_list_and_branch_figures_on_images(synthetic_small):
    from matplotlib.figure import Figure

    from corelib import viz
    from corelib.data.synthetic import load_synthetic
    from corelib.data.transforms import build_transforms
    from corelib.explain import BRANCH_COLUMNS, RankList, branch_rows, explain_rank_list, rank_list_row

    ds = load_synthetic(synthetic_small["market_like"])
    tf = build_transforms("test", 128, 64)
    torch.manual_seed(0)
    net = CoreReIDNet(18, num_classes=4, weights="none").eval()
    rl = RankList(ds.query[0], ds.gallery[:3], [0.9, 0.8, 0.7], [True, False, False])
    ex = explain_rank_list(net, rl, tf, branch="top", layer="layer3")
    assert ex.gallery_maps.shape == (3, 128, 64) and ex.query_map.shape == (128, 64)
    assert not np.allclose(ex.gallery_maps[0], ex.gallery_maps[1], atol=1e-3)
    row = rank_list_row(ex, "q", cams=True)
    plain = rank_list_row(ex, "q", cams=False)
    assert row["gallery"][0].size == plain["gallery"][0].size
    assert not np.array_equal(np.asarray(row["gallery"][0]), np.asarray(plain["gallery"][0]))
    assert isinstance(viz.rank_list([row, plain], title="t"), Figure)
    rows = branch_rows(net, ds.query[0], ds.gallery[0], tf, label="after")
    assert [len(cells) for _, cells in rows] == [len(BRANCH_COLUMNS)] * 2 and all(c is not None for c in rows[0][1])
    src = SourceNet(18, num_classes=3, weights="none").eval()
    rows = branch_rows(src, ds.query[0], ds.gallery[0], tf, label="before")
    assert [c is None for c in rows[0][1]] == [False, False, True, True, False, False]  # no top / bottom branch
    assert isinstance(viz.samples_overview(rows, column_titles=BRANCH_COLUMNS), Figure)
    with pytest.raises(ValueError, match="empty"):
        explain_rank_list(net, RankList(ds.query[0], [], [], []), tf)


def test_rank1_correct_and_mixed_query_sampling():
    from corelib.data.dataset import Sample
    from corelib.explain import rank1_correct, rank_lists, sample_queries

    g = torch.Generator().manual_seed(0)
    gal = _features(torch.randn(30, 4, generator=g).tolist(), [i % 6 for i in range(30)], [i % 3 for i in range(30)])
    qry = _features(torch.randn(12, 4, generator=g).tolist(), [i % 6 for i in range(12)], [i % 2 for i in range(12)])
    flags = rank1_correct(qry, gal, chunk=5)
    qs = [Sample(f"q{i}", int(p), int(c)) for i, (p, c) in enumerate(zip(qry.pids, qry.camids))]
    gs = [Sample(f"g{i}", int(p), int(c)) for i, (p, c) in enumerate(zip(gal.pids, gal.camids))]
    assert flags == [rl.correct[0] for rl in rank_lists(qry, gal, qs, gs, indices=range(12), topk=1)]
    assert 0 < sum(flags) < 12
    picked = sample_queries(12, 4, seed=3, correct=flags)
    assert len(set(picked)) == 4 and picked == sorted(picked)
    assert sum(flags[i] for i in picked) == min(2, sum(flags))
    assert picked == sample_queries(12, 4, seed=3, correct=flags)
    only_wrong = [False] * 12
    assert sum(only_wrong[i] for i in sample_queries(12, 4, correct=only_wrong)) == 0  # filled from the wrong side
    assert len(sample_queries(3, 10)) == 3
