"""Sweep points are what their folders say they are: a point recorded with other parameters is
refused or rerun (the old results kept), two points never share a folder, a folder the workbench did
not write is never adopted, and the sweep's chapters name chapters exactly.

No chapter is executed: papermill's ``execute_notebook`` is replaced by a stand-in that writes what
a fine-tuning chapter would (a ``metrics.jsonl``, tagged with the SMOKE it was given).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corelib.cli import main


@pytest.fixture
def executed(monkeypatch):
    """The ``(RUN_DIR, parameters)`` of each chapter papermill was asked to execute."""
    import papermill

    import corelib.notebooks as nb

    calls = []

    def fake_execute(input_path, output_path, *, parameters, **_):
        run_dir = Path(parameters["RUN_DIR"])
        calls.append((run_dir, dict(parameters)))
        log = run_dir / "person" / "finetune" / "metrics.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps({"epoch": 0, "target_mAP": 0.5, "smoke": parameters.get("SMOKE")}) + "\n")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(nb, "pick_kernel", lambda: "python3")
    return calls


def _sweep_file(tmp_path, chapters='["03"]', grid="{FINETUNE_OVERRIDES.cluster.num_clusters: [6]}") -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"chapters: {chapters}\nparameters: {{PAIRS: [person]}}\ngrid: {grid}\n")
    return str(path)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_a_full_sweep_over_a_smoke_sweep_is_refused_naming_smoke(tmp_path, executed, capsys):
    sweep, root = _sweep_file(tmp_path), str(tmp_path / "sweeps")
    assert main(["sweep", sweep, "--root", root, "--smoke"]) == 0
    assert len(executed) == 1
    capsys.readouterr()
    assert main(["sweep", sweep, "--root", root]) == 2
    err = _one_line_error(capsys)
    assert "sweep point num_clusters=6" in err and "SMOKE: true -> false" in err and "--rerun-changed" in err
    assert len(executed) == 1  # nothing ran, nothing was skipped as "finished earlier"


def test_rerun_changed_runs_the_point_again_and_keeps_the_old_results(tmp_path, executed, capsys):
    from corelib.results import find_runs

    sweep, root = _sweep_file(tmp_path), tmp_path / "sweeps"
    assert main(["sweep", sweep, "--root", str(root), "--smoke"]) == 0
    assert main(["sweep", sweep, "--root", str(root), "--rerun-changed"]) == 0
    assert [params["SMOKE"] for _, params in executed] == [True, False]
    old = [p for p in root.iterdir() if p.name.startswith("num_clusters=6.replaced-")]
    assert len(old) == 1, sorted(p.name for p in root.iterdir())
    old_log = json.loads((old[0] / "person" / "finetune" / "metrics.jsonl").read_text())
    assert old_log["smoke"] is True and (old[0] / "sweep_done.json").is_file()  # the smoke results, untouched
    new = root / "num_clusters=6"
    assert json.loads((new / "sweep.json").read_text())["parameters"]["SMOKE"] is False
    assert json.loads((new / "person" / "finetune" / "metrics.jsonl").read_text())["smoke"] is False
    assert find_runs(root) == [new.resolve()]  # chapter 08 tabulates the new point only
    capsys.readouterr()
    assert main(["sweep", sweep, "--root", str(root)]) == 0  # the same parameters again: finished
    assert "1 finished earlier" in capsys.readouterr().out and len(executed) == 2


@pytest.mark.parametrize("values", [["a/b", "a_b"], [1, "1"]], ids=["sanitised-alike", "number-and-text"])
def test_grid_points_whose_names_would_collide_get_distinct_folders(tmp_path, executed, values):
    from corelib.sweeps import run_sweep

    # cluster.options: a free-form setting, so every value resolves (points are checked before they run)
    key = "FINETUNE_OVERRIDES.cluster.options.tag"
    records = run_sweep(tmp_path, {key: values}, parameters={"SMOKE": True}, chapters=["03"])
    assert [r["ran"] for r in records] == [True, True]
    folders = [Path(r["run_dir"]) for r in records]
    assert len(set(folders)) == 2
    for folder, value in zip(folders, values):
        assert json.loads((folder / "sweep.json").read_text())["point"] == {key: value}


def test_keys_with_the_same_last_part_keep_their_full_dotted_key():
    from corelib.sweeps import point_name

    name = point_name({"PRETRAIN_OVERRIDES.epochs": 2, "FINETUNE_OVERRIDES.epochs": 4})
    assert name == "PRETRAIN_OVERRIDES.epochs=2,FINETUNE_OVERRIDES.epochs=4"


def test_a_point_folder_the_workbench_did_not_write_is_not_adopted(tmp_path, executed, capsys):
    root = tmp_path / "sweeps"
    stranger = root / "num_clusters=6"
    stranger.mkdir(parents=True)
    (stranger / "notes.txt").write_text("my own run\n")
    assert main(["sweep", _sweep_file(tmp_path), "--root", str(root)]) == 2
    err = _one_line_error(capsys)
    assert str(stranger) in err and "no sweep.json" in err
    assert executed == [] and sorted(p.name for p in stranger.iterdir()) == ["notes.txt"]


def test_sweep_chapters_that_name_no_chapter_are_refused(tmp_path, executed, capsys):
    assert main(["sweep", _sweep_file(tmp_path, chapters='["03", "3O"]'), "--root", str(tmp_path / "sw")]) == 2
    assert "no chapter is named '3O'" in _one_line_error(capsys)
    assert main(["sweep", _sweep_file(tmp_path), "--root", str(tmp_path / "sw"), "--chapters", "3"]) == 2
    assert "no chapter is named '3'" in _one_line_error(capsys)
    assert executed == [] and not (tmp_path / "sw").exists()
