"""Recipes: named presets of the training settings, and the one resolver the command line and the
notebooks share.

A recipe turns *what is trained* (a :class:`RecipeContext`: person or vehicle, embedded or real
data, which target) into the base settings of each stage; :func:`resolve_recipe` then applies,
in this order, a pair's own recipe changes (full runs only), the seed and device of the run, and
the caller's overrides (a chapter's ``*_OVERRIDES``, the command line's ``--config`` and ``-o``).
The chapters (through :class:`corelib.pairs.ExperimentPair`) and ``corelib pretrain / finetune /
style train`` call nothing else, so both reach the same recipe for the same data.

``corereid_v2`` (the default) is the paper's:

- a pair of embedded presets trains with the CPU recipes of ``make demo``
  (``PretrainCfg.embedded(kind)`` ...), and ``smoke=True`` gives the CI-sized ones for any pair;
- real data gets the paper's settings: ``PretrainCfg()`` (ResNet-50, ImageNet weights, 120
  epochs), ``FinetuneCfg()`` with the paper's k for the target (:data:`PAPER_CLUSTERS`), inputs
  256x128 for persons and 256x256 for vehicles (docs/method.md §9-Q5), CamStyle's CycleGAN settings
  (camera-aware) or the authors' domain-aware ones.

``corereid_v2_dbscan`` swaps k-means for DBSCAN on the k-reciprocal Jaccard distance, and
``cluster_contrast`` fine-tunes one network with Cluster Contrast's cluster memory on DBSCAN labels
(both from the same source network as ``corereid_v2``; docs/baselines.md §3). ``learn_by_guessing``
trains its own IBN-Net source network with a centre loss, then refines DBSCAN pseudo-labels on
camera-guided features step by step (docs/baselines.md §2). ``supervised_oracle`` is the upper bound:
fine-tuning with the target's true identities. ``corereid_v2_orientation`` fine-tunes with the
orientation-aware triplet and sampler on the target's view ids, ``corereid_v2_orientation_estimated``
on view ids the orientation estimator predicted (:mod:`corelib.orientation`).

A recipe of your own is a class with ``pretrain``, ``finetune`` and ``style`` methods registered
with :func:`register_recipe`; pairs name it with ``"recipe"``, the command line with ``--recipe``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

from .cluster.labelers import LABELERS
from .config import FinetuneCfg, PretrainCfg, StyleCfg
from .errors import ConfigError, UnknownNameError
from .models.registry import INPUT_SIZES, backbone_info  # noqa: F401 - INPUT_SIZES: corelib.pairs exports it
from .registry import Registry
from .settings import Overrides

KINDS = ("person", "vehicle")

PAPER_CLUSTERS: dict[str, int] = {
    "cuhk03np": 900,  # Market -> CUHK03 (sweep 500 / 700 / 900)
    "market1501": 900,  # CUHK03 -> Market
    "dukemtmc": 900,  # V1: Market -> Duke
    "msmt17": 2000,  # Market / CUHK03 -> MSMT17 (sweep 2000 / 2500 / 3000)
    "veri776": 500,  # VehicleID -> VeRi-776 (sweep 500 / 700 / 900)
    "vehicleid": 700,  # VeRi-776 -> VehicleID (Test800)
}
"""k of the paper's fine-tuning per target loader (docs/method.md §3.7). The paper states none for
VERI-Wild (docs/method.md §9-Q6 recommends starting at 700): a pair with another target sets its own."""

STAGE_SETTINGS = {"pretrain": PretrainCfg, "finetune": FinetuneCfg, "style": StyleCfg}
DEVICE_FIELDS = {"pretrain": "runtime.device", "finetune": "runtime.device", "style": "device"}

StageSettings = Union[PretrainCfg, FinetuneCfg, StyleCfg]


def input_size(backbone: str, ctx: "RecipeContext") -> dict:
    """``augment.height`` / ``augment.width`` of a real-data recipe: the input size ``backbone``
    declares for the context's kind (:class:`~corelib.models.registry.BackboneInfo`)."""
    height, width = backbone_info(backbone).input_size[ctx.kind]
    return {"augment.height": height, "augment.width": width}


@dataclass(frozen=True)
class RecipeContext:
    """What a recipe needs to know of the data it trains on."""

    kind: str
    """``person`` or ``vehicle``."""
    embedded: bool
    """Every dataset named is an embedded (synthetic) preset: the CPU recipes apply."""
    target: Optional[str] = None
    """The target's loader or preset name (the paper's k depends on it), None when there is none."""
    style_mode: str = "camera"
    """``camera`` (one CycleGAN per source camera pair) or ``domain`` (source <-> target)."""


class Recipe:
    """Base settings of each stage for a context (override the three methods)."""

    def pretrain(self, ctx: RecipeContext, smoke: bool) -> PretrainCfg:  # pragma: no cover - interface
        raise NotImplementedError

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:  # pragma: no cover - interface
        raise NotImplementedError

    def style(self, ctx: RecipeContext, smoke: bool) -> StyleCfg:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class RecipeInfo:
    """A recipe's place in chapter 07 (:mod:`corelib.baseline_plan`), declared at registration."""

    compared: bool = False
    """Chapter 07 compares it on every pair by default (its ``RECIPES = []``), in registration order."""
    ablation_of: Optional[str] = None
    """The recipe it is an ablation of: chapter 07 runs it on its ablation pairs by default (``ABLATION_RECIPES = []``)."""
    vit_table: bool = False
    """A row of chapter 07's TransReID table, beside ``corereid_v2`` (``VIT_RECIPES = []``)."""
    orientation_of: Optional[str] = None
    """The plain recipe it is the orientation-aware variant of: chapter 09 runs both."""
    views: Optional[str] = None
    """Where chapter 09 takes its target's view ids from: ``"metadata"`` or ``"estimated"``."""


RECIPES: Registry[Recipe] = Registry("recipe", "Register your own with corelib.recipes.register_recipe.",
                                     info=RecipeInfo)


def register_recipe(name: str, **info: Any) -> Callable[[type], type]:
    """Register a :class:`Recipe` subclass under ``name`` (one instance is kept), with its place in
    chapters 07 and 09 (fields of :class:`RecipeInfo`: ``compared``, ``ablation_of``, ``vit_table``,
    ``orientation_of``, ``views``)."""

    def deco(cls: type) -> type:
        RECIPES.register(name, **info)(cls())
        return cls

    return deco


def list_recipes() -> list[str]:
    return RECIPES.names()


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


@register_recipe("corereid_v2", compared=True)
class CoreReIDV2(Recipe):
    """The paper's recipe (real data) and its CPU / CI versions (embedded data, smoke)."""

    def pretrain(self, ctx: RecipeContext, smoke: bool) -> PretrainCfg:
        if smoke or ctx.embedded:
            return PretrainCfg.embedded(ctx.kind, smoke=smoke)
        return PretrainCfg().with_overrides(input_size(PretrainCfg().model.backbone, ctx))

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        if smoke or ctx.embedded:
            return FinetuneCfg.embedded(ctx.kind, smoke=smoke)
        # no k of the paper's for this target: 0, which resolve_recipe refuses unless the caller sets one
        return FinetuneCfg().with_overrides({**input_size(FinetuneCfg().model.backbone, ctx),
                                             "cluster.num_clusters": PAPER_CLUSTERS.get(ctx.target or "", 0)})

    def style(self, ctx: RecipeContext, smoke: bool) -> StyleCfg:
        if smoke or ctx.embedded:
            return StyleCfg.embedded(ctx.kind, smoke=smoke)
        return StyleCfg() if ctx.style_mode == "camera" else StyleCfg.domain_aware()


DBSCAN_REAL = {"cluster.labeler": "dbscan", "cluster.dbscan.eps": 0.6, "cluster.dbscan.min_samples": 4,
               "cluster.dbscan.k1": 30, "cluster.dbscan.k2": 6}
"""DBSCAN on the k-reciprocal Jaccard distance as SpCL and Cluster Contrast run it on real data
(docs/baselines.md §3.2: eps 0.6, min_samples 4, k1 30, k2 6)."""

DBSCAN_EMBEDDED = {"cluster.labeler": "dbscan", "cluster.normalize": "camera_guided", "cluster.dbscan.eps": 0.55,
                   "cluster.dbscan.min_samples": 4, "cluster.dbscan.k1": 10, "cluster.dbscan.k2": 3}
"""The CPU / CI values for the embedded pairs, measured, not published: their targets have about 7
training images per identity (cuhk_like 1,084 images of 160 identities, veri_like 1,344 of 150), so
k1 = 30 reaches far past an identity. With the demo's chapter-02 source networks, DBSCAN at k1 30 /
eps 0.6 finds 17 (person) and 15 (vehicle) clusters, NMI 0.15 / 0.21; at k1 10 / eps 0.55 with
camera-guided normalisation 109 / 123 clusters, 38 % / 37 % outliers, NMI 0.87 / 0.81 (0.84 / 0.73
without the normalisation). On the CI-sized target (54 images) it gives 4-7 clusters per epoch."""


@register_recipe("corereid_v2_dbscan", compared=True)
class CoreReIDV2DBSCAN(CoreReIDV2):
    """CORE-ReID V2 with DBSCAN on the Jaccard distance instead of k-means: the same networks, losses
    and schedule; the number of clusters is DBSCAN's, epoch by epoch."""

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        base = super().finetune(ctx, smoke) if (smoke or ctx.embedded) else \
            FinetuneCfg().with_overrides(input_size(FinetuneCfg().model.backbone, ctx))
        return base.with_overrides(DBSCAN_EMBEDDED if (smoke or ctx.embedded) else DBSCAN_REAL)


@register_recipe("cluster_contrast", compared=True)
class ClusterContrastRecipe(CoreReIDV2DBSCAN):
    """The CORE-ReID V2 source network, then Cluster Contrast on DBSCAN labels of the target
    (docs/baselines.md §3.5): InfoNCE against the cluster memory (tau 0.05, m 0.1) on the global
    features, as published: one network (``model.alpha=0``: no mean teacher), its own features
    clustered (``cluster.feature=plain``), no local triplets (``loss.local_weight=0``). Set
    ``model.alpha=0.999`` for Cluster Contrast inside CORE-ReID's mean teacher.

    Real data takes the published schedule: Adam 3.5e-4, weight decay 5e-4, 50 epochs of 200
    steps, batches of 16 identities x 16 instances (256; the authors stress that smaller batches
    lose mAP, docs/baselines.md §3.8 item 7)."""

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        cfg = super().finetune(ctx, smoke).with_overrides({"loss.name": "cluster_contrast", "loss.local_weight": 0.0,
                                                           **SINGLE_NETWORK})
        if smoke or ctx.embedded:
            return cfg
        return cfg.with_overrides({"lr": 3.5e-4, "weight_decay": 5e-4, "epochs": 50, "iters_per_epoch": 200,
                                   "batch_size": 256, "num_instances": 16})


SINGLE_NETWORK = {"model.alpha": 0.0, "model.ecab": False, "cluster.feature": "plain"}
"""One network instead of a mean-teacher pair (the teacher copies the student every step), no ECAB,
and its own features clustered: how the single-model baselines train."""


@register_recipe("learn_by_guessing", compared=True)
class LearnByGuessing(Recipe):
    """Learn by Guessing (Pereira & de Campos, VISAPP 2022; docs/baselines.md §2): its own IBN-Net source
    network, then repeated refinement steps on the target.

    - Source: IBN-a ResNet (ResNet-50 on real data; ResNet-18 on the embedded pairs, the same size
      as the other recipes' source networks there), triplet with margin 0.3 + label-smoothed ID +
      0.005 centre loss, the centres with their own SGD (``loss.name=ce_triplet_center``).
    - Each fine-tuning epoch is one refinement step: camera-guided normalisation -> Jaccard distance
      -> DBSCAN with its outliers removed -> training with the same loss on the pseudo-labels, new
      centres for the new clusters. One network (no mean teacher), its own features clustered.

    No public code exists; what the authors' slides leave open is a setting (docs/baselines.md §2.2):
    steps and epochs per step, the milestones, the cluster-selection rule (not built: every DBSCAN
    cluster is kept), and the classifier, which starts from the cluster centres here (the loop's
    rule) where the paper re-initialises it. Real data: ImageNet IBN-a weights from a local file
    (``-o model.weights=/path/resnet50_ibn_a.pth``), 90 source epochs with BoT's warm-up and decays
    at 40 / 70. On the embedded pairs the camera-guided normalisation comes with ``DBSCAN_EMBEDDED``.

    Measured on the embedded pairs (chapter 08's budget study, three seeds): refinement steps of 10
    optimiser steps, each with a fresh Adam at the full lr 3.5e-4 on one network, take the person
    pair's network below its start from the second step on; ``-o lr=3.5e-5`` keeps it there and lets
    the vehicle pair adapt further. A finding about this schedule on this budget, not changed here:
    the paper does not give its refinement schedule."""

    def pretrain(self, ctx: RecipeContext, smoke: bool) -> PretrainCfg:
        center = {"loss.name": "ce_triplet_center"}
        if smoke or ctx.embedded:
            return PretrainCfg.embedded(ctx.kind, smoke=smoke).with_overrides({"model.backbone": "resnet18_ibn_a",
                                                                             **center})
        return PretrainCfg().with_overrides({**input_size("resnet50_ibn_a", ctx), "epochs": 90,
                                             "model.backbone": "resnet50_ibn_a", **center})

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        if smoke or ctx.embedded:
            base = FinetuneCfg.embedded(ctx.kind, smoke=smoke).with_overrides(
                {"model.backbone": "resnet18_ibn_a", **DBSCAN_EMBEDDED})
        else:
            base = FinetuneCfg().with_overrides({**input_size("resnet50_ibn_a", ctx),
                                                 "model.backbone": "resnet50_ibn_a", **DBSCAN_REAL,
                                                 "cluster.normalize": "camera_guided"})
        return base.with_overrides({"loss.name": "ce_triplet_center", "cluster.dbscan.outliers": "drop",
                                    **SINGLE_NETWORK})

    def style(self, ctx: RecipeContext, smoke: bool) -> StyleCfg:
        return CoreReIDV2().style(ctx, smoke)


@register_recipe("supervised_oracle")
class SupervisedOracle(CoreReIDV2):
    """Not a method: the upper bound of UDA tables. CORE-ReID V2's fine-tuning with the target's own
    training identities in place of pseudo-labels (``cluster.labeler=oracle``): the same source
    network, loop, loss and budget, so (adapted - direct) / (oracle - direct) is the share of the
    gap a method closes. Needs a target with labelled training images."""

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        return super().finetune(ctx, smoke).with_overrides({"cluster.labeler": "oracle"})


ORIENTATION = {"loss.name": "corereid_orientation", "sampler": "orientation_aware"}
"""CORE-ReID V2 fine-tuning with the orientation-aware triplet and the sampler that puts several
views of an identity in each block (docs/method.md §3.14)."""


@register_recipe("corereid_v2_orientation", orientation_of="corereid_v2", views="metadata")
class CoreReIDV2Orientation(CoreReIDV2):
    """CORE-ReID V2 with the authors' future work: every fine-tuning triplet mines the positive among
    the identity's other views and the negative among other identities seen from a similar view
    (``loss.name=corereid_orientation``, ``sampler=orientation_aware``); the target's view ids come
    from its metadata. Pre-training is ``corereid_v2``'s, so it starts from the same source network
    (chapter 02's). Not compared in chapter 07: it needs a target with views."""

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        return super().finetune(ctx, smoke).with_overrides(ORIENTATION)


@register_recipe("corereid_v2_orientation_estimated", orientation_of="corereid_v2", views="estimated")
class CoreReIDV2OrientationEstimated(CoreReIDV2Orientation):
    """``corereid_v2_orientation`` on view ids the orientation estimator predicted for the target
    (``target_views=estimated``: :func:`corelib.orientation.with_estimated_views`), as on a target
    without orientation labels; fine-tuning refuses a target whose views come from its metadata."""

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        return super().finetune(ctx, smoke).with_overrides({"target_views": "estimated"})


def no_paper_k(where: str, target: Optional[str]) -> str:
    """The message for a target without a k of the paper's."""
    return (f"{where}: the paper gives no k for the target {target!r}; set cluster.num_clusters (in a pair: "
            f"\"finetune\": {{\"cluster\": {{\"num_clusters\": K}}}}; on the command line: -o cluster.num_clusters=K; "
            f"about the target's identity count is a good start; the paper's: "
            f"{', '.join(f'{k} {v}' for k, v in PAPER_CLUSTERS.items())})")


def resolve_recipe(stage: str, ctx: RecipeContext, *, recipe: str = "corereid_v2", smoke: bool = False,
                   own: Optional[Mapping[str, Any]] = None, seed: Optional[int] = None, device: Optional[str] = None,
                   overrides: Overrides = None, where: str = "the recipe") -> StageSettings:
    """The settings of ``stage`` ("pretrain", "finetune" or "style") for ``ctx``.

    Args:
        recipe: a registered recipe (:func:`list_recipes`).
        smoke: the CI-sized recipe (a pair's own changes describe its full run and are left out).
        own: the pair's own recipe changes (``DATASETS[pair]["finetune"]`` ...).
        seed, device: the run's seed and device, when given.
        overrides: the caller's changes, applied last (dotted names or group mappings).
        where: how messages name the caller (``DATASETS['m2c']``, ``corelib finetune``).

    Raises:
        ConfigError: an unknown or moved field, a wrongly typed value, or a fine-tuning recipe
            left without k (a target the paper gives none for).
        UnknownNameError: an unknown stage or recipe.
    """
    if stage not in STAGE_SETTINGS:
        raise UnknownNameError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGE_SETTINGS)}")
    if ctx.kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {ctx.kind!r}")
    cfg = getattr(get_recipe(recipe), stage)(ctx, smoke)
    if own and not smoke:
        cfg = cfg.with_overrides(own)
    if seed is not None:
        cfg = cfg.with_overrides({"seed": seed})
    if device is not None:
        cfg = cfg.with_overrides({DEVICE_FIELDS[stage]: str(device)})
    cfg = cfg.with_overrides(overrides)
    if stage == "finetune" and cfg.cluster.num_clusters <= 0 and LABELERS.info(cfg.cluster.labeler).needs_k:
        raise ConfigError(no_paper_k(where, ctx.target))
    return cfg


# --------------------------------------------------------------------------------------------
# TransReID (docs/baselines.md §1, §1b)

TRANSREID_AUGMENT = {"augment.gray_p": 0.0, "augment.lgpr_p": 0.0, "augment.erase_mode": "random"}
"""TransReID's augmentation: flip, pad 10, crop, pixel-mode random erasing (p 0.5 in both stages);
no grayscale and no LGPR (the CORE-ReID additions). Its 0.5 / 0.5 normalisation lives in the ViT
trunk (``input_norm="half"``, :mod:`corelib.models.vit`)."""

TRANSREID_EMBEDDED_PRETRAIN = {"model.name": "transreid_net", "model.backbone": "transreid_vit_tiny",
                               "model.weights": "none", "loss.name": "transreid", "loss.label_smooth": 0.0,
                               "target_bn_forward": False, "augment.erase_p": 0.5, "lr": 1e-3, **TRANSREID_AUGMENT}
"""The CPU recipe of the embedded pairs: the tiny ViT (dim 96, depth 4, patch 8, stride 6) from
random weights with SIE and JPM, TransReID's loss, on the source alone, with Adam at lr 1e-3. On
the person pair at the demo's 80 source steps (source mAP / adapted target mAP, %): Adam 3.5e-4
(the ResNet CPU recipe's) 9.9 / 0.9, Adam 1e-3 19.7 / 2.4, TransReID's SGD 0.008 (bias lr x 2,
weight decay 1e-4) 1.8 / 1.2: from random weights in 80 steps SGD barely moves."""

TRANSREID_FINETUNE = {"model.name": "transreid_mean_teacher", "model.backbone": "transreid_vit_tiny",
                      "model.ecab": False, "cluster.feature": "plain", "loss.name": "transreid",
                      "loss.label_smooth": 0.0, **TRANSREID_AUGMENT}
"""UDA with the TransReID network: its descriptor clustered (one level), its own loss on the
pseudo-labels, in CORE-ReID's mean teacher with k-means (the paper gives no UDA recipe)."""


@register_recipe("transreid", compared=True, vit_table=True)
class TransReIDRecipe(Recipe):
    """TransReID* (ViT with overlapping patches, SIE, JPM; He et al., ICCV 2021) as the source
    network, then UDA with k-means pseudo-labels in CORE-ReID's mean teacher.

    Real data, the paper's released configs (docs/baselines.md §1.5): ViT-B/16 at stride 12 from the
    ImageNet-21k file (``-o model.weights=/path/jx_vit_base_p16_224-80ecf9dd.pth``), SGD lr 0.008
    (VeRi 0.01), momentum 0.9, weight decay 1e-4 on every parameter, bias lr x 2, batch 64 = 16 x 4,
    120 epochs, cosine with 5 warm-up epochs to 0.002 x lr, pixel-mode random erasing, CE without
    label smoothing + soft triplet, JPM shift 5 (8 for vehicles), SIE with lambda 3.0 over the cameras
    for persons (configs/Market: ``SIE_CAMERA``) and over cameras x views for vehicles (configs/VeRi:
    ``SIE_CAMERA`` and ``SIE_VIEW``, ``sie_view=True``; a dataset without views, VehicleID, gets the
    camera table, one without cameras none). Not reproduced: the official
    sampler draws identities without the camera rule of this workbench's sampler, and its epoch is
    one pass over the data (here ``iters_per_epoch`` steps).

    Embedded pairs: the tiny ViT from random weights (:data:`TRANSREID_EMBEDDED_PRETRAIN`), the
    CPU recipes' budgets, the same SIE switches (the vehicle pair's camera x view table is sized by the
    embedded data's views)."""

    sie, jpm = True, True

    def _net(self, ctx: RecipeContext) -> dict:
        net = {}
        if not self.sie:
            net["sie"] = False
        elif ctx.kind == "vehicle":  # configs/VeRi: SIE_CAMERA and SIE_VIEW, a camera x view table
            net["sie_view"] = True
        if not self.jpm:
            net["jpm"] = False
        elif ctx.kind == "vehicle" and not ctx.embedded:
            net["shift"] = 8
        return {"model.net_args": net}

    def pretrain(self, ctx: RecipeContext, smoke: bool) -> PretrainCfg:
        if smoke or ctx.embedded:
            return PretrainCfg.embedded(ctx.kind, smoke=smoke).with_overrides({**TRANSREID_EMBEDDED_PRETRAIN,
                                                                              **self._net(ctx)})
        return PretrainCfg().with_overrides({
            **input_size("transreid_vit_base", ctx), "model.name": "transreid_net", "model.backbone": "transreid_vit_base",
            "loss.name": "transreid", "loss.label_smooth": 0.0, "target_bn_forward": False,
            "optimizer": "sgd", "lr": 0.01 if ctx.kind == "vehicle" else 0.008, "momentum": 0.9, "weight_decay": 1e-4,
            "bias_lr_factor": 2.0, "batch_size": 64, "num_instances": 4, "epochs": 120, "schedule": "cosine",
            "warmup_epochs": 5, "min_lr_factor": 0.002, "milestones": [], "augment.erase_p": 0.5,
            **TRANSREID_AUGMENT, **self._net(ctx)})

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        base = CoreReIDV2().finetune(ctx, smoke)
        real = {} if (smoke or ctx.embedded) else {"model.backbone": "transreid_vit_base"}
        return base.with_overrides({**TRANSREID_FINETUNE, **real, **self._net(ctx)})

    def style(self, ctx: RecipeContext, smoke: bool) -> StyleCfg:
        return CoreReIDV2().style(ctx, smoke)


@register_recipe("transreid_no_sie", ablation_of="transreid", vit_table=True)
class TransReIDWithoutSIE(TransReIDRecipe):
    """The ablation of :class:`TransReIDRecipe` without Side Information Embedding (``sie=False``)."""

    sie = False


@register_recipe("transreid_no_jpm", ablation_of="transreid", vit_table=True)
class TransReIDWithoutJPM(TransReIDRecipe):
    """The ablation of :class:`TransReIDRecipe` without the Jigsaw Patch Module (``jpm=False``: all
    blocks, the [cls] output, one head)."""

    jpm = False


@register_recipe("transreid_ssl")
class TransReIDSSLRecipe(Recipe):
    """TransReID-SSL (Luo et al., 2021; docs/baselines.md §1b): a plain ViT-S (no SIE, no JPM, stride 16)
    fine-tuned on the source, then Cluster Contrast on DBSCAN pseudo-labels of the target.

    Real data: ViT-S/16 from the LUPerson DINO file (``-o model.weights=PATH``; DINO normalised with
    ImageNet statistics, fine-tuning with 0.5 / 0.5), SGD lr 4e-4, weight decay 1e-4, bias lr x 2,
    120 epochs, cosine with 20 warm-up epochs; UDA: one network, DBSCAN eps 0.6, SGD 3.5e-4, weight
    decay 5e-4, 50 epochs of 200 steps, batch 256 = 32 x 8, memory momentum 0.2, temperature 0.05,
    hard-instance update, drop path 0.3. Not built: the ICS convolution stem and GeM pooling (the
    [cls] feature is used), and the fork's StepLR (the loop's learning rate is constant).
    Embedded pairs: the tiny ViT without SIE and JPM, the CPU budgets."""

    NET = {"model.net_args": {"sie": False, "jpm": False}}

    def pretrain(self, ctx: RecipeContext, smoke: bool) -> PretrainCfg:
        if smoke or ctx.embedded:
            return PretrainCfg.embedded(ctx.kind, smoke=smoke).with_overrides({**TRANSREID_EMBEDDED_PRETRAIN,
                                                                              **self.NET})
        return PretrainCfg().with_overrides({
            **input_size("transreid_vit_small", ctx), "model.name": "transreid_net", "model.backbone": "transreid_vit_small",
            "model.backbone_args": {"stride": 16}, "loss.name": "transreid", "loss.label_smooth": 0.0,
            "target_bn_forward": False, "optimizer": "sgd", "lr": 4e-4, "momentum": 0.9, "weight_decay": 1e-4,
            "bias_lr_factor": 2.0, "batch_size": 64, "num_instances": 4, "epochs": 120, "schedule": "cosine",
            "warmup_epochs": 20, "min_lr_factor": 0.002, "milestones": [], "augment.erase_p": 0.5,
            **TRANSREID_AUGMENT, **self.NET})

    def finetune(self, ctx: RecipeContext, smoke: bool) -> FinetuneCfg:
        cfg = ClusterContrastRecipe().finetune(ctx, smoke).with_overrides({**TRANSREID_FINETUNE, **self.NET,
                                                                           "loss.name": "cluster_contrast"})
        if smoke or ctx.embedded:
            return cfg
        return cfg.with_overrides({"model.backbone": "transreid_vit_small",
                                   "model.backbone_args": {"stride": 16, "drop_path": 0.3},
                                   "optimizer": "sgd", "lr": 3.5e-4, "weight_decay": 5e-4, "momentum": 0.9,
                                   "batch_size": 256, "num_instances": 8, "loss.contrast.momentum": 0.2,
                                   "loss.contrast.hard": True})

    def style(self, ctx: RecipeContext, smoke: bool) -> StyleCfg:
        return CoreReIDV2().style(ctx, smoke)
