"""The mean-teacher pair of CORE-ReID fine-tuning (docs/method.md §3.1, §3.10).

The student trains; the teacher follows it by an exponential moving average of the *parameters*
after every optimiser step ``t`` (0-based)::

    alpha_t = min(1 - 1 / (t + 1), alpha)        # alpha = 0.999; alpha_0 = 0 copies the student
    theta_T <- alpha_t * theta_T + (1 - alpha_t) * theta_S

BatchNorm running statistics are buffers, not parameters: they are not averaged, the teacher's come
from its own train-mode forward passes. The teacher never receives gradients. At inference only the
teacher is used. The Ensemble Fusion block combines the teacher's map with the student's ECAB
vectors to produce the features that are clustered. A pair of networks without ECAB halves
(TransReID's, :mod:`corelib.models.transreid`) has no fusion block (``fusion=None``): the teacher's
descriptor is clustered then.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import InvalidInputError
from .fusion import EnsembleFusion, FusedFeatures


class MeanTeacher(nn.Module):
    """Student, EMA teacher and the Ensemble Fusion block that joins them."""

    def __init__(self, student: nn.Module, teacher: nn.Module, fusion: Optional[EnsembleFusion], *,
                 alpha: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= alpha < 1.0:
            raise InvalidInputError(f"EMA alpha must be in [0, 1), got {alpha}")
        s_shapes = {k: v.shape for k, v in student.named_parameters()}
        t_shapes = {k: v.shape for k, v in teacher.named_parameters()}
        if s_shapes != t_shapes:
            raise InvalidInputError("student and teacher must have the same architecture (same backbone, K and switches)")
        self.student, self.teacher, self.fusion = student, teacher, fusion
        self.alpha = alpha
        self.teacher.requires_grad_(False)
        with torch.no_grad():  # the teacher's classifier starts as a copy of the student's
            self.teacher.classifier.weight.copy_(self.student.classifier.weight)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def ema_alpha(self, step: int) -> float:
        """alpha_t = min(1 - 1/(t+1), alpha)."""
        return min(1.0 - 1.0 / (step + 1), self.alpha)

    @torch.no_grad()
    def update_teacher(self) -> float:
        """One EMA step over the parameters; returns the alpha_t used."""
        a = self.ema_alpha(int(self.step))
        for (name, t), s in zip(self.teacher.named_parameters(), self.student.parameters()):
            if t.shape != s.shape:
                raise RuntimeError(f"teacher/student mismatch at {name}: reset both classifiers together")
            t.mul_(a).add_(s.detach(), alpha=1.0 - a)
        self.step += 1
        return a

    @torch.no_grad()
    def copy_student_buffers(self) -> None:
        """The student's BatchNorm statistics into the teacher (one network, ``alpha = 0``: the
        teacher then equals the student without a forward pass of its own)."""
        for t, s in zip(self.teacher.buffers(), self.student.buffers()):
            t.copy_(s)

    def reset_classifiers(self, centroids: torch.Tensor) -> None:
        """Load the same normalised centroids into the student and the teacher (method §3.9)."""
        self.student.reset_classifier(centroids)
        self.teacher.reset_classifier(centroids)
        self.teacher.classifier.weight.requires_grad_(False)

    @property
    def test_flip(self) -> bool:
        """The teacher's test protocol (it is the network evaluated)."""
        return bool(getattr(self.teacher, "test_flip", True))

    @property
    def num_classes(self) -> int:
        """K: rows of the (shared-size) classifiers."""
        return self.student.num_classes

    def fused_features(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                       viewids: Optional[torch.Tensor] = None) -> FusedFeatures:
        """Ensemble Fusion(++) of the teacher's map and the student's ECAB vectors."""
        if self.fusion is None:
            raise InvalidInputError(f"this mean teacher of {type(self.student).__name__} has no Ensemble Fusion; "
                                    f"cluster its descriptor (cluster.feature=plain)")
        _, psi_top, psi_bottom = self.student.ecab_vectors(images, camids, viewids)
        with torch.no_grad():
            teacher_map = self.teacher.trunk(images, camids, viewids)
        return self.fusion(teacher_map, psi_top, psi_bottom)

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None):
        """Eval mode: the teacher's retrieval descriptor. Training mode: the student's outputs."""
        net = self.student if self.training else self.teacher
        return net(images, camids, viewids)
