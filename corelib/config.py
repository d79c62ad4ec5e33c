"""Configuration dataclasses, one docstring line per field, with ``.smoke()`` presets.

Notebooks hold literals in their ``parameters`` cell and derive everything else from these
(``DataCfg.smoke()`` when ``SMOKE``), so the meaning of "smoke" is defined once, here, and tested.
Later chapters add their own configs (pre-training, fine-tuning, clustering, evaluation).
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

from .errors import ConfigError
from .paths import synthetic_root

CfgT = TypeVar("CfgT")

EMBEDDED_PAIRS: dict[str, tuple[str, str]] = {
    "person": ("market_like", "cuhk_like"),
    "vehicle": ("vehicleid_like", "veri_like"),
}
"""The embedded source -> target pairs (synthetic presets), as the paper pairs Market -> CUHK03
and VehicleID -> VeRi-776."""


EMBEDDED_STYLE_MODES: dict[str, str] = {"person": "camera", "vehicle": "domain"}
"""Style transfer of each embedded pair, as the paper does it: camera-aware for persons (the source
has camera labels), domain-aware (source <-> target) for vehicles."""


def _check_pair(pair: str) -> None:
    if pair not in EMBEDDED_PAIRS:
        from .errors import UnknownNameError

        raise UnknownNameError(f"unknown embedded pair {pair!r}; valid pairs: {', '.join(EMBEDDED_PAIRS)}")


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
        """A tiny copy for CI: about 15% of the identities, 200 images decoded per dataset."""
        return replace(cls(scale=0.15, check_images="200"), **overrides)

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


@dataclass(frozen=True)
class PretrainCfg:
    """Supervised source pre-training (method.md §2.4-2.7); defaults are the paper's."""

    depth: int = 50
    """ResNet depth of the trunk (18, 34, 50, 101, 152)."""
    weights: str = "imagenet"
    """Trunk initialisation: "imagenet", a file path, or "none" for random weights."""
    height: int = 256
    """Input height in pixels."""
    width: int = 128
    """Input width in pixels."""
    batch_size: int = 128
    """Images per batch, P identities x K instances."""
    num_instances: int = 4
    """K: images per identity in a batch (camera-aware sampler)."""
    lr: float = 3.5e-4
    """Adam learning rate after the warm-up."""
    weight_decay: float = 5e-4
    """Adam weight decay (coupled L2, as torch.optim.Adam does it)."""
    epochs: int = 120
    """Training epochs."""
    iters_per_epoch: int = 200
    """Optimiser steps per epoch (the loader wraps around)."""
    warmup_epochs: int = 10
    """Linear warm-up from 0.01x to 1x over these epochs."""
    milestones: tuple[int, ...] = (40, 70)
    """Epochs at which the learning rate is multiplied by ``gamma``."""
    gamma: float = 0.1
    """Learning-rate decay factor at each milestone."""
    label_smooth: float = 0.1
    """Label-smoothing epsilon of the cross-entropy."""
    eval_every: int = 3
    """Evaluate on the source test split every this many epochs (and after the last)."""
    seed: int = 1
    """Seed of python, numpy, torch, the sampler and the loader."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda[:N]"."""
    num_workers: int = 4
    """DataLoader worker processes (0 loads in the main process)."""
    gray_p: float = 0.05
    """Whole-image grayscale probability (method.md §9-Q7; 0 reproduces the authors' code)."""
    lgpr_p: float = 0.4
    """Local grayscale patch replacement probability."""
    style_set: str = ""
    """Folder of an enlarged source set (real images + style copies) written by ``corelib style
    generate`` or notebook 01: its training split replaces the source's; "" trains on the source alone."""
    target_bn_forward: bool = True
    """With a target dataset: forward one unlabelled target batch per step so BN statistics mix
    both domains (the authors' code, method.md §2.4); False trains on the source alone."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"."""
    channels_last: bool = True
    """NHWC memory format for the convolutions (faster on GPUs and on the CPU)."""
    dist_backend: str = "auto"
    """Process-group backend under torchrun: "auto" (NCCL with CUDA, gloo on CPU), "nccl", "gloo"."""

    @classmethod
    def smoke(cls, **overrides) -> "PretrainCfg":
        """Seconds on a CPU: ResNet-18 from random weights at 64x32, 2 epochs of 3 steps."""
        base = cls(depth=18, weights="none", height=64, width=32, batch_size=16, epochs=2, iters_per_epoch=3,
                   warmup_epochs=1, milestones=(), eval_every=1, num_workers=0)
        return replace(base, **overrides)

    @classmethod
    def embedded(cls, pair: str = "person", *, smoke: bool = False, **overrides) -> "PretrainCfg":
        """The CPU recipe for an embedded pair (``make demo``): ResNet-18 from random weights at a
        small input size, minutes on two cores. ``smoke=True`` gives the CI-sized variant."""
        _check_pair(pair)
        size = {"person": (64, 32), "vehicle": (64, 64)}[pair]
        if smoke:
            return cls.smoke(height=size[0], width=size[1], **overrides)
        # 5 epochs of 60 steps: both pairs' source networks in about 6 min on two cores (make demo <= 20 min)
        base = cls(depth=18, weights="none", height=size[0], width=size[1], batch_size=64, epochs=5,
                   iters_per_epoch=60, warmup_epochs=0, milestones=(), eval_every=5, num_workers=0)
        return replace(base, **overrides)

    def lr_factor(self, epoch: int) -> float:
        """Warm-up multi-step schedule, stepped per epoch (method.md §2.7)."""
        f = 1.0
        if epoch < self.warmup_epochs:
            a = epoch / self.warmup_epochs
            f = 0.01 * (1 - a) + a
        return f * self.gamma ** sum(epoch >= m for m in self.milestones)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FinetuneCfg:
    """Mean-teacher fine-tuning on the unlabelled target (method.md §3); defaults are the paper's."""

    depth: int = 50
    """ResNet depth; must match the source checkpoint."""
    height: int = 256
    """Input height in pixels."""
    width: int = 128
    """Input width in pixels."""
    batch_size: int = 128
    """Images per pseudo-labelled batch (P clusters x K instances); three such batches per step."""
    num_instances: int = 4
    """K: images per pseudo-identity in a batch."""
    lr: float = 3.5e-4
    """Adam learning rate (constant; a new Adam every epoch, method.md §3.11)."""
    weight_decay: float = 5e-4
    """Adam weight decay."""
    epochs: int = 80
    """Fine-tuning epochs; each starts with feature extraction and three clusterings."""
    iters_per_epoch: int = 400
    """Optimiser steps per epoch."""
    num_clusters: int = 900
    """k of the three k-means runs (the pseudo-identities; method.md §3.7 table)."""
    alpha: float = 0.999
    """EMA momentum of the teacher (alpha_t = min(1 - 1/(t+1), alpha))."""
    label_smooth: float = 0.1
    """Label-smoothing epsilon of the cross-entropy on the global pseudo-labels."""
    local_weight: float = 0.5
    """Weight of each of the top and bottom triplet losses."""
    fusion: str = "v2"
    """Ensemble Fusion version: "v2" (Fusion++ with SECAB) or "v1"."""
    ecab: bool = True
    """ECAB on the top and bottom halves (False: plain pooled vectors, the ablation)."""
    pool: str = "gap+gmp"
    """Pooling of every branch: "gap+gmp" (authors' code) or "gap" (paper figure)."""
    cluster_feature: str = "fused"
    """What is clustered: "fused" (Fusion++ outputs, the code) or "plain" (the teacher's own
    global / top / bottom features, the paper figure's variant; method.md §9-Q2)."""
    cluster_camera_norm: bool = False
    """Centre the clustering features per camera before k-means (not in the paper): keeps clusters
    from forming per camera when a camera's style dominates (see README, fine-tuning)."""
    fused_loss: bool = False
    """Add 0.5 x triplet on the fused top / bottom features so ECAB, SECAB and the fusion
    BatchNorms receive gradients (method.md §9-Q1); False is the published recipe."""
    kmeans: str = "minibatch"
    """"minibatch" (scikit-learn MiniBatchKMeans semantics, the code) or "lloyd" (full batch)."""
    kmeans_init: str = "greedy_kmeans++"
    """Seeding: "greedy_kmeans++", "kmeans++" or "random"."""
    kmeans_max_iter: int = 100
    """Lloyd iterations (lloyd) or passes over the data (minibatch)."""
    kmeans_batch_size: int = 512
    """Mini-batch size of MiniBatchKMeans."""
    kmeans_init_size: int = 1500
    """Points the seeding sees (raised to 3k, capped at n; method.md §9-Q12)."""
    kmeans_n_init: int = 3
    """Seedings tried, the best kept (MiniBatchKMeans)."""
    teacher_forward: bool = True
    """Forward the teacher in train mode on every batch so its BN statistics follow the target
    (the authors' code); the outputs are not used by the loss."""
    bn_sub_batch: int = 0
    """BatchNorm statistics over fixed sub-batches of this size (0 = the whole batch): one device
    then behaves like the paper's several GPUs (e.g. 64 = two GPUs at batch 128)."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"."""
    channels_last: bool = True
    """NHWC memory format for the convolutions (faster on GPUs and on the CPU)."""
    eval_every: int = 1
    """Evaluate the teacher on the target query / gallery every this many epochs (and after the last)."""
    seed: int = 1
    """Seed of python, numpy, torch, the samplers, the loaders and the k-means runs."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda[:N]" (under torchrun: cuda:LOCAL_RANK)."""
    num_workers: int = 4
    """DataLoader worker processes per loader (0 loads in the main process)."""
    gray_p: float = 0.05
    """Whole-image grayscale probability."""
    lgpr_p: float = 0.4
    """Local grayscale patch replacement probability."""
    erase_p: float = 0.5
    """Random erasing probability (fine-tuning only)."""
    dist_backend: str = "auto"
    """Process-group backend under torchrun: "auto" (NCCL with CUDA, gloo on CPU), "nccl", "gloo"."""

    @classmethod
    def smoke(cls, **overrides) -> "FinetuneCfg":
        """Seconds on a CPU: ResNet-18 at 64x32, 2 epochs of 2 steps, k = 8, batch 16."""
        base = cls(depth=18, height=64, width=32, batch_size=16, epochs=2, iters_per_epoch=2, num_clusters=8,
                   kmeans="lloyd", kmeans_max_iter=20, eval_every=1, num_workers=0)
        return replace(base, **overrides)

    @classmethod
    def embedded(cls, pair: str = "person", *, smoke: bool = False, **overrides) -> "FinetuneCfg":
        """The CPU recipe for an embedded pair (``make demo``): the paper's losses, EMA and
        clustering with few epochs, k near the target's identity count and a small input size.
        ``smoke=True`` gives the CI-sized variant."""
        _check_pair(pair)
        size = {"person": (64, 32), "vehicle": (64, 64)}[pair]
        if smoke:
            return cls.smoke(height=size[0], width=size[1], **overrides)
        k = {"person": 160, "vehicle": 150}[pair]
        epochs = {"person": 4, "vehicle": 3}[pair]  # both pairs' adaptation in about 5 min on two cores
        # camera-centred clustering: without it the embedded targets cluster by camera and the
        # published recipe loses accuracy (README, "Fine-tuning"; measured in benchmarks/README.md)
        base = cls(depth=18, height=size[0], width=size[1], batch_size=32, epochs=epochs, iters_per_epoch=40,
                   num_clusters=k, kmeans="lloyd", cluster_camera_norm=True, num_workers=0)
        return replace(base, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


STYLE_MODES = ("camera", "domain")
"""Style-transfer modes: one CycleGAN per camera pair of the source, or one source <-> target."""


@dataclass(frozen=True)
class StyleCfg:
    """CycleGAN style transfer (method.md §2.1-2.2); defaults are the CamStyle (camera-aware) settings.

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

    @classmethod
    def domain_aware(cls, **overrides) -> "StyleCfg":
        """The authors' vehicle (domain-aware) settings: 100 + 100 epochs at batch size 32."""
        return replace(cls(epochs=100, decay_epochs=100, batch_size=32), **overrides)

    @classmethod
    def smoke(cls, **overrides) -> "StyleCfg":
        """Seconds on a CPU: a tiny CycleGAN at 32x16, 2 epochs of 3 steps."""
        base = cls(height=32, width=16, ngf=8, ndf=8, gen_blocks=1, disc_layers=2, residual_generator=True, epochs=1,
                   decay_epochs=1, iters_per_epoch=3, batch_size=4, pool_size=8, num_workers=0)
        return replace(base, **overrides)

    @classmethod
    def embedded(cls, pair: str = "person", *, smoke: bool = False, **overrides) -> "StyleCfg":
        """The CPU recipe for an embedded pair (``make demo``): a small residual CycleGAN at the
        pre-training input size, 36 steps per model. ``smoke=True`` gives the CI-sized variant."""
        _check_pair(pair)
        size = {"person": (64, 32), "vehicle": (64, 64)}[pair]
        if smoke:
            return cls.smoke(**overrides)
        # a residual generator learns the embedded cameras' colour styles in tens of steps (36 here,
        # about 9 s per camera pair on two cores, so that make demo keeps to 20 min); CycleGAN's own
        # generator needs thousands (benchmarks/README.md, measured at 60 steps).
        # The identity loss keeps colours, which is what the vehicle day -> dusk translation must
        # change: with it the generator does not leave the identity within the budget, so it is off there.
        base = cls(height=size[0], width=size[1], ngf=16, ndf=16, gen_blocks=3, disc_layers=3, residual_generator=True,
                   lambda_identity=0.5 if pair == "person" else 0.0, lr=5e-4, epochs=2, decay_epochs=1,
                   iters_per_epoch=12, batch_size=8, num_workers=0)
        return replace(base, **overrides)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs

    def lr_factor(self, epoch: int) -> float:
        """Constant for ``epochs``, then linear decay to 0 over ``decay_epochs`` (CycleGAN's 'linear')."""
        return 1.0 - max(0, epoch + 1 - self.epochs) / float(self.decay_epochs + 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(cls: type, name: str, kind: Any, value: Any) -> Any:
    """``value`` as field ``name`` of ``cls`` wants it (YAML lists become tuples, ints floats)."""
    kind = typing.get_type_hints(cls)[name] if isinstance(kind, str) else kind
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{cls.__name__}.{name} takes a list, got {value!r}")
        return tuple(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{cls.__name__}.{name} takes true or false, got {value!r}")
        return value
    if kind is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{cls.__name__}.{name} takes a number, got {value!r}") from None
    if kind in (int, str) and (not isinstance(value, kind) or isinstance(value, bool)):
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{cls.__name__}.{name} takes a{'n int' if kind is int else ' string'}, got {value!r}")
    return value


def load_config(
    cls: type[CfgT],
    path: Union[str, Path, None] = None,
    overrides: Union[Mapping[str, Any], Sequence[str], None] = None,
    *,
    base: Optional[CfgT] = None,
) -> CfgT:
    """A config dataclass from ``base`` (default ``cls()``), a YAML file, then overrides.

    Args:
        cls: e.g. :class:`PretrainCfg` or :class:`FinetuneCfg`.
        path: a YAML mapping of field names to values (``epochs: 40``); None skips it.
        overrides: a mapping, or ``"name=value"`` strings as typed on the command line (the value
            is read as YAML: ``epochs=40``, ``milestones=[40,70]``, ``device=cpu``).
        base: the starting point, e.g. ``FinetuneCfg.smoke()``.

    Raises:
        ConfigError: an unknown field (the message lists the valid ones), a value of the wrong
            type, or a file that is not a YAML mapping.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of {cls.__name__} fields, e.g. 'epochs: 40'")
        values.update(loaded)
    if isinstance(overrides, Mapping):
        values.update(overrides)
    else:
        for item in overrides or ():
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r} is not NAME=VALUE (e.g. epochs=40)")
            values[key.strip()] = yaml.safe_load(text)
    known = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field {unknown[0]!r}; valid fields: {', '.join(known)}")
    values = {k: _coerce(cls, k, known[k], v) for k, v in values.items()}
    return replace(base if base is not None else cls(), **values)


def save_config(cfg: Any, path: Union[str, Path]) -> Path:
    """Write a config dataclass as YAML that :func:`load_config` reads back to an equal object."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
