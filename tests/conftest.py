"""Shared fixtures: a headless matplotlib and small generated synthetic datasets."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before any matplotlib import: tests have no display

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# the browser tier (tests/browser) needs Chromium and Playwright: only `make test-browser` runs it
collect_ignore = [] if os.environ.get("COREREID_BROWSER") else ["browser"]

SMALL_SCALE = 0.05  # about 10 identities per preset: enough structure, a second to draw


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> dict[str, Path]:
    """Every preset at a small scale, generated once per test session: {preset: dataset folder}."""
    from corelib.data.synthetic import generate_synthetic, list_presets

    root = tmp_path_factory.mktemp("synthetic")
    return {name: generate_synthetic(name, root, scale=SMALL_SCALE, workers=1, progress=False) for name in list_presets()}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """Print the wall time of each chapter the notebook tests executed."""
    import sys

    module = sys.modules.get("test_notebooks") or sys.modules.get("tests.test_notebooks")
    durations = getattr(module, "DURATIONS", None)
    if durations:
        terminalreporter.section("notebook wall times (SMOKE=True, CPU)")
        for name, seconds in durations.items():
            terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
