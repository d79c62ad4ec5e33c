"""The paper-scale dress rehearsal (``benchmarks/paper_scale.py``): the drawn datasets have the paper's
sizes and the chapter times follow from the measured rates (the measurement itself is the script's run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from corelib.config import FinetuneCfg, PretrainCfg, StyleCfg

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark(name: str):
    """A script of benchmarks/ (not a package) as a module; its folder is on sys.path while it loads,
    as when it runs, for its ``from timing import ...``."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


paper_scale = _load_benchmark("paper_scale")
CUHK03_NP, MARKET, extrapolate, paper_presets = (paper_scale.CUHK03_NP, paper_scale.MARKET, paper_scale.extrapolate,
                                                 paper_scale.paper_presets)


def test_presets_have_the_paper_sizes():
    source, target = paper_presets()
    assert (source.num_train_ids, source.num_cameras) == (MARKET["ids"], MARKET["cams"])
    assert (target.num_train_ids, target.num_cameras) == (CUHK03_NP["ids"], CUHK03_NP["cams"])
    expected = {p.name: p.num_train_ids * sum(p.cams_per_id) / 2 * sum(p.images_per_cam) / 2 for p in (source, target)}
    assert expected["paper_market_scale"] == pytest.approx(MARKET["train"], rel=0.05)
    assert expected["paper_cuhk03_scale"] == pytest.approx(CUHK03_NP["train"], rel=0.05)


def rates(**over):
    r = {"data loading 0 workers (img/s)": 100.0, "data loading 2 workers (img/s)": 400.0,
         "pretrain step (img/s)": 200.0, "finetune step (img/s)": 300.0, "extraction (img/s)": 1000.0,
         "cyclegan step (s, batch 1, 256x256)": 0.1, "generator forward (img/s, 256x256)": 50.0,
         "k-means seeding k=900 (s)": 2.0, "k-means iteration k=900 (s)": 0.1,
         "evaluation Market (s)": 1.0, "evaluation CUHK03-NP (s)": 0.5}
    r.update(over)
    return {k: (v, "") for k, v in r.items()}


def test_chapter_times_follow_the_rates():
    per_cam = [2000, 2200, 2100, 2300, 2200, 2136]
    style, pre, fine = extrapolate(rates(), 12936, 6, per_cam)
    s, p, f = StyleCfg(), PretrainCfg(), FinetuneCfg()
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    assert style["parts"]["CycleGAN training"] == pytest.approx(
        sum(max(per_cam[i], per_cam[j]) for i, j in pairs) * s.total_epochs * 0.1)
    assert style["parts"]["writing style copies"] == pytest.approx(12936 * 5 / 50.0)
    images = p.epochs * p.iters_per_epoch * p.batch_size
    assert pre["bound_by"] == "model" and pre["parts"]["model"] == pytest.approx(images / 200.0)  # 200 < 400 img/s
    assert fine["parts"]["clustering (k-means, 3 levels)"] == pytest.approx(
        f.epochs * 3 * (2.0 + f.cluster.kmeans.max_iter * 0.1))
    assert pre["seconds"] == pytest.approx(sum(pre["parts"].values()))
    # a faster network than the loader: the chapter is bound by data loading at the best worker count
    _, pre, _ = extrapolate(rates(**{"pretrain step (img/s)": 5000.0}), 12936, 6, per_cam)
    assert pre["bound_by"] == "data loading (data loading 2 workers (img/s))"
    assert pre["parts"][pre["bound_by"]] == pytest.approx(images / 400.0)


def test_the_benchmarks_timing_helper_runs_warmup_then_the_timed_calls():
    timing = _load_benchmark("timing")
    calls = []
    seconds = timing.seconds_per_call(lambda: calls.append(len(calls)), steps=3, device="cpu", warmup=2)
    assert calls == [0, 1, 2, 3, 4] and seconds >= 0.0
    out, seconds = timing.timed(lambda: "features", "cpu")
    assert out == "features" and seconds >= 0.0
