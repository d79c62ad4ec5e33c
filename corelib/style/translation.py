"""Translating images with trained style models, and the figure rows of notebook 01 that show it.

:func:`translate` runs a dataset's samples through one generator and gives each copy its image's
own size back; :func:`translate_images` does the same for PIL images in memory, at the model's size.
:func:`camera_style_rows` and :func:`domain_style_rows` lay out translations for
:func:`corelib.viz.samples_overview`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
from PIL import Image

from ..config import StyleCfg
from ..data.dataset import ReIDDataset, Sample, read_image
from ..data.batches import build_loader
from ..repro import resolve_device
from .cyclegan_data import style_transforms, to_pil
from .model_index import StyleModels, load_style_models
from .networks import CycleGAN


class _WithSize:
    """A transform that also returns the image's own (width, height), to resize its copy back."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(img), torch.tensor(img.size)


@torch.no_grad()
def translate(
    model: CycleGAN,
    cfg: StyleCfg,
    samples: Sequence[Sample],
    direction: str,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Iterable[tuple[int, Image.Image]]:
    """Yield ``(index, translated PIL image)`` for ``samples`` through generator ``direction``.

    Images are resized to the config's (height, width), translated, and resized to their own size
    again (bicubic), so the copies match the real images of the dataset.
    """
    gen = model.generator(direction)
    device = next(gen.parameters()).device
    loader = build_loader(samples, _WithSize(style_transforms(cfg, train=False)), batch_size, num_workers=num_workers)
    for (images, sizes), _, _, idx in loader:
        fakes = to_pil(gen(images.to(device)))
        for fake, (w, h), i in zip(fakes, sizes.tolist(), idx.tolist()):
            yield i, fake.resize((w, h), Image.Resampling.BICUBIC) if fake.size != (w, h) else fake


@torch.no_grad()
def translate_images(model: CycleGAN, cfg: StyleCfg, images: Sequence[Image.Image], direction: str,
                     batch_size: int = 64) -> Iterable[tuple[int, Image.Image]]:
    """Like :func:`translate` for in-memory PIL images; outputs stay at the config's size."""
    gen = model.generator(direction)
    device = next(gen.parameters()).device
    tf = style_transforms(cfg, train=False)
    for start in range(0, len(images), batch_size):
        batch = torch.stack([tf(im) for im in images[start:start + batch_size]]).to(device)
        for j, fake in enumerate(to_pil(gen(batch))):
            yield start + j, fake


def camera_style_rows(source: ReIDDataset, models: Union[StyleModels, str, Path], *, split: str = "train",
                      device: str = "cpu") -> tuple[list[tuple[str, list[Image.Image]]], list[str]]:
    """Rows for :func:`corelib.viz.samples_overview`: one image per camera, in every camera's style.

    Row ``a`` holds an image of camera ``a``; column ``b`` is that image translated to camera ``b``'s
    style, so the diagonal holds the real images. Returns ``(rows, column_titles)``.
    """
    models = models if isinstance(models, StyleModels) else load_style_models(models)
    items = source.split(split)
    cams = sorted({s.camid for s in items})
    pick = {c: next(s for s in items if s.camid == c) for c in cams}
    cells: dict[tuple[int, int], Image.Image] = {}
    for pair in models.pairs:
        model, cfg = models.load(pair, resolve_device(device))
        for x, y, direction in ((pair.a, pair.b, "ab"), (pair.b, pair.a, "ba")):
            cells[x, y] = next(iter(translate(model, cfg, [pick[x]], direction)))[1]
    rows = [(f"cam {a + 1}", [read_image(pick[a].path) if a == b else cells[a, b] for b in cams]) for a in cams]
    return rows, [f"as cam {b + 1}" for b in cams]


def domain_style_rows(source: ReIDDataset, target: ReIDDataset, models: Union[StyleModels, str, Path], *,
                      n: int = 8, device: str = "cpu") -> list[tuple[str, list[Image.Image]]]:
    """Rows for :func:`corelib.viz.samples_overview`: source images, their target-style copies, and
    target images for reference (``n`` each, evenly spaced through the training splits)."""
    models = models if isinstance(models, StyleModels) else load_style_models(models)
    model, cfg = models.load(models.pairs[0], resolve_device(device))
    xs = source.train[:: max(1, len(source.train) // n)][:n]
    fakes = dict(translate(model, cfg, xs, "ab"))
    refs = target.train[:: max(1, len(target.train) // n)][:n]
    return [(f"{source.name}\n(real)", [read_image(s.path) for s in xs]),
            (f"→ {target.name}\nstyle", [fakes[i] for i in range(len(xs))]),
            (f"{target.name}\n(real)", [read_image(s.path) for s in refs])]
