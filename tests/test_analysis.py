"""The analysis chapters' helpers: which network is studied, its features, and the study figures."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from corelib import viz
from corelib.cluster import compare_inits, summarize_inits
from corelib.data.synthetic import load_synthetic
from corelib.training import analysis_features, analysis_model


def test_analysis_model_trains_a_small_network_when_the_run_is_empty(synthetic_small, tmp_path, capsys):
    source, target = load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])
    trained = analysis_model(tmp_path, "person", source, target, smoke=True)
    assert trained.stage == "pretrain" and (tmp_path / "person" / "quick" / "pretrain" / "best.pt").is_file()
    assert "training a small source network" in capsys.readouterr().out
    # a second call finds what chapter 02 would have written
    (tmp_path / "person" / "pretrain").mkdir(parents=True)
    (tmp_path / "person" / "pretrain" / "best.pt").write_bytes(
        (tmp_path / "person" / "quick" / "pretrain" / "best.pt").read_bytes())
    analysis_model(tmp_path, "person", source, target, smoke=True)
    assert "pretrain/best.pt (pretrain)" in capsys.readouterr().out
    plain = analysis_features(trained, target)
    centred = analysis_features(trained, target, camera_centred=True)
    assert plain.features.shape == centred.features.shape == (len(target.train), trained.model.feature_dim)
    cams = np.asarray([s.camid for s in target.train])
    for cam in np.unique(cams):  # centred per camera: the camera means (before re-normalising) vanish
        raw = centred.features[torch.from_numpy(cams == cam)]
        assert raw.mean(0).norm() < 0.35 * plain.features[torch.from_numpy(cams == cam)].mean(0).norm()


def test_study_figures():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    truth = list(range(6)) * 10
    runs, labels = compare_inits(x, 6, seeds=(0, 1), truth=truth)
    summary = summarize_inits(runs, labels)
    assert isinstance(viz.inertia_curves(runs, title="t"), Figure)
    assert isinstance(viz.init_comparison(summary), Figure)
    rows = [{"k": k, "init": i, "nmi": 0.5, "ari": 0.2} for k in (3, 6, 9) for i in ("greedy_kmeans++", "random")]
    assert isinstance(viz.k_sweep(rows, true_k=6), Figure)


def test_analysis_models_adapt_briefly_and_redo_a_stale_adaptation(synthetic_small, tmp_path, capsys):
    import os
    import time

    from corelib.training import analysis_models

    source, target = load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])
    models = analysis_models(tmp_path, "person", source, target, smoke=True)
    assert (models["before"].stage, models["after"].stage) == ("pretrain", "finetune")
    out = capsys.readouterr().out
    assert "training a small source network" in out and "adapting briefly" in out
    analysis_models(tmp_path, "person", source, target, smoke=True)
    assert "using the brief adaptation made earlier" in capsys.readouterr().out
    # a source network newer than the quick adaptation (chapter 02 ran since): adapt again
    before = tmp_path / "person" / "quick" / "pretrain" / "best.pt"
    later = time.time() + 60
    os.utime(before, (later, later))
    analysis_models(tmp_path, "person", source, target, smoke=True)
    assert "adapting briefly" in capsys.readouterr().out
