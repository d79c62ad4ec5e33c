"""Loaders of the VeRi vehicle datasets: VeRi-776 (split folders of named images) and VERI-Wild
(list files and a ``vehicle_info.txt`` that holds the cameras).

Importing the module registers ``veri776`` and ``veriwild``; the embedded vehicle presets are written
in the VeRi-776 layout, their views in VeRi's keypoint files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from ..errors import DatasetRootError, InvalidInputError
from .dataset import SPLIT_NAMES, ReIDDataset, Sample, expected_layout, register_dataset, require_split
from .layout import (VIEW_FILES, RootGuard, attach_views, bad_line, check_first_image, list_lines, parse_folder,
                     relabel, resolve_root, sorted_samples)

# --------------------------------------------------------------------------------------------
# VeRi-776

VERI776_LAYOUT = """
VeRi/
  image_train/          0001_c001_00016450_0.jpg ...  (vehicleID_cCAM_FRAME_INDEX.jpg, c001..c020)
  image_query/          0002_c002_00030600_0.jpg ...
  image_test/           0002_c003_00084280_0.jpg ...
  keypoint_train.txt    0001_c001_00016450_0.jpg x1 y1 ... x20 y20 VIEW   (optional: orientations,
  keypoint_test.txt     the view id last; test = query and gallery; absent: viewid None)
  (name_*.txt, *_label.xml, gt_image.txt, jk_image.txt are not needed)
"""

VERI776_NAME = re.compile(r"^([-\d]+)_c(\d+)_")


@register_dataset("veri776", VERI776_LAYOUT)
def veri776(root: Path, view_files: Optional[Sequence[str]] = VIEW_FILES) -> ReIDDataset:
    """VeRi-776: 20 cameras; 576 train IDs / 37,778 images; 1,678 queries; 11,579 gallery.

    Args:
        root: the ``VeRi`` folder or its parent.
        view_files: the orientation annotation files, relative to the dataset folder: ``(train file,
            test file)``, the test file serving query and gallery; by default VeRi's
            ``keypoint_train.txt`` / ``keypoint_test.txt`` (one line per image: its name, 40 keypoint
            coordinates, the view id last, as TransReID reads them). Files that are absent leave
            viewid None and say so in one warning; ``None`` reads no views and says nothing. An image
            a file does not list has viewid None; a malformed line raises DatasetRootError naming
            the file and the line.
    """
    splits = ("image_train", "image_query", "image_test")
    base = resolve_root("veri776", root, ("VeRi", "VeRi-776", "VeRi776", "veri776"), splits)
    guard = RootGuard(base)
    train, query, gallery = (parse_folder(base / s, VERI776_NAME, guard=guard) for s in splits)
    for split, folder, samples in zip(SPLIT_NAMES, splits, (train, query, gallery)):
        require_split(split, samples, base / folder, "image of a kept vehicle (files like 0001_c001_00016450_0.jpg)")
    train, query, gallery = attach_views(base, view_files, (train, query, gallery), dataset="veri776")
    return ReIDDataset("veri776", base, relabel(train), query, gallery, protocol="market")


# --------------------------------------------------------------------------------------------
# VERI-Wild

VERIWILD_TEST_SIZES = (3000, 5000, 10000)

VERIWILD_LAYOUT = """
VeRI-Wild/
  images/               00001/000001.jpg ...        ({vid:05d}/{imgid:06d}.jpg)
  train_test_split/
    vehicle_info.txt    00001/000001;74;2018-03-24 11:07:37;Audi A4L;sedan;black
                        (vid/imgid;camera;time;model;type;color; camera numbered from 1)
    new release:  train_list_start0.txt    00001/000001.jpg 0 74   (path label camera)
                  test_3000_id.txt         (gallery; also 5000, 10000; same format)
                  test_3000_id_query.txt   (query)
    old release:  train_list.txt, test_3000.txt, test_3000_query.txt   (lines 00001/000001)
"""

_VERIWILD_ITEM = re.compile(r"^(\d+)/(\d+)(?:\.jpg)?$")
# (train, gallery, query) list names per release, newest first.
_VERIWILD_RELEASES = {
    "new": ("train_list_start0.txt", "test_{n}_id.txt", "test_{n}_id_query.txt"),
    "old": ("train_list.txt", "test_{n}.txt", "test_{n}_query.txt"),
}


def _read_vehicle_info(path: Path) -> tuple[dict[tuple[int, int], int], int]:
    """Map ``(vid, imgid)`` to a 0-based camid; also return the camera base found in the file.

    Lines that do not parse (the header some copies carry) are skipped. VERI-Wild numbers its
    174 cameras from 1; should a copy number them from 0, the base follows the file (the smallest
    camera present), so camids never go negative. Only camera equality matters to evaluation.
    """
    raw: dict[tuple[int, int], int] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.strip().split(";")
            if len(fields) < 2:
                continue
            m = _VERIWILD_ITEM.match(fields[0].strip())
            if m is None or not fields[1].strip().isdigit():
                continue
            raw[(int(m.group(1)), int(m.group(2)))] = int(fields[1])
    if not raw:
        raise DatasetRootError(
            f"{path} holds no line like '00001/000001;74;...'; the file is empty or damaged"
        )
    base = 0 if min(raw.values()) == 0 else 1
    return {key: cam - base for key, cam in raw.items()}, base


def _read_veriwild_list(
    base: Path, list_path: Path, cameras: dict[tuple[int, int], int], info_path: Path, guard: RootGuard
) -> list[Sample]:
    expected = "'00001/000001.jpg label camera' or '00001/000001'"
    out = []
    for lineno, line, fields in list_lines(list_path):
        m = _VERIWILD_ITEM.match(fields[0])
        if m is None:
            raise bad_line(list_path, lineno, line, expected)
        vid, imgid = int(m.group(1)), int(m.group(2))
        camid = cameras.get((vid, imgid))
        if camid is None:
            raise DatasetRootError(
                f"{list_path}, line {lineno}: image {fields[0]} is not in {info_path}, so its "
                f"camera is unknown; the list and vehicle_info.txt come from different copies"
            )
        rel = fields[0] if fields[0].endswith(".jpg") else f"{fields[0]}.jpg"
        image = base / "images" / rel
        # the listed name is only digits, but the file (or its vehicle folder) may be a link out of the root
        guard.check(image, f"{list_path}, line {lineno}: path {rel!r}")
        out.append(Sample(str(image), vid, camid))
    check_first_image(out, list_path)
    return sorted_samples(out)


@register_dataset("veriwild", VERIWILD_LAYOUT)
def veriwild(root: Path, test_size: int = 3000) -> ReIDDataset:
    """VERI-Wild: 174 cameras; 30,671 train IDs / 277,797 images; Test3000 / 5000 / 10000.

    The vehicle id comes from the image path, the camera from ``vehicle_info.txt`` (1-based
    there, 0-based here). Both the current list names (``test_3000_id.txt``) and the older ones
    (``test_3000.txt``) are read; the gallery is the list as released.

    Args:
        root: the ``VeRI-Wild`` folder or its parent.
        test_size: 3000 (small), 5000 (medium) or 10000 (large).
    """
    if test_size not in VERIWILD_TEST_SIZES:
        raise InvalidInputError(
            f"unknown VERI-Wild test_size {test_size!r}; valid sizes: "
            f"{', '.join(map(str, VERIWILD_TEST_SIZES))}"
        )
    folders = ("VeRI-Wild", "VERI-Wild", "VeRi-Wild", "veri-wild", "veriwild")
    base = resolve_root("veriwild", root, folders, ("images", "train_test_split/vehicle_info.txt"))
    split_dir = base / "train_test_split"
    release, names = _pick_veriwild_release(split_dir, test_size)
    info_path = split_dir / "vehicle_info.txt"
    cameras, camera_base = _read_vehicle_info(info_path)
    guard = RootGuard(base)
    train, gallery, query = (
        _read_veriwild_list(base, split_dir / name, cameras, info_path, guard) for name in names
    )
    for split, name, samples in zip(("train", "gallery", "query"), names, (train, gallery, query)):
        require_split(split, samples, split_dir / name, "line '00001/000001.jpg ...'")
    return ReIDDataset(
        "veriwild", base, relabel(train), query, gallery, has_cameras=True, protocol="veriwild",
        extras={"test_size": test_size, "release": release, "camera_base": camera_base},
    )


def _pick_veriwild_release(split_dir: Path, test_size: int) -> tuple[str, tuple[str, str, str]]:
    """The list names of the release present in ``split_dir`` (new names win)."""
    tried = []
    for release, templates in _VERIWILD_RELEASES.items():
        names = tuple(t.format(n=test_size) for t in templates)
        if all((split_dir / n).is_file() for n in names):
            return release, names  # type: ignore[return-value]
        tried.append(", ".join(names))
    raise DatasetRootError(
        f"veriwild: {split_dir} holds neither list set for test_size={test_size} "
        f"(tried: {' | '.join(tried)}).\nExpected layout:\n{expected_layout('veriwild')}"
    )
