"""Where the workbench keeps data, runs and figures, and how it writes a file there safely.

Defaults are relative to the repository checkout (``data/``, ``runs/``, ``figures/``) so that a
fresh clone works without configuration; environment variables move them elsewhere, e.g. onto a
scratch disk of a GPU cluster:

- ``COREREID_DATA``: root of the datasets (real copies and the generated synthetic sets);
- ``COREREID_RUNS``: parent of the run directories;
- ``COREREID_FIGURES``: where full (non-smoke) runs save curated figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


def repo_root() -> Path:
    """The checkout this package was installed from (editable install), else the working dir."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "corelib").is_dir():
        return here
    return Path.cwd()


def _from_env(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else repo_root() / default


def data_root() -> Path:
    """Root of the datasets (``$COREREID_DATA`` or ``<repo>/data``)."""
    return _from_env("COREREID_DATA", "data")


def synthetic_root() -> Path:
    """Where the embedded synthetic datasets are generated (``<data_root>/synthetic``)."""
    return data_root() / "synthetic"


def runs_root() -> Path:
    """Parent of run directories (``$COREREID_RUNS`` or ``<repo>/runs``)."""
    return _from_env("COREREID_RUNS", "runs")


def demo_run_dir() -> Path:
    """The run directory ``make demo`` writes (``<runs_root>/demo``)."""
    return runs_root() / "demo"


def resolve_in_repo(path) -> Path:
    """``path`` with ``~`` expanded; a relative one is taken from the repository root, not from
    the working directory (a notebook's kernel runs in ``notebooks/``)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def figures_dir() -> Path:
    """Curated figures of full runs (``$COREREID_FIGURES`` or ``<repo>/figures``)."""
    return _from_env("COREREID_FIGURES", "figures")


def manifests_dir() -> Path:
    """The committed data manifests (``<repo>/data_manifests``)."""
    return repo_root() / "data_manifests"


def notebooks_dir() -> Path:
    """The ordered notebook chapters (``<repo>/notebooks``)."""
    return repo_root() / "notebooks"


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


PARTIAL_MARKER = ".corelib_partial.json"
"""File a writer puts into a temporary (partial) folder the moment it creates it: the proof, on a
later run, that a left-over folder of that name is the workbench's own and may be removed."""


def make_partial_dir(path: Path, writer: str) -> Path:
    """Create ``path`` as a new folder holding :data:`PARTIAL_MARKER` (which names ``writer``).

    The folder must not exist yet (remove an old one with :func:`remove_owned_tree` first), so a
    marker is never written into a folder somebody else made.
    """
    import json

    path.mkdir(parents=True)
    (path / PARTIAL_MARKER).write_text(json.dumps({"writer": writer, "pid": os.getpid()}) + "\n")
    return path


def _is_plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def check_owned_tree(path: Path, marker_names: Sequence[str], what: str, fix: str = "") -> bool:
    """Whether ``path`` may be replaced by a writer whose folders carry one of ``marker_names``.

    Returns False when nothing is at ``path``, True when it is an empty folder or holds one of the
    marker files (a stamp or :data:`PARTIAL_MARKER`) as a plain file.

    Raises:
        NotOwnedError: anything else (a folder of someone else's files, a file, a symbolic link):
            the message names it, what it holds, and ``fix`` (by default: choose another folder,
            or remove it yourself).
    """
    from .errors import NotOwnedError

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_dir() and not path.is_symlink():
        if any(_is_plain_file(path / m) for m in marker_names):
            return True
        held = sorted(p.name for p in path.iterdir())
        if not held:
            return True
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        entries = "1 entry" if len(held) == 1 else f"{len(held)} entries"
        why = f"a folder holding {entries} ({shown}) and no {' or '.join(marker_names)}"
    else:
        why = "a symbolic link" if path.is_symlink() else "a file"
    fix = fix or f"choose another folder, or remove {path} yourself if nothing in it is needed"
    raise NotOwnedError(f"{path} is not {what}: it is {why}, so it was left untouched. Fix: {fix}")


def remove_owned_tree(path: Path, marker_names: Sequence[str], what: str, fix: str = "") -> bool:
    """Remove ``path`` if :func:`check_owned_tree` allows it (the writer's own, or an empty folder).

    Returns whether something was removed; raises ``NotOwnedError`` (nothing deleted) otherwise.
    """
    import shutil

    path = Path(path)
    if not check_owned_tree(path, marker_names, what, fix):
        return False
    shutil.rmtree(path)
    return True
