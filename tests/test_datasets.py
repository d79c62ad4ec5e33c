"""Dataset loaders on tiny copies written in each dataset's real on-disk format."""

from __future__ import annotations

import inspect
import random
from pathlib import Path

import pytest
import yaml
from PIL import Image

from corelib.data.dataset import (
    DATASETS,
    Sample,
    build_dataset,
    expected_layout,
    list_datasets,
    read_image,
)
from corelib.data.vehicleid import draw_vehicleid_gallery
from corelib.errors import CorruptImageError, DatasetRootError, UnknownNameError

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_MANIFESTS = [
    "market1501", "dukemtmc", "cuhk03np_detected", "cuhk03np_labeled", "msmt17", "veri776",
    "vehicleid", "veriwild",
]
MANIFEST_KEYS = [
    "name", "title", "kind", "loader", "loader_kwargs", "folder", "layout", "image_format",
    "cameras", "protocol", "splits", "files", "obtain", "licence", "discrepancies",
]


# --------------------------------------------------------------------------------------------
# helpers


def write_image(path: Path, color: tuple[int, int, int] = (120, 30, 200)) -> Path:
    """A real 8x4 image; the format follows the extension (JPEG or PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 4), color).save(path)
    return path


def write_images(folder: Path, names: list[str]) -> None:
    for name in names:
        write_image(folder / name)


def write_text(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def triples(samples: list[Sample]) -> list[tuple[str, int, int | None]]:
    """``(file name, pid, camid)`` per sample, in loader order."""
    return [(Path(s.path).name, s.pid, s.camid) for s in samples]


def rel_triples(samples: list[Sample], base: Path) -> list[tuple[str, int, int | None]]:
    """Like :func:`triples` with the path relative to ``base`` (for nested layouts)."""
    return [(Path(s.path).relative_to(base).as_posix(), s.pid, s.camid) for s in samples]


# --------------------------------------------------------------------------------------------
# Market-1501 and DukeMTMC-reID


def make_market(parent: Path) -> Path:
    base = parent / "Market-1501-v15.09.15"
    write_images(base / "bounding_box_train", [
        "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
        "0007_c3s3_000101_01.jpg", "0011_c6s2_000201_02.jpg",
    ])
    write_images(base / "query", ["0002_c1s1_001051_00.jpg", "0007_c2s1_000551_00.jpg"])
    write_images(base / "bounding_box_test", [
        "-1_c1s1_000151_01.jpg", "0000_c1s1_000151_01.jpg",
        "0002_c4s1_000201_01.jpg", "0007_c5s1_000801_02.jpg",
    ])
    return base


def test_market1501(tmp_path: Path) -> None:
    base = make_market(tmp_path)
    ds = build_dataset("market1501", tmp_path)  # the parent folder
    assert ds.root == base and ds.has_cameras and ds.protocol == "market"
    # Train pids 2, 7, 11 relabelled to 0, 1, 2; cameras c1..c6 become 0..5.
    assert triples(ds.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0), ("0002_c2s1_000301_01.jpg", 0, 1),
        ("0007_c3s3_000101_01.jpg", 1, 2), ("0011_c6s2_000201_02.jpg", 2, 5),
    ]
    assert triples(ds.query) == [
        ("0002_c1s1_001051_00.jpg", 2, 0), ("0007_c2s1_000551_00.jpg", 7, 1),
    ]
    # Junk -1 dropped, distractor 0000 kept as a negative.
    assert triples(ds.gallery) == [
        ("0000_c1s1_000151_01.jpg", 0, 0), ("0002_c4s1_000201_01.jpg", 2, 3),
        ("0007_c5s1_000801_02.jpg", 7, 4),
    ]
    assert ds.stats() == {
        "train": {"images": 4, "ids": 3, "cameras": 4},
        "query": {"images": 2, "ids": 2, "cameras": 2},
        "gallery": {"images": 3, "ids": 3, "cameras": 3},
    }
    # The dataset folder itself gives the same lists.
    again = build_dataset("market1501", base)
    assert (again.train, again.query, again.gallery) == (ds.train, ds.query, ds.gallery)


def test_dukemtmc(tmp_path: Path) -> None:
    base = tmp_path / "DukeMTMC-reID"
    write_images(base / "bounding_box_train", ["0001_c2_f0046182.jpg", "0008_c8_f0000100.jpg"])
    write_images(base / "query", ["0005_c2_f0046985.jpg"])
    write_images(base / "bounding_box_test", ["0002_c1_f0044158.jpg", "0005_c7_f0047000.jpg"])
    ds = build_dataset("dukemtmc", tmp_path)
    assert ds.root == base
    assert triples(ds.train) == [("0001_c2_f0046182.jpg", 0, 1), ("0008_c8_f0000100.jpg", 1, 7)]
    assert triples(ds.query) == [("0005_c2_f0046985.jpg", 5, 1)]
    assert triples(ds.gallery) == [("0002_c1_f0044158.jpg", 2, 0), ("0005_c7_f0047000.jpg", 5, 6)]


# --------------------------------------------------------------------------------------------
# CUHK03-NP


def make_cuhk03np(parent: Path) -> Path:
    top = parent / "cuhk03-np"
    write_images(top / "detected" / "bounding_box_train", [
        "0001_c1_1.png", "0001_c2_2.png", "0009_c1_1.png",
    ])
    write_images(top / "detected" / "query", ["0003_c1_1.png", "0003_c2_1.png"])
    write_images(top / "detected" / "bounding_box_test", ["0003_c1_2.png", "0003_c2_3.png"])
    write_images(top / "labeled" / "bounding_box_train", ["0001_c1_1.png", "0004_c2_2.png"])
    write_images(top / "labeled" / "query", ["0003_c2_1.png"])
    write_images(top / "labeled" / "bounding_box_test", ["0003_c1_5.png"])
    return top


def test_cuhk03np_detected_and_labeled(tmp_path: Path) -> None:
    top = make_cuhk03np(tmp_path)
    det = build_dataset("cuhk03np", tmp_path)  # detected is the default
    assert det.root == top / "detected" and det.extras["subset"] == "detected"
    assert triples(det.train) == [
        ("0001_c1_1.png", 0, 0), ("0001_c2_2.png", 0, 1), ("0009_c1_1.png", 1, 0),
    ]
    assert triples(det.query) == [("0003_c1_1.png", 3, 0), ("0003_c2_1.png", 3, 1)]
    assert triples(det.gallery) == [("0003_c1_2.png", 3, 0), ("0003_c2_3.png", 3, 1)]

    lab = build_dataset("cuhk03np", tmp_path, subset="labeled")
    assert lab.root == top / "labeled"
    assert triples(lab.train) == [("0001_c1_1.png", 0, 0), ("0004_c2_2.png", 1, 1)]
    assert triples(lab.query) == [("0003_c2_1.png", 3, 1)]
    assert triples(lab.gallery) == [("0003_c1_5.png", 3, 0)]

    # The cuhk03-np folder and the subset folder itself are accepted as roots.
    assert build_dataset("cuhk03np", top, subset="labeled").train == lab.train
    assert build_dataset("cuhk03np", top / "detected").query == det.query


def test_cuhk03np_bad_subset(tmp_path: Path) -> None:
    top = make_cuhk03np(tmp_path)
    with pytest.raises(ValueError, match="detected, labeled"):
        build_dataset("cuhk03np", tmp_path, subset="detect")
    # The labeled folder given as root while asking for detected boxes is refused.
    with pytest.raises(DatasetRootError, match="labeled"):
        build_dataset("cuhk03np", top / "labeled", subset="detected")


def test_cuhk03np_alternative_folder_name(tmp_path: Path) -> None:
    write_images(tmp_path / "cuhk03np" / "detected" / "bounding_box_train", ["0001_c1_1.png"])
    write_images(tmp_path / "cuhk03np" / "detected" / "query", ["0002_c2_1.png"])
    write_images(tmp_path / "cuhk03np" / "detected" / "bounding_box_test", ["0002_c1_1.png"])
    ds = build_dataset("cuhk03np", tmp_path)
    assert triples(ds.query) == [("0002_c2_1.png", 2, 1)]


# --------------------------------------------------------------------------------------------
# MSMT17


def make_msmt17(parent: Path) -> Path:
    base = parent / "MSMT17_V1"
    train = {
        "list_train.txt": [
            ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
            ("0000/0000_001_05_0303morning_0016_0.jpg", 0),
            ("0005/0005_000_15_0303noon_0100_1.jpg", 5),
        ],
        "list_val.txt": [("0009/0009_000_03_0304afternoon_0200_0.jpg", 9)],
    }
    test = {
        "list_query.txt": [("0003/0003_000_02_0303morning_0008_0.jpg", 3)],
        "list_gallery.txt": [
            ("0003/0003_001_07_0303noon_0010_0.jpg", 3),
            ("0004/0004_000_15_0304morning_0011_0.jpg", 4),
        ],
    }
    for folder, lists in (("train", train), ("test", test)):
        for list_name, rows in lists.items():
            write_text(base / list_name, [f"{rel} {label}" for rel, label in rows])
            for rel, _ in rows:
                write_image(base / folder / rel)
    return base


def test_msmt17(tmp_path: Path) -> None:
    base = make_msmt17(tmp_path)
    ds = build_dataset("msmt17", tmp_path)
    assert ds.root == base and ds.protocol == "market"
    # Train = list_train + list_val; pids 0, 5, 9 relabelled; cameras 01..15 become 0..14.
    assert rel_triples(ds.train, base) == [
        ("train/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("train/0000/0000_001_05_0303morning_0016_0.jpg", 0, 4),
        ("train/0005/0005_000_15_0303noon_0100_1.jpg", 1, 14),
        ("train/0009/0009_000_03_0304afternoon_0200_0.jpg", 2, 2),
    ]
    assert rel_triples(ds.query, base) == [("test/0003/0003_000_02_0303morning_0008_0.jpg", 3, 1)]
    assert rel_triples(ds.gallery, base) == [
        ("test/0003/0003_001_07_0303noon_0010_0.jpg", 3, 6),
        ("test/0004/0004_000_15_0304morning_0011_0.jpg", 4, 14),
    ]


def test_msmt17_malformed_line(tmp_path: Path) -> None:
    base = make_msmt17(tmp_path)
    with open(base / "list_gallery.txt", "a", encoding="utf-8") as f:
        f.write("0004/0004_000_15_0304morning_0012_0.jpg\n")  # label missing
    with pytest.raises(DatasetRootError, match=r"list_gallery\.txt, line 3"):
        build_dataset("msmt17", base)


# --------------------------------------------------------------------------------------------
# VeRi-776


def test_veri776(tmp_path: Path) -> None:
    base = tmp_path / "VeRi"
    write_images(base / "image_train", [
        "0001_c001_00016450_0.jpg", "0001_c020_00016500_1.jpg", "0005_c002_00030000_0.jpg",
    ])
    write_images(base / "image_query", ["0002_c002_00030600_0.jpg"])
    write_images(base / "image_test", ["0002_c003_00084280_0.jpg", "0006_c019_00000010_0.jpg"])
    # List and XML files beside the folders are not needed and not read.
    write_text(base / "name_train.txt", ["0001_c001_00016450_0.jpg"])
    write_text(base / "train_label.xml", ["<TrainingImages/>"])
    write_text(base / "image_train" / "name_train.txt", ["stray list inside a folder"])
    ds = build_dataset("veri776", tmp_path)
    assert ds.root == base and ds.has_cameras
    assert triples(ds.train) == [
        ("0001_c001_00016450_0.jpg", 0, 0), ("0001_c020_00016500_1.jpg", 0, 19),
        ("0005_c002_00030000_0.jpg", 1, 1),
    ]
    assert triples(ds.query) == [("0002_c002_00030600_0.jpg", 2, 1)]
    assert triples(ds.gallery) == [
        ("0002_c003_00084280_0.jpg", 2, 2), ("0006_c019_00000010_0.jpg", 6, 18),
    ]


# --------------------------------------------------------------------------------------------
# VehicleID

VEHICLEID_TEST = {  # vehicle id -> image ids (ids with 1 to 4 images)
    10: ["0000101", "0000102", "0000103", "0000104"],
    11: ["0000111", "0000112"],
    12: ["0000121"],
    13: ["0000131", "0000132", "0000133"],
}


def make_vehicleid(parent: Path) -> Path:
    base = parent / "VehicleID_V1.0"
    train = [("0000001", 7), ("0000002", 7), ("0000003", 3)]
    test = [(img, vid) for vid, imgs in VEHICLEID_TEST.items() for img in imgs]
    # Release order is not sorted: the loader must not depend on it.
    write_text(base / "train_test_split" / "train_list.txt", [f"{i} {v}" for i, v in train])
    write_text(
        base / "train_test_split" / "test_list_800.txt", [f"{i} {v}" for i, v in reversed(test)]
    )
    for image_id, _ in train + test:
        write_image(base / "image" / f"{image_id}.jpg")
    return base


def test_vehicleid_lists_and_no_cameras(tmp_path: Path) -> None:
    base = make_vehicleid(tmp_path)
    ds = build_dataset("vehicleid", tmp_path, test_size=800)
    assert ds.root == base
    assert ds.has_cameras is False and ds.protocol == "vehicleid"
    assert all(s.camid is None for s in ds.train + ds.query + ds.gallery + ds.extras["test"])
    # Train vehicles 3 and 7 relabelled to 0 and 1.
    assert triples(ds.train) == [
        ("0000001.jpg", 1, None), ("0000002.jpg", 1, None), ("0000003.jpg", 0, None),
    ]
    test = ds.extras["test"]
    assert triples(test) == [
        (f"{img}.jpg", vid, None) for vid, imgs in sorted(VEHICLEID_TEST.items()) for img in imgs
    ]
    assert ds.extras["draw_seed"] == 0 and ds.extras["test_size"] == 800
    assert ds.stats() == {
        "train": {"images": 3, "ids": 2, "cameras": 0},
        "query": {"images": 6, "ids": 3, "cameras": 0},  # vehicle 12 has a single image
        "gallery": {"images": 4, "ids": 4, "cameras": 0},
    }


def test_vehicleid_seeded_gallery_draw(tmp_path: Path) -> None:
    make_vehicleid(tmp_path)
    ds = build_dataset("vehicleid", tmp_path)  # test_size 800 and draw_seed 0 by default
    test = ds.extras["test"]
    # One image per vehicle in the gallery, all the others are queries.
    assert sorted(s.pid for s in ds.gallery) == sorted(VEHICLEID_TEST)
    assert sorted(ds.query + ds.gallery) == sorted(test)
    assert not set(ds.query) & set(ds.gallery)
    # The documented rule: ids in sorted order, random.Random(seed).choice among its images.
    rng = random.Random(0)
    expected = [rng.choice([s for s in test if s.pid == pid]) for pid in sorted(VEHICLEID_TEST)]
    assert ds.gallery == expected
    assert draw_vehicleid_gallery(test, 0) == (ds.query, ds.gallery)
    # Same seed, same draw (also through the loader); a different seed can differ.
    redrawn = build_dataset("vehicleid", tmp_path, draw_seed=3)
    assert (redrawn.query, redrawn.gallery) == draw_vehicleid_gallery(test, 3)
    draws = {tuple(draw_vehicleid_gallery(test, seed)[1]) for seed in range(10)}
    assert len(draws) > 1
    for seed in range(10):
        query, gallery = draw_vehicleid_gallery(test, seed)
        assert len(gallery) == 4 and len(query) == len(test) - 4


def test_vehicleid_test_sizes(tmp_path: Path) -> None:
    make_vehicleid(tmp_path)
    with pytest.raises(ValueError, match="800, 1600, 2400"):
        build_dataset("vehicleid", tmp_path, test_size=900)
    # A valid size whose list is not in this copy: the error names the missing list.
    with pytest.raises(DatasetRootError, match="test_list_1600.txt"):
        build_dataset("vehicleid", tmp_path, test_size=1600)


def test_vehicleid_malformed_line(tmp_path: Path) -> None:
    base = make_vehicleid(tmp_path)
    write_text(base / "train_test_split" / "train_list.txt", ["0000001 7", "0000002 seven"])
    with pytest.raises(DatasetRootError, match=r"train_list\.txt, line 2"):
        build_dataset("vehicleid", base)


# --------------------------------------------------------------------------------------------
# VERI-Wild

VERIWILD_INFO = {  # (vid, imgid) -> camera as in vehicle_info.txt (1-based)
    (1, 1): 74, (1, 2): 3, (2, 3): 1,  # train
    (3, 4): 174, (3, 5): 12, (4, 6): 12,  # test
}
VERIWILD_TRAIN = [(1, 1), (1, 2), (2, 3)]
VERIWILD_GALLERY = [(3, 5), (4, 6)]
VERIWILD_QUERY = [(3, 4)]


def make_veriwild(parent: Path, release: str, info: dict | None = None) -> Path:
    base = parent / "VeRI-Wild"
    split = base / "train_test_split"
    info = VERIWILD_INFO if info is None else info
    write_text(split / "vehicle_info.txt", ["id/image;Camera ID;Time;Model;Type;Color"] + [
        f"{vid:05d}/{img:06d};{cam};2018-03-24 11:07:37;Audi A4L;sedan;black"
        for (vid, img), cam in info.items()
    ])
    for vid, img in VERIWILD_INFO:
        write_image(base / "images" / f"{vid:05d}" / f"{img:06d}.jpg")

    def new_lines(items: list[tuple[int, int]]) -> list[str]:
        return [f"{v:05d}/{i:06d}.jpg {v} {VERIWILD_INFO[(v, i)]}" for v, i in items]

    def old_lines(items: list[tuple[int, int]]) -> list[str]:
        return [f"{v:05d}/{i:06d}" for v, i in items]

    if release == "new":
        write_text(split / "train_list_start0.txt", new_lines(VERIWILD_TRAIN))
        write_text(split / "test_3000_id.txt", new_lines(VERIWILD_GALLERY))
        write_text(split / "test_3000_id_query.txt", new_lines(VERIWILD_QUERY))
    else:
        write_text(split / "train_list.txt", old_lines(VERIWILD_TRAIN))
        write_text(split / "test_3000.txt", old_lines(VERIWILD_GALLERY))
        write_text(split / "test_3000_query.txt", old_lines(VERIWILD_QUERY))
    return base


@pytest.mark.parametrize("release", ["new", "old"])
def test_veriwild_cameras_from_vehicle_info(tmp_path: Path, release: str) -> None:
    base = make_veriwild(tmp_path, release)
    ds = build_dataset("veriwild", tmp_path, test_size=3000)
    assert ds.root == base and ds.protocol == "veriwild" and ds.has_cameras
    assert ds.extras["release"] == release and ds.extras["camera_base"] == 1
    # vid from the path (relabelled in train), camid = camera in vehicle_info.txt - 1.
    assert rel_triples(ds.train, base) == [
        ("images/00001/000001.jpg", 0, 73), ("images/00001/000002.jpg", 0, 2),
        ("images/00002/000003.jpg", 1, 0),
    ]
    assert rel_triples(ds.query, base) == [("images/00003/000004.jpg", 3, 173)]
    assert rel_triples(ds.gallery, base) == [
        ("images/00003/000005.jpg", 3, 11), ("images/00004/000006.jpg", 4, 11),
    ]


def test_veriwild_errors(tmp_path: Path) -> None:
    info = dict(VERIWILD_INFO)
    del info[(4, 6)]
    base = make_veriwild(tmp_path, "new", info=info)
    with pytest.raises(DatasetRootError, match="00004/000006.jpg"):
        build_dataset("veriwild", base)
    with pytest.raises(DatasetRootError, match="test_5000_id.txt"):
        build_dataset("veriwild", base, test_size=5000)
    with pytest.raises(ValueError, match="3000, 5000, 10000"):
        build_dataset("veriwild", base, test_size=800)


def test_veriwild_zero_based_camera_file(tmp_path: Path) -> None:
    # Should a copy number cameras from 0, camids follow the file instead of going negative.
    info = {key: cam - 1 for key, cam in VERIWILD_INFO.items()}
    make_veriwild(tmp_path, "new", info=info)
    ds = build_dataset("veriwild", tmp_path)
    assert ds.extras["camera_base"] == 0
    assert [s.camid for s in ds.train] == [73, 2, 0]


# --------------------------------------------------------------------------------------------
# custom datasets


def test_custom_csv(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    for name in ["a.jpg", "b.jpg", "c.png", "d.jpg", "e.jpg", "junk.jpg"]:
        write_image(folder / "images" / name)
    csv_path = write_text(folder / "dataset.csv", [
        "split,path,pid,camid",
        "train,images/b.jpg,40,1",
        "train,images/a.jpg,40,0",
        "train,images/c.png,17,2",
        "query,images/d.jpg,5,0",
        "gallery,images/e.jpg,5,1",
        "gallery,images/junk.jpg,-1,1",
    ])
    for root in (folder, csv_path):  # the folder holding dataset.csv, or the CSV itself
        ds = build_dataset("custom", root)
        assert ds.has_cameras and ds.root == folder
        assert triples(ds.train) == [("a.jpg", 1, 0), ("b.jpg", 1, 1), ("c.png", 0, 2)]
        assert triples(ds.query) == [("d.jpg", 5, 0)]
        assert triples(ds.gallery) == [("e.jpg", 5, 1)]


def test_custom_csv_without_cameras_and_mixed(tmp_path: Path) -> None:
    csv_path = write_text(tmp_path / "other.csv", [
        "split,path,pid,camid", "train,x.jpg,3,", "query,y.jpg,3,", "gallery,z.jpg,3,",
    ])
    ds = build_dataset("custom", csv_path)
    assert ds.has_cameras is False
    assert [(Path(s.path).name, s.pid, s.camid) for s in ds.train + ds.query + ds.gallery] == [
        ("x.jpg", 0, None), ("y.jpg", 3, None), ("z.jpg", 3, None),
    ]
    write_text(csv_path, ["split,path,pid,camid", "train,x.jpg,3,0", "query,y.jpg,3,"])
    with pytest.raises(DatasetRootError, match="line 3"):
        build_dataset("custom", csv_path)
    write_text(csv_path, ["split,file,pid,camid", "train,x.jpg,3,0"])
    with pytest.raises(DatasetRootError, match="split,path,pid,camid"):
        build_dataset("custom", csv_path)


def test_custom_folders_with_cameras(tmp_path: Path) -> None:
    base = tmp_path / "tree"
    write_images(base / "train" / "0007", ["0007_c1_a.jpg", "0007_c3_b.jpg"])
    write_images(base / "train" / "0002", ["0002_c2_a.jpg"])
    write_images(base / "train" / "-1", ["x_c1.jpg"])  # junk folder
    write_images(base / "query" / "0005", ["0005_c1_q.jpg"])
    write_images(base / "gallery" / "0005", ["0005_c2_g.jpg"])
    write_images(base / "gallery" / "0000", ["0000_c4_d.jpg"])  # distractors stay
    ds = build_dataset("custom", base)
    assert ds.has_cameras and ds.root == base
    assert triples(ds.train) == [
        ("0002_c2_a.jpg", 0, 1), ("0007_c1_a.jpg", 1, 0), ("0007_c3_b.jpg", 1, 2),
    ]
    assert triples(ds.query) == [("0005_c1_q.jpg", 5, 0)]
    assert triples(ds.gallery) == [("0000_c4_d.jpg", 0, 3), ("0005_c2_g.jpg", 5, 1)]


def test_custom_folders_without_cameras(tmp_path: Path) -> None:
    base = tmp_path / "tree"
    write_images(base / "train" / "3", ["front.jpg", "side_c2.jpg"])  # not every file names one
    write_images(base / "query" / "4", ["q.jpg"])
    write_images(base / "gallery" / "4", ["g.jpg"])
    ds = build_dataset("custom", base)
    assert ds.has_cameras is False
    assert triples(ds.train) == [("front.jpg", 0, None), ("side_c2.jpg", 0, None)]
    assert triples(ds.query) == [("q.jpg", 4, None)] and triples(ds.gallery) == [("g.jpg", 4, None)]


def test_custom_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetRootError, match="dataset.csv"):
        build_dataset("custom", tmp_path)


# --------------------------------------------------------------------------------------------
# registry, roots, images


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_dataset("market", "/nowhere")
    for name in ["market1501", "dukemtmc", "cuhk03np", "msmt17", "veri776", "vehicleid", "veriwild",
                 "custom"]:
        assert name in str(info.value)
        assert name in list_datasets()


@pytest.mark.parametrize("name, folders", [
    ("market1501", ["bounding_box_train", "query", "bounding_box_test"]),
    ("dukemtmc", ["bounding_box_train", "query", "bounding_box_test"]),
    ("cuhk03np", ["detected", "labeled", "bounding_box_train"]),
    ("msmt17", ["train/", "test/", "list_train.txt", "list_gallery.txt"]),
    ("veri776", ["image_train", "image_query", "image_test"]),
    ("vehicleid", ["image/", "train_list.txt", "test_list_800.txt"]),
    ("veriwild", ["images/", "vehicle_info.txt", "test_3000_id_query.txt"]),
])
def test_wrong_root_prints_layout(tmp_path: Path, name: str, folders: list[str]) -> None:
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(DatasetRootError) as info:
        build_dataset(name, tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for folder in folders:
        assert folder in message


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "cuhk03np", "msmt17", "veri776",
                                  "vehicleid", "veriwild", "custom"])
def test_layouts_show_an_example_file(name: str) -> None:
    assert any(ext in expected_layout(name) for ext in (".jpg", ".png", ".csv"))


def test_foreign_file_in_split_folder(tmp_path: Path) -> None:
    base = make_market(tmp_path)
    write_image(base / "query" / "holiday.jpg")
    with pytest.raises(DatasetRootError, match="holiday.jpg"):
        build_dataset("market1501", base)


def test_read_image(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.jpg")
    img = read_image(good)
    assert img.mode == "RGB" and img.size == (8, 4)
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"this is not a JPEG")
    with pytest.raises(CorruptImageError, match="0001_c1s1_000001_00.jpg"):
        read_image(bad)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(write_image(tmp_path / "whole.png").read_bytes()[:40])
    with pytest.raises(CorruptImageError, match="truncated.png"):
        read_image(truncated)


# --------------------------------------------------------------------------------------------
# data manifests agree with the loaders


@pytest.mark.parametrize("name", REAL_MANIFESTS)
def test_manifest_schema(name: str) -> None:
    path = REPO_ROOT / "data_manifests" / f"{name}.yaml"
    m = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(m) == MANIFEST_KEYS and m["name"] == path.stem
    assert m["kind"] in ("person", "vehicle")
    assert m["protocol"] in ("market", "vehicleid", "veriwild")
    assert m["loader"] in list_datasets()
    loader = DATASETS.get(m["loader"]).load
    assert set(m["loader_kwargs"]) <= set(inspect.signature(loader).parameters) - {"root"}
    assert (m["cameras"] is None) == (m["protocol"] == "vehicleid")
    assert not Path(m["folder"]).is_absolute() and ".." not in Path(m["folder"]).parts
    assert set(m["splits"]) == {"train", "query", "gallery"}
    for counts in m["splits"].values():
        assert set(counts) == {"ids", "images", "cameras"}
        assert all(v is None or (isinstance(v, int) and v > 0) for v in counts.values())
    assert all(isinstance(d, str) and d for d in m["discrepancies"])
