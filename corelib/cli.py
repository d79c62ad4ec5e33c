"""The ``corelib`` command line: ``synth``, ``verify``, ``datasets``, ``style``, ``pretrain``,
``finetune``, ``evaluate``, ``convert``, ``export``, ``run-notebooks``, ``report``, ``sweep``, ``run-point``,
``bench``, ``env``.

``sweep``, ``run-notebooks``, ``pretrain``, ``finetune`` and ``style train`` take ``--launcher``
(:mod:`corelib.launch`): ``local`` runs here as always, ``submitit-local`` and ``slurm`` run the
same command line as jobs that survive time limits and preemption (README, "Running on a cluster").

Training commands name their data as ``--source NAME [ROOT] [OPTION=VALUE ...]`` (a loader with
its options, e.g. ``--target cuhk03np ~/datasets subset=labeled``, or an embedded preset) and
resolve their recipe exactly as the chapters do (:func:`corelib.recipes.resolve_recipe`): the
paper's for real data (``finetune --target veri776 ROOT`` trains with k = 500), the CPU recipe of
``make demo`` for embedded presets, the CI-sized one with ``--smoke``. A YAML ``--config`` (fields
of :class:`~corelib.config.PretrainCfg` / :class:`~corelib.config.FinetuneCfg`, nested as
``config.yaml`` is written) and ``-o NAME=VALUE`` overrides (dotted: ``-o cluster.num_clusters=700``)
come on top; ``--print-config`` prints the resolved recipe and trains nothing. The loops write it
to ``RUN_DIR/<stage>/config.yaml``. Under ``torchrun`` the same commands train on every process.

A training command owns its run directory while it runs (a second one there is refused, naming
the first) and never replaces a finished stage unless told: ``--resume`` continues it,
``--overwrite`` sets it aside as ``<stage>.replaced-<time>`` (README, "Safety").

Errors that corelib raises on purpose (wrong root, unknown name, bad manifest, a value out of
range, a busy run directory, an unreadable checkpoint) are printed as one readable message with
exit status 2, not as a traceback; an unexpected error keeps its traceback; ``verify`` exits 1
when the copy has problems.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .budget_study import headline_table, run_variant, save_study
from .data.dataset import expected_layout, list_datasets
from .data.manifests import images_to_check, list_manifests, verify_dataset
from .data.synthetic import PRESETS, generate_synthetic, list_presets
from .errors import ConfigError, CorelibError, MissingFileError, Preempted, RunExistsError, SweepFailed
from .export import ONNX_OPSET, check_export, export_onnx
from .launch import LAUNCHERS, JobCommand, LauncherCfg, corelib_argv, list_launchers, submit
from .models.complexity import complexity_table, format_complexity
from .models.convert import FORMATS, convert_checkpoint, list_formats
from .notebooks import coerce_parameter, run_notebooks
from .pairs import dataset_ref, recipe_context
from .paths import write_error
from .recipes import resolve_recipe
from .report import write_report
from .repro import env_report, resolve_device
from .runtime.checkpoint import holds_run
from .runtime.preemption import PREEMPTED_EXIT
from .settings import config_yaml, merge_overrides, read_mapping
from .style import load_style_set, style_gap, summarize_gap, train_style_models, write_style_set
from .sweeps import load_sweep, run_point, run_sweep, sweep_status
from .training import evaluate_checkpoint, finetune, pretrain
from .yamlfile import parse_yaml, read_yaml


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.list or not args.preset:
        for name in list_presets():
            print(f"{name:<16} {PRESETS[name].description}")
        return 0
    if args.root is None:
        raise CorelibError("corelib synth needs a ROOT folder: corelib synth PRESET ROOT")
    names = list_presets() if args.preset == "all" else [args.preset]
    for name in names:
        out = generate_synthetic(name, args.root, scale=args.scale, workers=args.workers, overwrite=args.overwrite)
        print(f"{name}: {out}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    report = verify_dataset(args.name, args.root, check_images=images_to_check(args.images, "--images"),
                            progress=not args.quiet)
    print(report.format())
    return 0 if report.ok else 1


def _cmd_datasets(args: argparse.Namespace) -> int:
    print("loaders (build_dataset names):")
    for name in list_datasets():
        print(f"  {name}")
        if args.layouts:
            print("    " + expected_layout(name).replace("\n", "\n    "))
    print("manifests (corelib verify NAME ROOT):")
    for name in list_manifests():
        print(f"  {name}")
    return 0


def _parse_value(name: str, text: str, chapters: Optional[Sequence[str]] = None):
    """A ``-p NAME VALUE`` read as the type of NAME's default in the chapters that receive it
    (:func:`corelib.notebooks.coerce_parameter`): ``-p SMOKE False`` is the bool False, ``-p SEED abc``
    is refused naming SEED and its chapter, never passed on as text."""
    return coerce_parameter(name, text, chapters=chapters)


def _params_file(path: Optional[str]) -> dict:
    """Notebook parameters from a YAML file (a mapping NAME: value), or none."""
    if not path:
        return {}

    values = read_yaml(path, what="--params file") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a parameters file is a mapping such as 'SEED: 2', got {type(values).__name__}")
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{path}: parameter names are texts such as SEED, got {bad[0]!r}")
    # the values keep their YAML types; run_notebooks checks them against the chapters' defaults
    return values


def _cmd_sweep(args: argparse.Namespace) -> int:
    spec = load_sweep(args.file)
    # SMOKE is always passed (and so recorded in each point's sweep.json): a smoke and a full point differ in it
    params = {"SMOKE": False, **spec["parameters"], **({"SMOKE": True} if args.smoke else {})}
    chapters = args.chapters or spec["chapters"]
    if args.status:
        return _print_status(sweep_status(args.root, spec["grid"], parameters=params, chapters=chapters), args.root)
    launcher = _launcher_cfg(args, spec.get("launcher"), where=f"{args.file}: launcher")
    _one_device(launcher, "a sweep point")
    try:
        records = run_sweep(args.root, spec["grid"], parameters=params, chapters=chapters,
                            execution_timeout=args.timeout, rerun_changed=args.rerun_changed, fail_fast=args.fail_fast,
                            launcher=launcher, resubmit=args.resubmit, only=args.point)
        failed = None
    except SweepFailed as e:  # every point ran; the failed ones are listed above: exit 1, not a usage error's 2
        records, failed = e.records, e
    ran = sum(r["ran"] for r in records)
    replaced = [r["replaced"] for r in records if r.get("replaced")]
    kept = (f" ({len(replaced)} rerun with changed parameters; the old folders are kept as "
            f"*.replaced-*)") if replaced else ""
    failures = sum(bool(r.get("failed")) for r in records)
    queued = launcher.launcher == "slurm" and not launcher.wait
    if queued:
        print(f"{len(records)} sweep point(s), {ran} submitted{kept}, {len(records) - ran} finished earlier or "
              f"already queued; root: {Path(args.root).resolve()}")
    else:
        print(f"{len(records)} sweep point(s), {ran} run now{kept}{f' ({failures} failed)' if failures else ''}, "
              f"{len(records) - ran} finished earlier; root: {Path(args.root).resolve()}")
    if queued:
        print(f"follow them with: corelib sweep {args.file} --root {args.root} --status")
    if failed is not None:
        print(f"corelib sweep: {failed}", file=sys.stderr)
        return 1
    return 0


def _print_status(rows: list[dict], root: str) -> int:
    width = max([len(r["name"]) for r in rows] + [5])
    print(f"{'#':>3}  {'point':<{width}}  {'state':<11}  {'job':<14}  attempt")
    for i, r in enumerate(rows):
        print(f"{i:>3}  {r['name']:<{width}}  {r['state']:<11}  {str(r['job_id'] or '-'):<14}  {r['attempt'] or '-'}")
        for line in r["detail"]:
            print(f"{'':>3}  {'':<{width}}    | {line}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(", ".join(f"{n} {state}" for state, n in counts.items()) + f"; root: {Path(root).resolve()}")
    return 0


def _cmd_run_point(args: argparse.Namespace) -> int:
    failure = run_point(args.run_dir, execution_timeout=args.timeout,
                        notebooks_dir=Path(args.notebooks_dir) if args.notebooks_dir else None)
    if failure:
        print(f"corelib run-point: {failure['error'].splitlines()[0]}; record: {failure['record']}", file=sys.stderr)
        return 1
    print(f"sweep point finished: {Path(args.run_dir).resolve()}")
    return 0


# ---------------------------------------------------------------------------------------------- launchers

_LAUNCHER_OPTIONS = {  # option -> LauncherCfg field; every one takes a value but --wait
    "--launcher": "launcher", "--slurm-partition": "partition", "--slurm-time": "time",
    "--gpus-per-job": "gpus_per_job", "--cpus-per-gpu": "cpus_per_gpu", "--mem": "mem",
    "--array-parallelism": "array_parallelism", "--slurm-signal-delay": "signal_delay_s",
    "--slurm-extra": "extra", "--slurm-setup": "setup", "--wait": "wait",
}


def _add_launcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("launcher (README, \"Running on a cluster\")")
    g.add_argument("--launcher", choices=list_launchers(), default=None,
                   help="; ".join(f"{k}: {v}" for k, v in LAUNCHERS.items()) + " (default local)")
    g.add_argument("--slurm-partition", default=None, help="Slurm partition")
    g.add_argument("--slurm-time", default=None, help="wall-time limit of one job: minutes or HH:MM:SS (a job that "
                                                      "reaches it is requeued and resumes; default 24:00:00)")
    g.add_argument("--gpus-per-job", type=int, default=None,
                   help="GPUs per job (Slurm default 1); above 1 a training stage runs under torchrun on all of them")
    g.add_argument("--cpus-per-gpu", type=int, default=None, help="CPU cores per GPU (default 8)")
    g.add_argument("--mem", default=None, help="memory per job, e.g. 64G")
    g.add_argument("--array-parallelism", type=int, default=None, help="jobs that run at once (default 16)")
    g.add_argument("--slurm-signal-delay", type=int, default=None,
                   help="seconds of warning before the time limit (default 120; the command gets 30 s less to save)")
    g.add_argument("--slurm-extra", action="append", default=None, metavar="KEY=VALUE",
                   help="another sbatch option (account=abc, constraint=a100, qos=long); repeatable")
    g.add_argument("--slurm-setup", action="append", default=None, metavar="LINE",
                   help="a shell line run in the job before the command (module load ..., staging data); repeatable")
    g.add_argument("--wait", action="store_true", default=None, help="wait for the Slurm jobs to end")


def _launcher_cfg(args: argparse.Namespace, block: Optional[dict] = None, where: str = "launcher") -> LauncherCfg:
    """The launcher settings: a sweep file's ``launcher:`` block, then the command line's options."""
    values = dict(block or {})
    for option, name in _LAUNCHER_OPTIONS.items():
        given = getattr(args, option[2:].replace("-", "_"), None)
        if given is None:
            continue
        if name == "extra":
            extra = dict(values.get("extra") or {})
            for item in given:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ConfigError(f"--slurm-extra {item!r} is not KEY=VALUE (e.g. account=abc)")
                extra[key.strip()] = value.strip()
            values["extra"] = extra
        elif name == "setup":
            values["setup"] = list(values.get("setup") or []) + list(given)
        else:
            values[name] = given
    if "signal_delay_s" in values and "grace_s" not in values:
        values["grace_s"] = max(1, int(values["signal_delay_s"]) - 30)
    return LauncherCfg.from_mapping(values, where)


def _one_device(launcher: LauncherCfg, what: str) -> None:
    if launcher.gpus > 1:
        raise ConfigError(f"{what} runs on one device; --gpus-per-job {launcher.gpus} is for the training stages "
                          f"(pretrain, finetune) under torchrun: run more jobs with one GPU each instead")


def _strip_launcher(argv: Sequence[str]) -> list[str]:
    """The command line without its launcher options: what the job runs."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        flag = token.split("=", 1)[0]
        if flag in _LAUNCHER_OPTIONS:
            skip = "=" not in token and flag != "--wait"
            continue
        out.append(token)
    return out


def _launch(args: argparse.Namespace, *, what: str, log_dir: Path, resume: Sequence[str] = ("--resume",),
            drop: Sequence[str] = ("--overwrite",), gpus_ok: bool = True) -> Optional[int]:
    """Run this command as a job when a launcher other than ``local`` is asked; None otherwise.

    The job runs the same command line without the launcher options; a requeued attempt runs it
    with ``resume`` added and ``drop`` removed (it continues, never starts over)."""
    launcher = _launcher_cfg(args)
    if launcher.launcher == "local":
        return None
    if not gpus_ok:
        _one_device(launcher, what)
    child = _strip_launcher(args.argv)
    if getattr(build_parser().parse_args(child), "launcher", None) is not None:  # an abbreviated option stayed
        raise ConfigError("write the launcher options in full (--launcher, --slurm-time ...): an abbreviation "
                          "would reach the job's own command line")
    again = [t for t in child if t not in drop] + [t for t in resume if t not in child]
    gpus = launcher.gpus if gpus_ok else 0
    command = JobCommand(corelib_argv(child, gpus=gpus), corelib_argv(again, gpus=gpus), log_dir, what,
                         launcher.grace_s)
    record = submit(launcher, [command], log_dir / ".submitit", name=f"corelib-{what}")[0]
    print(f"{what}: job {record.get('job_id')} {record.get('state')}; record and logs in {log_dir}")
    if record.get("state") in ("failed", "stopped"):
        print(f"corelib {args.command}: the job {record.get('state')}; its log is {record.get('log')}", file=sys.stderr)
        return 1
    return 0


def _launch_stage(args: argparse.Namespace, stage: str) -> Optional[int]:
    """``pretrain`` / ``finetune`` as a job (None: run here). A run already in the stage's folder is
    refused up front unless ``--resume`` or ``--overwrite`` says what to do with it."""
    if getattr(args, "launcher", None) in (None, "local") or args.print_config:
        return None
    _need_run_dir(args)
    run_dir = Path(args.run_dir).expanduser().resolve()
    held = holds_run(run_dir / stage)
    if held and not (args.resume or args.overwrite):
        raise RunExistsError(f"{run_dir / stage} already holds a {stage} run ({held}); nothing was submitted. Add "
                             f"--resume to continue it or --overwrite to replace it (kept as {stage}.replaced-<time>)")
    return _launch(args, what=stage, log_dir=run_dir / "launcher" / stage)


def _cmd_budget_study(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser().resolve()  # relative to the shell
    if args.variant is not None:
        if not args.recipe or not args.override:
            raise ConfigError("--variant needs --recipe NAME and at least one -o NAME=VALUE (the change it measures)")
        runs = run_variant(root, args.recipe, args.variant, merge_overrides(args.override), pairs=args.pairs)
        print(f"variant {args.variant}: {len(runs)} run(s) in {root / 'variants' / args.variant}; gather with "
              f"corelib budget-study {args.root}")
        return 0
    summary, written = save_study(root, smoke=args.smoke)
    for row in headline_table(summary):
        print(" | ".join(str(v) for v in row.values()))
    folders = sorted({str(p.parent) for p in written})
    print(f"wrote {len(written)} files in {', '.join(folders)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    index = write_report(Path(args.run_dir).expanduser().resolve())  # relative to where the command runs
    print(f"report: {index} (open it in a browser; no server needed)")
    return 0


def _cmd_run_notebooks(args: argparse.Namespace) -> int:
    if getattr(args, "launcher", None) not in (None, "local"):
        run_dir = Path(args.run_dir or Path("runs") / ("smoke" if args.smoke else "demo")).expanduser().resolve()
        # the chapters resume their stages (RESUME = True): a requeued job continues them
        return _launch(args, what="notebooks", log_dir=run_dir / "launcher" / "notebooks",
                       resume=(), drop=(), gpus_ok=False)
    params = {"SMOKE": args.smoke}
    if args.seed is not None:  # otherwise each chapter keeps the SEED of its parameters cell
        params["SEED"] = args.seed
    params.update(_params_file(args.params))
    params.update({k: _parse_value(k, v, args.chapters) for k, v in (args.param or [])})
    run_dir = args.run_dir or str(Path("runs") / ("smoke" if args.smoke else "demo"))
    records = run_notebooks(run_dir, parameters=params, chapters=args.chapters,
                            execution_timeout=args.timeout, log_output=args.log_output)
    total = sum(r["seconds"] for r in records)
    print(f"{len(records)} chapter(s) in {total:.0f} s; run directory: {Path(run_dir).resolve()}")
    return 0


def _side(spec: Optional[Sequence[str]], flag: str):
    """A :class:`~corelib.pairs.DatasetRef` from ``NAME [ROOT] [OPTION=VALUE ...]`` (values read as
    YAML; a relative ROOT is relative to the working directory)."""
    if not spec:
        return None

    name, *rest = spec
    side: dict = {"name": name}
    if rest and "=" not in rest[0]:
        side["root"] = str(Path(rest.pop(0)).expanduser().resolve())
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CorelibError(f"{flag}: {item!r} is not OPTION=VALUE (e.g. subset=labeled); the form is "
                               f"{flag} NAME [ROOT] [OPTION=VALUE ...]")
        side[key] = parse_yaml(value, source=f"{flag} {key}=")
    return dataset_ref(side, flag)


def _open(ref, scale: float):
    """The dataset of a side (a preset is generated under its ROOT at ``scale`` when missing), or None."""
    return ref.open(scale=scale) if ref is not None else None


def _dataset(spec: Sequence[str], scale: float = 1.0, flag: str = "--dataset"):
    return _open(_side(spec, flag), scale)


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def cli_recipe(stage: str, args: argparse.Namespace, source=None, target=None):
    """``(settings, context)`` of a training command: the recipe of its data, as a chapter resolves
    it for the same pair (:func:`~corelib.recipes.resolve_recipe`), then ``--config`` and ``-o``."""
    where = f"corelib {'style train' if stage == 'style' else stage}"
    ctx = recipe_context(source, target, kind=args.kind, style_mode=getattr(args, "mode", None), where=where)
    overrides = merge_overrides(_config_file(args.config), args.override or ())
    return resolve_recipe(stage, ctx, recipe=args.recipe, smoke=args.smoke, overrides=overrides, where=where), ctx


def _config_file(path: Optional[str]) -> dict:
    """The mapping of a ``--config`` YAML file (nested as config.yaml, or dotted names), or none."""
    if path and not Path(path).expanduser().exists():
        raise MissingFileError(f"--config {path} does not exist; give a YAML file of settings such as 'epochs: 40'")
    return read_mapping(path) if path else {}


def _print_config(cfg) -> int:
    print(config_yaml(cfg), end="")
    return 0


def _print_record(title: str, record: dict) -> None:
    keys = [k for k, v in record.items() if isinstance(v, float) and k.endswith(("mAP", "rank1", "rank5", "rank10"))]
    print(f"{title}: " + ", ".join(f"{k} {100 * record[k]:.1f}" for k in keys))


def _need_run_dir(args: argparse.Namespace) -> None:
    if not args.run_dir:
        raise CorelibError(f"corelib {args.command} needs --run-dir DIR (or --print-config to see the recipe)")


def _cmd_pretrain(args: argparse.Namespace) -> int:
    source, target = _side(args.source, "--source"), _side(args.target, "--target")
    cfg, _ = cli_recipe("pretrain", args, source, target)
    if args.print_config:
        return _print_config(cfg)
    launched = _launch_stage(args, "pretrain")
    if launched is not None:
        return launched
    _need_run_dir(args)
    result = pretrain(cfg, _open(source, args.scale), args.run_dir, target=_open(target, args.scale),
                      resume=args.resume, overwrite=args.overwrite)
    if not _is_rank0():
        return 0
    if result.last:
        _print_record(f"pretrain epoch {result.last['epoch']}", result.last)
    print(f"best source mAP {100 * result.best_mAP:.1f} at epoch {result.best_epoch}; checkpoint {result.best_checkpoint}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    source, target = _side(args.source, "--source"), _side(args.target, "--target")
    cfg, _ = cli_recipe("finetune", args, source, target)
    if args.print_config:
        return _print_config(cfg)
    launched = _launch_stage(args, "finetune")
    if launched is not None:
        return launched
    _need_run_dir(args)
    result = finetune(cfg, _open(target, args.scale), args.run_dir, source_checkpoint=args.source_checkpoint,
                      resume=args.resume, overwrite=args.overwrite)
    if not _is_rank0():
        return 0
    _print_record("direct transfer", {f"target_{k}": v for k, v in result.direct_transfer.items()})
    if result.last:
        _print_record(f"adapted, epoch {result.last['epoch']}", result.last)
    print(f"best target mAP {100 * result.best_mAP:.1f} at epoch {result.best_epoch} (chosen on the test set: "
          f"optimistic); checkpoint {result.best_checkpoint}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    dataset = _dataset(args.dataset, args.scale, "--dataset")
    metrics = evaluate_checkpoint(args.checkpoint, dataset, device=resolve_device(args.device), rerank_k=args.rerank)
    if args.json:
        print(json.dumps(metrics))
        return 0
    epoch = f"epoch {metrics['epoch']}" if metrics["epoch"] is not None else "epoch not recorded"
    flip = "flip-averaged (BMFN)" if metrics["test_flip"] else "one view, no flip"
    _print_record(f"{metrics['stage']} checkpoint ({epoch}; test: {flip}) on {dataset.name}", metrics)
    for row in metrics["published"]:
        scores = ", ".join(f"{k} {row[k]:.1f}" for k in ("mAP", "rank1", "rank5", "rank10") if row[k] is not None)
        gap = f" (ours - published: mAP {100 * metrics['mAP'] - row['mAP']:+.1f})" if row["mAP"] is not None else ""
        backbone = f", {row['backbone']}" if row["backbone"] else ""
        note = f"; {row['note']}" if row["note"] else ""
        print(f"published, {row['method']} on {row['task']}{backbone}: {scores}{gap} [{row['source']}{note}]")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    options = {}
    for item in args.option or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--option {item!r} is not NAME=VALUE (e.g. --option task=market1501->dukemtmc)")
        options[name.strip()] = value.strip()
    done = convert_checkpoint(args.file, args.format, args.out, config=args.config, overwrite=args.overwrite, **options)
    record, conversion = done.record, done.conversion
    print(f"{args.format} -> {done.path}: {conversion.model_name} ({conversion.stage}), input "
          f"{conversion.input_size[0]}x{conversion.input_size[1]}, {len(conversion.mapping)} tensors placed, "
          f"{len(record['dropped'])} dropped, sha256 {record['sha256'][:12]} of {record['source_file']}")
    for setting, value in record["inferred"].items():
        print(f"  {setting}: {value}")
    by_reason: dict[str, list[str]] = {}
    for key, why in record["dropped"].items():  # one line per reason: 14 feat_bn / attention keys share two
        by_reason.setdefault(why, []).append(key)
    for why, keys in by_reason.items():
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        print(f"  dropped {len(keys)} ({shown}): {why}")
    if record["method"]:
        print(f"  published method {record['method']!r}, task {record['task'] or 'not given'}")
    print(f"evaluate it: corelib evaluate {done.path} --dataset NAME ROOT")
    return 0


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML file of settings, e.g. 'epochs: 40' or 'cluster: {num_clusters: 700}'")
    p.add_argument("-o", "--override", action="append", metavar="NAME=VALUE",
                   help="a setting, dotted (value read as YAML: epochs=40, cluster.num_clusters=700, "
                        "runtime.device=cuda); repeatable")
    p.add_argument("--smoke", action="store_true", help="the CI-sized recipe (seconds on a CPU) instead of the full one")
    p.add_argument("--recipe", default="corereid_v2", help="a registered recipe (corelib.recipes.list_recipes())")
    p.add_argument("--kind", choices=["person", "vehicle"], default=None,
                   help="person or vehicle, when no manifest tells (a custom dataset)")
    p.add_argument("--scale", type=float, default=1.0, help="identity scale of generated synthetic presets")


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=None, help="run directory (checkpoints, metrics.jsonl, config.yaml)")
    _add_recipe_args(p)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/<stage>/last.pt when it exists")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in RUN_DIR/<stage> (the old one is kept as <stage>.replaced-<time>); "
                        "without --resume or --overwrite an existing run is refused")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe as YAML and train nothing")


def _cmd_style_train(args: argparse.Namespace) -> int:
    source_ref, target_ref = _side(args.source, "--source"), _side(args.target, "--target")
    cfg, ctx = cli_recipe("style", args, source_ref, target_ref)
    if args.print_config:
        return _print_config(cfg)
    if not args.out:
        raise CorelibError("corelib style train needs --out DIR (or --print-config to see the recipe)")
    if getattr(args, "launcher", None) not in (None, "local"):
        out = Path(args.out).expanduser().resolve()
        # the models resume by default; a requeued job never restarts them
        return _launch(args, what="style", log_dir=out.parent / f"{out.name}.launcher", resume=(),
                       drop=("--restart",), gpus_ok=False)
    source, target = _open(source_ref, args.scale), _open(target_ref, args.scale)
    models = train_style_models(source, cfg, args.out, mode=ctx.style_mode, target=target, resume=not args.restart,
                                overwrite=args.restart)
    print(f"{len(models.pairs)} style model(s) ({ctx.style_mode}-aware) in {models.root}")
    if args.gap:
        _print_gap(style_gap(source, models, target=target))
    return 0


def _print_gap(rows: list) -> None:
    for r in rows:
        print(f"  {r['from']:>12} -> {r['to']:<12} colour gap {r['before']:.4f} -> {r['after']:.4f} "
              f"(x{r['ratio']:.2f}), cycle L1 {r['cycle_l1']:.3f}")
    total = summarize_gap(rows)
    print(f"colour gap over {total['directions']} direction(s): {total['before']:.4f} -> {total['after']:.4f} "
          f"(x{total['ratio']:.2f})")


def _cmd_style_generate(args: argparse.Namespace) -> int:
    source = _dataset(args.source, args.scale, "--source")
    root = write_style_set(source, args.models, args.out, device=args.device, overwrite=args.overwrite)
    enlarged = load_style_set(root)
    print(enlarged.summary())
    print(f"enlarged set: {root} (pre-train on it with -o style_set={root})")
    return 0


def _cmd_style_gap(args: argparse.Namespace) -> int:
    source = _dataset(args.source, args.scale, "--source")
    target = _dataset(args.target, args.scale, "--target")
    _print_gap(style_gap(source, args.models, target=target, device=args.device))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    rows = complexity_table(tuple(args.depths), device=device, batch=args.batch, iters=args.iters,
                            input_size=(args.height, args.width), bf16=args.bf16, channels_last=args.channels_last)
    print(format_complexity(rows))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.batch < 1:  # before anything is written
        raise CorelibError(f"--batch {args.batch}: the onnxruntime check needs at least one image")
    exported = export_onnx(args.checkpoint, args.out, opset=args.opset, overwrite=args.overwrite)
    ids = {"camids": f"camera ids in [-1, {exported.num_cameras}) (-1: unknown camera)",
           "views": f"view ids in [-1, {exported.num_views}) (-1: unknown view)"}
    print(f"wrote {exported.path} (ONNX opset {exported.opset}, {exported.metadata['model_name']}, "
          f"{exported.path.stat().st_size / 1e6:.1f} MB)")
    height, width = exported.input_size
    print(f"  input  images   float32 (batch, 3, {height}, {width}): {exported.metadata['preprocessing']}")
    for name in exported.inputs[1:]:
        print(f"  input  {name:<8} int64 (batch,): {ids[name]}")
    print(f"  output features float32 (batch, {exported.feature_dim}), L2-normalised")
    print(f"  test protocol: {exported.metadata['flip_protocol']}")
    diff = check_export(exported, args.batch)
    print(f"onnxruntime (CPU) vs torch on a random batch of {args.batch}: max |onnx - torch| = {diff:.2e}")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    print(json.dumps(env_report(), indent=2))
    return 0


_DATASET_HELP = ("a loader (market1501, veri776 ...) or an embedded preset (market_like ...), the folder of the copy "
                 "or its parent (default $COREREID_DATA or data/), then the loader's options: "
                 "cuhk03np ~/datasets subset=labeled")
_SIDE = {"nargs": "+", "metavar": ("NAME", "ROOT|OPTION=VALUE")}
"""``--source``, ``--target`` and ``--dataset`` take ``NAME [ROOT] [OPTION=VALUE ...]`` (:func:`_side`)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``corelib`` parser: one sub-command per builder below, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(prog="corelib", description="CORE-ReID V2 workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_synth, _add_verify, _add_datasets, _add_pretrain, _add_finetune, _add_evaluate,
                        _add_convert, _add_export, _add_style, _add_run_notebooks, _add_report, _add_sweep,
                        _add_budget_study, _add_run_point, _add_bench, _add_env):
        add_command(sub)
    return parser


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate an embedded synthetic dataset in the real on-disk format")
    p.add_argument("preset", nargs="?", help="preset name, or 'all' (see --list)")
    p.add_argument("root", nargs="?", help="parent folder; the dataset goes to ROOT/synthetic_PRESET")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument("--scale", type=float, default=1.0, help="multiply identity counts (default 1.0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="redraw even if a complete copy exists")
    p.set_defaults(func=_cmd_synth)


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check a dataset copy against its manifest")
    p.add_argument("name", help="manifest name (see `corelib datasets`) or path to a manifest .yaml")
    p.add_argument("root", help="the dataset folder or its parent")
    p.add_argument("--images", default="all", help="decode 'all' images, 'none', or a positive number drawn at random")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_verify)


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list dataset loaders and manifests")
    p.add_argument("--layouts", action="store_true", help="also print each loader's expected layout")
    p.set_defaults(func=_cmd_datasets)


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="supervised source pre-training (PretrainCfg)")
    p.add_argument("--source", required=True, help=_DATASET_HELP, **_SIDE)
    p.add_argument("--target", default=None, help="target dataset: direct-transfer evaluation and BN statistics "
                                                  "(optional; its kind and presets shape the recipe as in a pair)",
                   **_SIDE)
    _add_training_args(p)
    _add_launcher_args(p)
    p.set_defaults(func=_cmd_pretrain)


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="mean-teacher fine-tuning on the unlabelled target (FinetuneCfg)")
    p.add_argument("--target", required=True, help=_DATASET_HELP, **_SIDE)
    p.add_argument("--source", default=None, help="the source dataset, when the recipe should be the pair's "
                                                  "(an embedded preset source with a real target ...; optional)",
                   **_SIDE)
    p.add_argument("--source-checkpoint", default=None, help="pre-training checkpoint (default RUN_DIR/pretrain/best.pt)")
    _add_training_args(p)
    _add_launcher_args(p)
    p.set_defaults(func=_cmd_finetune)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="mAP / CMC of a pretrain or finetune checkpoint on a query / gallery")
    p.add_argument("checkpoint", help="RUN_DIR/pretrain/best.pt, RUN_DIR/finetune/best.pt ...")
    p.add_argument("--dataset", required=True, help=_DATASET_HELP, **_SIDE)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--scale", type=float, default=1.0, help="identity scale of a generated synthetic preset")
    p.set_defaults(func=_cmd_evaluate)


def _add_convert(sub) -> None:
    formats = ", ".join(f"{n} ({FORMATS.info(n).description})" for n in list_formats())
    p = sub.add_parser("convert", help="a released checkpoint of another codebase as a corelib checkpoint",
                       description=f"Formats: {formats}")
    p.add_argument("format", choices=list_formats(), help="the file's codebase")
    p.add_argument("file", help="the released file (model_best.pth.tar, transformer_120.pth, resnet50_ibn_a-d9d0bb7b.pth ...)")
    p.add_argument("out", help="the corelib checkpoint to write")
    p.add_argument("--config", default=None, help="the official YAML config the file was trained with (TransReID)")
    p.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="a setting the tensors cannot tell (task=market1501->dukemtmc, img_size=256x128 ...); repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it is a checkpoint corelib convert wrote")
    p.set_defaults(func=_cmd_convert)


def _add_style(sub) -> None:
    p = sub.add_parser("style", help="CycleGAN style transfer: train models, write the enlarged source set")
    style_sub = p.add_subparsers(dest="style_command", required=True)
    for add_command in (_add_style_train, _add_style_generate, _add_style_gap):
        add_command(style_sub)


def _add_style_train(style_sub) -> None:
    q = style_sub.add_parser("train", help="train the camera-pair (camera) or source <-> target (domain) CycleGANs")
    q.add_argument("--mode", choices=["camera", "domain"], default=None,
                   help="camera: one model per camera pair of the source; domain: one source <-> target model "
                        "(default: camera for persons, domain for vehicles, as the paper does)")
    q.add_argument("--source", required=True, help=_DATASET_HELP, **_SIDE)
    q.add_argument("--target", default=None, help="target dataset (domain mode)", **_SIDE)
    q.add_argument("--out", default=None, help="folder of the style models (one sub-folder per pair)")
    _add_recipe_args(q)
    q.add_argument("--restart", action="store_true",
                   help="train from scratch instead of resuming (earlier models are kept as <pair>.replaced-<time>)")
    q.add_argument("--gap", action="store_true", help="print the colour gap before / after translation")
    q.add_argument("--print-config", action="store_true", help="print the resolved StyleCfg as YAML and train nothing")
    _add_launcher_args(q)
    q.set_defaults(func=_cmd_style_train)


def _add_style_generate(style_sub) -> None:
    q = style_sub.add_parser("generate", help="write the enlarged source set (real images + style copies)")
    q.add_argument("--models", required=True, help="folder written by `corelib style train`")
    q.add_argument("--source", required=True, help=_DATASET_HELP, **_SIDE)
    q.add_argument("--out", required=True,
                   help="folder of the enlarged set (the source's layout): new, empty, or a set written before; "
                        "any other folder is refused, never deleted")
    q.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    q.add_argument("--overwrite", action="store_true",
                   help="rewrite a complete set (a folder holding style_set.json; nothing else is replaced)")
    q.add_argument("--scale", type=float, default=1.0, help="identity scale of generated synthetic presets")
    q.set_defaults(func=_cmd_style_generate)


def _add_style_gap(style_sub) -> None:
    q = style_sub.add_parser("gap", help="colour gap between the two sides, before and after translation")
    q.add_argument("--models", required=True, help="folder written by `corelib style train`")
    q.add_argument("--source", required=True, help=_DATASET_HELP, **_SIDE)
    q.add_argument("--target", default=None, help="target dataset (domain mode)", **_SIDE)
    q.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    q.add_argument("--scale", type=float, default=1.0, help="identity scale of generated synthetic presets")
    q.set_defaults(func=_cmd_style_gap)


def _add_run_notebooks(sub) -> None:
    p = sub.add_parser("run-notebooks", help="execute the notebook chapters in order with papermill")
    p.add_argument("--run-dir", default=None, help="shared run directory (default runs/demo or runs/smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny parameters (what CI runs)")
    p.add_argument("--seed", type=int, default=None, help="SEED passed to every chapter (default: each chapter's own)")
    p.add_argument("--chapters", nargs="*", default=None,
                   help="chapters to run, each by number, file stem or file name, e.g. 00 02_pretraining")
    p.add_argument("--params", default=None, help="YAML file of notebook parameters (NAME: value); -p wins")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a notebook parameter, read as the type of its default in the chapter (SMOKE true, "
                        "SEED 3, PAIRS '[\"person\"]'); repeatable")
    p.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    p.add_argument("--log-output", action="store_true", help="stream cell output")
    _add_launcher_args(p)
    p.set_defaults(func=_cmd_run_notebooks)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="an HTML report of a run directory: a page per executed chapter, metrics on the index")
    p.add_argument("run_dir", help="run directory whose notebooks/ holds executed chapters (e.g. runs/demo)")
    p.set_defaults(func=_cmd_report)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run chapters over a grid of parameters, one run directory per point (resumable)")
    p.add_argument("file", help="sweep YAML: chapters, parameters, grid (see corelib.sweeps)")
    p.add_argument("--root", default="runs/sweeps", help="folder of the sweep's run directories")
    p.add_argument("--chapters", nargs="*", default=None,
                   help="override the file's chapters (each by number, file stem or file name)")
    p.add_argument("--smoke", action="store_true", help="SMOKE=True for every point")
    p.add_argument("--rerun-changed", action="store_true",
                   help="rerun the points recorded with other parameters (their old folders are kept as "
                        "POINT.replaced-TIME) instead of refusing")
    p.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first failing point (default: run every point, list the failures at the end "
                        "and exit 1; local launcher only)")
    p.add_argument("--status", action="store_true",
                   help="list each point's state (new, pending, running, requeued, interrupted, finished, failed "
                        "with its log's last lines) from the point folders and job records; runs nothing")
    p.add_argument("--point", type=int, nargs="+", default=None, metavar="INDEX",
                   help="run only these points, by 0-based index in the grid's order (--status numbers them); what "
                        "a plain sbatch --array task runs: --point $SLURM_ARRAY_TASK_ID")
    p.add_argument("--resubmit", action="store_true",
                   help="submit points again whose job record says queued or running (that job is gone)")
    _add_launcher_args(p)
    p.set_defaults(func=_cmd_sweep)


def _add_budget_study(sub) -> None:
    p = sub.add_parser("budget-study", help="gather the budget study's sweep points into its tables and figures "
                                            "(figures/08_budget_*), which chapter 08 draws")
    p.add_argument("root", help="the study's sweep root (corelib sweep sweeps/budget_study.yaml --root ROOT)")
    p.add_argument("--smoke", action="store_true", help="write into ROOT/figures/ instead of figures/")
    p.add_argument("--variant", default=None, metavar="NAME",
                   help="instead of gathering: fine-tune --recipe again in every point with the -o changes, from the "
                        "same source networks and seeds, into ROOT/variants/NAME/ (gathered as 08_budget_variants)")
    p.add_argument("--recipe", default=None, help="the recipe a --variant changes (corelib.recipes.list_recipes())")
    p.add_argument("-o", "--override", action="append", metavar="NAME=VALUE", default=[],
                   help="a fine-tuning setting the --variant changes, dotted (lr=3.5e-5); repeatable")
    p.add_argument("--pairs", nargs="+", default=None, help="the --variant on these pairs' points only (default: all)")
    p.set_defaults(func=_cmd_budget_study)


def _add_run_point(sub) -> None:
    p = sub.add_parser("run-point", help="run one sweep point from its sweep.json (what a sweep's job runs)")
    p.add_argument("run_dir", help="the point's folder, ROOT/<point name>, holding the sweep.json a sweep wrote")
    p.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    p.add_argument("--notebooks-dir", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_run_point)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure model complexity (parameters, FLOPs, images/s); the paper-scale "
                                     "rehearsal is benchmarks/paper_scale.py")
    p.add_argument("what", choices=["complexity"], help="complexity: the backbones' table")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--depths", type=int, nargs="*", default=[18, 34, 50, 101, 152])
    p.add_argument("--batch", type=int, default=64, help="eval batch for images/s (default 64)")
    p.add_argument("--iters", type=int, default=3, help="timed batches (0: skip the timing)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.set_defaults(func=_cmd_bench)


def _add_env(sub) -> None:
    p = sub.add_parser("env", help="print versions, devices and the git commit")
    p.set_defaults(func=_cmd_env)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="a trained network as a deployable model (ONNX)")
    export_sub = p.add_subparsers(dest="export_command", required=True)
    q = export_sub.add_parser("onnx", help="the test feature of a checkpoint's network as an ONNX graph "
                                           "(onnxruntime checks it on a random batch)")
    q.add_argument("checkpoint", help="RUN_DIR/pretrain/best.pt, RUN_DIR/finetune/best.pt, a converted checkpoint ...")
    q.add_argument("out", help="the .onnx file to write")
    q.add_argument("--opset", type=int, default=ONNX_OPSET,
                   help=f"ONNX opset (default {ONNX_OPSET}: onnxruntime's CPU and CUDA providers run it)")
    q.add_argument("--batch", type=int, default=3, help="batch of the onnxruntime check (the graph's batch axis is "
                                                        "dynamic; default 3)")
    q.add_argument("--overwrite", action="store_true",
                   help="replace an ONNX model that corelib export wrote (no other file is replaced)")
    q.set_defaults(func=_cmd_export)


def _check_scale(args: argparse.Namespace) -> None:
    """``--scale`` of every command that has one (synth, the training commands, evaluate, style) is a
    positive factor, checked here once for all of them: 0 or -1 would be taken as a preset's scale."""
    scale = getattr(args, "scale", None)
    if scale is not None and not 0 < scale < float("inf"):  # also refuses NaN
        raise CorelibError(f"--scale {scale}: the identity scale must be a positive number (1.0 is the preset "
                           f"itself, e.g. 0.2 for a small copy)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # a launcher's job runs this command line again, without the launcher options
    try:
        _check_scale(args)
        return args.func(args)
    except Preempted as e:  # asked to stop by its job (a cluster's time limit): saved, to be resumed
        print(f"corelib {args.command}: {e}", file=sys.stderr)
        return PREEMPTED_EXIT
    except CorelibError as e:
        print(f"corelib {args.command}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the last resort for a refused write outside the atomic writers (a mkdir, a lock file)
        translated = write_error(e)  # None unless it names its file and is a full disk, a read-only folder ...
        if translated is None:
            raise
        print(f"corelib {args.command}: {translated}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m corelib.cli
    sys.exit(main())
