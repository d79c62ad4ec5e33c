"""A dress rehearsal at the paper's scale: how long each chapter of the paper pipeline would take on
this device, and which part bounds it.

Run:  .venv/bin/python benchmarks/paper_scale.py [--device cpu] [--steps 2] [--workers 0 2] [--out FILE]

It draws a Market-sized embedded source (751 training identities, ~13k images) and a CUHK03-sized
target (767 identities, ~7.5k images) in the real on-disk formats (into the synthetic data root,
reused afterwards), then measures, with the paper's settings (ResNet-50 at 256 x 128, the default
``PretrainCfg`` / ``FinetuneCfg`` / ``StyleCfg``):

- data loading: training images/s with the pre-training transforms, per worker count;
- pre-training: images/s of one optimiser step of the source network with its real criterion;
- fine-tuning: images/s of one step of the mean teacher (student forward + backward on the three
  batches, teacher forward, EMA update). The criterion is replaced by a mean of the outputs (the
  network dominates the step; the CORE-ReID criterion is not timed);
- extraction: eval-mode images/s (the features of every clustering and evaluation);
- one CycleGAN step at 256 x 256 (batch 1, CamStyle's recipe), through the real training loop, and
  the generator's images/s (writing the style copies);
- greedy k-means++ seeding and Lloyd iterations at k = 900 on target-sized features;
- evaluation at the Market-1501 and CUHK03-NP test shapes.

Each chapter's time is then extrapolated from those rates (style transfer for every camera pair of
the source, 120 pre-training and 80 fine-tuning epochs with their evaluations), with the part that
bounds it, printed, and the record is written as JSON (default
``runs/bench/paper_scale_<device>_<time>.json``). The numbers are rates measured over ``--steps``
steps after one warm-up step: few steps give a rough figure, more steps a steadier one. On the
2-core CPU with ``--steps 2`` it takes about 5 minutes after the datasets are drawn.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from corelib import (
    FinetuneCfg,
    InvalidInputError,
    PretrainCfg,
    StyleCfg,
    build_loader,
    build_model,
    build_transforms,
    evaluate_ranking,
    generate_synthetic,
    get_preset,
    kmeans,
    load_synthetic,
    resolve_device,
    runs_root,
    seed_everything,
    synthetic_root,
)
from corelib.losses import build_criterion
from corelib.paths import atomic_write_text
from corelib.runtime import autocast
from corelib.style import CycleGAN, train_cyclegan
from timing import seconds_per_call, timed

# the paper's datasets (train images / identities / cameras, test query / gallery)
MARKET = {"train": 12936, "ids": 751, "cams": 6, "query": 3368, "gallery": 15913, "test_ids": 750}
CUHK03_NP = {"train": 7365, "ids": 767, "cams": 2, "query": 1400, "gallery": 5332, "test_ids": 700}


@dataclass
class PaperScaleCfg:
    """Settings of the dress rehearsal."""

    device: str = "auto"
    """Where to measure: auto, cpu or cuda[:N]."""
    steps: int = 5
    """Timed steps per measurement (after one warm-up step); 2 gives a rough figure in minutes on a CPU."""
    workers: Sequence[int] = (0, 2)
    """DataLoader worker counts whose loading rate is measured."""
    kmeans_iters: int = 3
    """Lloyd iterations timed at k = 900 (the extrapolation assumes ``cluster.kmeans.max_iter``)."""
    root: Optional[str] = None
    """Where the two datasets are drawn (default: the synthetic data root); reused when complete."""
    progress: bool = True
    """Progress bars while drawing and measuring."""


@dataclass
class PaperScaleReport:
    """Measured rates, extrapolated chapter times, and the record written as JSON."""

    device: str
    rates: dict
    chapters: list
    memory: dict
    datasets: dict
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"paper-scale dress rehearsal on {self.device} "
                 f"(source {self.datasets['source_train']} train images / {self.datasets['source_ids']} ids, "
                 f"target {self.datasets['target_train']} / {self.datasets['target_ids']})", "", "measured:"]
        for key, (value, unit) in self.rates.items():
            lines.append(f"  {key:<38} {value:>12.3f} {unit}")
        lines += ["", f"{'chapter':<34} {'extrapolated':>14}  bound by"]
        for ch in self.chapters:
            lines.append(f"{ch['chapter']:<34} {_hms(ch['seconds']):>14}  {ch['bound_by']}")
        total = sum(ch["seconds"] for ch in self.chapters)
        lines.append(f"{'total':<34} {_hms(total):>14}")
        mem = ", ".join(f"{k} {v:.2f} GB" for k, v in self.memory.items())
        lines += ["", f"peak memory: {mem}"]
        return "\n".join(lines)


def _hms(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def paper_presets():
    """The two drawn datasets: Market-sized source, CUHK03-NP-sized target (few test identities)."""
    # images per identity: cameras (2..5, mean 3.5) x images per camera (4..6, mean 5) = 17.5 (Market: 17.2)
    source = replace(get_preset("market_like"), name="paper_market_scale", num_train_ids=MARKET["ids"],
                     num_test_ids=16, num_distractors=0, images_per_cam=(4, 6))
    # 2 cameras x (3..7, mean 5) = 10 images per identity (CUHK03-NP: 9.6)
    target = replace(get_preset("cuhk_like"), name="paper_cuhk03_scale", num_train_ids=CUHK03_NP["ids"],
                     num_test_ids=16, images_per_cam=(3, 7))
    return source, target


def _draw(cfg: PaperScaleCfg):
    root = Path(cfg.root) if cfg.root else synthetic_root()
    return [load_synthetic(generate_synthetic(p, root, progress=cfg.progress)) for p in paper_presets()]


def _loading_rate(samples, batch: int, workers: int, steps: int) -> float:
    """Training images/s of the pre-training transforms with ``workers`` DataLoader processes."""
    aug = PretrainCfg().augment
    tf = build_transforms("pretrain", aug.height, aug.width, gray_p=aug.gray_p, lgpr_p=aug.lgpr_p, erase_p=aug.erase_p,
                          erase_mode=aug.erase_mode)
    n = batch * (steps + 1 + max(1, workers))
    loader = build_loader(list(samples)[:n], tf, batch, shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)  # warm-up: the workers start and fill their queues
    t0 = time.perf_counter()
    count = 0
    for _ in range(steps):
        count += len(next(it)[0])
    return count / (time.perf_counter() - t0)


CPU_BATCH = 32  # on a CPU the rates are measured at this batch (images/s barely depends on it there;
# the paper's batches of 128, three of them per fine-tuning step, would need ~40 GB of host memory)


def _measure_batch(batch: int, device: torch.device) -> int:
    return batch if device.type == "cuda" else min(batch, CPU_BATCH)


def _pretrain_rate(source, device: torch.device, steps: int) -> float:
    """Images/s of one pre-training step: ResNet-50 source network, its criterion, Adam."""
    cfg = PretrainCfg()
    model = build_model(cfg.model.name, num_classes=source.num_train_pids, weights=None, **cfg.model.model_args()).to(device)
    model.train()
    criterion = build_criterion(cfg.loss, stage="pretrain").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    b, k = _measure_batch(cfg.batch_size, device), cfg.num_instances
    x = torch.randn(b, 3, cfg.augment.height, cfg.augment.width, device=device)
    if cfg.runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pids = torch.arange(b // k, device=device).repeat_interleave(k)
    cams = torch.arange(b, device=device) % 6

    def step():
        with autocast(cfg.runtime.precision, device):
            terms = criterion(model(x, cams), pids, lambda t: t)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()

    return b / seconds_per_call(step, steps, device)


def _finetune_rate(device: torch.device, steps: int) -> float:
    """Images/s of one fine-tuning step of the mean teacher (criterion replaced by an output mean)."""
    cfg = FinetuneCfg()
    mt = build_model(cfg.model.name, num_classes=cfg.cluster.num_clusters, weights="none", **cfg.model.model_args()).to(device)
    mt.train()
    opt = torch.optim.Adam([p for p in mt.student.parameters() if p.requires_grad], lr=cfg.lr)
    b = _measure_batch(cfg.batch_size, device)
    xs = [torch.randn(b, 3, cfg.augment.height, cfg.augment.width, device=device) for _ in range(3)]
    if cfg.runtime.channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]

    def mean_of(out) -> torch.Tensor:
        tensors = [v for v in (out if isinstance(out, (list, tuple)) else vars(out).values()) if torch.is_tensor(v)]
        return sum(t.float().mean() for t in tensors if t.requires_grad)

    def step():
        with autocast(cfg.runtime.precision, device):
            loss = sum(mean_of(mt.student(x)) for x in xs)  # the three pseudo-labelled batches
            with torch.no_grad():
                for x in xs:  # teacher forward (its BN statistics follow the target)
                    mt.teacher(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mt.update_teacher()

    return 3 * b / seconds_per_call(step, steps, device)


def _extract_rate(device: torch.device, steps: int, batch: int = 256) -> float:
    """Eval-mode images/s of the fine-tuned network (features for clustering and evaluation)."""
    cfg = FinetuneCfg()
    mt = build_model(cfg.model.name, num_classes=cfg.cluster.num_clusters, weights="none", **cfg.model.model_args()).to(device)
    mt.eval()
    batch = _measure_batch(batch, device)
    x = torch.randn(batch, 3, cfg.augment.height, cfg.augment.width, device=device)
    if cfg.runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.no_grad(), autocast(cfg.runtime.precision, device):
            mt(x)

    return batch / seconds_per_call(step, steps, device)


def _cyclegan_rates(source, device: torch.device, steps: int, progress: bool) -> tuple[float, float]:
    """Seconds per CycleGAN step at 256 x 256 (the real training loop, batch 1) and generator images/s."""
    cfg = StyleCfg()
    cams = sorted({s.camid for s in source.train})
    a = [s for s in source.train if s.camid == cams[0]][: steps + 1]
    b = [s for s in source.train if s.camid == cams[1]][: steps + 1]
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="corelib-paper-scale-") as tmp:
        for n_steps in (1, steps + 1):  # the difference of two runs: one step each without the set-up
            run_cfg = replace(cfg, epochs=1, decay_epochs=0, iters_per_epoch=n_steps, num_workers=0, device=str(device))
            _, seconds[n_steps] = timed(lambda: train_cyclegan(a, b, run_cfg, Path(tmp) / f"run{n_steps}",
                                                               progress=progress, desc="cyclegan step"), device)
    per_step = max(1e-9, (seconds[steps + 1] - seconds[1]) / steps)
    gen = CycleGAN(cfg).g_ab.to(device).eval()
    x = torch.randn(1 if device.type == "cpu" else 16, 3, cfg.height, cfg.width, device=device)

    def forward():
        with torch.no_grad():
            gen(x)

    return per_step, len(x) / seconds_per_call(forward, steps, device)


def _kmeans_seconds(device: torch.device, n: int, k: int, iters: int, seed: int = 0) -> tuple[float, float]:
    """(greedy k-means++ seeding seconds, seconds per Lloyd iteration) at (n, 2048), k centres."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, 2048, generator=g), dim=1).to(device)
    res = kmeans(x, k, max_iter=iters, tol=0.0, seed=seed, device=device)
    return res.seconds["init"], res.seconds["iterations"] / max(1, res.n_iter)


def _evaluation_seconds(device: torch.device, shape: dict, seed: int = 0, noise: float = 0.075) -> float:
    """Seconds of :func:`~corelib.evaluation.evaluate_ranking` at a test shape, on identity-structured
    2048-d features (an identity centre plus noise 0.075: mAP ~0.65 at the Market shape, as in
    ``benchmarks/evaluation.py``; random features would put every positive deep in the ranking)."""
    g = torch.Generator().manual_seed(seed)
    nq, ng, n_ids = shape["query"], shape["gallery"], shape["test_ids"]
    centres = torch.nn.functional.normalize(torch.randn(n_ids, 2048, generator=g), dim=1)
    q_pids, g_pids = torch.randint(0, n_ids, (nq,), generator=g), torch.randint(0, n_ids, (ng,), generator=g)

    def feats(pids):
        return torch.nn.functional.normalize(centres[pids] + noise * torch.randn(len(pids), 2048, generator=g), dim=1)

    qf, gf = feats(q_pids).to(device), feats(g_pids).to(device)
    q_cams, g_cams = torch.randint(0, 6, (nq,), generator=g), torch.randint(0, 6, (ng,), generator=g)
    return timed(lambda: evaluate_ranking(qf, gf, q_pids, g_pids, q_cams, g_cams), device)[1]


def _peak_memory(device: torch.device) -> dict:
    out = {"host": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # kB on Linux
    if device.type == "cuda":
        out["device"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def extrapolate(rates: dict, source_train: int, source_cams: int, per_cam: Sequence[int]) -> list[dict]:
    """Chapter times of the paper pipeline from the measured rates (seconds, with the bounding part)."""
    pre, fine, style = PretrainCfg(), FinetuneCfg(), StyleCfg()
    r = {k: v for k, (v, _) in rates.items()}
    load = max(v for k, v in r.items() if k.startswith("data loading"))  # the best worker count measured
    best_workers = max((k for k in r if k.startswith("data loading")), key=lambda k: r[k])

    # style transfer: one CycleGAN per camera pair, one pass over the larger camera per epoch (batch 1),
    # then every source image translated into each other camera's style
    pairs = [(i, j) for i in range(source_cams) for j in range(i + 1, source_cams)]
    style_steps = sum(max(per_cam[i], per_cam[j]) for i, j in pairs) * style.total_epochs
    style_train = style_steps * r["cyclegan step (s, batch 1, 256x256)"]
    style_write = source_train * (source_cams - 1) / r["generator forward (img/s, 256x256)"]

    # pre-training: the enlarged source (real + style copies), batches of 128, test every eval_every epochs
    step_images = pre.epochs * pre.iters_per_epoch * pre.batch_size
    pre_model = step_images / r["pretrain step (img/s)"]
    pre_load = step_images / load
    n_evals = math.ceil(pre.epochs / pre.eval_every)
    pre_eval = n_evals * ((MARKET["query"] + MARKET["gallery"]) / r["extraction (img/s)"] + r["evaluation Market (s)"])

    # fine-tuning: every epoch extracts the target, clusters it three times, steps, evaluates
    ft_images = fine.epochs * fine.iters_per_epoch * 3 * fine.batch_size
    ft_model = ft_images / r["finetune step (img/s)"]
    ft_load = ft_images / load
    ft_extract = fine.epochs * CUHK03_NP["train"] / r["extraction (img/s)"]
    k = fine.cluster.num_clusters  # the rates are measured at the fine-tuning recipe's k (run_paper_scale)
    ft_cluster = fine.epochs * 3 * (r[f"k-means seeding k={k} (s)"] + fine.cluster.kmeans.max_iter * r[f"k-means iteration k={k} (s)"])
    ft_eval = math.ceil(fine.epochs / fine.eval_every) * ((CUHK03_NP["query"] + CUHK03_NP["gallery"]) / r["extraction (img/s)"]
                                                          + r["evaluation CUHK03-NP (s)"])

    def chapter(name, parts):
        main = max(parts, key=parts.get)
        return {"chapter": name, "seconds": float(sum(parts.values())), "bound_by": main,
                "parts": {k: float(v) for k, v in parts.items()}}

    train_part = lambda model_s, load_s: {"model" if model_s >= load_s else f"data loading ({best_workers})":  # noqa: E731
                                          max(model_s, load_s)}
    return [
        chapter(f"01 style transfer ({len(pairs)} camera pairs)", {"CycleGAN training": style_train,
                                                                   "writing style copies": style_write}),
        chapter(f"02 pre-training ({pre.epochs} epochs)", {**train_part(pre_model, pre_load), "evaluation": pre_eval}),
        chapter(f"03 fine-tuning ({fine.epochs} epochs)", {**train_part(ft_model, ft_load), "extraction": ft_extract,
                                                           "clustering (k-means, 3 levels)": ft_cluster,
                                                           "evaluation": ft_eval}),
    ]


def run_paper_scale(cfg: PaperScaleCfg, out: Optional[Path] = None) -> PaperScaleReport:
    """Draw the two datasets, measure every rate, extrapolate, and write the JSON record to ``out``."""
    if cfg.steps < 1:
        raise InvalidInputError(f"steps must be at least 1, got {cfg.steps}")
    device = resolve_device(cfg.device)
    seed_everything(0)
    source, target = _draw(cfg)
    per_cam = np.bincount([s.camid for s in source.train]).tolist()
    rates: dict[str, tuple[float, str]] = {}
    batch = PretrainCfg().batch_size

    def say(what: str) -> None:
        if cfg.progress:
            print(f"[paper-scale] {what} ...", file=sys.stderr, flush=True)

    say("data loading")
    for w in cfg.workers:
        rates[f"data loading {w} workers (img/s)"] = (_loading_rate(source.train, batch, w, cfg.steps), "img/s")
    say("pre-training step")
    rates["pretrain step (img/s)"] = (_pretrain_rate(source, device, cfg.steps), "img/s")
    say("fine-tuning step")
    rates["finetune step (img/s)"] = (_finetune_rate(device, cfg.steps), "img/s")
    say("extraction")
    rates["extraction (img/s)"] = (_extract_rate(device, cfg.steps), "img/s")
    say("CycleGAN step")
    step_s, gen_ips = _cyclegan_rates(source, device, cfg.steps, cfg.progress)
    rates["cyclegan step (s, batch 1, 256x256)"] = (step_s, "s")
    rates["generator forward (img/s, 256x256)"] = (gen_ips, "img/s")
    say("k-means at k = 900")
    k = FinetuneCfg().cluster.num_clusters
    seed_s, iter_s = _kmeans_seconds(device, len(target.train), k, cfg.kmeans_iters)
    rates[f"k-means seeding k={k} (s)"] = (seed_s, "s")
    rates[f"k-means iteration k={k} (s)"] = (iter_s, "s")
    say("evaluation")
    rates["evaluation Market (s)"] = (_evaluation_seconds(device, MARKET), "s")
    rates["evaluation CUHK03-NP (s)"] = (_evaluation_seconds(device, CUHK03_NP), "s")
    report = PaperScaleReport(
        device=str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        rates={k: (float(v), u) for k, (v, u) in rates.items()},
        chapters=extrapolate(rates, len(source.train), len(per_cam), per_cam),
        memory=_peak_memory(device),
        datasets={"source_train": len(source.train), "source_ids": source.num_train_pids,
                  "target_train": len(target.train), "target_ids": target.num_train_pids, "source_images_per_camera": per_cam},
        settings={"steps": cfg.steps, "measured_batch": _measure_batch(batch, device), "workers": list(cfg.workers), "kmeans_iters": cfg.kmeans_iters,
                  "threads": torch.get_num_threads(), "torch": torch.__version__},
    )
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N]")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement (default 2)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--out", default=None, help="JSON record (default runs/bench/paper_scale_<device>_<time>.json)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else runs_root() / "bench" / f"paper_scale_{device.type}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    t0 = time.perf_counter()
    report = run_paper_scale(PaperScaleCfg(device=args.device, steps=args.steps, workers=tuple(args.workers)), out)
    print(report)
    print(f"\nrecord: {out}\nwall time of the rehearsal: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
