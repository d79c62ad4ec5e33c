"""What both renderers share: seeded random streams, palette colours, the camera's look, the
background scene, occluders and the final photometry (blur, gain, contrast, gamma, noise).

Every draw comes from :func:`preset_rng`, a ``numpy.random.default_rng`` stream keyed by the preset
and the parts named (identity, camera, image), so a seed gives the same pixels in any process.
"""

from __future__ import annotations

import colorsys
import hashlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .presets import DomainStyle, SyntheticPreset


def palette_colour(rng: np.random.Generator, dom: DomainStyle) -> tuple[int, int, int]:
    """One clothing / paint colour from the domain palette (a hue bucket plus jitter)."""
    if rng.random() < 0.2:  # achromatic garments (black, grey, white) exist in every domain
        v = rng.uniform(0.08, 0.95) * (dom.value[1] + 0.1)
        return clip_rgb((v * 255, v * 255, v * 255))
    h = (rng.choice(dom.hues) + rng.uniform(-0.03, 0.03)) % 1.0
    s = rng.uniform(*dom.saturation)
    v = rng.uniform(*dom.value)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return clip_rgb((r * 255, g * 255, b * 255))


def clip_rgb(c: Sequence[float]) -> tuple[int, int, int]:
    """``c`` rounded and clipped to an 8-bit RGB triple."""
    return tuple(int(min(255, max(0, round(x)))) for x in c)  # type: ignore[return-value]


def shade(c: Sequence[int], f: float) -> tuple[int, int, int]:
    """``c`` darkened (``f < 1``) or lightened (``f > 1``)."""
    return clip_rgb([x * f for x in c])


def seed_words(*parts: object) -> list[int]:
    """Stable 32-bit words from strings and ints (hash() is salted per process, so not usable)."""
    words = []
    for p in parts:
        if isinstance(p, (int, np.integer)):
            words.append(int(p) & 0xFFFFFFFF)
        else:
            words.append(int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:4], "little"))
    return words


def preset_rng(preset: SyntheticPreset, *parts: object) -> np.random.Generator:
    """The random stream of one part of a preset (``"person", pid`` or ``"image", pid, cam, index`` ...)."""
    return np.random.default_rng(seed_words(preset.seed, preset.name, *parts))


def camera_style(preset: SyntheticPreset, cam: int) -> dict:
    """The look of camera ``cam``: colour gain, brightness, blur, noise, view bias and background scene."""
    rng = preset_rng(preset, "camera", cam)
    dom = preset.domain
    if preset.view_bias is not None:
        views = np.asarray(preset.view_bias[cam % len(preset.view_bias)], dtype=float)
    else:  # each camera watches from a preferred angle
        views = rng.dirichlet((1.2, 1.2, 1.2)) * 0.7 + 0.1
    bg = np.asarray(dom.backgrounds[cam % len(dom.backgrounds)], dtype=float)
    return {
        "gain": tuple(float(g) for g in rng.normal(1.0, 0.09, 3) * np.asarray(dom.tint)),
        "brightness": float(rng.uniform(-18, 18)),
        "blur": float(rng.uniform(0.0, 1.0)),
        "noise": float(rng.uniform(1.5, 7.0)),
        "views": tuple(float(v) for v in views / views.sum()),
        "background": clip_rgb(bg + rng.normal(0, 14, 3)),
        "ground": clip_rgb(np.asarray(dom.ground) + rng.normal(0, 10, 3)),
        "horizon": float(rng.uniform(0.55, 0.85)),
        "texture": int(rng.integers(3)),  # 0 plain wall, 1 windows/tiles, 2 vertical poles
        "texture_colour": clip_rgb(bg * rng.uniform(0.7, 1.25)),
        "scale": float(rng.uniform(0.9, 1.0)),
    }


def draw_background(draw: ImageDraw.ImageDraw, w: int, h: int, cam: dict, rng: np.random.Generator) -> None:
    """The camera's scene: wall or sky above the horizon, ground below, texture and clutter."""
    horizon = int(h * (cam["horizon"] + rng.uniform(-0.04, 0.04)))
    draw.rectangle((0, 0, w, horizon), fill=shade(cam["background"], rng.uniform(0.92, 1.08)))
    draw.rectangle((0, horizon, w, h), fill=shade(cam["ground"], rng.uniform(0.92, 1.08)))
    tex = cam["texture_colour"]
    if cam["texture"] == 1:  # windows or tiles at camera-specific spacing
        step = max(8, w // 4)
        off = int(rng.integers(step))
        for x in range(-off, w, step):
            for y in range(int(h * 0.05), horizon - step // 2, step):
                draw.rectangle((x + 2, y + 2, x + step * 0.6, y + step * 0.6), fill=tex)
    elif cam["texture"] == 2:  # poles / door frames
        for _ in range(3):
            x = int(rng.integers(w))
            draw.rectangle((x, 0, x + max(2, w // 20), horizon), fill=tex)
    # a few random clutter blobs so that backgrounds are not identical within a camera
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.03, 0.12) * w
        c = shade(cam["background"], rng.uniform(0.6, 1.3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=c)


def finish_image(img: Image.Image, preset: SyntheticPreset, cam: dict, rng: np.random.Generator) -> Image.Image:
    """Downsample to the output size and apply camera + domain photometry, blur and noise."""
    h, w = preset.image_size
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    if cam["blur"] > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cam["blur"] * rng.uniform(0.7, 1.3)))
    a = np.asarray(img, dtype=np.float32)
    dom = preset.domain
    a = a * np.asarray(cam["gain"], dtype=np.float32) + cam["brightness"] + rng.normal(0, 6)
    a = (a - 128.0) * dom.contrast + 128.0
    a = 255.0 * np.power(np.clip(a, 0, 255) / 255.0, dom.gamma)
    a += rng.normal(0.0, cam["noise"], a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def draw_occluder(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    """A partial occluder: a pole, something low in front, or a side occluder entering the frame."""
    kind = int(rng.integers(3))
    c = clip_rgb(rng.uniform(30, 200, 3))
    if kind == 0:  # a pole in front of the object
        x = rng.uniform(0.1, 0.8) * w
        draw.rectangle((x, 0, x + rng.uniform(0.06, 0.14) * w, h), fill=c)
    elif kind == 1:  # something low in front (bench, barrier, car bonnet)
        y = rng.uniform(0.7, 0.85) * h
        draw.rectangle((0, y, w, h), fill=c)
    else:  # a side occluder entering the frame (another passer-by, a wall edge)
        x = rng.uniform(0.65, 0.85) * w
        if rng.random() < 0.5:
            draw.rectangle((x, rng.uniform(0, 0.3) * h, w, h), fill=c)
        else:
            draw.rectangle((0, rng.uniform(0, 0.3) * h, w - x, h), fill=c)


def sorted_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """PIL wants (left, top, right, bottom) with left <= right; mirrored views can swap them."""
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
