"""Time and peak memory of the clustering Jaccard distance (corelib.cluster.jaccard_distance) beside a dense reference.

Run:  .venv/bin/python benchmarks/jaccard.py [--msmt] [--reference-n 4000] [--device cpu|cuda] [--threads N]

Features: random clustered unit vectors, 2,048-d float32 (random unit centres, x = normalise(centre + noise of norm
~1), about 17 images per identity like Market-1501's training set), fixed seed. k1 = 30, k2 = 6 (SpCL / Cluster
Contrast). Each measurement runs in its own subprocess so that its peak resident memory (``ru_maxrss``; tracemalloc
does not see torch's allocations) is its own; it is printed in total and above the inputs (the RSS once the features
and the modules are imported).

- ours: ``jaccard_distance`` at the Market-1501 training shape (12,936 images, 751 identities); N > 4,096, so it
  returns the sparse graph of every pair that shares a column of V (what DBSCAN reads);
- side by side at ``--reference-n`` images (default 4,000): ours (dense output) and the dense NumPy reference
  ``reference_jaccard`` of tests/test_jaccard.py (full argsort, dense N x N V, its query expansion and the min-sums,
  Python loops, float64), with the max abs difference of the two results. The reference holds ~7 float64 N x N
  arrays (9 GB at the Market shape) and spends minutes in its loops, hence the smaller default; pass
  ``--reference-n 12936`` to run it at the Market shape.
- ``--msmt``: ours alone at the MSMT17 training shape (32,621 images, 1,041 identities); target peak <= 4 GB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {"market": (12_936, 751), "msmt": (32_621, 1_041)}  # (images, identities)
DIM = 2048
K1, K2 = 30, 6


def features(n: int, ids: int, seed: int = 0):
    """Clustered L2-normalised float32 features, built in row chunks (no large temporaries)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(ids, DIM, generator=gen), dim=1)
    labels = torch.randint(0, ids, (n,), generator=gen)
    x = torch.empty(n, DIM)
    for s in range(0, n, 4096):
        e = min(s + 4096, n)
        x[s:e] = centres[labels[s:e]] + torch.randn(e - s, DIM, generator=gen) / DIM**0.5
        x[s:e] = torch.nn.functional.normalize(x[s:e], dim=1)
    return x


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def load_reference():
    """The dense NumPy reference, imported from the test file (one copy of it in the repository)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "test_jaccard.py"
    spec = importlib.util.spec_from_file_location("test_jaccard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_jaccard


def worker(which: str, n: int, ids: int, device: str, threads: int, save: str) -> dict:
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    from corelib.cluster import jaccard_distance

    reference = load_reference() if which == "reference" else None  # imports first: not counted as its memory
    x = features(n, ids)
    base = current_rss_gb()
    out: dict = {}
    if which == "ours":
        if device == "cuda":
            x = x.cuda()
            jaccard_distance(x[:256], K1, K2)  # warm-up: CUDA context and kernels
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = jaccard_distance(x, K1, K2)
        if device == "cuda":
            torch.cuda.synchronize()
            out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        seconds = time.perf_counter() - t0
        if isinstance(res, torch.Tensor):
            out["output"] = f"dense {tuple(res.shape)}"
            dense = res.cpu().numpy()
        else:
            mb = (res.data.nbytes + res.indices.nbytes + res.indptr.nbytes) / 2**20
            out["output"] = f"csr, {res.nnz / n:,.0f} entries per row ({mb:,.0f} MB)"
            dense = None
    else:
        xn = x.numpy()
        t0 = time.perf_counter()
        dense = reference(xn, K1, K2)
        seconds = time.perf_counter() - t0
        out["output"] = f"dense {dense.shape} float64"
    if save and dense is not None:
        np.save(save, dense.astype(np.float32))
    out.update({"which": which, "n": n, "seconds": seconds, "peak_gb": peak_rss_gb(), "inputs_gb": base,
                "device": device if which == "ours" else "cpu", "threads": torch.get_num_threads()})
    return out


def run(which: str, n: int, ids: int, device: str, threads: int, save: str = "") -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--n", str(n), "--ids", str(ids), "--device", device,
           "--threads", str(threads), "--save", save]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"which": which, "n": n, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def show(rows: list[dict]) -> None:
    print(f"{'impl':<10} {'device':<6} {'N':>7} {'seconds':>8} {'peak GB':>8} {'above inputs':>12}  output")
    for r in rows:
        if "error" in r:
            print(f"{r['which']:<10} {'':<6} {r['n']:>7} failed: {r['error']}")
            continue
        gpu = f", GPU peak {r['gpu_peak_gb']:.2f} GB" if "gpu_peak_gb" in r else ""
        print(f"{r['which']:<10} {r['device']:<6} {r['n']:>7,} {r['seconds']:>8.2f} {r['peak_gb']:>8.2f} "
              f"{r['peak_gb'] - r['inputs_gb']:>12.2f}  {r['output']}{gpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msmt", action="store_true", help="ours alone at the MSMT17 training shape (32,621 x 2,048)")
    parser.add_argument("--reference-n", type=int, default=4000,
                        help="images for the side-by-side with the dense reference (0 skips it; 12936 = Market)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of ours")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ids", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--save", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.ids, args.device, args.threads, args.save)))
        return

    import numpy as np

    shape = "msmt" if args.msmt else "market"
    n, ids = SHAPES[shape]
    print(f"{shape} training shape: {n:,} x {DIM} clustered unit vectors, {ids} identities, k1={K1} k2={K2}")
    big = run("ours", n, ids, args.device, args.threads)
    show([big])
    if args.msmt:
        if "error" not in big:
            print(f"target: peak <= 4 GB: {'met' if big['peak_gb'] <= 4.0 else 'missed'} ({big['peak_gb']:.2f} GB)")
        return
    if args.reference_n:
        import tempfile

        m = args.reference_n
        m_ids = max(1, round(ids * m / n))  # the same ~17 images per identity
        print(f"\nside by side at N = {m:,} ({m_ids} identities):")
        with tempfile.TemporaryDirectory() as tmp:
            paths = (f"{tmp}/ours.npy", f"{tmp}/ref.npy")
            rows = [run("ours", m, m_ids, args.device, args.threads, paths[0]),
                    run("reference", m, m_ids, "cpu", args.threads, paths[1])]
            show(rows)
            if all("error" not in r for r in rows):
                ours, ref = rows
                diff = float(np.abs(np.load(paths[0]) - np.load(paths[1])).max())
                print(f"ours {ref['seconds'] / ours['seconds']:.1f}x faster, "
                      f"{(ref['peak_gb'] - ref['inputs_gb']) / max(ours['peak_gb'] - ours['inputs_gb'], 1e-3):.1f}x "
                      f"less memory above the inputs; max abs difference {diff:.2e}")


if __name__ == "__main__":
    main()
