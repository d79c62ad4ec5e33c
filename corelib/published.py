"""Published results, as data: the numbers a thesis table puts beside one's own measurements.

Why this module exists: a reproduction is judged against what the papers report, and copying those
numbers by hand into every notebook and LaTeX table invites typos and lost caveats ("arXiv v1 only",
"with re-ranking", "USL, no source domain"). Here every published number the project relies on is one
:class:`PublishedResult` record of (task, method, mAP, R-1, R-5, R-10, source, setting, backbone, note),
kept as one row of the data file ``corelib/published.csv`` (package data; :data:`COLUMNS`) and loaded at
import, so :func:`corelib.results.published_table` and :func:`corelib.results.beside_published` can lay the
paper rows next to the measured ones.

**The numbers are transcriptions, not measurements.** They were copied from the project's two source
notes, which in turn transcribed the papers, repositories and tables they cite; nothing here was
re-derived or completed, and a cell a table leaves empty ("–") is ``None``. Each record's ``source``
names the note and section it came from, then the primary source the note cites:

- ``docs/method.md §8``: CORE-ReID V2's results tables (project page, [V2-page]): CORE-ReID V2 (ResNet101),
  V2 Tiny (ResNet18), direct transfer and the V1 / "baseline" column, for the six person and vehicle
  pairs and every VehicleID / VERI-Wild test size; the SECAB ablation (mAP only; its "with SECAB" column
  is the CORE-ReID V2 row) and the V1 ECAB / BMFN ablation (approximate values) of the same section;
- ``docs/method.md §3.7``: the cluster-count sweep of CORE-ReID V2 (approximate mAP read off a figure);
- ``docs/baselines.md §1.8``: TransReID, Table 7 (supervised, persons and vehicles), Table 8 (training-setting
  ablation of the ViT baseline) and the repository README's "reorganized code" results;
- ``docs/baselines.md §1b.5``: TransReID-SSL, the README's "Paper" and "Reproduced" columns (supervised,
  USL and UDA);
- ``docs/baselines.md §2.2``: Learn by Guessing and the rows its slides compare with (MMT, SSG);
- ``docs/baselines.md §3.7``: MMT (k-means, from the paper; OpenUnReID's DBSCAN "MMT+"; MMT as quoted by
  SpCL / Cluster Contrast), SpCL (UDA and USL) and Cluster Contrast (USL only);
- ``docs/baselines.md §4.4``: the re-ID numbers of the IBN-Net README (reid-strong-baseline, supervised).

Tasks are named with the workbench's loader names (:func:`corelib.data.list_datasets`):
``"<source>-><target>"`` for UDA (``"market1501->cuhk03np"``) and the dataset alone for USL and
supervised results (``"msmt17"``). VehicleID and VERI-Wild carry their test size, as the loaders'
``test_size`` option does: ``"veri776->vehicleid@1600"``, ``"vehicleid->veriwild@10000"``.
Datasets the workbench has no loader for keep a plain lower-case name: ``occduke`` (Occluded-Duke),
``personx``, ``vehiclex``. :func:`canonical_task` accepts the friendly spellings of the papers and of
the workbench's own tables ("Market→CUHK03", "CUHK03 -> Market-1501", "VeRi → VehicleID 2400",
"veri776 → vehicleid (test_size=1600)"); a VehicleID / VERI-Wild name without a size means the loader's
default (800 / 3000).

Method names keep the papers' names, written so that LaTeX can print them: TransReID's superscripts
become words (``TransReID*^c`` is ``TransReID* (SIE camera)``; ``*`` still means overlapping patches,
stride 12). Caveats the notes mark travel in ``note``. Two more caveats apply to CORE-ReID V2's own
numbers (docs/method.md §9): its code keeps the best epoch by target-test mAP (Q9), and its vehicle
"baseline" column is undefined (Q16).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources
from typing import Optional

from .errors import InvalidInputError, UnknownNameError

SETTINGS = ("uda", "usl", "supervised")
"""``uda``: source -> target adaptation (direct-transfer rows included); ``usl``: unsupervised on the
target alone; ``supervised``: trained with the labels of the dataset it is tested on."""

METRIC_FIELDS = ("mAP", "rank1", "rank5", "rank10")


@dataclass(frozen=True)
class PublishedResult:
    """One published row: a method's scores (in %) on one task, and where they were read."""

    task: str
    """Canonical task (:func:`canonical_task`): ``"market1501->cuhk03np"``, ``"msmt17"`` ..."""
    method: str
    mAP: Optional[float]
    rank1: Optional[float]
    rank5: Optional[float]
    rank10: Optional[float]
    source: str
    """The note and section it was transcribed from, then the primary source that note cites."""
    setting: str = "uda"
    """One of :data:`SETTINGS`."""
    backbone: str = ""
    """As the source names it, with the input size where the table distinguishes sizes; empty when
    the source does not say."""
    note: str = ""
    """Caveats the source notes mark (another paper version, re-ranking, an assumed test size ...)."""
    decimals: int = 1
    """Digits after the point as the source prints them (the vehicle rows of CORE-ReID V2 have two),
    so that a table can show 49.50 and not 49.5."""

    def __post_init__(self) -> None:
        # A malformed record is a transcription bug: fail at import, not in a thesis table.
        if self.setting not in SETTINGS:
            raise InvalidInputError(f"{self.method} on {self.task}: setting {self.setting!r} is not one of {SETTINGS}")
        if all(getattr(self, f) is None for f in METRIC_FIELDS):
            raise InvalidInputError(f"{self.method} on {self.task}: a published record needs at least one metric")

    @property
    def metrics(self) -> dict[str, Optional[float]]:
        """``{"mAP": .., "rank1": .., "rank5": .., "rank10": ..}`` (None where the source gives none)."""
        return {f: getattr(self, f) for f in METRIC_FIELDS}

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What tells two records apart: (task, method, backbone, setting, note)."""
        return (self.task, self.method, self.backbone, self.setting, self.note)


# ---------------------------------------------------------------------------------------------------------------
# The records live in published.csv beside this module (package data), one row per record.

DATA_FILE = "published.csv"
"""The records' file in the package: UTF-8 CSV, one row per record, columns :data:`COLUMNS`."""

COLUMNS = ("task", "setting", "method", "backbone", *METRIC_FIELDS, "note", "source")
"""Columns of :data:`DATA_FILE`. A score is written as its source prints it (``49.50``, ``82``: the digits after the
point give the record's ``decimals``, the most of its cells); an empty score is ``None``, an empty backbone or
note ``""``."""

_SCORE = re.compile(r"\d+(?:\.\d+)?")


def _read_records(text: str) -> tuple[PublishedResult, ...]:
    """The records of a :data:`DATA_FILE` text, in row order; a malformed row raises InvalidInputError."""
    rows = csv.DictReader(io.StringIO(text))
    if tuple(rows.fieldnames or ()) != COLUMNS:
        raise InvalidInputError(f"{DATA_FILE}: header {rows.fieldnames} is not {list(COLUMNS)}; restore the header row")
    records = []
    for row in rows:
        where = f"{DATA_FILE} line {rows.line_num}"
        if None in row or None in row.values():
            raise InvalidInputError(f"{where}: {len(COLUMNS)} cells expected; quote a cell that holds a comma")
        cells = [row[f] for f in METRIC_FIELDS]
        bad = [c for c in cells if c and not _SCORE.fullmatch(c)]
        if bad:
            raise InvalidInputError(f"{where}: score {bad[0]!r} is not a number such as 66.4; write it as the source "
                                    "prints it, or leave the cell empty")
        decimals = max((len(c.partition(".")[2]) for c in cells if c), default=1)
        records.append(PublishedResult(row["task"], row["method"], *(float(c) if c else None for c in cells),
                                       source=row["source"], setting=row["setting"], backbone=row["backbone"],
                                       note=row["note"], decimals=decimals))
    return tuple(records)


PUBLISHED: tuple[PublishedResult, ...] = _read_records(
    resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8"))
"""Every transcribed record, in the order of the source notes."""

_TASKS = frozenset(r.task for r in PUBLISHED)


# ---------------------------------------------------------------------------------------------------------------
# Task names

_DATASET_ALIASES = {
    "market1501": ("market1501", "market"),
    "cuhk03np": ("cuhk03np", "cuhk03", "cuhk"),
    "msmt17": ("msmt17v1", "msmt17", "msmt"),
    "dukemtmc": ("dukemtmcreid", "dukemtmc", "duke"),
    "veri776": ("veri776", "veri"),
    "vehicleid": ("vehicleid",),
    "veriwild": ("veriwild",),
    "occduke": ("occludeddukemtmc", "occludedduke", "occduke"),
    "personx": ("personx",),
    "vehiclex": ("vehiclex",),
}
"""Canonical dataset name -> its spellings once lower-cased and stripped of spaces, ``-``, ``_`` and ``.``."""

_ALIASES = sorted(((alias, name) for name, aliases in _DATASET_ALIASES.items() for alias in aliases),
                  key=lambda pair: -len(pair[0]))  # longest first: "veri776" and "veriwild" before "veri"

TEST_SIZES: dict[str, tuple[int, ...]] = {"vehicleid": (800, 1600, 2400), "veriwild": (3000, 5000, 10000)}
"""The test sizes the published tables report, the first being the loader's default ``test_size``."""

_SIZE_WORDS = {"small": 0, "medium": 1, "large": 2}  # VehicleID / VERI-Wild's Small / Medium / Large test sets


def _dataset(text: str, *, tested: bool = True) -> Optional[str]:
    """Canonical dataset name of ``text``; None if unreadable.

    A dataset that is ``tested`` on (a target, or the one dataset of a USL / supervised task) carries
    its test size when it is VehicleID or VERI-Wild (``vehicleid@800``); a source is trained on, so it
    has none and a size given for it is refused.
    """
    t = text.strip().lower()
    size: Optional[int] = None
    # The workbench labels options in brackets ("vehicleid (test_size=1600)", "cuhk03np (subset=labeled)"):
    # only the test size names a different published table; other options are ignored.
    for opts in re.findall(r"\(([^)]*)\)", t):
        found = re.search(r"test_?size\s*=\s*(\d+)", opts) or re.fullmatch(r"\s*(?:test\s*)?(\d+)\s*", opts)
        if found:
            size = int(found.group(1))
    squashed = re.sub(r"[\s\-_.]", "", re.sub(r"\([^)]*\)", "", t))
    for alias, name in _ALIASES:
        if not squashed.startswith(alias):
            continue
        rest = squashed[len(alias):]
        if name not in TEST_SIZES or not tested:
            return name if not rest and size is None else None
        sizes = TEST_SIZES[name]
        if rest:
            found = re.fullmatch(r"@?(?:test)?(\d+)", rest)
            given = int(found.group(1)) if found else (sizes[_SIZE_WORDS[rest]] if rest in _SIZE_WORDS else None)
            if given is None or (size is not None and size != given):
                return None
            size = given
        size = sizes[0] if size is None else size
        return f"{name}@{size}" if size in sizes else None
    return None


def canonical_task(task: str) -> str:
    """The canonical name of ``task`` (``"Market→CUHK03"`` -> ``"market1501->cuhk03np"``).

    Case-insensitive; ``→`` or ``->`` between source and target; a dataset alone for USL and supervised
    results. Raises :class:`~corelib.errors.UnknownNameError` naming the known tasks when a name cannot
    be read or no published record has that task.
    """
    if not isinstance(task, str):
        raise InvalidInputError(f"a task is a string such as 'market1501->cuhk03np', not {type(task).__name__}")
    parts = task.replace("→", "->").split("->")
    names = [_dataset(p, tested=i == len(parts) - 1) for i, p in enumerate(parts)]
    canonical = "->".join(names) if len(parts) <= 2 and None not in names else None
    if canonical not in _TASKS:
        read = f" (read as {canonical!r})" if canonical else ""
        raise UnknownNameError(f"no published results for task {task!r}{read}; known tasks: {', '.join(list_tasks())}")
    return canonical


def list_tasks(setting: Optional[str] = None) -> list[str]:
    """The canonical tasks with published records (of ``setting`` only, when given), in source order."""
    _check_setting(setting)
    return list(dict.fromkeys(r.task for r in PUBLISHED if setting is None or r.setting == setting))


def list_methods(task: Optional[str] = None) -> list[str]:
    """The method names with published records (on ``task`` only, when given), in source order."""
    wanted = canonical_task(task) if task is not None else None
    return list(dict.fromkeys(r.method for r in PUBLISHED if wanted is None or r.task == wanted))


def _check_setting(setting: Optional[str]) -> None:
    if setting is not None and setting not in SETTINGS:
        raise InvalidInputError(f"unknown setting {setting!r}; valid settings: {', '.join(SETTINGS)}")


def published_results(task: Optional[str] = None, method: Optional[str] = None,
                      setting: Optional[str] = None) -> list[PublishedResult]:
    """The published records, optionally of one task, method and setting.

    Args:
        task: any spelling :func:`canonical_task` reads; an unknown one raises
            :class:`~corelib.errors.UnknownNameError` naming the known tasks.
        method: case-insensitive part of the method name (``"spcl"`` finds ``SpCL`` and
            ``SpCL+ (OpenUnReID)``); one that no record has raises ``UnknownNameError`` naming the methods.
        setting: ``uda``, ``usl`` or ``supervised``.

    A filter that matches records on its own but none together with the others gives an empty list.
    """
    _check_setting(setting)
    wanted = canonical_task(task) if task is not None else None
    if method is not None:
        needle = method.strip().lower()
        if not any(needle in r.method.lower() for r in PUBLISHED):
            raise UnknownNameError(f"no published results for method {method!r}; known methods: "
                                   f"{', '.join(list_methods())}")
    return [r for r in PUBLISHED
            if (wanted is None or r.task == wanted) and (setting is None or r.setting == setting)
            and (method is None or method.strip().lower() in r.method.lower())]


def published_beside(method: Optional[str], task: Optional[str], evaluated_on: str, *,
                     backbone: str = "") -> list[PublishedResult]:
    """The published rows to print beside a measurement of ``method``'s weights for ``task`` made on
    the dataset ``evaluated_on`` (a loader name): the records of exactly that method and task whose
    backbone is unnamed or ``backbone``, when ``evaluated_on`` is the task's tested dataset (the
    target of ``"source->target"``, the dataset of a supervised task); none otherwise (a method or
    task the tables do not hold included)."""
    if not method or not task:
        return []
    try:
        wanted = canonical_task(task)
    except (InvalidInputError, UnknownNameError):  # a task the tables do not hold
        return []
    tested = wanted.split("->")[-1].split("@")[0]
    if tested != evaluated_on:
        return []
    return [r for r in PUBLISHED if r.task == wanted and r.method == method and r.backbone in ("", backbone)]


__all__ = ["METRIC_FIELDS", "PUBLISHED", "PublishedResult", "SETTINGS", "TEST_SIZES", "canonical_task", "list_methods",
           "list_tasks", "published_beside", "published_results"]
