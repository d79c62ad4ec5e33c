"""The network and the features the analysis chapters (04 k-means seeding, 05 Grad-CAM, 06 UMAP) study.

:func:`analysis_model` takes the newest network of a pair (embedded or real) from the run directory: the
fine-tuned teacher written by chapter 03, else the source network of chapter 02; a chapter run on
its own (nothing in ``RUN_DIR``) trains a small source network first and says so.
:func:`analysis_features` extracts BMFN descriptors of a split with it, optionally centred per
camera as the embedded fine-tuning recipe clusters them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..data.datasets import ReIDDataset
from ..features import Features, extract_split
from .evaluate import TrainedModel, load_trained_model


def _as_pair(pair):
    """An :class:`~corelib.pairs.ExperimentPair` from a pair or an embedded pair's name."""
    from ..pairs import ExperimentPair, experiment_pairs

    return pair if isinstance(pair, ExperimentPair) else experiment_pairs([pair])[pair]


def _quick_pretrain(base: Path, pair, source: ReIDDataset, target: ReIDDataset, seed: int, device) -> Path:
    from .pretrain import pretrain

    verb = "using the small source network trained earlier in" if (base / "quick" / "pretrain" / "best.pt").is_file() \
        else "training a small source network into"
    print(f"{base.name}: no checkpoint of chapter 02 in {base}; {verb} {base / 'quick'} "
          f"(run 02_pretraining and 03_finetuning with this RUN_DIR for the real ones)")
    cfg = pair.pretrain_cfg(smoke=True, seed=seed, device=str(device))
    return Path(pretrain(cfg, source, base / "quick", target=target, resume=True, progress=False).best_checkpoint)


def _quick_finetune(base: Path, pair, target: ReIDDataset, source_checkpoint: Path, seed: int, device) -> Path:
    import shutil

    from .finetune import finetune

    out = base / "quick"
    best = out / "finetune" / "best.pt"
    if best.is_file() and best.stat().st_mtime < source_checkpoint.stat().st_mtime:
        shutil.rmtree(out / "finetune")  # adapted from an older source network: stale
    verb = "using the brief adaptation made earlier of" if best.is_file() else "adapting briefly"
    print(f"{base.name}: no checkpoint of chapter 03 in {base}; {verb} {source_checkpoint} "
          f"(run 03_finetuning with this RUN_DIR for the real one)")
    cfg = pair.finetune_cfg(smoke=True, seed=seed, device=str(device))
    result = finetune(cfg, target, out, source_checkpoint=source_checkpoint, resume=True, progress=False)
    return Path(result.best_checkpoint)


def analysis_model(run_dir: Union[str, Path], pair, source: ReIDDataset, target: ReIDDataset, *,
                   smoke: bool = False, seed: int = 1, device: Union[str, torch.device] = "cpu") -> TrainedModel:
    """``RUN_DIR/<pair>/finetune/best.pt`` (chapter 03), else ``RUN_DIR/<pair>/pretrain/best.pt``
    (chapter 02); when neither exists, a source network trained now with the pair's smoke recipe
    (``pair.pretrain_cfg(smoke=True)``) into ``RUN_DIR/<pair>/quick/`` (seconds on a CPU).

    ``pair`` is an :class:`~corelib.pairs.ExperimentPair` or the name of an embedded pair.
    """
    pair = _as_pair(pair)
    base = Path(run_dir) / pair.name
    for stage in ("finetune", "pretrain"):
        path = base / stage / "best.pt"
        if path.is_file():
            print(f"{pair.name}: analysing {path} ({stage})")
            return load_trained_model(path, device=device)
    return load_trained_model(_quick_pretrain(base, pair, source, target, seed, device), device=device)


def analysis_models(run_dir: Union[str, Path], pair, source: ReIDDataset, target: ReIDDataset, *,
                    smoke: bool = False, seed: int = 1,
                    device: Union[str, torch.device] = "cpu") -> dict[str, TrainedModel]:
    """The network before and after adaptation: ``{"before": source network, "after": teacher}``.

    ``before`` is ``RUN_DIR/<pair>/pretrain/best.pt`` (chapter 02) and ``after``
    ``RUN_DIR/<pair>/finetune/best.pt`` (chapter 03). A missing stage is trained now with its smoke
    recipe into ``RUN_DIR/<pair>/quick/`` (tens of seconds on a CPU; the chapter says so), the
    adaptation starting from ``before``; a quick adaptation older than its source network is redone.
    ``pair`` is an :class:`~corelib.pairs.ExperimentPair` or the name of an embedded pair.
    """
    pair = _as_pair(pair)
    base = Path(run_dir) / pair.name
    before = base / "pretrain" / "best.pt"
    if not before.is_file():
        before = _quick_pretrain(base, pair, source, target, seed, device)
    after = base / "finetune" / "best.pt"
    if not after.is_file():
        after = _quick_finetune(base, pair, target, before, seed, device)
    print(f"{pair.name}: before adaptation {before}; after adaptation {after}")
    return {"before": load_trained_model(before, device=device), "after": load_trained_model(after, device=device)}


def analysis_features(trained: TrainedModel, dataset: ReIDDataset, *, split: str = "train",
                      camera_centred: bool = False, max_images: Optional[int] = None, seed: int = 0,
                      device: Union[str, torch.device] = "cpu") -> Features:
    """BMFN retrieval descriptors of ``dataset``'s ``split`` at the model's training size.

    Args:
        camera_centred: subtract each camera's mean (``cluster.normalize="camera_mean"`` of fine-tuning).
        max_images: at most this many images, a seeded random subset kept in split order.
        seed: the subset's seed.
    """
    from ..cluster import camera_centred as centre

    samples = dataset.split(split)
    if max_images is not None and max_images < len(samples):
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), max_images, replace=False))
        samples = [samples[i] for i in keep]
    feats = extract_split(trained.model, samples, *trained.input_size, device=device)
    if camera_centred:
        feats = Features(centre(feats.features, [s.camid for s in samples]), feats.pids, feats.camids)
    return feats
