"""Launchers (issue 37): sweeps, chapters and stages as submitit jobs that survive time limits.

The slow cases run submitit's real job code (pickled submissions, the job environment, its signal
handler and requeue) through its local executor, without a cluster; the Slurm case checks the
``sbatch`` script submitit would submit.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from corelib.cli import _strip_launcher, main
from corelib.errors import ConfigError, UnknownNameError
from corelib.launch import LauncherCfg, read_job
from corelib.results import collect_results, find_runs, grid_keys, sweep_table
from corelib.sweeps import load_sweep, sweep_status

submitit = pytest.importorskip("submitit", reason="the launcher tests need the slurm extra: pip install -e '.[slurm]'")


# -- settings and the Slurm script -------------------------------------------------------------------


@pytest.mark.parametrize("given, minutes", [(90, 90), ("90", 90), ("04:00:00", 240), ("1-12:00:00", 2160),
                                            ("00:30:30", 31), ("1-2", 1560)])
def test_time_limits_in_slurm_forms(given, minutes):
    assert LauncherCfg(launcher="slurm", time=given).minutes == minutes


@pytest.mark.parametrize("values, message", [
    ({"launcher": "pbs"}, "launcher 'pbs' is unknown; choose one of local, submitit-local, slurm"),
    ({"time": "four hours"}, "give minutes"),
    ({"partiton": "gpu"}, r"unknown launcher settings \['partiton'\]"),
    ({"grace_s": 200}, "must be below signal_delay_s"),
    ({"gpus_per_job": -1}, "0 or more"),
    ({"max_requeues": "many"}, "max_requeues must be 0 or more"),
])
def test_bad_launcher_settings_are_named(values, message):
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        LauncherCfg.from_mapping(values)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``srun`` and ``sbatch`` on PATH that submit nothing: ``sbatch`` keeps each script it is given in the
    returned folder and answers as Slurm does, so submitit's own Slurm executor runs to its submission."""
    bin_dir, scripts = tmp_path / "slurm_bin", tmp_path / "sbatch_scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{scripts}/$(ls {scripts} | wc -l).sh"\n'
                                    'echo "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts


def test_a_slurm_sweep_is_one_job_array_with_the_resources_and_no_network_fetch(tmp_path, monkeypatch, fake_slurm,
                                                                                  capsys):
    from submitit.core.utils import DelayedSubmission

    monkeypatch.setenv("COREREID_DATA", "/shared/datasets")
    monkeypatch.delenv("TORCH_HOME", raising=False)
    sweep = tmp_path / "s.yaml"
    sweep.write_text('chapters: ["00"]\nparameters: {PAIRS: [person]}\ngrid: {SEED: [1, 2, 3, 4]}\n'
                     'launcher: {partition: gpu-a100, mem: 64G, extra: {account: reid}}\n')
    root = tmp_path / "root"
    argv = ["sweep", str(sweep), "--root", str(root), "--smoke", "--launcher", "slurm", "--slurm-time", "08:00:00",
            "--gpus-per-job", "1", "--cpus-per-gpu", "6", "--array-parallelism", "2",
            "--slurm-setup", "rsync -a /shared/datasets/market1501 $TMPDIR/"]
    assert main(argv) == 0
    assert "4 sweep point(s), 4 submitted" in capsys.readouterr().out
    (script,) = sorted(fake_slurm.iterdir())  # one submission: the job array
    text = script.read_text()
    lines = text.splitlines()
    for expected in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu-a100", "#SBATCH --time=480",
                     "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=64G",
                     "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1", "#SBATCH --signal=USR2@120",
                     "#SBATCH --account=reid", "#SBATCH --job-name=corelib-sweep",
                     "export HF_HUB_OFFLINE=1", "export COREREID_OFFLINE=1", "export COREREID_DATA=/shared/datasets",
                     "rsync -a /shared/datasets/market1501 $TMPDIR/"):
        assert expected in lines, (expected, text)
    assert any(line.startswith("srun ") and "-u -m submitit.core._submit" in line and str(root / ".submitit") in line
               for line in lines)
    for fetch in ("http://", "https://", "curl ", "wget ", "pip install", "git clone", "huggingface-cli"):
        assert fetch not in text
    # each array task runs its point's command: corelib run-point POINT
    points = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for i, point in enumerate(points):
        job = read_job(point / "launcher")
        assert job["state"] == "pending" and job["job_id"] == f"4242_{i}" and job["launcher"] == "slurm"
        pickled = root / ".submitit" / f"4242_{i}" / f"4242_{i}_submitted.pkl"
        command = DelayedSubmission.load(pickled).function
        assert command.argv[1:] == ["-m", "corelib", "run-point", str(point.resolve())]
        assert Path(command.log_dir) == (point / "launcher").resolve()
    # queued points are not submitted again; --status lists them from their records
    assert main(argv) == 0 and len(list(fake_slurm.iterdir())) == 1
    assert "is pending, not submitted again" in capsys.readouterr().out
    assert main(["sweep", str(sweep), "--root", str(root), "--smoke", "--status"]) == 0
    assert "4 pending" in capsys.readouterr().out


def test_the_plain_sbatch_script_matches_its_sweep():
    import re
    import subprocess

    from corelib.paths import repo_root
    from corelib.sweeps import expand_grid

    script = repo_root() / "sweeps" / "cluster_k_ecab.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)  # it parses
    text = script.read_text()
    spec = load_sweep(repo_root() / "sweeps" / "cluster_k_ecab.yaml")
    points = len(expand_grid(spec["grid"]))
    array = re.search(r"^#SBATCH --array=0-(\d+)%(\d+)$", text, re.M)
    assert array and int(array.group(1)) == points - 1
    assert int(array.group(2)) == spec["launcher"]["array_parallelism"]
    assert "--point \"$SLURM_ARRAY_TASK_ID\"" in text and "COREREID_STOP_FILE" in text and "--signal=B:USR2@" in text
    for fetch in ("http://", "https://", "curl ", "wget ", "pip install"):
        assert fetch not in text


def test_an_offline_job_never_tries_a_download_and_names_the_missing_weights(tmp_path, monkeypatch):
    from corelib.errors import MissingFileError
    from corelib.models import build_backbone

    def no_network(*args, **kwargs):
        raise AssertionError("a download was tried")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("COREREID_OFFLINE", "1")
    with pytest.raises(MissingFileError, match=r"resnet18-f37072fd.pth.*COREREID_OFFLINE is set.*TORCH_HOME"):
        build_backbone("resnet18", weights="imagenet")


def test_a_stage_job_on_several_gpus_runs_under_torchrun_and_a_requeue_resumes(tmp_path, fake_slurm, capsys):
    from submitit.core.utils import DelayedSubmission

    run_dir = tmp_path / "m2c"
    assert main(["pretrain", "--source", "market_like", str(tmp_path), "--smoke", "--run-dir", str(run_dir),
                 "--overwrite", "--launcher", "slurm", "--gpus-per-job", "4", "--slurm-time", "90"]) == 0
    assert "pretrain: job 4242 pending" in capsys.readouterr().out
    (script,) = sorted(fake_slurm.iterdir())
    lines = script.read_text().splitlines()
    assert "#SBATCH --gpus-per-node=4" in lines and "#SBATCH --cpus-per-task=32" in lines and "#SBATCH --time=90" in lines
    assert not any(line.startswith("#SBATCH --array") for line in lines)  # one command: one job
    folder = run_dir / "launcher" / "pretrain"
    command = DelayedSubmission.load(folder / ".submitit" / "4242" / "4242_submitted.pkl").function
    assert command.argv[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert command.argv[6:8] == ["corelib", "pretrain"] and "--overwrite" in command.argv
    assert "--launcher" not in command.argv and "--gpus-per-job" not in command.argv
    assert "--resume" in command.resume_argv and "--overwrite" not in command.resume_argv  # a requeue never starts over
    assert read_job(folder)["job_id"] == "4242"
    # a folder that holds a run is refused before anything is submitted, as the stage refuses it locally
    (run_dir / "pretrain").mkdir(parents=True)
    (run_dir / "pretrain" / "last.pt").write_bytes(b"x")
    assert main(["pretrain", "--source", "market_like", str(tmp_path), "--smoke", "--run-dir", str(run_dir),
                 "--launcher", "slurm"]) == 2
    assert "nothing was submitted. Add --resume" in capsys.readouterr().err and len(list(fake_slurm.iterdir())) == 1
    # chapters run on one device: more GPUs in one job are refused, naming what to do instead
    assert main(["run-notebooks", "--run-dir", str(run_dir), "--launcher", "slurm", "--gpus-per-job", "2"]) == 2
    assert "run more jobs with one GPU each" in capsys.readouterr().err


def test_launcher_options_never_reach_the_job(tmp_path):
    argv = ["pretrain", "--source", "market_like", "--launcher", "slurm", "--slurm-time=02:00:00", "--wait",
            "--slurm-extra", "account=x", "--run-dir", "r", "--gpus-per-job", "2"]
    assert _strip_launcher(argv) == ["pretrain", "--source", "market_like", "--run-dir", "r"]


def test_a_sweep_file_launcher_block_is_checked_before_anything_runs(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("grid: {SEED: [1, 2]}\nlauncher: {launcher: slurm, partiton: gpu}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: launcher: unknown launcher settings \['partiton'\]"):
        load_sweep(path)
    path.write_text("grid: {SEED: [1, 2]}\nlauncher: {launcher: slurm, partition: gpu, time: '01:00:00'}\n")
    assert load_sweep(path)["launcher"] == {"launcher": "slurm", "partition": "gpu", "time": "01:00:00"}


def test_status_reads_the_point_folders_and_job_records(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text('chapters: ["00"]\nparameters: {PAIRS: [person]}\ngrid: {SEED: [1, 2, 3, 4, 5]}\n')
    root = tmp_path / "root"
    records = {"SEED=2": {"job_id": "77_1", "state": "running", "host": "elsewhere", "pid": 1, "attempt": 1},
               "SEED=3": {"job_id": "77_2", "state": "requeued", "attempt": 2},
               "SEED=4": {"job_id": "77_3", "state": "failed", "attempt": 1, "log": str(tmp_path / "a.log")}}
    (tmp_path / "a.log").write_text("loading\nTraceback\nValueError: diverged\n")
    params = {"SMOKE": False, "PAIRS": ["person"], "RESUME": True}
    for seed in (2, 3, 4, 5):
        point = root / f"SEED={seed}"
        (point / "launcher").mkdir(parents=True)
        (point / "sweep.json").write_text(json.dumps({"written_by": "corelib.sweeps", "point": {"SEED": seed},
                                                      "parameters": {**params, "SEED": seed},
                                                      "chapters": ["00_data_tour"]}))
        if f"SEED={seed}" in records:
            (point / "launcher" / "job.json").write_text(json.dumps({"written_by": "corelib.launch",
                                                                     **records[f"SEED={seed}"]}))
    (root / "SEED=5" / "sweep_done.json").write_text("{}")
    assert main(["sweep", str(sweep), "--root", str(root), "--status"]) == 0
    out = capsys.readouterr().out
    rows = {r["name"]: r for r in sweep_status(root, {"SEED": [1, 2, 3, 4, 5]}, parameters=params, chapters=["00"])}
    assert [rows[f"SEED={s}"]["state"] for s in range(1, 6)] == ["new", "running", "requeued", "failed", "finished"]
    assert rows["SEED=4"]["detail"][-1] == "ValueError: diverged" and "| ValueError: diverged" in out
    assert "77_2" in out and "1 new, 1 running, 1 requeued, 1 failed, 1 finished" in out


# -- real submitit jobs on this machine ----------------------------------------------------------------


def _sweep(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_a_parallel_sweep_of_submitit_jobs_gives_the_sequential_sweeps_table(tmp_path, synthetic_small, capsys):
    data = str(synthetic_small["market_like"].parent)
    sweep = _sweep(tmp_path, f'chapters: ["02"]\nparameters: {{PAIRS: [person], DATA_ROOT: "{data}"}}\n'
                             "grid: {SEED: [1, 2], PRETRAIN_OVERRIDES.lr: [0.00035, 0.001]}\n")
    assert main(["sweep", sweep, "--root", str(tmp_path / "seq"), "--smoke"]) == 0
    started = time.perf_counter()
    assert main(["sweep", sweep, "--root", str(tmp_path / "par"), "--smoke", "--launcher", "submitit-local",
                 "--array-parallelism", "2"]) == 0
    print(f"4 points, 2 at a time: {time.perf_counter() - started:.0f} s")
    out = capsys.readouterr().out
    assert "4 sweep point(s), 4 run now" in out
    jobs = [read_job(p / "launcher") for p in sorted((tmp_path / "par").iterdir()) if p.is_dir()
            and not p.name.startswith(".")]
    assert len(jobs) == 4 and {j["state"] for j in jobs} == {"finished"} and len({j["job_id"] for j in jobs}) == 4
    assert all(Path(j["log"]).is_file() for j in jobs)

    def table(root):
        results = collect_results(find_runs(root))
        keys = grid_keys(results)
        return sweep_table(results, keys, stage="direct").reset_index(drop=True), keys

    (seq, keys), (par, par_keys) = table(tmp_path / "seq"), table(tmp_path / "par")
    assert keys == par_keys and len(seq) == 4
    assert seq.equals(par), (seq, par)


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_other_points_finish(tmp_path, synthetic_small, capsys):
    data = str(synthetic_small["market_like"].parent)
    not_a_folder = tmp_path / "a_file"  # the chapter fails when it writes there, inside its job
    not_a_folder.write_text("")
    grid = {"DATA_ROOT": [data, str(not_a_folder)]}
    sweep = _sweep(tmp_path, f'chapters: ["00"]\nparameters: {{PAIRS: [person]}}\ngrid: {json.dumps(grid)}\n')
    root = tmp_path / "root"
    code = main(["sweep", sweep, "--root", str(root), "--smoke", "--launcher", "submitit-local"])
    captured = capsys.readouterr()
    assert code == 1 and "1 of 2 sweep point(s) failed" in captured.err
    good, bad = sweep_status(root, grid, parameters={"SMOKE": True, "PAIRS": ["person"]}, chapters=["00"])
    assert good["state"] == "finished" and bad["state"] == "failed"
    assert "NotADirectoryError" in bad["detail"][0] and any("corelib run-point" in line for line in bad["detail"])
    failed = json.loads((root / bad["name"] / "sweep_failed.json").read_text())
    assert "NotADirectoryError" in failed["error"] and Path(failed["executed_notebook"]).is_file()
    job = read_job(root / bad["name"] / "launcher")
    assert job["state"] == "failed" and job["returncode"] == 1 and job["attempt"] == 1
    assert main(["sweep", sweep, "--root", str(root), "--smoke", "--status"]) == 0
    assert "1 finished, 1 failed" in capsys.readouterr().out


@pytest.mark.slow
def test_a_job_warned_of_its_time_limit_is_requeued_and_ends_with_the_uninterrupted_weights(tmp_path,
                                                                                           synthetic_small):
    data = str(synthetic_small["market_like"].parent)
    command = ["pretrain", "--source", "market_like", data, "--smoke", "-o", "epochs=2", "-o", "iters_per_epoch=8"]
    assert main([*command, "--run-dir", str(tmp_path / "straight")]) == 0

    log_dir = tmp_path / "job" / "launcher" / "pretrain"
    codes: list = []
    submitter = threading.Thread(target=lambda: codes.append(main([*command, "--run-dir", str(tmp_path / "job"),
                                                                   "--launcher", "submitit-local"])))
    submitter.start()
    metrics = tmp_path / "job" / "pretrain" / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.2)  # the first epoch has ended: the job is mid-training
    job = read_job(log_dir)
    assert job and job["state"] == "running", job
    os.kill(int(job["pid"]), signal.SIGUSR2)  # what Slurm sends signal_delay_s before the limit
    submitter.join(timeout=900)
    assert codes == [0]
    job = read_job(log_dir)
    assert job["state"] == "finished" and job["attempt"] == 2 and job.get("requeued_at_attempt") == 1
    assert "stopped on request" in (log_dir / "attempt-1.log").read_text()
    assert "--resume" in job["command"].split()  # the requeued attempt continues, never starts over
    a = torch.load(tmp_path / "straight" / "pretrain" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "job" / "pretrain" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert lines == [1, 2]
