"""corelib.outputs and corelib.repro: run records, figures with sidecars, metrics, seeding."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
import torch

from corelib import outputs
from corelib.repro import env_report, resolve_device, seed_everything


def _fig():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig


def test_smoke_run_keeps_figures_in_the_run_dir(tmp_path):
    run = outputs.start_run(tmp_path / "run", smoke=True, seed=7, params={"K": 9}, name="99_test")
    written = outputs.save_figure(_fig(), "99_curve", params={"extra": 1})
    names = sorted(p.name for p in written)
    assert names == ["99_curve.json", "99_curve.pdf", "99_curve.png"]
    assert all(p.parent == run.run_dir / "figures" for p in written)
    side = json.loads((run.run_dir / "figures" / "99_curve.json").read_text())
    assert side["seed"] == 7 and side["params"] == {"K": 9, "extra": 1} and "git_sha" in side
    assert (run.run_dir / "env.json").is_file()
    assert json.loads((run.run_dir / "params" / "99_test.json").read_text())["params"] == {"K": 9}


def test_full_run_saves_to_the_figures_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("COREREID_FIGURES", str(tmp_path / "curated"))
    outputs.start_run(tmp_path / "run", smoke=False, seed=0, name="99_test")
    outputs.save_figure(_fig(), "99_curve")
    assert (tmp_path / "curated" / "99_curve.png").is_file()
    assert not (tmp_path / "run" / "figures").exists()


def test_saving_twice_gives_identical_files(tmp_path):
    outputs.start_run(tmp_path, smoke=True, seed=0)
    a = [p.read_bytes() for p in outputs.save_figure(_fig(), "same")]
    b = [p.read_bytes() for p in outputs.save_figure(_fig(), "same")]
    assert a == b, "no timestamps or software versions in PNG/PDF metadata"


def test_record_metric_merges_and_cleans_values(tmp_path):
    run = outputs.start_run(tmp_path, smoke=True)
    outputs.record_metric("mAP", torch.tensor(0.5))
    outputs.record_metric("rank1", float("nan"))
    outputs.record_metric("mAP", 0.75)
    assert outputs.read_metrics(run.run_dir) == {"mAP": 0.75, "rank1": None}


def test_save_table_writes_csv_and_markdown(tmp_path):
    outputs.start_run(tmp_path, smoke=True)
    paths = outputs.save_table([{"split": "train", "ids": 3, "mAP": 0.123456}], "table")
    csv, md = paths[0].read_text(), paths[1].read_text()
    assert csv.splitlines() == ["split,ids,mAP", "train,3,0.123456"]
    assert "| split | ids | mAP |" in md and "0.1235" in md


def test_bad_output_name_and_no_open_run(tmp_path, monkeypatch):
    outputs.start_run(tmp_path, smoke=True)
    with pytest.raises(ValueError, match="plain file stem"):
        outputs.save_figure(_fig(), "../escape")
    monkeypatch.setattr(outputs, "_CURRENT", None)
    with pytest.raises(RuntimeError, match="start_run"):
        outputs.record_metric("x", 1)


def test_seed_everything_repeats_random_streams():
    import random

    import numpy as np

    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(3)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_env_report_and_device():
    rep = env_report()
    assert {"python", "torch", "torchvision", "cuda_available", "git_sha"} <= set(rep)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="DEVICE='cpu'"):
            resolve_device("cuda")


def test_notebook_outputs_are_tables_and_one_line_summaries(tmp_path, capsys):
    import pandas as pd

    outputs.start_run(tmp_path / "first", smoke=True, name="02_x")
    outputs.record_metric("person/source_mAP", 0.4)  # an earlier chapter of the same run
    run = outputs.start_run(tmp_path / "first", smoke=True, name="05_x")
    saved = outputs.save_table([{"a": 1}], "05_t")
    assert isinstance(saved, list) and all(p.is_file() for p in saved)
    saved._ipython_display_()  # what a notebook shows for a cell ending in save_table(...)
    shown = capsys.readouterr().out
    assert shown.strip() == f"saved 05_t: .csv .md .json in {run.run_dir / 'figures'}" and "PosixPath" not in shown
    table = outputs.show_table([{"k": 3, "nmi": 0.5}, {"k": 6, "nmi": 0.7}])
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["k", "nmi"] and len(table) == 2
    assert outputs.show_table(None) is None  # a table the chapter did not build (09: no sweep point)
    assert outputs.show_table([]) is None and outputs.show_table(pd.DataFrame()) is None
    outputs.record_metric("person/gradcam_queries", 4)
    mine = outputs.chapter_metrics()
    assert mine.to_dict("records") == [{"metric": "person/gradcam_queries", "value": 4}]  # not the run's
    assert set(outputs.read_metrics(run.run_dir)) == {"person/source_mAP", "person/gradcam_queries"}
