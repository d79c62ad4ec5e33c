"""Execute every chapter in order with papermill and SMOKE=True into one shared run directory.

Later chapters read what earlier ones wrote to ``RUN_DIR``, exactly as in ``make demo``. After each
chapter the recorded metrics must exist and be finite.
"""

from __future__ import annotations

import math

import pytest

from corelib.notebooks import list_chapters, run_notebooks
from corelib.outputs import read_metrics

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

CHAPTERS = list_chapters()


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("notebooks")
    return {"run_dir": base / "run", "data_root": base / "data", "failed": []}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_in_smoke_mode(chapter, shared_run):
    if shared_run["failed"]:
        pytest.skip(f"an earlier chapter failed: {shared_run['failed'][0]}")
    before = set(read_metrics(shared_run["run_dir"]))
    try:
        records = run_notebooks(
            shared_run["run_dir"],
            parameters={"SMOKE": True, "SEED": 0, "DEVICE": "cpu", "DATA_ROOT": str(shared_run["data_root"])},
            chapters=[chapter.stem],
            execution_timeout=600,
            progress=False,
        )
    except Exception:
        shared_run["failed"].append(chapter.stem)
        raise
    assert records and records[0]["chapter"] == chapter.stem
    assert (shared_run["run_dir"] / "notebooks" / chapter.name).is_file()
    metrics = read_metrics(shared_run["run_dir"])
    new = {k: v for k, v in metrics.items() if k not in before}
    assert new, f"{chapter.name} recorded no metric"
    for key, value in new.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), f"{chapter.name}: {key} = {value}"
