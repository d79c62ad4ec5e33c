"""The paper-scale dress rehearsal: the drawn datasets have the paper's sizes and the chapter times
follow from the measured rates (the measurement itself runs in ``benchmarks/paper_scale.py``)."""

from __future__ import annotations

import pytest

from corelib.config import FinetuneCfg, PretrainCfg, StyleCfg
from corelib.paper_scale import CUHK03_NP, MARKET, extrapolate, paper_presets


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
