"""A user's file inside a folder the workbench wrote survives every command that can replace that
folder, with and without ``--overwrite`` (issue "Nothing lost, second pass").

Each writer below makes its folder the way a user would (the command line, or the chapter's writer),
then a user puts ``notes_from_the_user.md`` into it, then the command that can replace the folder runs
again, once plainly and once with its overwrite flag where it has one. Afterwards the user's file is
either where it was, or inside a ``<folder>.replaced-<UTC time>`` sibling that holds the old folder
whole (every entry it held, byte for byte).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from corelib.cli import main

USER_FILE = "notes_from_the_user.md"
USER_TEXT = b"results of a week of reading; not written by corelib\n"


@dataclass
class Writer:
    """How to make a writer's folder, and the command that may replace it."""

    make: Callable[[Path, dict], Path]
    """Writes the folder (under the test's folder) and returns it."""
    again: Callable[[Path, dict, bool], int]
    """Runs the replacing command again (the bool: with the overwrite flag); returns its exit status."""
    overwrite_flag: Optional[str]
    """The command's flag that asks to replace (None: the command always replaces, e.g. a report)."""


# ----------------------------------------------------------------------------- the writers

def _synth_argv(base: Path) -> list[str]:
    return ["synth", "vehicleid_like", str(base / "data"), "--scale", "0.04", "--workers", "1"]


def _make_synthetic(base: Path, ctx: dict) -> Path:
    assert main(_synth_argv(base)) == 0
    [folder] = (base / "data").iterdir()
    return folder


def _synth_again(base: Path, ctx: dict, overwrite: bool) -> int:
    return main(_synth_argv(base) + (["--overwrite"] if overwrite else []))


def _style_argv(base: Path, ctx: dict) -> list[str]:
    src, models = ctx["style"]
    return ["style", "generate", "--models", str(models), "--source", "veri776", str(src), "--out",
            str(base / "enlarged"), "--device", "cpu"]


def _make_enlarged(base: Path, ctx: dict) -> Path:
    assert main(_style_argv(base, ctx)) == 0
    return base / "enlarged"


def _style_again(base: Path, ctx: dict, overwrite: bool) -> int:
    return main(_style_argv(base, ctx) + (["--overwrite"] if overwrite else []))


def _executed_chapter(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 00 · a chapter"), nbformat.v4.new_code_cell("1 + 1")]
    nb.metadata["papermill"] = {"duration": 1.0, "exception": None, "end_time": "2026-12-07T10:00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _make_report(base: Path, ctx: dict) -> Path:
    _executed_chapter(base / "run" / "notebooks" / "00_data_tour.ipynb")
    assert main(["report", str(base / "run")]) == 0
    return base / "run" / "report"


def _report_again(base: Path, ctx: dict, overwrite: bool) -> int:
    return main(["report", str(base / "run")])


def _pretrain_argv(base: Path, ctx: dict) -> list[str]:
    return ["pretrain", "--source", "market_like", ctx["data_root"], "--scale", "0.05", "--smoke",
            "-o", "runtime.device=cpu", "-o", "epochs=1", "--run-dir", str(base / "run")]


def _make_stage(base: Path, ctx: dict) -> Path:
    assert main(_pretrain_argv(base, ctx)) == 0
    return base / "run" / "pretrain"


def _stage_again(base: Path, ctx: dict, overwrite: bool) -> int:
    return main(_pretrain_argv(base, ctx) + (["--overwrite"] if overwrite else []))


def _make_run_dir(base: Path, ctx: dict) -> Path:
    """The run directory itself (its top level), as a pre-training writes it."""
    _make_stage(base, ctx)
    return base / "run"


def _sweep_argv(base: Path) -> list[str]:
    spec = base / "sweep.yaml"
    spec.write_text('chapters: ["03"]\nparameters: {PAIRS: [person]}\ngrid: {SEED: [3]}\n')
    return ["sweep", str(spec), "--root", str(base / "sweeps")]


def _make_sweep_point(base: Path, ctx: dict) -> Path:
    assert main(_sweep_argv(base) + ["--smoke"]) == 0  # then the full sweep differs: SMOKE true -> false
    return base / "sweeps" / "SEED=3"


def _sweep_again(base: Path, ctx: dict, overwrite: bool) -> int:
    return main(_sweep_argv(base) + (["--rerun-changed"] if overwrite else []))


def _save_figures(base: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from corelib.outputs import start_run

    run = start_run(base / "run", smoke=True, seed=1, name="03_finetuning")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.1, 0.2])
    run.save_figure(fig, "03_adaptation_person")
    plt.close(fig)
    run.save_table([{"pair": "person", "mAP": 0.2}], "03_finetuning")


def _make_figures(base: Path, ctx: dict) -> Path:
    _save_figures(base)
    return base / "run" / "figures"


def _figures_again(base: Path, ctx: dict, overwrite: bool) -> int:
    _save_figures(base)  # a chapter run again saves the same figures and tables into the same folder
    return 0


WRITERS = {
    "synthetic set (corelib synth)": Writer(_make_synthetic, _synth_again, "--overwrite"),
    "enlarged style set (corelib style generate)": Writer(_make_enlarged, _style_again, "--overwrite"),
    "report (corelib report)": Writer(_make_report, _report_again, None),
    "stage folder of a run (corelib pretrain)": Writer(_make_stage, _stage_again, "--overwrite"),
    "run directory (corelib pretrain)": Writer(_make_run_dir, _stage_again, "--overwrite"),
    "sweep point (corelib sweep)": Writer(_make_sweep_point, _sweep_again, "--rerun-changed"),
    "figures of a run (save_figure / save_table)": Writer(_make_figures, _figures_again, None),
}
CASES = [(name, overwrite) for name, w in WRITERS.items() for overwrite in ((False, True) if w.overwrite_flag else (False,))]


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def style_models(synthetic_small, tmp_path_factory):
    """Tiny domain-mode style models for the vehicle pair, and a private copy of their source."""
    from corelib.config import StyleCfg
    from corelib.data.dataset import build_dataset
    from corelib.style import train_style_models

    base = tmp_path_factory.mktemp("style_models")
    src = Path(shutil.copytree(synthetic_small["vehicleid_like"], base / "source"))
    train_style_models(build_dataset("veri776", src), StyleCfg.smoke(seed=3), base / "models", mode="domain",
                       target=build_dataset("veri776", synthetic_small["veri_like"]), progress=False)
    return src, base / "models"


@pytest.fixture
def fake_chapters(monkeypatch):
    """Chapters that write what a fine-tuning chapter writes, without executing a notebook."""
    import json

    import papermill

    import corelib.notebooks as nb

    def execute(input_path, output_path, *, parameters, **_):
        log = Path(parameters["RUN_DIR"]) / "person" / "finetune" / "metrics.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps({"epoch": 0, "target_mAP": 0.5}) + "\n")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(nb, "pick_kernel", lambda: "python3")


@pytest.fixture
def ctx(request, synthetic_small, fake_chapters):
    context = {"data_root": str(synthetic_small["market_like"].parent)}
    if "style" in request.node.name:
        context["style"] = request.getfixturevalue("style_models")
    return context


# ----------------------------------------------------------------------------- the test

def _kept_copies(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f"{folder.name}.replaced-*"))


@pytest.mark.slow
@pytest.mark.parametrize("name,overwrite", CASES, ids=[f"{n} {'with' if o else 'without'} overwrite" for n, o in CASES])
def test_a_users_file_in_a_folder_the_workbench_wrote_survives_its_replacement(name, overwrite, ctx, tmp_path,
                                                                              capsys, snapshot):
    writer = WRITERS[name]
    folder = writer.make(tmp_path, ctx)
    (folder / USER_FILE).write_bytes(USER_TEXT)
    before = snapshot(folder)
    capsys.readouterr()

    status = writer.again(tmp_path, ctx, overwrite)

    printed = capsys.readouterr()
    err = printed.err
    assert status in (0, 2), err
    kept = _kept_copies(folder)
    if (folder / USER_FILE).is_file():
        assert (folder / USER_FILE).read_bytes() == USER_TEXT
        if status == 2:  # refused: nothing at all changed
            assert snapshot(folder) == before and not kept
    else:
        # replaced: the old folder is kept whole beside the new one, and the message says where
        assert len(kept) == 1, f"{USER_FILE} is gone from {folder} and no set-aside copy holds it"
        assert snapshot(kept[0]) == before
        assert str(kept[0]) in printed.out + err


def test_a_folder_holding_only_its_writers_files_is_replaced_without_a_copy(tmp_path, capsys):
    """The set-aside copy is for folders that hold something else: a plain `--overwrite` of a set the
    workbench wrote alone leaves no `.replaced-` folder behind (a report rebuilt by every `make demo`
    must not pile them up)."""
    folder = _make_synthetic(tmp_path, {})
    assert _synth_again(tmp_path, {}, overwrite=True) == 0
    assert not _kept_copies(folder) and "kept whole" not in capsys.readouterr().err


def test_a_changed_file_of_the_writer_counts_as_the_users(tmp_path, capsys, snapshot):
    """A file the writer wrote and the user edited since is the user's work now: kept, not replaced."""
    folder = _make_synthetic(tmp_path, {})
    edited = folder / "manifest.yaml"
    edited.write_text(edited.read_text() + "# checked by hand on 2026-12-07\n")
    before = snapshot(folder)
    capsys.readouterr()
    assert _synth_again(tmp_path, {}, overwrite=True) == 0
    [kept] = _kept_copies(folder)
    assert snapshot(kept) == before
    assert "manifest.yaml" in capsys.readouterr().err
