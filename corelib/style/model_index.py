"""The style models of a source: training them per camera pair or per domain, and their index.

Two modes (docs/method.md §2.1-2.2):

- ``"camera"`` (CamStyle, persons): one CycleGAN per unordered camera pair of the source, trained
  on the images of the two cameras.
- ``"domain"`` (vehicles, or sources without camera labels): one CycleGAN between the source and
  the target's unlabelled training images.

:func:`train_style_models` trains them (resumable: a finished pair is skipped, an interrupted one
continues from its last epoch) and writes ``style_models.json``, the index :func:`load_style_models`
reads back as :class:`StyleModels`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..config import STYLE_MODES, StyleCfg, save_config
from ..data.dataset import ReIDDataset, Sample
from ..errors import MissingStageError, StyleError
from ..ownership import RunLock
from .cyclegan import train_cyclegans
from .cyclegan_data import StyleJob
from .networks import CycleGAN, load_cyclegan

MODELS_INDEX = "style_models.json"


@dataclass
class StylePair:
    """One trained CycleGAN: domain A (camera ``a`` or the source) <-> domain B."""

    name: str
    """Folder name: ``c1-c2`` (1-based cameras) or ``domain``."""
    a: Optional[int]
    """0-based camera of side A (None in domain mode)."""
    b: Optional[int]
    """0-based camera of side B (None in domain mode)."""
    images_a: int
    images_b: int
    checkpoint: str
    """Path of ``last.pt``, relative to the models folder."""


@dataclass
class StyleModels:
    """The style models of one source: what :func:`write_style_set` and :func:`style_gap` use."""

    mode: str
    root: Path
    source: str
    target: Optional[str]
    pairs: list[StylePair] = field(default_factory=list)

    def load(self, pair: StylePair, device: Union[str, torch.device] = "cpu") -> tuple[CycleGAN, StyleCfg]:
        """The trained CycleGAN of ``pair`` and the config it was trained with."""
        return load_cyclegan(self.root / pair.checkpoint, device=device)

    def save(self) -> Path:
        data = {"mode": self.mode, "source": self.source, "target": self.target,
                "pairs": [asdict(p) for p in self.pairs]}
        path = self.root / MODELS_INDEX
        path.write_text(json.dumps(data, indent=1))
        return path


def load_style_models(root: Union[str, Path]) -> StyleModels:
    """The index written by :func:`train_style_models` in ``root``.

    Raises:
        MissingStageError: ``root`` holds no trained style models; names the command that makes them.
    """
    root = Path(root)
    path = root / MODELS_INDEX
    if not path.is_file():
        raise MissingStageError(f"no style models in {root} ({MODELS_INDEX} missing); train them with "
                                f"`corelib style train` or notebook 01_style_transfer")
    data = json.loads(path.read_text())
    pairs = [StylePair(**p) for p in data["pairs"]]
    missing = [p.name for p in pairs if not (root / p.checkpoint).is_file()]
    if missing:
        raise MissingStageError(f"{root}: checkpoints missing for pair(s) {', '.join(missing)}; "
                                f"re-run `corelib style train` (it resumes)")
    return StyleModels(data["mode"], root, data["source"], data.get("target"), pairs)


def _check_mode(mode: str) -> None:
    if mode not in STYLE_MODES:
        raise StyleError(f"unknown style mode {mode!r}; valid modes: {', '.join(STYLE_MODES)}")


def _split_images(dataset: ReIDDataset, splits: Sequence[str]) -> list[Sample]:
    return [s for split in splits for s in dataset.split(split)]


def camera_pairs(dataset: ReIDDataset) -> list[tuple[int, int]]:
    """The unordered camera pairs of ``dataset``'s training split, C(K, 2) of them.

    Raises:
        StyleError: the dataset has no camera labels or a single camera (use ``mode="domain"``).
    """
    if not dataset.has_cameras:
        raise StyleError(f"{dataset.name} has no camera labels: camera-aware style transfer needs them; "
                         f"use mode='domain' with a target dataset instead")
    cams = sorted({s.camid for s in dataset.train})
    if len(cams) < 2:
        raise StyleError(f"{dataset.name} has {len(cams)} camera(s) in its training split; camera-aware style "
                         f"transfer needs at least 2 (use mode='domain')")
    return list(combinations(cams, 2))


def train_style_models(
    source: ReIDDataset,
    cfg: StyleCfg,
    out_dir: Union[str, Path],
    *,
    mode: str = "camera",
    target: Optional[ReIDDataset] = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> StyleModels:
    """Train the CycleGANs of ``source``: one per camera pair, or one source <-> target.

    Args:
        source: the labelled source; its ``cfg.train_splits`` images train the models (no labels used).
        cfg: CycleGAN settings, shared by all pairs.
        out_dir: one sub-folder per pair (``c1-c2/last.pt`` ...) plus ``style_models.json``.
        mode: ``"camera"`` or ``"domain"``.
        target: the target dataset (domain mode); only its unlabelled training split is used.
        resume: skip finished pairs and continue interrupted ones.
        overwrite: with ``resume=False``, set each pair's earlier model aside
            (``<pair>.replaced-<time>``) and train it again; without either, a pair folder that holds
            a model is refused, so nothing trained is replaced unasked.
        progress: a progress bar over the pairs and one per epoch.

    Raises:
        StyleError: an unknown mode, domain mode without a target, camera mode on a dataset without
            cameras.
    """

    _check_mode(mode)
    out = Path(out_dir)
    pool = _split_images(source, cfg.train_splits)
    jobs: list[tuple[StylePair, list[Sample], list[Sample]]] = []
    if mode == "camera":
        by_cam: dict[int, list[Sample]] = {}
        for s in pool:
            by_cam.setdefault(s.camid, []).append(s)
        for a, b in camera_pairs(source):
            name = f"c{a + 1}-c{b + 1}"
            jobs.append((StylePair(name, a, b, len(by_cam[a]), len(by_cam[b]), f"{name}/last.pt"), by_cam[a], by_cam[b]))
    else:
        if target is None:
            raise StyleError("domain-aware style transfer needs a target dataset (target=...)")
        jobs.append((StylePair("domain", None, None, len(pool), len(target.train), "domain/last.pt"), pool,
                     list(target.train)))
    models = StyleModels(mode, out, source.name, target.name if target is not None else None, [j[0] for j in jobs])
    with RunLock(out, what=f"style train ({mode})"):  # one owner for all the pairs (each CycleGAN nests in it)
        train_cyclegans([StyleJob(imgs_a, imgs_b, out / pair.name, pair.name) for pair, imgs_a, imgs_b in jobs], cfg,
                        resume=resume, overwrite=overwrite, progress=progress)
        save_config(cfg, out / "config.yaml")  # once every pair has accepted these settings
        models.save()
    return models
