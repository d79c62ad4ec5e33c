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
