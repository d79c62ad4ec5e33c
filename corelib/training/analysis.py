"""The network and the features the analysis chapters (04 k-means seeding, 05 Grad-CAM, 06 UMAP) study.

:func:`analysis_model` takes the newest network of an embedded pair from the run directory: the
fine-tuned teacher written by chapter 03, else the source network of chapter 02; a chapter run on
its own (nothing in ``RUN_DIR``) trains a small source network first and says so.
:func:`analysis_features` extracts BMFN descriptors of a split with it, optionally centred per
camera as the embedded fine-tuning recipe clusters them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from ..data.datasets import ReIDDataset
from ..data.loading import build_loader
from ..data.transforms import build_transforms
from ..features import Features, extract_features
from .evaluate import TrainedModel, load_trained_model


def analysis_model(run_dir: Union[str, Path], pair: str, source: ReIDDataset, target: ReIDDataset, *,
                   smoke: bool = False, seed: int = 1, device: Union[str, torch.device] = "cpu") -> TrainedModel:
    """``RUN_DIR/<pair>/finetune/best.pt`` (chapter 03), else ``RUN_DIR/<pair>/pretrain/best.pt``
    (chapter 02); when neither exists, a source network trained now with
    ``PretrainCfg.embedded(pair, smoke=True)`` into ``RUN_DIR/<pair>/quick/`` (seconds on a CPU)."""
    from ..config import PretrainCfg
    from .pretrain import pretrain

    base = Path(run_dir) / pair
    for stage in ("finetune", "pretrain"):
        path = base / stage / "best.pt"
        if path.is_file():
            print(f"{pair}: analysing {path} ({stage})")
            return load_trained_model(path, device=device)
    print(f"{pair}: no checkpoint of chapters 02/03 in {base}; training a small source network "
          f"(run 02_pretraining and 03_finetuning with this RUN_DIR for the real ones)")
    cfg = PretrainCfg.embedded(pair, smoke=True, seed=seed, device=str(device))
    result = pretrain(cfg, source, base / "quick", target=target, resume=True, progress=False)
    return load_trained_model(result.best_checkpoint, device=device)


def analysis_features(trained: TrainedModel, dataset: ReIDDataset, *, split: str = "train",
                      camera_centred: bool = False, device: Union[str, torch.device] = "cpu") -> Features:
    """BMFN retrieval descriptors of ``dataset``'s ``split`` at the model's training size;
    ``camera_centred`` subtracts each camera's mean (as ``FinetuneCfg.cluster_camera_norm`` does)."""
    from .finetune import camera_centred as centre

    cfg = trained.cfg
    tf = build_transforms("test", cfg["height"], cfg["width"])
    samples = dataset.split(split)
    feats = extract_features(trained.model, build_loader(samples, tf, 128), device=device)
    if camera_centred:
        feats = Features(centre(feats.features, [s.camid for s in samples]), feats.pids, feats.camids)
    return feats
