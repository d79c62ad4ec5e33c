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

:func:`set_aside` is how a finished result is replaced when the user asks for it (``--overwrite``):
the old folder is renamed next to itself, never deleted.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional, Union

from .errors import RunDirBusyError

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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if self._parent_holds():
            self._inherited = True
            return self
        mine = _HELD.get(key)
        if mine is not None and mine is not self and mine.held:
            # this process holds it already (train_style_models around its CycleGANs): nested, not a second owner
            self._inherited = True
            return self
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

    def _parent_holds(self) -> bool:
        held = os.environ.get(LOCK_ENV, "")
        path, _, token = held.partition("::")
        if not token or path != str(self.path.resolve()):
            return False
        return _read_info(self.path).get("token") == token

    def _busy(self, info: dict) -> RunDirBusyError:
        return RunDirBusyError(
            f"{self.run_dir} is in use by {_describe(info)}: one run owns a run directory. Wait for it to "
            f"finish, or use another run directory; if that process is gone (another machine), remove {self.path}")


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
