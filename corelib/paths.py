"""Where the workbench keeps data, runs and figures, and how it writes a file there safely.

Defaults are relative to the repository checkout (``data/``, ``runs/``, ``figures/``) so that a
fresh clone works without configuration; environment variables move them elsewhere, e.g. onto a
scratch disk of a GPU cluster:

- ``COREREID_DATA``: root of the datasets (real copies and the generated synthetic sets);
- ``COREREID_RUNS``: parent of the run directories;
- ``COREREID_FIGURES``: where full (non-smoke) runs save curated figures;
- ``COREREID_OFFLINE``: a compute node without network (:data:`OFFLINE_ENV`).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional, Sequence, Union

from .errors import NotOwnedError, WriteError


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


OFFLINE_ENV = "COREREID_OFFLINE"
"""Set (to anything but 0) on a compute node without network: nothing tries a download, and ImageNet
weights missing from the cache are an error, not a random trunk (a launcher job sets it)."""

WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                          errno.EEXIST})
"""The refusals of the operating system that :func:`write_error` explains in one line."""


def _os_error_in(error: BaseException) -> Optional[OSError]:
    """``error`` or the OSError that caused it: torch's writer reports a failed write of the file
    object it was given as a RuntimeError ("unexpected pos") whose context is the disk's OSError."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _existing_folder(path: Path) -> Path:
    """The nearest folder at or above ``path`` that exists: where a create was refused."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            return folder
    return path


def _file_in_the_way(path: Path) -> Optional[Path]:
    """The first of ``path`` and its parents that exists and is not a folder (a file, a link to one)."""
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            return part
    return None


def write_error(error: BaseException, path: Union[str, Path, None] = None) -> Optional[Exception]:
    """A one-line :class:`~corelib.errors.WriteError` naming the path and the fix, for an OSError (or
    an error an OSError caused) of :data:`WRITE_ERRNOS`, raised while writing ``path`` (default:
    the error's own file name); None for any other error, which keeps its traceback.

    Used by every atomic writer (:func:`atomic_file`) and, as the last resort, by the command line.
    """
    os_error = _os_error_in(error)
    if os_error is None or (path is None and not os_error.filename):
        return None
    # what was refused: the file written, or the folder above it that could not be created (never the
    # temporary file's random name)
    target = Path(path) if path is not None else Path(os_error.filename)
    if os_error.filename and Path(os_error.filename) in target.parents:
        target = Path(os_error.filename)
    written = Path(path) if path is not None else target
    code = os_error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = "disk full" if code == errno.ENOSPC else "disk full (quota exceeded)"
        kept = f"; the previous {written.name} is kept intact" if written.is_file() else ""
        message = (f"{why}: {written.name} could not be written in {written.parent}{kept}. Free space on that disk "
                   f"(old run directories, *.replaced-* folders) or write elsewhere (another --run-dir, "
                   f"COREREID_RUNS), then run the command again")
    elif code == errno.EROFS:
        folder = _existing_folder(target.parent)
        message = (f"{folder} is on a read-only file system, so {target.name} cannot be created there; choose a "
                   f"writable folder (another --run-dir or ROOT, COREREID_RUNS) or mount it read-write")
    elif code in (errno.EACCES, errno.EPERM):
        folder = _existing_folder(target.parent)
        message = (f"permission denied for {target} (in {folder}): that folder is not writable for you; make it "
                   f"writable (chmod u+w {folder}) or choose another folder (another --run-dir or ROOT)")
    else:  # ENOTDIR, EEXIST: a file where a folder is expected
        # the file being written may exist: the search for a file in the way starts above it
        in_the_way = _file_in_the_way(written.parent if path is not None and target == written else target)
        if in_the_way is None:
            return None  # EEXIST of something else (a folder that exists): not a write error explained here
        hold = f" (to hold {written})" if path is not None else ""  # an OSError's own name may be a temporary one
        message = (f"{in_the_way} is a file where a folder is expected{hold}; move that file away or choose "
                   f"another folder (another --run-dir or ROOT)")
    out = WriteError(message)
    out.errno = code  # for `except OSError as e: e.errno`; a filename would make str() torch's "[Errno n] ..."
    return out


def _create_beside(path: Path, suffix: str) -> tuple[int, Path]:
    """Create ``.<name>.<random><suffix>`` beside ``path``, exclusively, with mode 0666 that the kernel
    narrows by the process's umask exactly as ``open()`` does (``tempfile.mkstemp`` forces 0600, so a
    checkpoint was unreadable to a colleague beside its readable metrics). Nothing reads or sets the
    umask here, so there is no window in which another thread creates files under a changed umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue  # a name another writer holds: draw again
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


@contextmanager
def atomic_file(path: Union[str, Path], mode: str = "w", *, fsync: bool = False, suffix: str = ".tmp") -> Iterator[IO]:
    """A file object whose content replaces ``path`` only once the ``with`` block ends without error:
    it is written to a temporary file beside ``path`` and renamed, so readers never see half a file
    and a failed write leaves the previous file intact (the temporary file is removed).

    Every file the workbench writes atomically goes through here: a new file's mode follows the umask
    (0644 under the usual 022, 0600 under 077) and a file replaced keeps its mode (a settings file
    the user made private stays private), as writing with ``open()`` or ``torch.save`` does; an OSError of :data:`WRITE_ERRNOS` (disk full, a
    read-only folder, a file where a folder is expected) becomes one :class:`~corelib.errors.WriteError`
    naming the path and the fix.

    Args:
        mode: ``"w"`` (text) or ``"wb"``.
        fsync: put the bytes on disk before the name points at them (checkpoints).
        suffix: the temporary file's suffix (``.<name>.<random><suffix>``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_beside(path, suffix)
    except OSError as e:
        translated = write_error(e, path)
        if translated is None:
            raise
        raise translated from e
    try:
        if path.is_file():  # replaced: keep the file's mode, as open(path, "w") would
            os.fchmod(fd, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the write's own error is the one to report
        translated = write_error(e, path) if isinstance(e, Exception) else None
        if translated is None:
            raise
        raise translated from e


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_file`: never half a file, the umask's mode,
    one-line errors."""
    with atomic_file(path, "w") as f:
        f.write(text)


PARTIAL_MARKER = ".corelib_partial.json"
"""File a writer puts into a temporary (partial) folder the moment it creates it: the proof, on a
later run, that a left-over folder of that name is the workbench's own and may be removed."""


def make_partial_dir(path: Path, writer: str) -> Path:
    """Create ``path`` as a new folder holding :data:`PARTIAL_MARKER` (which names ``writer``).

    The folder must not exist yet (remove an old one with :func:`remove_owned_tree` first), so a
    marker is never written into a folder somebody else made.
    """
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
    path = Path(path)
    if not check_owned_tree(path, marker_names, what, fix):
        return False
    shutil.rmtree(path)
    return True
