"""Retrieval evaluation of a network or a saved checkpoint on a dataset's query / gallery.

Both training loops evaluate through :func:`evaluate_model`; ``corelib evaluate`` and the
notebooks open saved checkpoints with :func:`load_trained_model`, which rebuilds the network from
the registered model name and arguments stored in the checkpoint (so the caller need not know the
backbone, the input size or the fusion switches it was trained with). Checkpoints written before
the names were stored (a ResNet ``depth`` and a flat config) still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch
from torch import nn

from ..config import FinetuneCfg, PretrainCfg
from ..data.dataset import ReIDDataset
from ..errors import InvalidInputError
from ..evaluation import evaluate_distmat, evaluate_ranking, rerank
from ..features import extract_split, uses_test_flip
from ..models import CameraBlind, build_model
from ..published import published_beside
from ..runtime import load_checkpoint


def evaluate_model(model: nn.Module, dataset: ReIDDataset, height: int, width: int, *,
                   device: Union[str, torch.device] = "cpu", channels_last: bool = True,
                   rerank_k: bool = False, batch_size: int = 128, cameras: bool = True) -> dict:
    """mAP / CMC / mINP of ``model``'s eval-mode descriptor on ``dataset``'s query / gallery, on the
    network's published test protocol (flip-averaged, BMFN, or not: :func:`corelib.features.uses_test_flip`).

    Args:
        model: a network whose eval mode returns descriptors (:class:`SourceNet`, the teacher,
            :class:`MeanTeacher`).
        height, width: the test input size (the training size).
        rerank_k: k-reciprocal re-ranking (the paper reports without it).
        cameras: hand the camera and view ids to the network (camera / view embeddings, SIE; the
            views where the dataset has them); False evaluates it blind to both
            (:class:`~corelib.models.CameraBlind`): the direct transfer of a network to a domain whose
            cameras it was not trained on. The ranking protocol uses the cameras either way.

    Returns:
        :meth:`RankingResult.to_dict` (fractions in [0, 1]) and ``test_flip``, the protocol used. A dataset without cameras (VehicleID)
        is ranked without the same-camera rule on the gallery draw its loader made; the 10-draw
        protocol is :func:`corelib.evaluate_vehicleid`.
    """
    flip = uses_test_flip(model)
    if not cameras:
        model = CameraBlind(model)
    q = extract_split(model, dataset.query, height, width, device=device, batch_size=batch_size,
                      channels_last=channels_last, flip=flip)
    g = extract_split(model, dataset.gallery, height, width, device=device, batch_size=batch_size,
                      channels_last=channels_last, flip=flip)
    protocol = dataset.protocol if dataset.has_cameras else "vehicleid"
    cams = (q.camids, g.camids) if dataset.has_cameras else (None, None)
    if rerank_k:
        dist = rerank(q.features, g.features, device=device)
        scores = evaluate_distmat(dist, q.pids, g.pids, *cams, protocol=protocol).to_dict()
    else:
        scores = evaluate_ranking(q.features, g.features, q.pids, g.pids, *cams, protocol=protocol).to_dict()
    return {**scores, "test_flip": flip}


class TrainedModel(NamedTuple):
    """A network rebuilt from a checkpoint, with what is needed to evaluate it."""

    model: nn.Module  # eval-mode descriptor network (SourceNet, or the MeanTeacher's teacher)
    stage: str  # "pretrain" or "finetune"
    cfg: dict  # the training configuration stored in the checkpoint (grouped: cfg["augment"]["height"])
    epoch: Optional[int]  # 1-based epoch the weights are from (None: a converted file that does not say)
    converted: Optional[dict] = None  # what corelib convert recorded (format, file, method, task ...), None for ours

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the network was trained at (and is tested at)."""
        return int(self.cfg["augment"]["height"]), int(self.cfg["augment"]["width"])

    @property
    def channels_last(self) -> bool:
        return bool(self.cfg.get("runtime", {}).get("channels_last", True))


def model_record(name: str, **args) -> dict:
    """The entries of a checkpoint that let :func:`load_trained_model` rebuild its network."""
    return {"model_name": name, "model_args": args}


def _stage_cfg(stage: str, cfg: dict) -> dict:
    """The config of a checkpoint with the defaults filled in (fields added since it was written)."""
    cls = PretrainCfg if stage == "pretrain" else FinetuneCfg
    return cls.from_dict(cfg).to_dict()


def load_trained_model(path: Union[str, Path], *, device: Union[str, torch.device] = "cpu") -> TrainedModel:
    """Rebuild the network a ``pretrain`` or ``finetune`` checkpoint was written from.

    Raises:
        ValueError: the file is not a checkpoint of either loop (it names what it found).
        CheckpointError: a checkpoint of another format version (re-run the stage).
    """
    state = load_checkpoint(path)
    cfg, stage = state.get("cfg"), state.get("stage")
    if not isinstance(cfg, dict) or stage not in ("pretrain", "finetune") or "model" not in state:
        raise InvalidInputError(f"{path} is not a corelib pretrain / finetune checkpoint (keys: {sorted(state)}); "
                         f"pass RUN_DIR/pretrain/best.pt or RUN_DIR/finetune/best.pt")
    cfg = _stage_cfg(stage, cfg)
    model = build_model(state["model_name"], weights=None, **state["model_args"])
    model.load_state_dict(state["model"])
    epoch = state.get("epoch")  # None: a converted file that does not say (corelib convert)
    return TrainedModel(model.to(device).eval(), stage, cfg, None if epoch is None else int(epoch) + 1,
                        state.get("converted"))


def evaluate_checkpoint(path: Union[str, Path], dataset: ReIDDataset, *, device: Union[str, torch.device] = "cpu",
                        rerank_k: bool = False) -> dict:
    """:func:`evaluate_model` of the network saved at ``path``, at the input size it was trained with.

    ``published`` lists the rows of :mod:`corelib.published` to put beside the scores: those of the
    method and task a converted checkpoint records (``corelib convert``; the paper's row, and a repository's
    row of its released models when the file is one of those configurations) when ``dataset`` is the
    task's tested dataset (:func:`corelib.published.published_beside`); empty otherwise."""
    trained = load_trained_model(path, device=device)
    metrics = evaluate_model(trained.model, dataset, *trained.input_size, device=device,
                             channels_last=trained.channels_last, rerank_k=rerank_k)
    record = trained.converted or {}
    names = [(record.get("method"), record.get("published_backbone", ""))] + [tuple(p) for p in
                                                                            record.get("published_also", [])]
    published = [row for method, backbone in names
                 for row in published_beside(method, record.get("task"), dataset.name, backbone=backbone)]
    return {"stage": trained.stage, "epoch": trained.epoch, **metrics,
            "published": [dict(method=r.method, task=r.task, backbone=r.backbone, source=r.source, note=r.note,
                               **r.metrics) for r in published]}
