"""No command deletes a folder it did not create ("Nothing lost, nobody in").

``corelib style generate --out DIR`` and ``generate_synthetic`` used to remove an existing output
folder, and their temporary folders, by name. Now a folder that is not the writer's own (no stamp,
no partial marker) is refused with ``NotOwnedError`` and left as it was, and the command line turns
that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from corelib.cli import main
from corelib.config import StyleCfg
from corelib.data.dataset import build_dataset
from corelib.data.synthetic import dataset_folder, generate_synthetic, get_preset, load_synthetic
from corelib.errors import CorelibError, NotOwnedError

SCALE = 0.04


@pytest.fixture(scope="module")
def style_run(synthetic_small, tmp_path_factory):
    """Tiny domain-mode style models (one CycleGAN) for the vehicle pair, and a private source copy."""
    from corelib.style import train_style_models

    base = tmp_path_factory.mktemp("no_deletion")
    src = base / "source"
    shutil.copytree(synthetic_small["vehicleid_like"], src)  # private: an unguarded writer may delete it
    models = base / "models"
    # opened as the command line opens `--source veri776 SRC`, so the models' source name matches
    train_style_models(build_dataset("veri776", src), StyleCfg.smoke(seed=3), models, mode="domain",
                       target=build_dataset("veri776", synthetic_small["veri_like"]), progress=False)
    return src, models


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _generate(style_run, out: Path, *extra: str) -> int:
    src, models = style_run
    return main(["style", "generate", "--models", str(models), "--source", "veri776", str(src),
                 "--out", str(out), "--device", "cpu", *extra])


def _thesis(folder: Path) -> dict[str, bytes]:
    (folder / "chapters").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\chapter{Results}\n")
    (folder / "chapters" / "results.tex").write_text("mAP 71.2\n")
    return _snapshot(folder)


@pytest.mark.slow
def test_style_generate_refuses_a_foreign_output_folder(style_run, tmp_path, capsys):
    out = tmp_path / "thesis"
    before = _thesis(out)
    for extra in ((), ("--overwrite",)):
        assert _generate(style_run, out, *extra) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "another --out" in err and len(err.strip().splitlines()) == 1
        assert _snapshot(out) == before
    assert not out.with_name("thesis.partial").exists()  # refused before any work started
    # an empty folder may be used, and the set written there is the writer's own from then on
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _generate(style_run, empty) == 0 and (empty / "style_set.json").is_file()
    assert _generate(style_run, empty, "--overwrite") == 0


@pytest.mark.slow
def test_style_generate_refuses_the_models_folder_and_the_source_itself(style_run, tmp_path, capsys):
    # private copies: an unguarded writer replaces them, and the other tests still need the originals
    run = tuple(Path(shutil.copytree(folder, tmp_path / folder.name)) for folder in style_run)
    kept = {folder: _snapshot(folder) for folder in run}
    for folder in reversed(run):  # the models folder, then the source dataset
        assert _generate(run, folder, "--overwrite") == 2
        assert str(folder) in capsys.readouterr().err
    assert {folder: _snapshot(folder) for folder in run} == kept


@pytest.mark.slow
def test_style_generate_refuses_a_stale_partial_folder_that_is_not_its_own(style_run, tmp_path, capsys):
    out = tmp_path / "enlarged"
    partial = tmp_path / "enlarged.partial"
    before = _thesis(partial)
    assert _generate(style_run, out) == 2
    err = capsys.readouterr().err
    assert str(partial) in err and "remove" in err
    assert _snapshot(partial) == before and not out.exists()
    # a partial folder the writer made itself (its marker inside) is cleaned up and the write completes
    from corelib.paths import make_partial_dir

    shutil.rmtree(partial)
    make_partial_dir(partial, "write_style_set")
    (partial / "half_written.jpg").write_bytes(b"")
    assert _generate(style_run, out) == 0 and not partial.exists()
    assert not (out / ".corelib_partial.json").exists()


def test_generate_synthetic_refuses_a_foreign_folder_of_the_preset_name(tmp_path):
    preset = get_preset("veri_like").scaled(SCALE)
    foreign = tmp_path / dataset_folder(preset)
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my own notes, not a dataset\n")
    with pytest.raises(NotOwnedError) as info:
        generate_synthetic("veri_like", tmp_path, scale=SCALE, workers=1, progress=False)
    assert isinstance(info.value, CorelibError) and isinstance(info.value, FileExistsError)
    assert str(foreign) in str(info.value) and "notes.txt" in str(info.value) and "Fix:" in str(info.value)
    assert (foreign / "notes.txt").read_text() == "my own notes, not a dataset\n"
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_generate_synthetic_refuses_a_temporary_folder_it_did_not_mark(tmp_path):
    preset = get_preset("veri_like").scaled(SCALE)
    tmp = tmp_path / f".{dataset_folder(preset)}.tmp-{os.getpid()}"
    tmp.mkdir()
    (tmp / "keep.txt").write_text("someone else's\n")
    with pytest.raises(NotOwnedError, match="temporary folder"):
        generate_synthetic("veri_like", tmp_path, scale=SCALE, workers=1, progress=False)
    assert (tmp / "keep.txt").read_text() == "someone else's\n"
    assert not (tmp_path / dataset_folder(preset)).exists()
    # an empty output folder is used, and the dataset holds no marker of the temporary folder
    tmp.joinpath("keep.txt").unlink()
    tmp.rmdir()
    (tmp_path / dataset_folder(preset)).mkdir()
    out = generate_synthetic("veri_like", tmp_path, scale=SCALE, workers=1, progress=False)
    assert not (out / ".corelib_partial.json").exists() and len(load_synthetic(out).train) > 0
