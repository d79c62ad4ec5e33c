"""Execute every chapter with papermill and SMOKE=True, in order in one shared run directory, and
the analysis chapters (04-06) once more each on its own.

In the shared run, later chapters read what earlier ones wrote to ``RUN_DIR``, exactly as in
``make demo``. On its own, an analysis chapter finds no checkpoints and trains small networks first.
After each run the recorded metrics must exist and be finite. Wall times are printed at the end of
the session (the analysis chapters aim at <= 90 s each on the 2-core CPU); they are reported, not
asserted: timings belong to benchmarks, not to pass / fail.
"""

from __future__ import annotations

import math

import pytest

from corelib.notebooks import list_chapters, run_notebooks
from corelib.outputs import read_metrics

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

CHAPTERS = list_chapters()
ANALYSIS = [p for p in CHAPTERS if p.name[:2] in ("04", "05", "06")]
DURATIONS: dict = {}  # "chapter (mode)" -> seconds, printed by conftest's terminal summary


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("notebooks")
    return {"base": base, "run_dir": base / "run", "data_root": base / "data", "failed": []}


def _run(chapter, run_dir, data_root, mode: str) -> None:
    before = set(read_metrics(run_dir))
    records = run_notebooks(
        run_dir,
        parameters={"SMOKE": True, "SEED": 0, "DEVICE": "cpu", "DATA_ROOT": str(data_root)},
        chapters=[chapter.stem],
        execution_timeout=600,
        progress=False,
    )
    assert records and records[0]["chapter"] == chapter.stem
    DURATIONS[f"{chapter.stem} ({mode})"] = records[0]["seconds"]
    assert (run_dir / "notebooks" / chapter.name).is_file()
    metrics = read_metrics(run_dir)
    new = {k: v for k, v in metrics.items() if k not in before}
    assert new, f"{chapter.name} recorded no metric"
    for key, value in new.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), f"{chapter.name}: {key} = {value}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_in_smoke_mode(chapter, shared_run):
    if shared_run["failed"]:
        pytest.skip(f"an earlier chapter failed: {shared_run['failed'][0]}")
    try:
        _run(chapter, shared_run["run_dir"], shared_run["data_root"], "after the earlier chapters")
    except Exception:
        shared_run["failed"].append(chapter.stem)
        raise


@pytest.mark.parametrize("chapter", ANALYSIS, ids=lambda p: p.stem)
def test_analysis_chapter_runs_on_its_own(chapter, shared_run):
    # a run directory of its own (no checkpoints); the synthetic data is shared, as on a user's disk
    run_dir = shared_run["base"] / f"alone_{chapter.stem}"
    _run(chapter, run_dir, shared_run["data_root"], "on its own")
    assert (run_dir / "person" / "quick" / "pretrain" / "best.pt").is_file()
