"""Where the features lie: UMAP projections, same- vs cross-camera similarities, cluster sizes.

Chapter 06 uses these to show what adaptation does to the target's feature space:

- :func:`umap_projection`: a 2-D UMAP (umap-learn) of descriptors, repeatable for a given seed.
- :func:`similarity_histograms`: the distribution of cosine similarities over *all* pairs of
  images, split four ways by same / different identity and same / different camera. Camera bias
  shows as different identities seen by one camera looking more alike than different identities
  seen by two; adaptation should shrink that gap and pull an identity's views from different
  cameras together. The matrix is processed in row chunks on the chosen device, so memory stays
  ``O(chunk * N)``.
- :func:`cluster_sizes`: images per cluster (or per identity), largest first.
- :func:`study_feature_space`: all of the above for one network on a source / target pair, with
  the target's k-means pseudo-labels as fine-tuning would compute them.

Chapter 09 asks the same of orientation (the view id of each image, where the data has one):

- ``similarity_histograms(..., side="view")``: the four kinds of pairs split by same / other view; the
  *view gap* (different identities seen from the same view minus from other views) is how much of
  the similarity of two different identities is orientation;
- :func:`nearest_wrong_views`: for each query, whether its most similar gallery image of another
  identity shares the query's view, against the share a random wrong image would;
- :func:`study_orientation`: both for one network on a target dataset.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .cluster import camera_centred as centre
from .cluster import kmeans, pseudo_label_quality
from .errors import InvalidInputError
from .progress import tqdm
from .training.analysis import analysis_features
from .training.evaluate import evaluate_model

if TYPE_CHECKING:
    from .features import Features

PAIR_KINDS = ("same id, same camera", "same id, cross camera", "different id, same camera",
              "different id, cross camera")
"""The four kinds of image pairs :func:`similarity_histograms` separates."""


def umap_projection(features: Union[torch.Tensor, np.ndarray], *, n_neighbors: int = 15, min_dist: float = 0.1,
                    metric: str = "cosine", seed: Optional[int] = 0) -> np.ndarray:
    """2-D UMAP coordinates ``(N, 2)`` of ``features`` ``(N, D)``.

    ``seed`` fixes UMAP's randomness (umap-learn then runs single-threaded, which is what makes it
    repeatable); ``None`` lets it use all cores with run-to-run differences.

    Raises:
        ValueError: fewer than 4 samples (UMAP needs a neighbourhood).
    """
    import umap  # lazy: umap-learn compiles with numba on import; only the UMAP chapter needs it

    x = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float32)
    if len(x) < 4:
        raise InvalidInputError(f"UMAP needs at least 4 samples, got {len(x)}")
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), min_dist=min_dist, metric=metric,
                        random_state=seed, n_components=2)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": the intended trade
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        return reducer.fit_transform(x)


@dataclass
class SimilarityHistograms:
    """Histograms of pairwise cosine similarity per :data:`PAIR_KINDS` (each unordered pair once).

    ``side`` names the side information the pairs are split by: ``"camera"`` (chapter 06) or
    ``"view"`` (chapter 09, the orientation); the kinds keep :data:`PAIR_KINDS`' keys either way and
    :meth:`kind_label` words them for the side."""

    edges: np.ndarray  # (bins + 1,) bin edges over [-1, 1]
    counts: dict  # kind -> (bins,) pair counts
    means: dict  # kind -> mean similarity (NaN when the kind has no pairs)
    pairs: dict  # kind -> number of pairs
    side: str = "camera"

    @property
    def gap(self) -> float:
        """Mean similarity of different identities on the same side (camera or view) minus across sides:
        how much of the similarity of two different identities the side information explains."""
        return self.means["different id, same camera"] - self.means["different id, cross camera"]

    @property
    def camera_gap(self) -> float:
        """Mean similarity of different identities in the same camera minus across cameras."""
        return self.gap

    def kind_label(self, kind: str) -> str:
        """``kind`` (a key of :data:`PAIR_KINDS`) in the words of this side: "different id, same view"."""
        return kind.replace("cross camera", f"other {self.side}").replace("camera", self.side) \
            if self.side != "camera" else kind

    def to_dict(self) -> dict:
        return {"means": {self.kind_label(k): v for k, v in self.means.items()},
                "pairs": {self.kind_label(k): v for k, v in self.pairs.items()}, f"{self.side}_gap": self.gap}


def similarity_histograms(features: torch.Tensor, pids: Sequence[int], camids: Sequence[int], *, bins: int = 200,
                          chunk: int = 1024, device: Union[str, torch.device, None] = None,
                          side: str = "camera") -> SimilarityHistograms:
    """Cosine similarity of every pair of rows of ``features``, histogrammed per kind of pair.

    Args:
        features: ``(N, D)`` descriptors (normalised here).
        pids, camids: the true identity and camera of each row (with ``side="view"``: its view id).
        bins: histogram bins over [-1, 1].
        chunk: rows of the similarity matrix computed at once.
        device: where the products run (default: the features' device).
        side: what ``camids`` holds, ``"camera"`` or ``"view"`` (the words of the kinds and the gap).
    """
    dev = torch.device(device) if device is not None else features.device
    x = F.normalize(features.float().to(dev), dim=1)
    n = len(x)
    p = torch.as_tensor(np.asarray(pids), device=dev)
    c = torch.as_tensor(np.asarray(camids), device=dev)
    if len(p) != n or len(c) != n:
        raise InvalidInputError(f"{n} features but {len(p)} pids and {len(c)} camids")
    counts = {k: torch.zeros(bins, dtype=torch.float64, device=dev) for k in PAIR_KINDS}
    sums = {k: 0.0 for k in PAIR_KINDS}
    cols = torch.arange(n, device=dev)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=dev)
        sim = x[rows] @ x.T  # (chunk, N)
        upper = cols[None, :] > rows[:, None]  # each unordered pair once, no self-pairs
        same_id = p[rows][:, None] == p[None, :]
        same_cam = c[rows][:, None] == c[None, :]
        for kind, mask in zip(PAIR_KINDS, (same_id & same_cam, same_id & ~same_cam,
                                           ~same_id & same_cam, ~same_id & ~same_cam)):
            v = sim[mask & upper]
            counts[kind] += torch.histc(v.clamp(-1.0, 1.0), bins=bins, min=-1.0, max=1.0).double()
            sums[kind] += float(v.double().sum())
    pairs = {k: int(counts[k].sum()) for k in PAIR_KINDS}
    means = {k: sums[k] / pairs[k] if pairs[k] else float("nan") for k in PAIR_KINDS}
    return SimilarityHistograms(np.linspace(-1.0, 1.0, bins + 1), {k: v.cpu().numpy() for k, v in counts.items()},
                                means, pairs, side)


def cluster_sizes(labels: Sequence[int]) -> np.ndarray:
    """Images per cluster, largest first (label ``-1``, an outlier mark, is not a cluster)."""
    a = np.asarray(labels)
    _, sizes = np.unique(a[a >= 0], return_counts=True)
    return np.sort(sizes)[::-1]


@dataclass
class FeatureSpace:
    """One network's view of a source / target pair (:func:`study_feature_space`)."""

    points: np.ndarray  # (n_source + n_target, 2) UMAP coordinates, source rows first
    source: "Features"  # descriptors of the (sub-sampled) source training images
    target: "Features"  # descriptors of every target training image
    pseudo_labels: np.ndarray  # (n_target,) k-means labels of the target
    quality: dict  # corelib.pseudo_label_quality of those labels against the hidden identities
    similarities: SimilarityHistograms  # of the target's descriptors

    def colourings(self, source_name: str = "source", target_name: str = "target") -> dict:
        """Colourings for :func:`corelib.viz.umap_panels`: domain, then the target's camera, true
        identity and pseudo-label (source points grey in those)."""
        n = len(self.source.pids)
        grey = [None] * n
        return {"domain": [f"source: {source_name}"] * n + [f"target: {target_name}"] * len(self.target.pids),
                "target camera": grey + [f"cam {int(c) + 1}" if c >= 0 else "no camera" for c in self.target.camids],
                "target identity": grey + [int(p) for p in self.target.pids],
                "pseudo-label": grey + [int(p) for p in self.pseudo_labels]}


def study_feature_space(trained, source, target, *, k: int, source_images: Optional[int] = None,
                        camera_centred: bool = True, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
                        device: Union[str, torch.device] = "cpu", progress: bool = True) -> FeatureSpace:
    """Descriptors, UMAP, pseudo-labels and similarity histograms of one network.

    Args:
        trained: a :class:`~corelib.TrainedModel` (before or after adaptation).
        source, target: the datasets; the target's training split is studied in full, the
            source's (for the domain colouring) sub-sampled to ``source_images`` with ``seed``.
        k: clusters of the pseudo-labels (fine-tuning's ``num_clusters``), greedy k-means++ with ``seed``.
        camera_centred: cluster camera-centred descriptors, as the embedded fine-tuning recipe does;
            the UMAP and histograms always use the retrieval descriptors themselves.
        progress: a bar over the five steps (extraction of each side, k-means, UMAP, similarities).

    Raises:
        ValueError: ``k`` exceeds the target's training images.
    """
    n_target = len(target.train)
    if k > n_target:
        raise InvalidInputError(f"k = {k} clusters for {n_target} target training images; use k <= {n_target}")

    bar = tqdm(total=5, desc="feature space", unit="step", disable=not progress)

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    step("source descriptors")
    src = analysis_features(trained, source, max_images=source_images, seed=seed, device=device, progress=False)
    bar.update()
    step("target descriptors")
    tgt = analysis_features(trained, target, device=device, progress=False)
    bar.update()
    step(f"k-means k={k}")
    x = centre(tgt.features, [int(c) for c in tgt.camids]) if camera_centred else tgt.features
    labels = kmeans(x, k, seed=seed, device=device).labels.cpu().numpy()
    bar.update()
    step(f"UMAP of {len(src.features) + len(tgt.features)} descriptors")
    points = umap_projection(torch.cat([src.features, tgt.features]), n_neighbors=n_neighbors, min_dist=min_dist,
                             seed=seed)
    bar.update()
    step("similarities")
    histograms = similarity_histograms(tgt.features, tgt.pids, tgt.camids, device=device)
    bar.update()
    bar.close()
    return FeatureSpace(points, src, tgt, labels, pseudo_label_quality(labels, tgt.pids), histograms)


# ----------------------------------------------------------------------------- orientation (chapter 09)


def split_views(samples: Sequence) -> np.ndarray:
    """The view id of every sample, ``-1`` where it has none (``Sample.viewid`` is None)."""
    return np.array([-1 if s.viewid is None else int(s.viewid) for s in samples], dtype=np.int64)


def nearest_wrong_views(query: torch.Tensor, gallery: torch.Tensor, query_pids: Sequence[int],
                        gallery_pids: Sequence[int], query_views: Sequence[int], gallery_views: Sequence[int]) -> dict:
    """How often the most similar gallery image of *another* identity shares the query's view.

    For every query with a known view (``>= 0``), among the gallery images of other identities with a
    known view: the most similar one (cosine) and whether its view is the query's; ``chance`` is the
    share of those wrong images that have the query's view, averaged over the queries: what a match
    blind to orientation would give. ``same view`` well above ``chance`` means the first wrong answers
    are drawn to the query's orientation.

    Returns:
        ``{"same view": share, "chance": share, "queries": n}`` (shares NaN when no query qualifies).
    """
    q = F.normalize(query.float(), dim=1)
    g = F.normalize(gallery.float(), dim=1)
    qp, gp = np.asarray(query_pids), np.asarray(gallery_pids)
    qv, gv = np.asarray(query_views), np.asarray(gallery_views)
    if not (len(qp) == len(qv) == len(q) and len(gp) == len(gv) == len(g)):
        raise InvalidInputError(f"{len(q)} query and {len(g)} gallery features, but {len(qp)} / {len(qv)} query and "
                                f"{len(gp)} / {len(gv)} gallery pids / views")
    sim = (q @ g.T).cpu().numpy()
    hits, chance = [], []
    for i in np.flatnonzero(qv >= 0):
        wrong = (gp != qp[i]) & (gv >= 0)
        if not wrong.any():
            continue
        candidates = np.flatnonzero(wrong)
        nearest = candidates[int(np.argmax(sim[i, candidates]))]
        hits.append(gv[nearest] == qv[i])
        chance.append(float(np.mean(gv[candidates] == qv[i])))
    n = len(hits)
    return {"same view": float(np.mean(hits)) if n else float("nan"),
            "chance": float(np.mean(chance)) if n else float("nan"), "queries": n}


@dataclass
class OrientationStudy:
    """What one network's descriptors owe to orientation on a target (:func:`study_orientation`)."""

    similarities: SimilarityHistograms  # target training pairs, split by identity and by view
    nearest_wrong: dict  # :func:`nearest_wrong_views` of the query against the gallery
    scores: dict  # :func:`~corelib.training.evaluate.evaluate_model` of the network on the target (fractions)

    @property
    def view_gap(self) -> float:
        """Different identities: mean similarity from the same view minus from other views."""
        return self.similarities.gap

    @property
    def same_identity_view_gap(self) -> float:
        """One identity: mean similarity of its images from the same view minus from other views (how
        much matching an identity across its orientations costs)."""
        m = self.similarities.means
        return m["same id, same camera"] - m["same id, cross camera"]


def study_orientation(trained, target, *, device: Union[str, torch.device] = "cpu",
                      progress: bool = False) -> OrientationStudy:
    """The view gap of ``target``'s training pairs, the views of the query's nearest wrong matches and
    the retrieval scores, for one :class:`~corelib.TrainedModel` on its test protocol.

    Raises:
        InvalidInputError: ``target`` has no view ids (``ReIDDataset.has_views``).
    """
    if not getattr(target, "has_views", False):
        raise InvalidInputError(f"{target.name} has no view id on every image; the orientation study needs them "
                                f"(the embedded datasets have them; VeRi-776 with its keypoint files)")
    train = analysis_features(trained, target, device=device, progress=progress)
    hists = similarity_histograms(train.features, train.pids, split_views(target.train), device=device, side="view")
    q = analysis_features(trained, target, split="query", device=device, progress=progress)
    g = analysis_features(trained, target, split="gallery", device=device, progress=progress)
    wrong = nearest_wrong_views(q.features, g.features, q.pids, g.pids, split_views(target.query),
                                split_views(target.gallery))
    scores = evaluate_model(trained.model, target, *trained.input_size, device=device,
                            channels_last=trained.channels_last)
    return OrientationStudy(hists, wrong, scores)
