"""corelib verify: manifests and the checks of a dataset copy against one."""

from __future__ import annotations

import shutil

import pytest
import yaml

from corelib.cli import main
from corelib.data.manifests import list_manifests, load_manifest, verify_dataset
from corelib.errors import ManifestError


@pytest.fixture
def market_copy(synthetic_small, tmp_path):
    """A private copy of the small Market-like set that a test may damage."""
    dst = tmp_path / synthetic_small["market_like"].name
    shutil.copytree(synthetic_small["market_like"], dst)
    return dst


def test_every_committed_manifest_loads():
    names = list_manifests()
    assert {"market1501", "msmt17", "veri776", "vehicleid", "veriwild", "synthetic_market_like"} <= set(names)
    for name in names:
        assert load_manifest(name)["name"] == name


def test_generated_dataset_verifies(market_copy):
    report = verify_dataset(market_copy / "manifest.yaml", market_copy, progress=False)
    assert report.ok, report.format()
    assert report.images_checked == sum(1 for _ in market_copy.rglob("*.jpg"))
    # the parent folder works as a root too
    assert verify_dataset(market_copy / "manifest.yaml", market_copy.parent, progress=False).ok


def test_missing_folder_is_named(market_copy):
    shutil.rmtree(market_copy / "query")
    report = verify_dataset(market_copy / "manifest.yaml", market_copy, progress=False)
    assert not report.ok
    missing = [p for p in report.problems if p.startswith("missing folder or file:")]
    assert len(missing) == 1 and missing[0].split(" (")[0].endswith("query"), report.format()


def test_wrong_count_is_named(market_copy):
    removed = sorted((market_copy / "bounding_box_train").glob("*.jpg"))[:3]
    for p in removed:
        p.unlink()
    report = verify_dataset(market_copy / "manifest.yaml", market_copy, progress=False)
    assert not report.ok
    assert any(p.startswith("train:") and "3 missing" in p for p in report.problems), report.format()


def test_corrupt_image_is_named(market_copy):
    victim = sorted((market_copy / "bounding_box_test").glob("0*.jpg"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # a truncated JPEG: opens, fails to decode
    report = verify_dataset(market_copy / "manifest.yaml", market_copy, progress=False)
    assert not report.ok
    assert any(victim.name in p and "unreadable" in p for p in report.problems), report.format()


def test_cli_verify_exit_status_and_message(market_copy, capsys):
    manifest = str(market_copy / "manifest.yaml")
    assert main(["verify", manifest, str(market_copy), "--quiet"]) == 0
    assert "result: OK" in capsys.readouterr().out
    (market_copy / "bounding_box_train" / sorted((market_copy / "bounding_box_train").iterdir())[0].name).write_bytes(b"not a jpeg")
    assert main(["verify", manifest, str(market_copy), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "unreadable image" in out and "result: 1 problem" in out


def test_cli_verify_wrong_root(tmp_path, capsys):
    assert main(["verify", "market1501", str(tmp_path / "nowhere"), "--quiet"]) == 1
    assert "dataset folder not found" in capsys.readouterr().out


def test_unknown_manifest_lists_the_known_ones(capsys):
    assert main(["verify", "market", "/tmp", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "market1501" in err and "known manifests" in err


def test_manifest_may_not_escape_its_root(tmp_path):
    m = load_manifest("market1501")
    m["layout"] = ["../../etc"]
    with pytest.raises(ManifestError, match="escapes"):
        load_manifest(m)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(ManifestError, match="missing key"):
        load_manifest(bad)
    code = tmp_path / "code.yaml"
    code.write_text("!!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(ManifestError):
        load_manifest(code)  # the safe loader refuses to build Python objects


def test_manifest_yaml_is_plain_data():
    for name in list_manifests():
        from corelib import paths

        yaml.safe_load((paths.manifests_dir() / f"{name}.yaml").read_text())
