"""Configuration dataclasses, one docstring line per field, with ``.smoke()`` presets.

Notebooks hold literals in their ``parameters`` cell and derive everything else from these
(``DataCfg.smoke()`` when ``SMOKE``), so the meaning of "smoke" is defined once, here, and tested.
Later chapters add their own configs (pre-training, fine-tuning, clustering, evaluation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .paths import synthetic_root


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

    @classmethod
    def smoke(cls, **overrides) -> "PretrainCfg":
        """Seconds on a CPU: ResNet-18 from random weights at 64x32, 2 epochs of 3 steps."""
        base = cls(depth=18, weights="none", height=64, width=32, batch_size=16, epochs=2, iters_per_epoch=3,
                   warmup_epochs=1, milestones=(), eval_every=1, num_workers=0)
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
