"""Loaders of the Market-1501 layout family: Market-1501, DukeMTMC-reID and CUHK03-NP.

All three release ``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` folders of images
named ``PID_cCAM...`` (CUHK03-NP once per subset); the embedded person presets are written in this
layout too. Importing the module registers ``market1501``, ``dukemtmc`` and ``cuhk03np``.

None of the three releases orientations; a copy that holds view files in VeRi's keypoint format
(``keypoint_train.txt`` / ``keypoint_test.txt`` beside the split folders, as the embedded person presets
write them) gets its view ids from them, any other copy viewid None, without a word.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ..errors import DatasetRootError, InvalidInputError
from .dataset import SPLIT_NAMES, ReIDDataset, register_dataset, require_split
from .layout import VIEW_FILES, RootGuard, attach_views, parse_folder, relabel, resolve_root

MARKET_PATTERN = re.compile(r"([-\d]+)_c(\d+)")
MARKET_EXPECTED = "image of a kept identity (files named PID_cCAM..., e.g. 0002_c1s1_000451_03.jpg; pid -1 is junk)"


def load_market_style(name: str, root: Path, folder_names: Sequence[str], **_: object) -> ReIDDataset:
    """Market-1501 layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``."""
    splits = ("bounding_box_train", "query", "bounding_box_test")
    base = resolve_root(name, root, folder_names, splits)
    guard = RootGuard(base)
    train, query, gallery = (parse_folder(base / s, MARKET_PATTERN, guard=guard) for s in splits)
    for split, folder, samples in zip(SPLIT_NAMES, splits, (train, query, gallery)):
        require_split(split, samples, base / folder, MARKET_EXPECTED)
    # the real releases have no view files (viewid None); the embedded presets write them
    train, query, gallery = attach_views(base, VIEW_FILES, (train, query, gallery), dataset=name, say_missing=False)
    return ReIDDataset(name, base, relabel(train), query, gallery, has_cameras=True, protocol="market")


# --------------------------------------------------------------------------------------------
# Market-1501

MARKET_LAYOUT = """
Market-1501-v15.09.15/
  bounding_box_train/   0002_c1s1_000451_03.jpg ...   (pid_cCAMsSEQ_FRAME_BOX.jpg)
  query/                0001_c1s1_001051_00.jpg ...
  bounding_box_test/    0000_c1s1_000151_01.jpg ...   (0000 distractors kept, -1 junk dropped)
"""


@register_dataset("market1501", MARKET_LAYOUT)
def market1501(root: Path) -> ReIDDataset:
    """Market-1501: 6 cameras, 751 train IDs / 12,936 images; 3,368 queries; 15,913 gallery."""
    return load_market_style("market1501", root, ("Market-1501-v15.09.15", "Market-1501", "market1501"))


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
