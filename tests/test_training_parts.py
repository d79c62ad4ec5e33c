"""Losses, atomic checkpoints and feature extraction (parts of the training loops)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from corelib.data import ImageDataset, build_loader, build_transforms, load_synthetic
from corelib.features import extract_features
from corelib.losses import CrossEntropyLabelSmooth, SoftTripletLoss, batch_hard_distances
from corelib.models import CoreReIDNet, SourceNet
from corelib.training import load_checkpoint, save_checkpoint


def test_label_smoothing_matches_its_definition():
    logits, y = torch.randn(5, 7), torch.tensor([0, 3, 6, 2, 2])
    q = torch.full((5, 7), 0.1 / 7)
    q[torch.arange(5), y] += 0.9
    expected = -(q * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(CrossEntropyLabelSmooth(0.1)(logits, y), expected, atol=1e-6)
    with pytest.raises(ValueError):
        CrossEntropyLabelSmooth(1.0)


def test_soft_triplet_is_batch_hard_softplus():
    f = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    pids = torch.tensor([0, 0, 1, 1])
    d_ap, d_an = batch_hard_distances(f, pids)
    assert torch.allclose(d_ap, torch.tensor([3.0, 3.0, 4.0, 4.0]))
    assert torch.allclose(d_an, torch.tensor([1.0, 10**0.5, 1.0, 5.0]))
    loss = SoftTripletLoss()(f, pids)
    assert torch.allclose(loss, F.softplus(d_ap - d_an).mean())
    f.requires_grad_(True)
    SoftTripletLoss()(f, pids).backward()
    assert torch.isfinite(f.grad).all()


def test_checkpoint_round_trip_and_wrong_backbone(tmp_path):
    net = CoreReIDNet(18, 5, weights=None)
    path = save_checkpoint({"model": net.state_dict(), "epoch": 3, "rng": torch.get_rng_state()}, tmp_path / "ck.pt")
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"
    other = CoreReIDNet(18, 5, weights=None)
    state = load_checkpoint(path, model=other)
    assert state["epoch"] == 3 and torch.equal(other.classifier.weight, net.classifier.weight)
    with pytest.raises(ValueError, match="another architecture"):
        load_checkpoint(path, model=CoreReIDNet(34, 5, weights=None))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_checkpoint(path, model=CoreReIDNet(18, 9, weights=None))
    with pytest.raises(FileNotFoundError, match="RUN_DIR"):
        load_checkpoint(tmp_path / "missing.pt")


def test_extract_features_is_flip_averaged_and_normalised(synthetic_small):
    ds = load_synthetic(synthetic_small["cuhk_like"])
    loader = build_loader(ds.query[:10], build_transforms("test", 64, 32), batch_size=4)
    net = SourceNet(18, 3, weights=None)
    out = extract_features(net, loader)
    assert out.features.shape == (10, 512) and len(out.pids) == 10
    assert torch.allclose(out.features.norm(dim=1), torch.ones(10), atol=1e-5)
    images = torch.stack([ImageDataset(ds.query[:2], build_transforms("test", 64, 32))[i][0] for i in range(2)])
    net.eval()
    with torch.no_grad():
        manual = F.normalize(net(images) + net(torch.flip(images, dims=[3])), dim=1)
    assert torch.allclose(out.features[:2], manual, atol=1e-4)
