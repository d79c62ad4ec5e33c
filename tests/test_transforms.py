"""Tests of corelib.data.transforms: LGPR geometry and determinism, stage pipelines, denormalize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from corelib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LocalGrayscalePatchReplacement,
    build_transforms,
    denormalize,
)


def colourful_image(height: int, width: int, seed: int = 0) -> Image.Image:
    """An RGB image where no pixel is gray (R, G, B pairwise different everywhere)."""
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 256, size=(height, width), dtype=np.int64)
    arr = np.stack([r, (r + 85) % 256, (r + 170) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def changed_box(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int] | None:
    """Check that exactly one full rectangle turned to luminance; return (top, left, h, w)."""
    a = np.asarray(before)
    b = np.asarray(after)
    changed = (a != b).any(axis=-1)
    if not changed.any():
        return None
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # Every pixel of the bounding box changed (none was gray before): one filled rectangle.
    assert changed[top:bottom, left:right].all()
    assert changed.sum() == (bottom - top) * (right - left)
    inside = b[top:bottom, left:right]
    assert (inside[..., 0] == inside[..., 1]).all() and (inside[..., 1] == inside[..., 2]).all()
    luma = np.asarray(before.convert("L"))[top:bottom, left:right]
    np.testing.assert_array_equal(inside[..., 0], luma)
    return int(top), int(left), int(bottom - top), int(right - left)


@pytest.mark.parametrize("height,width", [(256, 128), (256, 32), (32, 256), (64, 64)])
def test_lgpr_replaces_one_fitting_rectangle(height: int, width: int) -> None:
    img = colourful_image(height, width)
    original = img.copy()
    lgpr = LocalGrayscalePatchReplacement(p=1.0)
    heights, widths = [], []
    for seed in range(40):
        torch.manual_seed(seed)
        out = lgpr(img)
        assert out is not img and out.size == img.size and out.mode == "RGB"
        box = changed_box(img, out)
        assert box is not None, f"seed {seed}: no patch placed in 100 attempts"
        top, left, h, w = box
        assert h < height and w < width
        assert top + h <= height and left + w <= width
        # Area ratio within [0.02, 0.4], with slack for rounding h and w.
        ratio = h * w / (height * width)
        assert 0.02 * 0.5 <= ratio <= 0.4 * 1.5, (h, w, ratio)
        heights.append(h)
        widths.append(w)
    np.testing.assert_array_equal(np.asarray(img), np.asarray(original))  # input untouched
    # Geometric correctness on non-square images: the authors' swapped bounds would keep the patch
    # height below the image *width* (and the width below the height).
    if height > width:
        assert max(heights) >= width
    if width > height:
        assert max(widths) >= height


def test_lgpr_p0_is_identity() -> None:
    img = colourful_image(64, 32)
    out = LocalGrayscalePatchReplacement(p=0.0)(img)
    assert out is not img
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


def test_lgpr_same_seed_same_result() -> None:
    img = colourful_image(128, 64)
    lgpr = LocalGrayscalePatchReplacement(p=0.5)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append([np.asarray(lgpr(img)) for _ in range(10)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    torch.manual_seed(124)
    other = [np.asarray(lgpr(img)) for _ in range(10)]
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0], other))


def test_lgpr_no_fit_returns_unchanged_and_validates() -> None:
    # A 1-pixel-wide image can never hold a patch with w < W.
    img = colourful_image(50, 1)
    out = LocalGrayscalePatchReplacement(p=1.0, attempts=5)(img)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))
    with pytest.raises(ValueError):
        LocalGrayscalePatchReplacement(p=1.5)
    with pytest.raises(ValueError):
        LocalGrayscalePatchReplacement(area=(0.5, 0.1))
    with pytest.raises(TypeError):
        LocalGrayscalePatchReplacement()(torch.zeros(3, 4, 4))
    assert "p=0.4" in repr(LocalGrayscalePatchReplacement())


def step_names(tf: T.Compose) -> list[str]:
    return [type(t).__name__ for t in tf.transforms]


def test_pipeline_order() -> None:
    common = ["Resize", "RandomHorizontalFlip", "Pad", "RandomCrop",
              "LocalGrayscalePatchReplacement", "RandomGrayscale", "ToTensor", "Normalize"]
    assert step_names(build_transforms("pretrain")) == common
    assert step_names(build_transforms("finetune")) == common + ["RandomErasing"]
    assert step_names(build_transforms("test")) == ["Resize", "ToTensor", "Normalize"]
    # gray_p=0 is the authors' pre-training pipeline.
    assert "RandomGrayscale" not in step_names(build_transforms("pretrain", gray_p=0.0))
    assert "RandomGrayscale" not in step_names(build_transforms("finetune", gray_p=0.0))

    tf = build_transforms("finetune", 256, 128)
    resize, pad, erase = tf.transforms[0], tf.transforms[2], tf.transforms[-1]
    assert resize.interpolation == T.InterpolationMode.BICUBIC and tuple(resize.size) == (256, 128)
    assert pad.padding == 10 and pad.padding_mode == "edge"
    assert erase.p == 0.5 and erase.scale == (0.02, 0.4) and erase.ratio == (0.3, 3.33)
    assert tuple(erase.value) == IMAGENET_MEAN


@pytest.mark.parametrize("stage", ["pretrain", "finetune", "test"])
def test_output_shape_and_dtype(stage: str) -> None:
    tf = build_transforms(stage, 256, 128)
    torch.manual_seed(0)
    for img in (colourful_image(300, 90), colourful_image(64, 64, seed=1)):
        x = tf(img)
        assert x.shape == (3, 256, 128) and x.dtype == torch.float32


def test_test_stage_is_deterministic_and_denormalize_inverts() -> None:
    img = colourful_image(200, 100)
    tf = build_transforms("test", 64, 32)
    torch.manual_seed(0)
    a = tf(img)
    torch.manual_seed(1)
    b = tf(img)
    assert torch.equal(a, b)
    plain = T.Compose([T.Resize((64, 32), interpolation=T.InterpolationMode.BICUBIC),
                       T.ToTensor()])(img)
    back = denormalize(a)
    assert back.min() >= 0 and back.max() <= 1
    torch.testing.assert_close(back, plain, atol=1e-5, rtol=0)
    batch = denormalize(torch.stack([a, a]))
    assert batch.shape == (2, 3, 64, 32)
    assert torch.equal(a, b)  # denormalize did not modify its input
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(denormalize(torch.zeros(3, 2, 2)), mean.expand(3, 2, 2))
    torch.testing.assert_close(denormalize(torch.ones(3, 2, 2)), (mean + std).expand(3, 2, 2))
    with pytest.raises(ValueError):
        denormalize(torch.zeros(1, 2, 2))


def test_training_stage_is_seeded() -> None:
    img = colourful_image(256, 128)
    tf = build_transforms("finetune", 128, 64)
    torch.manual_seed(7)
    a = torch.stack([tf(img) for _ in range(5)])
    torch.manual_seed(7)
    b = torch.stack([tf(img) for _ in range(5)])
    assert torch.equal(a, b)


def test_bad_stage() -> None:
    with pytest.raises(ValueError, match="pretrain, finetune, test"):
        build_transforms("train")
