"""Paths read from a dataset's own files stay inside its root ("Nothing lost, nobody in").

A custom CSV, a list file or a manifest that names ``../../x``, an absolute path elsewhere, or a
symbolic link out of the root is refused with ``UnsafePathError`` naming the file, the line or
entry, and the fix; the enlarged style set, which links to its source's real images, still loads
through ``load_style_set`` and through nothing looser.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corelib.config import StyleCfg
from corelib.data.dataset import build_dataset
from corelib.data.manifests import load_manifest, verify_dataset
from corelib.errors import CorelibError, UnsafePathError


def _image(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), (value, 40, 200)).save(path)
    return path


def _custom_csv(folder: Path, query_path: str) -> Path:
    """A complete custom CSV dataset in ``folder`` whose one query row is ``query_path``."""
    for name in ("a.jpg", "b.jpg", "g.jpg"):
        _image(folder / "images" / name)
    rows = ["split,path,pid,camid", "train,images/a.jpg,1,0", "train,images/b.jpg,2,1",
            f"query,{query_path},3,0", "gallery,images/g.jpg,3,1"]
    csv_path = folder / "dataset.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_custom_csv_path_outside_the_root_is_refused(tmp_path, how):
    secret = _image(tmp_path / "outside" / "private.jpg")
    root = tmp_path / "mine"
    if how == "dotdot":
        entry = "../outside/private.jpg"
    elif how == "absolute":
        entry = str(secret)
    else:  # a link inside the root that leaves it
        (root / "images").mkdir(parents=True)
        os.symlink(secret, root / "images" / "link.jpg")
        entry = "images/link.jpg"
    csv_path = _custom_csv(root, entry)
    with pytest.raises(UnsafePathError) as info:
        build_dataset("custom", root)
    message = str(info.value)
    assert f"{csv_path}, line 4" in message and entry in message  # the file, the line and the entry
    assert "outside the dataset root" in message and "Fix:" in message
    assert isinstance(info.value, CorelibError)


def test_custom_folder_image_linked_outside_the_root_is_refused(tmp_path):
    # An absolute path is fine as long as it lies inside the root; a link out of a split folder is not.
    root = tmp_path / "mine"
    _custom_csv(root, str((root / "images" / "q.jpg").resolve()))
    _image(root / "images" / "q.jpg")
    assert len(build_dataset("custom", root).query) == 1
    tree = tmp_path / "tree"
    for split, pid in (("train", "0001"), ("query", "0002"), ("gallery", "0002")):
        _image(tree / split / pid / f"{pid}_c1_x.jpg")
    os.symlink(_image(tmp_path / "elsewhere" / "0002_c2_y.jpg"), tree / "gallery" / "0002" / "0002_c2_y.jpg")
    with pytest.raises(UnsafePathError, match="0002_c2_y.jpg"):
        build_dataset("custom", tree)


def test_market_split_folder_link_outside_the_root_is_refused(tmp_path):
    base = tmp_path / "Market-1501-v15.09.15"
    _image(base / "bounding_box_train" / "0002_c1s1_000451_03.jpg")
    _image(base / "bounding_box_test" / "0002_c2s1_000451_03.jpg")
    _image(base / "query" / "0002_c3s1_000451_03.jpg")
    os.symlink(_image(tmp_path / "holiday" / "0002_c4s1_000100_01.jpg"), base / "query" / "0002_c4s1_000100_01.jpg")
    with pytest.raises(UnsafePathError, match=r"0002_c4s1_000100_01\.jpg.*symbolic link"):
        build_dataset("market1501", base)
    # the image itself, copied in, is data of the copy like any other
    (base / "query" / "0002_c4s1_000100_01.jpg").unlink()
    shutil.copy(tmp_path / "holiday" / "0002_c4s1_000100_01.jpg", base / "query")
    assert len(build_dataset("market1501", base).query) == 2


@pytest.mark.parametrize("loader", ["msmt17", "vehicleid"])
def test_list_file_entry_outside_the_root_is_refused(tmp_path, loader):
    _image(tmp_path / "outside" / "0001_000_01_0303morning_0001_0.jpg")
    if loader == "msmt17":
        base = tmp_path / "MSMT17_V1"
        good = "0001/0001_000_01_0303morning_0001_0.jpg"
        bad = "../../outside/0001_000_01_0303morning_0001_0.jpg"
        for folder, lists in (("train", ("list_train.txt", "list_val.txt")), ("test", ("list_query.txt",
                                                                                     "list_gallery.txt"))):
            _image(base / folder / good)
            for name in lists:
                (base / name).write_text(f"{good} 1\n")
        (base / "list_query.txt").write_text(f"{good} 1\n{bad} 1\n")
        listed = base / "list_query.txt"
    else:
        base = tmp_path / "VehicleID_V1.0"
        split = base / "train_test_split"
        split.mkdir(parents=True)
        for image_id in ("0000001", "0000002", "0000003"):
            _image(base / "image" / f"{image_id}.jpg")
        (split / "train_list.txt").write_text("0000001 1\n")
        bad = "../../outside/0001_000_01_0303morning_0001_0"
        (split / "test_list_800.txt").write_text(f"0000002 5\n0000003 5\n{bad} 5\n")
        listed = split / "test_list_800.txt"
    with pytest.raises(UnsafePathError) as info:
        build_dataset(loader, base)
    assert f"{listed}, line" in str(info.value) and bad in str(info.value)


def test_manifest_file_list_entry_escaping_is_refused(synthetic_small, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_small["market_like"], copy)
    manifest = load_manifest(copy / "manifest.yaml")
    # a folder-count entry that walks out of the root, lexically ...
    escaping = dict(manifest, files={**manifest["files"], "../../elsewhere": 3})
    with pytest.raises(UnsafePathError, match=r"files entry '\.\./\.\./elsewhere'.*Fix:"):
        load_manifest(escaping)
    # ... or through a link: the layout folder is a link to another copy's images
    other = tmp_path / "other_query"
    shutil.move(str(copy / "query"), other)
    os.symlink(other, copy / "query")
    with pytest.raises(UnsafePathError, match=r"layout entry 'query'"):
        verify_dataset(copy / "manifest.yaml", copy, progress=False)


def _custom_source(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    rows = ["split,path,pid,camid"]
    for split in ("train", "query", "gallery"):
        for pid in range(3):
            for cam in range(2):
                name = f"{split}/{pid}_{cam}.png"
                (folder / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)).save(folder / name)
                rows.append(f"{split},{name},{pid},{cam}")
    (folder / "dataset.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
def test_enlarged_style_set_loads_with_its_source_root_and_nothing_else(tmp_path):
    from corelib.style import load_style_set, train_style_models, write_style_set

    source = build_dataset("custom", _custom_source(tmp_path / "src"))
    models = train_style_models(source, StyleCfg.smoke(seed=3), tmp_path / "models", mode="camera", progress=False)
    root = write_style_set(source, models, tmp_path / "enlarged", progress=False)
    # the custom layout lists the source's real images by absolute path: allowed through the set's stamp
    enlarged = load_style_set(root)
    assert len(enlarged.train) == 2 * len(source.train) and len(enlarged.query) == len(source.query)
    assert any(not Path(s.path).is_relative_to(root) for s in enlarged.query)
    # the same CSV opened as a plain custom dataset is held to its own root
    with pytest.raises(UnsafePathError, match="dataset.csv, line"):
        build_dataset("custom", root)
    # and a stamp naming another source root does not widen the check to the real one
    stamp = json.loads((root / "style_set.json").read_text())
    (root / "style_set.json").write_text(json.dumps({**stamp, "source_root": str(tmp_path / "models")}))
    with pytest.raises(UnsafePathError):
        load_style_set(root)
