"""Execute every chapter with papermill and SMOKE=True, in order in one shared run directory, the
analysis chapters (04-06) once more each on its own, and every chapter once more on a pair given
through ``DATASETS`` to the real loaders.

In the shared run, later chapters read what earlier ones wrote to ``RUN_DIR``, exactly as in
``make demo``. On its own, an analysis chapter finds no checkpoints and trains small networks first.
The ``DATASETS`` run is what a researcher does with real copies (README, "Real datasets in the
notebooks"): the embedded person pair, laid out as Market-1501 and CUHK03-NP folders, read by the
``market1501`` and ``cuhk03np`` loaders.
After each run the recorded metrics must exist and be finite. Wall times are printed at the end of
the session (the analysis chapters aim at <= 90 s each on the 2-core CPU); they are reported, not
asserted: timings belong to benchmarks, not to pass / fail.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from corelib.baseline_plan import chapter_recipes
from corelib.notebooks import list_chapters, run_notebooks
from corelib.outputs import read_metrics

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

CHAPTERS = list_chapters()
ANALYSIS = [p for p in CHAPTERS if p.name[:2] in ("04", "05", "06")]
DURATIONS: dict = {}  # "chapter (mode)" -> seconds, printed by conftest's terminal summary


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("notebooks")
    failed_before = request.session.testsfailed
    yield {"base": base, "run_dir": base / "run", "data_root": base / "data", "failed": []}
    # every chapter's checkpoints, several GB: freed when the module ends rather than at the session's end
    # (the tests after it need the disk), unless a test here failed: then the executed copies stay to read
    if request.session.testsfailed == failed_before:
        shutil.rmtree(base, ignore_errors=True)


def _run(chapter, run_dir, data_root, mode: str, **parameters) -> None:
    before = set(read_metrics(run_dir))
    records = run_notebooks(
        run_dir,
        parameters={"SMOKE": True, "SEED": 0, "DEVICE": "cpu", "DATA_ROOT": str(data_root), **parameters},
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
    shutil.rmtree(run_dir)  # passed: its networks are needed by no other test


def test_baselines_chapter_runs_on_its_own(shared_run):
    """Chapter 07 without chapter 02's networks trains them first, then every recipe and the oracle,
    and records the headline numbers of each (``baselines.<pair>.<recipe>.<metric>``), the ViT rows'
    source mAP, the ViT-vs-ResNet Grad-CAM figures and the conditional-filtering shares."""
    chapter = next(p for p in CHAPTERS if p.stem == "07_baselines")
    run_dir = shared_run["base"] / f"alone_{chapter.stem}"
    _run(chapter, run_dir, shared_run["data_root"], "on its own")
    assert (run_dir / "person" / "pretrain" / "best.pt").is_file()
    assert (run_dir / "person" / "baselines" / "learn_by_guessing" / "pretrain" / "best.pt").is_file()
    metrics = read_metrics(run_dir)
    compared, ablations, vit_rows = chapter_recipes()  # the chapter's defaults: what the recipes declare
    for pair in ("person", "vehicle"):
        assert isinstance(metrics[f"baselines.{pair}.oracle.mAP"], float)
        ablation = ablations if pair == "person" else []  # ABLATION_PAIRS
        for recipe in (*compared, *ablation):
            for key in ("direct_mAP", "adapted_mAP", "gap_closed"):
                assert f"baselines.{pair}.{recipe}.{key}" in metrics, (pair, recipe, key)
        for recipe in (r for r in vit_rows if r in (*compared, *ablation)):  # their own ViT source networks
            assert isinstance(metrics[f"transreid.{pair}.{recipe}.source_mAP"], float)
        assert (run_dir / "figures" / f"07_vit_vs_resnet_cams_{pair}.png").is_file()
    assert not [r for r in ablations if f"baselines.vehicle.{r}.direct_mAP" in metrics]
    assert any(k.startswith("cfs.person.") and k.endswith(".share_kept") for k in metrics)
    shutil.rmtree(run_dir)  # passed: its networks are needed by no other test


@pytest.fixture(scope="module")
def real_layout(shared_run):
    """The smoke-sized embedded person pair as copies in the real layouts, and the ``DATASETS`` entry."""
    from corelib.config import DataCfg
    from corelib.data.synthetic import generate_synthetic

    scale = DataCfg.smoke().scale  # the size chapter 00 generates with SMOKE (reused when it exists)
    root = shared_run["base"] / "real_datasets"
    (root / "cuhk03-np").mkdir(parents=True, exist_ok=True)
    for preset, folder in (("market_like", "Market-1501-v15.09.15"), ("cuhk_like", "cuhk03-np/detected")):
        made = generate_synthetic(preset, shared_run["data_root"], scale=scale, workers=1, progress=False)
        if not (root / folder).exists():
            (root / folder).symlink_to(made, target_is_directory=True)
    datasets = {"m2c": {"source": {"name": "market1501", "root": str(root)},
                        "target": {"name": "cuhk03np", "root": str(root), "subset": "detected"}}}
    return {"run_dir": shared_run["base"] / "real", "datasets": datasets, "failed": []}


def test_a_copy_that_disagrees_with_its_manifest_stops_chapter_00(real_layout, shared_run, tmp_path):
    from corelib.notebooks import NotebookFailed

    with pytest.raises(NotebookFailed, match="ManifestError: market1501, cuhk03np_detected disagree with their manifests"):
        run_notebooks(tmp_path, chapters=["00"], execution_timeout=600, progress=False,
                      parameters={"SMOKE": True, "DATA_ROOT": str(shared_run["data_root"]), "PAIRS": ["m2c"],
                                  "DATASETS": real_layout["datasets"]})


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_on_real_loaders_through_datasets(chapter, real_layout, shared_run):
    if real_layout["failed"]:
        pytest.skip(f"an earlier chapter failed: {real_layout['failed'][0]}")
    run_dir = real_layout["run_dir"]
    try:
        # the counts of these small copies are not Market's and CUHK03-NP's: report them, go on
        # the paper's pipeline, as experiments/paper_tasks.yaml runs it: 02 pre-trains on chapter
        # 01's enlarged set (STYLE_SET) and, with STYLE_COPIES, also on the source alone to compare
        _run(chapter, run_dir, shared_run["data_root"], "DATASETS, real loaders", PAIRS=["m2c"],
             DATASETS=real_layout["datasets"], STRICT_VERIFY=False, STYLE_SET=True, STYLE_COPIES=True,
             SWEEP_ROOT=str(run_dir / "no_sweeps"))
    except Exception:
        real_layout["failed"].append(chapter.stem)
        raise
    assert not (run_dir / "person").exists() and not (run_dir / "vehicle").exists()  # only the pair asked for
    figures = run_dir / "figures"
    if chapter.name.startswith("00"):
        assert (figures / "00_samples.png").is_file() and (figures / "00_cameras_market1501.png").is_file()
    if chapter.name.startswith("02"):
        record = json.loads((run_dir / "m2c" / "pair.json").read_text())
        assert record["task"] == "market1501 → cuhk03np (subset=detected)" and not record["embedded"]
        import yaml

        main = yaml.safe_load((run_dir / "m2c" / "pretrain" / "config.yaml").read_text())
        compared = yaml.safe_load((run_dir / "m2c" / "source_only" / "pretrain" / "config.yaml").read_text())
        assert main["style_set"].endswith("m2c/style/enlarged") and compared["style_set"] == ""
        assert "source + style copies" in (figures / "02_style_copies.md").read_text()
    if chapter.name.startswith("08"):
        assert "market1501 → cuhk03np (subset=detected)" in (figures / "08_adaptation.md").read_text()
