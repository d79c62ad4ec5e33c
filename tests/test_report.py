"""The HTML report of a run directory: a page per executed chapter, metrics on the index."""

from __future__ import annotations

import base64
import json

import nbformat
import pytest

from corelib.errors import MissingStageError, NotOwnedError
from corelib.report import REPORT_STAMP, write_report

# a 1 x 1 PNG, as a chapter's inline figure
_PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


def _executed(path, title, *, error=False, seconds=12.6):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nSome text."),
                nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
                    "display_data", data={"image/png": _PNG, "text/plain": "<Figure>"})])]
    if error:
        nb.cells.append(nbformat.v4.new_code_cell("1/0", outputs=[nbformat.v4.new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]))
    nb.metadata["papermill"] = {"duration": seconds, "exception": error or None, "end_time": "2026-12-07T10:00:00"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                             "version_minor": 0}}
    nbformat.write(nb, path)


def _run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    _executed(run / "notebooks" / "05_gradcam.ipynb", "05 · Grad-CAM")
    _executed(run / "notebooks" / "06_umap_clusters.ipynb", "06 · UMAP", error=True, seconds=3.0)
    (run / "metrics.json").write_text(json.dumps({"person/finetune/mAP": 0.18764, "vehicle": {"mAP": 0.5}}))
    return run


def test_report_has_a_page_per_chapter_with_embedded_figures_and_metrics_on_the_index(tmp_path):
    run = _run_dir(tmp_path)
    index = write_report(run)
    assert index == run / "report" / "index.html"
    text = index.read_text()
    for page in ("05_gradcam.html", "06_umap_clusters.html"):
        assert f'href="{page}"' in text
        body = (run / "report" / page).read_text()
        assert f"data:image/png;base64,{_PNG[:20]}" in body  # embedded: opens without a server
        # offline: nbconvert's lab page loads require.js, MathJax and mermaid from CDNs by default
        assert "<script src=\"http" not in body and "cdnjs" not in body and "widget-state" not in body
    assert "person/finetune/mAP" in text and "0.1876" in text and "vehicle.mAP" in text
    assert "05 · Grad-CAM" in text and "13 s" in text
    assert text.count('class="failed"') == 1  # the chapter with an error output is marked
    assert not list(run.glob(".report.partial*"))


def test_report_rebuilds_its_own_folder_and_refuses_anothers(tmp_path):
    run = _run_dir(tmp_path)
    write_report(run)
    write_report(run)  # its own folder (report.json), holding only what it wrote: replaced
    assert not list(run.glob("report.replaced-*"))
    (run / "report" / "old.html").write_text("a file the report did not write")
    write_report(run)  # kept whole beside the new report, never deleted
    assert not (run / "report" / "old.html").exists() and (run / "report" / REPORT_STAMP).is_file()
    [kept] = run.glob("report.replaced-*")
    assert (kept / "old.html").read_text() == "a file the report did not write"
    other = tmp_path / "other"
    (other / "notebooks").mkdir(parents=True)
    _executed(other / "notebooks" / "00_data_tour.ipynb", "00")
    (other / "report").mkdir()
    (other / "report" / "mine.txt").write_text("a user's file")
    with pytest.raises(NotOwnedError, match="mine.txt"):
        write_report(other)
    assert (other / "report" / "mine.txt").read_text() == "a user's file"


def test_report_without_executed_chapters_names_the_command(tmp_path):
    with pytest.raises(MissingStageError, match="make demo"):
        write_report(tmp_path)


def test_report_command(tmp_path, capsys):
    from corelib.cli import main

    run = _run_dir(tmp_path)
    assert main(["report", str(run)]) == 0
    assert str(run / "report" / "index.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "run-notebooks" in capsys.readouterr().err
