"""How far translation moves images toward the other side's colours: the colour-gap metric.

Per image, the mean and standard deviation of R, G and B (:func:`colour_statistics`); per pair of
image sets, the Fréchet distance of those statistics (:func:`frechet_distance`). :func:`style_gap`
compares real X with real Y (``before``) and X translated to Y's style with real Y (``after``) for
every direction of every style model; :func:`summarize_gap` totals it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..data.dataset import ReIDDataset, Sample, read_image
from ..errors import StyleError
from ..progress import tqdm
from ..repro import resolve_device
from .cyclegan_data import style_transforms
from .model_index import StyleModels, load_style_models
from .translation import translate_images


def colour_statistics(images: Sequence[Union[Image.Image, str]], size: tuple[int, int]) -> torch.Tensor:
    """Per image, the mean and standard deviation of R, G and B in [0, 1] at ``size`` (H, W): (N, 6)."""
    out = []
    for img in images:
        img = read_image(img) if isinstance(img, (str, Path)) else img.convert("RGB")
        t = torch.from_numpy(np.asarray(img.resize(size[::-1], Image.Resampling.BICUBIC), dtype=np.float32) / 255.0)
        flat = t.reshape(-1, 3)
        out.append(torch.cat([flat.mean(0), flat.std(0)]))
    return torch.stack(out).double()


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``x`` and ``y`` (FID's formula).

    ``|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2))``; the trace of the matrix square root is
    computed as the sum of the square roots of the eigenvalues of ``S_x^(1/2) S_y S_x^(1/2)``
    (symmetric, so ``eigh`` is exact and stable).
    """
    if len(x) < 2 or len(y) < 2:
        raise StyleError("the Fréchet distance needs at least 2 images on each side")
    mx, my = x.mean(0), y.mean(0)
    sx, sy = torch.cov(x.T), torch.cov(y.T)
    w, v = torch.linalg.eigh(sx)
    root_x = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_x @ sy @ root_x).clamp_min(0).sqrt().sum()
    return float((mx - my).pow(2).sum() + torch.trace(sx) + torch.trace(sy) - 2 * cross)


def style_gap(
    source: ReIDDataset,
    models: Union[StyleModels, str, Path],
    *,
    target: Optional[ReIDDataset] = None,
    split: str = "train",
    max_images: int = 200,
    device: str = "auto",
    progress: bool = False,
) -> list[dict]:
    """How much translation closes the colour gap, per pair and direction.

    For each direction X -> Y (camera ``a`` -> camera ``b`` and back, or source -> target) the gap is
    the Fréchet distance between the per-image colour statistics (:func:`colour_statistics`) of two
    image sets: ``before`` compares real X with real Y, ``after`` compares X translated to Y's style
    with real Y; ``ratio = after / before`` (below 0.5: the gap fell by more than half).
    ``cycle_l1`` is the mean absolute error, in [0, 1] pixel units, of X -> Y -> X reconstructions,
    which stays small only when translation keeps the content.

    Args:
        source, models: the dataset and its trained style models.
        target: required in domain mode (its training images are the Y side).
        split: the source split whose images are translated.
        max_images: at most this many images per side (evenly spaced), to bound the time.
    """
    models = models if isinstance(models, StyleModels) else load_style_models(models)
    dev = resolve_device(device)
    items = source.split(split)

    def subset(samples: Sequence[Sample]) -> list[Sample]:
        step = max(1, -(-len(samples) // max_images))
        return list(samples)[::step]

    rows = []
    directions = []
    for pair in models.pairs:
        if models.mode == "camera":
            side = {c: subset([s for s in items if s.camid == c]) for c in (pair.a, pair.b)}
            directions += [(pair, "ab", side[pair.a], side[pair.b], f"c{pair.a + 1}", f"c{pair.b + 1}"),
                           (pair, "ba", side[pair.b], side[pair.a], f"c{pair.b + 1}", f"c{pair.a + 1}")]
        else:
            if target is None:
                raise StyleError("style_gap in domain mode needs the target dataset (target=...)")
            directions.append((pair, "ab", subset(items), subset(target.train), source.name, target.name))
    loaded = None  # (pair name, model, cfg): both directions of a pair share one load
    for pair, direction, xs, ys, x_name, y_name in tqdm(directions, desc="style gap", disable=not progress):
        if loaded is None or loaded[0] != pair.name:
            loaded = (pair.name, *models.load(pair, dev))
        _, model, cfg = loaded
        size = (cfg.height, cfg.width)
        real_x = [read_image(sample.path) for sample in xs]  # read once: translated, compared, summarised
        fakes = [img for _, img in translate_images(model, cfg, real_x, direction)]
        back = [img for _, img in translate_images(model, cfg, fakes, "ba" if direction == "ab" else "ab")]
        tf = style_transforms(cfg, train=False)
        # both in [-1, 1]: half the absolute difference is in [0, 1] pixel units
        cycle = sum(float((tf(b) - tf(x)).abs().mean()) / 2 for b, x in zip(back, real_x)) / len(xs)
        stats_y = colour_statistics([s.path for s in ys], size)
        before = frechet_distance(colour_statistics(real_x, size), stats_y)
        after = frechet_distance(colour_statistics(fakes, size), stats_y)
        rows.append({"pair": pair.name, "from": x_name, "to": y_name, "images": len(xs), "before": before,
                     "after": after, "ratio": after / before if before > 0 else float("nan"), "cycle_l1": cycle})
    return rows


def summarize_gap(rows: Sequence[dict]) -> dict:
    """The overall effect of translation: total gap before and after over all directions, and
    their ratio (below 0.5: translation closed more than half of the colour gap)."""
    before, after = sum(r["before"] for r in rows), sum(r["after"] for r in rows)
    return {"directions": len(rows), "before": before, "after": after, "ratio": after / before if before else float("nan"),
            "worst_ratio": max(r["ratio"] for r in rows), "cycle_l1": sum(r["cycle_l1"] for r in rows) / len(rows)}
