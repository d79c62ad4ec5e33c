"""Atomic, full-state checkpoints: nothing is lost on interruption, nothing unsafe is loaded.

``save_checkpoint`` writes through a temporary file in the same folder and renames it, so a crash
mid-write leaves the previous checkpoint intact, and stamps every checkpoint with
:data:`FORMAT_VERSION`. ``load_checkpoint`` uses ``weights_only=True`` (tensors, numbers, strings,
lists and dicts only; no pickled code), refuses a stage checkpoint of another format version (one
line: re-run the stage) and, given a model, checks that the checkpoint was written for the same
architecture, naming the mismatching keys.
"""

from __future__ import annotations

import json
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, MissingStageError, UpstreamChangedError
from ..paths import atomic_file
from ..settings import flatten

TMP_SUFFIX = ".tmp"

FORMAT_VERSION = 1
"""The layout of the checkpoints this corelib writes (grouped ``cfg``, ``model_name`` and
``model_args``, ``upstream``). A stage checkpoint of another version, or of none (written before
versions were stamped), is refused, not converted: the stage is trained again. Raise it whenever
what a checkpoint holds changes meaning."""


def save_checkpoint(state: dict, path: Union[str, Path]) -> Path:
    """Write ``state`` (model / optimiser state dicts, epoch, RNG states ...) atomically, with
    ``format_version`` (:data:`FORMAT_VERSION`) added (:func:`corelib.paths.atomic_file`: the umask's
    file mode, and a full disk or a read-only folder is a one-line :class:`~corelib.errors.WriteError`)."""
    path = Path(path)
    # the bytes are on disk before the name points at them; a failed write (disk full) keeps the old file
    with atomic_file(path, "wb", fsync=True, suffix=TMP_SUFFIX) as f:
        torch.save({**state, "format_version": FORMAT_VERSION}, f)
    return path


def load_checkpoint(path: Union[str, Path], *, model: Optional[nn.Module] = None, key: str = "model",
                    map_location: Any = "cpu", stage: Optional[str] = None) -> dict:
    """Read a checkpoint safely; with ``model``, load ``state[key]`` into it after checking shapes.

    Args:
        stage: when given, the stage the checkpoint must have been written by ("pretrain" ...).

    A stage checkpoint (one that records its ``stage``, or any file when ``stage`` is given) must
    carry this corelib's :data:`FORMAT_VERSION`; weights files of other origins (ImageNet, IBN-Net,
    ViT releases) carry none and are read as they are.

    Raises:
        MissingStageError: no file at ``path`` (a ``FileNotFoundError``).
        CheckpointError: the file is empty, truncated or corrupt, not a checkpoint, holds objects
            that only unpickling code could read (refused, never executed), was written by another
            stage or another checkpoint format version, or does not fit the model (the message names
            the first mismatching keys).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingStageError(f"no checkpoint at {path}; check RUN_DIR or train first")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): its write never finished or the file was cut. "
                              f"Train the stage again (another RUN_DIR, or overwrite=True), or restore the file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        code = _pickled_code(path, e)
        if code is not None:  # a class or function to import: only running code could read it
            named = f" ({', '.join(code[:3])}{' ...' if len(code) > 3 else ''})" if code else ""
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors and plain values: pickled code{named} that is not "
                f"run, for safety: corelib refuses it (safe loading). A corelib checkpoint never holds "
                f"code: use one written by corelib, or, if you trust the file, re-save its state_dict with plain "
                f"values"
            ) from None
        # torch's own text here advises weights_only=False, i.e. running whatever the file holds: not repeated
        raise CheckpointError(f"{path} is not a readable checkpoint ({size} bytes that the safe unpickler cannot "
                              f"parse): corrupt or not a torch file. Train the stage again or restore the file") from None
    except Exception as e:  # noqa: BLE001 - EOFError, zip errors, IndexError ...: whatever bytes are not a checkpoint
        raise CheckpointError(f"{path} is truncated or corrupt ({size} bytes; {_first_line(e)}): its write was "
                              f"interrupted or the file was damaged. Train the stage again (or resume from an intact "
                              f"last.pt), or restore the file") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a corelib checkpoint (it holds a {type(state).__name__}, not a "
                              f"mapping with 'model' and 'epoch'); pass RUN_DIR/<stage>/best.pt or last.pt")
    if stage is not None and state.get("stage") not in (None, stage):
        raise CheckpointError(f"{path} was written by the {state.get('stage')!r} stage, not by {stage!r}; "
                              f"point at RUN_DIR/{stage}/ or use another run directory")
    if (stage is not None or "stage" in state) and state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(_version_refusal(path, state.get("format_version")))
    if model is not None:
        load_into(model, state, path, key=key)
    return state


def _version_refusal(path: Path, version: Any) -> str:
    """The one line for a stage checkpoint of another format version: which, and the fix."""
    if isinstance(version, int) and version > FORMAT_VERSION:
        return (f"{path} is a checkpoint of format version {version}, written by a newer corelib (this one reads "
                f"version {FORMAT_VERSION}); update corelib, or re-run the stage with this version")
    found = f"format version {version!r}" if version is not None else "no format version (an older corelib)"
    return (f"{path} is a checkpoint of {found}; this corelib reads version {FORMAT_VERSION} only: re-run the "
            f"stage with this corelib version (another RUN_DIR, or --overwrite / overwrite=True)")


_CODE_REFUSAL = re.compile(r"unsupported global|global \S+ whose module \S+ is blocked", re.IGNORECASE)
"""torch's words for a pickled class or function it will not import (``Unsupported global: GLOBAL x was
not an allowed global``; ``Trying to load unsupported GLOBAL os.system whose module os is blocked``)."""


def _pickled_code(path: Path, error: Exception) -> Optional[list[str]]:
    """The classes and functions ``path``'s pickle would import (sorted; empty when only torch's words
    tell), or None when the safe unpickler refused the file for another reason (corrupt bytes).

    The file's own list of globals (``torch.serialization.get_unsafe_globals_in_checkpoint``) comes
    first: it does not depend on how a torch version words its refusal."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a torch zip file (a legacy or bare pickle): only the words tell
        names = []
    if names:
        return sorted(names)
    return [] if _CODE_REFUSAL.search(str(error)) else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def remove_stale_temporaries(folder: Union[str, Path], names: tuple[str, ...] = ("last.pt", "best.pt")) -> list[Path]:
    """Remove the temporary files a killed :func:`save_checkpoint` left in ``folder``
    (``.<name>.<random>.tmp``; only ours, and only while this process owns the run directory)."""
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                removed.append(tmp)
    return removed


def holds_run(out_dir: Union[str, Path]) -> str:
    """What a stage folder holds that a new run would replace ("" when nothing): checkpoints or
    logged epochs. ``config.yaml`` alone (a run stopped before its first epoch ended) is not a run."""
    out = Path(out_dir)
    parts = []
    log = out / "metrics.jsonl"
    if log.is_file():
        epochs = sum(1 for line in log.read_text().splitlines() if line.strip())
        if epochs:
            parts.append(f"{epochs} epoch(s) logged in metrics.jsonl")
    parts += [f"{name}" for name in ("last.pt", "best.pt") if (out / name).is_file()]
    return ", ".join(parts)


def load_into(model: nn.Module, state: dict, path: Union[str, Path], *, key: str = "model") -> None:
    """Load ``state[key]`` (read from ``path``) into ``model`` after checking names and shapes.

    Raises:
        CheckpointError: the weights do not fit the model; the message names the first mismatching keys.
    """
    if key not in state:
        raise CheckpointError(f"{path} has no {key!r} entry (keys: {', '.join(map(str, state))})")
    own = model.state_dict()
    theirs = state[key]
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    bad = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    if missing or unexpected or bad:
        parts = [f"{len(bad)} shape mismatch(es) (e.g. {bad[0]}: checkpoint {tuple(theirs[bad[0]].shape)}, "
                 f"model {tuple(own[bad[0]].shape)})"] if bad else []
        parts += [f"{len(missing)} missing key(s) (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]})"] if unexpected else []
        raise CheckpointError(f"{path} was written for another architecture: {'; '.join(parts)}. "
                         f"Build the model with the checkpoint's backbone and number of classes.")
    model.load_state_dict(theirs)


RESUME_FREE_FIELDS = frozenset({"epochs", "eval_every", "runtime.device", "runtime.num_workers",
                                "runtime.dist_backend", "runtime.channels_last", "score_start"})
"""Config fields (dotted) a resumed training run may change: how long it trains, how often it
evaluates (``score_start`` included), and where and how it runs. Every other field shapes the result, so a change there is
refused on resume."""


def check_upstream(saved: Optional[dict], now: dict, out_dir: Union[str, Path]) -> None:
    """Refuse to resume ``out_dir`` when an upstream result it was started from has changed since.

    Args:
        saved: the ``upstream`` record of the checkpoint (``{what: {"path", "sha256"}}``); None for a
            checkpoint written before upstreams were recorded (nothing to compare).
        now: the same record for this run (:func:`corelib.ownership.fingerprint` of each upstream).

    Raises:
        UpstreamChangedError: names the upstream, where it is, and the two ways out.
    """
    out = Path(out_dir)
    for what, entry in (saved or {}).items():
        current = now.get(what)
        if not isinstance(entry, dict) or current is None or entry.get("sha256") == current["sha256"]:
            continue
        raise UpstreamChangedError(
            f"{out} was started from the {what} {entry.get('path')} (sha256 {str(entry.get('sha256'))[:12]}), but the "
            f"{what} now at {current['path']} is another one (sha256 {current['sha256'][:12]}; e.g. its stage was "
            f"trained again with --overwrite): resuming would mix what was learnt from the two. "
            f"Start this stage again with --overwrite (overwrite=True; the old run is kept as "
            f"{out.name}.replaced-<time>), or use another run directory")


def check_resume(saved: Optional[dict], cfg: Any, path: Union[str, Path], *,
                 free: frozenset = RESUME_FREE_FIELDS) -> None:
    """Refuse to resume ``path`` with a recipe other than the one it was trained with.

    Without this check a run directory that holds, say, a smoke run would be resumed by the full
    recipe and silently continue the small network.

    Args:
        saved: the config stored in the checkpoint (nested, as ``cfg.to_dict()`` wrote it).
        cfg: the settings dataclass of this run.
        free: dotted fields that may differ.

    Raises:
        ConfigError: the fields that differ (saved -> asked) and the two ways out.
    """
    if not saved:
        return
    mine = cfg.flat()
    theirs = flatten(saved, set(_groups_of(mine)))
    changed = [f"{k} {theirs.get(k)!r} -> {v!r}" for k, v in mine.items()
               if k not in free and k in theirs and _plain(theirs[k]) != _plain(v)]
    if changed:
        raise ConfigError(f"{path} was trained with another recipe ({'; '.join(changed[:4])}"
                          f"{f'; {len(changed) - 4} more' if len(changed) > 4 else ''}); resuming would mix the two. "
                          f"Use another RUN_DIR, or resume=False (RESUME = False) to train this recipe from the start")


def _groups_of(flat: dict) -> list[str]:
    """Every dotted prefix of the keys of a flat config (``cluster``, ``cluster.kmeans`` ...)."""
    out = set()
    for key in flat:
        parts = key.split(".")[:-1]
        out |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return sorted(out)


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _warn_torn(note: str) -> None:
    warnings.warn(note, stacklevel=3)  # shown at the reader that called read_epoch_log


def read_epoch_log(path: Union[str, Path], report: Callable[[str], None] = _warn_torn) -> list[dict]:
    """The epoch records of a ``metrics.jsonl`` (one JSON object a line; none when there is no file).

    A last line cut short (no newline and not JSON: a run killed while appending it) is skipped, and
    ``report`` gets one line saying what was dropped (default: a warning); the complete lines are kept.

    Raises:
        CheckpointError: a line before the last (or a last line ending in a newline) is not a JSON
            object: the log was damaged, not stopped mid-write; names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")  # the last entry is "" when the file ends with a newline
    records: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record, torn = json.loads(line), False
        except json.JSONDecodeError:
            record, torn = None, True
        if isinstance(record, dict):
            records.append(record)
            continue
        if torn and number == len(lines):  # no newline after it: its write never finished
            report(f"{path}: its last line (line {number}, {len(line)} characters: {line[:60]!r}"
                   f"{' ...' if len(line) > 60 else ''}) was cut short by a run stopped while appending it and is "
                   f"skipped; the {len(records)} complete epoch record(s) before it are kept")
            break
        raise CheckpointError(
            f"{path}, line {number}: {line[:60]!r}{' ...' if len(line) > 60 else ''} is not a JSON record of an "
            f"epoch; the log was damaged after it was written (a run stopped mid-write only cuts the last line). "
            f"Fix: restore the file, delete that line (its epoch's numbers are lost), or train the stage again "
            f"(--overwrite keeps the old run aside)")
    return records


class EpochLog:
    """One JSON line per epoch in ``metrics.jsonl``, kept in step with the checkpoints.

    On resume the file is cut back to the epochs the checkpoint holds (a run stopped after
    writing a line but before its checkpoint would otherwise log that epoch twice; a line cut
    short by a kill while appending it is dropped with a note on stderr, see :func:`read_epoch_log`).
    """

    def __init__(self, path: Union[str, Path], *, keep: int = 0, write: bool = True) -> None:
        self.path, self.write = Path(path), write
        history = read_epoch_log(self.path, lambda note: print(f"corelib: {note} (and removed from the file, as "
                                                               f"resuming rewrites it)", file=sys.stderr)) if keep else []
        self.history: list[dict] = history[:keep]
        if write:
            self.path.write_text("".join(json.dumps(h) + "\n" for h in self.history))

    def append(self, record: dict) -> None:
        self.history.append(record)
        if self.write:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def evaluation_due(epoch: int, every: int, epochs: int) -> bool:
    """Evaluate after 0-based ``epoch``: every ``every`` epochs and after the last one."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs
