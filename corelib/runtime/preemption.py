"""Stopping a training loop on request, so that a cluster job can checkpoint and be requeued.

A batch scheduler warns a job before its wall-time limit or a preemption with a signal (Slurm:
``--signal=USR2@90``, which submitit asks for). The workbench's job wrapper
(:class:`corelib.launch.JobCommand`) runs each stage, chapter or sweep point as a child process with
``COREREID_STOP_FILE`` set; on the signal it creates that file, and the loops, which ask
:func:`stop_requested` after every optimiser step and at every epoch's end, write their state and
raise :class:`~corelib.errors.Preempted`:

- pre-training writes a mid-epoch ``last.pt`` (the weights, the optimiser, every RNG and the
  position of every loader within its pass) from which a resumed run finishes with the weights
  of an uninterrupted one;
- fine-tuning and CycleGAN training give up the epoch in progress and keep the ``last.pt`` of the
  epoch before (their epochs restart from a clustering or a schedule state that is rebuilt from
  it), so a resume redoes that epoch exactly;
- at an epoch's end, ``last.pt`` is already written: the loop just stops.

The file (not only the signal) carries the request because the training may run in a process the
signal does not reach: a Jupyter kernel started by papermill, or a torchrun worker. A process that
does receive the signal itself sets the same flag (:func:`watch`, installed by the loops when
``COREREID_STOP_FILE`` is set), instead of dying of it, which is the default action of SIGUSR2.
Under torchrun the ranks agree on the step to stop at (:func:`stop_agreed`), so their checkpoints
and collectives stay in step. Without ``COREREID_STOP_FILE`` nothing is installed or polled.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from . import distributed as D

STOP_FILE_ENV = "COREREID_STOP_FILE"
"""The environment variable naming the file whose existence asks the loops to stop."""

PREEMPTED_EXIT = 75
"""Exit status of a command whose loop stopped on request with its state saved (EX_TEMPFAIL):
the job wrapper requeues it rather than recording a failure."""

STOP_SIGNALS = ("SIGUSR2",)
"""Signals that ask a loop to stop (Slurm's and submitit's pre-timeout signal)."""

_requested = False
_installed = False


def stop_file() -> Optional[Path]:
    """The stop-request file of this process's job, None outside a launcher job."""
    value = os.environ.get(STOP_FILE_ENV)
    return Path(value) if value else None


def _on_signal(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    global _requested
    _requested = True


def watch() -> bool:
    """Inside a launcher job: make the stop signals set the stop flag (once per process, from the
    main thread); returns whether this process is watched."""
    global _installed
    if stop_file() is None:
        return False
    if not _installed and threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, _on_signal)
        _installed = True
    return True


def stop_requested() -> bool:
    """Whether this process was asked to stop: the signal arrived, or the job's stop file exists."""
    path = stop_file()
    if path is None:
        return False
    return _requested or path.exists()


def stop_agreed(info: D.DistInfo) -> bool:
    """:func:`stop_requested` on every rank, agreed: True on all ranks when any rank was asked
    (outside a launcher job it is False without a collective)."""
    if stop_file() is None:
        return False
    asked = stop_requested()
    if not info.enabled:
        return asked
    flag = torch.tensor([int(asked)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def reset() -> None:
    """Forget a received signal (a job's next attempt in the same process; tests)."""
    global _requested
    _requested = False
