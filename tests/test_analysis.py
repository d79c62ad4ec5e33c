"""The analysis chapters' helpers: which network is studied, its features, and the study figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from corelib import viz
from corelib.cluster import compare_inits, summarize_inits
from corelib.data.synthetic import load_synthetic
from corelib.training import analysis_features, analysis_model


@pytest.mark.slow
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


@pytest.mark.slow
def test_analysis_models_adapt_briefly_and_redo_a_stale_adaptation(synthetic_small, tmp_path, capsys):
    from corelib.runtime.checkpoint import load_checkpoint, save_checkpoint
    from corelib.training import analysis_models

    source, target = load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])
    models = analysis_models(tmp_path, "person", source, target, smoke=True)
    assert (models["before"].stage, models["after"].stage) == ("pretrain", "finetune")
    out = capsys.readouterr().out
    assert "training a small source network" in out and "adapting briefly" in out
    analysis_models(tmp_path, "person", source, target, smoke=True)
    assert "using the brief adaptation made earlier" in capsys.readouterr().out
    # another source network than the one adapted (trained again since): adapt again, the old adaptation
    # kept aside (a touched file with the same bytes is the same network: nothing to redo)
    before = tmp_path / "person" / "quick" / "pretrain" / "best.pt"
    state = load_checkpoint(before)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = state["model"][first] + 0.01
    save_checkpoint(state, before)
    analysis_models(tmp_path, "person", source, target, smoke=True)
    assert "made from an older source network; adapting again" in capsys.readouterr().out
    assert len(list((tmp_path / "person" / "quick").glob("finetune.replaced-*"))) == 1


@pytest.mark.slow
def test_empty_run_dir_shares_quick_networks_then_takes_the_demos(synthetic_small, tmp_path, monkeypatch, capsys):
    import shutil

    from corelib import paths
    from corelib.outputs import start_run
    from corelib.training import analysis_models

    monkeypatch.setenv("COREREID_RUNS", str(tmp_path / "runs"))
    source, target = load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])
    # no demo yet: the first chapter trains quick networks into the shared runs/quick ...
    first = start_run("", smoke=True, name="05_gradcam")
    assert first.default_dir and first.run_dir == (tmp_path / "runs" / "05_gradcam").resolve()
    models = analysis_models(first, "person", source, target, smoke=True)
    quick = tmp_path / "runs" / "quick" / "person" / "quick"
    assert (quick / "pretrain" / "best.pt").is_file() and (quick / "finetune" / "best.pt").is_file()
    assert "run `make demo` first" in capsys.readouterr().out
    # ... which the next chapter reuses instead of training its own
    second = start_run("", smoke=True, name="06_umap_clusters")
    analysis_models(second, "person", source, target, smoke=True)
    out = capsys.readouterr().out
    assert "trained earlier" in out and "made earlier" in out and "06_umap_clusters/person" not in out
    assert not (second.run_dir / "person").exists()
    # once make demo has run, an empty RUN_DIR studies the demo's networks and writes nothing there
    demo = paths.demo_run_dir() / "person"
    for stage in ("pretrain", "finetune"):
        (demo / stage).mkdir(parents=True)
        shutil.copy(quick / stage / "best.pt", demo / stage / "best.pt")
    before = sorted(p for p in paths.demo_run_dir().rglob("*"))
    third = start_run("", smoke=True, name="04_kmeans_init")
    demo_models = analysis_models(third, "person", source, target, smoke=True)
    out = capsys.readouterr().out
    assert "uses the networks of `make demo`" in out and str(demo / "finetune" / "best.pt") in out
    assert sorted(p for p in paths.demo_run_dir().rglob("*")) == before
    assert demo_models["after"].stage == models["after"].stage == "finetune"
    # an explicit RUN_DIR is the only place searched, and holds its own quick networks
    from corelib.pairs import experiment_pairs
    from corelib.training.analysis import _Networks

    explicit = start_run(str(tmp_path / "mine"), smoke=True, name="05_gradcam")
    nets = _Networks(explicit, experiment_pairs(["person"])["person"])
    assert not explicit.default_dir and nets.dirs == [explicit.run_dir / "person"]
    assert nets.quick_base == explicit.run_dir / "person"


def test_relative_run_dir_is_taken_from_the_repository_root(tmp_path, monkeypatch):
    from corelib import paths
    from corelib.outputs import start_run

    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.chdir(tmp_path)  # a kernel started elsewhere (notebooks/) must not matter
    run = start_run("runs/demo", smoke=True, name="05_gradcam")
    assert run.run_dir == (tmp_path / "repo" / "runs" / "demo").resolve()
    assert not (tmp_path / "runs").exists()
