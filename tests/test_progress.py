"""Progress bars: tqdm's own choice in a front end, lines of text for headless chapter runs."""

from __future__ import annotations

import time

from corelib import progress


def test_text_mode_writes_whole_lines(monkeypatch, capsys):
    monkeypatch.setenv(progress.PROGRESS_ENV, "text")
    monkeypatch.setattr(progress, "TEXT_INTERVAL", 0.0)
    bar = progress.tqdm(range(3), desc="extract", leave=False)
    for _ in bar:
        time.sleep(0.01)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\r" not in out and lines and all(line.startswith("extract") for line in lines)
    assert "3/3" in lines[-1]  # the finished bar stays, although leave=False was asked


def test_text_mode_postfix_waits_for_the_next_timed_line(monkeypatch, capsys):
    monkeypatch.setenv(progress.PROGRESS_ENV, "text")
    bar = progress.tqdm(range(200), desc="train")  # TEXT_INTERVAL of 15 s: no timed line in this loop
    for i in bar:
        bar.set_postfix(loss=f"{i:.3f}")  # tqdm redraws here by default: one line per step
        bar.set_postfix_str(f"step {i}")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 2, lines[:5]  # the first draw and the final line only
    assert "200/200" in lines[-1]


def test_without_the_variable_tqdm_chooses(monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    from tqdm.auto import tqdm as auto

    bar = progress.tqdm(range(2), disable=True)
    assert isinstance(bar, auto)
    assert list(bar) == [0, 1]


def test_run_notebooks_sets_text_mode_for_the_kernels_and_restores(monkeypatch, tmp_path):
    import os

    import corelib.notebooks as nbmod

    seen = {}

    def fake_execute(src, out, **kw):
        seen["mode"] = os.environ.get(progress.PROGRESS_ENV)
        import shutil

        shutil.copy(src, out)

    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    nbmod.run_notebooks(tmp_path / "run", chapters=["00"], kernel_name="python3")
    assert seen["mode"] == "text" and progress.PROGRESS_ENV not in os.environ
