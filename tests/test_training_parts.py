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


def test_checkpoints_of_the_flat_layout_still_load_and_resume(tmp_path):
    """Checkpoints written before model names and grouped configs were stored: a ResNet depth and
    a flat config. They rebuild, and resuming one with the same recipe is not refused."""
    from corelib.config import FinetuneCfg, PretrainCfg
    from corelib.errors import ConfigError
    from corelib.models import build_model
    from corelib.runtime import check_resume
    from corelib.training import load_trained_model

    src = SourceNet(18, 5, weights=None)
    flat = {"depth": 18, "weights": "none", "height": 64, "width": 32, "epochs": 2, "device": "cpu"}
    save_checkpoint({"stage": "pretrain", "cfg": flat, "model": src.state_dict(), "epoch": 1, "depth": 18,
                     "num_classes": 5}, tmp_path / "pre.pt")
    trained = load_trained_model(tmp_path / "pre.pt")
    assert trained.input_size == (64, 32) and trained.epoch == 2 and trained.cfg["model"]["backbone"] == "resnet18"
    assert torch.equal(trained.model.classifier.weight, src.classifier.weight)

    mt = build_model("mean_teacher_resnet18", num_classes=7, weights=None)
    flat = {"depth": 18, "num_clusters": 7, "ecab": True, "pool": "gap+gmp", "fusion": "v2", "alpha": 0.999,
            "height": 64, "width": 32, "cluster_camera_norm": True}
    save_checkpoint({"stage": "finetune", "cfg": flat, "model": mt.state_dict(), "epoch": 0, "depth": 18,
                     "num_clusters": 7}, tmp_path / "fine.pt")
    trained = load_trained_model(tmp_path / "fine.pt")
    assert trained.model.num_classes == 7 and trained.cfg["cluster"]["normalize"] == "camera_mean"
    assert torch.equal(trained.model.teacher.trunk.conv1.weight, mt.teacher.trunk.conv1.weight)

    cfg = FinetuneCfg.smoke()
    old = {"depth": 18, "height": 64, "width": 32, "num_clusters": 8, "kmeans": "lloyd", "kmeans_max_iter": 20,
           "batch_size": 16, "epochs": 2, "iters_per_epoch": 2, "eval_every": 1, "num_workers": 0}
    check_resume(old, cfg, "fine.pt")  # the same recipe in the old layout: resumable
    with pytest.raises(ConfigError, match=r"another recipe \(cluster.num_clusters 9 -> 8\)"):
        check_resume({**old, "num_clusters": 9}, cfg, "fine.pt")
    check_resume({"depth": 18, "epochs": 9}, PretrainCfg.smoke(), "pre.pt")  # epochs may change on resume


def test_losses_by_name_return_named_terms():
    from corelib.config import AdaptLossCfg, SourceLossCfg
    from corelib.errors import UnknownNameError
    from corelib.losses import build_criterion, list_losses
    from corelib.models import SourceOutput

    assert list_losses("pretrain") == ["ce_triplet", "ce_triplet_center", "transreid"]
    assert list_losses("finetune") == ["ce_triplet_center", "cluster_contrast", "corereid", "transreid"]
    crit = build_criterion(SourceLossCfg(), stage="pretrain")
    f, logits, pids = torch.randn(8, 4), torch.randn(8, 3), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    terms = crit(SourceOutput(f, logits), pids)
    assert list(terms) == list(crit.terms) == ["loss", "ce", "triplet"]
    assert torch.allclose(terms["loss"], CrossEntropyLabelSmooth(0.1)(logits, pids) + SoftTripletLoss()(f, pids))
    fused = build_criterion(AdaptLossCfg(fused_loss=True), stage="finetune")
    assert fused.uses_fused and fused.terms[-2:] == ("tri_fused_top", "tri_fused_bottom")
    with pytest.raises(UnknownNameError, match="unknown pretrain loss 'ce_tripplet'; did you mean 'ce_triplet'"):
        build_criterion(SourceLossCfg(name="ce_tripplet"), stage="pretrain")
