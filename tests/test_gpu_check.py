"""The GPU check's CPU dry run (``benchmarks/gpu_check.py --device cpu --quick``): every step runs or says
why not, the record is complete, and a budget too small for any step skips them all and still writes it.

The runs import as on a lent GPU machine: the packages it lacks (the notebook stack, UMAP, faiss, ONNX ...)
are made unimportable through a ``sitecustomize`` on ``PYTHONPATH``, which the script's own subprocesses
(``pytest -m gpu``) inherit. pytorch-grad-cam stays importable, so that the Grad-CAM part of the script
runs here; on a lent machine it is skipped with its reason (OpenCV's wheel does not fit the carry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STEPS = ("gpu_tests", "pipeline_smoke", "clustering_evaluation", "throughput", "cyclegan", "paper_scale")
ABSENT_ON_A_LENT_MACHINE = ("papermill", "nbformat", "nbconvert", "nbclient", "jupyter_client", "jupyter_core",
                            "jupyterlab", "ipykernel", "IPython", "ipywidgets", "umap", "pynndescent", "numba", "faiss",
                            "onnx", "onnxruntime", "onnxscript", "submitit", "psutil", "requests")
"""Top-level modules of this environment that a bare GPU machine (torch, torchvision, timm, scikit-learn,
pandas, matplotlib, seaborn, pillow, pyyaml, tqdm) does not have."""


def _bare_env(tmp_path: Path) -> dict:
    site = tmp_path / "bare_site"
    site.mkdir()
    # a None entry in sys.modules: `import X` raises ModuleNotFoundError and importlib.util.find_spec("X") is None,
    # as for a package that is not installed
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in ABSENT_ON_A_LENT_MACHINE))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "MPLBACKEND": "Agg"}


def _run(tmp_path: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out), *args],
                          cwd=ROOT, env=_bare_env(tmp_path), capture_output=True, text=True, timeout=540,
                          check=False)
    record = json.loads((out / "gpu_check.json").read_text())
    return proc, record


def test_the_dry_run_runs_every_step_or_says_why_not(tmp_path):
    proc, record = _run(tmp_path, tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert record["finished"] and record["device"]["type"] == "cpu" and record["quick"] is True
    assert list(record["steps"]) == list(STEPS)
    for name, step in record["steps"].items():
        assert step["status"] == "ok", (name, step["reason"], step.get("traceback"))
        assert step["seconds"] >= 0 and step["figures"], name
        assert all(c["ok"] for c in step["checks"].values()), (name, step["checks"])
        assert all(reason for reason in step["skipped_parts"].values()), name
    steps = record["steps"]
    assert steps["gpu_tests"]["figures"]["counts"]["skipped"] >= 1  # no CUDA: the gpu tests skip
    assert "tests/test_evaluation.py" in steps["gpu_tests"]["figures"]["files"]
    assert steps["pipeline_smoke"]["checks"]["evaluation_cpu_equals_device"]["ok"]
    assert "grad_cam" in steps["pipeline_smoke"]["checks"]
    assert "CUDA" in steps["clustering_evaluation"]["skipped_parts"]["faiss"]
    assert steps["throughput"]["figures"]["batch1_corereid_net_resnet18"]["paper_fps"] == 254.0
    assert set(steps["cyclegan"]["skipped_parts"]) == {"stack_pairs_3", "stack_pairs_5"}
    assert steps["cyclegan"]["figures"]["stack_pairs_1"]["camera_pairs_per_hour"] > 0
    assert [c["bound_by"] for c in steps["paper_scale"]["figures"]["chapters"]]
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "paper_scale: ok" in log and "skipped" in log  # the pytest output of step 1 is in the log too


def test_a_budget_that_fits_no_step_skips_them_all_and_still_writes_the_record(tmp_path):
    proc, record = _run(tmp_path, tmp_path / "out", "--budget-s", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(record["steps"]) == list(STEPS) and record["finished"]
    for step in record["steps"].values():
        assert step["status"] == "skipped" and step["reason"].startswith("would not fit"), step
