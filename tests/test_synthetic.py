"""The embedded synthetic data: presets, real on-disk formats, determinism, manifests."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from corelib.data.dataset import build_dataset
from corelib.data.manifests import load_manifest
from corelib.data.synthetic import (
    PRESETS,
    STAMP_FILE,
    generate_synthetic,
    get_preset,
    list_presets,
    load_synthetic,
    plan_jobs,
    preset_manifest,
    render_example,
)
from corelib.errors import UnknownNameError


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_at_least_four_presets_with_both_kinds_and_layouts():
    names = list_presets()
    assert {"market_like", "cuhk_like", "vehicleid_like", "veri_like"} <= set(names)
    assert get_preset("market_like").num_cameras == 6 and get_preset("cuhk_like").num_cameras == 2
    assert {PRESETS[n].kind for n in names} == {"person", "vehicle"}
    # the person source is the "4,000-image person set" the generator benchmark times
    assert len(plan_jobs(get_preset("market_like"))) >= 4000


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UnknownNameError, match="market_like"):
        get_preset("market")


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(tmp_path):
    a = generate_synthetic("cuhk_like", tmp_path / "a", scale=0.04, workers=1, progress=False)
    b = generate_synthetic("cuhk_like", tmp_path / "b", scale=0.04, workers=2, progress=False)
    da, db = _digest(a), _digest(b)
    assert len(da) > 20 and da == db


def test_another_seed_gives_other_images():
    p = get_preset("market_like")
    from dataclasses import replace

    a = render_example(p, pid=3, cam=1)
    b = render_example(replace(p, seed=p.seed + 1), pid=3, cam=1)
    assert a.tobytes() != b.tobytes()


def test_market_layout_and_naming(synthetic_small):
    root = synthetic_small["market_like"]
    names = [p.name for p in (root / "bounding_box_test").iterdir()]
    pat = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_(\d{2})\.jpg$")
    assert all(pat.match(n) for n in names), [n for n in names if not pat.match(n)][:3]
    assert any(n.startswith("0000_") for n in names), "distractors 0000 are written to the gallery"
    assert any(n.startswith("-1_") for n in names), "junk -1 detections are written to the gallery"
    ds = build_dataset("market1501", root)
    assert all(s.pid != -1 for s in ds.gallery), "the Market loader drops junk"
    assert any(s.pid == 0 for s in ds.gallery), "and keeps distractors"


def test_veri_layout_and_name_lists(synthetic_small):
    root = synthetic_small["veri_like"]
    for folder, listing in (("image_train", "name_train.txt"), ("image_query", "name_query.txt"),
                            ("image_test", "name_test.txt")):
        files = sorted(p.name for p in (root / folder).iterdir())
        assert files == (root / listing).read_text().split()
        assert all(re.match(r"^\d{4}_c\d{3}_\d{8}_\d+\.jpg$", f) for f in files)
    ds = build_dataset("veri776", root)
    assert ds.num_train_cams > 1 and max(s.camid for s in ds.train) < get_preset("veri_like").num_cameras


@pytest.mark.parametrize("name", ["market_like", "cuhk_like", "vehicleid_like", "veri_like"])
def test_every_query_has_a_cross_camera_match_and_splits_are_disjoint(synthetic_small, name):
    ds = load_synthetic(synthetic_small[name])
    gallery = {(s.pid, s.camid) for s in ds.gallery}
    for q in ds.query:
        assert any(pid == q.pid and cam != q.camid for pid, cam in gallery), q
    test_pids = {s.pid for s in ds.query}
    # train pids are relabelled, so compare the raw pids parsed from the file names
    train_raw = {int(Path(s.path).name.split("_")[0]) for s in ds.train}
    assert not train_raw & test_pids


def test_generated_manifest_matches_what_the_loader_sees(synthetic_small):
    for name, root in synthetic_small.items():
        m = load_manifest(root / "manifest.yaml")
        ds = load_synthetic(root)
        for split, st in ds.stats().items():
            assert m["splits"][split] == st, (name, split)


@pytest.mark.parametrize("name", ["market_like", "cuhk_like", "vehicleid_like", "veri_like"])
def test_committed_manifest_is_what_the_generator_produces(name):
    # A change of the generator that alters the full-size data must come with new manifests.
    committed = load_manifest(f"synthetic_{name}")
    assert committed == preset_manifest(get_preset(name)), (
        f"data_manifests/synthetic_{name}.yaml is stale: regenerate it with "
        f"corelib.data.manifests.dump_manifest(preset_manifest(get_preset({name!r})), ...)"
    )


def test_complete_copy_is_reused_and_stale_copy_replaced(tmp_path):
    root = generate_synthetic("vehicleid_like", tmp_path, scale=0.04, workers=1, progress=False)
    marker = root / "image_train" / "marker.txt"
    marker.write_text("kept if the copy is reused")
    assert generate_synthetic("vehicleid_like", tmp_path, scale=0.04, workers=1, progress=False) == root
    assert marker.exists()
    (root / STAMP_FILE).write_text('{"fingerprint": "old"}')
    generate_synthetic("vehicleid_like", tmp_path, scale=0.04, workers=1, progress=False)
    assert not marker.exists()
    assert not list(tmp_path.glob(".*.tmp-*")), "no temporary folder is left behind"


def test_scaled_copy_has_its_own_folder(tmp_path):
    small = generate_synthetic("cuhk_like", tmp_path, scale=0.04, workers=1, progress=False)
    assert small.name == "synthetic_cuhk_like_x0.04"
    assert load_manifest(small / "manifest.yaml")["name"] == "synthetic_cuhk_like_x0.04"


def test_domains_differ_in_colour_statistics():
    """The person source and target are different enough in appearance to be two domains."""
    import numpy as np

    def mean_rgb(preset):
        imgs = [np.asarray(render_example(preset, pid, cam, 0), dtype=float)
                for pid in range(1, 13) for cam in range(get_preset(preset).num_cameras)]
        return np.mean([im.reshape(-1, 3).mean(0) for im in imgs], axis=0)

    gap = np.abs(mean_rgb("market_like") - mean_rgb("cuhk_like")).max()
    assert gap > 15, f"mean colour differs by only {gap:.1f} grey levels"
