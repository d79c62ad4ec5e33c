"""Loader of MSMT17 (V1): list files of ``relative/path.jpg label`` lines beside ``train/`` and ``test/``.

Importing the module registers ``msmt17``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .dataset import ReIDDataset, Sample, register_dataset, require_split
from .layout import (RootGuard, bad_line, check_first_image, list_lines, parse_int, relabel, resolve_root,
                     sorted_samples, zero_based_camid)

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
    for lineno, line, fields in list_lines(path):
        if len(fields) != 2:
            raise bad_line(path, lineno, line, expected)
        rel, label = fields
        pid = parse_int(label, path, lineno, line, expected)
        m = MSMT17_NAME.match(Path(rel).name)
        if m is None:
            raise bad_line(path, lineno, line, expected)
        camid = zero_based_camid(int(m.group(1)), 1, f"{path}, line {lineno}")
        image = base / image_dir / rel
        guard.check(image, f"{path}, line {lineno}: path {rel!r}")
        if pid == -1:
            continue
        out.append(Sample(str(image), pid, camid))
    check_first_image(out, path)
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
        split: sorted_samples([s for name, d in pairs for s in _read_msmt_list(base, name, d, guard)])
        for split, pairs in _MSMT17_LISTS.items()
    }
    for split, pairs in _MSMT17_LISTS.items():
        require_split(split, splits[split], " and ".join(str(base / name) for name, _ in pairs),
                      "line 'relative/path.jpg label' with a label other than -1")
    return ReIDDataset(
        "msmt17", base, relabel(splits["train"]), splits["query"], splits["gallery"],
        has_cameras=True, protocol="market",
    )
