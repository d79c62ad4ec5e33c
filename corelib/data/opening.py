"""Opening a dataset by name, whichever kind the name is: a registered loader or an embedded preset.

It sits above both :mod:`corelib.data.dataset` (the real loaders) and :mod:`corelib.data.synthetic`
(the presets, drawn on first use), so neither has to know the other.
"""

from __future__ import annotations

from pathlib import Path

from .dataset import ReIDDataset, build_dataset
from .synthetic import PRESETS, generate_synthetic, load_synthetic


def open_dataset(name: str, root: str | Path, *, scale: float = 1.0, progress: bool = False, **kwargs) -> ReIDDataset:
    """A dataset by loader name or by synthetic preset name.

    ``name`` is either a :func:`~corelib.data.dataset.build_dataset` loader (``market1501``,
    ``veri776`` ...; ``root`` is the copy, ``kwargs`` go to the loader) or an embedded preset
    (``market_like`` ...; generated under ``root`` when no complete copy is there, at ``scale``).
    """
    if name in PRESETS:
        return load_synthetic(generate_synthetic(name, root, scale=scale, progress=progress))
    return build_dataset(name, root, **kwargs)
