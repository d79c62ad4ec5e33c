"""The paper-scale dress rehearsal as a benchmark: ``corelib bench paper-scale`` with few steps.

Run:  .venv/bin/python benchmarks/paper_scale.py [--device cpu] [--steps 2]

It draws the Market-sized source and the CUHK03-sized target once (into the synthetic data root,
reused afterwards), measures each stage's rate at the paper's settings and prints the extrapolated
time of every chapter on this device with the part that bounds it (see :mod:`corelib.paper_scale`).
On the 2-core CPU with ``--steps 2`` it takes about 5 minutes after the datasets are drawn.
"""

from __future__ import annotations

import argparse
import sys
import time

from corelib.paper_scale import PaperScaleCfg, run_paper_scale
from corelib.paths import runs_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    out = runs_root() / "bench" / f"paper_scale_{args.device.split(':')[0]}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    t0 = time.perf_counter()
    report = run_paper_scale(PaperScaleCfg(device=args.device, steps=args.steps), out)
    print(report)
    print(f"\nrecord: {out}\nwall time of the rehearsal: {time.perf_counter() - t0:.0f} s", file=sys.stdout)


if __name__ == "__main__":
    main()
