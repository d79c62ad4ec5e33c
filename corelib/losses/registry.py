"""Criteria by name: a loss is one file that registers itself; the loops log whatever terms it returns.

A criterion is an ``nn.Module`` built from the ``loss`` group of a training recipe
(:class:`~corelib.config.SourceLossCfg` or :class:`~corelib.config.AdaptLossCfg`). Its
``forward`` returns an ordered mapping of named scalar terms whose first entry, ``"loss"``, is the
total that is back-propagated; ``terms`` names them in that order before training starts, so the
loops log every term per epoch and the chapters plot what was logged.

- pre-training criteria (``stage = "pretrain"``) take ``(outputs, pids, gather)``: the network's
  training output (:class:`~corelib.models.SourceOutput`), the identities of the batch, and the
  function that collects a tensor from every process under torchrun (identity on one process);
- fine-tuning criteria (``stage = "finetune"``) take one :class:`AdaptBatch`; one that keeps a
  cluster memory overrides :meth:`Criterion.start_clustering`, which the loop calls with the ``(K, d)``
  centres of every new clustering (those the classifier starts from). ``levels`` says how many of
  the three pseudo-labelled batches (global, top, bottom) it reads: with 1 the loop loads and
  forwards the global batch alone, so a criterion of the global feature only costs a third;
- a criterion with parameters of its own (the centres of the centre loss) creates them in
  ``start_training(num_classes, feature_dim, device)`` (pre-training) or ``start_clustering``
  (fine-tuning) and updates them in :meth:`Criterion.own_step`, which the loops call after the
  network's optimiser step; :meth:`Criterion.own_state` goes into ``last.pt`` so a resumed run
  continues them;
- a criterion that reads the orientation (view) of each image declares ``uses_views = True``: the
  pre-training loop then calls it as ``criterion(outputs, pids, gather, views=viewids)`` and the
  fine-tuning loop fills :attr:`AdaptBatch.views` (``(B,)`` ids, -1 unknown); both refuse it on a
  training split without views.

Example (``corelib/losses/corereid.py`` registers the two criteria of the paper this way)::

    @register_loss("ce_only", stage="pretrain")
    class CEOnly(Criterion):
        terms = ("loss", "ce")
        def __init__(self, cfg): super().__init__(); self.ce = CrossEntropyLabelSmooth(cfg.label_smooth)
        def forward(self, outputs, pids, gather):
            ce = self.ce(gather(outputs.logits.float()), pids)
            return {"loss": ce, "ce": ce}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence

import torch
from torch import nn

from ..errors import InvalidInputError, InvalidTypeError, UnknownNameError
from ..registry import Registry

STAGES = ("pretrain", "finetune")


class Criterion(nn.Module):
    """Base class of the criteria: ``stage``, ``terms`` and ``uses_fused``."""

    stage: ClassVar[str] = "pretrain"
    terms: tuple[str, ...] = ("loss",)
    """Names of the returned terms, the total ``"loss"`` first."""
    uses_fused: bool = False
    """Fine-tuning: the criterion needs the Ensemble Fusion outputs with gradients (ECAB and SECAB train)."""
    levels: int = 3
    """Fine-tuning: pseudo-labelled batches read, in the order global, top, bottom (1 or 3)."""
    uses_views: bool = False
    """The criterion reads the batch's view ids (orientations): pre-training then calls it as
    ``criterion(outputs, pids, gather, views=viewids)``, fine-tuning fills :attr:`AdaptBatch.views`;
    the loops refuse it on a training split without views."""

    def start_clustering(self, centres: torch.Tensor) -> None:
        """Fine-tuning: start from this clustering's ``(K, d)`` centres (nothing to start by default)."""

    def own_step(self) -> None:
        """Update the criterion's own parameters after the network's optimiser step (none by default)."""

    def own_state(self) -> dict:
        """What a resumed run needs to continue the criterion's own parameters (checkpointed)."""
        return {}

    def load_own_state(self, state: dict) -> None:
        """Restore :meth:`own_state` (the loops call it on resume, after ``start_training``)."""


@dataclass
class AdaptBatch:
    """What one fine-tuning step hands its criterion."""

    outputs: Sequence  # FineTuneOutput of the student on the global, top and bottom batches
    labels: Sequence[torch.Tensor]  # pseudo-labels of the three batches (gathered over the processes)
    fused: Sequence[Optional[object]]  # FusedFeatures of the top / bottom batches, None when not computed
    gather: Callable[[torch.Tensor], torch.Tensor]  # every process's rows (identity on one process)
    views: Optional[Sequence[torch.Tensor]] = None
    """View ids ``(B,)`` of each pseudo-labelled batch (-1 unknown; gathered over the processes like
    the labels); None when the target has no views."""


def require_views(criterion: Criterion, samples: Sequence, where: str, *, has_views: Optional[bool] = None) -> None:
    """Refuse a criterion that reads views (``uses_views``) on a training split where no sample has one
    (``has_views``: that answer, when the caller knows it).

    Raises:
        InvalidInputError: naming the criterion, the split and the fix.
    """
    if not getattr(criterion, "uses_views", False):
        return
    if has_views is None:
        has_views = any(getattr(s, "viewid", None) is not None for s in samples)
    if not has_views:
        raise InvalidInputError(f"the {type(criterion).__name__} criterion reads each image's view (orientation), but "
                                f"{where} has no view ids; use a dataset with views (VeRi-776's keypoint files, the "
                                f"embedded data) or choose a loss without views")


LOSSES: dict[str, Registry[Callable[..., Criterion]]] = {
    stage: Registry(f"{stage} loss", "Register your own with corelib.losses.register_loss.") for stage in STAGES}
"""One registry per stage: a pre-training criterion cannot be asked for in fine-tuning."""


def register_loss(name: str, *, stage: str) -> Callable:
    """Register a criterion builder ``fn(loss_cfg) -> Criterion`` (a class works) for ``stage``."""
    if stage not in STAGES:
        raise InvalidInputError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return LOSSES[stage].register(name)


def list_losses(stage: Optional[str] = None) -> list[str]:
    """Registered criteria, of one stage or all."""
    return sorted(n for s in STAGES if stage is None or s == stage for n in LOSSES[s].names())


def loss_builder(name: str, stage: str) -> Callable[..., Criterion]:
    """The builder registered as ``name`` for ``stage``.

    Raises:
        UnknownNameError: no criterion of that name for that stage (the message lists those there
            are, and says when the name is another stage's).
    """
    others = [s for s in STAGES if s != stage and name in LOSSES[s]]
    if name not in LOSSES[stage] and others:
        raise UnknownNameError(f"unknown {stage} loss {name!r} ({name!r} is a {others[0]} criterion). Valid "
                               f"names: {', '.join(LOSSES[stage].names())}")
    return LOSSES[stage].get(name)


def build_criterion(cfg, *, stage: str) -> Criterion:
    """The criterion ``cfg.name`` of ``stage``, built from the loss settings ``cfg``.

    Raises:
        UnknownNameError: no criterion of that name for that stage (the message lists those there are).
    """
    criterion = loss_builder(cfg.name, stage)(cfg)
    if not criterion.terms or criterion.terms[0] != "loss":
        raise InvalidTypeError(f"loss {cfg.name!r} must declare terms starting with 'loss' (the total), got {criterion.terms}")
    if getattr(criterion, "levels", 3) not in (1, 3):
        raise InvalidTypeError(f"loss {cfg.name!r} declares levels={criterion.levels}; a criterion reads the global "
                               f"batch alone (1) or all three (3)")
    if getattr(criterion, "levels", 3) == 1 and getattr(criterion, "uses_fused", False):
        raise InvalidTypeError(f"loss {cfg.name!r} uses the fused top / bottom features, which need levels=3")
    return criterion
