"""Pseudo-labellers by name, and the multi-level clustering of fine-tuning.

CORE-ReID clusters three features of every target training image each epoch (global, top and
bottom; docs/method.md §3.7). :func:`cluster_pseudo_labels` normalises each level's features (an option
of every labeller, :mod:`corelib.cluster.normalize`), runs the labeller named in the settings and
checks what it returned. A labeller is a function registered with :func:`register_labeler`::

    @dataclass(frozen=True)
    class MyCfg(Settings):               # its settings, typed and checked (cluster.options)
        radius: float = 0.5

    @register_labeler("my_labeller", settings=MyCfg, needs_k=False)
    def my_labeller(features, camids, cfg, *, seed, epoch, device):
        # features: one (n, d) tensor per level; camids: (n,) ints (-1: no camera);
        # cfg: the ClusterCfg; labeler_settings(cfg) is a MyCfg of its ``options``
        return [labels_global, labels_top, labels_bottom]     # (n,) ints each, -1 = outlier

What it declares (:class:`LabelerInfo`, :func:`labeler_info`) is what the rest asks: ``settings`` its
settings class (the built-ins' are the groups ``cluster.kmeans`` and ``cluster.dbscan``; another
labeller's are ``cluster.options``, validated through the class whenever a ``ClusterCfg`` is made),
``needs_k`` whether it needs ``cluster.num_clusters`` (a recipe without k is refused before training).

It may return :class:`PseudoLabels` instead, with the centroids the classifier starts from (else
the mean feature of each cluster is used) and extra entries for the epoch's log. A labeller that
must remember something from one epoch to the next (SpCL freezes a threshold at the first epoch)
sets ``fn.stateful = True``: it is then called with ``state=``, a dict the fine-tuning loop keeps
for the whole run and saves in ``last.pt``, so a resumed run sees what a straight one saw (keep
its values plain: numbers, strings, lists, tensors). A labeller that reads the target's hidden
identities (``oracle``, the supervised upper bound) sets ``fn.uses_identities = True`` and is called
with ``identities=`` (the training pids). Labels run from
0 to K - 1 (K may change from epoch to epoch; the fine-tuning loop resizes the classifiers) and -1
marks an outlier, which the P x K samplers leave out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..array_checks import check_features
from ..errors import InvalidInputError
from ..registry import Registry
from ..settings import Settings, check_at_least, check_choice, settings_from
from .kmeans import INITS, kmeans, minibatch_kmeans
from .normalize import NORMALIZATIONS, camera_ids, normalize_features
from .quality import camera_mixing, cluster_size_stats, pseudo_label_quality

LEVELS = ("global", "top", "bottom")
"""The three features fine-tuning clusters, in order."""


@dataclass
class PseudoLabels:
    """One labelling per level, what the classifier starts from, and what to log."""

    labels: list[np.ndarray]
    """Per level, ``(n,)`` int64 labels in ``[0, K)``, ``-1`` for an outlier."""
    centroids: list[Optional[torch.Tensor]] = field(default_factory=list)
    """Per level, ``(K, d)`` centres the labeller computed (None: the mean feature of each cluster)."""
    info: dict = field(default_factory=dict)
    """Extra entries of the epoch's log (e.g. ``kmeans_iters``)."""

    @property
    def num_classes(self) -> list[int]:
        """K per level: the centroids' rows when given, else the largest label + 1."""
        out = []
        for i, lab in enumerate(self.labels):
            c = self.centroids[i] if i < len(self.centroids) else None
            out.append(int(c.shape[0]) if c is not None else int(lab.max()) + 1)  # all outliers: 0
        return out

    def centres(self, level: int, features: torch.Tensor) -> torch.Tensor:
        """``(K, d)`` centres of ``level``: the labeller's, or the mean of each cluster's features."""
        given = self.centroids[level] if level < len(self.centroids) else None
        if given is not None:
            return given
        return class_means(features, self.labels[level], self.num_classes[level])


def class_means(features: torch.Tensor, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Mean feature of each class ``0 .. num_classes - 1`` (outliers, label -1, left out; an empty
    class gets a zero row)."""
    lab = torch.as_tensor(labels, device=features.device)
    keep = lab >= 0
    x, y = features[keep].float(), lab[keep]
    sums = torch.zeros(num_classes, features.shape[1], device=features.device).index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).to(sums.dtype)
    return sums / counts[:, None]


@dataclass(frozen=True)
class LabelerInfo:
    """What a pseudo-labeller declares at registration (:func:`register_labeler`)."""

    settings: Optional[type] = None
    """Its settings class (a :class:`~corelib.settings.Settings` dataclass), None: untyped ``cluster.options``."""
    needs_k: bool = False
    """It clusters into ``cluster.num_clusters`` groups, so a recipe must set k (k-means does, DBSCAN does not)."""


Labeler = Callable[..., Union[PseudoLabels, Sequence]]
LABELERS: Registry[Labeler] = Registry("pseudo-labeller", "Register your own with corelib.cluster.register_labeler.",
                                       info=LabelerInfo)


def register_labeler(name: str, *, settings: Optional[type] = None,
                     needs_k: bool = False) -> Callable[[Labeler], Labeler]:
    """Register ``fn(features, camids, cfg, *, seed, epoch, device)`` (see the module docstring), with
    its settings class and whether it needs ``cluster.num_clusters``."""
    return LABELERS.register(name, settings=settings, needs_k=needs_k)


def labeler_info(name: str) -> LabelerInfo:
    """What the labeller ``name`` declared at registration (:class:`LabelerInfo`)."""
    return LABELERS.info(name)


def labeler_settings(cfg) -> Any:
    """The settings of ``cfg.labeler`` (``cfg`` a :class:`~corelib.config.ClusterCfg`) as the class it
    declared: its group of ``cfg`` (``cluster.kmeans``, ``cluster.dbscan``), else ``cfg.options`` read
    through the class (the options as a dict when it declares none).

    Raises:
        ConfigError: an option the class does not have, or a value of the wrong type.
    """
    group = getattr(cfg, cfg.labeler, None)
    if isinstance(group, Settings):
        return group
    cls = labeler_info(cfg.labeler).settings
    return dict(cfg.options) if cls is None else settings_from(cls, cfg.options, "cluster.options")


def list_labelers() -> list[str]:
    return LABELERS.names()


def get_labeler(name: str) -> Labeler:
    """The registered labeller ``name``.

    Raises:
        UnknownNameError: names the registered labellers.
    """
    return LABELERS.get(name)


def check_labeler(cfg, num_samples: int) -> None:
    """Refuse, before any training, a clustering that cannot run: an unknown labeller or
    normalisation, or settings the labeller refuses for ``num_samples`` images (its ``check``).

    Raises:
        UnknownNameError: an unknown name (the message lists the registered ones).
        ValueError: e.g. k larger than the number of images.
    """
    labeler = get_labeler(cfg.labeler)
    NORMALIZATIONS.get(cfg.normalize)
    check = getattr(labeler, "check", None)
    if check is not None:
        check(cfg, num_samples)


def _checked(name: str, out, n: int, levels: int) -> PseudoLabels:
    """``out`` as :class:`PseudoLabels`, with every level's labels checked."""
    pseudo = out if isinstance(out, PseudoLabels) else PseudoLabels([np.asarray(x) for x in out])
    if len(pseudo.labels) != levels:
        raise InvalidInputError(f"labeller {name!r} returned {len(pseudo.labels)} labellings for {levels} feature levels")
    labels = []
    for i, lab in enumerate(pseudo.labels):
        a = lab.detach().cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab)
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise InvalidInputError(f"labeller {name!r}, level {i}: labels must be {n} integers, got {a.dtype} {a.shape}")
        if a.size and a.min() < -1:
            raise InvalidInputError(f"labeller {name!r}, level {i}: labels must be >= -1 (-1 marks an outlier), got {a.min()}")
        if not (a >= 0).any():
            raise InvalidInputError(f"labeller {name!r}, level {i}: every sample is an outlier; no cluster to train on")
        labels.append(a.astype(np.int64))
    pseudo.labels = labels
    for i, c in enumerate(pseudo.centroids):
        if c is not None and int(labels[i].max()) >= c.shape[0]:
            raise InvalidInputError(f"labeller {name!r}, level {i}: label {labels[i].max()} but only {c.shape[0]} centroids")
    pseudo.info = dict(pseudo.info)
    return pseudo


def cluster_pseudo_labels(features: Sequence[torch.Tensor], camids, cfg, *, seed: int, epoch: int = 0,
                          device: Union[str, torch.device, None] = None,
                          state: Optional[dict] = None,
                          identities: Optional[np.ndarray] = None) -> tuple[PseudoLabels, list[torch.Tensor]]:
    """Normalise each level's features and label them with the labeller of ``cfg`` (a
    :class:`~corelib.config.ClusterCfg`).

    ``state`` is handed to a labeller marked ``stateful`` (a fresh dict when None): the caller keeps
    it from epoch to epoch and across a resume. ``identities`` (the true training pids) go to a
    labeller marked ``uses_identities`` only: the ``oracle``.

    Returns:
        ``(pseudo_labels, features)``: the checked labels and the features they were computed on
        (after normalisation; the classifier's centres are taken from these).

    Raises:
        UnknownNameError: an unknown labeller or normalisation.
        ValueError: the labeller returned labels of the wrong shape, or only outliers.
    """
    labeler = get_labeler(cfg.labeler)
    cams = camera_ids(camids)
    _check_features(features, len(cams))
    feats = [normalize_features(x, cams, cfg.normalize) for x in features]
    extra = {"state": {} if state is None else state} if getattr(labeler, "stateful", False) else {}
    if getattr(labeler, "uses_identities", False):
        extra["identities"] = identities
    out = labeler(feats, cams, cfg, seed=seed, epoch=epoch, device=device, **extra)
    return _checked(cfg.labeler, out, len(cams), len(feats)), feats


def _check_features(features: Sequence[torch.Tensor], n: int) -> None:
    """Every level an (N, D) matrix of finite values with one row per camera id, before any labeller
    sees it (a NaN row would otherwise become a cluster, or stop a labeller far from its cause; a
    diverged network's huge values would overflow its distances)."""
    if not len(features):
        raise InvalidInputError("no feature levels to cluster: pass one (N, D) matrix per level")
    for level, x in enumerate(features):
        if x.dim() != 2 or x.shape[0] != n:
            raise InvalidInputError(f"features of level {level} must be (N, D) with N = {n} (one row per camera id), "
                                    f"got shape {tuple(x.shape)}")
        if n == 0:
            raise InvalidInputError("no samples to cluster: the target's training split is empty")
        check_features(x, f"features of level {level}")


@dataclass(frozen=True)
class KMeansCfg(Settings):
    """The k-means labeller (greedy k-means++ seeding, docs/method.md §3.7 and Appendix A)."""

    algorithm: str = "minibatch"
    """"minibatch" (scikit-learn MiniBatchKMeans semantics, the code) or "lloyd" (full batch)."""
    init: str = "greedy_kmeans++"
    """Seeding: "greedy_kmeans++", "kmeans++" or "random"."""
    max_iter: int = 100
    """Lloyd iterations (lloyd) or passes over the data (minibatch)."""
    batch_size: int = 512
    """Mini-batch size of MiniBatchKMeans."""
    init_size: int = 1500
    """Points the seeding sees (raised to 3k, capped at n; docs/method.md §9-Q12)."""
    n_init: int = 3
    """Seedings tried, the best kept (MiniBatchKMeans)."""

    def __post_init__(self) -> None:
        check_choice("cluster.kmeans.init", self.init, ("greedy_kmeans++", "kmeans++", "random"))
        for name in ("max_iter", "batch_size", "init_size", "n_init"):
            check_at_least(f"cluster.kmeans.{name}", getattr(self, name), 1)
        check_choice("cluster.kmeans.algorithm", self.algorithm, ("minibatch", "lloyd"))  # init: checked by k-means


@register_labeler("kmeans", settings=KMeansCfg, needs_k=True)
def kmeans_labels(features: Sequence[torch.Tensor], camids: np.ndarray, cfg, *, seed: int, epoch: int = 0,
                  device=None) -> PseudoLabels:
    """One k-means per level with the same k (``cfg.num_clusters``), greedy k-means++ seeding by default;
    level ``i`` is seeded with ``seed + i``."""
    k = cfg.kmeans
    results = []
    for i, x in enumerate(features):
        if k.algorithm == "minibatch":
            res = minibatch_kmeans(x, cfg.num_clusters, batch_size=k.batch_size, max_iter=k.max_iter, init=k.init,
                                   init_size=k.init_size, n_init=k.n_init, reassignment_ratio=0.05,
                                   max_no_improvement=50, seed=seed + i, device=device)
        elif k.algorithm == "lloyd":
            res = kmeans(x, cfg.num_clusters, init=k.init, max_iter=k.max_iter, seed=seed + i, device=device)
        else:
            raise InvalidInputError(f"unknown cluster.kmeans.algorithm {k.algorithm!r}; use 'minibatch' or 'lloyd'")
        results.append(res)
    return PseudoLabels([r.labels.cpu().numpy() for r in results], [r.centroids for r in results],
                        {"kmeans_iters": [r.n_iter for r in results]})


def _check_kmeans(cfg, num_samples: int) -> None:
    if cfg.kmeans.init not in INITS:
        raise InvalidInputError(f"cluster.kmeans.init must be one of {', '.join(INITS)}, got {cfg.kmeans.init!r}")
    if cfg.num_clusters < 2:
        raise InvalidInputError(f"cluster.num_clusters={cfg.num_clusters}: k-means needs k >= 2 pseudo-identities; set "
                                f"cluster.num_clusters (about the target's identity count is a good start)")
    if cfg.num_clusters > num_samples:
        raise InvalidInputError(f"cluster.num_clusters={cfg.num_clusters} is larger than the {num_samples} target training "
                         f"images; choose k <= {num_samples}")


kmeans_labels.check = _check_kmeans  # type: ignore[attr-defined]


def label_report(pseudo: PseudoLabels, camids, truth: Optional[np.ndarray] = None,
                 levels: Sequence[str] = LEVELS) -> dict:
    """What the epoch's log says of the pseudo-labels, per level: the labeller's own entries, the
    share of outliers, the share of clusters spanning cameras and, with ``truth`` (hidden
    identities), NMI / ARI / purity / largest size / singletons of the kept samples."""
    cams = camera_ids(camids)
    record = dict(pseudo.info)
    for name, lab in zip(levels, pseudo.labels):
        keep = lab >= 0
        record[f"outliers_{name}"] = float(1.0 - keep.mean())  # needs no identities: watchable on real targets
        record[f"clusters_{name}"] = cluster_size_stats(lab[keep])["clusters"]
        record[f"camera_mixing_{name}"] = camera_mixing(lab[keep], cams[keep])
    if truth is not None:
        for name, lab in zip(levels, pseudo.labels):
            keep = lab >= 0
            q = pseudo_label_quality(lab[keep], truth[keep])
            for key in ("nmi", "ari", "purity", "clusters", "size_max", "singletons"):
                if key in q:
                    record[f"{key}_{name}"] = q[key]
    return record


@register_labeler("oracle")
def oracle_labels(features: Sequence[torch.Tensor], camids: np.ndarray, cfg, *, seed: int, epoch: int = 0,
                  device=None, identities: Optional[np.ndarray] = None) -> PseudoLabels:
    """The target's true identities as the "pseudo-labels" of every level: the supervised oracle of
    UDA tables (the same network, loop, loss and budget, trained with the labels the other labellers
    must guess). Not a method: an upper bound to measure how much of the gap a method closes."""
    if identities is None:
        raise InvalidInputError("the oracle labeller needs the target's training identities; this target has none "
                                "(an unlabelled split): it only applies to targets with known pids")
    ids = np.asarray(identities)
    if ids.shape != (len(features[0]),):
        raise InvalidInputError(f"oracle: {ids.shape[0] if ids.ndim else 0} identities for {len(features[0])} images")
    known = ids >= 0
    labels = np.full(len(ids), -1, dtype=np.int64)
    labels[known] = np.unique(ids[known], return_inverse=True)[1]
    return PseudoLabels([labels.copy() for _ in features])


oracle_labels.uses_identities = True  # type: ignore[attr-defined]
