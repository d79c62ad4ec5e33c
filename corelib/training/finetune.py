"""Mean-teacher fine-tuning on the unlabelled target with multi-level clustering (docs/method.md §3).

Every epoch (docs/method.md §3.12):

1. BMFN features of every target training image from Ensemble Fusion(++) (the teacher's map, the
   student's ECAB vectors): theta_g, theta_top, theta_bot, each L2-normalised separately;
2. pseudo-labels of the three levels from the labeller of ``cfg.cluster`` (by name; the paper's is
   three k-means runs with the same k and greedy k-means++ seeding), after the feature
   normalisation it names (:func:`corelib.cluster.cluster_pseudo_labels`); -1 marks an outlier;
3. student and teacher classifiers <- the L2-normalised centres of the global clustering; when
   the number of clusters K changes, both are resized, and the optimiser and the DDP wrapper are
   rebuilt around the new layers;
4. three pseudo-labelled camera-aware P x K loaders (outliers left out; one, of the global labels,
   for a criterion with ``levels = 1``) and a fresh Adam;
5. ``iters_per_epoch`` steps of the criterion of ``cfg.loss`` (by name; the paper's is
   ``L = CE_ls(W f_g(B_g), y_g) + tri(f_g(B_g)) + 0.5 tri(f_top(B_top)) + 0.5 tri(f_bot(B_bot))``)
   on the student, each followed by the criterion's own update (centre loss) and the EMA update of
   the teacher;
6. the teacher's descriptor evaluated on the target query / gallery; the outlier share and
   pseudo-label quality against the hidden identities logged whenever the target has them.

``model.alpha = 0`` trains without a mean teacher: the teacher is then a copy of the student after
every step (parameters by the EMA with alpha 0, BatchNorm statistics copied, so it needs no forward
of its own), so the one network of the single-model baselines (Cluster Contrast, Learn by
Guessing) is what is clustered and evaluated.

Before the first epoch the source network itself is evaluated on the target: the direct-transfer
baseline. State is checkpointed atomically after every epoch (``RUN_DIR/finetune/last.pt``, with
the pseudo-labels and the current K); ``resume=True`` continues and, on the CPU with the same
seed, ends with the same metrics as a run that was never stopped. Under ``torchrun`` training and
feature extraction are split across the processes (see :mod:`corelib.runtime.distributed`);
clustering runs on rank 0.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cluster import check_labeler, cluster_pseudo_labels, get_labeler, label_report
from ..config import FinetuneCfg
from ..data.batches import build_loader
from ..data.dataset import ReIDDataset, Sample
from ..data.samplers import CameraAwareIdentitySampler, pids_per_batch
from ..data.transforms import build_transforms
from ..errors import InvalidInputError, InvalidTypeError
from ..features import extract_split
from ..losses import AdaptBatch, build_criterion
from ..models import MeanTeacher, build_model, model_context
from ..repro import seed_everything
from ..runtime import LoaderCycle, Runtime, StageRun, load_checkpoint, load_into, rng_state, set_rng_state
from ..runtime import distributed as D
from .evaluate import evaluate_model, model_record
from .optim import build_optimizer


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
    loss_terms: tuple[str, ...] = ("loss",)  # the criterion's logged terms, the total first


# ----------------------------------------------------------------------------- model set-up


def load_source_trunk(net: nn.Module, source_state: dict, *, where: str = "source checkpoint") -> None:
    """Copy the trunk of a pre-trained source network into a fine-tuning network.

    Only the ``trunk.*`` weights move (the source classifier has N_S rows, the heads are new);
    a checkpoint of another backbone is refused with the backbone it was written for.
    """
    if hasattr(net, "load_source_state"):  # a network with its own rule (TransReID: JPM branches, SIE)
        net.load_source_state(source_state, where=where)
        return
    own = net.state_dict()
    trunk = {k: v for k, v in source_state.items() if k.startswith("trunk.")}
    want = {k: v for k, v in own.items() if k.startswith("trunk.")}
    bad = [k for k in want if k not in trunk or trunk[k].shape != want[k].shape]
    if bad:
        k = bad[0]
        got = tuple(trunk[k].shape) if k in trunk else "missing"
        raise InvalidInputError(f"{where} does not fit a {getattr(net, 'backbone', '?')} trunk: {k} is {got}, "
                         f"expected {tuple(want[k].shape)}. Use the backbone the source model was trained with.")
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


def forward_sub_batches(net: nn.Module, x: torch.Tensor, sub_batch: int, camids: Optional[torch.Tensor] = None):
    """``net(x, camids)`` with BatchNorm statistics per fixed sub-batch of ``sub_batch`` images.

    0 (or >= len(x)) is a plain forward. Outputs (tensors or named tuples of tensors) are
    concatenated along the batch. Only the first sub-batch updates running statistics. Without
    ``camids`` the network is called on the images alone.
    """
    def call(images, cams):
        return net(images) if cams is None else net(images, cams)

    if sub_batch <= 0 or sub_batch >= x.shape[0]:
        return call(x, camids)
    cam_chunks = camids.split(sub_batch) if camids is not None else [None] * len(x.split(sub_batch))
    outs = []
    for i, (chunk, cams) in enumerate(zip(x.split(sub_batch), cam_chunks)):
        with frozen_bn_statistics(net) if i else contextlib.nullcontext():
            outs.append(call(chunk, cams))
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

    def forward(self, batches: list[torch.Tensor], camids: list[torch.Tensor]):
        return [forward_sub_batches(self.student, x, self.sub_batch, c) for x, c in zip(batches, camids)]


class _ClusterFeatures(nn.Module):
    """Eval-mode extractor of the three clustering features, concatenated ``(B, 3C)``.

    ``fused``: Ensemble Fusion(++) of the teacher's map and the student's ECAB vectors;
    ``plain``: the teacher's own global / top / bottom features.
    """

    def __init__(self, mt: MeanTeacher, mode: str) -> None:
        super().__init__()
        if mode not in ("fused", "plain"):
            raise InvalidInputError(f"cluster.feature must be 'fused' or 'plain', got {mode!r}")
        if mt.fusion is None and mode == "fused":
            raise InvalidInputError(f"{type(mt.teacher).__name__} has no Ensemble Fusion to cluster; set "
                                    f"cluster.feature=plain (its retrieval descriptor is clustered)")
        self.mt, self.mode = mt, mode

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.mt.fusion is None:  # one level: the teacher's descriptor (TransReID: [f_g, f_l / k])
            return self.mt.teacher(x, camids)
        if self.mode == "fused":
            return torch.cat(list(self.mt.fused_features(x, camids)), dim=1)
        t = self.mt.teacher
        return torch.cat(t.branch_features(t.trunk(x, camids)), dim=1)


# ----------------------------------------------------------------------------- pieces of an epoch


def extract_cluster_features(mt: MeanTeacher, samples: list[Sample], cfg: FinetuneCfg, device, info=D.DistInfo(),
                             progress: bool = False) -> list[torch.Tensor]:
    """BMFN features of ``samples`` for the three clusterings: ``[global, top, bottom]``, each (n, C),
    (one level, the teacher's descriptor, for a pair without a fusion block: TransReID's),
    each L2-normalised on its own (the labeller's normalisation comes after, in
    :func:`corelib.cluster.cluster_pseudo_labels`).

    Under torchrun every rank extracts a strided share and the shares are gathered (on every rank).
    """
    mine = D.shard(samples, info)
    feats = extract_split(_ClusterFeatures(mt, cfg.cluster.feature), mine, cfg.augment.height, cfg.augment.width,
                          device=device, channels_last=cfg.runtime.channels_last, progress=progress).features
    feats = D.gather_shards(feats.to(device), len(samples), info).cpu()
    if mt.fusion is None:  # a network without CORE-ReID's halves clusters one level, its descriptor
        return [F.normalize(feats, dim=1)]
    c = feats.shape[1] // 3
    # extract_features normalised the whole (B, 3C) sum; each part is re-normalised on its own (BMFN)
    return [F.normalize(part, dim=1) for part in feats.split(c, dim=1)]


def _relabel(samples: list[Sample], labels: np.ndarray) -> list[Sample]:
    """The samples with their pseudo-labels as pids; outliers (-1) are left out."""
    return [Sample(s.path, int(y), s.camid) for s, y in zip(samples, labels) if y >= 0]


def _source_checkpoint_state(path: Union[str, Path]) -> dict:
    state = load_checkpoint(path, stage="pretrain")
    if "model" not in state:
        raise InvalidInputError(f"{path} is not a pre-training checkpoint (no 'model' entry); pass RUN_DIR/pretrain/best.pt")
    return state


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


# ----------------------------------------------------------------------------- the loop


def finetune(
    cfg: FinetuneCfg,
    target: ReIDDataset,
    run_dir: Union[str, Path],
    *,
    source_checkpoint: Union[str, Path, None] = None,
    resume: bool = False,
    overwrite: bool = False,
    direct_transfer: Optional[dict] = None,
    progress: bool = True,
) -> FinetuneResult:
    """Adapt the pre-trained source model to ``target.train`` without its labels.

    Args:
        cfg: the fine-tuning settings.
        target: the target dataset; its training pids are used only to *measure* pseudo-label
            quality, never by the training.
        run_dir: the run directory; checkpoints, ``metrics.jsonl`` and ``config.yaml`` go to
            ``RUN_DIR/finetune``.
        source_checkpoint: a pre-training checkpoint (default ``RUN_DIR/pretrain/best.pt``).
        resume: continue from ``RUN_DIR/finetune/last.pt`` when it exists.
        overwrite: an existing run in ``RUN_DIR/finetune`` is set aside (renamed to
            ``finetune.replaced-<time>``) and training starts again; without it (and without
            ``resume``) a folder that holds a run is refused, so nothing finished is replaced unasked.
        direct_transfer: the source network's target scores (``evaluate_model`` of it), when the
            caller has measured them already (chapter 08 trains several recipes from one source
            network); None evaluates the source network here first.
        progress: tqdm bars (rank 0 only).
    """
    from ..progress import tqdm

    rt = Runtime.from_cfg(cfg.runtime)
    run_dir = Path(run_dir)
    pids_per_batch(cfg.batch_size, cfg.num_instances)
    n_train = len(target.train)
    check_labeler(cfg.cluster, n_train)  # an unknown labeller or k > n fails now, not after an epoch
    criterion = build_criterion(cfg.loss, stage="finetune").to(rt.device)
    levels = criterion.levels  # 1: the global batch alone is loaded and forwarded
    progress = progress and rt.is_main
    truth = np.array([s.pid for s in target.train])
    has_truth = len(set(truth.tolist())) > 1
    if getattr(get_labeler(cfg.cluster.labeler), "uses_identities", False) and not has_truth:
        raise InvalidInputError(f"cluster.labeler={cfg.cluster.labeler!r} trains with the target's identities, but "
                                f"{target.name} has none in its training split; choose a pseudo-labeller")

    src_path = Path(source_checkpoint) if source_checkpoint else run_dir / "pretrain" / "best.pt"
    src = _source_checkpoint_state(src_path)
    src_backbone = src["model_args"].get("backbone")
    if src_backbone != cfg.model.backbone:
        raise InvalidInputError(f"{src_path} holds a {src_backbone} source model but model.backbone={cfg.model.backbone!r}; "
                         f"set model.backbone={src_backbone}")
    with StageRun(run_dir / "finetune", cfg, rt, stage="finetune", resume=resume, overwrite=overwrite,
                  upstream={"source network": src_path}) as run:
        seed_everything(cfg.seed)
        # K: the classifier rows; a resumed run continues with the K its checkpoint was written with
        classes = int(run.state["num_clusters"]) if run.resumed else cfg.cluster.num_clusters
        # + the target's camera count / input size for networks that take them (a new SIE table)
        model_args = {**cfg.model.model_args(), **model_context(cfg.model.name, target, cfg.augment.height,
                                                                cfg.augment.width)}
        mt = build_model(cfg.model.name, num_classes=classes, weights="none", **model_args)
        if not isinstance(mt, MeanTeacher):
            raise InvalidTypeError(f"model.name={cfg.model.name!r} builds a {type(mt).__name__}; fine-tuning needs a mean-teacher "
                            f"pair (corelib.models.MeanTeacher), e.g. 'mean_teacher'")
        for net in (mt.student, mt.teacher):
            load_source_trunk(net, src["model"], where=str(src_path))
        one_network = mt.alpha == 0
        if one_network:  # the teacher starts as an exact copy (heads too) and stays one
            mt.teacher.load_state_dict(mt.student.state_dict())
        cluster_levels = 1 if mt.fusion is None else 3
        if levels > cluster_levels:
            raise InvalidInputError(f"loss.name={cfg.loss.name!r} reads the global, top and bottom batches, but "
                                    f"{cfg.model.name!r} clusters one level (its descriptor); choose a loss of the "
                                    f"global batch (transreid, cluster_contrast with loss.local_weight=0)")
        if not criterion.uses_fused and mt.fusion is not None:  # no loss reaches ECAB / SECAB / fusion BNs
            for m in (mt.student.ecab_top, mt.student.ecab_bottom, mt.fusion):
                m.requires_grad_(False)
        rt.place(mt)  # once, before DDP registers the parameters; extraction keeps this layout

        def trainable() -> list[tuple[str, nn.Parameter]]:
            params = [(n, p) for n, p in mt.student.named_parameters() if p.requires_grad]
            return params + ([(n, p) for n, p in mt.fusion.named_parameters() if p.requires_grad]
                             if criterion.uses_fused else [])

        def wrapped() -> nn.Module:
            return rt.wrap(_StudentStep(mt.student, cfg.bn_sub_batch), find_unused_parameters=False)

        step_net, wrapped_classifier = wrapped(), mt.student.classifier

        direct: dict = {}
        labeller_state: dict = {}  # what a stateful labeller keeps between epochs (saved in last.pt)
        if run.resumed:
            load_into(mt, run.state, run.last_path)
            direct = dict(run.state.get("direct_transfer", {}))
            labeller_state = dict(run.state.get("labeller_state", {}))
            set_rng_state(run.state["rng"])
        elif rt.is_main:
            # built even when the caller measured it: its initialisation draws from the seeded RNG, and
            # a run given direct_transfer must draw what one that measures it draws (same results)
            source_net = build_model(src["model_name"], weights=None, **src["model_args"])
            source_net.load_state_dict(src["model"])
            if direct_transfer is not None:  # measured by the caller for this source network
                direct = {k: float(v) for k, v in direct_transfer.items() if isinstance(v, (int, float))}
            else:  # camera-blind: the source's camera embeddings (SIE) know no target camera
                direct = {k: v for k, v in evaluate_model(source_net.to(rt.device), target, cfg.augment.height,
                                                          cfg.augment.width, device=rt.device,
                                                          channels_last=cfg.runtime.channels_last,
                                                          cameras=False).items()
                          if isinstance(v, float)}
            del source_net

        aug = cfg.augment
        tf_train = build_transforms("finetune", aug.height, aug.width, gray_p=aug.gray_p, lgpr_p=aug.lgpr_p,
                                    erase_p=aug.erase_p, erase_mode=aug.erase_mode)
        camids = np.array([-1 if s.camid is None else s.camid for s in target.train])

        def evaluate() -> tuple[dict, float]:
            metrics = evaluate_model(mt.teacher, target, aug.height, aug.width, device=rt.device,
                                     channels_last=cfg.runtime.channels_last)
            return {f"target_{k}": v for k, v in metrics.items() if isinstance(v, float)}, metrics["mAP"]

        run.begin()  # every check has passed: config.yaml and metrics.jsonl from here
        for epoch in range(run.start, cfg.epochs):
            t0 = time.perf_counter()
            # 1-3. features, three clusterings on rank 0, labels and centres to every rank
            feats = extract_cluster_features(mt, target.train, cfg, rt.device, rt.info, progress=progress)
            labels = torch.zeros(len(feats), n_train, dtype=torch.long, device=rt.device)
            num_classes = torch.zeros((), dtype=torch.long, device=rt.device)
            record: dict = {"epoch": epoch + 1}
            if rt.is_main:
                pseudo, clustered = cluster_pseudo_labels(feats, camids, cfg.cluster, seed=cfg.seed * 1000 + 3 * epoch,
                                                          epoch=epoch, device=rt.device, state=labeller_state,
                                                          identities=truth if has_truth else None)
                for i, lab in enumerate(pseudo.labels):
                    labels[i] = torch.from_numpy(lab).to(rt.device)
                # classifier rows: normalised centres of the global clustering (docs/method.md §3.9)
                centroids = pseudo.centres(0, clustered[0].to(rt.device)).to(rt.device)
                num_classes.fill_(centroids.shape[0])
                record.update(label_report(pseudo, camids, truth if has_truth else None))
            D.broadcast(labels, rt.info)
            D.broadcast(num_classes, rt.info)
            if not rt.is_main:
                centroids = torch.zeros(int(num_classes), feats[0].shape[1], device=rt.device)
            D.broadcast(centroids, rt.info)
            mt.reset_classifiers(centroids)
            if hasattr(criterion, "start_clustering"):  # a cluster memory (Cluster Contrast) starts from the same centres
                criterion.start_clustering(centroids)
            if mt.student.classifier is not wrapped_classifier:  # K changed: DDP must see the new layer
                step_net, wrapped_classifier = wrapped(), mt.student.classifier
            labels_state = labels.cpu()
            t_cluster = time.perf_counter() - t0

            # 4. three (or, for a criterion of the global batch alone, one) pseudo-labelled P x K
            # loaders (same sampler rule, own seeds), fresh Adam
            cycles = []
            for i in range(levels):
                relabelled = _relabel(target.train, labels_state[i].numpy())
                sampler = CameraAwareIdentitySampler(relabelled, num_instances=cfg.num_instances,
                                                     seed=cfg.seed + 7919 * (i + 1))
                loader = build_loader(relabelled, tf_train, cfg.batch_size, num_workers=cfg.runtime.num_workers,
                                      batch_sampler=D.RankSliceBatchSampler(sampler, cfg.batch_size, rt.info, keyed=True),
                                      seed=cfg.seed * 1000 + 3 * epoch + i, pin_memory=rt.pin_memory)
                cycles.append(LoaderCycle(loader, sampler, base_epoch=epoch * 1000))
            optimizer = build_optimizer(trainable(), cfg)

            # 5. student steps, EMA teacher after each
            mt.train()
            totals = dict.fromkeys(criterion.terms, 0.0)
            bar = tqdm(range(cfg.iters_per_epoch), desc=f"finetune {epoch + 1}/{cfg.epochs}", disable=not progress,
                       leave=False)
            for _ in bar:
                batches = [c.next() for c in cycles]
                xs = [rt.images(b[0]) for b in batches]
                cams = [b[2].to(rt.device) for b in batches]
                ys = [rt.gather_labels(b[1]) for b in batches]
                with rt.autocast():
                    outs = step_net(xs, cams)
                    fused = [None, None]
                    if ((cfg.teacher_forward and not one_network) or criterion.uses_fused) and mt.fusion is not None:
                        with torch.no_grad():  # teacher BN statistics follow the target (outputs unused by the loss)
                            teacher_maps = [forward_sub_batches(mt.teacher, x, cfg.bn_sub_batch, c).feature_map
                                            for x, c in zip(xs, cams)]
                        # Fusion in train mode: its BN running statistics track the target (as in the code);
                        # a criterion that uses_fused trains through it (docs/method.md §9-Q1)
                        if levels == 3:  # the fusion joins the top / bottom batches' maps and vectors
                            with torch.enable_grad() if criterion.uses_fused else torch.no_grad():
                                fused = [fuse_sub_batches(mt.fusion, teacher_maps[i], outs[i].psi_top,
                                                          outs[i].psi_bottom, cfg.bn_sub_batch) for i in (1, 2)]
                    terms = criterion(AdaptBatch(outs, ys, fused, rt.gather))
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if rt.info.enabled and criterion.uses_fused:  # the fusion sits outside DDP: average its gradients
                    D.all_reduce_mean_grads(mt.fusion, rt.info)
                optimizer.step()
                criterion.own_step()  # the criterion's own parameters (centre loss), if any
                mt.update_teacher()
                if one_network:  # the teacher's BN statistics are the student's: no forward of its own
                    mt.copy_student_buffers()
                for key in totals:
                    totals[key] += terms[key].item() / cfg.iters_per_epoch
                bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
            if rt.info.enabled:  # the BN statistics of rank 0 are the ones kept (DDP's rule for the student)
                for m in (mt.student, mt.teacher, *([mt.fusion] if mt.fusion is not None else [])):
                    D.broadcast_buffers(m, rt.info)
            record.update(totals)
            record["seconds_cluster"] = t_cluster
            record["seconds_train"] = time.perf_counter() - t0 - t_cluster

            # 6. teacher on the target query / gallery, checkpoints (rank 0)
            classes = mt.num_classes  # this epoch's K: what resume and load_trained_model rebuild
            run.model_record = model_record(cfg.model.name, num_classes=classes, **model_args)
            run.end_epoch(epoch, record, t0, model=mt, evaluate=evaluate, best={"num_clusters": classes},
                          # no optimiser state: every epoch starts a fresh Adam (docs/method.md §3.11), so a resume
                          # never reads it, and leaving it out halves the file (the writes dominate short runs)
                          last={"pseudo_labels": labels_state, "rng": rng_state(),
                                "num_clusters": classes, "direct_transfer": direct,
                                "labeller_state": labeller_state},
                          after_log=lambda r: _tensorboard(run_dir, r))
        return FinetuneResult(direct, run.best_score, run.best_epoch, run.log.last, run.log.history, run.best_path,
                              run.last_path, tuple(criterion.terms))
