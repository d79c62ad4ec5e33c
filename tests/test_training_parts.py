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


def test_checkpoints_of_another_format_version_are_refused(tmp_path):
    """Checkpoints written before format versions were stamped (a ResNet depth and a flat config, the
    0.1 layout) or by a newer corelib are refused in one line naming the file and the fix, wherever
    they are read; weights files of other origins (no stage) still load."""
    import torch

    from corelib.errors import CheckpointError
    from corelib.runtime.checkpoint import FORMAT_VERSION, load_checkpoint
    from corelib.training import load_trained_model

    src = SourceNet(18, 5, weights=None)
    old = tmp_path / "pre.pt"
    flat = {"depth": 18, "weights": "none", "height": 64, "width": 32, "epochs": 2, "device": "cpu"}
    torch.save({"stage": "pretrain", "cfg": flat, "model": src.state_dict(), "epoch": 1, "depth": 18,
                "num_classes": 5}, old)
    refusal = rf"{old} is a checkpoint of no format version \(an older corelib\); this corelib reads version " \
              rf"{FORMAT_VERSION} only: re-run the stage with this corelib version"
    with pytest.raises(CheckpointError, match=refusal):
        load_trained_model(old)
    with pytest.raises(CheckpointError, match=refusal):
        load_checkpoint(old, stage="pretrain")  # what resuming and fine-tuning's source read
    newer = save_checkpoint({"stage": "pretrain", "model": src.state_dict(), "epoch": 0}, tmp_path / "new.pt")
    torch.save({**torch.load(newer, weights_only=True), "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="written by a newer corelib .* update corelib"):
        load_checkpoint(newer)
    weights = tmp_path / "weights.pt"
    torch.save(src.state_dict(), weights)  # a plain state dict: no stage, no version
    assert set(load_checkpoint(weights)) == set(src.state_dict())
    current = save_checkpoint({"stage": "pretrain", "model": src.state_dict(), "epoch": 0}, tmp_path / "cur.pt")
    assert load_checkpoint(current, stage="pretrain")["format_version"] == FORMAT_VERSION


def test_losses_by_name_return_named_terms():
    from corelib.config import AdaptLossCfg, SourceLossCfg
    from corelib.errors import UnknownNameError
    from corelib.losses import build_criterion, list_losses
    from corelib.models import SourceOutput

    assert list_losses("pretrain") == ["ce_triplet", "ce_triplet_center", "ce_triplet_orientation", "transreid"]
    assert list_losses("finetune") == ["ce_triplet_center", "cluster_contrast", "corereid", "corereid_orientation",
                                       "transreid"]
    crit = build_criterion(SourceLossCfg(), stage="pretrain")
    f, logits, pids = torch.randn(8, 4), torch.randn(8, 3), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    terms = crit(SourceOutput(f, logits), pids)
    assert list(terms) == list(crit.terms) == ["loss", "ce", "triplet"]
    assert torch.allclose(terms["loss"], CrossEntropyLabelSmooth(0.1)(logits, pids) + SoftTripletLoss()(f, pids))
    fused = build_criterion(AdaptLossCfg(fused_loss=True), stage="finetune")
    assert fused.uses_fused and fused.terms[-2:] == ("tri_fused_top", "tri_fused_bottom")
    with pytest.raises(UnknownNameError, match="unknown pretrain loss 'ce_tripplet'; did you mean 'ce_triplet'"):
        build_criterion(SourceLossCfg(name="ce_tripplet"), stage="pretrain")
