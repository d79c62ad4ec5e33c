"""Mean-teacher fine-tuning on the unlabelled target with multi-level clustering (method.md §3).

Every epoch (method.md §3.12):

1. BMFN features of every target training image from Ensemble Fusion(++) (the teacher's map, the
   student's ECAB vectors): theta_g, theta_top, theta_bot, each L2-normalised separately;
2. three k-means runs with the same k (greedy k-means++ seeding) -> y_g, y_top, y_bot;
3. student and teacher classifiers <- the L2-normalised centroids of the global clustering;
4. three pseudo-labelled camera-aware P x K loaders and a fresh Adam;
5. ``iters_per_epoch`` steps of
   ``L = CE_ls(W f_g(B_g), y_g) + tri(f_g(B_g)) + 0.5 tri(f_top(B_top)) + 0.5 tri(f_bot(B_bot))``
   on the student, each followed by the EMA update of the teacher;
6. the teacher's descriptor evaluated on the target query / gallery; pseudo-label quality against
   the hidden identities logged whenever the target has them.

Before the first epoch the source network itself is evaluated on the target: the direct-transfer
baseline. State is checkpointed atomically after every epoch (``RUN_DIR/finetune/last.pt``);
``resume=True`` continues and, on the CPU with the same seed, ends with the same metrics as a run
that was never stopped. Under ``torchrun`` training and feature extraction are split across the
processes (see :mod:`corelib.training.distributed`); clustering runs on rank 0.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cluster import camera_mixing, kmeans, minibatch_kmeans, pseudo_label_quality
from ..config import FinetuneCfg
from ..data.datasets import ReIDDataset, Sample
from ..data.loading import build_loader
from ..data.samplers import CameraAwareIdentitySampler, pids_per_batch
from ..data.transforms import build_transforms
from ..features import extract_features
from ..losses import CrossEntropyLabelSmooth, SoftTripletLoss
from ..models import MeanTeacher, SourceNet, build_model
from ..models.fusion import pool_map
from ..repro import seed_everything
from . import distributed as D
from .checkpoint import EpochLog, check_resume, evaluation_due, load_checkpoint, load_into, save_checkpoint
from .evaluate import evaluate_model
from .pretrain import LoaderCycle, _rng_state, _set_rng_state, autocast, training_device

BRANCHES = ("global", "top", "bottom")


@dataclass
class FinetuneResult:
    """What the run measured and where its checkpoints are."""

    direct_transfer: dict  # the source network on the target query / gallery
    best_mAP: float
    best_epoch: int
    last: dict  # metrics of the last epoch
    history: list[dict]  # one record per epoch
    best_checkpoint: Path
    last_checkpoint: Path


# ----------------------------------------------------------------------------- model set-up


def load_source_trunk(net: nn.Module, source_state: dict, *, where: str = "source checkpoint") -> None:
    """Copy the trunk of a pre-trained :class:`SourceNet` into a fine-tuning network.

    Only the ``trunk.*`` weights move (the source classifier has N_S rows, the heads are new);
    a checkpoint of another depth is refused with the depth it was written for.
    """
    own = net.state_dict()
    trunk = {k: v for k, v in source_state.items() if k.startswith("trunk.")}
    want = {k: v for k, v in own.items() if k.startswith("trunk.")}
    bad = [k for k in want if k not in trunk or trunk[k].shape != want[k].shape]
    if bad:
        k = bad[0]
        got = tuple(trunk[k].shape) if k in trunk else "missing"
        raise ValueError(f"{where} does not fit a ResNet-{getattr(net, 'depth', '?')} trunk: {k} is {got}, "
                         f"expected {tuple(want[k].shape)}. Use the depth the source model was trained with.")
    net.load_state_dict(trunk, strict=False)


def _bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def frozen_bn_statistics(module: nn.Module):
    """BatchNorm layers normalise with the batch's statistics but leave their running ones alone.

    (momentum 0: ``running = (1 - 0) * running + 0 * batch``.) Used for every sub-batch after the
    first, so that one process keeps the statistics rank 0 would keep under torchrun.
    """
    layers = _bn_layers(module)
    saved = [m.momentum for m in layers]
    try:
        for m in layers:
            m.momentum = 0.0
        yield
    finally:
        for m, mom in zip(layers, saved):
            m.momentum = mom


def forward_sub_batches(net: nn.Module, x: torch.Tensor, sub_batch: int):
    """``net(x)`` with BatchNorm statistics per fixed sub-batch of ``sub_batch`` images.

    0 (or >= len(x)) is a plain forward. Outputs (tensors or named tuples of tensors) are
    concatenated along the batch. Only the first sub-batch updates running statistics.
    """
    if sub_batch <= 0 or sub_batch >= x.shape[0]:
        return net(x)
    outs = []
    for i, chunk in enumerate(x.split(sub_batch)):
        with frozen_bn_statistics(net) if i else contextlib.nullcontext():
            outs.append(net(chunk))
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)
    return type(first)(*(torch.cat(parts) for parts in zip(*outs)))


def fuse_sub_batches(fusion: nn.Module, teacher_map: torch.Tensor, psi_top: torch.Tensor, psi_bottom: torch.Tensor,
                     sub_batch: int):
    """Ensemble Fusion with BatchNorm per sub-batch, like :func:`forward_sub_batches`."""
    n = teacher_map.shape[0]
    if sub_batch <= 0 or sub_batch >= n:
        return fusion(teacher_map, psi_top, psi_bottom)
    outs = []
    for i, lo in enumerate(range(0, n, sub_batch)):
        sl = slice(lo, lo + sub_batch)
        with frozen_bn_statistics(fusion) if i else contextlib.nullcontext():
            outs.append(fusion(teacher_map[sl], psi_top[sl], psi_bottom[sl]))
    return type(outs[0])(*(torch.cat(parts) for parts in zip(*outs)))


class _StudentStep(nn.Module):
    """The student's forward over the three batches of a step: one call, hence one DDP forward."""

    def __init__(self, student: nn.Module, sub_batch: int) -> None:
        super().__init__()
        self.student, self.sub_batch = student, sub_batch

    def forward(self, batches: list[torch.Tensor]):
        return [forward_sub_batches(self.student, x, self.sub_batch) for x in batches]


class _ClusterFeatures(nn.Module):
    """Eval-mode extractor of the three clustering features, concatenated ``(B, 3C)``.

    ``fused``: Ensemble Fusion(++) of the teacher's map and the student's ECAB vectors;
    ``plain``: the teacher's own global / top / bottom features.
    """

    def __init__(self, mt: MeanTeacher, mode: str) -> None:
        super().__init__()
        if mode not in ("fused", "plain"):
            raise ValueError(f"cluster_feature must be 'fused' or 'plain', got {mode!r}")
        self.mt, self.mode = mt, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fused":
            return torch.cat(list(self.mt.fused_features(x)), dim=1)
        t = self.mt.teacher
        m = t.trunk(x)
        h = m.shape[2]
        f_g = t.bn_global(pool_map(m, t.pool))
        f_top = t.bn_top(t.fc_top(t._part(m[:, :, : h // 2])))
        f_bot = t.bn_bottom(t.fc_bottom(t._part(m[:, :, h // 2:])))
        return torch.cat([f_g, f_top, f_bot], dim=1)


# ----------------------------------------------------------------------------- pieces of an epoch


def extract_cluster_features(mt: MeanTeacher, samples: list[Sample], cfg: FinetuneCfg, device, info=D.DistInfo(),
                             progress: bool = False) -> list[torch.Tensor]:
    """BMFN features of ``samples`` for the three clusterings: ``[global, top, bottom]``, each (n, C).

    Under torchrun every rank extracts a strided share and the shares are gathered (on every rank).
    """
    tf = build_transforms("test", cfg.height, cfg.width)
    mine = D.shard(samples, info)
    feats = extract_features(_ClusterFeatures(mt, cfg.cluster_feature), build_loader(mine, tf, 128), device=device,
                             channels_last=cfg.channels_last, progress=progress).features
    feats = D.gather_shards(feats.to(device), len(samples), info).cpu()
    c = feats.shape[1] // 3
    # extract_features normalised the whole (B, 3C) sum; each part is re-normalised on its own (BMFN)
    parts = [F.normalize(part, dim=1) for part in feats.split(c, dim=1)]
    if cfg.cluster_camera_norm:
        parts = [camera_centred(p, [s.camid for s in samples]) for p in parts]
    return parts


def camera_centred(features: torch.Tensor, camids) -> torch.Tensor:
    """Subtract each camera's mean feature, then L2-normalise the rows again.

    A camera's colour cast and background shift all of its features the same way; removing the
    per-camera mean keeps k-means from grouping by camera instead of by identity. Samples without
    a camera (``None``) are centred together.
    """
    cams = np.array([-1 if c is None else int(c) for c in camids])
    out = features.clone()
    for cam in np.unique(cams):
        rows = torch.from_numpy(cams == cam)
        out[rows] -= out[rows].mean(dim=0, keepdim=True)
    return F.normalize(out, dim=1)


def cluster_pseudo_labels(features: list[torch.Tensor], cfg: FinetuneCfg, *, seed: int, device) -> list:
    """One k-means per feature (same k): a list of :class:`~corelib.cluster.KMeansResult`."""
    out = []
    for i, x in enumerate(features):
        if cfg.kmeans == "minibatch":
            res = minibatch_kmeans(x, cfg.num_clusters, batch_size=cfg.kmeans_batch_size, max_iter=cfg.kmeans_max_iter,
                                   init=cfg.kmeans_init, init_size=cfg.kmeans_init_size, n_init=cfg.kmeans_n_init,
                                   reassignment_ratio=0.05, max_no_improvement=50, seed=seed + i, device=device)
        elif cfg.kmeans == "lloyd":
            res = kmeans(x, cfg.num_clusters, init=cfg.kmeans_init, max_iter=cfg.kmeans_max_iter, seed=seed + i,
                         device=device)
        else:
            raise ValueError(f"unknown kmeans {cfg.kmeans!r}; use 'minibatch' or 'lloyd'")
        out.append(res)
    return out


def _relabel(samples: list[Sample], labels: np.ndarray) -> list[Sample]:
    return [Sample(s.path, int(y), s.camid) for s, y in zip(samples, labels)]


def _source_checkpoint_state(path: Union[str, Path]) -> dict:
    state = load_checkpoint(path)
    if "model" not in state:
        raise ValueError(f"{path} is not a pre-training checkpoint (no 'model' entry); pass RUN_DIR/pretrain/best.pt")
    return state


# ----------------------------------------------------------------------------- the loop


def finetune(
    cfg: FinetuneCfg,
    target: ReIDDataset,
    run_dir: Union[str, Path],
    *,
    source_checkpoint: Union[str, Path, None] = None,
    resume: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Adapt the pre-trained source model to ``target.train`` without its labels.

    Args:
        cfg: the fine-tuning settings.
        target: the target dataset; its training pids are used only to *measure* pseudo-label
            quality, never by the training.
        run_dir: the run directory; checkpoints and ``metrics.jsonl`` go to ``RUN_DIR/finetune``.
        source_checkpoint: a pre-training checkpoint (default ``RUN_DIR/pretrain/best.pt``).
        resume: continue from ``RUN_DIR/finetune/last.pt`` when it exists.
        progress: tqdm bars (rank 0 only).
    """
    from tqdm.auto import tqdm

    info = D.init_distributed(cfg.dist_backend)
    run_dir = Path(run_dir)
    out = run_dir / "finetune"
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    pids_per_batch(cfg.batch_size, cfg.num_instances)
    n_train = len(target.train)
    if cfg.num_clusters > n_train:
        raise ValueError(f"num_clusters={cfg.num_clusters} is larger than the {n_train} target training images; "
                         f"choose k <= {n_train}")
    device = training_device(cfg.device, info)
    progress = progress and info.is_main
    seed_everything(cfg.seed)

    src_path = Path(source_checkpoint) if source_checkpoint else run_dir / "pretrain" / "best.pt"
    src = _source_checkpoint_state(src_path)
    if src.get("depth", cfg.depth) != cfg.depth:
        raise ValueError(f"{src_path} holds a ResNet-{src['depth']} source model but cfg.depth={cfg.depth}; "
                         f"set depth={src['depth']}")
    mt: MeanTeacher = build_model(f"mean_teacher_resnet{cfg.depth}", num_classes=cfg.num_clusters, weights="none",
                                  ecab=cfg.ecab, pool=cfg.pool, fusion=cfg.fusion, alpha=cfg.alpha)
    for net in (mt.student, mt.teacher):
        load_source_trunk(net, src["model"], where=str(src_path))
    if not cfg.fused_loss:  # no loss reaches ECAB / SECAB / fusion BNs in the published recipe
        for m in (mt.student.ecab_top, mt.student.ecab_bottom, mt.fusion):
            m.requires_grad_(False)
    mt.to(device)
    if cfg.channels_last:  # once, before DDP registers the parameters; extraction keeps this layout
        mt.to(memory_format=torch.channels_last)
    step_net: nn.Module = _StudentStep(mt.student, cfg.bn_sub_batch)
    trainable = [p for p in mt.student.parameters() if p.requires_grad]
    if cfg.fused_loss:
        trainable += [p for p in mt.fusion.parameters() if p.requires_grad]
    if info.enabled:
        step_net = nn.parallel.DistributedDataParallel(
            step_net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)

    direct: dict = {}
    start, best_map, best_epoch = 0, -1.0, -1
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, map_location=device)
        check_resume(state.get("cfg"), cfg.to_dict(), last_path)  # before the weights: a new k changes their shapes
        load_into(mt, state, last_path)
        start, best_map, best_epoch = state["epoch"] + 1, state["best_mAP"], state["best_epoch"]
        direct = dict(state.get("direct_transfer", {}))
        _set_rng_state(state["rng"])
    elif info.is_main:
        source_net = SourceNet(cfg.depth, src["model"]["classifier.weight"].shape[0], weights=None)
        source_net.load_state_dict(src["model"])
        direct = {k: v for k, v in evaluate_model(source_net.to(device), target, cfg.height, cfg.width, device=device,
                                                  channels_last=cfg.channels_last).items() if isinstance(v, float)}
        del source_net
    log = EpochLog(log_path, keep=start, write=info.is_main)

    ce, triplet = CrossEntropyLabelSmooth(cfg.label_smooth), SoftTripletLoss()
    tf_train = build_transforms("finetune", cfg.height, cfg.width, gray_p=cfg.gray_p, lgpr_p=cfg.lgpr_p,
                                erase_p=cfg.erase_p)
    truth = np.array([s.pid for s in target.train])
    has_truth = len(set(truth.tolist())) > 1
    camids = np.array([-1 if s.camid is None else s.camid for s in target.train])

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        # 1-3. features, three clusterings on rank 0, labels and centroids to every rank
        feats = extract_cluster_features(mt, target.train, cfg, device, info, progress=progress)
        labels = torch.zeros(3, n_train, dtype=torch.long, device=device)
        centroids = torch.zeros(cfg.num_clusters, feats[0].shape[1], device=device)
        record: dict = {"epoch": epoch + 1}
        if info.is_main:
            results = cluster_pseudo_labels(feats, cfg, seed=cfg.seed * 1000 + 3 * epoch, device=device)
            for i, res in enumerate(results):
                labels[i] = res.labels.to(device)
            # classifier rows: normalised centroids of the global features (method.md §3.9)
            centroids.copy_(results[0].centroids.to(device))
            record["kmeans_iters"] = [r.n_iter for r in results]
            for name, res in zip(BRANCHES, results):  # needs cameras only: watchable on real targets too
                record[f"camera_mixing_{name}"] = camera_mixing(res.labels.cpu().numpy(), camids)
            if has_truth:
                for name, res in zip(BRANCHES, results):
                    q = pseudo_label_quality(res.labels.cpu().numpy(), truth)
                    for key in ("nmi", "ari", "purity", "clusters", "size_max", "singletons"):
                        if key in q:
                            record[f"{key}_{name}"] = q[key]
        D.broadcast(labels, info)
        D.broadcast(centroids, info)
        mt.reset_classifiers(centroids)
        labels_state = labels.cpu()
        t_cluster = time.perf_counter() - t0

        # 4. three pseudo-labelled P x K loaders (same sampler rule, own seeds), fresh Adam
        cycles = []
        for i in range(3):
            relabelled = _relabel(target.train, labels_state[i].numpy())
            sampler = CameraAwareIdentitySampler(relabelled, num_instances=cfg.num_instances,
                                                 seed=cfg.seed + 7919 * (i + 1))
            loader = build_loader(relabelled, tf_train, cfg.batch_size, num_workers=cfg.num_workers,
                                  batch_sampler=D.RankSliceBatchSampler(sampler, cfg.batch_size, info, keyed=True),
                                  seed=cfg.seed * 1000 + 3 * epoch + i, pin_memory=device.type == "cuda")
            cycles.append(LoaderCycle(loader, sampler, base_epoch=epoch * 1000))
        optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)

        # 5. student steps, EMA teacher after each
        mt.train()
        totals = {"loss": 0.0, "ce": 0.0, "tri_global": 0.0, "tri_top": 0.0, "tri_bottom": 0.0}
        if cfg.fused_loss:
            totals.update(tri_fused_top=0.0, tri_fused_bottom=0.0)
        bar = tqdm(range(cfg.iters_per_epoch), desc=f"finetune {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for _ in bar:
            batches = [c.next() for c in cycles]
            xs = [b[0].to(device, non_blocking=True) for b in batches]
            if cfg.channels_last:
                xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
            ys = [D.gather_tensor(b[1].to(device), info) for b in batches]
            with autocast(cfg.precision, device):
                outs = step_net(xs)
                teacher_maps = []
                if cfg.teacher_forward or cfg.fused_loss:
                    with torch.no_grad():  # teacher BN statistics follow the target (outputs unused by the loss)
                        for x in xs:
                            teacher_maps.append(forward_sub_batches(mt.teacher, x, cfg.bn_sub_batch).feature_map)
                g, top, bot = outs[0], outs[1], outs[2]
                f_g = D.gather_with_grad(g.global_feat.float(), info)
                logits = D.gather_with_grad(g.logits.float(), info)
                f_top = D.gather_with_grad(top.top_feat.float(), info)
                f_bot = D.gather_with_grad(bot.bottom_feat.float(), info)
                parts = {
                    "ce": ce(logits, ys[0]),
                    "tri_global": triplet(f_g, ys[0]),
                    "tri_top": triplet(f_top, ys[1]),
                    "tri_bottom": triplet(f_bot, ys[2]),
                }
                loss = parts["ce"] + parts["tri_global"] + cfg.local_weight * (parts["tri_top"] + parts["tri_bottom"])
                if teacher_maps:
                    # Fusion in train mode: its BN running statistics track the target (as in the code);
                    # with fused_loss the fused local features also get a triplet loss (method.md §9-Q1)
                    with torch.enable_grad() if cfg.fused_loss else torch.no_grad():
                        fused_top = fuse_sub_batches(mt.fusion, teacher_maps[1], top.psi_top, top.psi_bottom,
                                                     cfg.bn_sub_batch)
                        fused_bot = fuse_sub_batches(mt.fusion, teacher_maps[2], bot.psi_top, bot.psi_bottom,
                                                     cfg.bn_sub_batch)
                    if cfg.fused_loss:
                        parts["tri_fused_top"] = triplet(D.gather_with_grad(fused_top.top_feat.float(), info), ys[1])
                        parts["tri_fused_bottom"] = triplet(D.gather_with_grad(fused_bot.bottom_feat.float(), info), ys[2])
                        loss = loss + cfg.local_weight * (parts["tri_fused_top"] + parts["tri_fused_bottom"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if info.enabled and cfg.fused_loss:  # the fusion sits outside DDP: average its gradients
                D.all_reduce_mean_grads(mt.fusion, info)
            optimizer.step()
            mt.update_teacher()
            totals["loss"] += loss.item() / cfg.iters_per_epoch
            for k, v in parts.items():
                totals[k] += v.item() / cfg.iters_per_epoch
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if info.enabled:  # the BN statistics of rank 0 are the ones kept (DDP's rule for the student)
            for m in (mt.student, mt.teacher, mt.fusion):
                D.broadcast_buffers(m, info)
        record.update(totals)
        record["seconds_cluster"] = t_cluster
        record["seconds_train"] = time.perf_counter() - t0 - t_cluster

        # 6. teacher on the target query / gallery, checkpoints (rank 0)
        if info.is_main:
            if evaluation_due(epoch, cfg.eval_every, cfg.epochs):
                metrics = evaluate_model(mt.teacher, target, cfg.height, cfg.width, device=device,
                                         channels_last=cfg.channels_last)
                record.update({f"target_{k}": v for k, v in metrics.items() if isinstance(v, float)})
                if metrics["mAP"] > best_map:
                    best_map, best_epoch = metrics["mAP"], epoch + 1
                    save_checkpoint({"stage": "finetune", "cfg": cfg.to_dict(), "model": mt.state_dict(),
                                     "epoch": epoch, "depth": cfg.depth, "num_clusters": cfg.num_clusters,
                                     "mAP": best_map}, best_path)
            record["seconds"] = time.perf_counter() - t0
            log.append(record)
            _tensorboard(run_dir, record)
            save_checkpoint({
                "stage": "finetune", "cfg": cfg.to_dict(), "model": mt.state_dict(),
                "optimizer": optimizer.state_dict(), "epoch": epoch,
                "best_mAP": best_map, "best_epoch": best_epoch, "pseudo_labels": labels_state,
                "rng": _rng_state(), "depth": cfg.depth, "num_clusters": cfg.num_clusters,
                "direct_transfer": direct,
            }, last_path)
        D.barrier(info)
    return FinetuneResult(direct, best_map, best_epoch, log.last, log.history, best_path, last_path)


def _tensorboard(run_dir: Path, record: dict) -> None:
    """Scalars to ``RUN_DIR/tensorboard`` when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return
    with SummaryWriter(str(run_dir / "tensorboard")) as w:
        for k, v in record.items():
            if isinstance(v, (int, float)) and k != "epoch":
                w.add_scalar(f"finetune/{k}", v, record["epoch"])
