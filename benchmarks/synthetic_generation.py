"""Time the synthetic generator on the 4,000-image person preset (target: <= 60 s on 2 cores).

Run:  .venv/bin/python benchmarks/synthetic_generation.py [--preset market_like]

Generates the preset twice into a temporary folder, with every core and with one process, and
prints images per second side by side; then checks the two copies are byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from corelib.data.synthetic import generate_synthetic


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.jpg")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="market_like")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({cores, 1}, reverse=True):
            t0 = time.perf_counter()
            out = generate_synthetic(args.preset, Path(tmp) / f"w{workers}", workers=workers, progress=False)
            dt = time.perf_counter() - t0
            n = sum(1 for _ in out.rglob("*.jpg"))
            rows.append((workers, n, dt, digest(out)))
    print(f"preset {args.preset} on {cores} cores")
    print(f"{'workers':>8} {'images':>7} {'seconds':>8} {'img/s':>7}")
    for workers, n, dt, _ in rows:
        print(f"{workers:>8} {n:>7} {dt:>8.1f} {n / dt:>7.0f}")
    if len(rows) == 2:
        print(f"speed-up with {cores} workers: {rows[1][2] / rows[0][2]:.2f}x")
    print("byte-identical across worker counts:", len({r[3] for r in rows}) == 1)


if __name__ == "__main__":
    main()
