"""``transreid``: TransReID's ID + soft-margin triplet loss over the global and the JPM features
(docs/baselines.md §1.4), for source training and for fine-tuning on pseudo-labels.

As the official code (``loss/make_loss.py``)::

    ID  = 0.5 CE(z_g) + 0.5 mean_j CE(z_l^j)         z: logits of the post-BN-neck features
    TRI = 0.5 T(f_g)  + 0.5 mean_j T(f_l^j)          f: the features before the BN-necks
    L   = ID + TRI

with T the soft-margin batch-hard triplet on Euclidean (not squared) distances and CE without
label smoothing (``loss.label_smooth=0`` in the TransReID recipes). ``loss.jpm_weighting="paper"``
is the paper's ``L = CE(z_g) + T(f_g) + (1/k) sum_j [CE(z_l^j) + T(f_l^j)]``: the same terms at
twice the scale. Without JPM it is ``CE(z_g) + T(f_g)`` under both readings. The criteria read a
:class:`~corelib.models.TransReIDOutput`; in fine-tuning they take the global pseudo-labels of the
global batch alone (``levels = 1``).
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from .metric import CrossEntropyLabelSmooth, SoftTripletLoss
from .registry import AdaptBatch, Criterion, register_loss

JPM_WEIGHTINGS = ("code", "paper")


class _TransReIDTerms(Criterion):
    terms = ("loss", "id", "triplet")

    def __init__(self, cfg) -> None:
        super().__init__()
        weighting = getattr(cfg, "jpm_weighting", "code")
        if weighting not in JPM_WEIGHTINGS:
            raise InvalidInputError(f"loss.jpm_weighting must be one of {', '.join(JPM_WEIGHTINGS)}, got {weighting!r}")
        self.weighting = weighting
        self.ce, self.triplet = CrossEntropyLabelSmooth(cfg.label_smooth), SoftTripletLoss()

    def _terms(self, out, labels: torch.Tensor, gather) -> dict[str, torch.Tensor]:
        if not hasattr(out, "local_features"):
            raise InvalidInputError(f"loss transreid reads a TransReID network's output (model.name=transreid_net / "
                                    f"transreid_mean_teacher), got {type(out).__name__}")
        f_g, z_g = gather(out.features.float()), gather(out.logits.float())
        ce_g, tri_g = self.ce(z_g, labels), self.triplet(f_g, labels)
        k = out.local_features.shape[1]
        if not k:
            return {"loss": ce_g + tri_g, "id": ce_g, "triplet": tri_g}
        f_l, z_l = gather(out.local_features.float()), gather(out.local_logits.float())
        ce_l = torch.stack([self.ce(z_l[:, j], labels) for j in range(k)]).mean()
        tri_l = torch.stack([self.triplet(f_l[:, j], labels) for j in range(k)]).mean()
        w_g, w_l = (0.5, 0.5) if self.weighting == "code" else (1.0, 1.0)
        ident, tri = w_g * ce_g + w_l * ce_l, w_g * tri_g + w_l * tri_l
        return {"loss": ident + tri, "id": ident, "triplet": tri}


@register_loss("transreid", stage="pretrain")
class TransReIDSupervised(_TransReIDTerms):
    """Source training with the source identities."""

    def forward(self, outputs, pids: torch.Tensor, gather=lambda x: x) -> dict[str, torch.Tensor]:
        return self._terms(outputs, pids, gather)


@register_loss("transreid", stage="finetune")
class TransReIDPseudoLabels(_TransReIDTerms):
    """Fine-tuning on the pseudo-labels of the clustered descriptors (the global batch alone)."""

    levels = 1

    def forward(self, batch: AdaptBatch) -> dict[str, torch.Tensor]:
        return self._terms(batch.outputs[0], batch.labels[0], batch.gather)
