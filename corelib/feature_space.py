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
    """Histograms of pairwise cosine similarity per :data:`PAIR_KINDS` (each unordered pair once)."""

    edges: np.ndarray  # (bins + 1,) bin edges over [-1, 1]
    counts: dict  # kind -> (bins,) pair counts
    means: dict  # kind -> mean similarity (NaN when the kind has no pairs)
    pairs: dict  # kind -> number of pairs

    @property
    def camera_gap(self) -> float:
        """Mean similarity of different identities in the same camera minus across cameras."""
        return self.means["different id, same camera"] - self.means["different id, cross camera"]

    def to_dict(self) -> dict:
        return {"means": dict(self.means), "pairs": dict(self.pairs), "camera_gap": self.camera_gap}


def similarity_histograms(features: torch.Tensor, pids: Sequence[int], camids: Sequence[int], *, bins: int = 200,
                          chunk: int = 1024, device: Union[str, torch.device, None] = None) -> SimilarityHistograms:
    """Cosine similarity of every pair of rows of ``features``, histogrammed per kind of pair.

    Args:
        features: ``(N, D)`` descriptors (normalised here).
        pids, camids: the true identity and camera of each row.
        bins: histogram bins over [-1, 1].
        chunk: rows of the similarity matrix computed at once.
        device: where the products run (default: the features' device).
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
                                means, pairs)


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
