"""What the reliability tests share: a snapshot of a folder (every file's bytes, every folder), so a
test can assert that a refused command changed nothing on disk; the one-line error of a command; and
another process holding a run directory's lock."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]


def folder_snapshot(folder: Path) -> dict[str, object]:
    """Every entry under ``folder`` by relative path: a file's bytes, ``"<dir>"`` for a folder,
    ``"-> target"`` for a symbolic link (not followed). Two equal snapshots: nothing changed."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        key = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[key] = f"-> {p.readlink()}"
        elif p.is_dir():
            out[key] = "<dir>"
        else:
            out[key] = p.read_bytes()
    return out


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, object]]:
    """:func:`folder_snapshot`, as a fixture."""
    return folder_snapshot


@pytest.fixture
def one_line_error(capsys) -> Callable[[], str]:
    """The command's stderr, asserted to be one line (what the command line prints for a
    CorelibError), returned for the test to check its words."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err[:2000]}"
        return lines[0]

    return read


@contextlib.contextmanager
def held_by_another_process(run_dir: Path, what: str):
    """A child process holding ``run_dir``'s lock until the block ends (then killed: a stale lock);
    yields its process id."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; from corelib.ownership import RunLock; "
                               f"RunLock({str(run_dir)!r}, what={what!r}).acquire(); print('held', flush=True); "
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(30)


@pytest.fixture
def another_process_holds():
    """:func:`held_by_another_process`, as a fixture: ``with another_process_holds(run_dir, "pretrain") as pid:``."""
    return held_by_another_process
