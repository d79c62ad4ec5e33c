"""Ownership has no gaps (issue "Nothing lost, second pass"): the lock of a run directory covers the
folders in it, a stage is not resumed on top of an upstream stage that changed, and a report is not
made of a run in progress nor calls a half-executed chapter "ran"."""

from __future__ import annotations

import json
import os

import nbformat
import pytest

from corelib.cli import main
from corelib.errors import RunDirBusyError
from corelib.ownership import LOCK_ENV, LOCK_NAME, RunLock


def _pretrain_argv(root: str, run, *extra: str) -> list[str]:
    return ["pretrain", "--source", "market_like", root, "--scale", "0.05", "--smoke", "-o", "runtime.device=cpu",
            "-o", "epochs=1", "--run-dir", str(run), *extra]


def _finetune_argv(root: str, run, *extra: str) -> list[str]:
    return ["finetune", "--target", "cuhk_like", root, "--scale", "0.05", "--smoke", "-o", "runtime.device=cpu",
            "-o", "epochs=1", "--run-dir", str(run), *extra]


# ----------------------------------------------------------------------------- the lock covers RUN_DIR/<pair>

def test_a_pair_folder_is_refused_while_another_process_owns_its_run_directory(
        synthetic_small, tmp_path, another_process_holds, one_line_error, snapshot):
    """`make demo` owns RUN_DIR; a pre-training started by hand in RUN_DIR/person would be continued
    by the demo's chapter 02 as if it were its own."""
    root = str(synthetic_small["market_like"].parent)
    run_dir = tmp_path / "demo"
    with another_process_holds(run_dir, "run-notebooks") as pid:
        before = snapshot(run_dir)
        assert main(_pretrain_argv(root, run_dir / "person")) == 2
        err = one_line_error()
        assert f"inside {run_dir}" in err and f"process {pid}" in err and "run-notebooks" in err
        assert snapshot(run_dir) == before  # not even RUN_DIR/person was created


def test_the_chapters_of_the_owner_work_inside_its_run_directory(tmp_path, another_process_holds, monkeypatch):
    """A chapter's kernel, started by run-notebooks with the lock handed down, may take RUN_DIR/<pair>."""
    run_dir = tmp_path / "demo"
    with another_process_holds(run_dir, "run-notebooks"):
        token = json.loads((run_dir / LOCK_NAME).read_text())["token"]
        monkeypatch.setenv(LOCK_ENV, f"{(run_dir / LOCK_NAME).resolve()}::{token}")
        with RunLock(run_dir / "person", what="pretrain pretrain") as lock:
            assert lock.held and (run_dir / "person" / LOCK_NAME).is_file()


def test_a_run_directory_is_refused_while_another_process_trains_in_one_of_its_pairs(
        tmp_path, another_process_holds, monkeypatch, snapshot):
    """The other way round: run-notebooks would run chapters 00 and 01, then fail (or worse) at 02."""
    import papermill

    from corelib.notebooks import run_notebooks

    ran = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: ran.append(a))
    run_dir = tmp_path / "demo"
    with another_process_holds(run_dir / "person", "pretrain pretrain") as pid:
        before = snapshot(run_dir)
        with pytest.raises(RunDirBusyError, match=f"person, inside .*is in use by process {pid}"):
            run_notebooks(run_dir, parameters={"SMOKE": True}, chapters=["00"])
        assert ran == [] and snapshot(run_dir) == before


# ----------------------------------------------------------------------------- a changed upstream stage

@pytest.mark.slow
def test_a_finetune_resumed_after_its_source_network_was_trained_again_is_refused(
        synthetic_small, tmp_path, capsys, snapshot):
    root = str(synthetic_small["market_like"].parent)
    run = tmp_path / "run"
    assert main(_pretrain_argv(root, run)) == 0
    assert main(_finetune_argv(root, run)) == 0
    assert main(_finetune_argv(root, run, "--resume")) == 0  # the same source network: continued
    # the source network is trained again, another one now (another seed)
    assert main(_pretrain_argv(root, run, "-o", "seed=7", "--overwrite")) == 0
    before = snapshot(run / "finetune")
    capsys.readouterr()
    assert main(_finetune_argv(root, run, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{run / 'finetune'} was started from the source network {run / 'pretrain' / 'best.pt'}" in err
    assert "--overwrite" in err
    assert snapshot(run / "finetune") == before
    # --overwrite starts the adaptation again and keeps the old one
    assert main(_finetune_argv(root, run, "--overwrite")) == 0
    assert len(list(run.glob("finetune.replaced-*"))) == 1


@pytest.mark.slow
def test_the_quick_networks_of_the_analysis_chapters_follow_a_new_source_network(synthetic_small, tmp_path):
    """Chapters 04-06 adapt a quick source network once; when it is trained again, the old adaptation
    is set aside (it used to be deleted) and the new network adapted."""
    from corelib.data.synthetic import load_synthetic
    from corelib.pairs import experiment_pairs
    from corelib.training.analysis import _Networks, _quick_finetune, _quick_pretrain

    pair = experiment_pairs(["person"])["person"]
    source, target = load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])
    nets = _Networks(tmp_path / "run", pair)
    first = _quick_pretrain(nets, source, target, seed=1, device="cpu")
    _quick_finetune(nets, target, first, seed=1, device="cpu")
    quick = first.parent.parent
    (quick / "finetune" / "notes.md").write_text("the user's")
    from corelib.training.pretrain import pretrain

    pretrain(pair.pretrain_cfg(smoke=True, seed=9, device="cpu"), source, quick, target=target, overwrite=True,
             progress=False)
    _quick_finetune(nets, target, first, seed=1, device="cpu")
    [kept] = quick.glob("finetune.replaced-*")
    assert (kept / "notes.md").read_text() == "the user's"


# ----------------------------------------------------------------------------- the report

def _chapter(path, *, finished: bool) -> None:
    nb = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_markdown_cell("# 02 · Pre-training"), nbformat.v4.new_code_cell("1"),
             nbformat.v4.new_code_cell("2")]
    for i, cell in enumerate(cells[1:]):
        done = finished or i == 0
        cell.metadata["papermill"] = {"status": "completed" if done else "pending"}
    nb.cells = cells
    nb.metadata["papermill"] = {"duration": 3.0 if finished else None, "exception": None,
                                "end_time": "2026-12-07T10:00:00" if finished else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_a_report_of_a_run_in_progress_is_refused(tmp_path, another_process_holds, one_line_error, snapshot):
    run_dir = tmp_path / "demo"
    _chapter(run_dir / "notebooks" / "02_pretraining.ipynb", finished=False)
    with another_process_holds(run_dir, "run-notebooks") as pid:
        before = snapshot(run_dir)
        assert main(["report", str(run_dir)]) == 2
        err = one_line_error()
        assert f"in use by process {pid}" in err and "run-notebooks" in err
        assert snapshot(run_dir) == before


def test_a_half_executed_chapter_is_labelled_unfinished_not_ran(tmp_path):
    from corelib.report import write_report

    run_dir = tmp_path / "run"
    _chapter(run_dir / "notebooks" / "01_style_transfer.ipynb", finished=True)
    _chapter(run_dir / "notebooks" / "02_pretraining.ipynb", finished=False)  # the run was stopped here
    index = write_report(run_dir).read_text()
    rows = {name: row for name, row in (r.split("</a>", 1) for r in index.split('<a href="')[1:])}
    assert "<td>ran</td>" in rows['01_style_transfer.html">01_style_transfer']
    assert "unfinished" in rows['02_pretraining.html">02_pretraining']
    assert not os.path.exists(run_dir / LOCK_NAME)  # the report's own lock is released
