"""Retrieval evaluation of a network or a saved checkpoint on a dataset's query / gallery.

Both training loops evaluate through :func:`evaluate_model`; ``corelib evaluate`` and the
notebooks open saved checkpoints with :func:`load_trained_model`, which rebuilds the network
from the configuration stored in the checkpoint (so the caller need not know the depth, the
input size or the fusion switches it was trained with).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Union

import torch
from torch import nn

from ..data.datasets import ReIDDataset
from ..data.loading import build_loader
from ..data.transforms import build_transforms
from ..evaluation import evaluate_distmat, evaluate_ranking, rerank
from ..features import extract_features
from .checkpoint import load_checkpoint


def evaluate_model(model: nn.Module, dataset: ReIDDataset, height: int, width: int, *,
                   device: Union[str, torch.device] = "cpu", channels_last: bool = True,
                   rerank_k: bool = False, batch_size: int = 128) -> dict:
    """mAP / CMC / mINP of ``model``'s eval-mode descriptor (BMFN) on ``dataset``'s query / gallery.

    Args:
        model: a network whose eval mode returns descriptors (:class:`SourceNet`, the teacher,
            :class:`MeanTeacher`).
        height, width: the test input size (the training size).
        rerank_k: k-reciprocal re-ranking (the paper reports without it).

    Returns:
        :meth:`RankingResult.to_dict` (fractions in [0, 1]). A dataset without cameras (VehicleID)
        is ranked without the same-camera rule on the gallery draw its loader made; the 10-draw
        protocol is :func:`corelib.evaluate_vehicleid`.
    """
    tf = build_transforms("test", height, width)
    q = extract_features(model, build_loader(dataset.query, tf, batch_size), device=device,
                         channels_last=channels_last)
    g = extract_features(model, build_loader(dataset.gallery, tf, batch_size), device=device,
                         channels_last=channels_last)
    protocol = dataset.protocol if dataset.has_cameras else "vehicleid"
    cams = (q.camids, g.camids) if dataset.has_cameras else (None, None)
    if rerank_k:
        dist = rerank(q.features, g.features, device=device)
        return evaluate_distmat(dist, q.pids, g.pids, *cams, protocol=protocol).to_dict()
    return evaluate_ranking(q.features, g.features, q.pids, g.pids, *cams, protocol=protocol).to_dict()


class TrainedModel(NamedTuple):
    """A network rebuilt from a checkpoint, with what is needed to evaluate it."""

    model: nn.Module  # eval-mode descriptor network (SourceNet, or the MeanTeacher's teacher)
    stage: str  # "pretrain" or "finetune"
    cfg: dict  # the training configuration stored in the checkpoint
    epoch: int  # 1-based epoch the weights are from


def load_trained_model(path: Union[str, Path], *, device: Union[str, torch.device] = "cpu") -> TrainedModel:
    """Rebuild the network a ``pretrain`` or ``finetune`` checkpoint was written from.

    Raises:
        ValueError: the file is not a checkpoint of either loop (it names what it found).
    """
    from ..models import MeanTeacher, SourceNet, build_model

    state = load_checkpoint(path)
    cfg, stage = state.get("cfg"), state.get("stage")
    if not isinstance(cfg, dict) or stage not in ("pretrain", "finetune") or "model" not in state:
        raise ValueError(f"{path} is not a corelib pretrain / finetune checkpoint (keys: {sorted(state)}); "
                         f"pass RUN_DIR/pretrain/best.pt or RUN_DIR/finetune/best.pt")
    model: nn.Module
    if stage == "pretrain":
        model = SourceNet(cfg["depth"], state["num_classes"], weights=None)
        model.load_state_dict(state["model"])
    else:
        mt: MeanTeacher = build_model(f"mean_teacher_resnet{cfg['depth']}", num_classes=cfg["num_clusters"],
                                      weights=None, ecab=cfg["ecab"], pool=cfg["pool"], fusion=cfg["fusion"],
                                      alpha=cfg["alpha"])
        mt.load_state_dict(state["model"])
        model = mt
    return TrainedModel(model.to(device).eval(), stage, cfg, int(state["epoch"]) + 1)


def evaluate_checkpoint(path: Union[str, Path], dataset: ReIDDataset, *, device: Union[str, torch.device] = "cpu",
                        rerank_k: bool = False) -> dict:
    """:func:`evaluate_model` of the network saved at ``path``, at the input size it was trained with."""
    trained = load_trained_model(path, device=device)
    metrics = evaluate_model(trained.model, dataset, trained.cfg["height"], trained.cfg["width"], device=device,
                             channels_last=bool(trained.cfg.get("channels_last", True)), rerank_k=rerank_k)
    return {"stage": trained.stage, "epoch": trained.epoch, **metrics}
