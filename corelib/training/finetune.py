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

This module is the scaffolding every method shares; what differs between methods (the levels
clustered, the start after a clustering, the trainable parameters, one training step) is the step
object of :mod:`corelib.training.steps`, chosen from the model and the criterion.

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
from ..data.samplers import build_sampler, pids_per_batch
from ..data.transforms import build_transforms
from ..errors import InvalidInputError, InvalidTypeError
from ..features import batch_viewids, extract_split, split_has_views
from ..losses import build_criterion, require_views
from ..models import MeanTeacher, build_model, model_context
from ..progress import tqdm
from ..repro import seed_everything
from ..runtime import LoaderCycle, Runtime, StageRun, load_checkpoint, load_into, rng_state, set_rng_state
from ..runtime import distributed as D
from .evaluate import evaluate_model, model_record
from .optim import build_optimizer
from .steps import choose_step, step_class


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


# ----------------------------------------------------------------------------- pieces of an epoch


def extract_cluster_features(mt: MeanTeacher, samples: list[Sample], cfg: FinetuneCfg, device, info=D.DistInfo(),
                             progress: bool = False) -> list[torch.Tensor]:
    """BMFN features of ``samples`` for the three clusterings: ``[global, top, bottom]``, each (n, C),
    (one level, the teacher's descriptor, for a pair without a fusion block: TransReID's),
    each L2-normalised on its own (the labeller's normalisation comes after, in
    :func:`corelib.cluster.cluster_pseudo_labels`).

    Under torchrun every rank extracts a strided share and the shares are gathered (on every rank).
    """
    view = step_class(mt)
    mine = D.shard(samples, info)
    # flip-averaged whatever the network's test protocol: BMFN is a step of the mean-teacher framework
    feats = extract_split(view.cluster_view(mt, cfg.cluster.feature), mine, cfg.augment.height, cfg.augment.width,
                          device=device, channels_last=cfg.runtime.channels_last, progress=progress, flip=True).features
    feats = D.gather_shards(feats.to(device), len(samples), info).cpu()
    # extract_features normalised the whole (B, levels * C) sum; each level is re-normalised on its own (BMFN)
    return [F.normalize(part, dim=1) for part in feats.split(feats.shape[1] // view.cluster_levels, dim=1)]


def _relabel(samples: list[Sample], labels: np.ndarray) -> list[Sample]:
    """The samples with their pseudo-labels as pids (camid and viewid kept); outliers (-1) are left out."""
    return [s._replace(pid=int(y)) for s, y in zip(samples, labels) if y >= 0]


def _source_checkpoint_state(path: Union[str, Path]) -> dict:
    state = load_checkpoint(path, stage="pretrain")
    if "model" not in state:
        raise InvalidInputError(f"{path} is not a pre-training checkpoint (no 'model' entry); pass RUN_DIR/pretrain/best.pt")
    return state


def _tensorboard(run_dir: Path, record: dict) -> None:
    """Scalars to ``RUN_DIR/tensorboard`` when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: TensorBoard is optional
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
            caller has measured them already (chapter 07 trains several recipes from one source
            network); None evaluates the source network here first.
        progress: tqdm bars (rank 0 only).
    """
    target_views = target.extras.get("views", "metadata")
    if cfg.target_views != target_views:  # one run folder holds runs on one kind of view ids
        raise InvalidInputError(f"target_views={cfg.target_views!r} but {target.name}'s view ids are {target_views!r}; "
                                f"set target_views={target_views!r} or pass the target as that recipe expects "
                                f"(corelib.orientation.with_estimated_views for 'estimated')")
    rt = Runtime.from_cfg(cfg.runtime)
    run_dir = Path(run_dir)
    pids_per_batch(cfg.batch_size, cfg.num_instances)
    n_train = len(target.train)
    check_labeler(cfg.cluster, n_train)  # an unknown labeller or k > n fails now, not after an epoch
    criterion = build_criterion(cfg.loss, stage="finetune").to(rt.device)
    has_views = split_has_views(target.train)
    require_views(criterion, target.train, f"the training split of {target.name}", has_views=has_views)
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
        rt.place(mt)  # once, before the step's DDP wrapper registers the parameters; extraction keeps this layout
        step = choose_step(mt, criterion, cfg, rt)

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
            scores = {f"target_{k}": v for k, v in metrics.items() if isinstance(v, float)}
            return {**scores, "test_flip": metrics["test_flip"]}, metrics["mAP"]  # with the protocol measured on

        run.begin()  # every check has passed: config.yaml and metrics.jsonl from here
        start: dict = {}
        if cfg.score_start and run.start == 0 and rt.is_main:
            # the starting point in the adapted scores' own descriptor (heads and fusion untrained yet)
            start = {f"start_{k}": v for k, v in evaluate()[0].items()}
        for epoch in range(run.start, cfg.epochs):
            t0 = time.perf_counter()
            # 1-3. features, three clusterings on rank 0, labels and centres to every rank
            feats = extract_cluster_features(mt, target.train, cfg, rt.device, rt.info, progress=progress)
            labels = torch.zeros(len(feats), n_train, dtype=torch.long, device=rt.device)
            num_classes = torch.zeros((), dtype=torch.long, device=rt.device)
            record: dict = {"epoch": epoch + 1, **(start if epoch == 0 else {})}
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
            step.start_epoch(centroids)
            labels_state = labels.cpu()
            t_cluster = time.perf_counter() - t0

            # 4. three (or, for a criterion of the global batch alone, one) pseudo-labelled P x K
            # loaders (same sampler rule, own seeds), fresh Adam
            cycles, lists = [], []
            for i in range(criterion.levels):
                relabelled = _relabel(target.train, labels_state[i].numpy())
                sampler = build_sampler(cfg.sampler, relabelled, num_instances=cfg.num_instances,
                                        seed=cfg.seed + 7919 * (i + 1))
                loader = build_loader(relabelled, tf_train, cfg.batch_size, num_workers=cfg.runtime.num_workers,
                                      batch_sampler=D.RankSliceBatchSampler(sampler, cfg.batch_size, rt.info, keyed=True),
                                      seed=cfg.seed * 1000 + 3 * epoch + i, pin_memory=rt.pin_memory)
                cycles.append(LoaderCycle(loader, sampler, base_epoch=epoch * 1000))
                lists.append(relabelled)  # the views of a batch are looked up in it by sample index
            optimizer = build_optimizer(step.trainable(), cfg)

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
                views = ([batch_viewids(lst, b[3], has_views=True).to(rt.device) for lst, b in zip(lists, batches)]
                         if has_views else None)
                terms = step.train_batch(xs, cams, ys, optimizer, views)
                for key in totals:
                    totals[key] += terms[key].item() / cfg.iters_per_epoch
                bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
                # the job's time is up: this epoch is given up (it restarts from a clustering, whose state a
                # mid-epoch checkpoint would have to hold for every labeller and criterion); last.pt is the one before
                run.stop_epoch(epoch, finished=False)
            step.end_epoch()
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
            run.stop_epoch(epoch, finished=True)
        return FinetuneResult(direct, run.best_score, run.best_epoch, run.log.last, run.log.history, run.best_path,
                              run.last_path, tuple(criterion.terms))
