"""Supervised source pre-training (method.md §2.4-2.7), resumable.

Every epoch: ``iters_per_epoch`` Adam steps on camera-aware P x K batches with
``L = CE_ls(logits) + soft batch-hard triplet(pooled feature)``, the warm-up multi-step schedule
stepped once per epoch, an evaluation on the source test split every ``eval_every`` epochs, and an
atomic checkpoint of the full state (model, optimiser, scheduler, epoch, best mAP, RNG states).
``resume=True`` continues from ``RUN_DIR/pretrain/last.pt`` and ends, on the CPU with the same seed,
with the same weights and metrics as a run that was never stopped.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..config import PretrainCfg
from ..data.datasets import ReIDDataset
from ..data.loading import build_loader
from ..data.samplers import CameraAwareIdentitySampler, pids_per_batch
from ..data.transforms import build_transforms
from ..losses import CrossEntropyLabelSmooth, SoftTripletLoss
from ..models import SourceNet
from ..repro import resolve_device, seed_everything
from . import distributed as D
from .checkpoint import EpochLog, check_resume, evaluation_due, load_checkpoint, load_into, save_checkpoint
from .evaluate import evaluate_model


@dataclass
class PretrainResult:
    """Where the checkpoints are and what the run measured."""

    best_mAP: float
    best_epoch: int
    last: dict  # metrics of the last epoch
    history: list[dict]  # one record per epoch
    best_checkpoint: Path
    last_checkpoint: Path


class LoaderCycle:
    """Endless iteration over a loader whose sampler is re-seeded at every wrap.

    The training loops take a fixed number of steps per epoch, longer or shorter than one pass of
    the identity sampler; pass ``w`` of epoch ``e`` draws with sampler epoch ``base_epoch + w``.
    """

    def __init__(self, loader, sampler: CameraAwareIdentitySampler, base_epoch: int) -> None:
        self.loader, self.sampler, self.base, self.wrap, self.it = loader, sampler, base_epoch, 0, None

    def next(self):
        batch = next(self.it, None) if self.it is not None else None
        while batch is None:
            self.sampler.set_epoch(self.base + self.wrap)
            self.wrap += 1
            self.it = iter(self.loader)
            batch = next(self.it, None)
        return batch


def _rng_state(generators: Sequence[Optional[torch.Generator]] = ()) -> dict:
    """Global RNG states plus those of the loaders' / samplers' own generators."""
    # only tensors and plain values: checkpoints are read back with weights_only=True
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
        "generators": [g.get_state() if g is not None else None for g in generators],
    }


def _set_rng_state(state: dict, generators: Sequence[Optional[torch.Generator]] = ()) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    for g, saved in zip(generators, state.get("generators", [])):
        if g is not None and saved is not None:
            g.set_state(saved)


def autocast(precision: str, device: torch.device):
    """bf16 autocast for ``precision`` "bf16", or "auto" on CUDA; a no-op context for "fp32"."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def training_device(name: str, info: D.DistInfo) -> torch.device:
    """``resolve_device(name)``, or ``cuda:LOCAL_RANK`` for a CUDA process under torchrun."""
    device = resolve_device(name)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def style_training_split(style_set: Union[str, Path], source: ReIDDataset) -> list:
    """The training split of the enlarged set at ``style_set``, checked against ``source``.

    Raises:
        ConfigError: the set was built from another dataset, or its identities differ from the
            source's (the classifier would get the wrong number of classes).
    """
    from ..errors import ConfigError
    from ..style import load_style_set

    try:
        enlarged = load_style_set(style_set)
    except FileNotFoundError as e:  # MissingStageError
        raise ConfigError(f"PretrainCfg.style_set: {e}") from None
    stamp = enlarged.extras["style_set"]
    if stamp["source"] != source.name or enlarged.num_train_pids != source.num_train_pids:
        raise ConfigError(f"PretrainCfg.style_set={style_set} was built from {stamp['source']} "
                          f"({enlarged.num_train_pids} identities), but the source is {source.name} "
                          f"({source.num_train_pids}); point style_set at the source's own enlarged set or set it to ''")
    return enlarged.train


def pretrain(
    cfg: PretrainCfg,
    source: ReIDDataset,
    run_dir: Union[str, Path],
    *,
    target: Optional[ReIDDataset] = None,
    resume: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Train :class:`SourceNet` on ``source.train`` and evaluate it on ``source``'s query / gallery.

    Writes ``RUN_DIR/pretrain/{last,best}.pt`` and one JSON line per epoch to
    ``RUN_DIR/pretrain/metrics.jsonl``. With ``cfg.style_set`` the training images are those of the
    enlarged set (real + style copies, :mod:`corelib.style`); evaluation stays on the source.

    With a ``target`` dataset, every evaluation also measures the direct transfer to the target's
    query / gallery (``target_mAP`` ...), and with ``cfg.target_bn_forward`` every step forwards
    one unlabelled target batch in train mode without a loss, so the BatchNorm statistics mix both
    domains as in the authors' code (method.md §2.4).

    Under ``torchrun`` every process loads its slice of each global P x K batch; the losses are
    computed on the features gathered from all processes (so the step is the one-process step with
    per-process BatchNorm); rank 0 evaluates and writes.
    """
    from tqdm.auto import tqdm

    info = D.init_distributed(cfg.dist_backend)
    out = Path(run_dir) / "pretrain"
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    pids_per_batch(cfg.batch_size, cfg.num_instances)  # clear error for an impossible P x K
    seed_everything(cfg.seed)
    device = training_device(cfg.device, info)
    progress = progress and info.is_main
    train = style_training_split(cfg.style_set, source) if cfg.style_set else source.train
    model = SourceNet(cfg.depth, source.num_train_pids, weights=cfg.weights).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cfg.lr_factor)
    sampler = CameraAwareIdentitySampler(train, num_instances=cfg.num_instances, seed=cfg.seed)
    tf = build_transforms("pretrain", cfg.height, cfg.width, gray_p=cfg.gray_p, lgpr_p=cfg.lgpr_p)
    pin = device.type == "cuda"
    loader = build_loader(train, tf, cfg.batch_size, batch_sampler=D.RankSliceBatchSampler(sampler, cfg.batch_size, info, keyed=True),
                          num_workers=cfg.num_workers, seed=cfg.seed, pin_memory=pin)
    generators = [loader.generator]
    target_loader = None
    if target is not None and cfg.target_bn_forward:
        order = torch.Generator().manual_seed(cfg.seed + 1)
        target_sampler = torch.utils.data.RandomSampler(target.train, generator=order)
        target_loader = build_loader(target.train, tf, cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.seed + 1,
                                     batch_sampler=D.RankSliceBatchSampler(target_sampler, cfg.batch_size, info),
                                     pin_memory=pin)
        generators += [order, target_loader.generator]
    ce, triplet = CrossEntropyLabelSmooth(cfg.label_smooth), SoftTripletLoss()

    start, best_map, best_epoch = 0, -1.0, -1
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, map_location=device)
        check_resume(state.get("cfg"), cfg.to_dict(), last_path)  # before the weights: another recipe need not even fit them
        load_into(model, state, last_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best_map, best_epoch = state["epoch"] + 1, state["best_mAP"], state["best_epoch"]
        _set_rng_state(state["rng"], generators)
    log = EpochLog(log_path, keep=start, write=info.is_main)

    def to_device(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else images

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        batches = LoaderCycle(loader, sampler, base_epoch=epoch * 1000)
        target_it = iter(target_loader) if target_loader is not None else None
        totals = {"loss": 0.0, "ce": 0.0, "triplet": 0.0}
        bar = tqdm(range(cfg.iters_per_epoch), desc=f"pretrain {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for _ in bar:
            batch = batches.next()
            images, pids = to_device(batch[0]), D.gather_tensor(batch[1].to(device), info)
            with autocast(cfg.precision, device):
                if target_it is not None:  # BN statistics see the target domain too (no loss, no gradient)
                    target_batch = next(target_it, None)
                    if target_batch is None:
                        target_it = iter(target_loader)
                        target_batch = next(target_it)
                    with torch.no_grad():
                        model(to_device(target_batch[0]))
                outputs = net(images)
                features = D.gather_with_grad(outputs.features.float(), info)
                logits = D.gather_with_grad(outputs.logits.float(), info)
                l_ce, l_tri = ce(logits, pids), triplet(features, pids)
                loss = l_ce + l_tri
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            values = {"loss": loss.item(), "ce": l_ce.item(), "triplet": l_tri.item()}
            for key, v in values.items():
                totals[key] += v / cfg.iters_per_epoch
            bar.set_postfix(loss=f"{values['loss']:.3f}")
        if info.enabled:  # rank 0's BN running statistics are the ones kept (DDP's rule)
            D.broadcast_buffers(model, info)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **totals}
        scheduler.step()
        if info.is_main:
            if evaluation_due(epoch, cfg.eval_every, cfg.epochs):
                metrics = evaluate_model(model, source, cfg.height, cfg.width, device=device,
                                         channels_last=cfg.channels_last)
                record.update({f"source_{k}": v for k, v in metrics.items() if isinstance(v, float)})
                if target is not None:
                    direct = evaluate_model(model, target, cfg.height, cfg.width, device=device,
                                            channels_last=cfg.channels_last)
                    record.update({f"target_{k}": v for k, v in direct.items() if isinstance(v, float)})
                if metrics["mAP"] > best_map:
                    best_map, best_epoch = metrics["mAP"], epoch + 1
                    save_checkpoint({"stage": "pretrain", "cfg": cfg.to_dict(), "model": model.state_dict(),
                                     "epoch": epoch, "depth": cfg.depth, "num_classes": source.num_train_pids,
                                     "mAP": best_map}, best_path)
            record["seconds"] = time.perf_counter() - t0
            log.append(record)
            save_checkpoint({
                "stage": "pretrain", "cfg": cfg.to_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                "best_mAP": best_map, "best_epoch": best_epoch, "rng": _rng_state(generators),
                "depth": cfg.depth, "num_classes": source.num_train_pids,
            }, last_path)
        D.barrier(info)
    return PretrainResult(best_map, best_epoch, log.last, log.history, best_path, last_path)
