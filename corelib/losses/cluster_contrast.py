"""Cluster Contrast (Dai et al., ACCV 2022) as a fine-tuning criterion: InfoNCE against a cluster memory.

docs/baselines.md §3.5. The memory holds one L2-normalised centroid per pseudo-identity. It is rebuilt
at every clustering from the centres the fine-tuning loop computes (the same ones the classifier
starts from: :meth:`ClusterContrast.start_clustering`), and after every step each cluster of the
batch moves towards its members, ``psi <- normalise(m psi + (1 - m) q)``: sample by sample in batch
order (the default since the authors' 11/2021 code), or only with the cluster's hardest instance of
the batch, the one least similar to its centroid (``loss.contrast.hard``; the code calls it
``median`` although it takes the minimum). ``m`` weighs the OLD value (docs/baselines.md §3.8, item 1).

    L = -log exp(q . psi_y / tau) / sum_k exp(q . psi_k / tau)      on the global features (tau = 0.05)

In the mean-teacher loop the query ``q`` is the student's global feature after its BN-neck,
L2-normalised (2,048 values for ResNet-50, as in the published code). With ``loss.local_weight``
> 0 the top and bottom branches add CORE-ReID's weighted triplet terms (so ECAB and the local heads
train too); the ``cluster_contrast`` recipe sets it to 0, the published loss, and the loop then
loads the global batch alone (``levels = 1``). Outliers have no slot: the samplers leave them out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .metric import SoftTripletLoss
from .registry import AdaptBatch, Criterion, register_loss


def momentum_update(memory: torch.Tensor, queries: torch.Tensor, labels: torch.Tensor, momentum: float, *,
                    hard: bool = False) -> torch.Tensor:
    """The memory after one batch: ``(K, d)`` centroids, ``(B, d)`` unit queries, ``(B,)`` cluster ids.

    Returns a new tensor (the old one may still be needed by autograd for this step's loss).
    """
    out = memory.clone()
    for y in torch.unique(labels).tolist():
        members = queries[labels == y]
        if hard:  # the member least similar to its centroid (argmin of the dot product)
            members = members[torch.argmin(members @ out[y])][None]
        for q in members:  # sequential within the batch, as the published update
            out[y] = F.normalize(momentum * out[y] + (1.0 - momentum) * q, dim=0)
    return out


@register_loss("cluster_contrast", stage="finetune")
class ClusterContrast(Criterion):
    """``L = InfoNCE(q_g, memory) + w (tri(f_top, y_top) + tri(f_bot, y_bot))`` (the module docstring)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        c = cfg.contrast
        self.temperature, self.momentum, self.hard = c.temperature, c.momentum, c.hard
        self.local_weight = cfg.local_weight
        self.triplet = SoftTripletLoss()
        # the published loss is the InfoNCE alone (local_weight 0): then only the global batch is loaded
        self.levels = 3 if self.local_weight > 0 else 1
        self.terms = ("loss", "nce", "tri_top", "tri_bottom") if self.levels == 3 else ("loss", "nce")
        self.memory: torch.Tensor | None = None

    def start_clustering(self, centres: torch.Tensor) -> None:
        """Rebuild the memory from this clustering's ``(K, d)`` centres (L2-normalised here)."""
        if centres.shape[0] == 0:
            raise InvalidInputError(f"cluster_contrast: the pseudo-labeller found no cluster (centres of shape "
                                    f"{tuple(centres.shape)}), so the cluster memory would be empty; with "
                                    f"cluster.labeler=dbscan raise cluster.dbscan.eps or lower "
                                    f"cluster.dbscan.min_samples, with kmeans set cluster.num_clusters >= 2")
        self.memory = F.normalize(centres.detach().float(), dim=1)

    def forward(self, batch: AdaptBatch) -> dict[str, torch.Tensor]:
        if self.memory is None:
            raise InvalidInputError("cluster_contrast has no cluster memory: the loop must call "
                                    "start_clustering(centres) after every clustering")
        g, y_g = batch.outputs[0], batch.labels[0]
        # the global feature (CORE-ReID's network), or a TransReID network's [f_g, f_l / k]: the clustered vector
        q = F.normalize(batch.gather(getattr(g, "query", g.global_feat).float()), dim=1)
        if q.shape[1] != self.memory.shape[1]:
            raise InvalidInputError(f"cluster_contrast: the global features have {q.shape[1]} values but the cluster "
                                    f"centres {self.memory.shape[1]}; cluster the global features (cluster.feature)")
        memory = self.memory.to(q.device)
        nce = F.cross_entropy(q @ memory.t() / self.temperature, y_g)
        with torch.no_grad():
            self.memory = momentum_update(memory, q.detach(), y_g, self.momentum, hard=self.hard)
        if self.levels == 1:
            return {"loss": nce, "nce": nce}
        (_, top, bot), (_, y_top, y_bot) = batch.outputs, batch.labels
        parts = {"nce": nce, "tri_top": self.triplet(batch.gather(top.top_feat.float()), y_top),
                 "tri_bottom": self.triplet(batch.gather(bot.bottom_feat.float()), y_bot)}
        return {"loss": nce + self.local_weight * (parts["tri_top"] + parts["tri_bottom"]), **parts}
