"""Stopping a training loop on request (a cluster's pre-timeout signal) and resuming it exactly."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from corelib.config import FinetuneCfg, PretrainCfg
from corelib.data import load_synthetic
from corelib.errors import Preempted
from corelib.runtime import LoaderCycle, preemption
from corelib.training import finetune, load_checkpoint, pretrain


class StopAt:
    """Answers the loops' "stop now?" with yes at the given calls (1-based), no otherwise."""

    def __init__(self, *calls: int) -> None:
        self.calls, self.count = set(calls), 0

    def __call__(self, info) -> bool:
        self.count += 1
        return self.count in self.calls


def _same_weights(a_path, b_path) -> None:
    a, b = load_checkpoint(a_path)["model"], load_checkpoint(b_path)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _untimed(history):
    return [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in history]


@pytest.mark.slow
def test_pretrain_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(synthetic_small, tmp_path, monkeypatch):
    src = load_synthetic(synthetic_small["market_like"])
    tgt = load_synthetic(synthetic_small["cuhk_like"])
    # 7 steps per epoch: the identity sampler and the target's BN loader both wrap within an epoch
    cfg = PretrainCfg.smoke(epochs=2, iters_per_epoch=7)
    straight = pretrain(cfg, src, tmp_path / "a", target=tgt, progress=False)

    # stopped after step 5 of epoch 1, then again after step 2 of epoch 2 (of the resumed run)
    monkeypatch.setattr(preemption, "stop_agreed", StopAt(5))
    with pytest.raises(Preempted, match=r"step 5 of epoch 1.*resume continues"):
        pretrain(cfg, src, tmp_path / "b", target=tgt, progress=False)
    saved = load_checkpoint(tmp_path / "b" / "pretrain" / "last.pt")
    assert saved["epoch"] == -1 and saved["partial"]["epoch"] == 0 and saved["partial"]["step"] == 5
    assert (tmp_path / "b" / "pretrain" / "metrics.jsonl").read_text() == ""  # no epoch finished yet
    monkeypatch.setattr(preemption, "stop_agreed", StopAt(2 + 2))  # epoch 1: step 6 and its end; epoch 2: after step 2
    with pytest.raises(Preempted, match="step 2 of epoch 2"):
        pretrain(cfg, src, tmp_path / "b", target=tgt, resume=True, progress=False)
    monkeypatch.setattr(preemption, "stop_agreed", StopAt())
    resumed = pretrain(cfg, src, tmp_path / "b", target=tgt, resume=True, progress=False)
    _same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    assert _untimed(resumed.history) == _untimed(straight.history)


@pytest.mark.slow
def test_finetune_gives_up_the_epoch_in_progress_and_redoes_it(synthetic_small, tmp_path, monkeypatch):
    src = load_synthetic(synthetic_small["market_like"])
    tgt = load_synthetic(synthetic_small["cuhk_like"])
    pretrain(PretrainCfg.smoke(), src, tmp_path / "a", progress=False)
    source = tmp_path / "a" / "pretrain" / "best.pt"
    cfg = FinetuneCfg.smoke(epochs=2)
    straight = finetune(cfg, tgt, tmp_path / "a", progress=False)
    monkeypatch.setattr(preemption, "stop_agreed", StopAt(cfg.iters_per_epoch + 2))  # step 2 of epoch 2
    with pytest.raises(Preempted, match="during epoch 2, which a resume redoes"):
        finetune(cfg, tgt, tmp_path / "b", source_checkpoint=source, progress=False)
    assert load_checkpoint(tmp_path / "b" / "finetune" / "last.pt")["epoch"] == 0  # epoch 1's
    monkeypatch.setattr(preemption, "stop_agreed", StopAt())
    resumed = finetune(cfg, tgt, tmp_path / "b", source_checkpoint=source, resume=True, progress=False)
    _same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    assert _untimed(resumed.history) == _untimed(straight.history)


def test_loader_cycle_restores_mid_pass(tmp_path):
    data = torch.arange(10.0)
    order = torch.Generator().manual_seed(3)
    sampler = torch.utils.data.RandomSampler(data, generator=order)
    loader = torch.utils.data.DataLoader(data, batch_size=3, sampler=sampler, drop_last=True,
                                         generator=torch.Generator().manual_seed(5))
    straight = LoaderCycle(loader, sampler, 0)
    expected = [straight.next().tolist() for _ in range(8)]  # 3 batches a pass: wraps twice
    cycle = LoaderCycle(loader, sampler, 0)
    order.manual_seed(3)
    loader.generator.manual_seed(5)
    head = [cycle.next().tolist() for _ in range(4)]
    state = cycle.state()
    assert state["wrap"] == 2 and state["taken"] == 1
    for g in (order, loader.generator):  # whatever drew from them since: the state holds the pass's start
        g.manual_seed(99)
    again = LoaderCycle(loader, sampler, 0)
    again.restore(state)
    assert head + [again.next().tolist() for _ in range(4)] == expected


def test_stop_request_only_inside_a_job(tmp_path, monkeypatch):
    monkeypatch.delenv(preemption.STOP_FILE_ENV, raising=False)
    assert not preemption.watch() and not preemption.stop_requested()
    stop = tmp_path / "stop"
    monkeypatch.setenv(preemption.STOP_FILE_ENV, str(stop))
    previous = signal.getsignal(signal.SIGUSR2)
    preemption.reset()
    try:
        assert preemption.watch() and not preemption.stop_requested()
        stop.touch()
        assert preemption.stop_requested()
        stop.unlink()
        os.kill(os.getpid(), signal.SIGUSR2)  # the signal sets the flag instead of ending the process
        assert preemption.stop_requested()
    finally:
        preemption.reset()
        signal.signal(signal.SIGUSR2, previous)
        preemption._installed = False


def test_preempted_exit_status_of_the_command_line(tmp_path, monkeypatch, synthetic_small):
    pytest.importorskip("yaml")
    from corelib import cli

    def stop(*args, **kwargs):
        raise Preempted("pretrain stopped on request at step 1 of epoch 1")

    monkeypatch.setattr(cli, "pretrain", stop)
    code = cli.main(["pretrain", "--source", "market_like", str(synthetic_small["market_like"].parent), "--smoke",
                     "--run-dir", str(tmp_path)])
    assert code == preemption.PREEMPTED_EXIT
    json.dumps(code)


def _pretrain_two_processes(root, run_dir, env_extra=None):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "corelib",
           "pretrain", "--source", "market_like", str(root), "--scale", "0.05", "--smoke", "--run-dir", str(run_dir),
           "-o", "runtime.device=cpu", "-o", "iters_per_epoch=4", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **(env_extra or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_two_processes_agree_on_the_step_to_stop_at_and_resume(synthetic_small, tmp_path):
    root = synthetic_small["market_like"].parent
    straight = _pretrain_two_processes(root, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    stop = tmp_path / "stop"
    stop.touch()  # asked from the start: both ranks stop after their first step, neither hangs in a collective
    stopped = _pretrain_two_processes(root, tmp_path / "job", {preemption.STOP_FILE_ENV: str(stop)})
    assert stopped.returncode != 0 and "stopped on request at step 1 of epoch 1" in stopped.stderr
    assert load_checkpoint(tmp_path / "job" / "pretrain" / "last.pt")["partial"]["step"] == 1
    resumed = _pretrain_two_processes(root, tmp_path / "job")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_weights(tmp_path / "straight" / "pretrain" / "last.pt", tmp_path / "job" / "pretrain" / "last.pt")
