"""Exceptions raised by corelib.

Every error names the thing that is wrong *and* the fix, so that a researcher who points the
workbench at a wrong folder reads what to do instead of a traceback from deep inside PIL or torch.

Each class is also the built-in exception a caller would expect (``InvalidInputError`` is a
``ValueError``, ``MissingStageError`` a ``FileNotFoundError`` ...), so ``except ValueError`` keeps
working; the command line turns every :class:`CorelibError` into one line and exit status 2,
while an unexpected error keeps its traceback.
"""

from __future__ import annotations


class CorelibError(Exception):
    """Base class of every error corelib raises on purpose."""


class DatasetRootError(CorelibError, FileNotFoundError):
    """A dataset root is missing, or does not have the layout its loader expects."""


class CorruptImageError(CorelibError, OSError):
    """An image file exists but cannot be decoded."""


class ManifestError(CorelibError, ValueError):
    """A data manifest is malformed, unknown, or disagrees with a dataset copy."""


class UnknownNameError(CorelibError, KeyError):
    """A registry lookup (dataset, preset, model ...) got a name it does not know."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class ConfigError(CorelibError, ValueError):
    """A configuration file or override names an unknown field or gives a value of the wrong type."""


class InvalidInputError(CorelibError, ValueError):
    """A value handed to the library is out of range, inconsistent or empty (lengths that disagree,
    NaN features, k larger than the number of samples ...)."""


class InvalidTypeError(CorelibError, TypeError):
    """An argument of the wrong kind (a NumPy array where a tensor is needed, a network that is not
    a mean teacher ...)."""


class DeviceError(CorelibError, RuntimeError):
    """A device was asked for that this machine does not have."""


class StyleError(CorelibError, ValueError):
    """Style transfer asked of data that cannot give it (no cameras, no target, models of another source)."""


class MissingStageError(CorelibError, FileNotFoundError):
    """An earlier stage's output (style models, an enlarged set, a checkpoint) is not where it is expected."""


class CheckpointError(CorelibError, ValueError):
    """A checkpoint file cannot be used: empty, truncated, not a checkpoint, unsafe to unpickle,
    written by another stage or for another architecture."""


class UnsafePathError(CorelibError, ValueError):
    """A path read from a dataset's own files (a CSV, a manifest, a list file) points outside that
    dataset's root (``..``, an absolute path, a symbolic link)."""


class RunDirBusyError(CorelibError, RuntimeError):
    """Another live process holds the run directory's lock."""


class RunExistsError(CorelibError, FileExistsError):
    """A stage folder already holds a run and neither resume nor overwrite was asked for."""


class NotOwnedError(CorelibError, FileExistsError):
    """A command would delete or replace a folder that the workbench did not write."""


class MissingFileError(CorelibError, FileNotFoundError):
    """A file named in the settings (weights, a parameters file ...) does not exist."""


class MissingExtraError(CorelibError, ImportError):
    """An optional extra (onnx and onnxruntime for the ONNX export ...) is not installed; the message
    names the ``pip install`` that adds it."""


class WriteError(CorelibError, OSError):
    """The operating system refused a write: the disk is full, the folder is read-only or not ours to
    write, or a file sits where a folder is expected. ``errno`` is the refusal's own."""


class SweepFailed(CorelibError, RuntimeError):
    """Points of a sweep failed; every other point ran. ``records`` holds one record per point, the
    failed ones with their error and executed notebook."""

    def __init__(self, message: str, records: list) -> None:
        super().__init__(message)
        self.records = records


class UpstreamChangedError(CorelibError, RuntimeError):
    """A stage would resume on top of an upstream result (its source network, its style set) that
    changed since the stage started: continuing would mix two upstream runs."""


class Preempted(CorelibError, RuntimeError):
    """A training loop stopped because its job was asked to stop (a cluster's pre-timeout or
    preemption signal, :mod:`corelib.runtime.preemption`): its state is in ``last.pt``, and the same
    command with resume continues where it stopped. The command line exits with
    :data:`corelib.runtime.preemption.PREEMPTED_EXIT`."""
