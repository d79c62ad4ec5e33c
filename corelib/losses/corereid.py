"""The criteria of CORE-ReID V2: source pre-training and mean-teacher fine-tuning (docs/method.md §2.4, §3.8)."""

from __future__ import annotations

import torch

from .metric import CrossEntropyLabelSmooth, SoftTripletLoss
from .registry import AdaptBatch, Criterion, register_loss


@register_loss("ce_triplet", stage="pretrain")
class SupervisedCETriplet(Criterion):
    """``L = CE_ls(logits, pid) + soft triplet(pooled feature before the BN-neck)``."""

    terms = ("loss", "ce", "triplet")

    def __init__(self, cfg) -> None:
        super().__init__()
        self.ce, self.triplet = CrossEntropyLabelSmooth(cfg.label_smooth), SoftTripletLoss()

    def forward(self, outputs, pids: torch.Tensor, gather=lambda x: x, views=None) -> dict[str, torch.Tensor]:
        # the losses see the whole global batch under torchrun (gathered with gradients)
        features = gather(outputs.features.float())
        logits = gather(outputs.logits.float())
        ce, tri = self.ce(logits, pids), self.triplet_term(features, pids, views)
        return {"loss": ce + tri, "ce": ce, "triplet": tri}

    def triplet_term(self, features: torch.Tensor, pids: torch.Tensor, views=None) -> torch.Tensor:
        """The triplet of the batch (views unused here; an orientation-aware criterion mines with them)."""
        return self.triplet(features, pids)


@register_loss("corereid", stage="finetune")
class CoreReIDAdaptation(Criterion):
    """``L = CE_ls(W f_g, y_g) + tri(f_g, y_g) + w (tri(f_top, y_top) + tri(f_bot, y_bot))`` (docs/method.md §3.8).

    Each term on its own batch: global on B_g, top on B_top, bottom on B_bot. With ``fused_loss``
    it adds ``w (tri(fused_top, y_top) + tri(fused_bot, y_bot))`` on the Ensemble Fusion outputs,
    the only path by which ECAB, SECAB and the fusion BatchNorms receive gradients (docs/method.md §9-Q1).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.ce, self.triplet = CrossEntropyLabelSmooth(cfg.label_smooth), SoftTripletLoss()
        self.local_weight, self.uses_fused = cfg.local_weight, cfg.fused_loss
        self.terms = ("loss", "ce", "tri_global", "tri_top", "tri_bottom") + \
            (("tri_fused_top", "tri_fused_bottom") if cfg.fused_loss else ())

    def forward(self, batch: AdaptBatch) -> dict[str, torch.Tensor]:
        g, top, bot = batch.outputs
        y_g, y_top, y_bot = batch.labels
        views = getattr(batch, "views", None)
        v_g, v_top, v_bot = (None, None, None) if views is None else views
        f_g = batch.gather(g.global_feat.float())
        logits = batch.gather(g.logits.float())
        f_top = batch.gather(top.top_feat.float())
        f_bot = batch.gather(bot.bottom_feat.float())
        parts = {"ce": self.ce(logits, y_g), "tri_global": self.triplet_term(f_g, y_g, v_g),
                 "tri_top": self.triplet_term(f_top, y_top, v_top), "tri_bottom": self.triplet_term(f_bot, y_bot, v_bot)}
        loss = parts["ce"] + parts["tri_global"] + self.local_weight * (parts["tri_top"] + parts["tri_bottom"])
        if self.uses_fused:
            fused_top, fused_bot = batch.fused
            parts["tri_fused_top"] = self.triplet_term(batch.gather(fused_top.top_feat.float()), y_top, v_top)
            parts["tri_fused_bottom"] = self.triplet_term(batch.gather(fused_bot.bottom_feat.float()), y_bot, v_bot)
            loss = loss + self.local_weight * (parts["tri_fused_top"] + parts["tri_fused_bottom"])
        return {"loss": loss, **parts}

    def triplet_term(self, features: torch.Tensor, labels: torch.Tensor, views=None) -> torch.Tensor:
        """One triplet term on one batch (views unused here; an orientation-aware criterion mines with them)."""
        return self.triplet(features, labels)
