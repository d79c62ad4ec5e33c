"""One owner per run directory, finished runs never replaced unasked, and a clean resume after a
kill during a checkpoint write (issue "Nothing lost, nobody in")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corelib.cli import main
from corelib.config import PretrainCfg
from corelib.errors import ConfigError, RunDirBusyError, RunExistsError
from corelib.ownership import LOCK_NAME, RunLock, held_lock

REPO = Path(__file__).resolve().parents[2]


def _pretrain_argv(root: str, run: Path, *extra: str) -> list[str]:
    return ["pretrain", "--source", "market_like", root, "--scale", "0.05", "--smoke", "-o", "runtime.device=cpu",
            "--run-dir", str(run), *extra]


def _spawn(argv: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "corelib.cli", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


def _wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _epochs(run: Path, stage: str = "pretrain") -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / stage / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_second_pretrain_on_the_same_run_dir_is_refused_and_the_first_keeps_its_files(synthetic_small, tmp_path):
    """Before: both processes exited 0 and metrics.jsonl / best.pt / last.pt mixed the two runs."""
    root = str(synthetic_small["market_like"].parent)
    run = tmp_path / "run"
    first = _spawn(_pretrain_argv(root, run, "-o", "epochs=40"))
    try:
        _wait_for(lambda: (run / "pretrain" / "last.pt").is_file(),
                  what="the first run to start training")
        second = subprocess.run([sys.executable, "-m", "corelib.cli", *_pretrain_argv(root, run, "-o", "epochs=2")],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"in use by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert "one run owns a run directory" in second.stderr
        assert first.poll() is None  # the first is still training, untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    # the first run's files are its own: its config, consecutive epochs, checkpoints of its epochs
    assert "epochs: 40" in (run / "pretrain" / "config.yaml").read_text()
    epochs = _epochs(run)
    assert epochs == list(range(1, len(epochs) + 1))
    # the lock of the killed process is stale: the next run takes it over, says so, and resumes cleanly
    assert (run / LOCK_NAME).is_file() and held_lock(run) is None
    done = len(_epochs(run))  # epochs may change on resume: one more is enough to show it continues
    third = subprocess.run([sys.executable, "-m", "corelib.cli", *_pretrain_argv(root, run, "-o", f"epochs={done + 1}",
                                                                                "--resume")],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert third.returncode == 0, third.stderr
    assert f"taking over the stale lock of {run}" in third.stderr and f"process {first.pid}" in third.stderr
    assert _epochs(run) == list(range(1, done + 2)) and not (run / LOCK_NAME).exists()


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    with RunLock(tmp_path, what="pretrain pretrain") as lock:
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["what"] == "pretrain pretrain" and info["host"]
        assert held_lock(tmp_path)["pid"] == os.getpid()
        with RunLock(tmp_path):  # the same process, nested (train_style_models around its CycleGANs)
            pass
        assert lock.held and (tmp_path / LOCK_NAME).is_file()
        child = subprocess.run([sys.executable, "-c", "from corelib.ownership import RunLock; import sys; "
                                f"RunLock({str(tmp_path)!r}).acquire()"], capture_output=True, text=True, cwd=REPO)
        assert child.returncode != 0 and "RunDirBusyError" in child.stderr
        # a child started with the holder's environment works inside the lock (run-notebooks' chapters)
        inherited = subprocess.run([sys.executable, "-c", "from corelib.ownership import RunLock; "
                                    f"l = RunLock({str(tmp_path)!r}).acquire(); l.release(); print('ok')"],
                                   capture_output=True, text=True, cwd=REPO, env={**os.environ, **lock.environment()})
        assert inherited.returncode == 0 and "ok" in inherited.stdout, inherited.stderr
        assert (tmp_path / LOCK_NAME).is_file()  # the child did not remove its parent's lock
    assert not (tmp_path / LOCK_NAME).exists() and held_lock(tmp_path) is None


def test_a_busy_run_dir_is_refused_before_anything_is_written(tmp_path, monkeypatch, another_process_holds):
    from corelib.runtime import Runtime, StageRun

    with another_process_holds(tmp_path, "finetune") as pid:
        with pytest.raises(RunDirBusyError, match=f"in use by process {pid} .*\\(finetune\\)"):
            StageRun(tmp_path / "pretrain", PretrainCfg.smoke(), Runtime("cpu"), stage="pretrain", resume=False)
        assert not (tmp_path / "pretrain").exists()


@pytest.fixture(scope="module")
def finished_run(synthetic_small, tmp_path_factory):
    """A finished smoke pre-training run (2 epochs) made through the command line."""
    root = str(synthetic_small["market_like"].parent)
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(_pretrain_argv(root, run)) == 0
    return root, run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_a_rerun_without_resume_does_not_replace_a_finished_run(finished_run, capsys):
    """Before: best.pt, last.pt and metrics.jsonl were replaced by the new run without a word."""
    root, run = finished_run
    before = _snapshot(run / "pretrain")
    capsys.readouterr()
    assert main(_pretrain_argv(root, run, "-o", "lr=0.001")) == 2
    err = capsys.readouterr().err
    assert "already holds a pretrain run" in err and "--resume" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(run / "pretrain") == before


@pytest.mark.slow
def test_a_refused_resume_leaves_config_yaml_as_it_was(finished_run, capsys):
    """Before: config.yaml was rewritten with the refused recipe."""
    root, run = finished_run
    before = _snapshot(run / "pretrain")
    assert main(_pretrain_argv(root, run, "-o", "lr=0.001", "--resume")) == 2
    assert "trained with another recipe" in capsys.readouterr().err
    assert _snapshot(run / "pretrain") == before


@pytest.mark.slow
def test_a_refused_architecture_leaves_the_folder_as_it_was(synthetic_small, tmp_path):
    """A resume whose weights do not fit is refused after the lock, before config.yaml is written."""
    from corelib.data import build_dataset
    from corelib.errors import CheckpointError
    from corelib.runtime import save_checkpoint
    from corelib.training import pretrain

    source = build_dataset("market1501", synthetic_small["market_like"])
    cfg = PretrainCfg.smoke(epochs=1, iters_per_epoch=1)
    pretrain(cfg, source, tmp_path, progress=False)
    last = tmp_path / "pretrain" / "last.pt"
    import torch

    state = torch.load(last, weights_only=True)
    state["model"] = {k: v[:1] if v.dim() else v for k, v in state["model"].items()}  # another shape
    save_checkpoint(state, last)
    before = _snapshot(tmp_path / "pretrain")
    with pytest.raises(CheckpointError, match="written for another architecture"):
        pretrain(cfg.with_overrides({"epochs": 2}), source, tmp_path, resume=True, progress=False)
    assert _snapshot(tmp_path / "pretrain") == before
    assert not (tmp_path / LOCK_NAME).exists()  # released on the way out


@pytest.mark.slow
def test_overwrite_keeps_the_previous_run_aside(finished_run, tmp_path, capsys):
    import shutil

    root, shared = finished_run
    run = tmp_path / "run"
    shutil.copytree(shared, run)  # the module's finished run stays as it is for the other tests
    before = _snapshot(run / "pretrain")
    assert main(_pretrain_argv(root, run, "-o", "epochs=1", "--overwrite")) == 0
    kept = sorted(run.glob("pretrain.replaced-*"))
    assert len(kept) == 1 and _snapshot(kept[0]) == before
    assert "kept in" in capsys.readouterr().err
    assert _epochs(run) == [1] and "epochs: 1" in (run / "pretrain" / "config.yaml").read_text()


@pytest.mark.slow
def test_a_resumed_finished_run_changes_nothing(finished_run):
    root, run = finished_run
    before = _snapshot(run / "pretrain")
    assert main(_pretrain_argv(root, run, "--resume")) == 0
    assert _snapshot(run / "pretrain") == before


@pytest.mark.slow
def test_the_python_api_refuses_too(synthetic_small, tmp_path):
    from corelib.data import build_dataset
    from corelib.training import pretrain

    source = build_dataset("market1501", synthetic_small["market_like"])
    cfg = PretrainCfg.smoke(epochs=1, iters_per_epoch=1)
    pretrain(cfg, source, tmp_path, progress=False)
    with pytest.raises(RunExistsError, match="resume=True"):
        pretrain(cfg, source, tmp_path, progress=False)
    with pytest.raises(ConfigError):  # a refused recipe is a ConfigError, also through the API
        pretrain(cfg.with_overrides({"lr": 1.0}), source, tmp_path, resume=True, progress=False)


_KILL_IN_SAVE = r"""
import os, signal, sys
from pathlib import Path
import torch
import corelib.runtime.checkpoint as ck
import corelib.runtime.loop as loop

seen = {"last": 0, "target": None}
real_save, real_checkpoint = torch.save, loop.save_checkpoint

def checkpoint(state, path):
    seen["target"] = Path(path).name
    return real_checkpoint(state, path)

def save_then_die(obj, f, *a, **k):
    if seen["target"] == "last.pt":
        seen["last"] += 1
        if seen["last"] == int(os.environ["KILL_AT_LAST"]):
            if isinstance(f, (str, os.PathLike)):  # torch.save(state, path) counts too
                f = open(f, "wb")
            f.write(b"PK\x03\x04 half a checkpoint")  # what a kill mid-write leaves
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)

loop.save_checkpoint = checkpoint
ck.torch.save = save_then_die
from corelib.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_resumes_cleanly(synthetic_small, tmp_path):
    """SIGKILL inside the write of epoch 2's last.pt (after its best.pt): epoch 1's last.pt stays whole,
    the resume removes the temporary file and ends like a run that was never stopped."""
    root = str(synthetic_small["market_like"].parent)
    script = tmp_path / "kill_in_save.py"
    script.write_text(_KILL_IN_SAVE)
    killed = tmp_path / "killed"
    # die inside the second write of last.pt (epoch 2's)
    args = _pretrain_argv(root, killed, "-o", "epochs=3")
    proc = subprocess.run([sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "KILL_AT_LAST": "2"}, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = list((killed / "pretrain").glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1  # SIGKILL leaves the temporary file; last.pt itself is epoch 1's, intact
    import torch

    assert torch.load(killed / "pretrain" / "last.pt", weights_only=True)["epoch"] == 0
    assert main([*args, "--resume"]) == 0
    assert not list((killed / "pretrain").glob(".*.tmp")) and not (killed / LOCK_NAME).exists()
    straight = tmp_path / "straight"
    assert main(_pretrain_argv(root, straight, "-o", "epochs=3")) == 0
    a = torch.load(killed / "pretrain" / "last.pt", weights_only=True)
    b = torch.load(straight / "pretrain" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert [json.loads(x)["loss"] for x in (killed / "pretrain" / "metrics.jsonl").read_text().splitlines()] == \
        [json.loads(x)["loss"] for x in (straight / "pretrain" / "metrics.jsonl").read_text().splitlines()]


def test_run_notebooks_is_refused_on_a_run_dir_in_use(tmp_path, monkeypatch, another_process_holds):
    """Two `make demo`s (or a demo and a CLI stage) on one run directory: the second is refused
    before any chapter runs; the chapters of the first work inside its lock."""
    import papermill

    from corelib.notebooks import run_notebooks

    ran = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: ran.append(a))
    with another_process_holds(tmp_path, "run-notebooks") as pid:
        with pytest.raises(RunDirBusyError, match=f"in use by process {pid}"):
            run_notebooks(tmp_path, parameters={"SMOKE": True}, chapters=["00"])
        assert ran == []
    seen_env = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda *a, **k: seen_env.append(os.environ.get("COREREID_RUN_LOCK")))
    run_notebooks(tmp_path, parameters={"SMOKE": True}, chapters=["00"])  # the stale lock is taken over
    assert seen_env and seen_env[0].endswith("::" + seen_env[0].rsplit("::", 1)[1]) and LOCK_NAME in seen_env[0]
    assert "COREREID_RUN_LOCK" not in os.environ and not (tmp_path / LOCK_NAME).exists()
