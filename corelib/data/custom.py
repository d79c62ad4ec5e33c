"""Loader of a dataset of your own: a CSV file of ``split,path,pid,camid`` rows (and an optional
``viewid`` column), or a ``{train,query,gallery}/<pid>/`` folder tree (no views).

Importing the module registers ``custom``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Optional

from ..errors import DatasetRootError
from .dataset import SPLIT_NAMES, ReIDDataset, Sample, register_dataset, require_split
from .layout import RootGuard, list_images, refuse_link_loop, relabel, resolve_root, sorted_samples, zero_based_camid

CUSTOM_LAYOUT = """
either a CSV (ROOT is the .csv file, or a folder holding dataset.csv):
  dataset.csv           split,path,pid,camid
                        train,images/0001_a.jpg,1,0
                        (split: train|query|gallery; path relative to the CSV's folder;
                         camid 0-based, or empty on every row for a dataset without cameras;
                         an optional 5th column viewid: 0-based view id, empty = unknown)
or a folder tree:
  my_dataset/
    train/              0001/0001_c1_a.jpg ...   (one folder per pid)
    query/              0002/0002_c2_b.jpg ...
    gallery/            0002/0002_c1_c.jpg ...
                        (camera from 'c<N>' in the file name, 1-based, when every file has one;
                         otherwise the dataset has no cameras; pid folder -1 is junk)
"""

CUSTOM_CSV_COLUMNS = ("split", "path", "pid", "camid")
CUSTOM_VIEW_COLUMN = "viewid"
"""Optional column after the four: the image's 0-based view id, empty where unknown."""
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
            view_text = (row.get(CUSTOM_VIEW_COLUMN) or "").strip()
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
            viewid = _viewid(view_text, where)
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
            splits[split].append(Sample(str(folder / path), pid, camid, viewid))
    for split in SPLIT_NAMES:
        require_split(split, splits[split], csv_path, f"row with split={split} (pid -1 rows are dropped)")
    has_cameras = first_cam_row[1] if first_cam_row else True
    return ReIDDataset(
        "custom", folder, relabel(sorted_samples(splits["train"])), sorted_samples(splits["query"]),
        sorted_samples(splits["gallery"]), has_cameras=has_cameras, protocol="market",
        extras={"source": str(csv_path)},
    )


def _viewid(text: str, where: str) -> Optional[int]:
    """The ``viewid`` cell: None when empty, else an integer >= 0."""
    if not text:
        return None
    try:
        viewid = int(text)
    except ValueError:
        viewid = -1
    if viewid < 0:
        raise DatasetRootError(f"{where}: viewid must be an integer >= 0 (a 0-based view id) or empty (unknown), "
                               f"got {text!r}")
    return viewid


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
                zero_based_camid(int(matches[path].group(1)), 1, str(path)) if has_cameras else None,
            )
            for path, pid in items
        ]
    return ReIDDataset(
        "custom", base, relabel(splits["train"]), splits["query"], splits["gallery"],
        has_cameras=has_cameras, protocol="market",
    )
