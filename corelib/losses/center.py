"""``ce_triplet_center``: the Bag-of-Tricks criterion Learn by Guessing trains with (docs/baselines.md §2.3).

``L = CE_ls(logits, y) + tri_m(f, y) + beta * L_center(f, y)``, with the fixed-margin batch-hard
triplet (m = 0.3) and the centre loss on the pooled feature (before the BN-neck in pre-training,
the global feature in fine-tuning). The centres are the criterion's own parameters: created for the
source identities when pre-training starts (``start_training``), and anew for the clusters of every
clustering in fine-tuning (``start_clustering``: Learn by Guessing's fresh classifier per refinement
step), each time with a fresh SGD (lr ``loss.center.lr``). Before each SGD step their gradient is
multiplied by 1 / beta, so the centres move as if the loss had weight 1 (BoT / TransReID).

Settings: ``loss.center`` (:class:`~corelib.config.CenterLossCfg`). Registered for both stages;
in fine-tuning it reads the global batch alone (``levels = 1``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import InvalidInputError
from .metric import CrossEntropyLabelSmooth, center_loss, triplet_loss
from .registry import AdaptBatch, Criterion, register_loss


class _Centres(Criterion):
    """Centres with their own SGD, and the three terms."""

    terms = ("loss", "ce", "triplet", "center")

    def __init__(self, cfg) -> None:
        super().__init__()
        c = cfg.center
        self.weight, self.lr = c.weight, c.lr
        self.ce, self.triplet = CrossEntropyLabelSmooth(cfg.label_smooth), triplet_loss(c.triplet_margin)
        self.centres: Optional[nn.Parameter] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None

    def _new_centres(self, num_classes: int, feature_dim: int, device) -> None:
        # randn as in BoT's CenterLoss; drawn from the torch RNG the loops seed and checkpoint
        self.centres = nn.Parameter(torch.randn(num_classes, feature_dim).to(device))
        self.optimizer = torch.optim.SGD([self.centres], lr=self.lr)

    def _terms(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.centres is None:
            raise InvalidInputError("ce_triplet_center has no centres: the loop must call start_training (pre-training) "
                                    "or start_clustering (fine-tuning) first")
        if logits.shape[1] != self.centres.shape[0]:
            raise InvalidInputError(f"ce_triplet_center: {logits.shape[1]} classes but {self.centres.shape[0]} centres")
        ce, tri = self.ce(logits, labels), self.triplet(features, labels)
        cen = center_loss(features, labels, self.centres)
        return {"loss": ce + tri + self.weight * cen, "ce": ce, "triplet": tri, "center": cen}

    def own_step(self) -> None:
        if self.centres is None or self.centres.grad is None:
            return
        with torch.no_grad():
            self.centres.grad.mul_(1.0 / self.weight)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def own_state(self) -> dict:
        if self.centres is None:
            return {}
        return {"centres": self.centres.detach().cpu(), "optimizer": self.optimizer.state_dict()}

    def load_own_state(self, state: dict) -> None:
        if not state:
            return
        with torch.no_grad():
            self.centres.copy_(state["centres"].to(self.centres.device))
        self.optimizer.load_state_dict(state["optimizer"])


@register_loss("ce_triplet_center", stage="pretrain")
class SupervisedCenter(_Centres):
    """Source pre-training: the pooled feature before the BN-neck, the source identities' centres."""

    def start_training(self, num_classes: int, feature_dim: int, device) -> None:
        self._new_centres(num_classes, feature_dim, device)

    def forward(self, outputs, pids: torch.Tensor, gather=lambda x: x) -> dict[str, torch.Tensor]:
        return self._terms(gather(outputs.features.float()), gather(outputs.logits.float()), pids)


@register_loss("ce_triplet_center", stage="finetune")
class PseudoLabelCenter(_Centres):
    """Fine-tuning on pseudo-labels: the global feature of the global batch, one centre per cluster,
    new centres at every clustering."""

    levels = 1

    def start_clustering(self, centres: torch.Tensor) -> None:
        self._new_centres(centres.shape[0], centres.shape[1], centres.device)

    def forward(self, batch: AdaptBatch) -> dict[str, torch.Tensor]:
        g = batch.outputs[0]
        return self._terms(batch.gather(g.global_feat.float()), batch.gather(g.logits.float()), batch.labels[0])
