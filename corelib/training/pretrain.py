"""Supervised source pre-training (method.md §2.4-2.7), resumable.

Every epoch: ``iters_per_epoch`` Adam steps on camera-aware P x K batches with
``L = CE_ls(logits) + soft batch-hard triplet(pooled feature)``, the warm-up multi-step schedule
stepped once per epoch, an evaluation on the source test split every ``eval_every`` epochs, and an
atomic checkpoint of the full state (model, optimiser, scheduler, epoch, best mAP, RNG states).
``resume=True`` continues from ``RUN_DIR/pretrain/last.pt`` and ends, on the CPU with the same seed,
with the same weights and metrics as a run that was never stopped.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..config import PretrainCfg
from ..data.datasets import ReIDDataset
from ..data.loading import build_loader
from ..data.samplers import CameraAwareIdentitySampler, pids_per_batch
from ..data.transforms import build_transforms
from ..evaluation import evaluate_ranking
from ..features import extract_features
from ..losses import CrossEntropyLabelSmooth, SoftTripletLoss
from ..models import SourceNet
from ..repro import resolve_device, seed_everything
from .checkpoint import load_checkpoint, save_checkpoint


@dataclass
class PretrainResult:
    """Where the checkpoints are and what the run measured."""

    best_mAP: float
    best_epoch: int
    last: dict  # metrics of the last epoch
    history: list[dict]  # one record per epoch
    best_checkpoint: Path
    last_checkpoint: Path


def _rng_state(loader) -> dict:
    # only tensors and plain values: checkpoints are read back with weights_only=True
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
        "loader": loader.generator.get_state() if loader.generator is not None else None,
    }


def _set_rng_state(state: dict, loader) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    if state.get("loader") is not None and loader.generator is not None:
        loader.generator.set_state(state["loader"])


def evaluate_source(model: torch.nn.Module, dataset: ReIDDataset, cfg: PretrainCfg, device) -> dict:
    """mAP / CMC of ``model`` on the dataset's query and gallery (BMFN features)."""
    tf = build_transforms("test", cfg.height, cfg.width)
    q = extract_features(model, build_loader(dataset.query, tf, 128), device=device)
    g = extract_features(model, build_loader(dataset.gallery, tf, 128), device=device)
    protocol = dataset.protocol if dataset.has_cameras else "vehicleid"
    cams = (q.camids, g.camids) if dataset.has_cameras else (None, None)
    return evaluate_ranking(q.features, g.features, q.pids, g.pids, *cams, protocol=protocol).to_dict()


def pretrain(
    cfg: PretrainCfg,
    source: ReIDDataset,
    run_dir: Union[str, Path],
    *,
    resume: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Train a :class:`SourceNet` on ``source.train`` and evaluate on its query / gallery.

    Writes ``RUN_DIR/pretrain/{last,best}.pt`` and one JSON line per epoch to
    ``RUN_DIR/pretrain/metrics.jsonl``.
    """
    from tqdm.auto import tqdm

    out = Path(run_dir) / "pretrain"
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    pids_per_batch(cfg.batch_size, cfg.num_instances)  # clear error for an impossible P x K
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    weights = None if cfg.weights in ("none", "", None) else cfg.weights
    model = SourceNet(cfg.depth, source.num_train_pids, weights=weights).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cfg.lr_factor)
    sampler = CameraAwareIdentitySampler(source.train, num_instances=cfg.num_instances, seed=cfg.seed)
    tf = build_transforms("pretrain", cfg.height, cfg.width, gray_p=cfg.gray_p, lgpr_p=cfg.lgpr_p)
    loader = build_loader(source.train, tf, cfg.batch_size, sampler=sampler, drop_last=True,
                          num_workers=cfg.num_workers, seed=cfg.seed, pin_memory=device.type == "cuda")
    ce, triplet = CrossEntropyLabelSmooth(cfg.label_smooth), SoftTripletLoss()

    start, best_map, best_epoch, history = 0, -1.0, -1, []
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, model=model, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best_map, best_epoch = state["epoch"] + 1, state["best_mAP"], state["best_epoch"]
        _set_rng_state(state["rng"], loader)
        history = [json.loads(line) for line in log_path.read_text().splitlines()][:start] if log_path.is_file() else []
    log_path.write_text("".join(json.dumps(h) + "\n" for h in history))

    for epoch in range(start, cfg.epochs):
        model.train()
        wrap, it = 0, None
        totals = {"loss": 0.0, "ce": 0.0, "triplet": 0.0}
        bar = tqdm(range(cfg.iters_per_epoch), desc=f"pretrain {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for _ in bar:
            batch = next(it, None) if it is not None else None
            while batch is None:  # the sampler's epochs are shorter than ours: wrap around
                sampler.set_epoch(epoch * 1000 + wrap)
                wrap += 1
                it = iter(loader)
                batch = next(it, None)
            images, pids = batch[0].to(device, non_blocking=True), batch[1].to(device)
            outputs = model(images)
            l_ce, l_tri = ce(outputs.logits, pids), triplet(outputs.features, pids)
            loss = l_ce + l_tri
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            values = {"loss": loss.item(), "ce": l_ce.item(), "triplet": l_tri.item()}
            for key, v in values.items():
                totals[key] += v / cfg.iters_per_epoch
            bar.set_postfix(loss=f"{values['loss']:.3f}")
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **totals}
        scheduler.step()
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            metrics = evaluate_source(model, source, cfg, device)
            record.update({f"source_{k}": v for k, v in metrics.items() if isinstance(v, float)})
            if metrics["mAP"] > best_map:
                best_map, best_epoch = metrics["mAP"], epoch + 1
                save_checkpoint({"model": model.state_dict(), "epoch": epoch, "depth": cfg.depth,
                                 "num_classes": source.num_train_pids, "mAP": best_map}, best_path)
        history.append(record)
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        save_checkpoint({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "best_mAP": best_map, "best_epoch": best_epoch, "rng": _rng_state(loader),
            "depth": cfg.depth, "num_classes": source.num_train_pids,
        }, last_path)
    return PretrainResult(best_map, best_epoch, history[-1] if history else {}, history, best_path, last_path)
