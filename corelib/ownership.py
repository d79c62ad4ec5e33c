"""One owner per run directory: the lock a running stage holds, and what a finished stage is.

A training stage (pre-training, fine-tuning, a CycleGAN) writes into a run directory that only it
may write to while it runs. :class:`RunLock` is that ownership: the file ``RUN_DIR/.corelib.lock``
records who holds it (process id, host, start time, command) and an advisory ``flock`` on it is
held for as long as the stage runs. A second process asking for the same run directory is refused
with the first one named (:class:`~corelib.errors.RunDirBusyError`). A process that died without
releasing leaves the file but not the ``flock`` (the kernel drops it with the process), so its lock
is recognised as stale and taken over with a message. Where ``flock`` is not available (another
OS), the process id is checked instead, on the same host only.

The lock is re-entrant within a process (a stage run inside a call that owns the folder already),
and a lock taken by ``corelib run-notebooks`` is handed to the chapters it runs through the
environment (:data:`LOCK_ENV`): a kernel started by that process works inside its parent's lock
instead of being refused by it.

A lock also covers the folders below its run directory: a process that is not the holder (nor one
of the chapters it runs) is refused in ``RUN_DIR/<pair>`` while another owns ``RUN_DIR``, and the
other way round.

:func:`set_aside` is how a finished result is replaced when the user asks for it (``--overwrite``):
the old folder is renamed next to itself, never deleted.

**Folders a writer replaces whole** (a synthetic set, an enlarged style set, a report) are built in
a partial folder and installed with :func:`install_folder`, the one way such a folder is replaced.
It records every entry it installs in an inventory (:data:`INVENTORY`: path, size and SHA-256 of
each file), so that a later replacement can tell the writer's files from a file somebody put there
since (``my_labels.csv`` in a synthetic set, ``notes.md`` in a report): a folder that holds only
its writer's files, unchanged, is replaced; one that holds anything else (a new file, a changed one,
or no inventory at all: written by an older corelib) is set aside whole, as ``--overwrite`` sets a
run aside, and the message names what was found. Nothing is deleted that the workbench did not
write.

:func:`fingerprint` identifies what a stage was built from (a checkpoint's bytes, a sealed folder's
inventory): a stage resumed on an upstream stage that changed since is refused
(:class:`~corelib.runtime.loop.StageRun`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import RunDirBusyError
from .paths import atomic_write_text, check_owned_tree

LOCK_NAME = ".corelib.lock"
LOCK_ENV = "COREREID_RUN_LOCK"
"""``<lock path>::<token>`` of a lock held by a parent process (run-notebooks) for its children."""

try:  # POSIX: the kernel releases the lock of a dead process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_HELD: dict[str, "RunLock"] = {}  # locks this process holds, by resolved path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _describe(info: dict) -> str:
    when = info.get("started")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when)) if isinstance(when, (int, float)) else "?"
    what = f" ({info['what']})" if info.get("what") else ""
    return f"process {info.get('pid', '?')} on {info.get('host', '?')}{what}, started {started}"


def _read_info(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """The lock of one run directory, held by the stage that writes into it.

    Use it as a context manager (or :meth:`acquire` / :meth:`release`)::

        with RunLock(run_dir, what="pretrain"):
            ...  # only this process writes into run_dir

    Args:
        run_dir: the folder to own (created when missing).
        what: what holds it, shown to whoever is refused ("pretrain", "run-notebooks" ...).

    Raises:
        RunDirBusyError: another live process holds the lock (its process id, host, start time and
            command are in the message).
    """

    def __init__(self, run_dir: Union[str, Path], *, what: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.what = what
        self._fd: Optional[int] = None
        self._inherited = False
        self.took_over: Optional[dict] = None  # the stale holder replaced, when there was one

    # -- context manager
    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None or self._inherited

    def acquire(self) -> "RunLock":
        key = str(self.path.resolve())
        if _inherited_from_parent(self.path):
            self._inherited = True
            return self
        mine = _HELD.get(key)
        if mine is not None and mine is not self and mine.held:
            # this process holds it already (train_style_models around its CycleGANs): nested, not a second owner
            self._inherited = True
            return self
        self._refuse_foreign_nesting()  # before anything is created
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # the file may be replaced under us by a releasing holder; try again
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._lock_fd(fd):
                os.close(fd)
                raise self._busy(_read_info(self.path))
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (unlinked) between our open and our lock
                os.close(fd)
                continue
            previous = _read_info(self.path)
            if previous and previous.get("token") and fcntl is None and self._foreign_alive(previous):
                os.close(fd)
                raise self._busy(previous)
            if previous:
                self.took_over = previous
                print(f"corelib: taking over the stale lock of {self.run_dir} held by {_describe(previous)}, "
                      f"which is no longer running", file=sys.stderr)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": self.what,
                    "command": " ".join(sys.argv)[:500], "token": uuid.uuid4().hex}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info, indent=1).encode(), 0)
            os.fsync(fd)
            self._fd, self.info = fd, info
            _HELD[key] = self
            # checked again now that the lock is ours: two processes starting at once on nested folders
            # each see the other's lock at least here
            try:
                self._refuse_foreign_nesting()
            except RunDirBusyError:
                self.release()
                raise
            return self
        raise RunDirBusyError(f"could not take the lock {self.path}: it keeps changing (another process is "
                              f"starting and stopping there); use another run directory")

    def release(self) -> None:
        """Give the run directory up (remove the lock file, then drop the ``flock``)."""
        if self._inherited:
            self._inherited = False
            return
        if self._fd is None:
            return
        key = str(self.path.resolve())
        try:
            if _read_info(self.path).get("token") == self.info.get("token"):
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        if _HELD.get(key) is self:
            del _HELD[key]

    def environment(self) -> dict[str, str]:
        """The environment entry that lets child processes work inside this lock."""
        return {LOCK_ENV: f"{self.path.resolve()}::{self.info['token']}"} if self._fd is not None else {}

    # -- internals
    @staticmethod
    def _lock_fd(fd: int) -> bool:
        if fcntl is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    @staticmethod
    def _foreign_alive(info: dict) -> bool:
        if info.get("host") != socket.gethostname():
            return True  # another machine's process cannot be checked from here: assume it runs
        pid = info.get("pid")
        return isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid)

    def _refuse_foreign_nesting(self) -> None:
        """Refuse when another process owns a folder above this run directory (``RUN_DIR`` while this
        is ``RUN_DIR/<pair>``) or one below it (two levels: ``<pair>`` and ``<pair>/quick``)."""
        here = self.run_dir.resolve()
        for folder in here.parents:
            holder = _foreign_holder(folder)
            if holder is not None:
                raise RunDirBusyError(
                    f"{self.run_dir} lies inside {folder}, which is in use by {_describe(holder)}: one run owns a "
                    f"run directory and every folder in it. Wait for it to finish, or use a run directory outside "
                    f"{folder}; if that process is gone (another machine), remove {folder / LOCK_NAME}")
        if not here.is_dir():
            return
        for lock in [*here.glob(f"*/{LOCK_NAME}"), *here.glob(f"*/*/{LOCK_NAME}")]:
            holder = _foreign_holder(lock.parent)
            if holder is not None:
                raise RunDirBusyError(
                    f"{lock.parent}, inside {self.run_dir}, is in use by {_describe(holder)}: one run owns a run "
                    f"directory and every folder in it. Wait for it to finish, or use another run directory; if "
                    f"that process is gone (another machine), remove {lock}")

    def _busy(self, info: dict) -> RunDirBusyError:
        return RunDirBusyError(
            f"{self.run_dir} is in use by {_describe(info)}: one run owns a run directory. Wait for it to "
            f"finish, or use another run directory; if that process is gone (another machine), remove {self.path}")


def _inherited_from_parent(lock_path: Path) -> bool:
    """Whether ``lock_path`` is the lock that the process which started this one (run-notebooks) holds
    and handed down through :data:`LOCK_ENV`."""
    path, _, token = os.environ.get(LOCK_ENV, "").partition("::")
    if not token or path != str(lock_path.resolve()):
        return False
    return _read_info(lock_path).get("token") == token


def _foreign_holder(folder: Path) -> Optional[dict]:
    """Who holds ``folder``'s lock, when it is a live process other than this one and other than the
    parent that handed its lock down; None otherwise."""
    lock = folder / LOCK_NAME
    if not lock.is_file():
        return None
    mine = _HELD.get(str(lock.resolve()))
    if (mine is not None and mine.held) or _inherited_from_parent(lock):
        return None
    return held_lock(folder)


def held_lock(run_dir: Union[str, Path]) -> Optional[dict]:
    """Who holds ``run_dir``'s lock now (``None`` when nobody does, or the holder is dead)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    info = _read_info(path)
    if fcntl is None:
        return info if info and RunLock._foreign_alive(info) else None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return info or {"pid": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def set_aside(folder: Union[str, Path]) -> Path:
    """Rename ``folder`` to ``<folder>.replaced-<UTC time>`` (a counter added if taken) and return
    the new path: what ``--overwrite`` does with a finished result, so that nothing is lost."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder.with_name(f"{folder.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    folder.rename(target)
    return target


# ----------------------------------------------------------------------------- folders replaced whole

INVENTORY = ".corelib_inventory.json"
"""The list of entries :func:`install_folder` installed in a folder (path, kind, size, SHA-256)."""


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _entries(folder: Path) -> dict[str, list]:
    """Every entry under ``folder`` (links not followed) by relative path: ``["f", size, sha256]`` for
    a file, ``["d"]`` for a folder, ``["l", target]`` for a symbolic link. Contents, not times: the
    same writer with the same inputs records the same inventory, and a copy of the folder
    (``cp -r``) is still recognised as the writer's."""
    found: dict[str, list] = {}
    for parent, dirs, files in os.walk(folder):  # os.walk does not descend into linked folders
        base = Path(parent)
        for name in [*dirs, *files]:
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if rel == INVENTORY:
                continue
            if path.is_symlink():
                found[rel] = ["l", os.readlink(path)]
            elif path.is_dir():
                found[rel] = ["d"]
            else:
                found[rel] = ["f", path.stat().st_size, _file_digest(path)]
    return found


def seal_folder(folder: Union[str, Path], writer: str) -> Path:
    """Record every entry of a finished ``folder`` in its :data:`INVENTORY` (what ``writer`` wrote)."""
    folder = Path(folder)
    record = {"writer": writer, "entries": _entries(folder)}
    atomic_write_text(folder / INVENTORY, json.dumps(record, sort_keys=True) + "\n")
    return folder / INVENTORY


def foreign_entries(folder: Union[str, Path]) -> list[str]:
    """The entries of ``folder`` that its writer did not put there, or that changed since: new files
    and folders, files with other contents. Without a readable inventory (a folder written before
    corelib kept one) every entry counts. Entries removed since are not listed."""
    folder = Path(folder)
    try:
        recorded = json.loads((folder / INVENTORY).read_text())["entries"]
        if not isinstance(recorded, dict):
            raise ValueError("entries is not a mapping")
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    return sorted(rel for rel, entry in _entries(folder).items() if recorded.get(rel) != entry)


def install_folder(partial: Union[str, Path], out: Union[str, Path], *, writer: str, markers: Sequence[str],
                   what: str, fix: str) -> Optional[Path]:
    """Put the finished folder ``partial`` at ``out``, replacing what its writer wrote there before.

    ``partial`` is sealed first (:func:`seal_folder`). An existing ``out`` must be the writer's (one of
    ``markers`` in it, or empty: :func:`corelib.paths.check_owned_tree`, which writers also call
    before they start). It is removed when it holds nothing but its writer's unchanged entries;
    otherwise it is set aside whole as ``<out>.replaced-<UTC time>`` (:func:`set_aside`) and a line on
    stderr names what it held that corelib did not write.

    Returns:
        The folder the old ``out`` was set aside to, None when nothing was set aside.

    Raises:
        NotOwnedError: ``out`` exists and is not the writer's (nothing is changed).
    """
    partial, out = Path(partial), Path(out)
    seal_folder(partial, writer)
    kept = None
    if check_owned_tree(out, markers, what, fix):
        foreign = foreign_entries(out)
        if not foreign:
            shutil.rmtree(out)  # every entry is one the writer installed, unchanged
        else:
            kept = set_aside(out)
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            why = ("it has no inventory of its files (written by an older corelib)" if not (kept / INVENTORY).is_file()
                   else f"it holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} that corelib did not "
                        f"write or that changed since ({shown})")
            print(f"corelib: {out} is replaced, but {why}; the old folder is kept whole as {kept}", file=sys.stderr)
    os.replace(partial, out)
    return kept


def fingerprint(path: Union[str, Path]) -> str:
    """What identifies an upstream stage's result: the SHA-256 of a file's bytes, or of a sealed
    folder's inventory (a folder without one: of its entries' names, sizes and contents)."""
    path = Path(path)
    if not path.is_dir():
        return _file_digest(path)
    inventory = path / INVENTORY
    text = inventory.read_bytes() if inventory.is_file() else json.dumps(_entries(path), sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()
