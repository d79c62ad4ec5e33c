"""A method as a plug-in: a toy backbone and a toy pseudo-labeller, defined in this file alone, run
through the whole pipeline unchanged (pre-training, fine-tuning with a cluster count that changes
every epoch and outliers, evaluation, Grad-CAM, UMAP), and the loop handles the changing K. A
backbone, a labeller and a recipe registered here with their declarations (input size, complexity
table; settings class, needs k; compared in chapter 07) reach every consumer: the recipes, chapter
07's method list, the complexity table and the results tables.

This is the example of README "Extending".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import corelib as cl
from corelib import explain
from corelib.baseline_plan import BaselinePlan, baseline_settings, chapter_recipes
from corelib.cluster import LABELERS, LabelerInfo, kmeans, labeler_info, labeler_settings, register_labeler
from corelib.data import build_transforms, load_synthetic
from corelib.feature_space import study_feature_space
from corelib.models import Backbone, MeanTeacher, register_backbone
from corelib.models.complexity import complexity_table, table_backbones
from corelib.models.registry import BACKBONES, backbone_info
from corelib.recipes import RECIPES, Recipe, RecipeContext, input_size, register_recipe, resolve_recipe
from corelib.results import collect_results
from corelib.settings import Settings, read_saved_config, save_config
from corelib.training import evaluate_checkpoint, finetune, load_checkpoint, load_trained_model, pretrain

pytestmark = pytest.mark.slow  # every test trains through the whole pipeline

SEEN_CAMIDS: list[int] = []  # batch sizes of the camera ids the toy trunk received


class TinyTrunk(Backbone):
    """Two stride-2 convolutions (a 64x32 image -> a 16x8 map) plus a camera embedding, so that
    the test sees the camera ids arrive (as TransReID's side information would)."""

    def __init__(self, width: int = 64) -> None:  # ECAB needs C >= 64 (three reductions by 4)
        super().__init__()
        self.out_channels = width
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.camera = nn.Embedding(8, width)

    def forward(self, x: torch.Tensor, camids=None, viewids=None) -> torch.Tensor:
        m = self.block(self.stem(x))
        if camids is not None:
            SEEN_CAMIDS.append(len(camids))
            m = m + 0.1 * self.camera(camids.clamp_min(0))[:, :, None, None]
        return m

    def cam_layers(self) -> dict:
        return {"stem": self.stem, "block": self.block}


@register_backbone("tiny_cnn")
def tiny_cnn(weights=None, width: int = 64) -> TinyTrunk:
    if weights not in (None, "none"):
        raise ValueError("tiny_cnn has no pretrained weights")
    return TinyTrunk(width)


@register_labeler("toy_changing")
def toy_changing(features, camids, cfg, *, seed, epoch, device):
    """k-means with k = options["base"] + epoch (K changes every epoch); every 7th image an outlier."""
    k = cfg.options.get("base", 3) + epoch
    out = []
    for i, x in enumerate(features):
        labels = kmeans(x, k, seed=seed + i, device=device, max_iter=10).labels.cpu().numpy()
        labels[::7] = -1
        out.append(labels)
    return out


@register_labeler("toy_outliers")
def toy_outliers(features, camids, cfg, *, seed, epoch, device):
    """One cluster of three images; every other image an outlier."""
    labels = np.full(len(camids), -1)
    labels[:3] = 0
    return [labels] * len(features)


def _finetune_cfg(**overrides):
    base = cl.FinetuneCfg.smoke(model={"backbone": "tiny_cnn"}, batch_size=8,
                                cluster={"labeler": "toy_changing", "options": {"base": 3}})
    return base.with_overrides(overrides)  # a group mapping updates the group: cluster.options stay


@pytest.fixture(scope="module")
def toy(synthetic_small, tmp_path_factory):
    source = load_synthetic(synthetic_small["market_like"])
    target = load_synthetic(synthetic_small["cuhk_like"])
    run = tmp_path_factory.mktemp("toy_source")
    SEEN_CAMIDS.clear()
    res = pretrain(cl.PretrainCfg.smoke(model={"backbone": "tiny_cnn"}), source, run, target=target, progress=False)
    assert SEEN_CAMIDS, "the camera ids never reached the backbone in pre-training"
    return {"source": source, "target": target, "checkpoint": res.best_checkpoint, "pretrain": res}


def test_a_toy_backbone_and_labeller_run_the_whole_pipeline(toy, tmp_path, monkeypatch):
    resets = []  # (K, classifier weight right after the reset) per epoch
    real_reset = MeanTeacher.reset_classifiers

    def spy(self, centroids):
        real_reset(self, centroids)
        resets.append((self.num_classes, self.student.classifier.weight.detach().clone()))

    monkeypatch.setattr(MeanTeacher, "reset_classifiers", spy)
    SEEN_CAMIDS.clear()
    res = finetune(_finetune_cfg(epochs=3), toy["target"], tmp_path, source_checkpoint=toy["checkpoint"],
                   progress=False)
    assert SEEN_CAMIDS, "the camera ids never reached the backbone in fine-tuning"
    assert [k for k, _ in resets] == [3, 4, 5]  # K changes every epoch
    for h in res.history:  # every 7th image is an outlier, and the log says so
        assert h["outliers_global"] == pytest.approx(np.ceil(len(toy["target"].train) / 7) / len(toy["target"].train))
        assert h["clusters_global"] <= 3 + h["epoch"] - 1 and np.isfinite(h["loss"])
    assert res.loss_terms == ("loss", "ce", "tri_global", "tri_top", "tri_bottom")
    state = load_checkpoint(res.last_checkpoint)
    assert state["num_clusters"] == 5 and state["model_name"] == "mean_teacher"
    assert state["model_args"]["backbone"] == "tiny_cnn" and state["model_args"]["num_classes"] == 5
    trained_w = state["model"]["student.classifier.weight"]
    assert trained_w.shape == resets[-1][1].shape == (5, 64)
    # the layer created for the new K is in the optimiser: training moved it away from the centroids
    assert not torch.allclose(trained_w, resets[-1][1]), "the resized classifier did not train"
    assert (state["pseudo_labels"][:, ::7] == -1).all()

    # evaluation and the analysis tools rebuild the network from the checkpoint's name and arguments
    trained = load_trained_model(res.best_checkpoint)
    assert trained.model.num_classes == load_checkpoint(res.best_checkpoint)["num_clusters"]
    metrics = evaluate_checkpoint(res.best_checkpoint, toy["target"])
    assert metrics["mAP"] == pytest.approx(res.best_mAP, abs=1e-6)
    images = torch.stack([build_transforms("test", *trained.input_size)(cl.read_image(s.path))
                          for s in toy["target"].query[:3]])
    ref = explain.embed(trained.model, images[:1], "global")
    for layer in (None, "stem"):
        maps = explain.similarity_cam(trained.model, images, ref.expand(3, -1), branch="global", layer=layer)
        assert maps.shape == (3, 64, 32) and np.isfinite(maps).all()
    assert explain.activation_maps(trained.model, images, layer="block").shape == (3, 64, 32)
    with pytest.raises(cl.UnknownNameError, match="valid layers: stem, block"):
        explain.trunk_layer(trained.model, "layer4")
    space = study_feature_space(trained, toy["source"], toy["target"], k=4, source_images=30, seed=0)
    assert space.points.shape == (30 + len(toy["target"].train), 2) and np.isfinite(space.points).all()


def test_a_resumed_run_with_a_changing_k_ends_like_a_straight_run(toy, tmp_path):
    straight = finetune(_finetune_cfg(epochs=3), toy["target"], tmp_path / "a", source_checkpoint=toy["checkpoint"],
                        progress=False)
    finetune(_finetune_cfg(epochs=2), toy["target"], tmp_path / "b", source_checkpoint=toy["checkpoint"],
             progress=False)  # "stopped" after epoch 2, with K = 4
    resumed = finetune(_finetune_cfg(epochs=3), toy["target"], tmp_path / "b", source_checkpoint=toy["checkpoint"],
                       resume=True, progress=False)

    def untimed(history):
        return [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in history]

    assert untimed(resumed.history) == untimed(straight.history)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["num_clusters"] == b["num_clusters"] == 5
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["pseudo_labels"], b["pseudo_labels"])


def test_plug_in_errors_name_the_registered_parts(toy, tmp_path):
    with pytest.raises(cl.UnknownNameError, match="unknown pseudo-labeller 'toy_changin'; did you mean 'toy_changing'"):
        finetune(_finetune_cfg(cluster={"labeler": "toy_changin"}), toy["target"], tmp_path,
                 source_checkpoint=toy["checkpoint"], progress=False)
    with pytest.raises(cl.UnknownNameError, match="unknown backbone 'tiny_cn'; did you mean 'tiny_cnn'"):
        cl.build_model("source_net", backbone="tiny_cn", num_classes=3)
    with pytest.raises(ValueError, match="holds a tiny_cnn source model but model.backbone='resnet18'"):
        finetune(cl.FinetuneCfg.smoke(), toy["target"], tmp_path, source_checkpoint=toy["checkpoint"], progress=False)
    with pytest.raises(cl.UnknownNameError, match="unknown finetune loss 'ce_triplet' \\('ce_triplet' is a pretrain"):
        finetune(_finetune_cfg(loss={"name": "ce_triplet"}), toy["target"], tmp_path,
                 source_checkpoint=toy["checkpoint"], progress=False)
    with pytest.raises(ValueError, match="fills no batch of 8: too few identities \\(or clusters, or too many outliers"):
        finetune(_finetune_cfg(cluster={"labeler": "toy_outliers"}), toy["target"], tmp_path / "outliers",
                 source_checkpoint=toy["checkpoint"], progress=False)
    assert "tiny_cnn" in cl.list_backbones() and "toy_changing" in cl.list_labelers()


# ---------------------------------------------------------------------------------------------------------------
# A method declared at registration: the consumers (recipes, chapter 07's method list, the complexity table,
# the results tables) ask the registries, so a backbone, a pseudo-labeller and a recipe defined here appear
# everywhere without a line of corelib edited.

@dataclass(frozen=True)
class ToyKCfg(Settings):
    """The settings of the ``toy_k`` labeller, typed and checked where a ClusterCfg is made."""

    max_iter: int = 10
    """Lloyd iterations of its k-means."""


def toy_k(features, camids, cfg, *, seed, epoch, device):
    """k-means with k = ``cluster.num_clusters`` (it declares ``needs_k``), its settings a ToyKCfg."""
    settings = labeler_settings(cfg)
    assert isinstance(settings, ToyKCfg)
    return [kmeans(x, cfg.num_clusters, seed=seed + i, device=device, max_iter=settings.max_iter).labels.cpu().numpy()
            for i, x in enumerate(features)]


class ToyRecipe(Recipe):
    """The toy backbone, clustered by ``toy_k``: CI-sized on every context, the backbone's declared input
    size on real data."""

    def pretrain(self, ctx, smoke):
        return cl.PretrainCfg.smoke(model={"backbone": "tiny_plugin"})

    def finetune(self, ctx, smoke):
        cfg = cl.FinetuneCfg.smoke(model={"backbone": "tiny_plugin"}, batch_size=8,
                                   cluster={"labeler": "toy_k", "options": {"max_iter": 5}})
        if smoke or ctx.embedded:
            return cfg
        return cfg.with_overrides({**input_size("tiny_plugin", ctx), "cluster.num_clusters": 0})  # k: the caller's

    def style(self, ctx, smoke):
        return cl.StyleCfg.smoke()


TOY_SIZES = {"person": (64, 32), "vehicle": (64, 64)}


@pytest.fixture(scope="module")
def declared():
    """The three parts registered with their declarations, and unregistered afterwards (the rest of the
    session sees the registries as corelib leaves them)."""
    register_backbone("tiny_plugin", input_size=TOY_SIZES, complexity="corereid_net")(tiny_cnn)
    register_labeler("toy_k", settings=ToyKCfg, needs_k=True)(toy_k)
    register_recipe("toy_recipe", compared=True)(ToyRecipe)
    try:
        yield
    finally:
        BACKBONES.pop("tiny_plugin")
        LABELERS.pop("toy_k")
        RECIPES.pop("toy_recipe")


def test_declared_parts_reach_every_consumer(declared, synthetic_small, tmp_path):
    # what each part declared, with the defaults for the rest; a misspelt declaration is refused
    assert backbone_info("tiny_plugin").input_size == TOY_SIZES and backbone_info("tiny_plugin").needs == ()
    assert labeler_info("toy_k") == LabelerInfo(settings=ToyKCfg, needs_k=True)
    with pytest.raises(cl.CorelibError, match="declares complexty.*did you mean 'complexity'"):
        register_backbone("tiny_other", complexty="corereid_net")

    # recipes: the declared input size on real data; without a k the recipe is refused (needs_k)
    real = RecipeContext("vehicle", embedded=False, target="veri_wild")
    with pytest.raises(cl.ConfigError, match="the paper gives no k for the target 'veri_wild'"):
        resolve_recipe("finetune", real, recipe="toy_recipe")
    cfg = resolve_recipe("finetune", real, recipe="toy_recipe", overrides={"cluster.num_clusters": 7})
    assert (cfg.augment.height, cfg.augment.width) == TOY_SIZES["vehicle"]

    # settings: typed through the declared class, refused when it refuses them, and round-tripped by YAML
    assert labeler_settings(cfg.cluster) == ToyKCfg(max_iter=5)
    with pytest.raises(cl.ConfigError, match="cluster.options.max_iter takes an int, got 'many'"):
        cfg.with_overrides({"cluster.options.max_iter": "many"})
    with pytest.raises(cl.ConfigError, match="cluster.options has no field 'max_iters'; did you mean 'max_iter'"):
        cfg.with_overrides({"cluster.options": {"max_iters": 3}})
    save_config(cfg, tmp_path / "config.yaml")
    assert read_saved_config(cl.FinetuneCfg, tmp_path / "config.yaml") == cfg

    # chapter 07: the default method list (RECIPES = []) is every recipe registered as compared, the new one last
    recipes, ablations, vit_rows = chapter_recipes()
    assert recipes[-1] == "toy_recipe" and ablations == ["transreid_no_sie", "transreid_no_jpm"]
    pair = cl.experiment_pairs(["person"], {})["person"]
    values = {"RECIPES": [], "ABLATION_RECIPES": [], "ABLATION_PAIRS": [], "ORACLE": False, "BUDGET": {},
              "SOURCE_BUDGET": {}, "REAL_BUDGET": {}, "REAL_SOURCE_BUDGET": {}, "RECIPE_OVERRIDES": {}, "SMOKE": True}
    plan = BaselinePlan.from_parameters(values, "person")
    assert list(plan.recipes) == recipes
    settings = baseline_settings(pair, plan)
    pre_cfg, fine_cfg = settings["toy_recipe"]
    assert pre_cfg.model.backbone == "tiny_plugin"  # its own source network: it pre-trains otherwise than corereid_v2
    assert (fine_cfg.model.backbone, fine_cfg.cluster.labeler) == ("tiny_plugin", "toy_k")

    # the complexity table: the backbone is one of its rows (after the ResNets), without paper columns
    assert table_backbones("corereid_net") == [f"resnet{d}" for d in (18, 34, 50, 101, 152)] + ["tiny_plugin"]
    (row,) = complexity_table(["tiny_plugin"], iters=0, input_size=TOY_SIZES["person"])
    assert row["backbone"] == "tiny_plugin" and row["params"] > 0 and row["gmacs"] > 0
    assert np.isnan(row["params_paper"]) and np.isnan(row["gflops_paper"])

    # the loops and the results tables: trained with the recipe's settings, the run shows the labeller and its k
    source = load_synthetic(synthetic_small["market_like"])
    target = load_synthetic(synthetic_small["cuhk_like"])
    pair_dir = tmp_path / "run" / "person"
    pre = pretrain(pre_cfg, source, pair_dir, target=target, progress=False)
    fine = finetune(fine_cfg, target, pair_dir, source_checkpoint=pre.best_checkpoint, progress=False)
    assert [h["epoch"] for h in fine.history] == [1]  # chapter 07's smoke budget: one epoch
    results = collect_results([tmp_path / "run"])
    adapted = results[results["stage"] == "adapted"].iloc[0]
    assert (adapted["labeler"], adapted["num_clusters"], adapted["backbone"]) == \
        ("toy_k", fine_cfg.cluster.num_clusters, "tiny_plugin")


def test_a_labeller_without_k_shows_none_in_the_results(tmp_path):
    # DBSCAN finds its own K: the results table leaves num_clusters empty for it (it declares needs_k=False)
    for labeler in ("kmeans", "dbscan"):
        folder = tmp_path / labeler / "person" / "finetune"
        folder.mkdir(parents=True)
        save_config(cl.FinetuneCfg.smoke(cluster={"labeler": labeler}), folder / "config.yaml")
        (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "target_mAP": 0.5, "target_rank1": 0.5}) + "\n")
    results = collect_results([tmp_path / "kmeans", tmp_path / "dbscan"])
    k = results.set_index("labeler")["num_clusters"]
    assert k["kmeans"] == cl.FinetuneCfg.smoke().cluster.num_clusters and np.isnan(k["dbscan"])
