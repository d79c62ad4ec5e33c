"""The vehicle renderer: an identity's attributes (body type, paint, windows, wheels, roof item,
decal, lights) and one view of it (front, rear or side) in a camera's scene.
"""

from __future__ import annotations

import math
import numpy as np
from PIL import Image, ImageDraw

from .canvas import clip_rgb, draw_background, draw_occluder, finish_image, palette_colour, preset_rng, shade, sorted_box
from .presets import SyntheticPreset


def vehicle_identity(preset: SyntheticPreset, vid: int) -> dict:
    """The fixed attributes of vehicle ``vid``, drawn from the domain palette."""
    rng = preset_rng(preset, "vehicle", vid)
    dom = preset.domain
    return {
        "body": int(rng.choice(5, p=[0.3, 0.25, 0.2, 0.15, 0.1])),  # sedan/suv/hatch/van/pickup
        "paint": palette_colour(rng, dom),
        "window": clip_rgb(rng.uniform(20, 90, 3) if rng.random() < 0.7 else rng.uniform(110, 170, 3)),
        "wheel": int(rng.integers(3)),  # hub style
        "hub": clip_rgb(rng.uniform(60, 220, 3)),
        "roof": int(rng.choice(5, p=[0.5, 0.15, 0.15, 0.1, 0.1])),  # none/rack/box/lightbar/sunroof
        "decal": int(rng.choice(4, p=[0.55, 0.2, 0.15, 0.1])),  # none/side stripe/hood stripe/logo
        "decal_colour": palette_colour(rng, dom),
        "lights": int(rng.integers(3)),  # headlight shape
        "length": float(rng.uniform(0.9, 1.05)),
        "height": float(rng.uniform(0.9, 1.1)),
    }


def render_vehicle(preset: SyntheticPreset, ident: dict, cam: dict, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """One image of the vehicle ``ident`` seen by camera ``cam``, from a view its view bias draws, and that
    view (0 front, 1 rear, 2 side);
    returning it takes no random draw, so the pixels do not depend on it being returned."""
    h, w = preset.image_size
    W, H = 2 * w, 2 * h
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    draw_background(d, W, H, cam, rng)
    view = int(rng.choice(3, p=cam["views"]))  # 0 front, 1 rear, 2 side
    mirror = rng.random() < 0.5
    body = ident["body"]
    paint = ident["paint"]
    dark = shade(paint, 0.6)
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
                d.line((gx0 + 2, yy, gx1 - 2, yy), fill=shade(paint, 0.3))
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
        draw_occluder(d, W, H, rng)
    return finish_image(img, preset, cam, rng), view


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
