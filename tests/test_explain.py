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
