"""The runtime every training loop stands on: checkpoints, torchrun/DDP, devices, resume, epoch ends.

It sits below :mod:`corelib.training` and :mod:`corelib.style` and imports neither, so the loops
of both share one implementation and no package imports the other's private helpers.
"""

from . import distributed
from .checkpoint import (
    RESUME_FREE_FIELDS,
    EpochLog,
    check_resume,
    evaluation_due,
    load_checkpoint,
    load_into,
    save_checkpoint,
)
from .loop import LoaderCycle, Runtime, StageRun, autocast, rng_state, set_rng_state, training_device

__all__ = [
    "EpochLog",
    "LoaderCycle",
    "RESUME_FREE_FIELDS",
    "Runtime",
    "StageRun",
    "autocast",
    "check_resume",
    "distributed",
    "evaluation_due",
    "load_checkpoint",
    "load_into",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "training_device",
]
