"""Configuration dataclasses, one docstring line per field: the schema of every setting.

The classes hold the defaults (the paper's) and the validation; every preset (``.smoke()``, the
CPU recipes of the embedded pairs ``.embedded(pair)``, ``StyleCfg.domain_aware()``, chapter 07's
budgets) is data in ``corelib/presets.yaml``, read by :func:`preset`, so the meaning of "smoke" is
defined once, there, and tested. Notebooks hold literals in their ``parameters`` cell and derive
everything else from these (``DataCfg.smoke()`` when ``SMOKE``).

The training recipes group their fields where the plug-ins are: ``model`` (network and backbone
by name), ``augment`` (input size and augmentation), ``cluster`` (pseudo-labeller by name and its
settings), ``loss`` (criterion by name) and ``runtime`` (device, precision, workers); the optimiser
and loop fields both stages share are written once, in :class:`TrainingCfg`. Overrides are dotted
(``cluster.num_clusters=500``) or nested mappings; :mod:`corelib.settings` holds the machinery.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from .cluster.dbscan import DBSCANCfg
from .cluster.labelers import LABELERS, KMeansCfg, labeler_settings
from .cluster.normalize import NORMALIZATIONS
from .data.samplers import SAMPLERS
from .errors import ConfigError, UnknownNameError
from .losses.orientation import VIEW_RULES
from .losses.registry import loss_builder
from .models.registry import BACKBONES, MODELS
from .paths import synthetic_root
from .registry import did_you_mean
from .repro import check_device_name
from .settings import Settings, load_config, save_config
from .settings import check_at_least as _at_least
from .settings import check_choice as _choice
from .settings import check_positive as _positive
from .settings import check_within as _within
from .yamlfile import read_yaml

__all__ = [
    "AdaptLossCfg", "AugmentCfg", "ClusterCfg", "ContrastCfg", "DataCfg", "DBSCANCfg", "EMBEDDED_PAIRS", "EMBEDDED_SIZES",
    "EMBEDDED_STYLE_MODES",
    "FinetuneCfg", "KMeansCfg", "MeanTeacherCfg", "OrientationCfg", "PRESETS_FILE", "PretrainCfg", "RuntimeCfg", "STYLE_MODES",
    "SourceLossCfg", "SourceModelCfg", "StyleCfg", "TrainingCfg", "embedded_manifest", "load_config", "preset",
    "save_config",
]

EMBEDDED_PAIRS: dict[str, tuple[str, str]] = {
    "person": ("market_like", "cuhk_like"),
    "vehicle": ("vehicleid_like", "veri_like"),
}
"""The embedded source -> target pairs (synthetic presets), as the paper pairs Market -> CUHK03
and VehicleID -> VeRi-776."""


EMBEDDED_STYLE_MODES: dict[str, str] = {"person": "camera", "vehicle": "domain"}
"""Style transfer of each embedded pair, as the paper does it: camera-aware for persons (the source
has camera labels), domain-aware (source <-> target) for vehicles."""


PRESETS_FILE = Path(__file__).with_name("presets.yaml")
"""Every preset as data: the smoke and embedded recipes of each stage, chapter 07's budgets."""

_PRESETS: dict = read_yaml(PRESETS_FILE, what="presets file")


def preset(section: str, name: str) -> dict:
    """A copy of the preset ``name`` of ``section`` in :data:`PRESETS_FILE`: the fields it changes,
    dotted (``preset("finetune", "smoke")``, ``preset("budgets", "embedded")``).

    Raises:
        UnknownNameError: no such section or preset (the message lists those there are).
    """
    if section not in _PRESETS:
        raise UnknownNameError(f"no preset section {section!r} in {PRESETS_FILE}; sections: {', '.join(_PRESETS)}")
    if name not in _PRESETS[section]:
        raise UnknownNameError(f"no preset {section}.{name} in {PRESETS_FILE}; {section} presets: "
                               f"{', '.join(_PRESETS[section])}")
    return copy.deepcopy(_PRESETS[section][name])


EMBEDDED_SIZES: dict[str, tuple[int, int]] = {pair: (int(h), int(w)) for pair, (h, w) in
                                               _PRESETS["embedded_input_size"].items()}
"""(height, width) of the CPU recipes of the embedded pairs."""




def _registered(field_name: str, value: str, registry) -> None:
    """Refuse a name no part is registered under (the message lists the names and the closest)."""
    try:
        registry().get(value)
    except UnknownNameError as e:
        raise UnknownNameError(f"{field_name}: {e}") from None


def _models():
    return MODELS


def _backbones():
    return BACKBONES


class _losses:
    """The losses of one stage, looked up with the stage-aware message of :func:`corelib.losses.loss_builder`."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def __call__(self) -> "_losses":
        return self

    def get(self, name: str):
        return loss_builder(name, self.stage)


def _labelers():
    return LABELERS


def _samplers():
    return SAMPLERS


def _normalizations():
    return NORMALIZATIONS


def _check_weights(field_name: str, weights: str) -> None:
    """"imagenet", "none" / "" or something that reads as a file path (checked for existence when loaded)."""
    text = str(weights)
    if text.lower() in ("imagenet", "none", ""):
        return
    if not any(ch in text for ch in "/\\") and Path(text).suffix not in (".pth", ".pt", ".bin", ".tar", ".ckpt"):
        raise ConfigError(f"{field_name}={weights!r} is neither 'imagenet', 'none' nor a weights file (a path such as "
                          f"weights/resnet50.pth){did_you_mean(text.lower(), ['imagenet', 'none'])}")


def _check_pair(pair: str) -> None:
    if pair not in EMBEDDED_PAIRS:
        raise UnknownNameError(f"unknown embedded pair {pair!r}; valid pairs: {', '.join(EMBEDDED_PAIRS)}")


def _embedded_preset(section: str, pair: str, smoke: bool, size_fields: Optional[tuple[str, str]]) -> dict:
    """The fields ``section``'s ``.embedded(pair, smoke=smoke)`` changes: the smoke preset or the
    embedded one with the pair's own, then the pair's input size in ``size_fields`` (None: kept)."""
    _check_pair(pair)
    if smoke:
        fields = preset(section, "smoke")
    else:
        by_pair = _PRESETS[section].get("embedded_by_pair", {})
        fields = {**preset(section, "embedded"), **copy.deepcopy(by_pair.get(pair, {}))}
    if size_fields is not None:
        fields.update(zip(size_fields, EMBEDDED_SIZES[pair]))
    return fields


@dataclass(frozen=True)
class DataCfg:
    """Which embedded datasets to generate and where."""

    presets: tuple[str, ...] = ("market_like", "cuhk_like", "vehicleid_like", "veri_like")
    """Synthetic presets to generate (``corelib synth --list``), source before target per kind."""
    root: str = ""
    """Parent folder of the generated datasets; "" means ``corelib.paths.synthetic_root()``."""
    scale: float = 1.0
    """Multiplier of identity counts; 1.0 is the preset as committed in ``data_manifests/``."""
    check_images: str = "all"
    """How many images ``verify_dataset`` decodes: "all", "none" or a number."""

    @classmethod
    def smoke(cls, **overrides) -> "DataCfg":
        """A tiny copy for CI: the ``data.smoke`` preset (``corelib/presets.yaml``)."""
        return replace(cls(**preset("data", "smoke")), **overrides)

    def dataset_root(self) -> Path:
        """Where the datasets go: ``root`` or, when empty, ``corelib.paths.synthetic_root()``."""
        return Path(self.root).expanduser() if self.root else synthetic_root()

    def to_dict(self) -> dict:
        return asdict(self)


def embedded_manifest(cfg: DataCfg, preset: str, dataset_root) -> str:
    """The manifest a generated preset is verified against.

    Full-size presets are checked against the committed ``data_manifests/synthetic_<preset>.yaml``
    (so a change of the generator that alters the data is caught); scaled copies against the
    manifest the generator wrote next to them.
    """
    return f"synthetic_{preset}" if cfg.scale == 1.0 else str(Path(dataset_root) / "manifest.yaml")


# --------------------------------------------------------------------------------------------
# groups shared by the training recipes


@dataclass(frozen=True)
class RuntimeCfg(Settings):
    """Where and how a loop runs. Changing these never changes what is learned, except ``precision``."""

    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda[:N]" (under torchrun: cuda:LOCAL_RANK)."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"."""
    channels_last: bool = True
    """NHWC memory format for the convolutions (faster on GPUs and on the CPU)."""
    num_workers: int = 4
    """DataLoader worker processes per loader (0 loads in the main process)."""
    dist_backend: str = "auto"
    """Process-group backend under torchrun: "auto" (NCCL with CUDA, gloo on CPU), "nccl", "gloo"."""

    def __post_init__(self) -> None:
        check_device_name(self.device, "runtime.device")
        _at_least("runtime.num_workers", self.num_workers, 0)
        _choice("runtime.precision", self.precision, ("auto", "fp32", "bf16"))
        _choice("runtime.dist_backend", self.dist_backend, ("auto", "nccl", "gloo"))


@dataclass(frozen=True)
class AugmentCfg(Settings):
    """Input size and training augmentation (docs/method.md §2.6; the test transform only resizes)."""

    height: int = 256
    """Input height in pixels (training and test)."""
    width: int = 128
    """Input width in pixels (training and test)."""
    gray_p: float = 0.05
    """Whole-image grayscale probability (docs/method.md §9-Q7; 0 reproduces the authors' pre-training code)."""
    lgpr_p: float = 0.4
    """Local grayscale patch replacement probability."""
    erase_p: float = 0.5
    """Random erasing probability (the paper erases in fine-tuning only: pre-training's default is 0)."""
    erase_mode: str = "mean"
    """What erasing writes: "mean" (the ImageNet mean into the normalised tensor, the CORE-ReID
    authors' code) or "random" (per-pixel standard-normal values: timm's ``mode='pixel'``, TransReID's)."""

    def __post_init__(self) -> None:
        _choice("augment.erase_mode", self.erase_mode, ("mean", "random"))
        _at_least("augment.height", self.height, 8)
        _at_least("augment.width", self.width, 8)
        for name in ("gray_p", "lgpr_p", "erase_p"):
            _within(f"augment.{name}", getattr(self, name), 0.0, 1.0)


@dataclass(frozen=True)
class TrainingCfg(Settings):
    """The optimiser and loop fields pre-training and fine-tuning share (:class:`PretrainCfg`,
    :class:`FinetuneCfg`; each sets its own defaults where the paper's differ)."""

    batch_size: int = 128
    """Images per batch, P identities x K instances (fine-tuning: P pseudo-identities, and three such
    batches per step)."""
    num_instances: int = 4
    """K: images per (pseudo-)identity in a batch (camera-aware sampler)."""
    optimizer: str = "adam"
    """"adam" (the paper's) or "sgd" (with ``momentum``: TransReID's, TransReID-SSL's Cluster Contrast fork)."""
    lr: float = 3.5e-4
    """Learning rate (pre-training: after the warm-up, as ``schedule`` says; fine-tuning: constant, a
    new optimiser every epoch, docs/method.md §3.11)."""
    weight_decay: float = 5e-4
    """Weight decay (coupled L2, as torch.optim.Adam and SGD do it), biases included."""
    momentum: float = 0.9
    """SGD momentum (``optimizer="sgd"``)."""
    bias_lr_factor: float = 1.0
    """Learning rate of the biases relative to ``lr`` (2 in TransReID's configs)."""
    epochs: int = 120
    """Training epochs (a fine-tuning epoch starts with feature extraction and three clusterings)."""
    iters_per_epoch: int = 200
    """Optimiser steps per epoch (the loader wraps around)."""
    eval_every: int = 3
    """Evaluate every this many epochs (and after the last): pre-training on the source test split,
    fine-tuning the teacher on the target query / gallery."""
    seed: int = 1
    """Seed of python, numpy, torch, the samplers, the loaders and (fine-tuning) the clusterings."""
    sampler: str = "camera_aware"
    """Registered P x K identity sampler (``corelib.data.SAMPLERS``): "camera_aware" (the paper's:
    followers from other cameras than the anchor's) or "orientation_aware" (followers from other
    views first, so every identity block holds several orientations)."""
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)
    """Device, precision, memory layout, workers, process group."""

    def __post_init__(self) -> None:
        _at_least("batch_size", self.batch_size, 1)
        _at_least("num_instances", self.num_instances, 1)
        _positive("lr", self.lr)
        _at_least("weight_decay", self.weight_decay, 0)
        _at_least("epochs", self.epochs, 1, "a run of 0 epochs trains nothing and has no best checkpoint")
        _at_least("iters_per_epoch", self.iters_per_epoch, 1, "an epoch of 0 steps trains nothing")
        _at_least("eval_every", self.eval_every, 1, "evaluate every N >= 1 epochs; the last epoch is always evaluated")
        _choice("optimizer", self.optimizer, ("adam", "sgd"))
        _within("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _positive("bias_lr_factor", self.bias_lr_factor)
        _registered("sampler", self.sampler, _samplers)


# --------------------------------------------------------------------------------------------
# source pre-training


@dataclass(frozen=True)
class SourceModelCfg(Settings):
    """The network pre-training builds: a registered network around a registered backbone."""

    name: str = "source_net"
    """Registered network (``corelib.models.list_models()``): trunk, GAP, BN-neck, classifier."""
    backbone: str = "resnet50"
    """Registered backbone (``corelib.models.list_backbones()``): resnet18 ... resnet152, the IBN-Net trunks
    (resnet50_ibn_a ...), or your own."""
    weights: str = "imagenet"
    """Backbone initialisation: "imagenet", a file path, or "none" for random weights."""
    backbone_args: dict = field(default_factory=dict)
    """Further keyword arguments of the backbone's builder, e.g. ``{"last_stride": 2}``."""
    net_args: dict = field(default_factory=dict)
    """Further keyword arguments of the network's builder, e.g. TransReID's ``{"jpm": false}`` or
    ``{"sie": false}`` (``corelib.models.TransReIDNet``)."""

    def __post_init__(self) -> None:
        _registered("model.name", self.name, _models)
        _registered("model.backbone", self.backbone, _backbones)
        _check_weights("model.weights", self.weights)

    def model_args(self) -> dict:
        """What :func:`~corelib.models.build_model` takes besides the class count and the weights."""
        return {"backbone": self.backbone, "backbone_args": dict(self.backbone_args), **dict(self.net_args)}


@dataclass(frozen=True)
class CenterLossCfg(Settings):
    """Triplet margin and centre loss of ``loss.name="ce_triplet_center"`` (the Bag-of-Tricks
    criterion Learn by Guessing trains with; docs/baselines.md §2.2-2.3). The centres are parameters of
    the criterion with their own SGD, their gradient rescaled by 1 / weight before each step (the
    BoT / TransReID convention), so their update does not depend on the weight."""

    weight: float = 0.005
    """beta of ``beta * L_center``: 0.005 on Learn by Guessing's slides (BoT's code default is
    0.0005; not confirmed against the paper: a setting)."""
    lr: float = 0.5
    """Learning rate of the centres' own SGD (BoT / TransReID)."""
    triplet_margin: float = 0.3
    """Margin of the batch-hard triplet loss (BoT, Learn by Guessing); 0 uses the soft margin of the
    CORE-ReID criteria instead."""

    def __post_init__(self) -> None:
        _positive("loss.center.weight", self.weight)
        _positive("loss.center.lr", self.lr)
        _at_least("loss.center.triplet_margin", self.triplet_margin, 0)


@dataclass(frozen=True)
class OrientationCfg(Settings):
    """What "similar" and "different" orientations are for the orientation-aware triplet
    (``loss.name`` "ce_triplet_orientation" / "corereid_orientation"; docs/method.md §3.14): the
    positive of an anchor is its identity seen from a different orientation, the negative another
    identity seen from a similar one."""

    rule: str = "same_view"
    """"same_view" (similar = the same view id) or "angular" (similar = view angles at most
    ``similar_within`` degrees apart)."""
    view_angles: tuple[float, ...] = (0.0, 180.0, 90.0)
    """``rule="angular"``: the angle in degrees of each view id, indexed by view id (the embedded
    generators' views: 0 front, 1 back / rear, 2 side)."""
    similar_within: float = 45.0
    """``rule="angular"``: two views are similar when their angles are at most this many degrees apart
    (in [0, 180]); different otherwise."""

    def __post_init__(self) -> None:
        _choice("loss.orientation.rule", self.rule, VIEW_RULES)
        _within("loss.orientation.similar_within", self.similar_within, 0.0, 180.0)
        angles = list(self.view_angles)
        if any(isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) for a in angles):
            raise ConfigError(f"loss.orientation.view_angles takes one finite angle in degrees per view id "
                              f"(e.g. [0, 180, 90]), got {angles}")
        if self.rule == "angular" and not angles:
            raise ConfigError("loss.orientation.view_angles is empty but rule='angular' compares view angles; give one "
                              "angle in degrees per view id (e.g. [0, 180, 90]) or use rule='same_view'")


@dataclass(frozen=True)
class SourceLossCfg(Settings):
    """The criterion of pre-training, built by name (``corelib.losses.list_losses("pretrain")``)."""

    name: str = "ce_triplet"
    """Registered pre-training loss: "ce_triplet" is label-smoothed CE + soft-margin batch-hard triplet."""
    label_smooth: float = 0.1
    """Label-smoothing epsilon of the cross-entropy."""
    center: CenterLossCfg = field(default_factory=CenterLossCfg)
    """Triplet margin and centre loss of ``name="ce_triplet_center"`` (not used by the other losses)."""
    jpm_weighting: str = "code"
    """``name="transreid"``: "code" (0.5 global + 0.5 mean of the JPM terms, the official code) or
    "paper" (1 + 1: the paper's equation, twice the scale)."""
    orientation: OrientationCfg = field(default_factory=OrientationCfg)
    """Similar / different orientations of ``name="ce_triplet_orientation"`` (not used by the other losses)."""
    options: dict = field(default_factory=dict)
    """Settings of a loss registered outside corelib (passed to its builder)."""

    def __post_init__(self) -> None:
        _choice("loss.jpm_weighting", self.jpm_weighting, ("code", "paper"))
        _registered("loss.name", self.name, _losses("pretrain"))
        _within("loss.label_smooth", self.label_smooth, 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class PretrainCfg(TrainingCfg):
    """Supervised source pre-training (docs/method.md §2.4-2.7); defaults are the paper's (the
    optimiser and loop fields: :class:`TrainingCfg`)."""

    model: SourceModelCfg = field(default_factory=SourceModelCfg)
    """The network: backbone, weights."""
    augment: AugmentCfg = field(default_factory=lambda: AugmentCfg(erase_p=0.0))
    """Input size and augmentation (no random erasing in pre-training)."""
    loss: SourceLossCfg = field(default_factory=SourceLossCfg)
    """The criterion."""
    schedule: str = "multistep"
    """"multistep" (linear warm-up, then x ``gamma`` at each milestone: the paper's) or "cosine"
    (TransReID's timm CosineLRScheduler stepped per epoch: linear warm-up from 0.01 x lr, then
    ``min_lr_factor + (1 - min_lr_factor) (1 + cos(pi t / epochs)) / 2`` at epoch t = 1 .. epochs)."""
    min_lr_factor: float = 0.002
    """Floor of the cosine schedule relative to ``lr`` (TransReID: 0.002)."""
    warmup_epochs: int = 10
    """Linear warm-up from 0.01x to 1x over these epochs."""
    milestones: tuple[int, ...] = (40, 70)
    """Epochs at which the learning rate is multiplied by ``gamma``."""
    gamma: float = 0.1
    """Learning-rate decay factor at each milestone."""
    style_set: str = ""
    """Folder of an enlarged source set (real images + style copies) written by ``corelib style
    generate`` or notebook 01: its training split replaces the source's; "" trains on the source alone."""
    target_bn_forward: bool = True
    """With a target dataset: forward one unlabelled target batch per step so BN statistics mix
    both domains (the authors' code, docs/method.md §2.4); False trains on the source alone."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("warmup_epochs", self.warmup_epochs, 0)
        _positive("gamma", self.gamma)
        _choice("schedule", self.schedule, ("multistep", "cosine"))
        _within("min_lr_factor", self.min_lr_factor, 0.0, 1.0)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones):
            raise ConfigError(f"milestones must be epochs, integers >= 1 (e.g. [40, 70]), got {list(self.milestones)}")

    @classmethod
    def smoke(cls, **overrides) -> "PretrainCfg":
        """Seconds on a CPU: the ``pretrain.smoke`` preset (``corelib/presets.yaml``), then ``overrides``."""
        return cls().with_overrides(preset("pretrain", "smoke")).with_overrides(overrides)

    @classmethod
    def embedded(cls, pair: str = "person", *, smoke: bool = False, **overrides) -> "PretrainCfg":
        """The CPU recipe for an embedded pair (``make demo``): the ``pretrain.embedded`` preset
        (``corelib/presets.yaml``) at the pair's input size, minutes on two cores; ``smoke=True`` gives
        the smoke preset at that size. Then ``overrides``."""
        fields = _embedded_preset("pretrain", pair, smoke, ("augment.height", "augment.width"))
        return cls().with_overrides(fields).with_overrides(overrides)

    def lr_factor(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch`` relative to ``lr``: the warm-up multi-step schedule
        (docs/method.md §2.7) or TransReID's cosine (``schedule``), stepped per epoch."""
        if self.schedule == "cosine":
            t = epoch + 1  # timm's scheduler.step(epoch) with epoch = 1 .. E in TransReID's train.py
            if t < self.warmup_epochs:
                return 0.01 + t * (1.0 - 0.01) / self.warmup_epochs
            lo = self.min_lr_factor
            return lo + 0.5 * (1.0 - lo) * (1.0 + math.cos(math.pi * t / self.epochs))
        f = 1.0
        if epoch < self.warmup_epochs:
            a = epoch / self.warmup_epochs
            f = 0.01 * (1 - a) + a
        return f * self.gamma ** sum(epoch >= m for m in self.milestones)


# --------------------------------------------------------------------------------------------
# mean-teacher fine-tuning


@dataclass(frozen=True)
class MeanTeacherCfg(Settings):
    """The fine-tuning network: student and EMA teacher (CORE-ReID heads) and Ensemble Fusion(++)."""

    name: str = "mean_teacher"
    """Registered network; the loop needs a mean-teacher pair (``corelib.models.MeanTeacher``)."""
    backbone: str = "resnet50"
    """Registered backbone; must be the source checkpoint's."""
    backbone_args: dict = field(default_factory=dict)
    """Further keyword arguments of the backbone's builder; must be the source checkpoint's."""
    ecab: bool = True
    """ECAB on the top and bottom halves (False: plain pooled vectors, the ablation)."""
    pool: str = "gap+gmp"
    """Pooling of every branch: "gap+gmp" (authors' code) or "gap" (paper figure)."""
    fusion: str = "v2"
    """Ensemble Fusion version: "v2" (Fusion++ with SECAB) or "v1"."""
    alpha: float = 0.999
    """EMA momentum of the teacher (alpha_t = min(1 - 1/(t+1), alpha)); 0 trains one network
    without a mean teacher (the teacher is then the student's exact copy after every step)."""
    net_args: dict = field(default_factory=dict)
    """Further keyword arguments of the network's builder (TransReID's ``jpm``, ``sie`` ...);
    must be the source checkpoint's."""

    def __post_init__(self) -> None:
        _registered("model.name", self.name, _models)
        _registered("model.backbone", self.backbone, _backbones)
        _within("model.alpha", self.alpha, 0.0, 1.0)
        _choice("model.pool", self.pool, ("gap+gmp", "gap"))
        _choice("model.fusion", self.fusion, ("v1", "v2"))

    def model_args(self) -> dict:
        """What :func:`~corelib.models.build_model` takes besides the class count and the weights."""
        return {"backbone": self.backbone, "backbone_args": dict(self.backbone_args), "ecab": self.ecab,
                "pool": self.pool, "fusion": self.fusion, "alpha": self.alpha, **dict(self.net_args)}


@dataclass(frozen=True)
class ClusterCfg(Settings):
    """Pseudo-labels of the target, one clustering per level (global, top, bottom), every epoch."""

    labeler: str = "kmeans"
    """Registered pseudo-labeller (``corelib.cluster.list_labelers()``)."""
    num_clusters: int = 900
    """k of the three k-means runs (the pseudo-identities; docs/method.md §3.7 table)."""
    feature: str = "fused"
    """What is clustered: "fused" (Fusion++ outputs, the code) or "plain" (the teacher's own
    global / top / bottom features, the paper figure's variant; docs/method.md §9-Q2)."""
    normalize: str = "none"
    """Feature normalisation before clustering (``corelib.cluster.list_normalizations()``): "none",
    "camera_mean" (subtract each camera's mean, not in the paper: keeps clusters from forming per
    camera when a camera's style dominates; README, fine-tuning), or "camera_guided" (Learn by
    Guessing: per-camera, per-dimension standardisation, then L2)."""
    kmeans: KMeansCfg = field(default_factory=KMeansCfg)
    """Settings of the k-means labeller (the class it declares)."""
    dbscan: DBSCANCfg = field(default_factory=DBSCANCfg)
    """Settings of the DBSCAN labeller (``labeler="dbscan"``; ``num_clusters`` is then not used)."""
    options: dict = field(default_factory=dict)
    """Settings of a labeller registered outside corelib: checked and typed through the settings class
    it declares (``register_labeler(name, settings=...)``; :func:`corelib.cluster.labeler_settings`)."""

    def __post_init__(self) -> None:
        _registered("cluster.labeler", self.labeler, _labelers)
        _registered("cluster.normalize", self.normalize, _normalizations)
        _at_least("cluster.num_clusters", self.num_clusters, 0, "0 means not set yet: a recipe without the paper's k")
        _choice("cluster.feature", self.feature, ("fused", "plain"))
        labeler_settings(self)  # an outside labeller's options: refused here when its class refuses them


@dataclass(frozen=True)
class ContrastCfg(Settings):
    """The cluster-level memory of the ``cluster_contrast`` loss (Cluster Contrast; docs/baselines.md §3.5)."""

    temperature: float = 0.05
    """tau of the InfoNCE over the cluster centroids (0.05 in the published code)."""
    momentum: float = 0.1
    """m of the memory update psi <- m psi + (1 - m) q: the weight of the OLD value (README 0.1; the
    code's argparse default is 0.2; the opposite convention of the mean teacher's alpha)."""
    hard: bool = False
    """Update each cluster with its hardest instance of the batch (lowest similarity to its centroid,
    the paper's "cluster-level hard instance" update) instead of every instance in turn."""

    def __post_init__(self) -> None:
        _positive("loss.contrast.temperature", self.temperature)
        _within("loss.contrast.momentum", self.momentum, 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class AdaptLossCfg(Settings):
    """The criterion of fine-tuning, built by name (``corelib.losses.list_losses("finetune")``)."""

    name: str = "corereid"
    """Registered fine-tuning loss: "corereid" is CE_ls + triplet (global) + weighted triplets (top, bottom)."""
    label_smooth: float = 0.1
    """Label-smoothing epsilon of the cross-entropy on the global pseudo-labels."""
    local_weight: float = 0.5
    """Weight of each of the top and bottom triplet losses."""
    fused_loss: bool = False
    """Add ``local_weight`` x triplet on the fused top / bottom features so ECAB, SECAB and the fusion
    BatchNorms receive gradients (docs/method.md §9-Q1); False is the published recipe."""
    contrast: ContrastCfg = field(default_factory=ContrastCfg)
    """The cluster memory of ``name="cluster_contrast"`` (not used by the other losses)."""
    center: CenterLossCfg = field(default_factory=CenterLossCfg)
    """Triplet margin and centre loss of ``name="ce_triplet_center"`` (not used by the other losses)."""
    jpm_weighting: str = "code"
    """``name="transreid"``: "code" (0.5 global + 0.5 mean of the JPM terms) or "paper" (1 + 1)."""
    orientation: OrientationCfg = field(default_factory=OrientationCfg)
    """Similar / different orientations of ``name="corereid_orientation"`` (not used by the other losses)."""
    options: dict = field(default_factory=dict)
    """Settings of a loss registered outside corelib (passed to its builder)."""

    def __post_init__(self) -> None:
        _choice("loss.jpm_weighting", self.jpm_weighting, ("code", "paper"))
        _registered("loss.name", self.name, _losses("finetune"))
        _within("loss.label_smooth", self.label_smooth, 0.0, 1.0, high_open=True)
        _at_least("loss.local_weight", self.local_weight, 0)


TARGET_VIEWS = ("metadata", "estimated")
"""Sources of the target's view ids (``FinetuneCfg.target_views``)."""


@dataclass(frozen=True)
class FinetuneCfg(TrainingCfg):
    """Mean-teacher fine-tuning on the unlabelled target (docs/method.md §3); defaults are the
    paper's (the optimiser and loop fields: :class:`TrainingCfg`)."""

    model: MeanTeacherCfg = field(default_factory=MeanTeacherCfg)
    """The network: backbone (the source's), heads, fusion, EMA."""
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    """Input size and augmentation."""
    cluster: ClusterCfg = field(default_factory=ClusterCfg)
    """Pseudo-labels: labeller, k, what is clustered and how it is normalised."""
    loss: AdaptLossCfg = field(default_factory=AdaptLossCfg)
    """The criterion."""
    epochs: int = 80
    """Fine-tuning epochs; each starts with feature extraction and three clusterings."""
    iters_per_epoch: int = 400
    """Optimiser steps per epoch."""
    eval_every: int = 1
    """Evaluate the teacher on the target query / gallery every this many epochs (and after the last)."""
    teacher_forward: bool = True
    """Forward the teacher in train mode on every batch so its BN statistics follow the target
    (the authors' code); the outputs are not used by the loss."""
    bn_sub_batch: int = 0
    """BatchNorm statistics over fixed sub-batches of this size (0 = the whole batch): one device
    then behaves like the paper's several GPUs (e.g. 64 = two GPUs at batch 128)."""
    score_start: bool = False
    """Also evaluate the teacher on the target before the first step and log it with epoch 1 as
    ``start_target_*``: the direct transfer scored with the descriptor the adapted scores use (the
    fine-tuning network's heads and fusion), where ``direct_transfer`` scores the source network's
    own descriptor. It draws no random number, so the training is the same with it or without it."""
    target_views: str = "metadata"
    """Where the target's view ids come from: "metadata" (the dataset's own) or "estimated"
    (``corelib.orientation``'s estimator, marked ``extras["views"] = "estimated"`` on the dataset);
    fine-tuning refuses a target whose views come from elsewhere, so one run folder holds one kind."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("bn_sub_batch", self.bn_sub_batch, 0)
        _choice("target_views", self.target_views, TARGET_VIEWS)

    @classmethod
    def smoke(cls, **overrides) -> "FinetuneCfg":
        """Seconds on a CPU: the ``finetune.smoke`` preset (``corelib/presets.yaml``), then ``overrides``."""
        return cls().with_overrides(preset("finetune", "smoke")).with_overrides(overrides)

    @classmethod
    def embedded(cls, pair: str = "person", *, smoke: bool = False, **overrides) -> "FinetuneCfg":
        """The CPU recipe for an embedded pair (``make demo``): the ``finetune.embedded`` preset and
        the pair's own (``corelib/presets.yaml``: the paper's losses, EMA and clustering with few epochs,
        k near the target's identity count) at the pair's input size; ``smoke=True`` gives the smoke
        preset at that size. Then ``overrides``."""
        fields = _embedded_preset("finetune", pair, smoke, ("augment.height", "augment.width"))
        return cls().with_overrides(fields).with_overrides(overrides)


STYLE_MODES = ("camera", "domain")
"""Style-transfer modes: one CycleGAN per camera pair of the source, or one source <-> target."""


@dataclass(frozen=True)
class StyleCfg(Settings):
    """CycleGAN style transfer (docs/method.md §2.1-2.2); defaults are the CamStyle (camera-aware) settings.

    The domain-aware settings of the authors' vehicle script differ only in epochs and batch size:
    ``StyleCfg.domain_aware()``.
    """

    height: int = 256
    """Height in pixels at which the CycleGAN trains and translates (fakes are resized back to the
    size of their real image)."""
    width: int = 256
    """Width in pixels (CamStyle trains persons at 256x256 too)."""
    load_scale: float = 286 / 256
    """Training images are resized to this multiple of (height, width), then randomly cropped."""
    ngf: int = 64
    """Filters of the generator's first convolution (doubled at each downsampling)."""
    ndf: int = 64
    """Filters of the discriminator's first convolution."""
    gen_blocks: int = 9
    """Residual blocks of the ResNet generator (9 in CycleGAN; 6 is its small-image variant)."""
    gen_downsampling: int = 2
    """Stride-2 convolutions before the residual blocks (and transposed ones after)."""
    residual_generator: bool = False
    """Generators predict a change of their input (start at the identity; not CycleGAN's): colour and
    illumination styles are learned in far fewer steps, which makes CPU training practical."""
    disc_layers: int = 3
    """Stride-2 layers of the PatchGAN discriminator (3 gives the 70x70 patches)."""
    lambda_cycle: float = 10.0
    """Weight of each cycle-consistency L1 loss (lambda_A = lambda_B)."""
    lambda_identity: float = 0.5
    """Identity loss weight, relative to ``lambda_cycle`` (CycleGAN's convention); 0 switches it off."""
    lr: float = 2e-4
    """Adam learning rate of generators and discriminators."""
    beta1: float = 0.5
    """Adam beta1."""
    epochs: int = 30
    """Epochs at the constant learning rate."""
    decay_epochs: int = 20
    """Further epochs over which the learning rate decays linearly to zero."""
    iters_per_epoch: int = 0
    """Optimiser steps per epoch; 0 means one pass over the larger of the two domains."""
    batch_size: int = 1
    """Images of each domain per step (CamStyle 1; the authors' vehicle script 32)."""
    pool_size: int = 50
    """Generated images kept in the history pool the discriminators also see (0: no pool)."""
    train_splits: tuple[str, ...] = ("train", "query", "gallery")
    """Splits whose images train the style models ("train_all" in CamStyle; no labels are used)."""
    generate_batch_size: int = 64
    """Images translated per forward when writing style copies."""
    precision: str = "fp32"
    """"fp32", "bf16" or "auto" (bf16 autocast on CUDA)."""
    seed: int = 1
    """Seed of the weights, the image order, the crops and the image pool."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda[:N]"."""
    num_workers: int = 4
    """DataLoader worker processes per domain (0 loads in the main process)."""

    def __post_init__(self) -> None:
        check_device_name(self.device, "device")
        _choice("precision", self.precision, ("auto", "fp32", "bf16"))
        for name in ("height", "width", "ngf", "ndf", "batch_size", "generate_batch_size"):
            _at_least(name, getattr(self, name), 1)
        for name in ("gen_blocks", "gen_downsampling", "disc_layers", "decay_epochs", "iters_per_epoch", "pool_size",
                     "num_workers", "epochs", "lambda_cycle", "lambda_identity"):
            _at_least(name, getattr(self, name), 0)
        _at_least("epochs + decay_epochs", self.epochs + self.decay_epochs, 1, "a CycleGAN of 0 epochs learns nothing")
        _at_least("load_scale", self.load_scale, 1.0)
        _positive("lr", self.lr)
        _within("beta1", self.beta1, 0.0, 1.0, high_open=True)

    @classmethod
    def domain_aware(cls, **overrides) -> "StyleCfg":
        """The authors' vehicle (domain-aware) settings: the ``style.domain_aware`` preset
        (``corelib/presets.yaml``; more epochs, larger batches), then ``overrides``."""
        return cls().with_overrides(preset("style", "domain_aware")).with_overrides(overrides)

    @classmethod
    def smoke(cls, **overrides) -> "StyleCfg":
        """Seconds on a CPU: the ``style.smoke`` preset (``corelib/presets.yaml``), then ``overrides``."""
        return cls().with_overrides(preset("style", "smoke")).with_overrides(overrides)

    @classmethod
    def embedded(cls, pair: str = "person", *, smoke: bool = False, **overrides) -> "StyleCfg":
        """The CPU recipe for an embedded pair (``make demo``): the ``style.embedded`` preset and the
        pair's own (``corelib/presets.yaml``: a small residual CycleGAN) at the pair's input size;
        ``smoke=True`` gives the smoke preset at its own size. Then ``overrides``."""
        fields = _embedded_preset("style", pair, smoke, None if smoke else ("height", "width"))
        return cls().with_overrides(fields).with_overrides(overrides)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs

    def lr_factor(self, epoch: int) -> float:
        """Constant for ``epochs``, then linear decay to 0 over ``decay_epochs`` (CycleGAN's 'linear')."""
        return 1.0 - max(0, epoch + 1 - self.epochs) / float(self.decay_epochs + 1)
