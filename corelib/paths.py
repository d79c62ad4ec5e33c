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
