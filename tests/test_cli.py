"""The corelib command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from corelib.cli import main


def test_synth_list(capsys):
    assert main(["synth", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("market_like", "cuhk_like", "vehicleid_like", "veri_like"):
        assert name in out


def test_synth_writes_a_dataset_that_verifies(tmp_path, capsys):
    assert main(["synth", "vehicleid_like", str(tmp_path), "--scale", "0.04", "--workers", "1"]) == 0
    root = tmp_path / "synthetic_vehicleid_like_x0.04"
    assert (root / "image_train").is_dir() and (root / "name_test.txt").is_file()
    assert main(["verify", str(root / "manifest.yaml"), str(root), "--quiet"]) == 0


def test_synth_unknown_preset(tmp_path, capsys):
    assert main(["synth", "nope", str(tmp_path)]) == 2
    assert "valid presets" in capsys.readouterr().err


def test_datasets_lists_loaders_with_layouts(capsys):
    assert main(["datasets", "--layouts"]) == 0
    out = capsys.readouterr().out
    for name in ("market1501", "cuhk03np", "msmt17", "veri776", "vehicleid", "veriwild", "dukemtmc", "custom"):
        assert name in out
    assert "bounding_box_train" in out


def test_console_script_runs():
    # python -m corelib is the same entry point as the installed `corelib` script
    res = subprocess.run([sys.executable, "-m", "corelib", "synth", "--list"], capture_output=True, text=True)
    assert res.returncode == 0 and "market_like" in res.stdout


def test_bench_complexity_prints_params_and_paper_gflops(capsys):
    assert main(["bench", "complexity", "--device", "cpu", "--depths", "18", "--iters", "0"]) == 0
    out = capsys.readouterr().out
    assert "12,970,756" in out and "1.18" in out and "1.185" in out


@pytest.mark.slow
def test_training_commands_and_evaluate(synthetic_small, tmp_path, capsys):
    """pretrain -> finetune -> evaluate on the command line, with a YAML config and overrides."""
    root = str(synthetic_small["market_like"].parent)
    config = tmp_path / "pre.yaml"
    config.write_text("epochs: 1\niters_per_epoch: 2\n")
    run = tmp_path / "run"
    assert main(["pretrain", "--source", "market_like", root, "--target", "cuhk_like", root, "--scale", "0.05",
                 "--smoke", "--config", str(config), "-o", "runtime.device=cpu", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "best source mAP" in out
    assert "epochs: 1" in (run / "pretrain" / "config.yaml").read_text()
    assert main(["finetune", "--target", "cuhk_like", root, "--scale", "0.05", "--smoke", "-o", "epochs=1",
                 "-o", "runtime.device=cpu", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "direct transfer: target_mAP" in out and "best target mAP" in out
    assert main(["evaluate", str(run / "finetune" / "best.pt"), "--dataset", "cuhk_like", root, "--scale", "0.05",
                 "--device", "cpu", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["stage"] == "finetune" and 0.0 <= metrics["mAP"] <= 1.0


def test_training_command_names_a_bad_field(synthetic_small, tmp_path, capsys):
    root = str(synthetic_small["market_like"].parent)
    code = main(["pretrain", "--source", "market_like", root, "--scale", "0.05", "--smoke", "-o", "epoch=3",
                 "--run-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "no field 'epoch'" in err and "did you mean 'epochs'" in err


def test_run_notebooks_and_sweep_take_their_parameters_from_yaml(tmp_path, monkeypatch, capsys):
    import corelib.cli as cli
    import corelib.notebooks as nb

    seen = []

    def fake_run_notebooks(run_dir, *, parameters, chapters, **_):
        seen.append((str(run_dir), parameters, chapters))
        return [{"chapter": "03_finetuning", "seconds": 2.0, "executed": "x"}]

    monkeypatch.setattr(nb, "run_notebooks", fake_run_notebooks)  # what a sweep point calls
    monkeypatch.setattr(cli, "run_notebooks", fake_run_notebooks)  # what the run-notebooks command calls
    params = tmp_path / "p.yaml"
    params.write_text("SEED: 5\nPAIRS: [person]\nFINETUNE_OVERRIDES: {cluster.num_clusters: 20}\n")
    assert main(["run-notebooks", "--run-dir", str(tmp_path / "r"), "--chapters", "03", "--params", str(params),
                 "-p", "SEED", "7"]) == 0
    assert seen[-1][1] == {"SMOKE": False, "SEED": 7, "PAIRS": ["person"], "FINETUNE_OVERRIDES": {"cluster.num_clusters": 20}}
    params.write_text("- not a mapping\n")
    assert main(["run-notebooks", "--params", str(params)]) != 0
    assert "is a mapping" in capsys.readouterr().err

    sweep = tmp_path / "s.yaml"
    sweep.write_text('chapters: ["03"]\nparameters: {PAIRS: [person]}\ngrid: {FINETUNE_OVERRIDES.cluster.num_clusters: [6, 9]}\n')
    assert main(["sweep", str(sweep), "--root", str(tmp_path / "sw"), "--smoke"]) == 0
    assert [s[0].rsplit("/", 1)[-1] for s in seen[-2:]] == ["num_clusters=6", "num_clusters=9"]
    assert seen[-1][1]["SMOKE"] is True and seen[-1][1]["FINETUNE_OVERRIDES"] == {"cluster.num_clusters": 9}
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--root", str(tmp_path / "sw"), "--smoke"]) == 0
    assert "2 finished earlier" in capsys.readouterr().out and len(seen) == 3
    # the full sweep on the smoke sweep's folders: refused, the differing parameter named
    assert main(["sweep", str(sweep), "--root", str(tmp_path / "sw")]) == 2
    assert "SMOKE: true -> false" in capsys.readouterr().err and len(seen) == 3


def _printed(capsys, argv, cls):
    import yaml

    capsys.readouterr()
    assert main(argv) == 0
    return cls.from_dict(yaml.safe_load(capsys.readouterr().out))


def _side_args(flag: str, side) -> list[str]:
    ref = {"name": side} if isinstance(side, str) else dict(side)
    return [flag, ref.pop("name"), *([ref.pop("root")] if "root" in ref else []), *(f"{k}={v}" for k, v in ref.items())]


def _own_args(own: dict) -> list[str]:
    from corelib.settings import flatten

    out = []
    for key, value in flatten(own, {"model", "augment", "cluster", "cluster.kmeans", "loss", "runtime"}).items():
        out += ["-o", f"{key}={json.dumps(value)}"]
    return out


def test_finetune_on_veri776_resolves_the_papers_k(capsys, tmp_path):
    from corelib.config import FinetuneCfg

    cfg = _printed(capsys, ["finetune", "--target", "veri776", str(tmp_path), "--print-config"], FinetuneCfg)
    assert cfg.cluster.num_clusters == 500 and (cfg.augment.height, cfg.augment.width) == (256, 256)
    assert main(["finetune", "--target", "veri776", str(tmp_path), "--print-config", "-o", "num_clusters=600"]) == 2
    assert "did you mean 'cluster.num_clusters'?" in capsys.readouterr().err
    assert main(["finetune", "--target", "custom", str(tmp_path), "--kind", "person", "--print-config"]) == 2
    assert "no k for the target 'custom'" in capsys.readouterr().err
    cfg = _printed(capsys, ["finetune", "--target", "custom", str(tmp_path), "--kind", "person", "--print-config",
                            "-o", "cluster.num_clusters=321"], FinetuneCfg)
    assert cfg.cluster.num_clusters == 321


def test_the_command_line_reaches_the_chapters_recipes(capsys):
    """For every pair of experiments/paper_tasks.yaml and the embedded pairs, full and smoke, the
    recipe `corelib pretrain / finetune / style train` resolves is the one the chapters resolve."""
    import yaml

    from corelib.config import EMBEDDED_PAIRS, FinetuneCfg, PretrainCfg, StyleCfg
    from corelib.pairs import experiment_pairs
    from corelib.paths import repo_root

    tasks = yaml.safe_load((repo_root() / "experiments" / "paper_tasks.yaml").read_text())["DATASETS"]
    specs = {**tasks, **{name: {"source": s, "target": t} for name, (s, t) in EMBEDDED_PAIRS.items()}}
    pairs = experiment_pairs(list(specs), tasks)
    assert len(pairs) == len(tasks) + len(EMBEDDED_PAIRS)
    for name, pair in pairs.items():
        spec = specs[name]
        source, target = _side_args("--source", spec["source"]), _side_args("--target", spec["target"])
        for smoke in (False, True):
            extra = ["--print-config"] + (["--smoke"] if smoke else [])
            assert _printed(capsys, ["pretrain", *source, *target, *extra, *_own_args(spec.get("pretrain", {}))],
                            PretrainCfg) == pair.pretrain_cfg(smoke=smoke), (name, smoke)
            own = _own_args(spec.get("finetune", {})) if not smoke else []
            assert _printed(capsys, ["finetune", *target, *source, *extra, *own], FinetuneCfg) == \
                pair.finetune_cfg(smoke=smoke), (name, smoke)
            assert _printed(capsys, ["style", "train", *source, *target, *extra], StyleCfg) == \
                pair.style_cfg(smoke=smoke), (name, smoke)
            # without --source the target alone tells the recipe (the same for these pairs)
            assert _printed(capsys, ["finetune", *target, *extra, *own], FinetuneCfg) == \
                    pair.finetune_cfg(smoke=smoke), (name, smoke)
