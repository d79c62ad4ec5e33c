"""The embedded synthetic datasets as data: the look of each domain and the size of each preset.

A :class:`SyntheticPreset` says what :func:`corelib.data.synthetic.generate_synthetic` draws: persons
(Market-1501 layout) or vehicles (VeRi-776 layout), how many identities, cameras and images, and the
:class:`DomainStyle` (palette, backgrounds, illumination) they are drawn in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ...errors import InvalidInputError, UnknownNameError


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
