"""An empty train, query or gallery split is refused when the dataset is loaded.

Before, an empty query folder loaded as 0 images and training failed only at the first evaluation,
an epoch later; now the loader raises ``DatasetRootError`` naming the folder (or list, or CSV) and
what it expected to find there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from corelib.data.dataset import build_dataset
from corelib.data.synthetic import load_synthetic
from corelib.errors import DatasetRootError


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), (20, 120, 60)).save(path)


def test_empty_query_folder_is_refused_at_load_naming_the_folder(synthetic_small, tmp_path):
    copy = tmp_path / "market"
    shutil.copytree(synthetic_small["market_like"], copy)
    for p in (copy / "query").iterdir():
        p.unlink()
    with pytest.raises(DatasetRootError) as info:
        load_synthetic(copy)
    message = str(info.value)
    assert "query split is empty" in message and str(copy / "query") in message
    assert "0002_c1s1_000451_03.jpg" in message  # what a query image is named like


def test_empty_gallery_folder_of_a_vehicle_set_is_refused(synthetic_small, tmp_path):
    copy = tmp_path / "veri"
    shutil.copytree(synthetic_small["veri_like"], copy)
    for p in (copy / "image_test").iterdir():
        p.unlink()
    with pytest.raises(DatasetRootError, match=r"gallery split is empty: .*image_test"):
        build_dataset("veri776", copy)


@pytest.mark.parametrize("layout", ["csv", "folders"])
def test_custom_dataset_without_gallery_is_refused(tmp_path, layout):
    root = tmp_path / "mine"
    if layout == "csv":
        for name in ("a.jpg", "q.jpg"):
            _image(root / name)
        where = root / "dataset.csv"
        where.write_text("split,path,pid,camid\ntrain,a.jpg,1,0\nquery,q.jpg,2,1\ngallery,q.jpg,-1,0\n")
    else:
        _image(root / "train" / "0001" / "0001_c1_a.jpg")
        _image(root / "query" / "0002" / "0002_c2_q.jpg")
        (root / "gallery" / "0002").mkdir(parents=True)
        where = root / "gallery"
    with pytest.raises(DatasetRootError) as info:
        build_dataset("custom", root)
    assert "gallery split is empty" in str(info.value) and str(where) in str(info.value)
