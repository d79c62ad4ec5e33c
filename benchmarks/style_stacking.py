"""CycleGAN training of several camera pairs: stacked (one network holding them all) vs one by one.

Run:  .venv/bin/python benchmarks/style_stacking.py [--recipe paper|demo] [--pairs 3] [--steps 3]
                                                     [--device auto] [--precision fp32]

Both modes run :func:`corelib.style.train_cyclegans` on the same ``--pairs`` jobs (random images,
one domain pair each): ``stack=1`` trains them one after the other, as ``corelib style train``
always did; ``stack=pairs`` trains them as one stacked CycleGAN (grouped convolutions, one forward
and backward per step for all pairs). A step's time is the difference of a 1-step and a
``1 + steps``-step run, so model building and checkpoint writing are left out. Printed: pair-steps
per hour of each mode, their ratio, and the pairs per hour of the full recipe (``--recipe-steps``
steps per pair; default: ``demo`` its 36 steps, ``paper`` 50 epochs x 2,156 steps, Market-1501's
12,936 training images over its 6 cameras at batch 1, an average pair's epoch).

``paper``: CycleGAN's networks at 256 x 256, batch 1 (``StyleCfg()``); ``demo``: the small residual
CycleGAN ``make demo`` trains (``StyleCfg.embedded("person")``).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from corelib.config import StyleCfg
from corelib.repro import resolve_device
from corelib.style import StyleJob, train_cyclegans
from timing import timed


def _images(root: Path, pairs: int, n: int) -> list[tuple[list[Path], list[Path]]]:
    rng = np.random.default_rng(0)
    out = []
    for p in range(pairs):
        sides = []
        for side in "ab":
            paths = []
            for i in range(n):
                path = root / f"p{p}{side}{i}.png"
                Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(path)
                paths.append(path)
            sides.append(paths)
        out.append(tuple(sides))
    return out


def _seconds_per_step(domains, cfg: StyleCfg, stack: int, steps: int, root: Path, device: torch.device) -> float:
    """Seconds of one training step of all the pairs (``stack=1``: the pairs one after the other)."""
    times = {}
    for n in (1, 1 + steps):
        run_cfg = replace(cfg, epochs=1, decay_epochs=0, iters_per_epoch=n)
        jobs = [StyleJob(a, b, root / f"s{stack}n{n}" / f"pair{p}", f"pair{p}") for p, (a, b) in enumerate(domains)]
        _, times[n] = timed(lambda: train_cyclegans(jobs, run_cfg, stack=stack, progress=False), device)
    return max(1e-9, (times[1 + steps] - times[1]) / steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=("paper", "demo"), default="paper")
    ap.add_argument("--pairs", type=int, default=3, help="camera pairs trained (and stacked)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode (after a 1-step run)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--recipe-steps", type=int, default=0,
                    help="steps per pair of the full recipe, for pairs per hour (default: see above)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    base = StyleCfg() if args.recipe == "paper" else StyleCfg.embedded("person")
    cfg = replace(base, device=str(device), precision=args.precision, num_workers=0)
    recipe_steps = args.recipe_steps or (cfg.total_epochs * (cfg.iters_per_epoch or 12936 // 6))
    print(f"recipe {args.recipe}: {cfg.height}x{cfg.width}, ngf {cfg.ngf}, {cfg.gen_blocks} blocks, batch "
          f"{cfg.batch_size}, {args.precision}; {args.pairs} pairs, {args.steps} timed steps; device {device} "
          f"({torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory(prefix="corelib-stacking-") as tmp:
        root = Path(tmp)
        domains = _images(root, args.pairs, max(4, cfg.batch_size * 2))
        rows = {}
        for label, stack in (("one by one", 1), (f"stacked x{args.pairs}", args.pairs)):
            per_step = _seconds_per_step(domains, cfg, stack, args.steps, root, device)
            pair_steps_h = 3600 * args.pairs / per_step
            rows[label] = pair_steps_h
            print(f"{label:>12}: {per_step:8.3f} s per step of all pairs, {pair_steps_h:10.0f} pair-steps/h, "
                  f"{pair_steps_h / recipe_steps:8.3f} pairs/h of the full recipe")
    seq, stk = rows.values()
    print(f"stacked / one by one: {stk / seq:.2f}x")


if __name__ == "__main__":
    main()
