"""Orientation-aware triplet mining and criteria, the orientation-aware sampler, the orientation
estimator, the orientation recipes and the target-views check of fine-tuning."""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from corelib.config import AdaptLossCfg, FinetuneCfg, OrientationCfg, PretrainCfg, SourceLossCfg
from corelib.data.dataset import ReIDDataset
from corelib.data.samplers import SAMPLERS, CameraAwareIdentitySampler, OrientationAwareIdentitySampler, build_sampler
from corelib.errors import ConfigError, InvalidInputError, UnknownNameError
from corelib.losses import CrossEntropyLabelSmooth, SoftTripletLoss, build_criterion, orientation_batch_hard_distances
from corelib.models import SourceOutput
from corelib.orientation import (
    accuracy,
    fit_view_estimator,
    list_view_estimators,
    register_view_estimator,
    with_estimated_views,
)
from corelib.recipes import RecipeContext, get_recipe, resolve_recipe
from corelib.settings import save_config

# Samples with views, whether or not corelib.data.Sample has its viewid field on this branch
VSample = namedtuple("VSample", "path pid camid viewid")

# A hand-built batch: 1-D features, so every distance is |x_i - x_j| and each mined distance names
# exactly one candidate.
X = [0.0, 3.0, 5.0, 10.0, 20.0, 2.0, 30.0, 33.0]
PIDS = [0, 0, 0, 1, 1, 2, 3, 3]
VIEWS = [0, 1, 0, 0, 2, -1, 2, 2]  # 0 front, 1 back, 2 side; -1 unknown


def mine(rule="same_view", **kw):
    return orientation_batch_hard_distances(torch.tensor(X, dtype=torch.float64)[:, None], torch.tensor(PIDS),
                                            torch.tensor(VIEWS), rule, **kw)


def test_same_view_mining_picks_what_the_rule_allows_and_falls_back():
    d_ap, d_an, fell_back = mine("same_view")
    # anchor: allowed positive (index, distance) / allowed negative
    # 0 (v0): positive 1 (other view, 3; not 2, same view, 5) / negative 3 (same view, 10; not 5, unknown view, 2)
    # 1 (v1): positive 0 (3) / no negative seen from v1 -> plain hardest: 5 (1)            -> fell back
    # 2 (v0): positive 1 (2; not 0, same view, 5) / negative 3 (5; not 5 at 3)
    # 3 (v0): positive 4 (10) / negative 2 (5)
    # 4 (v2): positive 3 (10) / negative 6 (same view, 10; not 2 at 15)
    # 5 (unknown view): no positive (0) / plain hardest negative 1 (1)                      -> fell back
    # 6, 7 (v2, pid 3): the only positive has the same view -> plain positive (3);
    #                   negatives 4 (10) and 4 (13)                                        -> fell back
    assert d_ap.tolist() == pytest.approx([3, 3, 2, 10, 10, 0, 3, 3])
    assert d_an.tolist() == pytest.approx([10, 1, 5, 5, 10, 1, 10, 13])
    assert fell_back.tolist() == [False, True, False, False, False, True, True, True]


def test_angular_mining_with_a_side_view_similar_to_front_and_back():
    d_ap, d_an, fell_back = mine("angular", view_angles=(0, 180, 90), similar_within=90)
    # front (0) and back (180) differ; side (90) is similar to both
    # 1 (v1): negatives seen from v1 or the side: 4 (17), not 5 (unknown, 1) nor 3 (front, 7)
    # 3 (v0): its positive 4 is a side view, similar -> plain positive 4 (10)              -> fell back
    # 4 (v2): positive 3 (front, similar) -> plain (10); negative 6 (10): every known view is similar to the side
    assert d_ap.tolist() == pytest.approx([3, 3, 2, 10, 10, 0, 3, 3])
    assert d_an.tolist() == pytest.approx([10, 17, 5, 5, 10, 1, 10, 13])
    assert fell_back.tolist() == [False, False, False, True, True, True, True, True]
    # within 45 degrees only the same angle is similar: the same_view rule for these views
    narrow = mine("angular", view_angles=(0, 180, 90), similar_within=45)
    same = mine("same_view")
    assert all(torch.equal(a, b) for a, b in zip(narrow, same))
    with pytest.raises(InvalidInputError, match="view id 2 has no angle"):
        mine("angular", view_angles=(0, 180))
    with pytest.raises(InvalidInputError, match="unknown orientation rule"):
        mine("nearby")


def test_without_views_the_mining_is_plain_batch_hard():
    from corelib.losses import batch_hard_distances

    f = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    pids = torch.tensor(PIDS)
    d_ap, d_an, fell_back = orientation_batch_hard_distances(f, pids, torch.full((8,), -1))
    plain = batch_hard_distances(f, pids)
    assert torch.equal(d_ap, plain[0]) and torch.equal(d_an, plain[1]) and bool(fell_back.all())
    with pytest.raises(InvalidInputError, match="8 features but 3 views"):
        orientation_batch_hard_distances(f, pids, torch.tensor([0, 1, 2]))


def test_pretrain_criterion_terms():
    crit = build_criterion(SourceLossCfg(name="ce_triplet_orientation"), stage="pretrain")
    assert crit.uses_views and crit.terms == ("loss", "ce", "triplet", "fallback_share")
    assert not build_criterion(SourceLossCfg(), stage="pretrain").uses_views
    f = torch.tensor(X)[:, None]
    logits, pids = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.tensor(PIDS)
    terms = crit(SourceOutput(f, logits), pids, lambda x: x, views=torch.tensor(VIEWS))
    assert list(terms) == list(crit.terms)
    d_ap, d_an, fell_back = mine("same_view")
    tri = SoftTripletLoss.of_distances(d_ap, d_an)
    assert terms["triplet"].item() == pytest.approx(tri.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(CrossEntropyLabelSmooth(0.1)(logits, pids).item() + tri.item(), rel=1e-5)
    assert terms["fallback_share"].item() == pytest.approx(4 / 8)
    trained = torch.tensor(X)[:, None].requires_grad_()
    crit(SourceOutput(trained, logits), pids, lambda x: x, views=torch.tensor(VIEWS))["loss"].backward()
    assert torch.isfinite(trained.grad).all() and trained.grad.abs().sum() > 0
    with pytest.raises(InvalidInputError, match="reads the view id"):
        crit(SourceOutput(f, logits), pids)


def test_finetune_criterion_orients_every_triplet():
    cfg = AdaptLossCfg(name="corereid_orientation", fused_loss=True,
                       orientation=OrientationCfg(rule="angular", view_angles=(0.0, 180.0, 90.0), similar_within=90))
    crit = build_criterion(cfg, stage="finetune")
    assert crit.uses_views and crit.uses_fused
    assert crit.terms == ("loss", "ce", "tri_global", "tri_top", "tri_bottom", "tri_fused_top", "tri_fused_bottom",
                          "fallback_share")
    f = torch.tensor(X)[:, None]
    y = torch.tensor(PIDS)
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    out = SimpleNamespace(global_feat=f, logits=logits, top_feat=2 * f, bottom_feat=3 * f)
    fused = (SimpleNamespace(top_feat=4 * f), SimpleNamespace(bottom_feat=5 * f))
    views = torch.tensor(VIEWS)
    batch = SimpleNamespace(outputs=(out, out, out), labels=(y, y, y), fused=fused, gather=lambda x: x,
                            views=(views, views, views))
    terms = crit(batch)
    assert list(terms) == list(crit.terms)
    d_ap, d_an, fell_back = mine("angular", view_angles=(0, 180, 90), similar_within=90)
    for name, scale in (("tri_global", 1), ("tri_top", 2), ("tri_bottom", 3), ("tri_fused_top", 4),
                        ("tri_fused_bottom", 5)):
        assert terms[name].item() == pytest.approx(SoftTripletLoss.of_distances(scale * d_ap, scale * d_an).item(),
                                                   rel=1e-5), name
    expected = (terms["ce"] + terms["tri_global"] + 0.5 * (terms["tri_top"] + terms["tri_bottom"])
                + 0.5 * (terms["tri_fused_top"] + terms["tri_fused_bottom"]))
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["fallback_share"].item() == pytest.approx(5 / 8)
    with pytest.raises(InvalidInputError, match="corereid_orientation"):
        crit(SimpleNamespace(outputs=(out, out, out), labels=(y, y, y), fused=fused, gather=lambda x: x))


def test_orientation_settings_are_validated_and_old_configs_load(tmp_path):
    with pytest.raises(ConfigError, match="loss.orientation.rule"):
        OrientationCfg(rule="nearby")
    with pytest.raises(ConfigError, match="similar_within"):
        OrientationCfg(similar_within=270)
    with pytest.raises(ConfigError, match="view_angles is empty"):
        OrientationCfg(rule="angular", view_angles=())
    with pytest.raises(ConfigError, match="target_views"):
        FinetuneCfg(target_views="guessed")
    with pytest.raises(UnknownNameError, match="camera_aware.*orientation_aware|orientation_aware.*camera_aware"):
        PretrainCfg(sampler="random_order")
    cfg = FinetuneCfg().with_overrides({"loss.orientation.rule": "angular", "loss.orientation.view_angles": [0, 90],
                                        "sampler": "orientation_aware"})
    assert cfg.loss.orientation.view_angles == (0.0, 90.0) and cfg.sampler == "orientation_aware"
    # a config.yaml of an older run: no sampler, no target_views, no loss.orientation
    path = save_config(FinetuneCfg(), tmp_path / "config.yaml")
    text = path.read_text()
    dropped = ("sampler:", "target_views:", "  orientation:", "    rule:", "    view_angles:", "    - ", "    similar_within:")
    lines = [ln for ln in text.splitlines() if not ln.startswith(dropped)]
    assert len(lines) == len(text.splitlines()) - 9
    path.write_text("\n".join(lines) + "\n")
    from corelib.config import load_config
    old = load_config(FinetuneCfg, path)
    assert old == FinetuneCfg()


# --------------------------------------------------------------------------------------------
# sampler


def view_samples():
    """Identity 0: 8 images, views 0,0,0,0,1,1,2,2 (one camera); identity 1: 4 images of one view, two
    cameras; identity 2: a single image."""
    rows = [VSample(f"a{i}.jpg", 0, 0, v) for i, v in enumerate([0, 0, 0, 0, 1, 1, 2, 2])]
    rows += [VSample(f"b{i}.jpg", 1, i % 2, 0) for i in range(4)]
    rows += [VSample("c0.jpg", 2, 0, 1)]
    return rows


def blocks(sampler, samples):
    out, order = {}, list(sampler)
    for i in order:
        out.setdefault(samples[i].pid, []).append(i)
    return order, out


def test_orientation_sampler_blocks_hold_several_views_and_are_deterministic():
    samples = view_samples()
    sampler = build_sampler("orientation_aware", samples, num_instances=4, seed=3)
    assert isinstance(sampler, OrientationAwareIdentitySampler) and len(sampler) == 4 + 4 + 1
    for epoch in range(10):
        sampler.set_epoch(epoch)
        _, by_pid = blocks(sampler, samples)
        assert len({samples[i].viewid for i in by_pid[0]}) == 3  # every view of identity 0 in its block of 4
        assert len(set(by_pid[0])) == 4  # without replacement while there are images left
        assert len({samples[i].camid for i in by_pid[1]}) == 2  # one view only: other cameras next
        assert by_pid[2] == [12]
    # the camera-aware sampler on the same list misses views (one camera: any follower)
    camera = build_sampler("camera_aware", samples, num_instances=4, seed=3)
    seen = []
    for epoch in range(10):
        camera.set_epoch(epoch)
        seen.append(len({samples[i].viewid for i in blocks(camera, samples)[1][0]}))
    assert min(seen) < 3
    again = OrientationAwareIdentitySampler(samples, num_instances=4, seed=3)
    sampler.set_epoch(5)
    again.set_epoch(5)
    assert list(sampler) == list(again)
    orders = set()
    for epoch in range(4):
        again.set_epoch(epoch)
        orders.add(tuple(again))
    assert len(orders) > 1


def test_sampler_registry():
    samples = view_samples()
    assert {"camera_aware", "orientation_aware"} <= set(SAMPLERS.names())
    built = build_sampler("camera_aware", samples, num_instances=4, seed=1)
    direct = CameraAwareIdentitySampler(samples, num_instances=4, seed=1)
    assert type(built) is CameraAwareIdentitySampler and list(built) == list(direct)
    with pytest.raises(UnknownNameError, match="orientation_aware"):
        build_sampler("orientation", samples, num_instances=4, seed=1)
    # identities without views and few images: with replacement, short identity blocks full
    plain = [VSample(f"p{i}.jpg", 0, 0, None) for i in range(2)]
    assert len(list(OrientationAwareIdentitySampler(plain, num_instances=4, seed=0))) == 4


# --------------------------------------------------------------------------------------------
# estimator


class MeanColour(torch.nn.Module):
    """A 'network' whose descriptor is the mean colour: it separates views painted in different colours."""

    def forward(self, x, camids=None, viewids=None):
        return x.mean(dim=(2, 3))


def coloured_samples(root, count, offset=0):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    rng = np.random.default_rng(offset)
    rows = []
    for i in range(count):
        view = i % 3
        pixels = np.clip(np.array(colours[view]) + rng.integers(-40, 40, (16, 8, 3)), 0, 255).astype(np.uint8)
        path = root / f"{offset + i}.png"
        Image.fromarray(pixels).save(path)
        rows.append(VSample(str(path), i // 3, i % 2, view))
    return rows


def test_view_estimator_learns_views_and_estimated_views_make_a_copy(tmp_path):
    assert "view_head" in list_view_estimators()
    source = coloured_samples(tmp_path, 18)
    target = coloured_samples(tmp_path, 12, offset=100)
    est = fit_view_estimator("view_head", MeanColour(), source, 16, 8, device="cpu", seed=0)
    assert accuracy(est, target) == 1.0
    again = fit_view_estimator("view_head", MeanColour(), source, 16, 8, device="cpu", seed=0)
    assert torch.equal(est.classifier.weight, again.classifier.weight)
    with pytest.raises(InvalidInputError, match="no sample with a known view"):
        fit_view_estimator("view_head", MeanColour(), [s._replace(viewid=None) for s in source], 16, 8)
    with pytest.raises(UnknownNameError):
        fit_view_estimator("view_hed", MeanColour(), source, 16, 8)

    ds = ReIDDataset("toy", tmp_path, [s._replace(viewid=None) for s in target], target[:3], target[3:])
    predicted = est.predict(ds.train)
    copy = with_estimated_views(ds, predicted)
    assert [s.viewid for s in copy.train] == [s.viewid for s in target]
    assert copy.extras["views"] == "estimated" and "views" not in ds.extras
    assert all(s.viewid is None for s in ds.train) and copy.train is not ds.train
    assert copy.query == ds.query
    with pytest.raises(InvalidInputError, match="5 estimated views for the 12 images"):
        with_estimated_views(ds, predicted[:5])


def test_a_registered_view_estimator_is_built_by_name():
    @register_view_estimator("toy_constant")
    class Constant:
        def __init__(self, model, samples, height, width, *, device, seed):
            self.view = seed

        def predict(self, samples):
            return np.full(len(samples), self.view)

    try:
        est = fit_view_estimator("toy_constant", None, [], 8, 8, seed=1)
        assert accuracy(est, [VSample("x", 0, 0, 1), VSample("y", 0, 0, 0), VSample("z", 0, 0, None)]) == 0.5
    finally:
        from corelib.orientation import VIEW_ESTIMATORS
        VIEW_ESTIMATORS.pop("toy_constant")


# --------------------------------------------------------------------------------------------
# recipes and the target-views check


def test_orientation_recipes_resolve():
    from corelib.recipes import RECIPES

    ctx = RecipeContext(kind="person", embedded=True, target="cuhk_like")
    for name, views in (("corereid_v2_orientation", "metadata"), ("corereid_v2_orientation_estimated", "estimated")):
        cfg = resolve_recipe("finetune", ctx, recipe=name, smoke=True)
        base = resolve_recipe("finetune", ctx, recipe="corereid_v2", smoke=True)
        assert (cfg.loss.name, cfg.sampler, cfg.target_views) == ("corereid_orientation", "orientation_aware", views)
        assert cfg.with_overrides({"loss.name": "corereid", "sampler": "camera_aware",
                                   "target_views": "metadata"}) == base
        assert resolve_recipe("pretrain", ctx, recipe=name, smoke=True) == \
            resolve_recipe("pretrain", ctx, recipe="corereid_v2", smoke=True)
        assert not RECIPES.info(name).compared
        real = get_recipe(name).finetune(RecipeContext(kind="vehicle", embedded=False, target="veri776"), False)
        assert real.loss.name == "corereid_orientation" and real.cluster.num_clusters == 500


def test_finetune_refuses_a_target_whose_views_come_from_elsewhere(tmp_path):
    from corelib.training.finetune import finetune

    rows = [VSample("a.jpg", 0, 0, 0)]
    target = ReIDDataset("toy", tmp_path, rows, rows, rows)
    with pytest.raises(InvalidInputError, match="target_views='estimated' but toy's view ids are 'metadata'"):
        finetune(FinetuneCfg.smoke(target_views="estimated"), target, tmp_path / "run")
    estimated = ReIDDataset("toy", tmp_path, rows, rows, rows, extras={"views": "estimated"})
    with pytest.raises(InvalidInputError, match="target_views='metadata' but toy's view ids are 'estimated'"):
        finetune(FinetuneCfg.smoke(), estimated, tmp_path / "run")
    assert not (tmp_path / "run").exists()


class _SamplerBuilt(Exception):
    pass


def test_pretraining_builds_the_sampler_its_settings_name(synthetic_small, tmp_path, monkeypatch):
    import importlib

    from corelib.data import load_synthetic

    loop = importlib.import_module("corelib.training.pretrain")  # the module (the package exports the function)

    built = []

    def spy(name, samples, num_instances, seed):
        built.append((name, len(samples), num_instances, seed))
        raise _SamplerBuilt

    monkeypatch.setattr(loop, "build_sampler", spy)
    src = load_synthetic(synthetic_small["market_like"])
    cfg = PretrainCfg.smoke(sampler="orientation_aware", model={"weights": "none"})
    with pytest.raises(_SamplerBuilt):
        loop.pretrain(cfg, src, tmp_path, progress=False)
    assert built == [("orientation_aware", len(src.train), cfg.num_instances, cfg.seed)]
