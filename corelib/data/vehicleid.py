"""Loader of VehicleID (image ids in list files, no cameras) and its seeded query / gallery draws.

Importing the module registers ``vehicleid``. The draw itself is
:func:`corelib.evaluation.vehicleid.vehicleid_draw`: the loader and the evaluator both use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import InvalidInputError
from ..evaluation.vehicleid import vehicleid_draw
from .dataset import ReIDDataset, Sample, register_dataset, require_split
from .layout import (RootGuard, bad_line, check_first_image, list_lines, parse_int, relabel, resolve_root,
                     sorted_samples)

VEHICLEID_TEST_SIZES = (800, 1600, 2400)
# Larger test lists ship with some copies; they are accepted when the list file is present.
VEHICLEID_EXTRA_TEST_SIZES = (3200, 6000, 13164)

VEHICLEID_LAYOUT = """
VehicleID_V1.0/
  image/                0000001.jpg ...             ({imageid}.jpg; no camera information)
  train_test_split/
    train_list.txt      0004832 1                   (imageid vehicleid)
    test_list_800.txt   (same format; also test_list_1600.txt, test_list_2400.txt,
                         and in some copies 3200 / 6000 / 13164)
"""


def _read_vehicleid_list(base: Path, list_name: str, guard: RootGuard) -> list[Sample]:
    path = base / "train_test_split" / list_name
    expected = "'imageid vehicleid', e.g. '0004832 1'"
    out = []
    for lineno, line, fields in list_lines(path):
        if len(fields) != 2:
            raise bad_line(path, lineno, line, expected)
        image_id, vid = fields
        pid = parse_int(vid, path, lineno, line, expected)
        image = base / "image" / f"{image_id}.jpg"
        guard.check(image, f"{path}, line {lineno}: image id {image_id!r}")
        if pid == -1:
            continue
        out.append(Sample(str(image), pid, None))
    check_first_image(out, path)
    return sorted_samples(out)


def draw_vehicleid_gallery(
    test_samples: Sequence[Sample], seed: int
) -> tuple[list[Sample], list[Sample]]:
    """One seeded VehicleID gallery draw: one image per vehicle to the gallery, the rest query.

    Args:
        test_samples: the full test list (``ds.extras["test"]``).
        seed: draw seed; the standard protocol averages draws 0..9.

    Returns:
        ``(query, gallery)``: query in the order of ``test_samples``, gallery in vehicle-id order
        (see :func:`vehicleid_draw`). A vehicle with a single image contributes only to the gallery.
    """
    query, gallery = vehicleid_draw([s.pid for s in test_samples], seed)
    return [test_samples[i] for i in query], [test_samples[i] for i in gallery]


@register_dataset("vehicleid", VEHICLEID_LAYOUT)
def vehicleid(root: Path, test_size: int = 800, draw_seed: int = 0) -> ReIDDataset:
    """VehicleID: 13,164 train IDs / 113,346 images; Test800 / Test1600 / Test2400.

    There are no cameras: ``has_cameras=False`` and every camid is ``None``. Query and gallery
    come from :func:`draw_vehicleid_gallery` with ``draw_seed``; the full test list is kept in
    ``extras["test"]`` so that an evaluator can average several draws.

    Args:
        root: the ``VehicleID_V1.0`` folder or its parent.
        test_size: 800, 1600 or 2400 (also 3200, 6000, 13164 when the copy has those lists).
        draw_seed: seed of the gallery draw.
    """
    valid = VEHICLEID_TEST_SIZES + VEHICLEID_EXTRA_TEST_SIZES
    if test_size not in valid:
        raise InvalidInputError(
            f"unknown VehicleID test_size {test_size!r}; valid sizes: "
            f"{', '.join(map(str, valid))} (the last three only where the list file exists)"
        )
    test_list = f"test_list_{test_size}.txt"
    required = ("image", "train_test_split/train_list.txt", f"train_test_split/{test_list}")
    base = resolve_root("vehicleid", root, ("VehicleID_V1.0", "VehicleID", "vehicleid"), required)
    guard = RootGuard(base)
    train = _read_vehicleid_list(base, "train_list.txt", guard)
    test = _read_vehicleid_list(base, test_list, guard)
    query, gallery = draw_vehicleid_gallery(test, draw_seed)
    split_dir = base / "train_test_split"
    require_split("train", train, split_dir / "train_list.txt", "line 'imageid vehicleid'")
    require_split("gallery", gallery, split_dir / test_list, "line 'imageid vehicleid'")
    require_split("query", query, split_dir / test_list,
                  "vehicle with two or more images (one image of each vehicle goes to the gallery)")
    return ReIDDataset(
        "vehicleid", base, relabel(train), query, gallery,
        has_cameras=False, protocol="vehicleid",
        extras={"test": test, "draw_seed": draw_seed, "test_size": test_size},
    )
