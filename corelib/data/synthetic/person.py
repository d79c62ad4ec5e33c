"""The person renderer: an identity's attributes (skin, hair, clothing colours and pattern, shoes,
bag, hat, build) and one view of it (front, back or side) in a camera's scene.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .canvas import draw_background, draw_occluder, finish_image, palette_colour, preset_rng, shade, sorted_box
from .presets import SyntheticPreset

SKIN_TONES = ((255, 220, 190), (235, 190, 150), (200, 150, 110), (160, 110, 75), (110, 75, 50))
HAIR_COLOURS = ((20, 15, 10), (70, 45, 25), (130, 90, 50), (200, 170, 110), (150, 150, 150), (120, 40, 30))


def person_identity(preset: SyntheticPreset, pid: int) -> dict:
    """The fixed attributes of person ``pid``, drawn from the domain palette."""
    rng = preset_rng(preset, "person", pid)
    dom = preset.domain
    upper = palette_colour(rng, dom)
    return {
        "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))],
        "hair": HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        "hair_style": int(rng.integers(3)),  # 0 short, 1 long, 2 bald/very short
        "upper": upper,
        "upper2": palette_colour(rng, dom),
        "pattern": int(rng.choice(5, p=[0.4, 0.18, 0.12, 0.15, 0.15])),  # solid/hstripe/vstripe/check/logo
        "sleeves": int(rng.integers(2)),  # 0 short, 1 long
        "lower": palette_colour(rng, dom),
        "lower_type": int(rng.choice(3, p=[0.6, 0.2, 0.2])),  # trousers / shorts / skirt
        "shoes": palette_colour(rng, dom) if rng.random() < 0.5 else shade((40, 40, 40), rng.uniform(0.5, 3)),
        "bag": int(rng.choice(4, p=[0.4, 0.3, 0.15, 0.15])),  # none / backpack / handbag / shoulder bag
        "bag_colour": palette_colour(rng, dom),
        "hat": int(rng.choice(3, p=[0.7, 0.18, 0.12])),  # none / cap / beanie
        "hat_colour": palette_colour(rng, dom),
        "height": float(rng.uniform(0.9, 1.05)),
        "build": float(rng.uniform(0.85, 1.2)),
    }


def render_person(preset: SyntheticPreset, ident: dict, cam: dict, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """One image of the person ``ident`` seen by camera ``cam``, from a view its view bias draws, and that
    view (0 front, 1 back, 2 side);
    returning it takes no random draw, so the pixels do not depend on it being returned."""
    h, w = preset.image_size
    W, H = 2 * w, 2 * h  # draw at twice the size, then downsample (cheap anti-aliasing)
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    draw_background(d, W, H, cam, rng)
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
        draw_occluder(d, W, H, rng)
    return finish_image(img, preset, cam, rng), view



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
