"""Experiment sweeps: the chapters run over a grid of parameters, one run directory per point.

A sweep file (YAML) names the chapters, the parameters shared by every point and the grid::

    chapters: ["02", "03"]
    parameters: {PAIRS: ["person"]}
    grid:
      FINETUNE_OVERRIDES.cluster.num_clusters: [120, 160]   # A.b sets field b of the dict parameter A
      FINETUNE_OVERRIDES.model.ecab: [true, false]          # (b may be dotted: a setting of a group)

Every combination gets ``ROOT/<point name>/`` with ``sweep.json`` (the point's values, every
parameter passed to the chapters and the chapters run) and its figures in
``ROOT/<point name>/figures/`` (never in the curated ``figures/``); ``sweep_done.json`` is written
once the point's chapters have all run. A point that fails gets ``sweep_failed.json`` (its error and
the executed notebook of the failing chapter) instead, and the other points still run
(:func:`run_sweep`). :mod:`corelib.results` and chapter 08 gather the runs into
tables.

**Point names** are readable and never shared by two points: ``num_clusters=120,ecab=true``.

- A key is shortened to its last dotted part (``num_clusters``) unless another key of the grid has
  the same last part (``a.x`` and ``b.x``): those keep their full dotted key.
- A value is written as it is (a text) or as JSON (numbers, true/false, lists). When the name had to
  be changed to be a safe folder name (``/``, spaces, ``,`` or ``=`` inside a value), when a text
  value reads as a JSON literal of another type (the text ``"1"`` beside the number ``1``), or when
  the name is longer than :data:`MAX_NAME` characters, a short hash of the point's JSON is
  appended (``tag=a_b-1f3a9c02``): ``"a/b"`` and ``"a_b"`` get different folders, and a point's
  folder does not depend on which other points the grid has.
- Two points of one grid that still end up with names equal up to case (folders are one on a
  case-insensitive disk) are refused before anything runs.

**Running a sweep again** compares each point's folder with what would run now, before any point
runs:

- a folder whose ``sweep.json`` records the same parameters and chapters is the same point:
  skipped when finished, continued with ``RESUME`` when interrupted (the training loops continue
  from their ``last.pt``). A parameter left out is compared as the chapters' default, so a sweep
  run without ``SMOKE`` and one with ``SMOKE: false`` are the same.
- a folder recorded with other parameters (a smoke sweep, then the full one) is refused with the
  parameters that differ, ``recorded -> now``: its results are not the point's. With
  ``rerun_changed`` the old folder is renamed to ``<point>.replaced-<UTC time>`` (never deleted; the
  chapters have no parameter to overwrite their stages, so nothing of the old run may stay where
  the new one resumes) and the point runs afresh; :func:`corelib.results.find_runs` leaves the
  replaced folders out, so chapter 08 does not mix them into the tables.
- a folder without a ``sweep.json`` written by the workbench is not a point of any sweep (someone's
  run directory, a copy): it is refused, never adopted. An empty folder is taken.

**Where points run** is the launcher's business (:mod:`corelib.launch`): one after another in this
process, or each as a job (``corelib run-point POINT``, :func:`run_point`) of submitit's local
executor or of a Slurm job array, into the same folders; :func:`sweep_status` reads each point's
state from its folder and its job record.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from . import notebooks
from .errors import ConfigError, NotOwnedError, Preempted, SweepFailed
from .launch import IN_FLIGHT, JobCommand, LauncherCfg, corelib_argv, job_alive, last_lines, read_job, submit
from .notebooks import chapter_parameters, check_parameters, select_chapters
from .ownership import RunLock, set_aside
from .paths import atomic_write_text
from .runtime import preemption
from .yamlfile import read_yaml

WRITTEN_BY = "corelib.sweeps"
"""The ``written_by`` of a point's ``sweep.json``: what makes a folder a sweep point."""

MAX_NAME = 120
"""Longest point name kept as it is (with the hash, well below the 255 bytes of a file name)."""

FAILED_RECORD = "sweep_failed.json"
"""A failed point's record (its error, traceback and executed notebook); the point has no ``sweep_done.json``."""

REPLACED_PATTERN = re.compile(r"\.replaced-\d{8}T\d{6}Z(-\d+)?$")
"""The end of a folder name that a rerun (or an overwrite) set aside: ``<name>.replaced-<UTC time>``."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")  # in a key or a value; "=" and "," separate them in a name
_MISSING = object()


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict]:
    """Every combination of the grid's values, in the order of its keys: ``[{key: value}, ...]``.

    Raises:
        ConfigError: a grid entry is not a non-empty list.
    """
    if not isinstance(grid, Mapping):
        raise ConfigError(f"a grid is a mapping NAME: [values, ...], got {type(grid).__name__}")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"grid entry {key!r} must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _point_hash(point: Mapping[str, Any]) -> str:
    """Eight hex digits of the point's JSON: what keeps names apart that sanitising made equal."""
    text = json.dumps(point, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _value_text(value: Any) -> tuple[str, bool]:
    """A value as it appears in a point name, and whether that text is ambiguous (a text that reads
    as a JSON literal of another type: ``"1"`` would be named as the number 1)."""
    if not isinstance(value, str):
        return json.dumps(value), False
    try:
        ambiguous = not isinstance(json.loads(value), str)
    except ValueError:
        ambiguous = False
    return value, ambiguous


def point_name(point: Mapping[str, Any]) -> str:
    """A folder name for a grid point, readable and unique: ``num_clusters=120,ecab=true`` (the rules
    are in the module docstring)."""
    keys = list(point)
    shorts = [k.split(".")[-1] for k in keys]
    labels = [short if shorts.count(short) == 1 else key for key, short in zip(keys, shorts)]
    parts, changed = [], False
    for label, value in zip(labels, point.values()):
        text, ambiguous = _value_text(value)
        safe_label, safe_text = _UNSAFE.sub("_", label), _UNSAFE.sub("_", text)
        changed |= ambiguous or safe_label != label or safe_text != text
        parts.append(f"{safe_label}={safe_text}")
    name = ",".join(parts) or "default"
    # a name ending as a set-aside folder does would be left out of the results
    if changed or len(name) > MAX_NAME or REPLACED_PATTERN.search(name):
        name = f"{name[:MAX_NAME]}-{_point_hash(point)}"
    return name


def point_parameters(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict:
    """``base`` with the point's values applied; ``A.b`` sets field ``b`` of the dict parameter ``A``
    (``FINETUNE_OVERRIDES.cluster.num_clusters`` sets the dotted override ``cluster.num_clusters``)."""
    params = json.loads(json.dumps(dict(base)))  # a deep copy of plain values
    for key, value in point.items():
        if "." in key:
            name, field = key.split(".", 1)
            if not isinstance(params.setdefault(name, {}), dict):
                raise ConfigError(f"{key}: parameter {name} is not a dict")
            params[name][field] = value
        else:
            params[key] = value
    return params


def load_sweep(path: Union[str, Path]) -> dict:
    """Read a sweep file: ``{"chapters": [...], "parameters": {...}, "grid": {...}}``.

    Raises:
        MissingFileError: no such file.
        ConfigError: a file :func:`~corelib.yamlfile.read_yaml` refuses (invalid YAML, too large,
            aliases that expand too far), unknown top-level keys, no grid, or a part of the wrong kind.
    """
    spec = read_yaml(path, what="sweep file") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with chapters, parameters and grid")
    unknown = set(spec) - {"chapters", "parameters", "grid", "launcher"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; a sweep file has chapters, parameters, grid and "
                          f"(optional) launcher")
    if not spec.get("grid"):
        raise ConfigError(f"{path}: no grid; add e.g. grid: {{SEED: [1, 2]}}")
    if not isinstance(spec["grid"], dict):
        raise ConfigError(f"{path}: grid is a mapping NAME: [values, ...], e.g. grid: {{SEED: [1, 2]}}")
    if not isinstance(spec.get("parameters") or {}, dict):
        raise ConfigError(f"{path}: parameters is a mapping NAME: value, e.g. parameters: {{PAIRS: [person]}}")
    chapters = spec.get("chapters")
    if chapters is not None and not isinstance(chapters, list):
        raise ConfigError(f"{path}: chapters is a list such as [\"02\", \"03\"], got {chapters!r}")
    launcher = spec.get("launcher")
    if launcher is not None:
        LauncherCfg.from_mapping(launcher, f"{path}: launcher")  # refused here, before any point runs
    return {"chapters": chapters, "parameters": spec.get("parameters") or {}, "grid": spec["grid"],
            "launcher": launcher}


def _same(a: Any, b: Any) -> bool:
    """Equal as recorded values: a bool is no number, 1 and 1.0 are the same number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _defaults(chapters: Sequence[Path]) -> dict:
    """The default of each parameter the chapters declare, where they agree on it: what a chapter
    uses when the sweep leaves the parameter out."""
    seen: dict[str, list] = {}
    for chapter in chapters:
        for name, decl in chapter_parameters(chapter).items():
            if decl.literal:
                seen.setdefault(name, []).append(decl.default)
    return {name: json.loads(json.dumps(values[0])) for name, values in seen.items()
            if all(_same(v, values[0]) for v in values)}


def _differences(recorded: Mapping, now: Mapping, defaults: Mapping) -> list[str]:
    """``NAME: recorded -> now`` for each parameter that differs (a missing one as its default)."""
    out = []
    for name in sorted(set(recorded) | set(now)):
        before = recorded.get(name, defaults.get(name, _MISSING))
        after = now.get(name, defaults.get(name, _MISSING))
        if not _same(before, after):
            show = lambda v: "(not given)" if v is _MISSING else json.dumps(v)  # noqa: E731
            out.append(f"{name}: {show(before)} -> {show(after)}")
    return out


def _read_record(run_dir: Path) -> Optional[dict]:
    """What ``run_dir`` holds as a point: its ``sweep.json`` (with the chapters of ``sweep_done.json``
    when an earlier version did not record them), None for an empty folder.

    Raises:
        NotOwnedError: the folder holds something that is not a sweep point of the workbench.
    """
    if not run_dir.is_dir():
        raise NotOwnedError(f"{run_dir} exists and is not a folder; it cannot be a sweep point: move it away or "
                            f"give another --root")
    record_path = run_dir / "sweep.json"
    if not record_path.is_file():
        if not any(run_dir.iterdir()):
            return None
        raise NotOwnedError(f"{run_dir} exists but holds no sweep.json written by corelib sweep, so it is no point "
                            f"of this sweep and is left alone; move it away or give another --root")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = None
    legacy = isinstance(record, dict) and "written_by" not in record  # before the marker was written
    if not (isinstance(record, dict) and (legacy or record.get("written_by") == WRITTEN_BY)
            and isinstance(record.get("point"), dict) and isinstance(record.get("parameters"), dict)):
        raise NotOwnedError(f"{record_path} was not written by corelib sweep (no point and parameters in it), so "
                            f"{run_dir} is no point of this sweep and is left alone; move it away or give another "
                            f"--root")
    if not isinstance(record.get("chapters"), list):
        done = _read_done(run_dir)
        chapters = [c.get("chapter") for c in done.get("chapters", [])] if done else None
        record["chapters"] = chapters if chapters and all(isinstance(c, str) for c in chapters) else None
    return record


def _read_done(run_dir: Path) -> Optional[dict]:
    """``sweep_done.json`` of a point, None while it has not finished (or the file is unreadable)."""
    try:
        done = json.loads((run_dir / "sweep_done.json").read_text())
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def _set_aside(run_dir: Path) -> Path:
    """Rename ``run_dir`` to ``<name>.replaced-<UTC time>`` (:func:`corelib.ownership.set_aside`); never
    delete, and never move a point that a live process is running in.

    Raises:
        RunDirBusyError: another process holds the point's run directory.
    """
    with RunLock(run_dir, what="sweep --rerun-changed"):  # refused, naming the holder, while a run is there
        pass
    return set_aside(run_dir)


def plan_sweep(root: Union[str, Path], grid: Mapping[str, Sequence[Any]], *, parameters: Optional[Mapping] = None,
               chapters: Optional[Sequence[str]] = None, notebooks_dir: Optional[Path] = None) -> list[dict]:
    """What :func:`run_sweep` would do with each point, decided without running anything.

    Returns one dict per point: ``name``, ``run_dir``, ``point``, ``parameters`` (passed to the
    chapters), ``chapters`` (file stems) and ``state``: ``"new"``, ``"interrupted"`` (continued with
    ``RESUME``), ``"finished"`` (skipped) or ``"changed"`` (recorded with other parameters; then
    ``differences`` lists them as ``NAME: recorded -> now``).

    Raises:
        InvalidInputError: a chapter entry names no chapter.
        ConfigError: a parameter no chapter declares or of the wrong type, or two points whose folders
            would be the same.
        NotOwnedError: a point's folder exists and is not a sweep point of the workbench.
    """
    root = Path(root)
    selected = select_chapters(chapters, notebooks_dir)
    stems = [p.stem for p in selected]
    points = expand_grid(grid)
    names: dict[str, dict] = {}
    for point in points:
        key = point_name(point).lower()
        if key in names:
            raise ConfigError(f"sweep points {names[key]} and {point} would share the folder {point_name(point)!r} "
                              f"(names equal up to case); make the grid values differ by more than case or "
                              f"punctuation")
        names[key] = point
    defaults = _defaults(selected)
    plan = []
    for point in points:
        name = point_name(point)
        run_dir = root / name
        params = point_parameters({**(parameters or {}), "RESUME": True}, point)
        try:
            check_parameters(params, notebooks_dir, chapters=selected)
        except ConfigError as e:
            raise ConfigError(f"sweep point {name}: {e}") from e
        entry = {"name": name, "run_dir": run_dir, "point": point, "parameters": params, "chapters": stems,
                 "state": "new", "differences": []}
        record = _read_record(run_dir) if run_dir.exists() else None
        if record is not None:
            now = json.loads(json.dumps(params))  # as it will be recorded: tuples are lists
            differences = _differences(record["parameters"], now, defaults)
            if record["chapters"] != stems:
                shown = "(not recorded)" if record["chapters"] is None else json.dumps(record["chapters"])
                differences.append(f"chapters: {shown} -> {json.dumps(stems)}")
            if differences:
                entry.update(state="changed", differences=differences)
            else:
                entry["state"] = "finished" if (run_dir / "sweep_done.json").is_file() else "interrupted"
        plan.append(entry)
    return plan


def _refuse_changed(changed: Sequence[dict]) -> ConfigError:
    """One line: the first changed point with its differences, the others by name, and the two ways out."""
    first = changed[0]
    others = [c["name"] for c in changed[1:]]
    more = ""
    if others:
        more = f"; {len(others)} more point(s) differ: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}"
    return ConfigError(f"sweep point {first['name']} ({first['run_dir']}) was run with other parameters "
                       f"({'; '.join(first['differences'])}){more}; its results are not this point's. Rerun the "
                       f"changed points with `corelib sweep ... --rerun-changed` (run_sweep(rerun_changed=True); "
                       f"the old folders are kept as <point>.replaced-<UTC time>) or give another --root")


def run_sweep(root: Union[str, Path], grid: Mapping[str, Sequence[Any]], *, parameters: Optional[Mapping] = None,
              chapters: Optional[Sequence[str]] = None, execution_timeout: Optional[int] = None,
              rerun_changed: bool = False, fail_fast: bool = False, notebooks_dir: Optional[Path] = None,
              launcher: Optional[LauncherCfg] = None, resubmit: bool = False,
              only: Optional[Sequence[int]] = None) -> list[dict]:
    """Run ``chapters`` once per grid point into ``root/<point name>/``; finished points are skipped.

    Every point is checked first (:func:`plan_sweep`): the chapters, the parameters' names and
    types, the folders. A point recorded with other parameters is refused, or, with
    ``rerun_changed``, its folder is set aside as ``<point>.replaced-<UTC time>`` and the point runs
    afresh.

    A point that fails does not stop the sweep: its error (with the traceback) and the executed
    notebook of the failing chapter (``RUN_DIR/notebooks/<chapter>.ipynb``, which holds the chapter's
    own traceback) go to the point's ``sweep_failed.json``, and the next points run. A failed point
    has no ``sweep_done.json``, so running the sweep again retries it (as an interrupted point). Once
    every point has run, a summary lists the failed ones and :class:`~corelib.errors.SweepFailed` is
    raised, its ``records`` holding every point's record: a script never takes a partial sweep for
    a whole one. With ``fail_fast`` the first failing point's own error is raised at once (after its
    ``sweep_failed.json`` is written) and later points do not run. A KeyboardInterrupt always stops
    the sweep at once.

    ``launcher`` (:class:`~corelib.launch.LauncherCfg`) other than ``local`` runs each point as a job
    (``corelib run-point POINT``, :func:`run_point`) of submitit's local executor or of a Slurm job
    array, with its record and logs in ``POINT/launcher/``; a point whose job is queued or running
    is not submitted again unless ``resubmit``. ``fail_fast`` is for the local launcher only.
    ``only`` runs the points of these 0-based indices of the grid's order (a plain ``sbatch --array``
    task runs ``corelib sweep FILE --point $SLURM_ARRAY_TASK_ID``).

    Returns one record per point (when none failed): name, run directory, the point, whether it ran
    now, the folder its old results were moved to (``replaced``, None when none) and ``failed``
    (None; for a failed point ``{"error", "executed_notebook", "record"}``); with a launcher that
    leaves its jobs queued, ``ran`` means submitted and ``job`` holds the job record.

    Raises:
        ConfigError: points recorded with other parameters (without ``rerun_changed``), named with
            the parameters that differ; and what :func:`plan_sweep` raises. Nothing has run then.
        SweepFailed: points failed; every point ran (without ``fail_fast``).
    """
    plan = plan_sweep(root, grid, parameters=parameters, chapters=chapters, notebooks_dir=notebooks_dir)
    if only is not None:
        wrong = [i for i in only if not 0 <= i < len(plan)]
        if wrong:
            raise ConfigError(f"sweep point index {wrong[0]} is out of range: the grid has {len(plan)} points, "
                              f"0 to {len(plan) - 1} (`corelib sweep FILE --status` numbers them)")
        plan = [plan[i] for i in only]
    changed = [p for p in plan if p["state"] == "changed"]
    if changed and not rerun_changed:
        raise _refuse_changed(changed)
    if launcher is not None and launcher.launcher != "local":
        return _submit_sweep(root, plan, launcher, execution_timeout=execution_timeout, resubmit=resubmit,
                             notebooks_dir=notebooks_dir)
    records = []
    for i, entry in enumerate(plan, 1):
        name, run_dir, point = entry["name"], entry["run_dir"], entry["point"]
        if entry["state"] == "finished":
            print(f"[sweep {i}/{len(plan)}] {name}: finished earlier, skipped", flush=True)
            records.append({"name": name, "run_dir": str(run_dir), "point": point, "ran": False, "replaced": None,
                            "failed": None})
            continue
        replaced = _prepare_point(entry, f"[sweep {i}/{len(plan)}]")
        print(f"[sweep {i}/{len(plan)}] {name} -> {run_dir}", flush=True)
        record = {"name": name, "run_dir": str(run_dir), "point": point, "ran": True,
                  "replaced": str(replaced) if replaced else None, "failed": None}
        records.append(record)
        try:
            record["failed"] = run_point(run_dir, execution_timeout=execution_timeout, notebooks_dir=notebooks_dir,
                                         reraise=fail_fast)
        except Preempted:  # its job's time is up: nothing failed, the point resumes when run again
            raise
        except Exception as e:  # noqa: BLE001 - fail_fast: said like any failure, then the point's own error
            print(f"[sweep {i}/{len(plan)}] {name} FAILED: {f'{type(e).__name__}: {e}'.splitlines()[0]}", flush=True)
            raise
        if record["failed"]:
            print(f"[sweep {i}/{len(plan)}] {name} FAILED: {record['failed']['error'].splitlines()[0]}", flush=True)
    failed = [r for r in records if r["failed"]]
    if failed:
        raise _summarise_failures(failed, records)
    return records


def _prepare_point(entry: Mapping[str, Any], label: str) -> Optional[Path]:
    """Make the point's folder ready to run: set a changed one aside, write ``sweep.json`` (what
    :func:`run_point` runs). Returns the folder the old run went to, if any."""
    name, run_dir = entry["name"], entry["run_dir"]
    if (run_dir / FAILED_RECORD).is_file():
        print(f"{label} {name}: failed earlier ({run_dir / FAILED_RECORD}), retried", flush=True)
    replaced = None
    if entry["state"] == "changed":
        replaced = _set_aside(run_dir)
        print(f"{label} {name}: recorded with other parameters ({'; '.join(entry['differences'])}); the old run "
              f"is kept as {replaced}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "sweep.json", json.dumps(
        {"written_by": WRITTEN_BY, "point": entry["point"], "parameters": entry["parameters"],
         "chapters": entry["chapters"]}, indent=2) + "\n")
    return replaced


def run_point(run_dir: Union[str, Path], *, execution_timeout: Optional[int] = None,
              notebooks_dir: Optional[Path] = None, reraise: bool = False) -> Optional[dict]:
    """Run one sweep point from its ``sweep.json`` (its parameters and chapters, written by the sweep)
    into its folder: what every launcher runs for a point (``corelib run-point POINT`` in a job).

    Writes ``sweep_done.json`` when the chapters have all run (and removes an earlier try's
    ``sweep_failed.json``) and returns None; a failing point gets ``sweep_failed.json`` and its
    ``{"error", "executed_notebook", "record"}`` is returned (raised with ``reraise``). A point
    stopped by its job (a cluster's time limit, :mod:`corelib.runtime.preemption`) raises
    :class:`~corelib.errors.Preempted` and records no failure: run again, it resumes.

    Raises:
        NotOwnedError: the folder holds no ``sweep.json`` written by the sweep.
        Preempted: the job asked the point to stop.
    """
    run_dir = Path(run_dir)
    record = _read_record(run_dir) if run_dir.is_dir() else None
    if record is None or not isinstance(record.get("chapters"), list):
        raise NotOwnedError(f"{run_dir} holds no sweep point (sweep.json with its parameters and chapters); "
                            f"`corelib sweep FILE` writes one per point")
    point, params = record["point"], record["parameters"]
    # a point's figures stay in its run directory (RUN_DIR/figures), never in the curated figures/
    previous = os.environ.get("COREREID_FIGURES")
    os.environ["COREREID_FIGURES"] = str((run_dir / "figures").resolve())
    try:
        chapter_records = notebooks.run_notebooks(run_dir, parameters=params, chapters=record["chapters"],
                                                  notebooks_dir=notebooks_dir, execution_timeout=execution_timeout,
                                                  progress=False)
    except Exception as e:  # noqa: BLE001 - any failure of a point is recorded; KeyboardInterrupt stops the sweep
        if preemption.stop_requested():  # its job's time is up: the chapters' loops saved their state
            raise Preempted(f"sweep point {run_dir.name} stopped on request ({type(e).__name__}); run it again to "
                            f"resume") from e
        failure = _record_failure(run_dir, point, e)
        if reraise:
            raise
        return failure
    finally:
        if previous is None:
            os.environ.pop("COREREID_FIGURES", None)
        else:
            os.environ["COREREID_FIGURES"] = previous
    atomic_write_text(run_dir / "sweep_done.json", json.dumps(
        {"point": point, "parameters": params, "chapters": chapter_records}, indent=2) + "\n")
    (run_dir / FAILED_RECORD).unlink(missing_ok=True)  # an earlier try's failure, superseded by this run
    return None


def point_log_dir(run_dir: Union[str, Path]) -> Path:
    """Where a point's job keeps its record and logs."""
    return Path(run_dir) / "launcher"


def _submit_sweep(root: Union[str, Path], plan: Sequence[dict], launcher: LauncherCfg, *,
                  execution_timeout: Optional[int], resubmit: bool, notebooks_dir: Optional[Path]) -> list[dict]:
    """The points as jobs of ``launcher``: prepared here, run by ``corelib run-point`` in each job."""
    records, commands = [], []
    for i, entry in enumerate(plan, 1):
        name, run_dir, point = entry["name"], entry["run_dir"], entry["point"]
        label = f"[sweep {i}/{len(plan)}]"
        record = {"name": name, "run_dir": str(run_dir), "point": point, "ran": False, "replaced": None,
                  "failed": None, "job": None}
        records.append(record)
        if entry["state"] == "finished":
            print(f"{label} {name}: finished earlier, skipped", flush=True)
            continue
        job = read_job(point_log_dir(run_dir))
        if job and job.get("state") in IN_FLIGHT and job_alive(job) is not False and not resubmit:
            print(f"{label} {name}: job {job.get('job_id')} is {job['state']}, not submitted again (--status shows "
                  f"it; --resubmit when that job is gone)", flush=True)
            record["job"] = job
            continue
        replaced = _prepare_point(entry, label)
        record.update(ran=True, replaced=str(replaced) if replaced else None)
        arguments = ["run-point", str(Path(run_dir).resolve())]
        if execution_timeout:
            arguments += ["--timeout", str(execution_timeout)]
        if notebooks_dir is not None:
            arguments += ["--notebooks-dir", str(Path(notebooks_dir).resolve())]
        argv = corelib_argv(arguments)
        commands.append((record, JobCommand(argv, argv, point_log_dir(run_dir).resolve(), name, launcher.grace_s)))
    jobs = submit(launcher, [c for _, c in commands], Path(root) / ".submitit", name="corelib-sweep")
    for (record, _), job in zip(commands, jobs):
        record["job"] = job
        print(f"[sweep] {record['name']}: job {job.get('job_id')} {job.get('state')}", flush=True)
    waited = launcher.launcher == "submitit-local" or launcher.wait
    if not waited:
        return records
    for record in records:  # what the points' folders say once their jobs ended
        run_dir = Path(record["run_dir"])
        if record["ran"] and not (run_dir / "sweep_done.json").is_file():
            failure = _read_failure(run_dir)
            job = read_job(point_log_dir(run_dir)) or {}
            record["failed"] = failure or {"error": f"job {job.get('job_id')} ended {job.get('state')} without a "
                                                    f"result; its log: {job.get('log')}",
                                           "executed_notebook": None, "record": job.get("log")}
    failed = [r for r in records if r["failed"]]
    if failed:
        raise _summarise_failures(failed, records)
    return records


def _read_failure(run_dir: Path) -> Optional[dict]:
    """A failed point's ``{"error", "executed_notebook", "record"}`` from its ``sweep_failed.json``."""
    try:
        failed = json.loads((run_dir / FAILED_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return {"error": str(failed.get("error")), "executed_notebook": failed.get("executed_notebook"),
            "record": str(run_dir / FAILED_RECORD)}


def sweep_status(root: Union[str, Path], grid: Mapping[str, Sequence[Any]], *, parameters: Optional[Mapping] = None,
                 chapters: Optional[Sequence[str]] = None, notebooks_dir: Optional[Path] = None) -> list[dict]:
    """Each point's state, read from its folder and its job record (not from the queue):

    ``new`` (never run), ``pending`` / ``running`` / ``requeued`` (its job), ``interrupted`` (started,
    no job running: run the sweep again to resume), ``lost`` (its job's process is gone without a
    record, seen on the job's own host), ``finished``, ``failed`` (``detail``: its error and the last
    lines of its job's log), ``changed`` (recorded with other parameters).

    Returns one dict per point: ``name``, ``state``, ``job_id``, ``attempt``, ``detail`` (lines).
    """
    rows = []
    for entry in plan_sweep(root, grid, parameters=parameters, chapters=chapters, notebooks_dir=notebooks_dir):
        run_dir = entry["run_dir"]
        job = read_job(point_log_dir(run_dir)) if run_dir.is_dir() else None
        state, detail = entry["state"], []
        if state == "changed":
            detail = list(entry["differences"])
        elif state == "interrupted":
            failure = _read_failure(run_dir)
            if failure:
                state = "failed"
                detail = [failure["error"].splitlines()[0]]
                if failure["executed_notebook"]:
                    detail.append(f"executed notebook: {failure['executed_notebook']}")
                detail += last_lines(job.get("log")) if job else []
            elif job and job.get("state") in IN_FLIGHT:
                alive = job_alive(job) if job.get("state") == "running" else None
                state = "lost" if alive is False else job["state"]
                if alive is False:
                    detail = [f"the job's process {job.get('pid')} on {job.get('host')} is gone; run the sweep "
                              f"again with --resubmit"] + last_lines(job.get("log"))
            elif job and job.get("state") == "failed":
                state = "failed"
                detail = last_lines(job.get("log"))
        rows.append({"name": entry["name"], "state": state, "job_id": job.get("job_id") if job else None,
                     "attempt": job.get("attempt") if job else None, "detail": detail})
    return rows


def _record_failure(run_dir: Path, point: Mapping[str, Any], error: Exception) -> dict:
    """Write the point's :data:`FAILED_RECORD` (the error, its traceback, the executed notebook of the
    failing chapter) and return ``{"error", "executed_notebook", "record"}``; a record that cannot be
    written (a full disk) is said so in ``record``, and the sweep goes on."""
    executed = getattr(error, "executed", None)
    failure = {"error": f"{type(error).__name__}: {error}", "executed_notebook": str(executed) if executed else None}
    try:
        atomic_write_text(run_dir / FAILED_RECORD, json.dumps(
            {"written_by": WRITTEN_BY, "point": point, **failure, "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                           time.gmtime()),
             "traceback": "".join(traceback.format_exception(error))}, indent=2) + "\n")
        failure["record"] = str(run_dir / FAILED_RECORD)
    except OSError as e:
        failure["record"] = f"not written ({e})"
    return failure


def _summarise_failures(failed: Sequence[dict], records: list[dict]) -> SweepFailed:
    """Print every failed point (its error's first line, executed notebook and record); the one-line
    error the sweep ends with."""
    print(f"[sweep] {len(failed)} of {len(records)} point(s) failed:", flush=True)
    for r in failed:
        where = r["failed"]["executed_notebook"] or "no executed notebook"
        print(f"  {r['name']}: {r['failed']['error'].splitlines()[0]} | executed notebook: {where} | "
              f"record: {r['failed']['record']}", flush=True)
    names = [r["name"] for r in failed]
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return SweepFailed(f"{len(failed)} of {len(records)} sweep point(s) failed ({shown}); every other point ran. "
                       f"Each failed point's {FAILED_RECORD} holds its error and executed notebook; fix the cause "
                       f"and run the sweep again: finished points are skipped, failed ones retried", records)
