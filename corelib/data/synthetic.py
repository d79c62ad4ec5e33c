"""Procedural synthetic re-identification data: the workbench's embedded default dataset.

Real ReID datasets cannot be shipped or downloaded here, so the workbench draws its own people and
vehicles and writes them to disk in the *real* formats: persons in the Market-1501 layout and file
naming, vehicles in the VeRi-776 layout. Every loader, notebook and test therefore runs the same
code path it runs on the real data.

What makes it a domain-adaptation benchmark rather than a toy:

- an **identity** is a fixed set of attributes (persons: skin, hair, upper/lower clothing colour and
  pattern, shoes, bag, hat, build; vehicles: body type, colour, windows, wheels, roof item, decal,
  lights). Colours are drawn from a small palette with jitter, so many identities share most
  attributes and retrieval is not trivial;
- an **image** is one view of an identity (front / back / side) with scale and position jitter and,
  sometimes, a partial occluder;
- a **domain** fixes the palette the identities are drawn from, the backgrounds and the illumination;
- a **camera** (several per domain) adds its own colour cast, brightness, blur, noise, background
  scene and viewpoint bias.

Generation is deterministic: each identity and each image draws from its own
``numpy.random.default_rng([seed, preset, pid, ...])`` stream, so a seed gives byte-identical files
regardless of the number of worker processes.

Example::

    from corelib.data.synthetic import generate_synthetic
    root = generate_synthetic("market_like", "data/synthetic")   # writes the Market-1501 layout
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .. import paths
from ..errors import InvalidInputError, UnknownNameError
from ..ownership import install_folder

GENERATOR_VERSION = 1
"""Bumped whenever the drawing code changes the pixels; part of the completion stamp."""

STAMP_FILE = ".synthetic_complete.json"


# ============================================================================================
# presets


@dataclass(frozen=True)
class DomainStyle:
    """Appearance shared by every camera of one domain."""

    name: str
    """Human-readable domain name shown in figures."""
    saturation: tuple[float, float]
    """Range of clothing / paint saturation (0..1): low values give muted, greyish palettes."""
    value: tuple[float, float]
    """Range of clothing / paint brightness (HSV value, 0..1)."""
    hues: tuple[float, ...]
    """Palette hues (0..1) the identities choose from; jittered by ±0.03 per identity."""
    backgrounds: tuple[tuple[int, int, int], ...]
    """Base colours (RGB) of the background scenes; each camera picks and varies one."""
    ground: tuple[int, int, int]
    """Colour of the ground plane."""
    tint: tuple[float, float, float]
    """Per-channel illumination gain applied to every image of the domain."""
    contrast: float
    """Contrast around mid-grey (1 = unchanged)."""
    gamma: float
    """Gamma applied after tint and contrast (>1 darkens mid-tones)."""


@dataclass(frozen=True)
class SyntheticPreset:
    """Everything needed to write one synthetic dataset."""

    name: str
    """Preset name, also the manifest name ``synthetic_<name>``."""
    kind: str
    """``person`` (Market-1501 layout) or ``vehicle`` (VeRi-776 layout)."""
    description: str
    """One line shown by ``corelib synth --list``."""
    domain: DomainStyle
    """Palette, backgrounds and illumination of the domain."""
    num_cameras: int
    """Number of cameras; each identity appears in ``cams_per_id`` of them."""
    num_train_ids: int
    """Identities of the training split (labelled for a source, pseudo-labelled for a target)."""
    num_test_ids: int
    """Identities split into query and gallery (disjoint from the training identities)."""
    cams_per_id: tuple[int, int]
    """Inclusive range of cameras an identity appears in (at least 2 for cross-camera matches)."""
    images_per_cam: tuple[int, int]
    """Inclusive range of images of an identity per camera (at least 2 so query and gallery both
    get one)."""
    num_distractors: int = 0
    """Gallery images of identities that are never queried (Market's ``0000`` images)."""
    num_junk: int = 0
    """Unusable gallery detections (Market's ``-1`` images), dropped by the loader."""
    image_size: tuple[int, int] = (128, 64)
    """(height, width) of the written images in pixels."""
    view_bias: Optional[tuple[tuple[float, float, float], ...]] = None
    """Per camera (front, back, side) view probabilities; None draws them from the seed."""
    occlusion_p: float = 0.15
    """Probability that an image carries a partial occluder."""
    seed: int = 0
    """Seed of the whole preset; changing it gives new identities and images."""

    @property
    def layout(self) -> str:
        return "market" if self.kind == "person" else "veri"

    @property
    def manifest_name(self) -> str:
        return f"synthetic_{self.name}"

    def scaled(self, factor: float) -> "SyntheticPreset":
        """A smaller (or larger) copy: identity and distractor counts scaled by ``factor``.

        The copy has its own name (``market_like_x0.15``), hence its own folder and manifest, so a
        smoke-sized set never overwrites the full one.

        Raises:
            InvalidInputError: ``factor`` is not a positive finite number (0 would draw the smallest
                set that counts allow under the name ``_x0``, not an empty one).
        """
        if not 0 < factor < float("inf"):  # also refuses NaN
            raise InvalidInputError(f"scale must be a positive number (1.0 is the preset itself, e.g. 0.2 for a small "
                                    f"copy), got {factor!r}")
        if factor == 1.0:
            return self
        return replace(
            self,
            name=f"{self.name}_x{factor:g}",
            num_train_ids=max(4, round(self.num_train_ids * factor)),
            num_test_ids=max(4, round(self.num_test_ids * factor)),
            num_distractors=round(self.num_distractors * factor),
            num_junk=round(self.num_junk * factor),
        )


STREET = DomainStyle(
    name="street (summer, daylight)",
    saturation=(0.45, 0.95),
    value=(0.35, 0.95),
    hues=(0.0, 0.08, 0.15, 0.33, 0.5, 0.58, 0.66, 0.75, 0.9),
    backgrounds=((150, 150, 155), (176, 172, 160), (120, 135, 120), (160, 160, 175)),
    ground=(110, 110, 110),
    tint=(1.0, 1.0, 1.0),
    contrast=1.05,
    gamma=0.95,
)

CAMPUS = DomainStyle(
    name="campus (indoor, warm light)",
    saturation=(0.1, 0.55),
    value=(0.15, 0.75),
    hues=(0.02, 0.1, 0.28, 0.55, 0.62, 0.7, 0.95),
    backgrounds=((190, 170, 140), (140, 120, 100), (205, 195, 175), (110, 100, 90)),
    ground=(150, 130, 105),
    tint=(1.12, 0.98, 0.78),
    contrast=0.8,
    gamma=1.25,
)

HIGHWAY = DomainStyle(
    name="highway checkpoint (daylight)",
    saturation=(0.0, 0.9),
    value=(0.25, 0.98),
    hues=(0.0, 0.05, 0.12, 0.3, 0.55, 0.62, 0.68),
    backgrounds=((170, 175, 180), (140, 150, 150), (185, 185, 170)),
    ground=(95, 95, 98),
    tint=(1.0, 1.0, 1.02),
    contrast=1.05,
    gamma=0.95,
)

CITY_NIGHT = DomainStyle(
    name="city surveillance (dusk)",
    saturation=(0.0, 0.6),
    value=(0.15, 0.8),
    hues=(0.0, 0.1, 0.33, 0.58, 0.66, 0.8),
    backgrounds=((70, 80, 100), (60, 70, 75), (90, 95, 110)),
    ground=(55, 58, 65),
    tint=(0.82, 0.95, 1.18),
    contrast=0.85,
    gamma=1.3,
)

PRESETS: dict[str, SyntheticPreset] = {
    p.name: p
    for p in (
        SyntheticPreset(
            name="market_like",
            kind="person",
            description="Market-like person source: 6 cameras, street domain, Market-1501 layout",
            domain=STREET,
            num_cameras=6,
            num_train_ids=240,
            num_test_ids=240,
            cams_per_id=(2, 5),
            images_per_cam=(2, 3),
            num_distractors=100,
            num_junk=40,
            image_size=(128, 64),
            seed=1501,
        ),
        SyntheticPreset(
            name="cuhk_like",
            kind="person",
            description="CUHK-like person target: 2 cameras, indoor campus domain, Market-1501 layout",
            domain=CAMPUS,
            num_cameras=2,
            num_train_ids=160,
            num_test_ids=120,
            cams_per_id=(2, 2),
            images_per_cam=(2, 5),
            image_size=(128, 64),
            seed=3,
        ),
        SyntheticPreset(
            name="vehicleid_like",
            kind="vehicle",
            description="VehicleID-like vehicle source: front and rear cameras, VeRi-776 layout",
            domain=HIGHWAY,
            num_cameras=2,
            num_train_ids=200,
            num_test_ids=100,
            cams_per_id=(2, 2),
            images_per_cam=(2, 4),
            image_size=(128, 128),
            # VehicleID has front and rear shots only: camera 1 sees fronts, camera 2 rears.
            view_bias=((0.85, 0.05, 0.1), (0.05, 0.85, 0.1)),
            occlusion_p=0.05,
            seed=776,
        ),
        SyntheticPreset(
            name="veri_like",
            kind="vehicle",
            description="VeRi-like vehicle target: 8 cameras, city surveillance domain, VeRi-776 layout",
            domain=CITY_NIGHT,
            num_cameras=8,
            num_train_ids=150,
            num_test_ids=100,
            cams_per_id=(2, 5),
            images_per_cam=(2, 3),
            image_size=(128, 128),
            occlusion_p=0.1,
            seed=20,
        ),
    )
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_preset` and ``corelib synth``."""
    return sorted(PRESETS)


def get_preset(name: str) -> SyntheticPreset:
    """The preset called ``name``; an unknown name raises an error listing the valid ones."""
    if name not in PRESETS:
        raise UnknownNameError(f"unknown synthetic preset {name!r}; valid presets: {', '.join(list_presets())}")
    return PRESETS[name]


# ============================================================================================
# colours and small helpers

SKIN_TONES = ((255, 220, 190), (235, 190, 150), (200, 150, 110), (160, 110, 75), (110, 75, 50))
HAIR_COLOURS = ((20, 15, 10), (70, 45, 25), (130, 90, 50), (200, 170, 110), (150, 150, 150), (120, 40, 30))


def _palette_colour(rng: np.random.Generator, dom: DomainStyle) -> tuple[int, int, int]:
    """One clothing / paint colour from the domain palette (a hue bucket plus jitter)."""
    if rng.random() < 0.2:  # achromatic garments (black, grey, white) exist in every domain
        v = rng.uniform(0.08, 0.95) * (dom.value[1] + 0.1)
        return _clip_rgb((v * 255, v * 255, v * 255))
    h = (rng.choice(dom.hues) + rng.uniform(-0.03, 0.03)) % 1.0
    s = rng.uniform(*dom.saturation)
    v = rng.uniform(*dom.value)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return _clip_rgb((r * 255, g * 255, b * 255))


def _clip_rgb(c: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(x)))) for x in c)  # type: ignore[return-value]


def _shade(c: Sequence[int], f: float) -> tuple[int, int, int]:
    return _clip_rgb([x * f for x in c])


def _seed_words(*parts: object) -> list[int]:
    """Stable 32-bit words from strings and ints (hash() is salted per process, so not usable)."""
    words = []
    for p in parts:
        if isinstance(p, (int, np.integer)):
            words.append(int(p) & 0xFFFFFFFF)
        else:
            words.append(int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:4], "little"))
    return words


def _rng(preset: SyntheticPreset, *parts: object) -> np.random.Generator:
    return np.random.default_rng(_seed_words(preset.seed, preset.name, *parts))


# ============================================================================================
# identities


def _person_identity(preset: SyntheticPreset, pid: int) -> dict:
    rng = _rng(preset, "person", pid)
    dom = preset.domain
    upper = _palette_colour(rng, dom)
    return {
        "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))],
        "hair": HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        "hair_style": int(rng.integers(3)),  # 0 short, 1 long, 2 bald/very short
        "upper": upper,
        "upper2": _palette_colour(rng, dom),
        "pattern": int(rng.choice(5, p=[0.4, 0.18, 0.12, 0.15, 0.15])),  # solid/hstripe/vstripe/check/logo
        "sleeves": int(rng.integers(2)),  # 0 short, 1 long
        "lower": _palette_colour(rng, dom),
        "lower_type": int(rng.choice(3, p=[0.6, 0.2, 0.2])),  # trousers / shorts / skirt
        "shoes": _palette_colour(rng, dom) if rng.random() < 0.5 else _shade((40, 40, 40), rng.uniform(0.5, 3)),
        "bag": int(rng.choice(4, p=[0.4, 0.3, 0.15, 0.15])),  # none / backpack / handbag / shoulder bag
        "bag_colour": _palette_colour(rng, dom),
        "hat": int(rng.choice(3, p=[0.7, 0.18, 0.12])),  # none / cap / beanie
        "hat_colour": _palette_colour(rng, dom),
        "height": float(rng.uniform(0.9, 1.05)),
        "build": float(rng.uniform(0.85, 1.2)),
    }


def _vehicle_identity(preset: SyntheticPreset, vid: int) -> dict:
    rng = _rng(preset, "vehicle", vid)
    dom = preset.domain
    return {
        "body": int(rng.choice(5, p=[0.3, 0.25, 0.2, 0.15, 0.1])),  # sedan/suv/hatch/van/pickup
        "paint": _palette_colour(rng, dom),
        "window": _clip_rgb(rng.uniform(20, 90, 3) if rng.random() < 0.7 else rng.uniform(110, 170, 3)),
        "wheel": int(rng.integers(3)),  # hub style
        "hub": _clip_rgb(rng.uniform(60, 220, 3)),
        "roof": int(rng.choice(5, p=[0.5, 0.15, 0.15, 0.1, 0.1])),  # none/rack/box/lightbar/sunroof
        "decal": int(rng.choice(4, p=[0.55, 0.2, 0.15, 0.1])),  # none/side stripe/hood stripe/logo
        "decal_colour": _palette_colour(rng, dom),
        "lights": int(rng.integers(3)),  # headlight shape
        "length": float(rng.uniform(0.9, 1.05)),
        "height": float(rng.uniform(0.9, 1.1)),
    }


# ============================================================================================
# cameras and backgrounds


def _camera_style(preset: SyntheticPreset, cam: int) -> dict:
    rng = _rng(preset, "camera", cam)
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
        "background": _clip_rgb(bg + rng.normal(0, 14, 3)),
        "ground": _clip_rgb(np.asarray(dom.ground) + rng.normal(0, 10, 3)),
        "horizon": float(rng.uniform(0.55, 0.85)),
        "texture": int(rng.integers(3)),  # 0 plain wall, 1 windows/tiles, 2 vertical poles
        "texture_colour": _clip_rgb(bg * rng.uniform(0.7, 1.25)),
        "scale": float(rng.uniform(0.9, 1.0)),
    }


def _draw_background(draw: ImageDraw.ImageDraw, w: int, h: int, cam: dict, rng: np.random.Generator) -> None:
    horizon = int(h * (cam["horizon"] + rng.uniform(-0.04, 0.04)))
    draw.rectangle((0, 0, w, horizon), fill=_shade(cam["background"], rng.uniform(0.92, 1.08)))
    draw.rectangle((0, horizon, w, h), fill=_shade(cam["ground"], rng.uniform(0.92, 1.08)))
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
        c = _shade(cam["background"], rng.uniform(0.6, 1.3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=c)


def _finish(img: Image.Image, preset: SyntheticPreset, cam: dict, rng: np.random.Generator) -> Image.Image:
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


def _draw_occluder(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    kind = int(rng.integers(3))
    c = _clip_rgb(rng.uniform(30, 200, 3))
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


# ============================================================================================
# persons


def _render_person(preset: SyntheticPreset, ident: dict, cam: dict, rng: np.random.Generator,
                   view: Optional[int] = None) -> Image.Image:
    h, w = preset.image_size
    W, H = 2 * w, 2 * h  # draw at twice the size, then downsample (cheap anti-aliasing)
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    _draw_background(d, W, H, cam, rng)
    if view is None:
        view = int(rng.choice(3, p=cam["views"]))  # 0 front, 1 back, 2 side
    mirror = rng.random() < 0.5

    bh = H * rng.uniform(0.8, 0.93) * ident["height"] * cam["scale"]
    feet = H - rng.uniform(0.01, 0.05) * H
    top = feet - bh
    cx = W / 2 + rng.uniform(-0.07, 0.07) * W
    sw = bh * 0.21 * ident["build"] * (0.62 if view == 2 else 1.0)  # half shoulder width
    head_h = bh * 0.13
    head_w = head_h * 0.4 * 2 * (0.9 if view == 2 else 1.0)
    neck = top + head_h
    torso_b = neck + bh * 0.33
    legs_b = feet - bh * 0.04
    skin, upper, lower = ident["skin"], ident["upper"], ident["lower"]
    side_dx = (1 if not mirror else -1) * head_w * 0.15  # the face turns in side view

    # a backpack seen from the side sticks out behind the torso: draw it first
    if ident["bag"] == 1 and view == 2:
        bx = cx - (sw + bh * 0.08) * (1 if not mirror else -1)
        d.rectangle(sorted_box(bx, neck + bh * 0.04, cx, torso_b - bh * 0.03), fill=ident["bag_colour"])

    # legs and lower clothing
    leg_w = sw * (0.42 if view != 2 else 0.7)
    gap = sw * 0.08 if view != 2 else 0
    legs = [(cx - gap - leg_w, cx - gap), (cx + gap, cx + gap + leg_w)] if view != 2 else [(cx - leg_w / 2, cx + leg_w / 2)]
    stride = rng.uniform(-0.25, 0.25) * leg_w if view == 2 else 0.0
    for i, (x0, x1) in enumerate(legs):
        d.rectangle((x0 + stride * (i - 0.5), torso_b, x1 + stride * (i - 0.5), legs_b), fill=skin)
    lt = ident["lower_type"]
    if lt == 0:  # trousers
        for i, (x0, x1) in enumerate(legs):
            d.rectangle((x0, torso_b, x1, legs_b), fill=lower)
    elif lt == 1:  # shorts
        for x0, x1 in legs:
            d.rectangle((x0 - 1, torso_b, x1 + 1, torso_b + (legs_b - torso_b) * 0.4), fill=lower)
    else:  # skirt
        flare = sw * 0.25
        d.polygon([(cx - sw * 0.9, torso_b), (cx + sw * 0.9, torso_b), (cx + sw * 0.9 + flare, torso_b + (legs_b - torso_b) * 0.6),
                   (cx - sw * 0.9 - flare, torso_b + (legs_b - torso_b) * 0.6)], fill=lower)
    for x0, x1 in legs:  # shoes
        d.ellipse((x0 - 2, legs_b - 3, x1 + (6 if view == 2 else 2), feet), fill=ident["shoes"])

    # torso with pattern
    tb = (cx - sw, neck + bh * 0.02, cx + sw, torso_b)
    d.rounded_rectangle(tb, radius=max(1, int(sw * 0.3)), fill=upper)
    _draw_pattern(d, tb, ident, view)

    # arms
    arm_w = sw * 0.3
    arm_len = bh * 0.36
    arm_colour_lower = upper if ident["sleeves"] == 1 else skin
    sides = (-1, 1) if view != 2 else (1 if not mirror else -1,)
    for s in sides:
        ax0 = cx + s * sw - (arm_w if s < 0 else 0) if view != 2 else cx - arm_w / 2 + s * sw * 0.1
        ay0 = neck + bh * 0.03
        d.rectangle((ax0, ay0, ax0 + arm_w, ay0 + arm_len * 0.45), fill=upper)
        d.rectangle((ax0, ay0 + arm_len * 0.45, ax0 + arm_w, ay0 + arm_len), fill=arm_colour_lower)
        d.ellipse((ax0, ay0 + arm_len - 2, ax0 + arm_w, ay0 + arm_len + arm_w), fill=skin)

    # bags visible from the front and back
    bc = ident["bag_colour"]
    if ident["bag"] == 1:
        if view == 1:  # backpack covers the back
            d.rounded_rectangle((cx - sw * 0.75, neck + bh * 0.05, cx + sw * 0.75, torso_b - bh * 0.02), radius=3, fill=bc)
        elif view == 0:  # only the straps from the front
            for s in (-1, 1):
                d.rectangle((cx + s * sw * 0.55 - 2, neck, cx + s * sw * 0.55 + 2, torso_b - bh * 0.08), fill=bc)
    elif ident["bag"] == 2:  # handbag at hand level
        s = 1 if not mirror else -1
        bx = cx + s * (sw + arm_w * 0.5)
        by = neck + bh * 0.36
        d.rectangle(sorted_box(bx - sw * 0.35, by, bx + sw * 0.35, by + bh * 0.12), fill=bc)
    elif ident["bag"] == 3:  # shoulder bag: diagonal strap and bag at the hip
        s = 1 if not mirror else -1
        d.line((cx - s * sw * 0.7, neck + 2, cx + s * sw * 0.8, torso_b - bh * 0.05), fill=bc, width=max(2, int(sw * 0.12)))
        d.rectangle(sorted_box(cx + s * sw * 0.6, torso_b - bh * 0.1, cx + s * sw * 1.25, torso_b + bh * 0.02), fill=bc)

    # head, hair, hat
    hx = cx + (side_dx if view == 2 else 0)
    d.ellipse((hx - head_w / 2, top, hx + head_w / 2, neck + 2), fill=skin)
    hair = ident["hair"]
    style = ident["hair_style"]
    if style != 2:
        if view == 1:  # back of the head: hair everywhere
            d.ellipse((hx - head_w / 2 - 1, top - 1, hx + head_w / 2 + 1, neck), fill=hair)
        else:
            d.chord((hx - head_w / 2 - 1, top - 1, hx + head_w / 2 + 1, top + head_h * 0.9), 180, 360, fill=hair)
        if style == 1:  # long hair down to the shoulders
            back = -1 if view == 2 and not mirror else 1
            if view == 2:
                d.rectangle(sorted_box(hx - back * head_w * 0.5, top + head_h * 0.3, hx - back * head_w * 0.1, neck + bh * 0.1), fill=hair)
            elif view == 1:
                d.rectangle((hx - head_w / 2, top + head_h * 0.4, hx + head_w / 2, neck + bh * 0.12), fill=hair)
            else:
                for s in (-1, 1):
                    d.rectangle(sorted_box(hx + s * head_w / 2, top + head_h * 0.35, hx + s * head_w * 0.3, neck + bh * 0.08), fill=hair)
    if view == 0:  # a hint of a face so that front and back differ
        ey = top + head_h * 0.45
        for s in (-1, 1):
            d.point((hx + s * head_w * 0.18, ey), fill=(30, 30, 30))
    if ident["hat"] == 1:  # cap with a brim
        d.chord((hx - head_w / 2 - 1, top - 2, hx + head_w / 2 + 1, top + head_h * 0.7), 180, 360, fill=ident["hat_colour"])
        if view != 1:
            bdir = (1 if not mirror else -1) if view == 2 else 0
            d.rectangle(sorted_box(hx + bdir * head_w * 0.3 - head_w * 0.45, top + head_h * 0.3,
                                   hx + bdir * head_w * 0.3 + head_w * 0.45 + bdir * 4, top + head_h * 0.4), fill=ident["hat_colour"])
    elif ident["hat"] == 2:  # beanie
        d.chord((hx - head_w / 2 - 1, top - 4, hx + head_w / 2 + 1, top + head_h * 0.85), 180, 360, fill=ident["hat_colour"])

    if rng.random() < preset.occlusion_p:
        _draw_occluder(d, W, H, rng)
    return _finish(img, preset, cam, rng)


def sorted_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """PIL wants (left, top, right, bottom) with left <= right; mirrored views can swap them."""
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _draw_pattern(d: ImageDraw.ImageDraw, box: tuple, ident: dict, view: int) -> None:
    x0, y0, x1, y1 = box
    c2 = ident["upper2"]
    p = ident["pattern"]
    step = max(4.0, (y1 - y0) / 5)
    if p == 1:  # horizontal stripes
        y = y0 + step / 2
        while y < y1:
            d.rectangle((x0 + 1, y, x1 - 1, y + step / 2), fill=c2)
            y += step
    elif p == 2:  # vertical stripes
        sx = max(3.0, (x1 - x0) / 5)
        x = x0 + sx / 2
        while x < x1:
            d.rectangle((x, y0 + 1, x + sx / 2, y1 - 1), fill=c2)
            x += sx
    elif p == 3:  # two-tone: different colour on the lower half
        d.rectangle((x0, (y0 + y1) / 2, x1, y1), fill=c2)
    elif p == 4 and view == 0:  # a chest logo, only visible from the front
        cx, cy, r = (x0 + x1) / 2, y0 + (y1 - y0) * 0.35, (x1 - x0) * 0.18
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=c2)


# ============================================================================================
# vehicles


def _render_vehicle(preset: SyntheticPreset, ident: dict, cam: dict, rng: np.random.Generator,
                    view: Optional[int] = None) -> Image.Image:
    h, w = preset.image_size
    W, H = 2 * w, 2 * h
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    _draw_background(d, W, H, cam, rng)
    if view is None:
        view = int(rng.choice(3, p=cam["views"]))  # 0 front, 1 rear, 2 side
    mirror = rng.random() < 0.5
    body = ident["body"]
    paint = ident["paint"]
    dark = _shade(paint, 0.6)
    win = ident["window"]
    s = cam["scale"] * rng.uniform(0.9, 1.0)
    cx = W / 2 + rng.uniform(-0.05, 0.05) * W
    ground = H * (0.88 + rng.uniform(-0.03, 0.03))
    # body height relative to image; tall bodies (suv, van) reach higher
    tall = {0: 0.42, 1: 0.55, 2: 0.47, 3: 0.62, 4: 0.5}[body] * ident["height"]

    if view == 2:  # side profile
        length = W * 0.86 * s * ident["length"]
        x0, x1 = cx - length / 2, cx + length / 2
        bottom = ground - H * 0.06
        top = bottom - H * tall * s
        belt = bottom - (bottom - top) * 0.5
        d.rounded_rectangle((x0, belt, x1, bottom), radius=int(H * 0.03), fill=paint)
        # cabin shape per body type
        if body == 4:  # pickup: cabin at the front, open bed at the back
            cab = (x0 + length * 0.45, x1 - length * 0.05) if not mirror else (x0 + length * 0.05, x1 - length * 0.45)
            d.polygon([(cab[0], belt), (cab[0] + length * 0.05, top), (cab[1] - length * 0.08, top), (cab[1], belt)], fill=paint)
            d.polygon([(cab[0] + length * 0.04, belt - 2), (cab[0] + length * 0.07, top + 4), (cab[1] - length * 0.09, top + 4),
                       (cab[1] - length * 0.03, belt - 2)], fill=win)
        else:
            inset_f = {0: 0.2, 1: 0.06, 2: 0.12, 3: 0.03}[body]
            inset_b = {0: 0.18, 1: 0.05, 2: 0.04, 3: 0.02}[body]
            if mirror:
                inset_f, inset_b = inset_b, inset_f
            pts = [(x0 + length * 0.04, belt), (x0 + length * inset_b + length * 0.04, top), (x1 - length * inset_f - length * 0.04, top),
                   (x1 - length * 0.04, belt)]
            d.polygon(pts, fill=paint)
            wp = [(x0 + length * 0.08, belt - 2), (x0 + length * inset_b + length * 0.08, top + 4),
                  (x1 - length * inset_f - length * 0.08, top + 4), (x1 - length * 0.08, belt - 2)]
            d.polygon(wp, fill=win)
            d.line((cx, top + 4, cx, belt - 2), fill=paint, width=3)  # B-pillar
        _draw_roof(d, ident, x0 + length * 0.25, x1 - length * 0.25, top)
        if ident["decal"] == 1:  # side stripe
            d.rectangle((x0 + length * 0.05, belt + (bottom - belt) * 0.35, x1 - length * 0.05, belt + (bottom - belt) * 0.5), fill=ident["decal_colour"])
        elif ident["decal"] == 3:  # door logo
            r = (bottom - belt) * 0.25
            d.ellipse((cx - r, belt + r * 0.6, cx + r, belt + r * 2.6), fill=ident["decal_colour"])
        wr = H * 0.085 * s
        for wx in (x0 + length * 0.2, x1 - length * 0.2):
            _draw_wheel(d, ident, wx, bottom, wr)
        lamp = (255, 240, 200)
        fx = x1 if not mirror else x0
        d.rectangle(sorted_box(fx - (6 if not mirror else -6), belt + 3, fx, belt + 8), fill=lamp)
    else:  # front or rear
        width = W * 0.78 * s
        x0, x1 = cx - width / 2, cx + width / 2
        bottom = ground - H * 0.03
        top = bottom - H * tall * s * 1.25
        belt = bottom - (bottom - top) * 0.52
        d.rectangle((x0 + width * 0.03, bottom - H * 0.08, x0 + width * 0.17, ground), fill=(25, 25, 25))  # tyres
        d.rectangle((x1 - width * 0.17, bottom - H * 0.08, x1 - width * 0.03, ground), fill=(25, 25, 25))
        d.rounded_rectangle((x0, belt, x1, bottom), radius=int(H * 0.04), fill=paint)
        taper = {0: 0.14, 1: 0.06, 2: 0.1, 3: 0.04, 4: 0.08}[body] * width
        d.polygon([(x0 + width * 0.05, belt), (x0 + taper + width * 0.05, top), (x1 - taper - width * 0.05, top),
                   (x1 - width * 0.05, belt)], fill=paint)
        d.polygon([(x0 + width * 0.1, belt - 3), (x0 + taper + width * 0.1, top + 5), (x1 - taper - width * 0.1, top + 5),
                   (x1 - width * 0.1, belt - 3)], fill=win)
        _draw_roof(d, ident, x0 + taper + width * 0.1, x1 - taper - width * 0.1, top)
        ly = belt + (bottom - belt) * 0.2
        lh = (bottom - belt) * 0.25
        if view == 0:
            lamp = (250, 250, 225)
            shape = ident["lights"]
            for lx0, lx1 in ((x0 + width * 0.05, x0 + width * 0.28), (x1 - width * 0.28, x1 - width * 0.05)):
                if shape == 0:
                    d.rectangle((lx0, ly, lx1, ly + lh), fill=lamp)
                elif shape == 1:
                    d.ellipse((lx0, ly - 1, lx1, ly + lh + 1), fill=lamp)
                else:
                    d.polygon([(lx0, ly + lh), (lx1, ly), (lx1, ly + lh)], fill=lamp)
            gx0, gx1 = x0 + width * 0.33, x1 - width * 0.33  # grille
            d.rectangle((gx0, ly, gx1, ly + lh * 1.3), fill=dark)
            for k in range(3):
                yy = ly + lh * 1.3 * (k + 0.5) / 3
                d.line((gx0 + 2, yy, gx1 - 2, yy), fill=_shade(paint, 0.3))
            if ident["decal"] == 2:  # hood stripe seen from the front
                d.rectangle((cx - width * 0.06, belt, cx + width * 0.06, ly), fill=ident["decal_colour"])
        else:
            tail = (200, 25, 25)
            d.rectangle((x0 + width * 0.04, ly, x0 + width * 0.2, ly + lh), fill=tail)
            d.rectangle((x1 - width * 0.2, ly, x1 - width * 0.04, ly + lh), fill=tail)
            d.rectangle((cx - width * 0.12, ly + lh * 1.2, cx + width * 0.12, ly + lh * 2.0), fill=(235, 235, 225))  # plate
            if body == 4:  # pickup tailgate
                d.line((x0 + width * 0.05, ly - 3, x1 - width * 0.05, ly - 3), fill=dark, width=2)
            if ident["decal"] == 3:
                r = lh * 0.5
                d.ellipse((cx - r, ly - r * 2.5, cx + r, ly - r * 0.5), fill=ident["decal_colour"])
    if rng.random() < preset.occlusion_p:
        _draw_occluder(d, W, H, rng)
    return _finish(img, preset, cam, rng)


def _draw_roof(d: ImageDraw.ImageDraw, ident: dict, x0: float, x1: float, top: float) -> None:
    roof = ident["roof"]
    c = (40, 40, 40)
    if roof == 1:  # rack
        d.rectangle((x0, top - 4, x1, top - 2), fill=c)
        for x in (x0, (x0 + x1) / 2, x1):
            d.line((x, top - 4, x, top), fill=c, width=2)
    elif roof == 2:  # roof box
        d.rounded_rectangle((x0 + (x1 - x0) * 0.1, top - 8, x1 - (x1 - x0) * 0.1, top), radius=3, fill=(230, 230, 230))
    elif roof == 3:  # light bar (taxi / police style)
        d.rectangle(((x0 + x1) / 2 - 8, top - 6, (x0 + x1) / 2 + 8, top), fill=ident["decal_colour"])
    elif roof == 4:  # sunroof: dark patch
        d.rectangle((x0 + (x1 - x0) * 0.3, top - 2, x1 - (x1 - x0) * 0.3, top + 1), fill=(15, 15, 15))


def _draw_wheel(d: ImageDraw.ImageDraw, ident: dict, x: float, y: float, r: float) -> None:
    d.ellipse((x - r, y - r, x + r, y + r), fill=(25, 25, 25))
    hr = r * (0.55 if ident["wheel"] != 2 else 0.7)
    d.ellipse((x - hr, y - hr, x + hr, y + hr), fill=ident["hub"])
    if ident["wheel"] == 1:  # spokes
        for a in range(0, 360, 72):
            ar = math.radians(a)
            d.line((x, y, x + hr * math.cos(ar), y + hr * math.sin(ar)), fill=(40, 40, 40), width=2)


# ============================================================================================
# the plan: which image of which identity goes where, with which file name


@dataclass(frozen=True)
class _Job:
    split: str  # folder name
    filename: str
    pid: int  # identity used for drawing (distractors and junk get their own identity numbers)
    cam: int  # 0-based
    index: int  # image index within (pid, cam)
    junk: bool = False


def _split_folders(preset: SyntheticPreset) -> dict[str, str]:
    if preset.layout == "market":
        return {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    return {"train": "image_train", "query": "image_query", "gallery": "image_test"}


def _filename(preset: SyntheticPreset, pid: int, cam: int, frame: int, index: int) -> str:
    if preset.layout == "market":
        # Market-1501: 0002_c1s1_000451_03.jpg = pid, camera (1-based), sequence, frame, box index
        pid_str = "-1" if pid < 0 else f"{pid:04d}"
        return f"{pid_str}_c{cam + 1}s1_{frame:06d}_{index:02d}.jpg"
    # VeRi-776: 0002_c002_00030600_0.jpg = vehicle id, camera (1-based), frame, index
    return f"{pid:04d}_c{cam + 1:03d}_{frame:08d}_{index}.jpg"


def plan_jobs(preset: SyntheticPreset) -> list[_Job]:
    """Assign identities to splits and cameras and name every file (no drawing yet).

    Train identities use pids 1..N_train, test identities the next N_test pids; test images are
    split Market-style: for every (identity, camera) one image goes to the query set and the rest to
    the gallery, so every query has a same-identity match in another camera of the gallery.
    """
    rng = _rng(preset, "plan")
    folders = _split_folders(preset)
    jobs: list[_Job] = []
    frame = 0
    n_ids = preset.num_train_ids + preset.num_test_ids
    for pid in range(1, n_ids + 1):
        is_train = pid <= preset.num_train_ids
        n_cams = int(rng.integers(preset.cams_per_id[0], min(preset.cams_per_id[1], preset.num_cameras) + 1))
        cams = sorted(rng.choice(preset.num_cameras, size=n_cams, replace=False).tolist())
        for cam in cams:
            n_img = int(rng.integers(preset.images_per_cam[0], preset.images_per_cam[1] + 1))
            frame += int(rng.integers(20, 400))
            for k in range(n_img):
                split = "train" if is_train else ("query" if k == 0 else "gallery")
                jobs.append(_Job(folders[split], _filename(preset, pid, cam, frame + 5 * k, k), pid, cam, k))
    # Distractors: people / vehicles never queried. Market names them 0000; VeRi has none, so the
    # vehicle presets give them fresh ids above the test range (they are still never queried).
    for j in range(preset.num_distractors):
        cam = int(rng.integers(preset.num_cameras))
        frame += int(rng.integers(5, 50))
        draw_pid = n_ids + 1 + j
        name_pid = 0 if preset.layout == "market" else draw_pid
        jobs.append(_Job(folders["gallery"], _filename(preset, name_pid, cam, frame, j % 100), draw_pid, cam, 0))
    for j in range(preset.num_junk):
        cam = int(rng.integers(preset.num_cameras))
        frame += int(rng.integers(5, 50))
        jobs.append(_Job(folders["gallery"], _filename(preset, -1, cam, frame, j % 100), n_ids + 10_000 + j, cam, 0, junk=True))
    return jobs


def _render_job(preset: SyntheticPreset, job: _Job) -> Image.Image:
    rng = _rng(preset, "image", job.pid, job.cam, job.index)
    cam = _camera_style(preset, job.cam)
    if preset.kind == "person":
        img = _render_person(preset, _person_identity(preset, job.pid), cam, rng)
    else:
        img = _render_vehicle(preset, _vehicle_identity(preset, job.pid), cam, rng)
    if job.junk:  # a bad detection: a thin off-centre crop of the frame, blown up
        w, h = img.size
        x0 = int(rng.integers(0, w // 2))
        img = img.crop((x0, 0, x0 + max(4, w // 3), h // 2)).resize((w, h), Image.Resampling.NEAREST)
    return img


def render_example(preset: str | SyntheticPreset, pid: int, cam: int, index: int = 0) -> Image.Image:
    """Draw one image of identity ``pid`` seen by camera ``cam`` (0-based) without writing it."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    return _render_job(p, _Job("", "", pid, cam, index))


def _write_chunk(args: tuple[SyntheticPreset, str, list[_Job]]) -> int:
    preset, root, jobs = args
    for job in jobs:
        img = _render_job(preset, job)
        # Fixed quality, no EXIF or timestamps: the same seed gives byte-identical files.
        img.save(os.path.join(root, job.split, job.filename), format="JPEG", quality=90)
    return len(jobs)


# ============================================================================================
# writing a dataset


def preset_fingerprint(preset: SyntheticPreset) -> str:
    """Hash of the preset and generator version; stored next to the data to detect stale copies."""
    blob = json.dumps({"v": GENERATOR_VERSION, "preset": asdict(preset)}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_folder(preset: SyntheticPreset) -> str:
    """Folder name of a preset's dataset inside the output root."""
    return preset.manifest_name


def generate_synthetic(
    preset: str | SyntheticPreset,
    root: str | Path,
    *,
    scale: float = 1.0,
    workers: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write one synthetic dataset under ``root/<synthetic_PRESET>`` and return that folder.

    An existing complete copy with the same fingerprint is reused (nothing is redrawn); a stale
    copy (its stamp names another fingerprint) is replaced. Files are written to a temporary sibling
    folder and renamed at the end, so an interrupted run never leaves a half-written dataset behind.

    Nothing the generator did not write is deleted: an existing ``root/<synthetic_PRESET>`` without
    the generator's stamp (other than an empty folder), or a left-over temporary folder without its
    marker, raises ``NotOwnedError`` before anything is drawn.

    Args:
        preset: a preset name (:func:`list_presets`) or a :class:`SyntheticPreset`.
        root: parent folder of the dataset folder.
        scale: multiply identity counts (e.g. 0.2 for smoke tests); 1.0 is the preset itself.
        workers: processes to draw with (default: all cores).
        overwrite: redraw even when a complete copy exists.
        progress: show a tqdm progress bar.

    Raises:
        NotOwnedError: the dataset folder or the temporary folder exists and is not the generator's.
        InvalidInputError: ``scale`` is not a positive number (:meth:`SyntheticPreset.scaled`).
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    if scale != 1.0:
        p = p.scaled(scale)
    root = Path(root).expanduser()
    out = root / dataset_folder(p)
    fp = preset_fingerprint(p)
    stamp = out / STAMP_FILE
    if not overwrite and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("fingerprint") == fp:
                return out
        except (json.JSONDecodeError, OSError):
            pass  # unreadable stamp: regenerate

    what = "a synthetic dataset written by corelib"
    fix = (f"pass another root, or move {out} away yourself if it is not needed; "
           f"generate_synthetic writes root/{dataset_folder(p)}")
    paths.check_owned_tree(out, (STAMP_FILE,), what, fix)  # refuse before drawing, not after
    jobs = plan_jobs(p)
    tmp = root / f".{dataset_folder(p)}.tmp-{os.getpid()}"
    # A temporary folder of this name is only removed when its marker says this generator made it.
    paths.remove_owned_tree(tmp, (paths.PARTIAL_MARKER, STAMP_FILE),
                            "a temporary folder of generate_synthetic",
                            f"remove {tmp} yourself if nothing in it is needed")
    paths.make_partial_dir(tmp, "generate_synthetic")
    for folder in _split_folders(p).values():
        (tmp / folder).mkdir(parents=True)
    workers = workers or os.cpu_count() or 1
    chunks = [jobs[i : i + 64] for i in range(0, len(jobs), 64)]
    bar = _progress(len(jobs), f"synth {p.name}", progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for n in pool.map(_write_chunk, [(p, str(tmp), c) for c in chunks]):
                bar.update(n)
    else:
        for c in chunks:
            bar.update(_write_chunk((p, str(tmp), c)))
    bar.close()
    if p.layout == "veri":
        _write_veri_lists(tmp, jobs)
    manifest = preset_manifest(p, jobs)
    from .manifests import dump_manifest  # local import: manifests imports this module's presets

    dump_manifest(manifest, tmp / "manifest.yaml")
    (tmp / STAMP_FILE).write_text(json.dumps({"fingerprint": fp, "preset": p.name, "images": len(jobs)}, indent=1))
    # The marker only guards the temporary folder: the dataset itself holds exactly what it always held.
    (tmp / paths.PARTIAL_MARKER).unlink()
    install_folder(tmp, out, writer="generate_synthetic", markers=(STAMP_FILE,), what=what, fix=fix)
    return out


def _write_veri_lists(root: Path, jobs: list[_Job]) -> None:
    # VeRi-776 ships name_train.txt / name_query.txt / name_test.txt listing the file names.
    for folder, listname in (("image_train", "name_train.txt"), ("image_query", "name_query.txt"), ("image_test", "name_test.txt")):
        names = sorted(j.filename for j in jobs if j.split == folder)
        (root / listname).write_text("".join(n + "\n" for n in names))


def preset_manifest(preset: SyntheticPreset, jobs: Optional[list[_Job]] = None) -> dict:
    """The data manifest of a preset (same schema as ``data_manifests/*.yaml``)."""
    jobs = plan_jobs(preset) if jobs is None else jobs
    folders = _split_folders(preset)
    splits = {}
    for split, folder in folders.items():
        kept = [j for j in jobs if j.split == folder and not j.junk]
        name_pids = {int(j.filename.split("_")[0]) for j in kept}
        splits[split] = {"ids": len(name_pids), "images": len(kept), "cameras": len({j.cam for j in kept})}
    files = {folder: sum(1 for j in jobs if j.split == folder) for folder in folders.values()}
    loader = "market1501" if preset.layout == "market" else "veri776"
    layout = list(folders.values()) + (["name_train.txt", "name_query.txt", "name_test.txt"] if preset.layout == "veri" else [])
    return {
        "name": preset.manifest_name,
        "title": f"Synthetic {preset.name} ({preset.description})",
        "kind": preset.kind,
        "loader": loader,
        "loader_kwargs": {},
        "folder": dataset_folder(preset),
        "layout": layout,
        "image_format": "jpg",
        "image_size": list(preset.image_size),
        "cameras": preset.num_cameras,
        "protocol": "market",
        "splits": splits,
        "files": files,
        "obtain": f"generated locally: `corelib synth {preset.name} ROOT` (seed {preset.seed}, "
        f"generator version {GENERATOR_VERSION})",
        "licence": "synthetic, generated by corelib; no restrictions",
        "discrepancies": [],
        "domain": preset.domain.name,
        "fingerprint": preset_fingerprint(preset),
    }


def load_synthetic(dataset_root: str | Path):
    """Load a generated dataset folder with the loader its ``manifest.yaml`` names."""
    from .datasets import build_dataset
    from .manifests import load_manifest

    root = Path(dataset_root)
    if not (root / "manifest.yaml").is_file():
        raise FileNotFoundError(
            f"{root} has no manifest.yaml: it is not a generated synthetic dataset; "
            f"create one with `corelib synth PRESET {root.parent}`"
        )
    m = load_manifest(root / "manifest.yaml")
    ds = build_dataset(m["loader"], root, **(m.get("loader_kwargs") or {}))
    ds.name = m["name"]
    return ds


def _progress(total: int, desc: str, enabled: bool):
    from ..progress import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, mininterval=0.5)


def open_dataset(name: str, root: str | Path, *, scale: float = 1.0, progress: bool = False, **kwargs):
    """A dataset by loader name or by synthetic preset name.

    ``name`` is either a :func:`~corelib.data.datasets.build_dataset` loader (``market1501``,
    ``veri776`` ...; ``root`` is the copy, ``kwargs`` go to the loader) or an embedded preset
    (``market_like`` ...; generated under ``root`` when no complete copy is there, at ``scale``).
    """
    if name in PRESETS:
        return load_synthetic(generate_synthetic(name, root, scale=scale, progress=progress))
    from .datasets import build_dataset

    return build_dataset(name, root, **kwargs)
