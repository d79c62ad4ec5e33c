"""Values that type-check but make no sense, lengths that disagree, and the command line's error
contract: a corelib error is one line naming the fix with exit status 2 (issue "Nothing lost,
nobody in")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corelib.cli import main
from corelib.config import FinetuneCfg, PretrainCfg, StyleCfg
from corelib.errors import ConfigError, CorelibError, DeviceError, InvalidInputError, UnknownNameError
from corelib.evaluation import evaluate_distmat, evaluate_ranking

# ------------------------------------------------------------------ settings: ranges and choices


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs must be at least 1, got 0"),
    ("iters_per_epoch", 0, "iters_per_epoch must be at least 1"),
    ("eval_every", 0, "eval_every must be at least 1"),
    ("batch_size", 0, "batch_size must be at least 1"),
    ("lr", 0.0, "lr must be greater than 0"),
    ("augment.erase_p", 1.5, r"augment.erase_p must lie in \[0.0, 1.0\]"),
    ("loss.label_smooth", 1.0, r"loss.label_smooth must lie in \[0.0, 1.0\)"),
    ("runtime.num_workers", -1, "runtime.num_workers must be at least 0"),
])
def test_nonsense_values_are_refused_when_the_settings_are_made(field, value, message):
    """Before: epochs=0 exited 0 printing a best.pt that does not exist; eval_every=0 divided by
    zero after an epoch of training; iters_per_epoch=0 trained nothing."""
    for cls in (PretrainCfg, FinetuneCfg):
        with pytest.raises(ConfigError, match=message):
            cls().with_overrides({field: value})


@pytest.mark.parametrize("field, value, message", [
    ("cluster.kmeans.init", "greedy", "cluster.kmeans.init must be one of 'greedy_kmeans", ),
    ("cluster.kmeans.algorithm", "lloy", "did you mean 'lloyd'"),
    ("model.fusion", "v3", "model.fusion must be one of 'v1', 'v2'"),
    ("model.pool", "gmp", "model.pool must be one of"),
    ("cluster.feature", "fusd", "did you mean 'fused'"),
])
def test_misspelt_choices_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneCfg().with_overrides({field: value})


@pytest.mark.parametrize("field, value, message", [
    ("cluster.labeler", "kmean", "cluster.labeler: unknown pseudo-labeller 'kmean'; did you mean 'kmeans'"),
    ("cluster.normalize", "camera", "did you mean 'camera_mean'"),
    ("model.backbone", "resnet5", "model.backbone: unknown backbone 'resnet5'; did you mean 'resnet50'"),
    ("loss.name", "corereidd", "loss.name: unknown finetune loss 'corereidd'"),
    ("model.name", "mean_techer", "model.name: unknown"),
])
def test_unregistered_names_are_refused_when_the_settings_are_made(field, value, message):
    """Before: a misspelt labeller, loss or backbone passed the loader and failed when training began."""
    with pytest.raises(UnknownNameError, match=message):
        FinetuneCfg().with_overrides({field: value})


@pytest.mark.parametrize("device, hint", [("gpu", "did you mean 'cuda'"), ("cuda0", "did you mean 'cuda:0'"),
                                          ("cpux", "")])
def test_device_names_are_checked_with_a_suggestion(device, hint):
    for cfg, field in ((PretrainCfg(), "runtime.device"), (StyleCfg(), "device")):
        with pytest.raises(DeviceError, match=f"{field}='{device}' is not a device.*{hint}"):
            cfg.with_overrides({field: device})


def test_weights_that_are_neither_imagenet_nor_a_file_are_refused():
    with pytest.raises(ConfigError, match="did you mean 'imagenet'"):
        PretrainCfg().with_overrides({"model.weights": "imagenett"})
    assert PretrainCfg().with_overrides({"model.weights": "weights/r50.pth"}).model.weights == "weights/r50.pth"


def test_style_settings_have_ranges():
    with pytest.raises(ConfigError, match="epochs \\+ decay_epochs must be at least 1"):
        StyleCfg(epochs=0, decay_epochs=0)
    with pytest.raises(ConfigError, match="precision must be one of"):
        StyleCfg(precision="fp16")


def test_the_cli_refuses_epochs_0_before_training(synthetic_small, tmp_path, capsys):
    root = str(synthetic_small["market_like"].parent)
    run = tmp_path / "run"
    assert main(["pretrain", "--source", "market_like", root, "--scale", "0.05", "--smoke", "-o", "epochs=0",
                 "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == "corelib pretrain: epochs must be at least 1, got 0 (a run of 0 epochs trains nothing and has " \
                  "no best checkpoint)\n"
    assert not run.exists()


# ------------------------------------------------------------------ lengths where data enters


def _ranking_inputs(nq=4, ng=10, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    qf, gf = torch.randn(nq, d, generator=g), torch.randn(ng, d, generator=g)
    q_pids, g_pids = np.arange(nq) % 3, np.arange(ng) % 3
    return qf, gf, q_pids, g_pids, np.zeros(nq, int), np.ones(ng, int)


def test_evaluate_ranking_refuses_too_many_query_camids():
    """Before: accepted; the extra camids were silently ignored."""
    qf, gf, qp, gp, qc, gc = _ranking_inputs()
    with pytest.raises(InvalidInputError, match="query_camids has 6 entries but query_pids has 4"):
        evaluate_ranking(qf, gf, qp, gp, np.zeros(6, int), gc)


def test_evaluate_ranking_refuses_too_few_camids():
    """Before: an IndexError deep in the ranking."""
    qf, gf, qp, gp, qc, gc = _ranking_inputs()
    with pytest.raises(InvalidInputError, match="query_camids has 2 entries but query_pids has 4"):
        evaluate_ranking(qf, gf, qp, gp, qc[:2], gc)
    with pytest.raises(InvalidInputError, match="gallery_camids has 3 entries but gallery_pids has 10"):
        evaluate_ranking(qf, gf, qp, gp, qc, gc[:3])


def test_evaluate_ranking_refuses_an_empty_side_and_nan():
    qf, gf, qp, gp, qc, gc = _ranking_inputs()
    with pytest.raises(InvalidInputError, match="nothing to evaluate: 0 query"):
        evaluate_ranking(qf[:0], gf, qp[:0], gp, qc[:0], gc)
    bad = qf.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        evaluate_ranking(bad, gf, qp, gp, qc, gc)


def test_evaluate_distmat_refuses_a_matrix_of_another_shape():
    qf, gf, qp, gp, qc, gc = _ranking_inputs()
    with pytest.raises(InvalidInputError, match=r"distmat must be \(Q, G\) = \(4, 10\)"):
        evaluate_distmat(torch.zeros(4, 9), qp, gp, qc, gc)


def test_clustering_refuses_nan_features_and_wrong_row_counts():
    from corelib.cluster import cluster_pseudo_labels
    from corelib.config import ClusterCfg

    cfg = ClusterCfg(num_clusters=3)
    x = torch.randn(20, 4)
    cams = np.zeros(20, int)
    bad = x.clone()
    bad[7] = float("nan")
    with pytest.raises(InvalidInputError, match=r"level 1 contain NaN or inf in 1 row\(s\) \(first: row 7\)"):
        cluster_pseudo_labels([x, bad, x], cams, cfg, seed=0)
    with pytest.raises(InvalidInputError, match="must be \\(N, D\\) with N = 20"):
        cluster_pseudo_labels([x[:19], x, x], cams, cfg, seed=0)


def test_k_means_refuses_k_below_2_before_training():
    from corelib.cluster import check_labeler
    from corelib.config import ClusterCfg

    with pytest.raises(InvalidInputError, match="k-means needs k >= 2"):
        check_labeler(ClusterCfg(num_clusters=1), 100)


# ------------------------------------------------------------------ the command line's contract


def _one_line(capsys, argv, command):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"corelib {command}: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_errors_of_every_command_are_one_line_with_exit_2(synthetic_small, tmp_path, capsys):
    """Before: several of these were tracebacks with exit status 1 (ValueError, RuntimeError ...)."""
    root = str(synthetic_small["market_like"].parent)
    market = ["market_like", root, "--scale", "0.05"]
    cases = [
        (["bench", "complexity", "--device", "gpu", "--iters", "0", "--depths", "18"], "bench", "did you mean 'cuda'"),
        (["evaluate", str(tmp_path / "none.pt"), "--dataset", *market], "evaluate", "no checkpoint at"),
        (["pretrain", "--source", *market, "--smoke", "-o", "runtime.device=gpu", "--run-dir", str(tmp_path / "r")],
         "pretrain", "runtime.device='gpu'"),
        (["pretrain", "--source", *market, "--smoke", "-o", "model.weights=missing.pth", "--run-dir",
          str(tmp_path / "r")], "pretrain", "weights file missing.pth does not exist"),
        (["finetune", "--target", *market, "--smoke", "-o", "cluster.num_clusters=100000", "--run-dir",
          str(tmp_path / "r")], "finetune", "is larger than the"),
        (["finetune", "--target", *market, "--smoke", "--run-dir", str(tmp_path / "r2")], "finetune",
         "no checkpoint at"),
        (["style", "train", "--source", *market, "--smoke", "-o", "precision=fp16", "--out", str(tmp_path / "s")],
         "style", "precision must be one of"),
    ]
    for argv, command, message in cases:
        assert message in _one_line(capsys, argv, command), argv


def test_errors_are_corelib_errors_and_builtin_errors():
    """A caller's ``except ValueError`` keeps working: each error is also the built-in it replaces."""
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, CorelibError)
    assert issubclass(DeviceError, RuntimeError) and issubclass(ConfigError, ValueError)


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    import corelib.cli as cli

    def boom(args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser()
    parser._subparsers._group_actions[0].choices["env"].set_defaults(func=boom)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with pytest.raises(ZeroDivisionError):
        main(["env"])
