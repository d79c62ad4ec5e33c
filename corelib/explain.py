"""Why does the network match two images? Grad-CAM for embeddings and the paper's activation maps.

Re-ID networks output embeddings, not class scores, so "explain the prediction" needs a scalar:
here the cosine similarity between an image's embedding and a reference embedding (a query's
for a gallery image, and the reverse). Two tools:

- :func:`similarity_cam`: Grad-CAM (pytorch-grad-cam) on a layer of the trunk (one of the
  backbone's ``cam_layers()``, the deepest by default; a ViT's are its blocks' patch tokens as a
  grid, so no reshape hook is needed), for one branch of the network (:class:`EmbeddingOf`: ``global``, ``top``, ``bottom`` or the retrieval
  ``descriptor``) and the target :class:`SimilarityTarget`. The CAM object is used as a context
  manager, so its hooks are released even when the call fails.
- :func:`activation_maps`: what the authors' figures actually show (docs/method.md §7), gradient-free:
  ``A(h, w) = sum_c M(c, h, w)^2`` of the trunk's last map, L2-normalised over positions, resized
  to the image and min-max scaled; ``flip=True`` adds the horizontally flipped image, as in the
  paper's figure pairs.

:func:`overlay` blends a map onto its image (``0.3 image + 0.7 jet(map)``, the authors' blend).

Example::

    q, g = images[:1], images[1:6]
    ref = embed(model, q)                                  # (1, D) query embedding
    maps = similarity_cam(model, g, ref.expand(len(g), -1), branch="global")   # (5, H, W) in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data.dataset import Sample, read_image
from .errors import InvalidInputError, InvalidTypeError, UnknownNameError
from .features import Features
from .models.mean_teacher import MeanTeacher
from .models.reid_net import CoreReIDNet, SourceNet
from .models.transreid import TransReIDNet

SINGLE_BRANCH = (SourceNet, TransReIDNet)
"""Networks with one global feature (no top / bottom branches)."""

CAM_IMAGE_WEIGHT = 0.5
"""Image share in Grad-CAM overlays (half and half keeps the image readable under the map; the
activation maps keep the authors' 0.3)."""

BRANCHES = ("global", "top", "bottom", "descriptor")
"""Embeddings :class:`EmbeddingOf` exposes: the three branch features and the retrieval descriptor."""

TRUNK_LAYERS = ("layer1", "layer2", "layer3", "layer4")
"""The layers of the ResNet backbones (strides 4, 8, 16, 32; ``layer4`` is the paper's choice); any
backbone names its own in ``cam_layers()``."""


def explained_network(model: nn.Module) -> nn.Module:
    """The network the maps are computed on: a :class:`MeanTeacher` is explained through its teacher
    (the network that is evaluated and kept), anything else is returned as it is."""
    return model.teacher if isinstance(model, MeanTeacher) else model


def trunk_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of the network's backbone a map can be taken from, shallow to deep."""
    trunk = explained_network(model).trunk
    layers = trunk.cam_layers() if hasattr(trunk, "cam_layers") else {"output": trunk}
    if not layers:
        raise InvalidInputError(f"the backbone {type(trunk).__name__} names no layer in cam_layers()")
    return dict(layers)


def trunk_layer(model: nn.Module, layer: Optional[str] = None) -> nn.Module:
    """The module of trunk layer ``layer`` (a Grad-CAM target layer); None is the deepest.

    Raises:
        UnknownNameError: the backbone has no such layer (the message lists those it has).
    """
    layers = trunk_layers(model)
    if layer is None:
        return list(layers.values())[-1]
    if layer not in layers:
        raise UnknownNameError(f"unknown trunk layer {layer!r}; valid layers: {', '.join(layers)}")
    return layers[layer]


def trunk_map(model: nn.Module, images: torch.Tensor, layer: Optional[str] = None) -> torch.Tensor:
    """The trunk's feature map at layer ``layer`` (the deepest when None): ``(B, C, h, w)``."""
    target = trunk_layer(model, layer)
    trunk = explained_network(model).trunk
    if target is trunk:
        return trunk(images)
    seen: list[torch.Tensor] = []
    handle = target.register_forward_hook(lambda _m, _inputs, output: seen.append(output))
    try:
        trunk(images)
    finally:
        handle.remove()
    return seen[-1]


class EmbeddingOf(nn.Module):
    """One embedding of a re-ID network as a plain ``images -> (B, D)`` module.

    ``descriptor`` is what the network returns in eval mode (the L2-normalised retrieval vector);
    ``global``, ``top`` and ``bottom`` are the branch features of :class:`CoreReIDNet` before
    normalisation (a :class:`SourceNet` has ``global`` and ``descriptor`` only, as has a
    :class:`~corelib.models.TransReIDNet`, whose ``global`` is ``f_g`` before its BN-neck). The wrapped network
    is put in eval mode: BatchNorm uses its running statistics, as at test time. ``camids`` and
    ``viewids`` (``(B,)``) reach a backbone that uses camera and view embeddings; Grad-CAM calls the
    module on the images alone, so they are fixed here.
    """

    def __init__(self, model: nn.Module, branch: str = "descriptor", camids: Optional[torch.Tensor] = None,
                 viewids: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        model = explained_network(model)
        if branch not in BRANCHES:
            raise UnknownNameError(f"unknown branch {branch!r}; valid branches: {', '.join(BRANCHES)}")
        if isinstance(model, SINGLE_BRANCH) and branch in ("top", "bottom"):
            raise UnknownNameError(f"a {type(model).__name__} has no {branch!r} branch; use 'global' or 'descriptor'")
        if not isinstance(model, (SourceNet, CoreReIDNet, TransReIDNet)):
            raise InvalidTypeError(f"EmbeddingOf expects a SourceNet, CoreReIDNet, TransReIDNet or MeanTeacher, got "
                                   f"{type(model).__name__}")
        self.model, self.branch, self.camids, self.viewids = model.eval(), branch, camids, viewids

    @property
    def trunk(self) -> nn.Module:
        return self.model.trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch == "descriptor":
            return self.model(x, self.camids, self.viewids)
        if isinstance(self.model, TransReIDNet):  # f_g before its BN-neck (the [cls] output of the global branch)
            return self.model.features(x, self.camids, self.viewids)[0]
        m = self.model.trunk(x, self.camids, self.viewids)
        if isinstance(self.model, SourceNet):
            return self.model.bnneck(m.mean(dim=(2, 3)))
        return self.model.branch_features(m)[("global", "top", "bottom").index(self.branch)]


class SimilarityTarget:
    """Grad-CAM target: cosine similarity between an image's embedding and ``reference`` (D,)."""

    def __init__(self, reference: torch.Tensor) -> None:
        self.reference = reference.detach().flatten()

    def __call__(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(embedding.flatten(), self.reference.to(embedding.device), dim=0)


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, branch: str = "descriptor") -> torch.Tensor:
    """Embeddings ``(B, D)`` of ``images`` from one branch (see :class:`EmbeddingOf`)."""
    net = EmbeddingOf(model, branch)
    return net(images.to(next(net.parameters()).device))


def similarity_cam(
    model: nn.Module,
    images: torch.Tensor,
    references: torch.Tensor,
    *,
    branch: str = "descriptor",
    layer: Union[str, nn.Module, None] = None,
) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1]: where image ``i`` supports its similarity to ``references[i]``.

    Args:
        model: a :class:`SourceNet`, :class:`CoreReIDNet` or :class:`MeanTeacher` (its teacher).
        images: normalised image batch ``(B, 3, H, W)``.
        references: ``(B, D)`` embeddings of the same ``branch`` (e.g. the query's, repeated).
        branch: which embedding is explained (:data:`BRANCHES`).
        layer: a trunk layer of the backbone (:func:`trunk_layers`; for the ResNets
            :data:`TRUNK_LAYERS`, the deepest by default), or a module of the network.

    Raises:
        ValueError: ``references`` does not have one row per image.
    """
    from pytorch_grad_cam import GradCAM  # lazy: only Grad-CAM needs it

    if references.dim() != 2 or len(references) != len(images):
        raise InvalidInputError(f"references must be (B, D) with B = {len(images)} images, got {tuple(references.shape)}")
    net = EmbeddingOf(model, branch)
    layer = trunk_layer(net.model, layer) if layer is None or isinstance(layer, str) else layer
    device = next(net.parameters()).device
    targets = [SimilarityTarget(r) for r in references]
    # the input requires grad so that the graph reaches the target layer even when the weights do
    # not (a mean teacher's weights are an EMA, frozen)
    x = images.detach().to(device).requires_grad_(True)
    with GradCAM(model=net, target_layers=[layer]) as cam:  # hooks released on exit
        return cam(input_tensor=x, targets=targets)


def activation_map(feature_map: torch.Tensor) -> torch.Tensor:
    """The authors' gradient-free map of a trunk map ``(B, C, h, w)``: ``sum_c M^2``, L2-normalised
    over the ``h * w`` positions of each image; returns ``(B, h, w)``."""
    a = feature_map.float().pow(2).sum(dim=1)
    return F.normalize(a.flatten(1), dim=1).view_as(a)


@torch.no_grad()
def activation_maps(model: nn.Module, images: torch.Tensor, *, flip: bool = False,
                    layer: Optional[str] = None) -> torch.Tensor:
    """:func:`activation_map` of the trunk's map at ``layer`` (the deepest by default, as in the
    paper), resized to the images and min-max scaled to [0, 1]: ``(B, H, W)``, or ``(2B, H, W)``
    with the flipped images after the originals (``flip``)."""
    model = explained_network(model).eval()
    device = next(model.parameters()).device
    x = images.to(device)
    if flip:
        x = torch.cat([x, torch.flip(x, dims=[3])])
    a = activation_map(trunk_map(model, x, layer)).unsqueeze(1)
    a = F.interpolate(a, size=x.shape[2:], mode="bilinear", align_corners=False).squeeze(1)
    lo, hi = a.flatten(1).min(1).values, a.flatten(1).max(1).values
    return ((a - lo[:, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None]).cpu()


def overlay(image: Image.Image, heat: np.ndarray | torch.Tensor, *, image_weight: float = 0.3) -> Image.Image:
    """``image_weight * image + (1 - image_weight) * jet(heat)``; ``heat`` in [0, 1], resized to the image."""
    from matplotlib import colormaps  # lazy: plotting only

    heat = heat.numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    h = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR)
    colour = colormaps["jet"](np.asarray(h) / 255.0)[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    out = image_weight * base + (1 - image_weight) * colour
    return Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))


def cam_panels(images: Sequence[Image.Image], maps: np.ndarray | torch.Tensor) -> list[tuple[str, list[Image.Image]]]:
    """Rows for :func:`corelib.viz.samples_overview`: the images, their maps, the overlays."""
    maps = maps.numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    return [("image", list(images)), ("map", [overlay(im, m, image_weight=0.0) for im, m in zip(images, maps)]),
            ("overlay", [overlay(im, m) for im, m in zip(images, maps)])]


def sample_queries(num_queries: int, count: int, *, seed: int = 0,
                   correct: Optional[Sequence[bool]] = None) -> list[int]:
    """``count`` query indices out of ``num_queries``, drawn without replacement with ``seed``, sorted.

    With ``correct`` (one bool per query, e.g. :func:`rank1_correct`), half of them (rounded up) are
    drawn from the correct queries and the rest from the wrong ones, so that a figure shows both a
    success and a failure; a side with too few queries is filled from the other.
    """
    if num_queries < 1:
        raise InvalidInputError("the query split is empty")
    g = torch.Generator().manual_seed(seed)
    count = min(count, num_queries)
    if correct is None:
        return sorted(torch.randperm(num_queries, generator=g)[:count].tolist())
    if len(correct) != num_queries:
        raise InvalidInputError(f"{len(correct)} correctness flags for {num_queries} queries")
    right = [i for i in range(num_queries) if correct[i]]
    wrong = [i for i in range(num_queries) if not correct[i]]
    right = [right[j] for j in torch.randperm(len(right), generator=g).tolist()]
    wrong = [wrong[j] for j in torch.randperm(len(wrong), generator=g).tolist()]
    n_right = min(len(right), max(count - len(wrong), (count + 1) // 2))
    return sorted(right[:n_right] + wrong[: count - n_right])


def _protocol_similarity(query: Features, rows, gallery: Features) -> torch.Tensor:
    """Cosine similarity ``(len(rows), G)`` of query ``rows`` to the gallery, ``-inf`` where the
    gallery image shows the query's identity from the query's camera (the protocol's junk)."""
    g = F.normalize(gallery.features.float(), dim=1)
    q = F.normalize(query.features[rows].float(), dim=1)
    q_pids, q_cams = (torch.as_tensor(np.asarray(a))[rows] for a in (query.pids, query.camids))
    g_pids, g_cams = torch.as_tensor(np.asarray(gallery.pids)), torch.as_tensor(np.asarray(gallery.camids))
    junk = (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])
    return (q @ g.T).masked_fill(junk, float("-inf"))


def rank1_correct(query: Features, gallery: Features, *, chunk: int = 1024) -> list[bool]:
    """Whether each query's most similar gallery image is of its identity (the gallery images of
    its identity from its own camera left out, as in :func:`rank_lists`)."""
    g_pids = np.asarray(gallery.pids)
    out: list[bool] = []
    for start in range(0, len(query.features), chunk):
        rows = torch.arange(start, min(start + chunk, len(query.features)))
        best = _protocol_similarity(query, rows, gallery).argmax(dim=1).numpy()
        out += (g_pids[best] == np.asarray(query.pids)[rows.numpy()]).tolist()
    return out


@dataclass
class RankList:
    """One query and its ``topk`` gallery matches, best first.

    Gallery images of the query's identity taken by the query's camera are left out, as the
    Market-1501 / VeRi-776 protocol does when scoring (they would be trivial matches).
    """

    query: Sample
    gallery: list[Sample]
    scores: list[float]  # cosine similarity of the retrieval descriptors
    correct: list[bool]  # gallery pid == query pid


def rank_lists(query: Features, gallery: Features, query_samples: Sequence[Sample],
               gallery_samples: Sequence[Sample], *, indices: Sequence[int], topk: int = 5) -> list[RankList]:
    """The :class:`RankList` of each query in ``indices`` (positions in ``query_samples``).

    Raises:
        ValueError: features and samples disagree in length, or an index is out of range.
    """
    if len(query.features) != len(query_samples) or len(gallery.features) != len(gallery_samples):
        raise InvalidInputError(f"features and samples disagree: {len(query.features)} query features for "
                         f"{len(query_samples)} samples, {len(gallery.features)} gallery features for "
                         f"{len(gallery_samples)} samples")
    bad = [i for i in indices if not 0 <= i < len(query_samples)]
    if bad:
        raise InvalidInputError(f"query indices {bad} out of range: the query split has {len(query_samples)} images")
    out = []
    for i in indices:
        sim = _protocol_similarity(query, torch.tensor([i]), gallery)[0]  # (G,)
        scores, order = sim.topk(min(topk, int(torch.isfinite(sim).sum())))
        out.append(RankList(query_samples[i], [gallery_samples[j] for j in order.tolist()], scores.tolist(),
                            [int(gallery.pids[j]) == int(query.pids[i]) for j in order.tolist()]))
    return out


@dataclass
class ExplainedRankList:
    """A :class:`RankList` with its images and Grad-CAM maps (each ``(H, W)`` in [0, 1])."""

    rank_list: RankList
    query_image: Image.Image
    gallery_images: list[Image.Image]
    query_map: np.ndarray  # where the query supports its similarity to the rank-1 image
    gallery_maps: np.ndarray  # (k, H, W): where each gallery image supports its similarity to the query
    branch: str
    layer: Optional[str]


def explain_rank_list(model: nn.Module, rank_list: RankList, transform, *, branch: str = "descriptor",
                      layer: Optional[str] = None) -> ExplainedRankList:
    """Grad-CAM for a rank list in both directions: each gallery image against the query's embedding,
    and the query against its rank-1 match's (``transform``: the test transform of the model's size)."""
    if not rank_list.gallery:
        raise InvalidInputError(f"the rank list of {rank_list.query.path} is empty: nothing to explain")
    device = next(explained_network(model).parameters()).device
    q_img = read_image(rank_list.query.path)
    g_imgs = [read_image(s.path) for s in rank_list.gallery]
    q = transform(q_img).unsqueeze(0).to(device)
    g = torch.stack([transform(im) for im in g_imgs]).to(device)
    q_emb, g_emb = embed(model, q, branch), embed(model, g, branch)
    g_maps = similarity_cam(model, g, q_emb.expand(len(g), -1), branch=branch, layer=layer)
    q_map = similarity_cam(model, q, g_emb[:1], branch=branch, layer=layer)[0]
    return ExplainedRankList(rank_list, q_img, g_imgs, q_map, g_maps, branch, layer)


def identity_caption(sample: Sample) -> str:
    """``pid 12 c3`` (cameras counted from 1, as the datasets' file names do); ``pid 12`` without one."""
    return f"pid {sample.pid}" + (f" c{sample.camid + 1}" if sample.camid is not None and sample.camid >= 0 else "")


def rank_list_row(explained: ExplainedRankList, label: str, *, cams: bool = True, identities: bool = False) -> dict:
    """A row for :func:`corelib.viz.rank_list`: the images, overlaid with their maps when ``cams``;
    with ``identities`` each gallery image's pid and camera under its score."""
    rl = explained.rank_list
    query = overlay(explained.query_image, explained.query_map, image_weight=CAM_IMAGE_WEIGHT) if cams else explained.query_image
    gallery = ([overlay(im, m, image_weight=CAM_IMAGE_WEIGHT) for im, m in zip(explained.gallery_images, explained.gallery_maps)] if cams
               else list(explained.gallery_images))
    row = {"label": label, "query": query, "gallery": gallery, "correct": rl.correct, "scores": rl.scores}
    if identities:
        row["captions"] = [identity_caption(g) for g in rl.gallery]
    return row


def has_branch(model: nn.Module, branch: str) -> bool:
    """Whether :class:`EmbeddingOf` can expose ``branch`` (a :class:`SourceNet` has no top / bottom)."""
    return branch in BRANCHES and not (isinstance(explained_network(model), SINGLE_BRANCH) and branch in ("top", "bottom"))


BRANCH_COLUMNS = ("image", *BRANCHES, "activation map")
"""Column titles of :func:`branch_rows`."""


def branch_rows(model: nn.Module, query: Sample, match: Sample, transform, *, label: str,
                layer: Optional[str] = None) -> list[tuple[str, list[Optional[Image.Image]]]]:
    """Two rows for :func:`corelib.viz.samples_overview` (columns :data:`BRANCH_COLUMNS`): the query
    and a gallery image, each overlaid with its Grad-CAM for the similarity to the other, per branch,
    then the gradient-free activation map; a branch the network lacks is ``None``."""
    device = next(explained_network(model).parameters()).device
    imgs = [read_image(query.path), read_image(match.path)]
    x = torch.stack([transform(im) for im in imgs]).to(device)
    cells: list[list[Optional[Image.Image]]] = [[imgs[0]], [imgs[1]]]
    for branch in BRANCHES:
        if not has_branch(model, branch):
            cells[0].append(None), cells[1].append(None)
            continue
        e = embed(model, x, branch)
        maps = similarity_cam(model, x, e.flip(0), branch=branch, layer=layer)  # each against the other
        cells[0].append(overlay(imgs[0], maps[0], image_weight=CAM_IMAGE_WEIGHT))
        cells[1].append(overlay(imgs[1], maps[1], image_weight=CAM_IMAGE_WEIGHT))
    act = activation_maps(model, x, layer=layer)
    cells[0].append(overlay(imgs[0], act[0])), cells[1].append(overlay(imgs[1], act[1]))
    return [(f"{label}\nquery", cells[0]), (f"{label}\nmatch", cells[1])]


def flip_rows(models: dict, samples: Sequence[Sample], transform, *,
              layer: Optional[str] = None) -> list[tuple[str, list[Image.Image]]]:
    """Rows for :func:`corelib.viz.samples_overview` in the paper's flip-pair layout: the images,
    each followed by its mirror image, then one row of :func:`activation_maps` overlays per network
    in ``models`` (``{"before adaptation": model, ...}``)."""
    imgs = [read_image(s.path) for s in samples]
    pairs = [im for img in imgs for im in (img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    rows = [("image", pairs)]
    x = torch.stack([transform(im) for im in imgs])
    for name, model in models.items():
        maps = activation_maps(model, x, flip=True, layer=layer)  # originals, then the flipped images
        n = len(imgs)
        rows.append((name, [overlay(pairs[2 * i + f], maps[i + f * n]) for i in range(n) for f in (0, 1)]))
    return rows


MODEL_CAM_COLUMNS = ("query", "Grad-CAM", "activation\nmap", "match", "Grad-CAM", "activation\nmap")
"""Column titles of :func:`model_cam_rows`."""


def model_cam_rows(models: dict, query: Sample, match: Sample, transforms: dict, *,
                   branch: str = "descriptor") -> list[tuple[str, list[Image.Image]]]:
    """One row per network for :func:`corelib.viz.samples_overview` (columns :data:`MODEL_CAM_COLUMNS`):
    the query and a gallery image, each with the Grad-CAM of its similarity to the other (``branch``,
    at each network's deepest ``cam_layers()`` entry: ``layer4`` of a ResNet, the last block of a
    ViT) and its activation map; ``models`` is ``{label: network}``, ``transforms`` ``{label: test
    transform}`` (each network at its own input size). Networks with camera embeddings are
    explained camera-blind (the mean SIE row)."""
    rows = []
    imgs = [read_image(query.path), read_image(match.path)]
    for label, model in models.items():
        device = next(explained_network(model).parameters()).device
        x = torch.stack([transforms[label](im) for im in imgs]).to(device)
        e = embed(model, x, branch)
        cams = similarity_cam(model, x, e.flip(0), branch=branch)
        act = activation_maps(model, x)
        cells = []
        for i in range(2):
            cells += [imgs[i], overlay(imgs[i], cams[i], image_weight=CAM_IMAGE_WEIGHT), overlay(imgs[i], act[i])]
        rows.append((label, cells))
    return rows
