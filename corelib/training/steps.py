"""The per-method part of mean-teacher fine-tuning: what one adaptation step does (docs/method.md §3).

:func:`corelib.training.finetune` owns the scaffolding every method shares (run directory, resume,
the epoch loop, clustering, loaders, evaluation, logging). A step owns what differs between methods,
and the loop calls its hooks in this order:

- ``cluster_levels`` and :meth:`AdaptationStep.cluster_view`: which features of the pair are
  clustered (the three BMFN levels of CORE-ReID's halves, or one descriptor);
- :meth:`AdaptationStep.start_epoch` after every clustering: classifiers from the centres, the
  criterion's own start (Cluster Contrast's cluster memory, the centre loss's centres), the DDP
  wrapper rebuilt when K changed;
- :meth:`AdaptationStep.trainable`: the parameters of this epoch's fresh optimiser;
- :meth:`AdaptationStep.train_batch`: the student's forward, the teacher's own pass
  (:meth:`AdaptationStep.teacher_pass`), loss, backward, optimiser step, then
  :meth:`AdaptationStep.after_step` (the EMA teacher update);
- :meth:`AdaptationStep.end_epoch`: rank 0's BatchNorm statistics on every process.

:func:`choose_step` picks the step from the pair: :class:`ThreeLevelStep` for a pair with Ensemble
Fusion (CORE-ReID), :class:`OneLevelStep` for one without (TransReID's ViT). The criterion says how
many pseudo-labelled batches it reads (``levels``) and whether it trains through the fusion
(``uses_fused``). ``model.alpha = 0`` (:attr:`AdaptationStep.one_network`) trains one network: the
teacher is the student after every step. A new method adds a criterion (with its own
``start_clustering``) or a step class, not a branch in the loop.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import ClassVar, Optional

import torch
from torch import nn

from ..config import FinetuneCfg
from ..errors import InvalidInputError
from ..losses import AdaptBatch, Criterion
from ..models import MeanTeacher
from ..runtime import Runtime
from ..runtime import distributed as D

CLUSTER_FEATURES = ("fused", "plain")


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


def forward_sub_batches(net: nn.Module, x: torch.Tensor, sub_batch: int, camids: Optional[torch.Tensor] = None,
                        viewids: Optional[torch.Tensor] = None):
    """``net(x, camids, viewids)`` with BatchNorm statistics per fixed sub-batch of ``sub_batch`` images.

    0 (or >= len(x)) is a plain forward. Outputs (tensors or named tuples of tensors) are
    concatenated along the batch. Only the first sub-batch updates running statistics. Without
    ``camids`` and ``viewids`` the network is called on the images alone, without ``viewids`` on
    the images and the camera ids.
    """
    def call(images, cams, views):
        if views is not None:
            return net(images, cams, views)
        return net(images) if cams is None else net(images, cams)

    if sub_batch <= 0 or sub_batch >= x.shape[0]:
        return call(x, camids, viewids)
    chunks = len(x.split(sub_batch))
    cam_chunks = camids.split(sub_batch) if camids is not None else [None] * chunks
    view_chunks = viewids.split(sub_batch) if viewids is not None else [None] * chunks
    outs = []
    for i, (chunk, cams, views) in enumerate(zip(x.split(sub_batch), cam_chunks, view_chunks)):
        with frozen_bn_statistics(net) if i else contextlib.nullcontext():
            outs.append(call(chunk, cams, views))
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
    """The student's forward over the batches of a step: one call, hence one DDP forward."""

    def __init__(self, student: nn.Module, sub_batch: int) -> None:
        super().__init__()
        self.student, self.sub_batch = student, sub_batch

    def forward(self, batches: list[torch.Tensor], camids: list[torch.Tensor],
                viewids: Optional[list[Optional[torch.Tensor]]] = None):
        views = viewids if viewids is not None else [None] * len(batches)
        return [forward_sub_batches(self.student, x, self.sub_batch, c, v) for x, c, v in zip(batches, camids, views)]


class _DescriptorFeatures(nn.Module):
    """Eval-mode extractor of the teacher's retrieval descriptor (TransReID: ``[f_g, f_l / k]``)."""

    def __init__(self, mt: MeanTeacher) -> None:
        super().__init__()
        self.mt = mt  # the whole pair, so that extraction puts all of it in eval mode and back

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.mt.teacher(x, camids, viewids)


class _LevelFeatures(nn.Module):
    """Eval-mode extractor of the three clustering features, concatenated ``(B, 3C)``.

    ``fused``: Ensemble Fusion(++) of the teacher's map and the student's ECAB vectors;
    otherwise the teacher's own global / top / bottom features.
    """

    def __init__(self, mt: MeanTeacher, fused: bool) -> None:
        super().__init__()
        self.mt, self.fused = mt, fused

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.fused:
            return torch.cat(list(self.mt.fused_features(x, camids, viewids)), dim=1)
        t = self.mt.teacher
        return torch.cat(t.branch_features(t.trunk(x, camids, viewids)), dim=1)


def _check_feature(mode: str) -> None:
    if mode not in CLUSTER_FEATURES:
        raise InvalidInputError(f"cluster.feature must be 'fused' or 'plain', got {mode!r}")


class AdaptationStep(ABC):
    """What the loop asks a method: set up the pair, then per epoch and per step.

    Built once per run, after the pair is on its device: the teacher becomes a copy of the student
    when ``model.alpha = 0``, and the student's forward is wrapped for DDP.
    """

    cluster_levels: ClassVar[int]
    """Pseudo-labelled levels clustered every epoch, in the order global, top, bottom."""

    def __init__(self, mt: MeanTeacher, criterion: Criterion, cfg: FinetuneCfg, rt: Runtime) -> None:
        self.mt, self.criterion, self.cfg, self.rt = mt, criterion, cfg, rt
        if criterion.levels > self.cluster_levels:
            raise InvalidInputError(f"loss.name={cfg.loss.name!r} reads the global, top and bottom batches, but "
                                    f"{cfg.model.name!r} clusters one level (its descriptor); choose a loss of the "
                                    f"global batch (transreid, cluster_contrast with loss.local_weight=0)")
        self.one_network = mt.alpha == 0
        if self.one_network:  # the teacher starts as an exact copy (heads too) and stays one
            mt.teacher.load_state_dict(mt.student.state_dict())
        self.net, self._wrapped_classifier = self._wrap(), mt.student.classifier

    @staticmethod
    @abstractmethod
    def cluster_view(mt: MeanTeacher, mode: str) -> nn.Module:
        """The eval-mode extractor of the clustered features, the levels concatenated ``(B, levels * C)``."""

    @property
    def networks(self) -> tuple[nn.Module, ...]:
        """The modules whose BatchNorm statistics training moves."""
        return self.mt.student, self.mt.teacher

    def _wrap(self) -> nn.Module:
        return self.rt.wrap(_StudentStep(self.mt.student, self.cfg.bn_sub_batch), find_unused_parameters=False)

    def start_epoch(self, centroids: torch.Tensor) -> None:
        """After the clustering: classifiers and the criterion start from the ``(K, d)`` centres."""
        self.mt.reset_classifiers(centroids)
        self.criterion.start_clustering(centroids)
        if self.mt.student.classifier is not self._wrapped_classifier:  # K changed: DDP must see the new layer
            self.net, self._wrapped_classifier = self._wrap(), self.mt.student.classifier

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters of this epoch's optimiser."""
        return [(n, p) for n, p in self.mt.student.named_parameters() if p.requires_grad]

    def teacher_pass(self, xs: list[torch.Tensor], cams: list[torch.Tensor], outs: list,
                     views: Optional[list[Optional[torch.Tensor]]] = None) -> list:
        """The teacher's own forward of this step, if any; the fused top / bottom features the
        criterion reads (None where not computed)."""
        return [None, None]

    def reduce_gradients(self) -> None:
        """Under torchrun: average the gradients DDP does not see (none here)."""

    def train_batch(self, xs: list[torch.Tensor], cams: list[torch.Tensor], ys: list[torch.Tensor],
                    optimizer: torch.optim.Optimizer, views: Optional[list[Optional[torch.Tensor]]] = None
                    ) -> dict[str, torch.Tensor]:
        """One student step on the pseudo-labelled batches (global, then top and bottom if read); its terms.

        ``views``: the view ids ``(B,)`` of each batch (-1 unknown; None for a target without views),
        handed to the networks and, gathered over the processes, to the criterion
        (:attr:`AdaptBatch.views`)."""
        views = list(views) if views is not None and any(v is not None for v in views) else None
        gathered = [self.rt.gather_labels(v) for v in views] if views is not None else None
        with self.rt.autocast():
            outs = self.net(xs, cams, views) if views is not None else self.net(xs, cams)
            terms = self.criterion(AdaptBatch(outs, ys, self.teacher_pass(xs, cams, outs, views), self.rt.gather,
                                              views=gathered))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.reduce_gradients()
        optimizer.step()
        self.criterion.own_step()  # the criterion's own parameters (centre loss), if any
        self.after_step()
        return terms

    def after_step(self) -> None:
        """The EMA update of the teacher (with one network, also the student's BN statistics)."""
        self.mt.update_teacher()
        if self.one_network:  # the teacher's BN statistics are the student's: no forward of its own
            self.mt.copy_student_buffers()

    def end_epoch(self) -> None:
        """Under torchrun the BN statistics of rank 0 are the ones kept (DDP's rule for the student)."""
        if self.rt.info.enabled:
            for m in self.networks:
                D.broadcast_buffers(m, self.rt.info)


class OneLevelStep(AdaptationStep):
    """A pair without CORE-ReID's halves (TransReID's ViT): its descriptor is clustered, one level."""

    cluster_levels = 1

    @staticmethod
    def cluster_view(mt: MeanTeacher, mode: str) -> nn.Module:
        _check_feature(mode)
        if mode == "fused":
            raise InvalidInputError(f"{type(mt.teacher).__name__} has no Ensemble Fusion to cluster; set "
                                    f"cluster.feature=plain (its retrieval descriptor is clustered)")
        return _DescriptorFeatures(mt)


class ThreeLevelStep(AdaptationStep):
    """CORE-ReID: three levels, Ensemble Fusion(++) with ECAB / SECAB, the EMA mean teacher.

    Each step the teacher's train-mode forward keeps its BN statistics on the target
    (``teacher_forward``, not with one network), and the fusion joins the teacher's maps of the top
    and bottom batches with the student's ECAB vectors for a criterion that ``uses_fused``.
    """

    cluster_levels = 3

    def __init__(self, mt: MeanTeacher, criterion: Criterion, cfg: FinetuneCfg, rt: Runtime) -> None:
        if not criterion.uses_fused:  # no loss reaches ECAB / SECAB / fusion BNs
            for m in (mt.student.ecab_top, mt.student.ecab_bottom, mt.fusion):
                m.requires_grad_(False)
        super().__init__(mt, criterion, cfg, rt)
        self.teacher_runs = (cfg.teacher_forward and not self.one_network) or criterion.uses_fused

    @staticmethod
    def cluster_view(mt: MeanTeacher, mode: str) -> nn.Module:
        _check_feature(mode)
        return _LevelFeatures(mt, fused=mode == "fused")

    @property
    def networks(self) -> tuple[nn.Module, ...]:
        return self.mt.student, self.mt.teacher, self.mt.fusion

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return super().trainable() + ([(n, p) for n, p in self.mt.fusion.named_parameters() if p.requires_grad]
                                      if self.criterion.uses_fused else [])

    def teacher_pass(self, xs: list[torch.Tensor], cams: list[torch.Tensor], outs: list,
                     views: Optional[list[Optional[torch.Tensor]]] = None) -> list:
        fused = [None, None]
        if not self.teacher_runs:
            return fused
        sub = self.cfg.bn_sub_batch
        views = views if views is not None else [None] * len(xs)
        with torch.no_grad():  # teacher BN statistics follow the target (outputs unused by the loss)
            teacher_maps = [forward_sub_batches(self.mt.teacher, x, sub, c, v).feature_map
                            for x, c, v in zip(xs, cams, views)]
        # Fusion in train mode: its BN running statistics track the target (as in the code);
        # a criterion that uses_fused trains through it (docs/method.md §9-Q1)
        if self.criterion.levels == 3:  # the fusion joins the top / bottom batches' maps and vectors
            with torch.enable_grad() if self.criterion.uses_fused else torch.no_grad():
                fused = [fuse_sub_batches(self.mt.fusion, teacher_maps[i], outs[i].psi_top, outs[i].psi_bottom, sub)
                         for i in (1, 2)]
        return fused

    def reduce_gradients(self) -> None:
        if self.rt.info.enabled and self.criterion.uses_fused:  # the fusion sits outside DDP: average its gradients
            D.all_reduce_mean_grads(self.mt.fusion, self.rt.info)


def step_class(mt: MeanTeacher) -> type[AdaptationStep]:
    """Three levels for a pair with Ensemble Fusion (CORE-ReID's halves), one for a pair without."""
    return OneLevelStep if mt.fusion is None else ThreeLevelStep


def choose_step(mt: MeanTeacher, criterion: Criterion, cfg: FinetuneCfg, rt: Runtime) -> AdaptationStep:
    """The step that trains ``criterion`` on ``mt`` (call it once the pair is on its device).

    Raises:
        InvalidInputError: the criterion reads more levels than the pair clusters.
    """
    return step_class(mt)(mt, criterion, cfg, rt)
