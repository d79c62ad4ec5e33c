"""What every training loop shares: where it runs, how it resumes, and how an epoch ends.

Pre-training, fine-tuning and CycleGAN training differ in their steps, not in their scaffolding:

- :class:`Runtime`: the process group (torchrun), the device, bf16 autocast, the memory layout,
  DDP wrapping and the gathers the losses need under DDP;
- :class:`StageRun`: one loop's folder (``config.yaml``, ``metrics.jsonl``, ``last.pt`` /
  ``best.pt``): it refuses to resume another recipe, writes the resolved config itself, and ends
  every epoch the same way: evaluate -> keep the best -> log -> full-state ``last.pt``;
- :func:`rng_state` / :func:`set_rng_state`: every RNG a loop draws from, as checkpoint values;
- :class:`LoaderCycle`: a fixed number of steps per epoch over a sampler that wraps around.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInputError, Preempted, RunExistsError
from ..ownership import RunLock, fingerprint, set_aside
from ..repro import resolve_device
from ..settings import read_mapping, save_config
from . import distributed as D
from . import preemption
from .checkpoint import (
    RESUME_FREE_FIELDS,
    EpochLog,
    check_resume,
    check_upstream,
    evaluation_due,
    holds_run,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)

PRECISIONS = ("auto", "fp32", "bf16")


def rng_state(generators: Sequence[Optional[torch.Generator]] = ()) -> dict:
    """Global RNG states (torch, numpy, python) plus those of the loaders' / samplers' own generators."""
    # only tensors and plain values: checkpoints are read back with weights_only=True
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
        "generators": [g.get_state() if g is not None else None for g in generators],
    }


def set_rng_state(state: dict, generators: Sequence[Optional[torch.Generator]] = ()) -> None:
    """Restore what :func:`rng_state` saved (the generators in the same order)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    for g, saved in zip(generators, state.get("generators", [])):
        if g is not None and saved is not None:
            g.set_state(saved)


def autocast(precision: str, device: torch.device):
    """bf16 autocast for ``precision`` "bf16", or "auto" on CUDA; a no-op context for "fp32"."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def training_device(name: str, info: D.DistInfo) -> torch.device:
    """``resolve_device(name)``, or ``cuda:LOCAL_RANK`` for a CUDA process under torchrun."""
    device = resolve_device(name)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


class Runtime:
    """Device, precision and process group of one loop.

    Args:
        device: "auto", "cpu" or "cuda[:N]" (under torchrun a CUDA process takes its local rank's GPU).
        precision: "auto" (bf16 on CUDA), "fp32" or "bf16".
        channels_last: NHWC for the convolutions (:meth:`place` and :meth:`images`).
        dist_backend: process-group backend under torchrun ("auto", "nccl", "gloo").
    """

    def __init__(self, device: str = "auto", precision: str = "auto", *, channels_last: bool = False,
                 dist_backend: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise InvalidInputError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        self.info = D.init_distributed(dist_backend)
        self.device = training_device(device, self.info)
        self.precision, self.channels_last = precision, channels_last

    @classmethod
    def from_cfg(cls, cfg) -> "Runtime":
        """From a :class:`~corelib.config.RuntimeCfg`."""
        return cls(cfg.device, cfg.precision, channels_last=cfg.channels_last, dist_backend=cfg.dist_backend)

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): it evaluates and writes."""
        return self.info.is_main

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return autocast(self.precision, self.device)

    def place(self, module: nn.Module) -> nn.Module:
        """``module`` on the device, in the memory layout (once, before DDP registers its parameters)."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch on the device, in the memory layout."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def wrap(self, module: nn.Module, **ddp_kwargs: Any) -> nn.Module:
        """``module`` in DistributedDataParallel under torchrun, else ``module`` itself.

        Call it again whenever the trainable parameters change (a classifier resized): DDP knows
        only the parameters it saw when it was built.
        """
        if not self.info.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, **ddp_kwargs)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order, gradients flowing back to each rank's part."""
        return D.gather_with_grad(x, self.info)

    def gather_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's labels in rank order (no gradient)."""
        return D.gather_tensor(x.to(self.device), self.info)

    def barrier(self) -> None:
        D.barrier(self.info)


class LoaderCycle:
    """Endless iteration over a loader whose sampler is re-seeded at every wrap.

    The training loops take a fixed number of steps per epoch, longer or shorter than one pass of
    the identity sampler; pass ``w`` of epoch ``e`` draws with sampler epoch ``base_epoch + w``
    (a sampler without ``set_epoch``, such as a seeded ``RandomSampler``, draws from its own
    generator instead).

    :meth:`state` and :meth:`restore` put a cycle back where it was within a pass (a mid-epoch
    checkpoint): the generators the pass's iterator draws from are recorded just before it is
    made, and a restored cycle makes the same iterator and replays the batches already taken, so
    every later batch, augmentation and worker seed is the one an uninterrupted run draws.
    """

    def __init__(self, loader, sampler, base_epoch: int) -> None:
        self.loader, self.sampler, self.base, self.wrap, self.it = loader, sampler, base_epoch, 0, None
        self.taken = 0  # batches taken from the current pass
        self._before: list = []  # the generators' states just before the current pass's iterator
        self._generators = [g for g in (getattr(loader, "generator", None), getattr(sampler, "generator", None))
                            if g is not None]

    def _new_pass(self) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.base + self.wrap)
        self._before = [g.get_state() for g in self._generators]
        self.wrap += 1
        self.taken = 0
        self.it = iter(self.loader)

    def next(self):
        batch = next(self.it, None) if self.it is not None else None
        if batch is None:
            self._new_pass()
            batch = next(self.it, None)
        if batch is None:  # a whole pass gave no complete batch: waiting would never end
            raise InvalidInputError(f"a pass of the sampler ({len(self.sampler)} images: num_instances per identity or "
                             f"cluster) fills no batch of {getattr(self.loader.batch_sampler, 'batch_size', '?')}: "
                             f"too few identities (or clusters, or too many outliers) for this batch_size; lower "
                             f"batch_size or keep more images")
        self.taken += 1
        return batch

    def state(self) -> dict:
        """Where the cycle stands: passes begun, batches taken from the current one, and the
        generator states its iterator was made from (checkpoint values)."""
        return {"wrap": self.wrap, "taken": self.taken, "generators": list(self._before)}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state`: the current pass's iterator is made again from the same
        generator states and the batches already taken are loaded again and dropped (no network
        runs on them). The caller restores the global RNGs afterwards (:func:`set_rng_state`),
        since loading in the main process draws from them."""
        wrap = int(state["wrap"])
        if wrap == 0:
            return
        self.wrap = wrap - 1
        for g, saved in zip(self._generators, state["generators"]):
            g.set_state(saved)
        self._new_pass()
        for _ in range(int(state["taken"])):
            if next(self.it, None) is None:
                break
            self.taken += 1


class StageRun:
    """One training loop's folder and bookkeeping: ownership, resume, ``config.yaml``, the log, the
    epoch end.

    Files in ``out_dir``: ``config.yaml`` (the resolved settings), ``metrics.jsonl`` (one line per
    epoch), ``last.pt`` (full state after every epoch) and, when the loop evaluates, ``best.pt``.

    Use it as a context manager around the loop::

        with StageRun(run_dir / "pretrain", cfg, rt, stage="pretrain", resume=resume) as run:
            ...          # build the model, load run.state when run.resumed
            run.begin()  # every check has passed: config.yaml and metrics.jsonl are written from here
            for epoch in range(run.start, cfg.epochs): ...

    Construction takes the run directory's lock (:class:`~corelib.ownership.RunLock` on
    ``out_dir.parent``, rank 0) and checks what the folder holds, before anything is written: a
    folder that holds a run (``last.pt``, ``best.pt`` or logged epochs) is continued with
    ``resume``, set aside to ``<out_dir>.replaced-<time>`` with ``overwrite`` (never deleted), and
    otherwise refused. ``config.yaml`` and ``metrics.jsonl`` are written only by :meth:`begin`,
    which the loop calls once its own checks (weights that fit, a labeller that accepts K ...)
    have passed, so a refused run leaves the folder as it was.

    Args:
        out_dir: the loop's folder, e.g. ``RUN_DIR/pretrain``.
        cfg: the settings dataclass (saved in every checkpoint and as ``config.yaml``).
        runtime: where the loop runs (rank 0 writes).
        stage: the name recorded in the checkpoints ("pretrain", "finetune", "style").
        resume: continue from ``last.pt`` when it exists.
        overwrite: set an existing run aside and start again (ignored with ``resume`` when
            ``last.pt`` exists).
        free: dotted config fields a resumed run may change.
        model_record: ``{"model_name": ..., "model_args": ...}`` saved with the weights, so that
            :func:`corelib.load_trained_model` can rebuild the network (an attribute: fine-tuning
            updates it when the number of clusters changes).
        upstream: what the stage is built from, ``{what: path}`` (``{"source network":
            RUN_DIR/pretrain/best.pt}``): each one's :func:`~corelib.ownership.fingerprint` is saved in
            every checkpoint, and a resume on an upstream that changed since is refused.

    Raises:
        RunDirBusyError: another process is running in the same run directory.
        RunExistsError: the folder holds a run and neither ``resume`` nor ``overwrite`` was asked.
        ConfigError: ``last.pt`` was trained with another recipe.
        CheckpointError: ``last.pt`` cannot be read or was written by another stage.
        UpstreamChangedError: ``last.pt`` was trained from another version of an upstream result.
    """

    def __init__(self, out_dir: Union[str, Path], cfg, runtime: Runtime, *, stage: str, resume: bool,
                 overwrite: bool = False, free: frozenset = RESUME_FREE_FIELDS,
                 model_record: Optional[Mapping[str, Any]] = None,
                 upstream: Optional[Mapping[str, Union[str, Path]]] = None) -> None:
        self.out = Path(out_dir)
        self.upstream = {what: {"path": str(Path(path).resolve()), "sha256": fingerprint(path)}
                         for what, path in (upstream or {}).items()}
        self.cfg, self.runtime, self.stage = cfg, runtime, stage
        self.model_record = dict(model_record or {})
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        self.state: Optional[dict] = None
        self.free = free
        self.set_aside: Optional[Path] = None
        self.log: Optional[EpochLog] = None
        preemption.watch()  # inside a launcher job, the stop signal asks this loop to stop instead of killing it
        self.lock = RunLock(self.out.parent, what=f"{stage} {self.out.name}") if runtime.is_main else None
        if self.lock is not None:
            self.lock.acquire()
        try:
            self._check_folder(resume, overwrite)
        except BaseException:
            self.close()
            raise
        self.start = int(self.state["epoch"]) + 1 if self.state else 0
        self.best_score = float(self.state.get("best_mAP", -1.0)) if self.state else -1.0
        self.best_epoch = int(self.state.get("best_epoch", -1)) if self.state else -1

    def _check_folder(self, resume: bool, overwrite: bool) -> None:
        if self.runtime.is_main and self.out.is_dir():  # a run killed mid-write leaves its temporary file
            remove_stale_temporaries(self.out)
        held = holds_run(self.out)
        if resume and self.last_path.is_file():
            self.state = load_checkpoint(self.last_path, map_location=self.runtime.device, stage=self.stage)
            # before the weights: another recipe need not even fit them
            check_resume(self.state.get("cfg"), self.cfg, self.last_path, free=self.free)
            check_upstream(self.state.get("upstream"), self.upstream, self.out)
        elif held and resume and not overwrite:
            # nothing to continue (killed before its first last.pt): the same recipe starts again
            saved = self.out / "config.yaml"
            check_resume(read_mapping(saved) if saved.is_file() else None, self.cfg, saved, free=self.free)
            self._overwrite = False
            return
        elif held and not overwrite:
            raise RunExistsError(
                f"{self.out} already holds a {self.stage} run ({held}); nothing was changed. Continue it with "
                f"resume=True (--resume, RESUME = True), replace it with overwrite=True (--overwrite: the old run "
                f"is kept as {self.out.name}.replaced-<time>), or use another run directory")
        self._overwrite = bool(held) and self.state is None and overwrite

    def __enter__(self) -> "StageRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the run directory (the loop is over, or stopped)."""
        if self.lock is not None:
            self.lock.release()

    def begin(self) -> None:
        """Every check has passed: set an old run aside (``overwrite``), write ``config.yaml`` and open
        ``metrics.jsonl`` (cut back to the epochs a resumed checkpoint holds)."""
        if self.runtime.is_main:
            if self._overwrite and self.out.exists():
                self.set_aside = set_aside(self.out)
                print(f"corelib: the previous {self.stage} run is kept in {self.set_aside}", file=sys.stderr)
            self.out.mkdir(parents=True, exist_ok=True)
        # the log before config.yaml: a damaged one is refused with the folder as it was
        self.log = EpochLog(self.out / "metrics.jsonl", keep=self.start, write=self.runtime.is_main)
        if self.runtime.is_main:
            save_config(self.cfg, self.out / "config.yaml")
        self.runtime.barrier()

    @property
    def resumed(self) -> bool:
        return self.state is not None

    @property
    def partial(self) -> Optional[dict]:
        """The mid-epoch position of a resumed ``last.pt`` written by :meth:`stop_mid_epoch`
        (``epoch``, ``step`` and what the loop saved with them), None when it ended an epoch."""
        return self.state.get("partial") if self.state else None

    def stop_requested(self) -> bool:
        """Whether the job asked this loop to stop (:mod:`~corelib.runtime.preemption`; every rank
        agrees under torchrun). False, without any collective, outside a launcher job."""
        return preemption.stop_agreed(self.runtime.info)

    def stop_mid_epoch(self, epoch: int, step: int, *, model: nn.Module, last: Mapping[str, Any]) -> None:
        """Write a mid-epoch ``last.pt`` (the loop's state after ``step`` steps of the 0-based
        ``epoch``, as ``partial``) and raise :class:`~corelib.errors.Preempted`. Its ``epoch`` is the
        last finished one (``epoch - 1``), the one the log ends with; its weights are those after
        ``step``. A resumed loop reads :attr:`partial` and continues at ``step``."""
        if self.runtime.is_main:
            save_checkpoint({**self._record(model, epoch - 1), "best_mAP": self.best_score,
                             "best_epoch": self.best_epoch, **dict(last), "partial": {"epoch": epoch, "step": step,
                                                                                      **dict(last.get("partial", {}))}},
                            self.last_path)
        self.runtime.barrier()
        raise Preempted(f"{self.stage} stopped on request at step {step} of epoch {epoch + 1}; its state is in "
                        f"{self.last_path}: the same command with resume continues from there")

    def stop_epoch(self, epoch: int, *, finished: bool) -> None:
        """Raise :class:`~corelib.errors.Preempted` when the job asked to stop: after a finished
        epoch (its ``last.pt`` is written), or giving up the epoch in progress (``last.pt`` still holds
        the one before, from which a resume redoes this epoch exactly)."""
        if not self.stop_requested():
            return
        done = f"after epoch {epoch + 1}" if finished else f"during epoch {epoch + 1}, which a resume redoes"
        raise Preempted(f"{self.stage} stopped on request {done}; {self.last_path} holds its state: the same "
                        f"command with resume continues from there")

    def _record(self, model: nn.Module, epoch: int) -> dict:
        return {"stage": self.stage, "cfg": self.cfg.to_dict(), **self.model_record, "upstream": self.upstream,
                "model": model.state_dict(), "epoch": epoch}

    def end_epoch(self, epoch: int, record: dict, t0: float, *, model: nn.Module,
                  evaluate: Optional[Callable[[], tuple[dict, float]]] = None,
                  last: Optional[Mapping[str, Any]] = None, best: Optional[Mapping[str, Any]] = None,
                  after_log: Optional[Callable[[dict], None]] = None) -> None:
        """Evaluate (when due) -> keep the best -> log -> write ``last.pt``; rank 0 only, then a barrier.

        Args:
            epoch: the 0-based epoch that just ended.
            record: its log line so far (updated in place with the scores and ``seconds``).
            t0: ``time.perf_counter()`` at the start of the epoch.
            model: the network whose ``state_dict`` is saved.
            evaluate: returns ``(scores to log, the score the best checkpoint is chosen on)``.
            last: further entries of ``last.pt`` (optimiser, RNG states, pseudo-labels ...).
            best: further entries of ``best.pt``.
            after_log: called with the finished record (e.g. TensorBoard).
        """
        if self.log is None:
            self.begin()
        if self.runtime.is_main:
            if evaluate is not None and evaluation_due(epoch, self.cfg.eval_every, self.cfg.epochs):
                scores, score = evaluate()
                record.update(scores)
                if score > self.best_score:
                    self.best_score, self.best_epoch = score, epoch + 1
                    save_checkpoint({**self._record(model, epoch), "mAP": score, **dict(best or {})}, self.best_path)
            record["seconds"] = time.perf_counter() - t0
            self.log.append(record)
            if after_log is not None:
                after_log(record)
            save_checkpoint({**self._record(model, epoch), "best_mAP": self.best_score, "best_epoch": self.best_epoch,
                             **dict(last or {})}, self.last_path)
        self.runtime.barrier()
