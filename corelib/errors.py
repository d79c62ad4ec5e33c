"""Exceptions raised by corelib.

Every error names the thing that is wrong *and* the fix, so that a researcher who points the
workbench at a wrong folder reads what to do instead of a traceback from deep inside PIL or torch.
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


class StyleError(CorelibError, ValueError):
    """Style transfer asked of data that cannot give it (no cameras, no target, models of another source)."""


class MissingStageError(CorelibError, FileNotFoundError):
    """An earlier stage's output (style models, an enlarged set, a checkpoint) is not where it is expected."""
