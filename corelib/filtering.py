"""TransReID-SSL's conditional filtering (CFS; Luo et al. 2021, docs/baselines.md §1b.3): which images of
a large unlabelled pre-training pool are worth pre-training on, for a given re-ID target.

The catastrophic-forgetting score of an image is the cosine between the features two proxy models
give it: a *source proxy* (a model pre-trained on the pool) and a *target proxy* (the same model
after fine-tuning on the re-ID data). ``CFS(x) = cos(f_src(x), f_tgt(x))``: a high score means the
fine-tuning left the image's representation where it was (it "forgot" little of it), which the
authors read as the image being close to the downstream re-ID data. The pool is ordered by CFS and
its head kept (50 % or 60 % of LUPerson in the paper; the released loader keeps the first
``keep_num`` of the ordered list). Features are the eval-mode descriptors at the test transform,
without the flip (TransReID-SSL's script reads the [cls] feature before the BN-neck), and each
model sees its own camera-blind input (the pool has no cameras of the proxies' data).

- :func:`forgetting_scores`: CFS of every image of a pool (a list of ``(path, pid, camid)``);
- :func:`keep_share`: the indices of the share with the highest (or lowest) scores;
- :func:`filter_pool`: both, over a pool made of named parts (domains), with what share of each
  part is kept: on the embedded data, which synthetic domains the filter keeps for a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.batches import build_loader
from .data.transforms import build_transforms
from .errors import InvalidInputError
from .features import extract_features
from .models import CameraBlind


def _features(model: nn.Module, samples: Sequence, height: int, width: int, device, batch_size: int) -> torch.Tensor:
    loader = build_loader(list(samples), build_transforms("test", height, width), batch_size)
    return extract_features(CameraBlind(model), loader, device=device, flip=False, channels_last=False).features


def forgetting_scores(source_proxy: nn.Module, target_proxy: nn.Module, samples: Sequence, *,
                      height: int, width: int, target_size: Union[tuple[int, int], None] = None,
                      device: Union[str, torch.device] = "cpu", batch_size: int = 128) -> np.ndarray:
    """``CFS(x) = cos(f_src(x), f_tgt(x))`` for every sample, in the samples' order: ``(n,)`` in [-1, 1].

    Args:
        source_proxy, target_proxy: networks whose eval mode returns descriptors of one width (the
            same architecture before and after fine-tuning).
        samples: the pool, ``(path, pid, camid)`` (pid and camid unused).
        height, width: the source proxy's input size; ``target_size`` the target proxy's when it
            differs (default: the same).

    Raises:
        InvalidInputError: an empty pool, or descriptors of different widths.
    """
    if not len(samples):
        raise InvalidInputError("the pre-training pool is empty: pass at least one image")
    th, tw = target_size or (height, width)
    a = _features(source_proxy, samples, height, width, device, batch_size)
    b = _features(target_proxy, samples, th, tw, device, batch_size)
    if a.shape != b.shape:
        raise InvalidInputError(f"the proxies' descriptors differ in width ({a.shape[1]} vs {b.shape[1]}): CFS compares "
                                f"one model before and after fine-tuning")
    return F.cosine_similarity(a.float(), b.float(), dim=1).numpy()


def keep_share(scores: np.ndarray, share: float, *, highest: bool = True) -> np.ndarray:
    """Indices of the ``round(share * n)`` samples with the highest scores (TransReID-SSL keeps the
    head of the list ordered by CFS), sorted by score (ties by index, so the choice is repeatable);
    ``highest=False`` keeps the lowest.

    Raises:
        InvalidInputError: ``share`` outside (0, 1].
    """
    if not 0.0 < share <= 1.0:
        raise InvalidInputError(f"share must be in (0, 1], got {share}")
    scores = np.asarray(scores, dtype=np.float64)
    keep = max(1, int(round(share * len(scores))))
    order = np.lexsort((np.arange(len(scores)), -scores if highest else scores))
    return order[:keep]


@dataclass
class FilteredPool:
    """What :func:`filter_pool` kept."""

    scores: dict[str, np.ndarray]  # CFS per part, in each part's sample order
    kept: dict[str, np.ndarray]  # indices kept per part (the highest scores of the pool)
    share: float  # of the whole pool
    kept_lowest: dict[str, np.ndarray] = None  # indices kept per part when the lowest scores are kept

    def table(self) -> list[dict]:
        """Per part: images, kept (highest CFS: the reading docs/baselines.md §1b.3 gives the released
        loader), share kept, the share kept when the lowest are kept instead, mean CFS."""
        rows = []
        for name, s in self.scores.items():
            n = max(len(s), 1)
            row = {"domain": name, "images": len(s), "kept": len(self.kept[name]),
                   "share kept": round(len(self.kept[name]) / n, 3)}
            if self.kept_lowest is not None:
                row["share kept, lowest CFS first"] = round(len(self.kept_lowest[name]) / n, 3)
            rows.append({**row, "mean CFS": round(float(np.mean(s)), 4)})
        return rows


def filter_pool(source_proxy: nn.Module, target_proxy: nn.Module, parts: Mapping[str, Sequence], share: float, *,
                height: int, width: int, target_size: Union[tuple[int, int], None] = None,
                device: Union[str, torch.device] = "cpu", batch_size: int = 128) -> FilteredPool:
    """CFS over a pool made of named parts (e.g. domains), and the ``share`` of the whole pool with
    the highest scores (and, for comparison, with the lowest): which part each kept image came from.
    Which end TransReID-SSL keeps is not confirmed from its script (docs/baselines.md §1b.3 reads the
    loader as keeping the highest), so the table shows both."""
    names = list(parts)
    if not names:
        raise InvalidInputError("the pool has no parts")
    pool = [s for name in names for s in parts[name]]
    scores = forgetting_scores(source_proxy, target_proxy, pool, height=height, width=width,
                               target_size=target_size, device=device, batch_size=batch_size)
    bounds = np.cumsum([0] + [len(parts[n]) for n in names])

    def per_part(kept: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.sort(kept[(kept >= bounds[i]) & (kept < bounds[i + 1])] - bounds[i])
                for i, name in enumerate(names)}

    out_scores = {name: scores[bounds[i]:bounds[i + 1]] for i, name in enumerate(names)}
    return FilteredPool(out_scores, per_part(keep_share(scores, share)), share,
                        per_part(keep_share(scores, share, highest=False)))
