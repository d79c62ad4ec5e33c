"""View (orientation) ids in the data contract: Sample.viewid, VeRi's keypoint files, the embedded
presets' view files, the custom CSV's viewid column, manifests and `corelib verify`."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_datasets import write_images, write_text

from corelib.cli import main
from corelib.data.batches import ImageDataset
from corelib.data.dataset import ReIDDataset, Sample, build_dataset
from corelib.data.layout import VIEW_FILES, read_view_file, relabel
from corelib.data.manifests import load_manifest, verify_dataset
from corelib.data.synthetic import STAMP_FILE, get_preset, load_synthetic, plan_jobs, render_example
from corelib.errors import DatasetRootError, InvalidInputError, ManifestError
from corelib.training.finetune import _relabel

VERI_TRAIN = ["0001_c001_00016450_0.jpg", "0001_c020_00016500_1.jpg", "0005_c002_00030000_0.jpg"]
VERI_QUERY = ["0002_c002_00030600_0.jpg"]
VERI_TEST = ["0002_c003_00084280_0.jpg", "0006_c019_00000010_0.jpg"]


def keypoint_line(image: str, view: int | str) -> str:
    """A line of VeRi's keypoint files: the image, 20 (x, y) keypoints (-1 where invisible), the view."""
    coords = " ".join(str(v) for v in np.arange(40) % 7 - 1)
    return f"{image} {coords} {view}"


def make_veri(parent: Path, train_views: dict | None = None, test_views: dict | None = None) -> Path:
    """A tiny VeRi-776 copy; keypoint files only for the views given (``{name: view}``)."""
    base = parent / "VeRi"
    write_images(base / "image_train", VERI_TRAIN)
    write_images(base / "image_query", VERI_QUERY)
    write_images(base / "image_test", VERI_TEST)
    if train_views is not None:
        # the official file names the image with its folder, as TransReID's loader takes the basename
        write_text(base / "keypoint_train.txt", [keypoint_line(f"VeRi/image_train/{n}", v) for n, v in train_views.items()])
    if test_views is not None:
        write_text(base / "keypoint_test.txt", [keypoint_line(n, v) for n, v in test_views.items()])
    return base


def views_by_name(samples: list[Sample]) -> dict[str, int | None]:
    return {Path(s.path).name: s.viewid for s in samples}


def test_sample_takes_three_or_four_fields():
    three = Sample("a.jpg", 1, 0)
    assert three.viewid is None and tuple(three) == ("a.jpg", 1, 0, None)
    path, pid, camid, viewid = Sample("b.jpg", 2, 1, 5)
    assert (path, pid, camid, viewid) == ("b.jpg", 2, 1, 5)
    # a relabelled train split keeps camid and viewid
    assert relabel([Sample("x", 7, 1, 2), Sample("y", 3, 0)]) == [Sample("x", 1, 1, 2), Sample("y", 0, 0, None)]
    assert _relabel([Sample("x", 7, 1, 2), Sample("y", 3, 0, 1)], np.array([4, -1])) == [Sample("x", 4, 1, 2)]


def test_veri776_reads_the_official_keypoint_files(tmp_path):
    train_views = {VERI_TRAIN[0]: 0, VERI_TRAIN[1]: 3, VERI_TRAIN[2]: 7}
    test_views = {VERI_QUERY[0]: 1, VERI_TEST[0]: 1, VERI_TEST[1]: 6}
    make_veri(tmp_path, train_views, test_views)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the files are there: nothing to say
        ds = build_dataset("veri776", tmp_path)
    assert views_by_name(ds.train) == train_views
    assert views_by_name(ds.query) == {VERI_QUERY[0]: 1}
    assert views_by_name(ds.gallery) == {VERI_TEST[0]: 1, VERI_TEST[1]: 6}
    assert ds.has_views
    assert [s.pid for s in ds.train] == [0, 0, 1]  # relabelled, views kept
    assert ds.view_stats() == {"train": {"views": 3, "with_view": 3}, "query": {"views": 1, "with_view": 1},
                               "gallery": {"views": 2, "with_view": 2}}
    assert "views" in ds.summary().splitlines()[1]
    assert "views" not in ds.stats()["train"]  # chapter 00's split-count table keeps its columns


def test_an_image_the_file_does_not_list_has_no_view(tmp_path):
    make_veri(tmp_path, {VERI_TRAIN[0]: 2}, {n: 0 for n in VERI_QUERY + VERI_TEST})
    ds = build_dataset("veri776", tmp_path)
    assert views_by_name(ds.train) == {VERI_TRAIN[0]: 2, VERI_TRAIN[1]: None, VERI_TRAIN[2]: None}
    assert not ds.has_views
    assert "views" not in ds.summary()


def test_absent_keypoint_files_give_none_and_are_said_once(tmp_path):
    make_veri(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset("veri776", tmp_path)
    notes = [str(w.message) for w in caught]
    assert len(notes) == 1, notes
    assert "keypoint_train.txt" in notes[0] and "keypoint_test.txt" in notes[0] and "view_files=None" in notes[0]
    assert all(s.viewid is None for split in ("train", "query", "gallery") for s in ds.split(split))
    assert not ds.has_views
    # view_files=None reads no views and says nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not build_dataset("veri776", tmp_path, view_files=None).has_views


def test_view_files_option_names_other_files(tmp_path):
    base = make_veri(tmp_path)
    write_text(base / "ann" / "views_train.txt", [keypoint_line(n, 4) for n in VERI_TRAIN])
    write_text(base / "ann" / "views_test.txt", [keypoint_line(n, 5) for n in VERI_QUERY + VERI_TEST])
    ds = build_dataset("veri776", tmp_path, view_files=("ann/views_train.txt", "ann/views_test.txt"))
    assert ds.has_views and {s.viewid for s in ds.train} == {4} and {s.viewid for s in ds.gallery} == {5}
    with pytest.raises(InvalidInputError, match="two file names"):
        build_dataset("veri776", tmp_path, view_files="keypoint_train.txt")


def test_a_malformed_keypoint_line_is_named(tmp_path):
    base = make_veri(tmp_path, {n: 0 for n in VERI_TRAIN})
    lines = (base / "keypoint_train.txt").read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0] + " front"  # the view id is not an integer
    write_text(base / "keypoint_train.txt", lines)
    with pytest.raises(DatasetRootError, match=r"keypoint_train\.txt, line 2: .*view id"):
        build_dataset("veri776", tmp_path)
    write_text(base / "keypoint_train.txt", [keypoint_line(VERI_TRAIN[0], 0), VERI_TRAIN[1]])  # no view at all
    with pytest.raises(DatasetRootError, match=r"keypoint_train\.txt, line 2"):
        read_view_file(base / "keypoint_train.txt")
    write_text(base / "keypoint_train.txt", [keypoint_line(VERI_TRAIN[0], -2)])
    with pytest.raises(DatasetRootError, match=r"line 1"):
        read_view_file(base / "keypoint_train.txt")


def test_market_loader_reads_no_views_without_files(tmp_path):
    base = tmp_path / "Market-1501"
    write_images(base / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
    write_images(base / "query", ["0001_c1s1_001051_00.jpg"])
    write_images(base / "bounding_box_test", ["0001_c2s1_000151_01.jpg"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real Market copy has no views: nothing to say
        ds = build_dataset("market1501", tmp_path)
    assert ds.train[0].viewid is None and not ds.has_views
    assert ds.view_stats()["query"] == {"views": 0, "with_view": 0}


# --------------------------------------------------------------------------------------------
# the embedded presets


@pytest.mark.parametrize("name", ["market_like", "cuhk_like", "vehicleid_like", "veri_like"])
def test_embedded_views_are_those_the_generator_drew(synthetic_small, name):
    root = synthetic_small[name]
    # one line per image written (junk included), in the same two files for every preset
    listed = {n: read_view_file(root / n) for n in VIEW_FILES}
    images = {p.name for p in root.rglob("*.jpg")}
    assert set(listed[VIEW_FILES[0]]) | set(listed[VIEW_FILES[1]]) == images
    first = (root / VIEW_FILES[0]).read_text().splitlines()[0].split()
    assert len(first) == 42 and set(first[1:41]) == {"0"}  # name, 40 zero coordinates, view

    ds = load_synthetic(root)
    assert ds.has_views and {s.viewid for s in ds.train} <= {0, 1, 2}
    scaled = json.loads((root / STAMP_FILE).read_text())["preset"]  # e.g. market_like_x0.05
    preset = get_preset(name).scaled(float(scaled.rsplit("_x", 1)[1]))
    assert preset.name == scaled
    jobs = {j.filename: j for j in plan_jobs(preset)}
    for split in ("train", "query", "gallery"):
        for s in ds.split(split)[:3]:
            job = jobs[Path(s.path).name]
            image, view = render_example(preset, job.pid, job.cam, job.index, with_view=True)
            assert s.viewid == view, (split, s.path)
            assert np.array_equal(np.asarray(image), np.asarray(render_example(preset, job.pid, job.cam, job.index)))


def test_view_files_are_checked_by_verify(synthetic_small, tmp_path, capsys):
    root = tmp_path / synthetic_small["veri_like"].name
    shutil.copytree(synthetic_small["veri_like"], root)
    report = verify_dataset(root / "manifest.yaml", root, check_images="none", progress=False)
    assert report.ok, report.format()
    assert "view ids per split match the manifest" in report.checks
    n_query = len(list((root / "image_query").glob("*.jpg")))
    assert report.view_coverage["query"] == (n_query, n_query)
    assert f"query 100% ({n_query}/{n_query})" in report.format()
    assert set(load_manifest(root / "manifest.yaml")["views"]) == {"train", "query", "gallery"}

    (root / "keypoint_test.txt").unlink()  # an older copy without the view files: a layout entry is missing
    report = verify_dataset(root / "manifest.yaml", root, check_images="none", progress=False)
    assert any(p.startswith("missing folder or file") and "keypoint_test.txt" in p for p in report.problems), \
        report.format()

    (root / "keypoint_test.txt").write_text("")  # present but listing nothing: query and gallery lack views
    assert main(["verify", str(root / "manifest.yaml"), str(root), "--images", "none", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "query 0% (0/" in out and "gallery: 0 view ids, manifest says 3 (no image has a view id" in out


def test_manifest_views_are_validated():
    m = load_manifest("synthetic_veri_like")
    assert m["views"] == {"train": 3, "query": 3, "gallery": 3}
    m["views"] = {"train": "three"}
    with pytest.raises(ManifestError, match="views must map"):
        load_manifest(m)


# --------------------------------------------------------------------------------------------
# custom CSV and the batches


def test_custom_csv_viewid_column(tmp_path):
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    write_images(tmp_path / "images", names)
    rows = ["split,path,pid,camid,viewid", "train,images/a.jpg,5,0,2", "train,images/b.jpg,6,1,0",
            "query,images/c.jpg,5,1,1", "gallery,images/d.jpg,5,0,1"]
    write_text(tmp_path / "dataset.csv", rows)
    ds = build_dataset("custom", tmp_path)
    assert [s.viewid for s in ds.train] == [2, 0] and ds.query[0].viewid == 1 and ds.has_views

    write_text(tmp_path / "dataset.csv", rows[:-1] + ["gallery,images/d.jpg,5,0,"])  # empty: unknown
    ds = build_dataset("custom", tmp_path)
    assert ds.gallery[0].viewid is None and not ds.has_views

    write_text(tmp_path / "dataset.csv", rows[:1] + ["train,images/a.jpg,5,0,left"] + rows[2:])
    with pytest.raises(DatasetRootError, match=r"dataset\.csv, line 2: viewid"):
        build_dataset("custom", tmp_path)

    write_text(tmp_path / "dataset.csv", [r.rsplit(",", 1)[0] for r in rows])  # the four columns still load
    assert not build_dataset("custom", tmp_path).has_views


def test_image_dataset_item_is_unchanged(tmp_path):
    write_images(tmp_path, ["a.jpg"])
    ds = ImageDataset([Sample(str(tmp_path / "a.jpg"), 3, None, 2)])
    image, pid, camid, index = ds[0]
    assert (pid, camid, index) == (3, -1, 0) and image.size == (8, 4)


def test_a_registered_loader_returning_three_field_samples_keeps_working(tmp_path):
    ds = ReIDDataset("mine", tmp_path, [Sample("a", 0, 0)], [Sample("b", 1, 0)], [Sample("c", 1, 1)])
    assert not ds.has_views and ds.view_stats()["train"] == {"views": 0, "with_view": 0}
    assert "views" not in ds.summary()
