"""Orientation (view) estimators: view ids for a dataset that has none, from a trained network.

The orientation-aware triplet (:mod:`corelib.losses.orientation`) needs the view of every training
image. Where the target has no orientation labels, an estimator predicts them: it is fitted on
images whose views are known (the labelled source) and predicts the target's; the
``corereid_v2_orientation_estimated`` recipe fine-tunes on those (``FinetuneCfg.target_views =
"estimated"``).

- estimators are plug-ins: :func:`register_view_estimator` registers a builder
  ``fn(model, samples, height, width, *, device, seed) -> estimator`` whose result has
  ``predict(samples) -> np.ndarray`` (one view id per sample); :func:`fit_view_estimator` builds one by
  name, :func:`list_view_estimators` lists them;
- the default ``"view_head"`` is a multinomial logistic regression on the frozen network's test
  descriptors (:func:`corelib.features.extract_split`), fitted by full-batch L-BFGS in float64 on
  the CPU from a seeded start, so one seed gives one estimator;
- :func:`accuracy` scores an estimator on samples with known views (e.g. the embedded target, whose
  generator wrote the views it drew);
- :func:`with_estimated_views` returns a copy of a dataset whose split carries the predicted views,
  marked ``extras["views"] = "estimated"`` (the mark fine-tuning checks against ``target_views``).

Example::

    estimator = fit_view_estimator("view_head", source_net, source.train, 256, 128, device="cuda", seed=1)
    print(accuracy(estimator, target.train))          # the embedded target has views to score against
    target_est = with_estimated_views(target, estimator.predict(target.train))
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .data.dataset import SPLIT_NAMES, ReIDDataset
from .errors import InvalidInputError
from .features import extract_split
from .registry import Registry


class ViewEstimator(Protocol):
    """What an estimator offers: one view id per sample."""

    def predict(self, samples: Sequence) -> np.ndarray: ...


VIEW_ESTIMATORS: Registry[Callable[..., ViewEstimator]] = Registry(
    "view estimator", "Register your own with corelib.orientation.register_view_estimator.")
"""Orientation estimators by name: builders ``fn(model, samples, height, width, *, device, seed)``."""


def register_view_estimator(name: str) -> Callable:
    """Register an estimator builder ``fn(model, samples, height, width, *, device, seed) -> estimator``
    (a class works); the estimator has ``predict(samples) -> np.ndarray``."""
    return VIEW_ESTIMATORS.register(name)


def list_view_estimators() -> list[str]:
    """The registered orientation estimators."""
    return VIEW_ESTIMATORS.names()


def fit_view_estimator(name: str, model, samples: Sequence, height: int, width: int, *,
                       device: Union[str, torch.device] = "cpu", seed: int = 0) -> ViewEstimator:
    """The estimator ``name`` fitted on ``samples`` (those with a known ``viewid``) with ``model``'s help.

    Raises:
        UnknownNameError: no estimator of that name (the message lists those there are).
        InvalidInputError: fewer than two distinct known views among ``samples``.
    """
    return VIEW_ESTIMATORS.get(name)(model, samples, height, width, device=device, seed=seed)


def known_views(samples: Sequence) -> tuple[list[int], np.ndarray]:
    """Positions and view ids of the samples whose view is known (``viewid`` not None)."""
    positions = [i for i, s in enumerate(samples) if getattr(s, "viewid", None) is not None]
    return positions, np.array([int(samples[i].viewid) for i in positions], dtype=np.int64)


def accuracy(estimator: ViewEstimator, samples: Sequence) -> float:
    """Share of the samples with a known view whose predicted view is that view.

    Raises:
        InvalidInputError: no sample has a known view (nothing to score against).
    """
    positions, truth = known_views(samples)
    if not positions:
        raise InvalidInputError("accuracy needs samples with known views (viewid); these have none: score on a "
                                "split whose loader reads views, e.g. the embedded target")
    predicted = np.asarray(estimator.predict([samples[i] for i in positions])).reshape(-1)
    return float((predicted == truth).mean())


class LinearViewClassifier:
    """Multinomial logistic regression ``softmax(x W + b)`` on descriptors, L2-penalised.

    Fitted by full-batch L-BFGS (strong Wolfe line search) in float64 on the CPU from a start drawn
    with ``seed``: deterministic for a seed.
    """

    def __init__(self, features: torch.Tensor, views: np.ndarray, *, seed: int = 0, l2: float = 1e-4,
                 max_iter: int = 200) -> None:
        views = np.asarray(views, dtype=np.int64).reshape(-1)
        if len(views) != len(features):
            raise InvalidInputError(f"{len(features)} descriptors but {len(views)} view ids; give one view per descriptor")
        if len(np.unique(views)) < 2:
            raise InvalidInputError(f"an orientation estimator needs at least two distinct views to learn from, got "
                                    f"{sorted(set(views.tolist()))}; fit it on a split whose samples carry viewid")
        x = torch.as_tensor(features).detach().to("cpu", torch.float64)
        y = torch.as_tensor(views)
        self.num_views = int(views.max()) + 1
        gen = torch.Generator().manual_seed(int(seed))
        weight = (0.01 * torch.randn(x.shape[1], self.num_views, generator=gen, dtype=torch.float64)).requires_grad_()
        bias = torch.zeros(self.num_views, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()

    def predict_features(self, features: torch.Tensor) -> np.ndarray:
        """The most probable view of each descriptor row."""
        x = torch.as_tensor(features).detach().to("cpu", torch.float64)
        return (x @ self.weight + self.bias).argmax(dim=1).numpy()


@register_view_estimator("view_head")
class ViewHead:
    """A linear view classifier (:class:`LinearViewClassifier`) on the frozen ``model``'s test
    descriptors; fitted on the samples whose view is known."""

    def __init__(self, model, samples: Sequence, height: int, width: int, *,
                 device: Union[str, torch.device] = "cpu", seed: int = 0) -> None:
        positions, views = known_views(samples)
        if not positions:
            raise InvalidInputError("the view estimator got no sample with a known view (viewid); fit it on the "
                                    "labelled source's training split")
        self.model, self.height, self.width, self.device = model, int(height), int(width), device
        self.classifier = LinearViewClassifier(self._descriptors([samples[i] for i in positions]), views, seed=seed)

    def _descriptors(self, samples: Sequence) -> torch.Tensor:
        return extract_split(self.model, list(samples), self.height, self.width, device=self.device).features

    def predict(self, samples: Sequence) -> np.ndarray:
        """One view id per sample."""
        return self.classifier.predict_features(self._descriptors(samples))


def estimator_report(estimator: ViewEstimator, source: Sequence, target: Sequence,
                     predicted: Union[Sequence[int], np.ndarray, None] = None) -> dict:
    """Percentages for a table: the estimator's accuracy on the ``source`` samples it was fitted on and on
    the ``target`` samples it labels (``predicted``: its predictions for ``target``, when made already),
    and ``chance``, the share of the target's most frequent view (what always answering it scores).

    Raises:
        InvalidInputError: ``source`` or ``target`` has no sample with a known view.
    """
    positions, truth = known_views(target)
    if not positions:
        raise InvalidInputError("estimator_report needs target samples with known views to score against")
    guess = (np.asarray(estimator.predict([target[i] for i in positions])) if predicted is None
             else np.asarray(predicted).reshape(-1)[positions])
    return {"source accuracy": round(100 * accuracy(estimator, source), 1),
            "target accuracy": round(100 * float((guess == truth).mean()), 1),
            "chance": round(100 * float(np.bincount(truth).max() / len(truth)), 1), "target images": len(positions)}


def with_estimated_views(dataset: ReIDDataset, views: Union[Sequence[int], np.ndarray],
                         split: str = "train") -> ReIDDataset:
    """A copy of ``dataset`` whose ``split`` carries ``views`` (one per sample, in order), marked
    ``extras["views"] = "estimated"``; the other splits keep their samples, the original is untouched.

    Raises:
        InvalidInputError: an unknown split, a view count that is not the split's size, or samples
            without a ``viewid`` field.
    """
    if split not in SPLIT_NAMES:
        raise InvalidInputError(f"unknown split {split!r}: use one of {', '.join(SPLIT_NAMES)}")
    rows = dataset.split(split)
    views = np.asarray(views).reshape(-1)
    if len(views) != len(rows):
        raise InvalidInputError(f"{len(views)} estimated views for the {len(rows)} images of {dataset.name}'s {split} "
                                f"split; predict one view per image of that split")
    if rows and "viewid" not in getattr(rows[0], "_fields", ()):
        raise InvalidInputError(f"{dataset.name}'s samples have no viewid field ({type(rows[0]).__name__}); build them "
                                f"as corelib.data.Sample(path, pid, camid, viewid)")
    splits = {name: list(dataset.split(name)) for name in SPLIT_NAMES}
    splits[split] = [s._replace(viewid=int(v)) for s, v in zip(rows, views)]
    return dataclasses.replace(dataset, **splits, extras={**dataset.extras, "views": "estimated"})


__all__ = ["VIEW_ESTIMATORS", "LinearViewClassifier", "ViewEstimator", "ViewHead", "accuracy", "estimator_report",
           "fit_view_estimator",
           "known_views", "list_view_estimators", "register_view_estimator", "with_estimated_views"]
