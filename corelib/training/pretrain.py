"""Supervised source pre-training (docs/method.md §2.4-2.7), resumable.

Every epoch: ``iters_per_epoch`` optimiser steps (Adam, or TransReID's SGD: ``cfg.optimizer``) on
camera-aware P x K batches with the criterion of ``cfg.loss`` (the paper's: ``L = CE_ls(logits) +
soft batch-hard triplet(pooled feature)``), the schedule of ``cfg.schedule`` (the paper's warm-up
multi-step, or TransReID's cosine) stepped once per epoch, an evaluation on the source test split every
``eval_every`` epochs, and an atomic checkpoint of the full state (model, optimiser, scheduler,
epoch, best mAP, RNG states). ``resume=True`` continues from ``RUN_DIR/pretrain/last.pt`` and
ends, on the CPU with the same seed, with the same weights and metrics as a run that was never
stopped. The network is ``cfg.model.name`` around the backbone ``cfg.model.backbone``, both
registered by name (:mod:`corelib.models`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..config import PretrainCfg
from ..data.batches import build_loader
from ..data.dataset import ReIDDataset
from ..data.samplers import build_sampler, pids_per_batch
from ..data.transforms import build_transforms
from ..errors import ConfigError
from ..features import batch_viewids, split_has_views
from ..losses import build_criterion, require_views
from ..models import build_model, model_context
from ..progress import tqdm
from ..repro import seed_everything
from ..runtime import LoaderCycle, Runtime, StageRun, load_into, rng_state, set_rng_state
from ..runtime import distributed as D
from ..style import load_style_set
from .evaluate import evaluate_model, model_record
from .optim import build_optimizer


@dataclass
class PretrainResult:
    """Where the checkpoints are and what the run measured."""

    best_mAP: float
    best_epoch: int
    last: dict  # metrics of the last epoch
    history: list[dict]  # one record per epoch
    best_checkpoint: Path
    last_checkpoint: Path
    loss_terms: tuple[str, ...] = ("loss",)  # the criterion's logged terms, the total first


def style_training_split(style_set: Union[str, Path], source: ReIDDataset) -> list:
    """The training split of the enlarged set at ``style_set``, checked against ``source``.

    Raises:
        ConfigError: the set was built from another dataset, or its identities differ from the
            source's (the classifier would get the wrong number of classes).
    """
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
    overwrite: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Train the source network on ``source.train`` and evaluate it on ``source``'s query / gallery.

    Writes ``RUN_DIR/pretrain/{last,best}.pt``, ``RUN_DIR/pretrain/config.yaml`` (the resolved
    recipe) and one JSON line per epoch to ``RUN_DIR/pretrain/metrics.jsonl``. With
    ``cfg.style_set`` the training images are those of the enlarged set (real + style copies,
    :mod:`corelib.style`); evaluation stays on the source.

    With a ``target`` dataset, every evaluation also measures the direct transfer to the target's
    query / gallery (``target_mAP`` ...), and with ``cfg.target_bn_forward`` every step forwards
    one unlabelled target batch in train mode without a loss, so the BatchNorm statistics mix both
    domains as in the authors' code (docs/method.md §2.4).

    A folder that already holds a run is continued with ``resume``, set aside to
    ``pretrain.replaced-<time>`` and trained again with ``overwrite``, and otherwise refused
    (:class:`~corelib.errors.RunExistsError`); a second process on the same run directory is refused
    while this one runs (:class:`~corelib.ownership.RunLock`).

    Under ``torchrun`` every process loads its slice of each global P x K batch; the losses are
    computed on the features gathered from all processes (so the step is the one-process step with
    per-process BatchNorm); rank 0 evaluates and writes.
    """
    rt = Runtime.from_cfg(cfg.runtime)
    pids_per_batch(cfg.batch_size, cfg.num_instances)  # clear error for an impossible P x K
    criterion = build_criterion(cfg.loss, stage="pretrain").to(rt.device)
    train = style_training_split(cfg.style_set, source) if cfg.style_set else source.train
    has_views = split_has_views(train)
    require_views(criterion, train, f"the training split of {source.name}", has_views=has_views)
    # camera count / input size for networks that take them (TransReID's SIE and position grid)
    context = model_context(cfg.model.name, source, cfg.augment.height, cfg.augment.width)
    record_of_model = model_record(cfg.model.name, num_classes=source.num_train_pids, **cfg.model.model_args(), **context)
    with StageRun(Path(run_dir) / "pretrain", cfg, rt, stage="pretrain", resume=resume, overwrite=overwrite,
                  model_record=record_of_model, upstream={"style set": cfg.style_set} if cfg.style_set else None) as run:
        seed_everything(cfg.seed)
        progress = progress and rt.is_main
        model = build_model(cfg.model.name, weights=cfg.model.weights, **record_of_model["model_args"])
        rt.place(model)
        net = rt.wrap(model)
        if hasattr(criterion, "start_training"):  # parameters of its own, e.g. the centre loss's centres
            criterion.start_training(source.num_train_pids, model.feature_dim, rt.device)
        optimizer = build_optimizer(model.named_parameters(), cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cfg.lr_factor)
        sampler = build_sampler(cfg.sampler, train, num_instances=cfg.num_instances, seed=cfg.seed)
        aug = cfg.augment
        tf = build_transforms("pretrain", aug.height, aug.width, gray_p=aug.gray_p, lgpr_p=aug.lgpr_p, erase_p=aug.erase_p,
                              erase_mode=aug.erase_mode)
        loader = build_loader(train, tf, cfg.batch_size, batch_sampler=D.RankSliceBatchSampler(sampler, cfg.batch_size, rt.info, keyed=True),
                              num_workers=cfg.runtime.num_workers, seed=cfg.seed, pin_memory=rt.pin_memory)
        generators = [loader.generator]
        target_loader = target_sampler = None
        if target is not None and cfg.target_bn_forward:
            order = torch.Generator().manual_seed(cfg.seed + 1)
            target_sampler = torch.utils.data.RandomSampler(target.train, generator=order)
            target_loader = build_loader(target.train, tf, cfg.batch_size, num_workers=cfg.runtime.num_workers,
                                         seed=cfg.seed + 1, pin_memory=rt.pin_memory,
                                         batch_sampler=D.RankSliceBatchSampler(target_sampler, cfg.batch_size, rt.info))
            generators += [order, target_loader.generator]

        if run.resumed:
            load_into(model, run.state, run.last_path)
            optimizer.load_state_dict(run.state["optimizer"])
            scheduler.load_state_dict(run.state["scheduler"])
            criterion.load_own_state(run.state.get("criterion", {}))
            set_rng_state(run.state["rng"], generators)

        def evaluate() -> tuple[dict, float]:
            metrics = evaluate_model(model, source, aug.height, aug.width, device=rt.device,
                                     channels_last=cfg.runtime.channels_last)
            scores = {f"source_{k}": v for k, v in metrics.items() if isinstance(v, float)}
            scores["test_flip"] = metrics["test_flip"]  # the protocol the scores were measured on
            if target is not None:  # camera-blind: the source's camera embeddings know no target camera
                direct = evaluate_model(model, target, aug.height, aug.width, device=rt.device,
                                        channels_last=cfg.runtime.channels_last, cameras=False)
                scores.update({f"target_{k}": v for k, v in direct.items() if isinstance(v, float)})
            return scores, metrics["mAP"]

        run.begin()  # every check has passed: config.yaml and metrics.jsonl from here
        partial = run.partial  # a last.pt written mid-epoch on a stop request: continue at its step
        for epoch in range(run.start, cfg.epochs):
            t0 = time.perf_counter()
            net.train()
            batches = LoaderCycle(loader, sampler, base_epoch=epoch * 1000)
            # the target's BN batches: a fresh pass every epoch, wrapping around when it runs out
            target_batches = LoaderCycle(target_loader, target_sampler, 0) if target_loader is not None else None
            totals = dict.fromkeys(criterion.terms, 0.0)
            first = 0
            if partial is not None and partial["epoch"] == epoch:
                batches.restore(partial["batches"])
                if target_batches is not None:
                    target_batches.restore(partial["target_batches"])
                set_rng_state(run.state["rng"], generators)  # after the replays, which draw from them
                totals, first, partial = dict(partial["totals"]), int(partial["step"]), None
            bar = tqdm(range(first, cfg.iters_per_epoch), desc=f"pretrain {epoch + 1}/{cfg.epochs}",
                       disable=not progress, leave=False, initial=first, total=cfg.iters_per_epoch)
            for step in bar:
                batch = batches.next()
                images, pids, camids = rt.images(batch[0]), rt.gather_labels(batch[1]), batch[2].to(rt.device)
                # the views of the batch from its sample indices (-1 unknown; None: no view in the split)
                viewids = batch_viewids(train, batch[3], has_views=True).to(rt.device) if has_views else None
                with rt.autocast():
                    if target_batches is not None:  # BN statistics see the target domain too (no loss, no gradient)
                        target_batch = target_batches.next()
                        with torch.no_grad():  # camera-blind: the target's cameras are not the source's
                            model(rt.images(target_batch[0]))
                    outputs = net(images, camids) if viewids is None else net(images, camids, viewids)
                    if criterion.uses_views:
                        terms = criterion(outputs, pids, rt.gather, views=rt.gather_labels(viewids))
                    else:
                        terms = criterion(outputs, pids, rt.gather)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                criterion.own_step()
                for key in totals:
                    totals[key] += terms[key].item() / cfg.iters_per_epoch
                bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
                if step + 1 < cfg.iters_per_epoch and run.stop_requested():  # the job's time is up: save and stop
                    run.stop_mid_epoch(epoch, step + 1, model=model, last={
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": rng_state(generators), "criterion": criterion.own_state(),
                        "partial": {"totals": totals, "batches": batches.state(),
                                    "target_batches": target_batches.state() if target_batches is not None else None}})
            if rt.info.enabled:  # rank 0's BN running statistics are the ones kept (DDP's rule)
                D.broadcast_buffers(model, rt.info)
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **totals}
            scheduler.step()
            run.end_epoch(epoch, record, t0, model=model, evaluate=evaluate,
                          last={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "rng": rng_state(generators), "criterion": criterion.own_state()})
            run.stop_epoch(epoch, finished=True)
        return PretrainResult(run.best_score, run.best_epoch, run.log.last, run.log.history, run.best_path, run.last_path,
                              tuple(criterion.terms))
