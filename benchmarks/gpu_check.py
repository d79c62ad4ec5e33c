"""One run that checks and measures the workbench on whatever device it finds, for a lent GPU.

Run:  benchmarks/gpu_check.sh OUT_DIR [options]          (a lent machine: installs wheels/, then this script)
      python benchmarks/gpu_check.py --out OUT_DIR [--device auto|cpu|cuda[:N]] [--quick] [--budget-s 480]
      python benchmarks/gpu_check.py --out OUT_DIR --device cpu --quick     (the dry run of the test suite)

Steps, in this order (``--steps`` picks some):

1. ``gpu_tests``: the ``gpu``-marked tests (``pytest -m gpu`` on the test files that hold the mark: the
   other files import the notebook stack, which a bare machine lacks), with their results;
2. ``pipeline_smoke``: on a small embedded pair (``market_like`` -> ``cuhk_like``): drawing it, a smoke
   CycleGAN, pre-training and fine-tuning (the smoke recipes: two epochs each, bf16 autocast and
   channels_last where ``RuntimeCfg`` says so), evaluation, Grad-CAM and a TransReID pre-training; on
   CUDA the same run on the CPU beside it, and the evaluation of the same features on both devices,
   which must agree exactly (mAP, mINP and every CMC value);
3. ``clustering_evaluation``: greedy k-means++ seeding and Lloyd at the Market (12,936 x 2,048, k = 900) and
   MSMT17 (32,621 x 2,048, k = 2,000) shapes, evaluation at the MSMT17 test shape (11,659 x 82,161,
   2,048-d), time and peak device memory, beside faiss's GPU k-means and kNN where the faiss GPU wheel is;
4. ``throughput``: ResNet-50 and TransReID's ViT-B/16 (stride 12) at 256 x 128 in bf16, inference images/s
   (batch 256) and training images/s (batch 64), channels_last for the ResNet; batch-1 images/s of the
   CORE-ReID network beside the paper's FPS;
5. ``cyclegan``: CamStyle's 256 x 256 CycleGAN recipe, seconds per step and camera pairs per hour;
6. ``paper_scale``: ``benchmarks/paper_scale.py``'s rehearsal on this device: each chapter's extrapolated
   time at the paper's scale and what bounds it.

It writes ``gpu_check.json`` (device, versions, commit; per step its status ``ok`` / ``failed`` /
``skipped`` / ``stopped`` with the reason, seconds and figures) atomically after every step and every
measurement inside one, so a stopped run keeps what it measured, and ``gpu_check.log`` (everything
printed). A failing step is recorded and the next one runs. Each step has an estimate for the device
kind; a step whose estimate exceeds the time left of ``--budget-s`` is skipped ("would not fit").

``--quick`` uses tiny shapes everywhere (and, for step 6, the smoke recipes and tiny datasets in place
of the paper's): on a 2-core CPU the whole run takes a few minutes at most (benchmarks/README.md), so
that the test suite (``tests/test_gpu_check.py``) keeps this script working between loans. Its figures
measure nothing.

Only what a bare GPU machine has is imported (torch, torchvision, timm, scikit-learn, pandas,
matplotlib, pillow, pyyaml, tqdm) plus what ``wheels/`` carries (pytest; faiss's GPU build if it fits):
corelib's subpackages are imported directly, never the notebook stack. Grad-CAM needs pytorch-grad-cam
and OpenCV; where they are missing that part is skipped with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
for _p in (str(REPO), str(BENCHMARKS)):  # corelib from the checkout, the sibling scripts (timing, paper_scale)
    if _p not in sys.path:
        sys.path.insert(0, _p)

from timing import timed

STEPS = ("gpu_tests", "pipeline_smoke", "clustering_evaluation", "throughput", "cyclegan", "paper_scale")

# Seconds each step is expected to take, per device kind; a step is started only when its estimate fits in
# the time left. "cuda": upper estimates for an H100-class GPU, not measured yet (replace them with the
# first lent run's seconds); "cpu_quick": above the dry run's step times on a quiet 2-core box; "cuda_quick"
# and "cpu" (the full shapes on a CPU, which do not fit the default budget): rough upper estimates.
ESTIMATES = {
    "cuda": {"gpu_tests": 90, "pipeline_smoke": 90, "clustering_evaluation": 60, "throughput": 45, "cyclegan": 45,
             "paper_scale": 120},
    "cuda_quick": {"gpu_tests": 90, "pipeline_smoke": 60, "clustering_evaluation": 10, "throughput": 20,
                   "cyclegan": 10, "paper_scale": 30},
    "cpu_quick": {"gpu_tests": 20, "pipeline_smoke": 40, "clustering_evaluation": 5, "throughput": 15, "cyclegan": 5,
                  "paper_scale": 20},
    "cpu": {"gpu_tests": 20, "pipeline_smoke": 60, "clustering_evaluation": 600, "throughput": 900, "cyclegan": 600,
            "paper_scale": 900},
}

# CORE-ReID V2's complexity table (docs/method.md §6: one Quadro RTX 8000, input 128 x 256; batch and
# precision not stated) gives an FPS for ResNet-18 only.
PAPER_FPS = {"resnet18": 254.0, "resnet50": None}
PAPER_FPS_NOTE = ("docs/method.md §6: 254 FPS for ResNet-18 on one Quadro RTX 8000 at 128 x 256, batch and precision "
                  "not stated; the paper gives no FPS for ResNet-50 or a ViT")
# CamStyle's camera pairs train on train + query + gallery ("train_all"): Market-1501 has 12,936 + 3,368 +
# 15,913 images over 6 cameras (data_manifests/market1501.yaml); one epoch is one pass over the larger camera
MARKET_IMAGES_PER_CAMERA = (12936 + 3368 + 15913) / 6
STACKING_REMOVED = ("not measurable: CycleGAN stacking (StyleCfg.stack_pairs) was removed in issue 34 (commit 77e28d7); "
                    "camera pairs train one at a time, which is stack_pairs 1")


@dataclass(frozen=True)
class Sizes:
    """The shapes of one run: the paper's (a GPU) or tiny ones (``--quick``)."""

    kmeans: tuple  # (label, n, d, k, identities) per shape
    evaluation: tuple  # (label, queries, gallery, d, identities, cameras)
    lloyd_iters: int  # Lloyd iterations timed per k-means run (tol 0: all of them run)
    knn_k: int  # neighbours of the kNN comparison (the Jaccard distance's k1)
    image: tuple  # (height, width) of the throughput networks
    infer_batch: int
    train_batch: int  # a multiple of 4 (P x K with K = 4)
    iters: int  # timed iterations per throughput figure
    fps_iters: int  # timed batch-1 forwards
    style_steps: int  # timed CycleGAN steps (after one set-up step)
    paper_steps: int  # --steps of paper_scale
    synthetic_scale: float  # scale of the embedded pair of step 2 (tests/conftest.py draws at 0.05)


FULL = Sizes(kmeans=(("market", 12936, 2048, 900, 751), ("msmt17", 32621, 2048, 2000, 1041)),
             evaluation=("msmt17", 11659, 82161, 2048, 3060, 15), lloyd_iters=20, knn_k=20, image=(256, 128),
             infer_batch=256, train_batch=64, iters=20, fps_iters=50, style_steps=10, paper_steps=5,
             synthetic_scale=0.05)
QUICK = Sizes(kmeans=(("tiny", 2000, 256, 50, 40),), evaluation=("tiny", 500, 2000, 256, 100, 6), lloyd_iters=5,
              knn_k=20, image=(64, 32), infer_batch=4, train_batch=4, iters=1, fps_iters=2, style_steps=2,
              paper_steps=1, synthetic_scale=0.05)


class Stopped(BaseException):
    """SIGTERM / SIGINT: the step in progress is recorded as stopped and the run ends."""


def _on_signal(signum, frame):
    raise Stopped(signal.Signals(signum).name)


class _Tee:
    """A text stream that writes to the console and to the log file."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, Path):
        return str(value)
    return value


class Check:
    """The run's state: the record (written after every change), the clock, the device, the work folder."""

    def __init__(self, args, device: torch.device, out: Path, work: Path, t0: float):
        self.args, self.device, self.out, self.work, self.t0 = args, device, out, work, t0
        self.quick = args.quick
        self.sizes = QUICK if args.quick else FULL
        self.kind = f"{device.type}_quick" if args.quick else device.type
        self.path = out / "gpu_check.json"
        self.record = {
            "schema": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None,
            "command": [sys.executable, *sys.argv], "device": device_info(device), "git_commit": git_commit(args.commit),
            "packages": package_versions(), "budget_s": args.budget_s, "quick": args.quick,
            "estimates": {"kind": self.kind, "seconds": ESTIMATES[self.kind],
                          "note": "cuda: unmeasured upper estimates" if device.type == "cuda" else "measured on a 2-core CPU"},
            "elapsed_s": 0.0, "stopped": None, "steps": {},
        }
        self._pair = None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float:
        return self.args.budget_s - self.elapsed()

    def save(self) -> None:
        self.record["elapsed_s"] = round(self.elapsed(), 2)
        _atomic_write(self.path, json.dumps(_jsonable(self.record), indent=2, allow_nan=False) + "\n")

    def log(self, text: str) -> None:
        print(f"[gpu_check {self.elapsed():7.1f} s] {text}", flush=True)

    def embedded_pair(self):
        """The small embedded pair (market_like -> cuhk_like), drawn once per run."""
        if self._pair is None:
            from corelib.data.synthetic import generate_synthetic, load_synthetic

            root = self.work / "synthetic"
            self._pair = tuple(load_synthetic(generate_synthetic(name, root, scale=self.sizes.synthetic_scale,
                                                                 progress=False))
                               for name in ("market_like", "cuhk_like"))
        return self._pair


class Step:
    """One step's entry of the record: figures, checks and parts, saved as they come."""

    def __init__(self, check: Check, name: str):
        self.check, self.name = check, name
        self.entry = {"status": "running", "reason": None, "estimate_s": ESTIMATES[check.kind][name], "seconds": None,
                      "figures": {}, "checks": {}, "skipped_parts": {}}
        check.record["steps"][name] = self.entry

    def figure(self, key: str, value) -> None:
        self.entry["figures"][key] = value
        self.check.save()
        self.check.log(f"{self.name}: {key} = {json.dumps(_jsonable(value))[:400]}")

    def expect(self, key: str, ok: bool, detail: str) -> None:
        self.entry["checks"][key] = {"ok": bool(ok), "detail": detail}
        self.check.save()
        self.check.log(f"{self.name}: check {key}: {'ok' if ok else 'FAILED'} ({detail})")

    def skip_part(self, key: str, reason: str) -> None:
        self.entry["skipped_parts"][key] = reason
        self.check.save()
        self.check.log(f"{self.name}: {key} skipped: {reason}")

    def attempt(self, key: str, fn: Callable[[], object]) -> None:
        """``fn()``; an exception fails the check ``key`` (the step fails, its other parts still run)."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - recorded, and the step goes on
            traceback.print_exc()
            self.expect(key, False, f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------------------------
# the run's context


def device_info(device: torch.device) -> dict:
    info = {"type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_model": _cpu_model()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"name": torch.cuda.get_device_name(device), "capability": f"{props.major}.{props.minor}",
                     "memory_gb": round(props.total_memory / 2**30, 2), "cudnn": torch.backends.cudnn.version(),
                     "bf16_supported": torch.cuda.is_bf16_supported()})
    else:
        info["name"] = info["cpu_model"]
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit(given: str | None) -> str | None:
    """``--commit`` when given, else the checkout's HEAD (None where the copy has no git history)."""
    if given:
        return given
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict:
    names = ("torch", "torchvision", "timm", "numpy", "scikit-learn", "pillow", "pytest", "pytest-timeout", "grad-cam",
             "opencv-python-headless", "faiss-gpu-cu12", "faiss-gpu", "faiss-cpu")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available to this torch ({torch.__version__}, built for CUDA "
                         f"{torch.version.cuda}); run on a GPU machine, or use --device cpu --quick for the dry run")
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {device}: use auto, cpu or cuda[:N]")
    return dev


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> dict:
    """Peak device memory since the last reset (CUDA), and the process's peak resident memory so far."""
    gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"peak_device_gb": None if gb is None else round(gb, 3),
            "host_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def _identity_features(n: int, d: int, ids: int, noise: float, seed: int = 0):
    """L2-normalised ``(n, d)`` float32 rows around ``ids`` random identity centres, and their identities."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(ids, d, generator=g), dim=1)
    pid = torch.randint(ids, (n,), generator=g)
    out = torch.empty(n, d)
    for s in range(0, n, 8192):  # in slices: no large temporaries
        out[s:s + 8192] = centres[pid[s:s + 8192]] + noise * torch.randn(len(pid[s:s + 8192]), d, generator=g)
    return torch.nn.functional.normalize(out, dim=1), pid


# --------------------------------------------------------------------------------------------
# 1. the gpu-marked tests


def gpu_test_files() -> list[str]:
    """The test files that hold a ``gpu`` mark (a plain ``pytest -m gpu`` collects every file, and some
    import nbformat / papermill at the top, which a bare machine lacks: the collection would stop)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8"))


def step_gpu_tests(check: Check, step: Step) -> None:
    files = gpu_test_files()
    step.figure("files", files)
    try:
        import pytest  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"pytest is not importable ({e}): put its wheels in wheels/ (benchmarks/gpu_check.sh "
                           "--fetch-wheels) and start through benchmarks/gpu_check.sh") from e
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rA", *files]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    limit = max(10.0, min(check.remaining(), 2 * step.entry["estimate_s"]))  # a hung test leaves the others time
    try:
        proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        print(out)
        raise RuntimeError(f"pytest -m gpu did not finish in {limit:.0f} s (twice its estimate, or the budget left)") from None
    print(proc.stdout + proc.stderr)
    results = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(?:\[\d+\]\s+)?(\S+?)(?::\s|\s-\s|$)(.*)", line)
        if m:
            results[m.group(2)] = m.group(1) + (f": {m.group(3).strip()}" if m.group(3).strip() else "")
    tail = [ln for ln in proc.stdout.splitlines() if ln.strip()][-1:] or [""]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)",
                                                     tail[0])}
    step.figure("returncode", proc.returncode)
    step.figure("counts", counts)
    step.figure("summary", tail[0])
    step.figure("tests", results)
    if check.device.type != "cuda":
        step.figure("note", "no CUDA in this process: the gpu tests skip (tests/conftest.py)")
    step.expect("pytest_exit", proc.returncode == 0, f"exit {proc.returncode}: {tail[0]}")


# --------------------------------------------------------------------------------------------
# 2. the pipeline on a small embedded pair


def _pipeline_on(check: Check, step: Step, device: torch.device, source, target) -> dict:
    """Style smoke, pre-training and fine-tuning (smoke recipes) on ``device``; returns the checkpoints."""
    from corelib.recipes import RecipeContext, resolve_recipe
    from corelib.style import train_cyclegan
    from corelib.training import finetune, pretrain

    ctx = RecipeContext("person", embedded=True, target="cuhk_like")
    run = check.work / f"pipeline_{device.type}"
    tag = device.type

    style_cfg = resolve_recipe("style", ctx, smoke=True, seed=0, device=str(device))
    cams = sorted({s.camid for s in source.train})
    (res, seconds) = timed(lambda: train_cyclegan([s for s in source.train if s.camid == cams[0]],
                                                  [s for s in source.train if s.camid == cams[1]], style_cfg,
                                                  run / "style", progress=False), device)
    cycle = [h.get("cycle") for h in res.history]
    step.figure(f"style_{tag}", {"seconds": seconds, "epochs": len(res.history), "cycle": cycle,
                                 "precision": style_cfg.precision, "size": [style_cfg.height, style_cfg.width]})
    step.expect(f"style_{tag}_finite", all(c is not None and math.isfinite(c) for c in cycle), f"cycle losses {cycle}")

    pre_cfg = resolve_recipe("pretrain", ctx, smoke=True, seed=0, device=str(device))
    pre, seconds = timed(lambda: pretrain(pre_cfg, source, run, target=target, progress=False), device)
    step.figure(f"pretrain_{tag}", {"seconds": seconds, "epochs": len(pre.history), "best_mAP": pre.best_mAP,
                                    "last": {k: v for k, v in pre.last.items() if isinstance(v, (int, float))},
                                    "precision": _precision(pre_cfg.runtime.precision, device),
                                    "channels_last": pre_cfg.runtime.channels_last, "backbone": pre_cfg.model.backbone})
    step.expect(f"pretrain_{tag}_finite", math.isfinite(pre.last.get("loss", float("nan"))),
                f"last loss {pre.last.get('loss')}")

    ft_cfg = resolve_recipe("finetune", ctx, smoke=True, seed=0, device=str(device))
    ft, seconds = timed(lambda: finetune(ft_cfg, target, run, source_checkpoint=pre.best_checkpoint, progress=False),
                        device)
    step.figure(f"finetune_{tag}", {"seconds": seconds, "epochs": len(ft.history), "best_mAP": ft.best_mAP,
                                    "direct_transfer_mAP": ft.direct_transfer.get("mAP"),
                                    "last": {k: v for k, v in ft.last.items() if isinstance(v, (int, float))},
                                    "precision": _precision(ft_cfg.runtime.precision, device),
                                    "channels_last": ft_cfg.runtime.channels_last})
    step.expect(f"finetune_{tag}_finite", math.isfinite(ft.last.get("loss", float("nan"))),
                f"last loss {ft.last.get('loss')}")

    tr_cfg = resolve_recipe("pretrain", ctx, recipe="transreid", smoke=True, seed=0, device=str(device))
    tr, seconds = timed(lambda: pretrain(tr_cfg, source, run / "transreid", progress=False), device)
    step.figure(f"transreid_{tag}", {"seconds": seconds, "backbone": tr_cfg.model.backbone, "best_mAP": tr.best_mAP,
                                     "last": {k: v for k, v in tr.last.items() if isinstance(v, (int, float))},
                                     "precision": _precision(tr_cfg.runtime.precision, device)})
    step.expect(f"transreid_{tag}_finite", math.isfinite(tr.last.get("loss", float("nan"))),
                f"last loss {tr.last.get('loss')}")
    return {"finetune": ft.best_checkpoint}


def _precision(setting: str, device: torch.device) -> str:
    return ("bf16" if device.type == "cuda" else "fp32") if setting == "auto" else setting


def _ranking_agreement(a, b) -> tuple[bool, str]:
    """Whether two RankingResults are equal in mAP, mINP, every CMC value and every per-query AP."""
    same = (a.mAP == b.mAP and a.mINP == b.mINP and np.array_equal(a.cmc, b.cmc)
            and np.array_equal(a.ap, b.ap, equal_nan=True) and np.array_equal(a.first_hit, b.first_hit))
    detail = (f"mAP {a.mAP!r} vs {b.mAP!r}, mINP {a.mINP!r} vs {b.mINP!r}, "
              f"max |CMC difference| {float(np.max(np.abs(a.cmc - b.cmc))):.3g}")
    return same, detail


def step_pipeline_smoke(check: Check, step: Step) -> None:
    from corelib.evaluation import evaluate_ranking
    from corelib.features import extract_split
    from corelib.training import load_trained_model

    (source, target), seconds = timed(check.embedded_pair)
    step.figure("synthesis", {"seconds": seconds, "scale": check.sizes.synthetic_scale,
                              "source": {"name": source.name, "train": len(source.train), "ids": source.num_train_pids},
                              "target": {"name": target.name, "train": len(target.train), "query": len(target.query),
                                         "gallery": len(target.gallery)}})
    dev = check.device
    ckpt = _pipeline_on(check, step, dev, source, target)
    if dev.type == "cuda":  # the same run on the CPU, beside it (bf16 vs fp32 kernels: no equality expected)
        step.attempt("cpu_twin_ran", lambda: _pipeline_on(check, step, torch.device("cpu"), source, target))
    else:
        step.figure("cpu_twin", "no GPU: this run is the CPU run; evaluation is compared cpu against cpu")

    # evaluation of the same features on both devices: exact agreement
    trained = load_trained_model(ckpt["finetune"], device=dev)
    h, w = trained.input_size
    q = extract_split(trained.model, target.query, h, w, device=dev, channels_last=trained.channels_last)
    g = extract_split(trained.model, target.gallery, h, w, device=dev, channels_last=trained.channels_last)
    res = {}
    for key, where in (("reference_cpu", torch.device("cpu")), ("device", dev)):
        res[key], t = timed(lambda where=where: evaluate_ranking(q.features, g.features, q.pids, g.pids, q.camids,
                                                                 g.camids, device=where), where)
        step.figure(f"evaluation_{key}", {**res[key].to_dict(), "device": str(where), "seconds": t})
    same, detail = _ranking_agreement(res["reference_cpu"], res["device"])
    step.expect("evaluation_cpu_equals_device", same, f"the same features, cpu vs {dev}: {detail}")

    # Grad-CAM (pytorch-grad-cam) and the paper's gradient-free activation maps
    from corelib import explain
    from corelib.data import build_loader, build_transforms

    images = next(iter(build_loader(target.query[:4], build_transforms("test", h, w), 4)))[0]
    maps = explain.activation_maps(trained.model, images, flip=True)
    step.expect("activation_maps", tuple(maps.shape) == (2 * len(images), h, w) and bool(torch.isfinite(maps).all()),
                f"shape {tuple(maps.shape)}")
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError as e:
        step.skip_part("grad_cam", f"pytorch-grad-cam is not importable here ({e}): it needs opencv-python-headless, "
                                   "whose wheel (about 54 MiB) does not fit the lent machine's carry")
        return
    refs = explain.embed(trained.model, images[:1]).expand(len(images), -1)
    cams, seconds = timed(lambda: explain.similarity_cam(trained.model, images, refs), dev)
    ok = cams.shape == (len(images), h, w) and bool(np.isfinite(cams).all()) and cams.min() >= 0 and cams.max() <= 1
    step.figure("grad_cam", {"seconds": seconds, "shape": list(cams.shape), "mean": float(cams.mean())})
    step.expect("grad_cam", ok, f"shape {cams.shape}, range [{cams.min():.3f}, {cams.max():.3f}]")


# --------------------------------------------------------------------------------------------
# 3. clustering and evaluation at the paper's shapes


def _faiss_gpu(device: torch.device):
    """(faiss, None) where faiss's GPU build can run here, else (None, the reason)."""
    if device.type != "cuda":
        return None, "faiss's GPU k-means and kNN need a CUDA device"
    try:
        import faiss
    except ImportError as e:
        return None, f"faiss GPU wheel not present ({e})"
    if not hasattr(faiss, "StandardGpuResources"):
        return None, "faiss GPU wheel not present (the installed faiss is a CPU build)"
    return faiss, None


def _kmeans_features(label: str, n: int, d: int, ids: int) -> torch.Tensor:
    if label in ("market", "msmt17"):  # the features of benchmarks/kmeans.py at the paper's shapes
        import kmeans as kmeans_bench

        return kmeans_bench.make_features({"market": "market", "msmt17": "msmt"}[label])
    return _identity_features(n, d, ids, noise=0.03)[0]


def step_clustering_evaluation(check: Check, step: Step) -> None:
    dev, sz = check.device, check.sizes
    faiss, no_faiss = _faiss_gpu(dev)
    if faiss is None:
        step.skip_part("faiss", no_faiss)
    for label, n, d, k, ids in sz.kmeans:
        step.attempt(f"kmeans_{label}_ran", lambda shape=(label, n, d, k, ids): _kmeans_at(step, dev, sz, faiss, *shape))
    step.attempt(f"evaluation_{sz.evaluation[0]}_ran", lambda: _evaluation_at(step, dev, sz))


def _kmeans_at(step: Step, dev: torch.device, sz: Sizes, faiss, label: str, n: int, d: int, k: int, ids: int) -> None:
    from corelib.cluster import kmeans
    from corelib.cluster.jaccard import _neighbours

    x = _kmeans_features(label, n, d, ids).to(dev)
    inputs_gb = round(x.numel() * 4 / 2**30, 3)
    kmeans(x[: min(n, 2000)], min(k, 50), max_iter=2, seed=0)  # warm-up: kernels, CUDA context, allocator
    _reset_peak(dev)
    res = kmeans(x, k, max_iter=sz.lloyd_iters, tol=0.0, seed=0)
    step.figure(f"kmeans_{label}", {"n": n, "d": d, "k": k, "seeding_s": res.seconds["init"],
                                    "lloyd_iterations": res.n_iter,
                                    "lloyd_s_per_iteration": res.seconds["iterations"] / max(1, res.n_iter),
                                    "total_s": res.seconds["total"], "inertia": res.inertia, "inputs_gb": inputs_gb,
                                    **_peak(dev)})
    rows = max(1, min(n, (1 << 27 if dev.type == "cuda" else 1 << 24) // n))  # the Jaccard distance's blocks
    _reset_peak(dev)
    (rank, _), t = timed(lambda: _neighbours(x, sz.knn_k, rows, False), dev)
    step.figure(f"knn_{label}", {"k": sz.knn_k, "seconds": t, "inputs_gb": inputs_gb, **_peak(dev)})
    if faiss is None:
        return

    def with_faiss():
        fres = kmeans(x, k, init="random", backend="faiss", max_iter=sz.lloyd_iters, seed=0)
        step.figure(f"faiss_kmeans_{label}", {"niter": sz.lloyd_iters, "total_s": fres.seconds["total"],
                                              "inertia": fres.inertia})
        xn = x.cpu().numpy()
        resources = faiss.StandardGpuResources()
        (_, idx), t = timed(lambda: faiss.knn_gpu(resources, xn, xn, sz.knn_k), dev)
        same = float((torch.from_numpy(idx).sort(1).values == rank.cpu().sort(1).values).float().mean())
        step.figure(f"faiss_knn_{label}", {"k": sz.knn_k, "seconds": t, "same_neighbours": same})

    step.attempt(f"faiss_{label}_ran", with_faiss)


def _evaluation_at(step: Step, dev: torch.device, sz: Sizes) -> None:
    from corelib.evaluation import evaluate_ranking

    label, nq, ng, d, ids, cams = sz.evaluation
    if label == "msmt17":  # the features of benchmarks/evaluation.py at the MSMT17 test shape
        import evaluation as evaluation_bench

        qf, gf, qp, gp, qc, gc = evaluation_bench.make_inputs("msmt")
    else:
        g = torch.Generator().manual_seed(1)
        feats, pids = _identity_features(nq + ng, d, ids, noise=0.075, seed=1)
        qf, gf, qp, gp = feats[:nq], feats[nq:], pids[:nq].numpy(), pids[nq:].numpy()
        qc, gc = torch.randint(0, cams, (nq,), generator=g).numpy(), torch.randint(0, cams, (ng,), generator=g).numpy()
    qf, gf = qf.to(dev), gf.to(dev)
    evaluate_ranking(qf[:64], gf, qp[:64], gp, qc[:64], gc)  # warm-up
    _reset_peak(dev)
    res, t = timed(lambda: evaluate_ranking(qf, gf, qp, gp, qc, gc, protocol="market"), dev)
    step.figure(f"evaluation_{label}", {"queries": nq, "gallery": ng, "d": d, "seconds": t, "mAP": res.mAP,
                                        "rank1": res.rank1, "mINP": res.mINP,
                                        "inputs_gb": round((qf.numel() + gf.numel()) * 4 / 2**30, 3), **_peak(dev)})


# --------------------------------------------------------------------------------------------
# 4. throughput


def step_throughput(check: Check, step: Step) -> None:
    from vit_throughput import eval_rate, train_rate

    from corelib.models import build_model
    from corelib.models.complexity import images_per_second

    dev, sz = check.device, check.sizes
    size = tuple(sz.image)
    nets = {  # name: (builder, loss, channels_last)
        "resnet50 (source_net)": (lambda: build_model("source_net", backbone="resnet50", num_classes=751, weights=None),
                                  "ce_triplet", True),
        "transreid_vit_base stride 12 (SIE, JPM)": (
            lambda: build_model("transreid_net", backbone="transreid_vit_base", num_classes=751, num_cameras=6,
                                img_size=size, weights=None), "transreid", False),
    }

    def measure(name, build, loss, channels_last):
        _reset_peak(dev)
        net = build()
        train = train_rate(net, loss, dev, size, sz.train_batch, sz.iters, True, 6, channels_last=channels_last)
        train_peak = _peak(dev)
        _reset_peak(dev)
        infer = eval_rate(net, dev, size, sz.infer_batch, sz.iters, True, 6, channels_last=channels_last)
        step.figure(name, {"input": list(size), "bf16": True, "channels_last": channels_last,
                           "train_batch": sz.train_batch, "train_images_per_s": train, "train_memory": train_peak,
                           "infer_batch": sz.infer_batch, "infer_images_per_s": infer, "infer_memory": _peak(dev),
                           "iters": sz.iters})

    def batch1(backbone, paper):  # the CORE-ReID network (the paper's table)
        net = build_model("corereid_net", backbone=backbone, num_classes=900, weights=None)
        row = {"input": list(size), "batch": 1, "paper_fps": paper}
        for tag, bf16, cl in (("fp32", False, False), ("bf16_channels_last", True, True)):
            row[f"images_per_s_{tag}"] = images_per_second(net, device=dev, input_size=size, batch=1, iters=sz.fps_iters,
                                                           warmup=2, bf16=bf16, channels_last=cl)
            net = net.to(memory_format=torch.contiguous_format)
        step.figure(f"batch1_corereid_net_{backbone}", row)

    for name, (build, loss, channels_last) in nets.items():
        step.attempt(f"{name.split()[0]}_ran", lambda a=(name, build, loss, channels_last): measure(*a))
        _reset_peak(dev)  # the network is freed: its memory goes back before the next one
    for backbone, paper in PAPER_FPS.items():
        step.attempt(f"batch1_{backbone}_ran", lambda a=(backbone, paper): batch1(*a))
    step.figure("paper_fps_note", PAPER_FPS_NOTE)


# --------------------------------------------------------------------------------------------
# 5. CycleGAN


def step_cyclegan(check: Check, step: Step) -> None:
    from corelib.config import StyleCfg
    from corelib.style import train_cyclegan

    dev, steps = check.device, check.sizes.style_steps
    cfg = StyleCfg.smoke() if check.quick else StyleCfg()  # CamStyle's recipe: 256 x 256, batch 1, 30 + 20 epochs
    workers = 0 if dev.type == "cpu" else cfg.num_workers
    source, _ = check.embedded_pair()
    cams = sorted({s.camid for s in source.train})
    a = [s for s in source.train if s.camid == cams[0]][: steps + 1]
    b = [s for s in source.train if s.camid == cams[1]][: steps + 1]
    seconds = {}
    for n in (1, steps + 1):  # the difference of two runs: `steps` steps without the set-up
        run_cfg = replace(cfg, epochs=1, decay_epochs=0, iters_per_epoch=n, num_workers=workers, device=str(dev))
        _reset_peak(dev)
        _, seconds[n] = timed(lambda c=run_cfg, n=n: train_cyclegan(a, b, c, check.work / f"cyclegan_{n}", progress=False),
                              dev)
    per_step = max(1e-9, (seconds[steps + 1] - seconds[1]) / steps)
    per_epoch = cfg.iters_per_epoch or MARKET_IMAGES_PER_CAMERA
    steps_per_pair = per_epoch * cfg.total_epochs
    step.figure("stack_pairs_1", {
        "size": [cfg.height, cfg.width], "batch": cfg.batch_size, "ngf": cfg.ngf, "gen_blocks": cfg.gen_blocks,
        "precision": cfg.precision, "num_workers": workers, "timed_steps": steps, "seconds_per_step": per_step,
        "steps_per_pair": steps_per_pair, "camera_pairs_per_hour": 3600.0 / (steps_per_pair * per_step),
        "steps_per_pair_from": ("iters_per_epoch x epochs" if cfg.iters_per_epoch else
                                f"{cfg.total_epochs} epochs x {MARKET_IMAGES_PER_CAMERA:.0f} images (Market-1501's "
                                "train + query + gallery over its 6 cameras, the mean camera)"),
        **_peak(dev)})
    for n in (3, 5):
        step.skip_part(f"stack_pairs_{n}", STACKING_REMOVED)


# --------------------------------------------------------------------------------------------
# 6. the paper-scale rehearsal


@contextlib.contextmanager
def _smoke_paper_scale(ps):
    """paper_scale with the smoke recipes, tiny datasets and tiny test shapes in place of the paper's
    (``--quick``): the same functions run in seconds; the extrapolation then describes nothing."""
    from corelib.config import FinetuneCfg, PretrainCfg, StyleCfg
    from corelib.data.synthetic import get_preset

    def presets():
        return (replace(get_preset("market_like"), name="gpu_check_market_tiny", num_train_ids=12, num_test_ids=4,
                        num_distractors=0),
                replace(get_preset("cuhk_like"), name="gpu_check_cuhk_tiny", num_train_ids=12, num_test_ids=4))

    tiny = {"train": 100, "ids": 12, "cams": 6, "query": 50, "gallery": 200, "test_ids": 10}
    swap = {"PretrainCfg": PretrainCfg.smoke, "FinetuneCfg": FinetuneCfg.smoke, "StyleCfg": StyleCfg.smoke,
            "paper_presets": presets, "MARKET": tiny, "CUHK03_NP": {**tiny, "cams": 2}}
    saved = {k: getattr(ps, k) for k in swap}
    for k, v in swap.items():
        setattr(ps, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ps, k, v)


def step_paper_scale(check: Check, step: Step) -> None:
    import paper_scale as ps

    dev = check.device
    workers = (0,) if check.quick else (0, min(8, os.cpu_count() or 1))
    cfg = ps.PaperScaleCfg(device=str(dev), steps=check.sizes.paper_steps, workers=workers,
                           root=str(check.work / "paper_scale_data"), progress=False)
    with _smoke_paper_scale(ps) if check.quick else contextlib.nullcontext():
        report, seconds = timed(lambda: ps.run_paper_scale(cfg, check.work / "paper_scale.json"), dev)
    print(report)
    step.figure("rates", {k: {"value": v, "unit": u} for k, (v, u) in report.rates.items()})
    step.figure("chapters", [{"chapter": c["chapter"], "seconds": c["seconds"], "days": c["seconds"] / 86400,
                              "bound_by": c["bound_by"], "parts": c["parts"]} for c in report.chapters])
    step.figure("total_extrapolated_days", sum(c["seconds"] for c in report.chapters) / 86400)
    step.figure("memory", report.memory)
    step.figure("datasets", report.datasets)
    step.figure("settings", {**report.settings, "rehearsal_seconds": seconds,
                             "smoke": "the smoke recipes and tiny datasets (--quick)" if check.quick else False})


STEP_FUNCTIONS: dict[str, Callable[[Check, Step], None]] = {
    "gpu_tests": step_gpu_tests, "pipeline_smoke": step_pipeline_smoke,
    "clustering_evaluation": step_clustering_evaluation, "throughput": step_throughput, "cyclegan": step_cyclegan,
    "paper_scale": step_paper_scale,
}


# --------------------------------------------------------------------------------------------
# the run


def run_steps(check: Check, names) -> bool:
    """Run ``names`` in order; returns False when one failed or the run was stopped."""
    all_ok = True
    for i, name in enumerate(names):
        step = Step(check, name)
        left = check.remaining()
        if step.entry["estimate_s"] > left:
            step.entry.update(status="skipped", reason=f"would not fit: estimate {step.entry['estimate_s']} s, "
                                                       f"{max(0.0, left):.0f} s of the budget left")
            check.save()
            check.log(f"{name}: skipped ({step.entry['reason']})")
            continue
        check.log(f"{name}: start (estimate {step.entry['estimate_s']} s, {left:.0f} s left)")
        t0 = time.monotonic()
        try:
            STEP_FUNCTIONS[name](check, step)
            failed = [k for k, c in step.entry["checks"].items() if not c["ok"]]
            step.entry.update(status="failed" if failed else "ok",
                              reason=f"checks failed: {', '.join(failed)}" if failed else None)
        except Stopped as e:
            step.entry.update(status="stopped", reason=f"stopped by {e} during the step", seconds=time.monotonic() - t0)
            check.record["stopped"] = f"{e} during {name}"
            for later in names[i + 1:]:
                check.record["steps"][later] = {"status": "skipped", "reason": f"not started: the run was stopped ({e})"}
            check.save()
            check.log(f"{name}: stopped by {e}")
            return False
        except Exception as e:  # noqa: BLE001 - every step's failure is recorded and the run goes on
            step.entry.update(status="failed", reason=f"{type(e).__name__}: {e}",
                              traceback=traceback.format_exc().splitlines()[-12:])
            traceback.print_exc()
        finally:
            if check.device.type == "cuda":
                torch.cuda.empty_cache()
        step.entry["seconds"] = round(time.monotonic() - t0, 3)
        all_ok = all_ok and step.entry["status"] == "ok"
        check.save()
        check.log(f"{name}: {step.entry['status']} in {step.entry['seconds']:.1f} s"
                  + (f" ({step.entry['reason']})" if step.entry["reason"] else ""))
    return all_ok


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder that receives gpu_check.json and gpu_check.log")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    ap.add_argument("--quick", action="store_true", help="tiny shapes everywhere (the CPU dry run of the test suite)")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="seconds for the whole run; a step whose estimate exceeds the time left is skipped")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run (default: all)")
    ap.add_argument("--commit", default=None, help="the commit measured, where the copy has no git history")
    ap.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error(f"--budget-s must be positive, got {args.budget_s}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve(args.device)
    # appended: the shell entry's installation lines come first
    with open(out / "gpu_check.log", "a", encoding="utf-8") as log:
        return _run_logged(args, device, out, log, t0)


def _run_logged(args, device: torch.device, out: Path, log, t0: float) -> int:
    """The run with its output copied to ``log`` and SIGTERM / SIGINT turned into :class:`Stopped`."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(stdout, log), _Tee(stderr, log)
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with (contextlib.nullcontext(args.work_dir) if args.work_dir else
              tempfile.TemporaryDirectory(prefix="gpu_check_")) as work:
            Path(work).mkdir(parents=True, exist_ok=True)
            check = Check(args, device, out, Path(work), t0)
            check.save()
            check.log(f"device {check.record['device'].get('name')} ({device}), torch {torch.__version__}, "
                      f"budget {args.budget_s:.0f} s, {'quick' if args.quick else 'full'} shapes")
            run_steps(check, [s for s in STEPS if s in args.steps])
            check.record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            check.save()
            statuses = {k: v["status"] for k, v in check.record["steps"].items()}
            check.log(f"done in {check.elapsed():.1f} s: {statuses}; record {check.path}")
            return 0 if all(s in ("ok", "skipped") for s in statuses.values()) else 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.stdout, sys.stderr = stdout, stderr

if __name__ == "__main__":
    sys.exit(main())
