"""What TransReID brought into the rest of the workbench: the optimiser / schedule settings of its
recipes, pixel-mode erasing, the decoded-image cache, Grad-CAM and the widgets on a ViT, the
complexity rows, camera-blind evaluation, conditional filtering and the chapter-08 tables."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from corelib.config import FinetuneCfg, PretrainCfg
from corelib.data.synthetic import load_synthetic
from corelib.errors import ConfigError, InvalidInputError
from corelib.models import CameraBlind, build_model
from corelib.training import TrainedModel


@pytest.fixture(scope="module")
def dataset(synthetic_small):
    return load_synthetic(synthetic_small["market_like"])


def _tiny(num_classes=5, cameras=6, **kw):
    torch.manual_seed(0)
    return build_model("transreid_net", backbone="transreid_vit_tiny", num_classes=num_classes, num_cameras=cameras,
                       img_size=(64, 32), **kw)


def test_cosine_schedule_is_transreids_timm_scheduler_stepped_per_epoch():
    cfg = PretrainCfg(schedule="cosine", epochs=120, warmup_epochs=5, min_lr_factor=0.002, milestones=())
    # epoch e (0-based) runs at t = e + 1: warm-up 0.01 + t * 0.99 / 5 below t = 5, then the cosine
    assert cfg.lr_factor(0) == pytest.approx(0.01 + 0.99 / 5)
    assert cfg.lr_factor(3) == pytest.approx(0.01 + 4 * 0.99 / 5)
    assert cfg.lr_factor(4) == pytest.approx(0.002 + 0.5 * 0.998 * (1 + math.cos(math.pi * 5 / 120)))
    assert cfg.lr_factor(119) == pytest.approx(0.002)  # t = 120: the floor
    assert PretrainCfg().lr_factor(75) == pytest.approx(0.01)  # the paper's multi-step is unchanged
    with pytest.raises(ConfigError):
        PretrainCfg(schedule="linear")
    with pytest.raises(ConfigError):
        FinetuneCfg(optimizer="rmsprop")


def test_optimiser_groups_put_biases_at_their_own_rate():
    from corelib.training.optim import build_optimizer

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    sgd = build_optimizer(net.named_parameters(), PretrainCfg(optimizer="sgd", lr=0.008, bias_lr_factor=2.0,
                                                             weight_decay=1e-4, momentum=0.9))
    assert isinstance(sgd, torch.optim.SGD)
    weights, biases = sgd.param_groups
    assert weights["lr"] == pytest.approx(0.008) and biases["lr"] == pytest.approx(0.016)
    assert len(weights["params"]) == 2 and len(biases["params"]) == 2 and biases["weight_decay"] == pytest.approx(1e-4)
    assert weights["momentum"] == pytest.approx(0.9)
    adam = build_optimizer(net.named_parameters(), PretrainCfg())
    assert isinstance(adam, torch.optim.Adam) and len(adam.param_groups) == 1  # the paper's recipe: one group


def test_pixel_mode_erasing_writes_random_values(dataset):
    from corelib.data.dataset import read_image
    from corelib.data.transforms import build_transforms

    img = read_image(dataset.train[0].path)
    torch.manual_seed(3)
    mean = build_transforms("finetune", 64, 32, erase_p=1.0, lgpr_p=0, gray_p=0, flip_p=0, pad=0)(img)
    torch.manual_seed(3)
    rand = build_transforms("finetune", 64, 32, erase_p=1.0, lgpr_p=0, gray_p=0, flip_p=0, pad=0,
                            erase_mode="random")(img)
    erased = mean != build_transforms("test", 64, 32)(img)
    assert erased.any()
    # the ImageNet mean written into the area vs per-pixel normal draws (many distinct values)
    assert len(torch.unique(mean[erased])) <= 3 and len(torch.unique(rand[erased])) > 50
    with pytest.raises(InvalidInputError):
        build_transforms("finetune", 64, 32, erase_mode="zeros")


def test_decoded_images_are_cached_and_reread_when_the_file_changes(tmp_path, dataset):
    import shutil

    from PIL import Image

    from corelib.data import batches
    from corelib.data.dataset import read_image

    path = tmp_path / "0001_c1s1_000001_00.jpg"
    shutil.copy(dataset.train[0].path, path)
    first = batches.read_image_cached(path)
    assert np.array_equal(np.asarray(first), np.asarray(read_image(path)))
    first.paste((0, 0, 0), (0, 0, 8, 8))  # a caller changing its copy does not reach the cache
    again = batches.read_image_cached(path)
    assert np.array_equal(np.asarray(again), np.asarray(read_image(path)))
    Image.new("RGB", (32, 64), (250, 10, 10)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert np.asarray(batches.read_image_cached(path))[0, 0].tolist() == np.asarray(read_image(path))[0, 0].tolist()


def test_camera_blind_evaluation_is_the_mean_camera_embedding(dataset):
    net = _tiny(cameras=6).eval()
    x = torch.randn(2, 3, 64, 32)
    blind = CameraBlind(net)
    assert torch.allclose(blind(x, torch.tensor([0, 3])), net(x, torch.tensor([-1, -1])), atol=1e-6)
    from corelib.training import evaluate_model

    seen, blind_scores = evaluate_model(net, dataset, 64, 32), evaluate_model(net, dataset, 64, 32, cameras=False)
    assert set(seen) == set(blind_scores) and seen["mAP"] != blind_scores["mAP"]  # SIE changes the descriptors


@pytest.mark.slow
def test_gradcam_activation_maps_and_the_widget_work_on_the_vit(dataset):
    from corelib.explain import MODEL_CAM_COLUMNS, embed, model_cam_rows, similarity_cam, trunk_layers
    from corelib.widgets import RankListExplorer

    net = _tiny().eval()
    assert list(trunk_layers(net)) == ["block1", "block2", "block3"]  # the 4th block became JPM's branches
    x = torch.randn(3, 3, 64, 32)
    ref = embed(net, x[:1]).expand(3, -1)
    maps = similarity_cam(net, x, ref)
    assert maps.shape == (3, 64, 32) and np.isfinite(maps).all()
    assert not np.allclose(maps, similarity_cam(net, x, -ref))  # the reference matters
    assert embed(net, x, "global").shape == (3, 96)
    trained = TrainedModel(net, "pretrain", {"augment": {"height": 64, "width": 32}}, 1)
    ex = RankListExplorer.from_model(trained, dataset, topk=2)
    assert list(ex.branch.options) == ["global", "descriptor"] and ex.image.value[:4] == b"\x89PNG"
    from corelib.data.transforms import build_transforms as tf

    resnet = build_model("corereid_net", backbone="resnet18", num_classes=4, weights="none").eval()
    rows = model_cam_rows({"resnet": resnet, "vit": net}, dataset.query[0], dataset.gallery[0],
                          {"resnet": tf("test", 64, 32), "vit": tf("test", 64, 32)})
    assert [label for label, _ in rows] == ["resnet", "vit"] and all(len(c) == len(MODEL_CAM_COLUMNS) for _, c in rows)


def test_complexity_rows_of_the_vits():
    from corelib.models.complexity import vit_complexity_table

    rows = vit_complexity_table(("transreid_vit_tiny",), iters=0, input_size=(64, 32))
    net = _tiny(num_classes=751, cameras=6)
    assert rows[0]["params"] == sum(p.numel() for p in net.parameters())
    assert rows[0]["gmacs"] > 0 and math.isnan(rows[0]["images_per_s"])


def test_conditional_filtering_scores_and_keeps_the_head(dataset):
    from corelib.filtering import filter_pool, forgetting_scores, keep_share

    assert keep_share(np.array([0.1, 0.9, 0.5, 0.9]), 0.5).tolist() == [1, 3]  # ties by index
    assert keep_share(np.array([0.1, 0.9, 0.5]), 0.34, highest=False).tolist() == [0]
    with pytest.raises(InvalidInputError):
        keep_share(np.zeros(3), 0.0)
    a = _tiny().eval()
    same = forgetting_scores(a, a, dataset.query[:6], height=64, width=32)
    assert same.shape == (6,) and np.allclose(same, 1.0, atol=1e-5)  # a model compared with itself forgets nothing
    torch.manual_seed(1)
    b = build_model("transreid_net", backbone="transreid_vit_tiny", num_classes=5, num_cameras=6, img_size=(64, 32)).eval()
    pool = {"query": dataset.query[:5], "gallery": dataset.gallery[:7]}
    kept = filter_pool(a, b, pool, 0.5, height=64, width=32)
    total = sum(len(v) for v in kept.kept.values())
    assert total == 6 and [r["images"] for r in kept.table()] == [5, 7]
    flat = np.concatenate([kept.scores["query"], kept.scores["gallery"]])
    threshold = np.sort(flat)[::-1][5]
    for name, idx in kept.kept.items():
        assert (kept.scores[name][idx] >= threshold).all()  # the kept ones are the pool's top half
    with pytest.raises(InvalidInputError, match="empty"):
        forgetting_scores(a, b, [], height=64, width=32)


@pytest.mark.slow
def test_the_logged_target_scores_of_a_source_run_are_its_direct_transfer(synthetic_small, tmp_path):
    """Chapter 07 reuses a recipe's pre-training log as its direct transfer: the best epoch's target
    scores equal a fresh camera-blind evaluation of best.pt, bit for bit."""
    from corelib.baselines import _direct_from_log
    from corelib.recipes import RecipeContext, resolve_recipe
    from corelib.training import evaluate_model, load_trained_model, pretrain

    source, target = load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])
    ctx = RecipeContext("person", True, "cuhk_like")
    pre = resolve_recipe("pretrain", ctx, recipe="transreid", smoke=True)
    ft = resolve_recipe("finetune", ctx, recipe="transreid", smoke=True)
    res = pretrain(pre, source, tmp_path, target=target, progress=False)
    logged = _direct_from_log(res.history, res.best_epoch, pre, ft)
    trained = load_trained_model(res.best_checkpoint)
    fresh = evaluate_model(trained.model, target, *trained.input_size, cameras=False)
    assert logged and logged["mAP"] == fresh["mAP"] and logged["rank1"] == fresh["rank1"]
    assert _direct_from_log(res.history, res.best_epoch, pre, ft.with_overrides({"augment.height": 128})) is None
