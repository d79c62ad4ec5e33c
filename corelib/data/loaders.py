"""Loaders of the real re-identification datasets, each in the format its authors release.

Importing this module (``corelib.data.datasets`` does it) registers ``dukemtmc``, ``cuhk03np``,
``msmt17``, ``veri776``, ``vehicleid``, ``veriwild`` and ``custom`` next to ``market1501``.
Every loader follows the contract of :mod:`corelib.data.datasets`:

- junk (pid ``-1``) is dropped, distractors are kept;
- camids are 0-based (the files number cameras from 1, so ``c1`` becomes camid 0);
- train pids are relabelled to ``0..N-1`` with :func:`~corelib.data.datasets.relabel`;
- every split is in a deterministic, sorted order;
- a wrong root raises ``DatasetRootError`` with the expected layout, and a malformed list file
  raises ``DatasetRootError`` naming the file and the line;
- every image path read from a list file or CSV (and every linked image found in a split folder)
  must resolve inside the dataset root, else ``UnsafePathError`` names the file, the line and the fix;
- an empty train, query or gallery split raises ``DatasetRootError`` naming the folder or list.

The loaders read only what lies on disk; they never download anything.
"""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..errors import DatasetRootError, InvalidInputError
from .datasets import (
    ReIDDataset,
    RootGuard,
    Sample,
    expected_layout,
    list_images,
    load_market_style,
    parse_folder,
    refuse_link_loop,
    register_dataset,
    relabel,
    require_split,
    resolve_root,
)

SPLIT_NAMES = ("train", "query", "gallery")

# --------------------------------------------------------------------------------------------
# helpers


def _list_lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """Yield ``(line number, stripped line, whitespace fields)`` for non-empty lines of a list."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if line:
                yield lineno, line, line.split()


def _bad_line(path: Path, lineno: int, line: str, expected: str) -> DatasetRootError:
    return DatasetRootError(
        f"{path}, line {lineno}: cannot parse {line!r} (expected {expected}); the list file is "
        f"truncated or from another release, re-extract the dataset"
    )


def _to_int(text: str, path: Path, lineno: int, line: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _bad_line(path, lineno, line, expected) from None


def _camid(camera: int, base: int, where: str) -> int:
    """Shift a camera number from ``base`` to 0; a number below ``base`` is a format error."""
    if camera < base:
        raise DatasetRootError(
            f"{where}: camera {camera} is below {base}, but cameras are numbered from {base} in "
            f"this format; check that the file belongs to this dataset"
        )
    return camera - base


def _sorted(samples: list[Sample]) -> list[Sample]:
    # List files come in release order; sorting by path makes every copy load identically.
    return sorted(samples, key=lambda s: (s.path, s.pid))


def _check_first_image(samples: Sequence[Sample], source: Path) -> None:
    """Check that the first listed image exists: one stat catches a wrong image folder cheaply."""
    if samples and not Path(samples[0].path).is_file():
        raise DatasetRootError(
            f"{source} lists {samples[0].path}, which does not exist; the images are missing or "
            f"lie in another folder than the list expects"
        )


# --------------------------------------------------------------------------------------------
# DukeMTMC-reID

DUKE_LAYOUT = """
DukeMTMC-reID/
  bounding_box_train/   0001_c2_f0046182.jpg ...   (pid_cCAM_fFRAME.jpg, cameras c1..c8)
  query/                0005_c2_f0046985.jpg ...
  bounding_box_test/    0002_c1_f0044158.jpg ...   (distractor ids kept as negatives)
"""


@register_dataset("dukemtmc", DUKE_LAYOUT)
def dukemtmc(root: Path) -> ReIDDataset:
    """DukeMTMC-reID: 8 cameras, 702 train IDs / 16,522 images; 2,228 queries; 17,661 gallery.

    The dataset was withdrawn by its authors (Duke University, 2019); the loader exists so that
    published results can be reproduced from copies researchers already hold.
    """
    return load_market_style("dukemtmc", root, ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid"))


# --------------------------------------------------------------------------------------------
# CUHK03-NP

CUHK03NP_SUBSETS = ("detected", "labeled")

CUHK03NP_LAYOUT = """
cuhk03-np/                  (or cuhk03np/; ROOT may also be the subset folder itself)
  detected/                 (subset="detected", the default)
    bounding_box_train/     0001_c1_1.png ...   (PID_cK_N.png, K in 1..2)
    query/                  0003_c1_1.png ...
    bounding_box_test/      0003_c2_3.png ...
  labeled/                  (subset="labeled", same layout)
"""


@register_dataset("cuhk03np", CUHK03NP_LAYOUT)
def cuhk03np(root: Path, subset: str = "detected") -> ReIDDataset:
    """CUHK03 new protocol: 767 train / 700 test IDs, 2 cameras, 1,400 queries.

    Args:
        root: the ``cuhk03-np`` folder, its parent, or the subset folder itself.
        subset: ``"detected"`` (boxes from a detector, the paper's counts) or ``"labeled"``.
    """
    if subset not in CUHK03NP_SUBSETS:
        raise InvalidInputError(
            f"unknown CUHK03-NP subset {subset!r}; valid subsets: {', '.join(CUHK03NP_SUBSETS)}"
        )
    folders = tuple(f"{top}/{subset}" for top in ("cuhk03-np", "cuhk03np", "CUHK03-NP")) + (subset,)
    ds = load_market_style("cuhk03np", root, folders)
    # Passing the other subset's folder as root would silently load the wrong boxes.
    other = next(s for s in CUHK03NP_SUBSETS if s != subset)
    if ds.root.name.lower() == other:
        raise DatasetRootError(
            f"cuhk03np: subset={subset!r} was asked for, but {ds.root} is the {other!r} subset; "
            f"pass subset={other!r} or point root at {ds.root.parent / subset}"
        )
    ds.extras["subset"] = subset
    return ds


# --------------------------------------------------------------------------------------------
# MSMT17

MSMT17_LAYOUT = """
MSMT17_V1/
  train/                0000/0000_000_01_0303morning_0015_0.jpg ...
                        (one folder per pid; PID_INDEX_CAM_..., cameras 01..15)
  test/                 0000/0000_000_01_0303morning_0008_0.jpg ...
  list_train.txt        0000/0000_000_01_0303morning_0015_0.jpg 0   (path relative to train/, label)
  list_val.txt          (same format, relative to train/; merged into the train split)
  list_query.txt        (same format, relative to test/)
  list_gallery.txt      (same format, relative to test/)
"""

# PID_INDEX_CAMERA_...: the camera is the third underscore field of the file name.
MSMT17_NAME = re.compile(r"^[-\d]+_[-\d]+_(\d+)_")
_MSMT17_LISTS = {
    "train": (("list_train.txt", "train"), ("list_val.txt", "train")),
    "query": (("list_query.txt", "test"),),
    "gallery": (("list_gallery.txt", "test"),),
}


def _read_msmt_list(base: Path, list_name: str, image_dir: str, guard: RootGuard) -> list[Sample]:
    path = base / list_name
    expected = "'relative/path.jpg label', e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'"
    out = []
    for lineno, line, fields in _list_lines(path):
        if len(fields) != 2:
            raise _bad_line(path, lineno, line, expected)
        rel, label = fields
        pid = _to_int(label, path, lineno, line, expected)
        m = MSMT17_NAME.match(Path(rel).name)
        if m is None:
            raise _bad_line(path, lineno, line, expected)
        camid = _camid(int(m.group(1)), 1, f"{path}, line {lineno}")
        image = base / image_dir / rel
        guard.check(image, f"{path}, line {lineno}: path {rel!r}")
        if pid == -1:
            continue
        out.append(Sample(str(image), pid, camid))
    _check_first_image(out, path)
    return out


@register_dataset("msmt17", MSMT17_LAYOUT)
def msmt17(root: Path) -> ReIDDataset:
    """MSMT17 (V1): 15 cameras; train = list_train + list_val = 1,041 IDs / 32,621 images.

    Query (11,659) and gallery (82,161) keep the labels of their list files; cameras are taken
    from the file names (1-based there, 0-based here).
    """
    required = ("train", "test") + tuple(n for pairs in _MSMT17_LISTS.values() for n, _ in pairs)
    base = resolve_root("msmt17", root, ("MSMT17_V1", "MSMT17", "msmt17"), required)
    guard = RootGuard(base)
    splits = {
        split: _sorted([s for name, d in pairs for s in _read_msmt_list(base, name, d, guard)])
        for split, pairs in _MSMT17_LISTS.items()
    }
    for split, pairs in _MSMT17_LISTS.items():
        require_split(split, splits[split], " and ".join(str(base / name) for name, _ in pairs),
                      "line 'relative/path.jpg label' with a label other than -1")
    return ReIDDataset(
        "msmt17", base, relabel(splits["train"]), splits["query"], splits["gallery"],
        has_cameras=True, protocol="market",
    )


# --------------------------------------------------------------------------------------------
# VeRi-776

VERI776_LAYOUT = """
VeRi/
  image_train/          0001_c001_00016450_0.jpg ...  (vehicleID_cCAM_FRAME_INDEX.jpg, c001..c020)
  image_query/          0002_c002_00030600_0.jpg ...
  image_test/           0002_c003_00084280_0.jpg ...
  (name_*.txt, *_label.xml, gt_image.txt, jk_image.txt are not needed)
"""

VERI776_NAME = re.compile(r"^([-\d]+)_c(\d+)_")


@register_dataset("veri776", VERI776_LAYOUT)
def veri776(root: Path) -> ReIDDataset:
    """VeRi-776: 20 cameras; 576 train IDs / 37,778 images; 1,678 queries; 11,579 gallery."""
    splits = ("image_train", "image_query", "image_test")
    base = resolve_root("veri776", root, ("VeRi", "VeRi-776", "VeRi776", "veri776"), splits)
    guard = RootGuard(base)
    train, query, gallery = (parse_folder(base / s, VERI776_NAME, guard=guard) for s in splits)
    for split, folder, samples in zip(SPLIT_NAMES, splits, (train, query, gallery)):
        require_split(split, samples, base / folder, "image of a kept vehicle (files like 0001_c001_00016450_0.jpg)")
    return ReIDDataset("veri776", base, relabel(train), query, gallery, protocol="market")


# --------------------------------------------------------------------------------------------
# VehicleID

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
    for lineno, line, fields in _list_lines(path):
        if len(fields) != 2:
            raise _bad_line(path, lineno, line, expected)
        image_id, vid = fields
        pid = _to_int(vid, path, lineno, line, expected)
        image = base / "image" / f"{image_id}.jpg"
        guard.check(image, f"{path}, line {lineno}: image id {image_id!r}")
        if pid == -1:
            continue
        out.append(Sample(str(image), pid, None))
    _check_first_image(out, path)
    return _sorted(out)


def vehicleid_draw(pids: Sequence[int], seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(query, gallery)`` of one seeded VehicleID draw over a list of pids.

    Vehicle ids are visited in sorted order and ``random.Random(seed)`` picks one of each id's
    images (in list order) for the gallery; every other image is a query (in list order). The
    loader and the evaluator (:func:`corelib.evaluation.evaluate_vehicleid`) both draw with this
    function, so a seed means the same split everywhere.
    """
    rng = random.Random(seed)
    by_pid: dict[int, list[int]] = defaultdict(list)
    for i, pid in enumerate(pids):
        by_pid[int(pid)].append(i)
    gallery = [rng.choice(by_pid[pid]) for pid in sorted(by_pid)]
    chosen = set(gallery)
    return [i for i in range(len(pids)) if i not in chosen], gallery


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
    for lineno, line, fields in _list_lines(list_path):
        m = _VERIWILD_ITEM.match(fields[0])
        if m is None:
            raise _bad_line(list_path, lineno, line, expected)
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
    _check_first_image(out, list_path)
    return _sorted(out)


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


# --------------------------------------------------------------------------------------------
# custom datasets: a CSV file or a pid-per-folder tree

CUSTOM_LAYOUT = """
either a CSV (ROOT is the .csv file, or a folder holding dataset.csv):
  dataset.csv           split,path,pid,camid
                        train,images/0001_a.jpg,1,0
                        (split: train|query|gallery; path relative to the CSV's folder;
                         camid 0-based, or empty on every row for a dataset without cameras)
or a folder tree:
  my_dataset/
    train/              0001/0001_c1_a.jpg ...   (one folder per pid)
    query/              0002/0002_c2_b.jpg ...
    gallery/            0002/0002_c1_c.jpg ...
                        (camera from 'c<N>' in the file name, 1-based, when every file has one;
                         otherwise the dataset has no cameras; pid folder -1 is junk)
"""

CUSTOM_CSV_COLUMNS = ("split", "path", "pid", "camid")
# 'c' followed by digits and not preceded by a letter: matches '0001_c3_x.jpg' but not 'abc12'.
CUSTOM_CAMERA = re.compile(r"(?<![A-Za-z])c(\d+)")


@register_dataset("custom", CUSTOM_LAYOUT)
def custom(root: Path) -> ReIDDataset:
    """A dataset of your own, from a CSV file or a ``{train,query,gallery}/<pid>/`` tree.

    Train pids are relabelled, pid -1 is dropped; see the layout text for the formats.
    """
    if root.is_file() and root.suffix.lower() == ".csv":
        return _custom_csv(root)
    if (root / "dataset.csv").is_file():
        return _custom_csv(root / "dataset.csv")
    base = resolve_root("custom", root, (), SPLIT_NAMES)
    return _custom_folders(base)


def _custom_csv(csv_path: Path) -> ReIDDataset:
    folder = csv_path.parent
    guard = RootGuard(folder)  # the CSV's folder is the dataset root: paths are relative to it
    splits: dict[str, list[Sample]] = {s: [] for s in SPLIT_NAMES}
    first_cam_row: Optional[tuple[int, bool]] = None  # (line, has camid) of the first row
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # sig: Excel BOM
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if header[: len(CUSTOM_CSV_COLUMNS)] != list(CUSTOM_CSV_COLUMNS):
            raise DatasetRootError(
                f"{csv_path}: the header is {','.join(header) or '(empty)'}, expected "
                f"{','.join(CUSTOM_CSV_COLUMNS)}"
            )
        reader.fieldnames = header
        for row in reader:
            lineno = reader.line_num
            where = f"{csv_path}, line {lineno}"
            split, path = (row.get("split") or "").strip(), (row.get("path") or "").strip()
            pid_text, cam_text = (row.get("pid") or "").strip(), (row.get("camid") or "").strip()
            if split not in splits or not path:
                raise DatasetRootError(
                    f"{where}: split must be one of {', '.join(SPLIT_NAMES)} and path non-empty, "
                    f"got split={split!r} path={path!r}"
                )
            try:
                pid = int(pid_text)
                camid = int(cam_text) if cam_text else None
            except ValueError:
                raise DatasetRootError(
                    f"{where}: pid and camid must be integers, got pid={pid_text!r} "
                    f"camid={cam_text!r}"
                ) from None
            if camid is not None and camid < 0:
                raise DatasetRootError(f"{where}: camid {camid} is negative (camids are 0-based)")
            if first_cam_row is None:
                first_cam_row = (lineno, camid is not None)
            elif first_cam_row[1] != (camid is not None):
                raise DatasetRootError(
                    f"{where}: camid is {'empty' if camid is None else 'set'} here but "
                    f"{'set' if first_cam_row[1] else 'empty'} on line {first_cam_row[0]}; leave "
                    f"camid empty on every row (no cameras) or fill it on every row"
                )
            guard.check(folder / path, f"{where}: path {path!r}")
            if pid == -1:
                continue
            splits[split].append(Sample(str(folder / path), pid, camid))
    for split in SPLIT_NAMES:
        require_split(split, splits[split], csv_path, f"row with split={split} (pid -1 rows are dropped)")
    has_cameras = first_cam_row[1] if first_cam_row else True
    return ReIDDataset(
        "custom", folder, relabel(_sorted(splits["train"])), _sorted(splits["query"]),
        _sorted(splits["gallery"]), has_cameras=has_cameras, protocol="market",
        extras={"source": str(csv_path)},
    )


def _custom_folders(base: Path) -> ReIDDataset:
    guard = RootGuard(base)
    found: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLIT_NAMES:
        split_dir = base / split
        stray = list_images(split_dir, guard)
        if stray:
            raise DatasetRootError(
                f"{stray[0]} lies directly in {split_dir}; put images in one folder per pid "
                f"({split_dir}/<pid>/...), or use a CSV"
            )
        items = []
        for entry in split_dir.iterdir():
            if entry.is_symlink():  # is_dir() reads a link loop as "no folder": name it instead
                refuse_link_loop(entry, f"a pid folder in {split_dir}")
        for pid_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            try:
                pid = int(pid_dir.name)
            except ValueError:
                raise DatasetRootError(
                    f"{pid_dir}: pid folders must be named by an integer id (e.g. 0001)"
                ) from None
            if pid != -1:
                items.extend((path, pid) for path in list_images(pid_dir, guard))
        require_split(split, items, split_dir, "image in a pid folder (<pid>/<image>; pid -1 is junk)")
        found[split] = items
    # Cameras only when every file names one: a partial match would mix real and missing ids.
    matches = {p: CUSTOM_CAMERA.search(p.name) for items in found.values() for p, _ in items}
    has_cameras = bool(matches) and all(m is not None for m in matches.values())
    splits = {}
    for split, items in found.items():
        splits[split] = [
            Sample(
                str(path), pid,
                _camid(int(matches[path].group(1)), 1, str(path)) if has_cameras else None,
            )
            for path, pid in items
        ]
    return ReIDDataset(
        "custom", base, relabel(splits["train"]), splits["query"], splits["gallery"],
        has_cameras=has_cameras, protocol="market",
    )
