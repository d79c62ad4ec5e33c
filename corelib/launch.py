"""Launchers: where a sweep point, a set of chapters or a training stage runs, here or on a Slurm cluster.

Every launcher runs the same thing, a ``corelib`` command line (``corelib run-point POINT``,
``corelib pretrain ...``), so a job does exactly what the command does on a workstation:

- ``local``: in this process, one after another (what the commands always did);
- ``submitit-local``: each command as a job of submitit's local executor, a process of this machine,
  up to ``array_parallelism`` at once; the same job code as on a cluster (pickled submission,
  signals, requeue), which is what the tests run;
- ``slurm``: each command as a Slurm job through submitit, several as one job array
  (``--array=0-N%P``); the submitting command returns once the jobs are queued.

**The job wrapper** (:class:`JobCommand`) runs the command as a child process with its output in
``LOG_DIR/attempt-<n>.log`` and records the job in ``LOG_DIR/job.json`` (state, job id, attempt,
host, the log). Slurm warns a job ``signal_delay_s`` seconds before its time limit, and a
preempted job at once, with SIGUSR2; submitit then calls :meth:`JobCommand.checkpoint`, which asks
the command to stop (:mod:`corelib.runtime.preemption`: the loops write ``last.pt`` and exit with
:data:`~corelib.runtime.preemption.PREEMPTED_EXIT`), waits up to ``grace_s`` for it, and hands
submitit the same command with ``--resume`` to requeue: the continuation starts where the stop
left off, and its result is the uninterrupted run's.

**Nothing in a job reaches the network**: the job exports ``HF_HUB_OFFLINE=1`` and ``COREREID_OFFLINE=1``
(:data:`corelib.paths.OFFLINE_ENV`: no download is tried) and passes on
``COREREID_DATA`` and ``TORCH_HOME`` as they are where the job is submitted; weights and datasets
must be on storage the nodes read (README, "Running on a cluster").

submitit is an optional extra (``pip install -e ".[slurm]"``), imported only when a job is
submitted or its script written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .errors import ConfigError, MissingExtraError, UnknownNameError
from .paths import OFFLINE_ENV as OFFLINE_VARIABLE
from .paths import atomic_write_text
from .runtime.preemption import PREEMPTED_EXIT, STOP_FILE_ENV

WRITTEN_BY = "corelib.launch"
"""The ``written_by`` of a job record (``job.json``)."""

JOB_RECORD = "job.json"
SUBMITTED_RECORD = "submitted.json"

LAUNCHERS: dict[str, str] = {
    "local": "in this process, one command after another",
    "submitit-local": "submitit's local executor: one process of this machine per command, array_parallelism at once",
    "slurm": "a Slurm job per command through submitit, several as one job array",
}
"""The launchers by name, with what each does (``--launcher`` lists them)."""

IN_FLIGHT = ("pending", "running", "requeued")
"""Job states of a command that is queued or running: not submitted again."""

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", OFFLINE_VARIABLE: "1"}
"""Set in every job: timm and huggingface_hub never try the network, nor does corelib (missing ImageNet
weights are an error naming where to put them, not a download or a random trunk)."""

PASSED_ENV = ("COREREID_DATA", "TORCH_HOME")
"""Passed on to every job as they are where it is submitted (where datasets and weights are)."""


def list_launchers() -> list[str]:
    return list(LAUNCHERS)


def _minutes(value: Any) -> int:
    """Slurm's time forms as minutes: ``90``, ``"90"``, ``"HH:MM:SS"``, ``"MM:SS"``, ``"D-HH[:MM[:SS]]"``."""
    if isinstance(value, bool):
        raise ConfigError(f"launcher time {value!r}: give minutes (240) or Slurm's form (04:00:00, 1-12:00:00)")
    if isinstance(value, (int, float)):
        minutes = int(value)
    else:
        text = str(value).strip()
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not match:
            raise ConfigError(f"launcher time {value!r}: give minutes (240) or Slurm's form (04:00:00, 1-12:00:00)")
        days, a, b, c = match.groups()
        if days is not None:  # D-HH[:MM[:SS]]
            minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + (1 if c and int(c) else 0)
        elif c is not None:  # HH:MM:SS
            minutes = int(a) * 60 + int(b) + (1 if int(c) else 0)
        elif b is not None:  # MM:SS
            minutes = int(a) + (1 if int(b) else 0)
        else:
            minutes = int(a)
    if minutes < 1:
        raise ConfigError(f"launcher time {value!r}: a job needs at least one minute")
    return minutes


@dataclass
class LauncherCfg:
    """Where and with what resources the commands run (``--launcher ...`` or a sweep file's
    ``launcher:`` block; the command line's options win).

    Attributes:
        launcher: a name of :data:`LAUNCHERS`.
        partition: Slurm partition (None: the cluster's default).
        time: the wall-time limit of one job, minutes or Slurm's ``HH:MM:SS`` / ``D-HH:MM:SS``; a
            job that reaches it is requeued and resumes (``max_requeues`` times at most).
        gpus_per_job: GPUs of one job; above 1 a training stage runs under torchrun on all of them
            (chapters and sweep points use one device: run them as more jobs instead).
        cpus_per_gpu: CPU cores per GPU (per job when it has no GPU).
        mem: memory of one job in Slurm's form (``64G``); None: the partition's default.
        array_parallelism: jobs of one submission that run at once.
        signal_delay_s: Slurm's warning before the time limit (``--signal=USR2@<s>``).
        grace_s: how long the wrapper waits, after the warning, for the command to save and stop
            before it ends it (the last epoch's ``last.pt`` is kept either way).
        max_requeues: time limits a job may reach and still be requeued.
        extra: more ``sbatch`` options, ``{"account": "abc", "constraint": "a100"}``.
        setup: shell lines run in the job before the command (``module load ...``, staging a
            dataset to node-local disk, ``export COREREID_DATA=$TMPDIR/data``).
        wait: wait for the jobs to end (always for ``submitit-local``; Slurm jobs are left queued).
    """

    launcher: str = "local"
    partition: Optional[str] = None
    time: Union[int, str] = "24:00:00"
    gpus_per_job: Optional[int] = None
    cpus_per_gpu: int = 8
    mem: Optional[str] = None
    array_parallelism: int = 16
    signal_delay_s: int = 120
    grace_s: int = 90
    max_requeues: int = 10
    extra: dict = field(default_factory=dict)
    setup: list = field(default_factory=list)
    wait: bool = False

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise UnknownNameError(f"launcher {self.launcher!r} is unknown; choose one of {', '.join(LAUNCHERS)}")
        self.minutes = _minutes(self.time)
        for name in ("cpus_per_gpu", "array_parallelism", "signal_delay_s", "grace_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"launcher {name} must be a positive whole number, got {value!r}")
        if isinstance(self.max_requeues, bool) or not isinstance(self.max_requeues, int) or self.max_requeues < 0:
            raise ConfigError(f"launcher max_requeues must be 0 or more, got {self.max_requeues!r}")
        if self.gpus_per_job is not None and (isinstance(self.gpus_per_job, bool) or
                                              not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0):
            raise ConfigError(f"launcher gpus_per_job must be 0 or more, got {self.gpus_per_job!r}")
        if self.grace_s >= self.signal_delay_s:
            raise ConfigError(f"launcher grace_s ({self.grace_s}) must be below signal_delay_s ({self.signal_delay_s}): "
                              f"the command must stop before Slurm ends the job")
        if not isinstance(self.extra, dict) or not isinstance(self.setup, list):
            raise ConfigError("launcher extra is a mapping of sbatch options (account: abc) and setup a list of "
                              "shell lines")

    @property
    def gpus(self) -> int:
        """GPUs per job: as given, else 1 on Slurm and 0 for the local executors."""
        if self.gpus_per_job is not None:
            return self.gpus_per_job
        return 1 if self.launcher == "slurm" else 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "launcher") -> "LauncherCfg":
        """From a sweep file's ``launcher:`` block (unknown keys refused, naming the known ones)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: a launcher block is a mapping such as {{launcher: slurm, partition: gpu}}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown launcher settings {unknown}; known: {', '.join(sorted(known))}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
# the job record


def read_job(log_dir: Union[str, Path]) -> Optional[dict]:
    """What is known of a command's job: the submission (``LOG_DIR/submitted.json``, written where
    it was submitted) under the job's own record (``LOG_DIR/job.json``, written by the job); state
    ``pending`` while the job has not started. None when it was never submitted."""
    submitted, job = _read_json(Path(log_dir) / SUBMITTED_RECORD), _read_json(Path(log_dir) / JOB_RECORD)
    if job is not None:
        return {**(submitted or {}), **job}
    return {**submitted, "state": "pending"} if submitted is not None else None


def _read_json(path: Path) -> Optional[dict]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("written_by") == WRITTEN_BY else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_job(log_dir: Path, **values: Any) -> dict:
    """Update the job's own record (only the job writes ``job.json``; the submitter writes
    ``submitted.json``, so neither overwrites the other)."""
    record = {**(_read_json(log_dir / JOB_RECORD) or {}), **values, "written_by": WRITTEN_BY, "updated": _now()}
    log_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(log_dir / JOB_RECORD, json.dumps(record, indent=2) + "\n")
    return record


def _before_submission(log_dir: Path) -> None:
    """A new submission of the command: the last job's record is kept as ``job.previous.json``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    if _read_json(log_dir / JOB_RECORD) is not None:
        os.replace(log_dir / JOB_RECORD, log_dir / "job.previous.json")
    if _read_json(log_dir / SUBMITTED_RECORD) is not None:
        (log_dir / SUBMITTED_RECORD).unlink()


def _record_submission(command: "JobCommand", job_id: str, launcher: str) -> None:
    log_dir = Path(command.log_dir)
    atomic_write_text(log_dir / SUBMITTED_RECORD, json.dumps(
        {"written_by": WRITTEN_BY, "name": command.name, "job_id": job_id, "launcher": launcher,
         "command": shlex.join(command.argv), "submitted": _now()}, indent=2) + "\n")


def last_lines(path: Optional[Union[str, Path]], n: int = 8) -> list[str]:
    """The last ``n`` lines of a log (none when it cannot be read)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]


def job_alive(record: Mapping[str, Any]) -> Optional[bool]:
    """Whether a running job's wrapper process lives: known only on the host that runs it (None elsewhere)."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return None
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# ------------------------------------------------------------------------------------------------
# the job wrapper


def _job_id() -> str:
    try:
        import submitit  # lazy: submitit is an optional extra, present in a submitit job

        return str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 - outside a submitit job (the local launcher, a plain sbatch script)
        return os.environ.get("SLURM_JOB_ID", f"local-{os.getpid()}")


class JobCommand:
    """One ``corelib`` command run as a job: the callable submitit pickles and calls.

    Args:
        argv: the command of the first attempt (``[python, -m, corelib, ...]``).
        resume_argv: the command of a requeued attempt (the same with ``--resume``).
        log_dir: the folder of the job's record and its attempts' logs.
        name: what the job is (a sweep point's name, ``pretrain``).
        grace_s: seconds the command gets to save and stop after the warning signal.
    """

    def __init__(self, argv: Sequence[str], resume_argv: Sequence[str], log_dir: Union[str, Path], name: str,
                 grace_s: float = 90.0) -> None:
        self.argv, self.resume_argv = list(argv), list(resume_argv)
        self.log_dir, self.name, self.grace_s = str(log_dir), name, float(grace_s)
        self.attempt = 1
        self._proc: Optional[subprocess.Popen] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None  # a process is no part of a submission
        return state

    @property
    def stop_path(self) -> Path:
        return Path(self.log_dir) / "stop-request"

    @property
    def log_path(self) -> Path:
        return Path(self.log_dir) / f"attempt-{self.attempt}.log"

    def __call__(self) -> int:
        log_dir = Path(self.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stop_path.unlink(missing_ok=True)  # an earlier attempt's request, not this one's
        argv = self.argv if self.attempt == 1 else self.resume_argv
        env = {**os.environ, **OFFLINE_ENV, STOP_FILE_ENV: str(self.stop_path)}
        _write_job(log_dir, name=self.name, state="running", job_id=_job_id(), attempt=self.attempt,
                   host=socket.gethostname(), pid=os.getpid(), command=shlex.join(argv), log=str(self.log_path),
                   returncode=None)
        with open(self.log_path, "ab") as log:
            # its own session: a signal sent to the job's process group is the wrapper's to handle
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            while self._proc.poll() is None:  # poll, not wait(): the signal handler waits on the same child
                time.sleep(0.5)
        code = self._proc.returncode
        if code == 0:
            _write_job(log_dir, state="finished", returncode=0)
            return 0
        state = "stopped" if code == PREEMPTED_EXIT else "failed"
        _write_job(log_dir, state=state, returncode=code)
        tail = "\n".join(last_lines(self.log_path))
        raise RuntimeError(f"{self.name}: `{shlex.join(argv)}` exited with status {code}; its log is "
                           f"{self.log_path}:\n{tail}")

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook on the warning signal: ask the command to stop, give it ``grace_s`` to write
        its state, and return the submission of the next attempt (with resume)."""
        from submitit.helpers import DelayedSubmission  # lazy: called by submitit, so it is installed

        self.stop_path.touch()
        proc, deadline = self._proc, time.monotonic() + self.grace_s
        while proc is not None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if proc is not None and proc.poll() is None:  # did not stop in time: last.pt of its last epoch stays
            # SIGINT first: the command's KeyboardInterrupt shuts its notebook kernel down with it
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 10
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                if proc.poll() is not None:
                    break
        _write_job(Path(self.log_dir), state="requeued", returncode=proc.poll() if proc is not None else None,
                   requeued_at_attempt=self.attempt)
        nxt = JobCommand(self.argv, self.resume_argv, self.log_dir, self.name, self.grace_s)
        nxt.attempt = self.attempt + 1
        return DelayedSubmission(nxt)


def corelib_argv(arguments: Sequence[str], *, gpus: int = 0) -> list[str]:
    """``python -m corelib ARGUMENTS`` with this interpreter; under torchrun on ``gpus`` GPUs when above 1."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m",
                "corelib", *arguments]
    return [sys.executable, "-m", "corelib", *arguments]


# ------------------------------------------------------------------------------------------------
# submission


def _submitit():
    try:
        import submitit  # lazy: submitit is an optional extra (pip install -e ".[slurm]")
    except ImportError as e:
        raise MissingExtraError(f"the submitit-local and slurm launchers need submitit ({e}); install the extra: "
                                f"pip install -e \".[slurm]\"") from e
    return submitit


def job_setup(cfg: LauncherCfg) -> list[str]:
    """The shell lines every job runs first: offline settings, the data and weight folders, then
    the user's own ``setup``."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in OFFLINE_ENV.items()]
    lines += [f"export {k}={shlex.quote(os.environ[k])}" for k in PASSED_ENV if os.environ.get(k)]
    return lines + [str(line) for line in cfg.setup]


def slurm_parameters(cfg: LauncherCfg, name: str = "corelib") -> dict:
    """submitit's Slurm executor parameters of ``cfg``: one task per job that sees all its GPUs
    (torchrun starts the processes), ``cpus_per_gpu`` cores per GPU."""
    params: dict = {"job_name": name, "time": cfg.minutes, "nodes": 1, "ntasks_per_node": 1,
                    "cpus_per_task": max(1, cfg.gpus) * cfg.cpus_per_gpu, "signal_delay_s": cfg.signal_delay_s,
                    "array_parallelism": cfg.array_parallelism, "stderr_to_stdout": True, "setup": job_setup(cfg)}
    if cfg.gpus:
        params["gpus_per_node"] = cfg.gpus
    if cfg.partition:
        params["partition"] = cfg.partition
    if cfg.mem:
        params["mem"] = cfg.mem
    if cfg.extra:
        params["additional_parameters"] = {str(k): v for k, v in cfg.extra.items()}
    return params


def submit(cfg: LauncherCfg, commands: Sequence[JobCommand], folder: Union[str, Path], *,
           name: str = "corelib") -> list[dict]:
    """Run ``commands`` as jobs of ``cfg.launcher`` (not ``local``): their records once submitted,
    or, when the launcher waits (``submitit-local``, or ``wait``), once they ended.

    submitit's own files (the pickled submissions) go to ``folder/%j``; each command's record and
    logs are in its ``log_dir``.
    """
    if cfg.launcher == "local":
        raise ConfigError("submit() runs jobs of submitit's launchers; the local launcher runs the command itself")
    if not commands:
        return []
    submitit = _submitit()
    folder = Path(folder) / "%j"
    if cfg.launcher == "slurm":
        executor = submitit.SlurmExecutor(folder, max_num_timeout=cfg.max_requeues)
        executor.update_parameters(**slurm_parameters(cfg, name))
        for c in commands:
            _before_submission(Path(c.log_dir))
        with executor.batch():  # several commands: one job array, array_parallelism at once
            jobs = [executor.submit(c) for c in commands]
        for c, job in zip(commands, jobs):
            _record_submission(c, str(job.job_id), cfg.launcher)
        if cfg.wait:
            _wait(jobs)
        return [read_job(c.log_dir) for c in commands]
    executor = submitit.LocalExecutor(folder, max_num_timeout=cfg.max_requeues)
    # the local executor hides the GPUs it is not given: all of this machine's unless told
    gpus = cfg.gpus_per_job if cfg.gpus_per_job is not None else _visible_gpus()
    executor.update_parameters(timeout_min=cfg.minutes, signal_delay_s=cfg.signal_delay_s, gpus_per_node=gpus,
                               setup=job_setup(cfg))
    queue, running = list(commands), []
    while queue or running:  # the local executor has no array: at most array_parallelism jobs at a time
        while queue and len(running) < cfg.array_parallelism:
            c = queue.pop(0)
            _before_submission(Path(c.log_dir))
            job = executor.submit(c)
            _record_submission(c, str(job.job_id), cfg.launcher)
            running.append(job)
        time.sleep(0.5)
        running = [j for j in running if not j.done()]
    return [read_job(c.log_dir) for c in commands]


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _wait(jobs: Sequence[Any]) -> None:
    for job in jobs:
        try:
            job.wait()
        except Exception:  # noqa: BLE001 - a failed job is in its record; the others are waited for
            pass
