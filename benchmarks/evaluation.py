"""Time and peak memory of our evaluator next to fast-reid's compiled Cython evaluator, on the same inputs.

Run:  .venv/bin/python benchmarks/evaluation.py [--shapes market market19732 msmt] [--device cpu|cuda]
                                                 [--impls ours fastreid reference] [--repeats 3] [--noise 0.075]

The peer, built at benchmark time and never part of corelib: ``pip install cython`` and
``pip install --no-deps fastreid`` into this environment (the PyPI wheel ships
``fastreid/evaluation/rank_cylib/rank_cy.pyx``); the script compiles that file with Cython into
``~/.cache/corelib-bench/`` (nothing is imported from the rest of fastreid) and times what fast-reid
runs: its torch distance (``|x|^2 + |y|^2 - 2 x.y``, one addmm over the whole (Q, G) float32 matrix,
``compute_euclidean_distance``), then ``evaluate_cy`` (an ``np.argsort`` of every row and a
per-query loop).

Inputs: identity-structured, L2-normalised float32 descriptors (an identity centre plus noise,
Market-like cameras, a share of distractors), generated with a fixed seed. ``market19732`` adds
Market's 3,819 further gallery images as distractors (pid 0: ordinary negatives for both, so the
results stay comparable). Each measurement runs in its own subprocess so that its peak resident
memory (``ru_maxrss``) is its own, reported in total and above the inputs; the time is the best of
``--repeats`` runs, from features to metrics.

- ours: ``corelib.evaluation.evaluate_ranking`` (chunked distances + rank-of-positives, no sort);
- fastreid: torch distance + fast-reid's ``evaluate_cy`` (where its dense matrix and argsort fit);
- reference: the torchreid-style plain algorithm in numpy (full argsort, a per-query loop).
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

import numpy as np

SHAPES = {  # (queries, gallery, identities, cameras, extra distractors)
    "market": (3368, 15913, 750, 6, 0),
    "market19732": (3368, 15913, 750, 6, 3819),
    "msmt": (11659, 82161, 3060, 15, 0),
}
CACHE = Path.home() / ".cache" / "corelib-bench"
DIM = 2048


def make_inputs(shape: str, seed: int = 0, noise: float = 0.075):
    import torch

    nq, ng, n_ids, n_cams, extra = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_ids + 1, DIM, generator=g), dim=1)
    q_pids = torch.randint(1, n_ids + 1, (nq,), generator=g)
    g_pids = torch.randint(0, n_ids + 1, (ng,), generator=g)  # pid 0: distractors
    # noise: per-dimension std around the identity centre. At the Market shape 0.07 gives mAP ~0.8
    # (a well-trained model), 0.075 ~0.65, 0.08 ~0.5 (a UDA model), 0.1 ~0.1 (a weak model)

    def feats(pids):
        out = torch.empty(len(pids), DIM)
        for s in range(0, len(pids), 8192):  # build in slices: no large temporaries
            p = pids[s : s + 8192]
            out[s : s + 8192] = centres[p] + noise * torch.randn(len(p), DIM, generator=g)
        return torch.nn.functional.normalize(out, dim=1)

    qf, gf = feats(q_pids), feats(g_pids)
    q_cams = torch.randint(0, n_cams, (nq,), generator=g)
    g_cams = torch.randint(0, n_cams, (ng,), generator=g)
    if extra:  # drawn after the base gallery, so the first `ng` gallery images are those of the base shape
        e_pids = torch.zeros(extra, dtype=torch.long)
        gf, g_pids = torch.cat([gf, feats(e_pids)]), torch.cat([g_pids, e_pids])
        g_cams = torch.cat([g_cams, torch.randint(0, n_cams, (extra,), generator=g)])
    return qf, gf, q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy()


def reference_eval(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=50):
    """torchreid's plain algorithm: full argsort, int64 matches, per-query loop."""
    import torch

    distmat = torch.cdist(qf, gf).pow_(2).numpy()  # full (Q, G) float32 matrix
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int64)
    aps, cmcs = [], []
    for i in range(len(q_pids)):
        order = indices[i]
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        raw = matches[i][keep]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        cmcs.append(cmc[:max_rank])
        hits = np.nonzero(raw)[0] + 1
        aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
    return float(np.mean(aps)), float(np.mean(cmcs, axis=0)[0])


def build_fastreid_cython():
    """Compile fast-reid's ``rank_cy.pyx`` (from the installed wheel, not imported) and load it."""
    spec = importlib.util.find_spec("fastreid")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fast-reid is not installed: .venv/bin/pip install cython && .venv/bin/pip install --no-deps fastreid")
    pyx = Path(spec.submodule_search_locations[0]) / "evaluation" / "rank_cylib" / "rank_cy.pyx"
    CACHE.mkdir(parents=True, exist_ok=True)
    built = sorted(CACHE.glob("rank_cy*.so"))
    if not built:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension

        src = CACHE / "rank_cy.pyx"
        src.write_bytes(pyx.read_bytes())
        ext = Extension("rank_cy", [str(src)], include_dirs=[np.get_include()], extra_compile_args=["-O3"])
        dist = Distribution({"ext_modules": cythonize([ext], quiet=True, compiler_directives={"language_level": 3})})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib, cmd.build_temp = str(CACHE), str(CACHE / "build")
        dist.run_command("build_ext")
        built = sorted(CACHE.glob("rank_cy*.so"))
    spec = importlib.util.spec_from_file_location("rank_cy", built[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fastreid_eval(rank_cy, qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=50):
    """What fast-reid's ReidEvaluator runs: ``compute_euclidean_distance`` then ``evaluate_cy``."""

    m, n = qf.shape[0], gf.shape[0]
    dist = (qf.pow(2).sum(1, keepdim=True).expand(m, n) + gf.pow(2).sum(1, keepdim=True).expand(n, m).t())
    dist = dist.addmm(qf, gf.t(), beta=1, alpha=-2).cpu().numpy()
    cmc, all_ap, all_inp = rank_cy.evaluate_cy(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    return float(np.mean(all_ap)), float(cmc[0]), float(np.mean(all_inp))


def rss_gb() -> float:
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def worker(which: str, shape: str, device: str, subset: int, noise: float, repeats: int) -> dict:
    import torch

    qf, gf, qp, gp, qc, gc = make_inputs(shape, noise=noise)
    if subset and subset < len(qp):
        qf, qp, qc = qf[:subset], qp[:subset], qc[:subset]
    rank_cy = build_fastreid_cython() if which == "fastreid" else None
    base = current_rss_gb()
    times, out = [], {}
    if which == "ours":
        from corelib.evaluation import evaluate_ranking

        if device == "cuda":
            qf, gf = qf.cuda(), gf.cuda()
            torch.cuda.synchronize()
            evaluate_ranking(qf[:64], gf, qp[:64], gp, qc[:64], gc)  # warm-up
            torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        t0 = time.perf_counter()
        if which == "ours":
            res = evaluate_ranking(qf, gf, qp, gp, qc, gc, protocol="market")
            if device == "cuda":
                torch.cuda.synchronize()
            out = {"mAP": res.mAP, "rank1": res.rank1, "mINP": res.mINP}
        elif which == "fastreid":
            m, r1, minp = fastreid_eval(rank_cy, qf, gf, qp, gp, qc, gc)
            out = {"mAP": m, "rank1": r1, "mINP": minp}
        else:
            m, r1 = reference_eval(qf, gf, qp, gp, qc, gc)
            out = {"mAP": m, "rank1": r1, "mINP": float("nan")}
        times.append(time.perf_counter() - t0)
    if which == "ours" and device == "cuda":
        out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    out.update({"which": which, "shape": shape, "queries": len(qp), "gallery": len(gp), "seconds": min(times),
                "all_seconds": times, "peak_rss_gb": rss_gb(), "inputs_rss_gb": base, "device": device,
                "threads": torch.get_num_threads()})
    return out


def run(which: str, shape: str, device: str = "cpu", subset: int = 0, noise: float = 0.075, repeats: int = 3) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--shapes", shape, "--device", device, "--subset", str(subset),
           "--noise", str(noise), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"which": which, "shape": shape, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=["market", "market19732", "msmt"], choices=list(SHAPES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--impls", nargs="*", default=["ours", "fastreid"], choices=["ours", "fastreid", "reference"])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--peer-max-gb", type=float, default=20.0,
                        help="skip a peer whose dense (Q, G) matrices would need more host memory than this")
    parser.add_argument("--reference-msmt-queries", type=int, default=2915,
                        help="queries for the plain reference at the MSMT17 shape (0 = all, needs ~19 GB)")
    parser.add_argument("--noise", type=float, default=0.075,
                        help="feature noise: 0.07 ~ mAP 0.8, 0.075 ~ 0.65, 0.08 ~ 0.5, 0.1 ~ 0.1 (Market shape)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--subset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.shapes[0], args.device, args.subset, args.noise, args.repeats)))
        return

    import os

    if "fastreid" in args.impls:
        build_fastreid_cython()  # compile once, before any timing
    print(f"load average before: {load_average()}; {os.cpu_count()} CPUs; best of {args.repeats}")
    rows = []
    for shape in args.shapes:
        nq, ng, _, _, extra = SHAPES[shape]
        for which in args.impls:
            if which == "ours":
                rows.append(run("ours", shape, args.device, noise=args.noise, repeats=args.repeats))
                continue
            subset = args.reference_msmt_queries if (which == "reference" and shape == "msmt") else 0
            # the peer holds the float32 matrix, its argsort (int64) and a copy: ~16 bytes per pair
            need = 16 * (subset or nq) * (ng + extra) / 2**30
            if need > args.peer_max_gb:
                rows.append({"which": which, "shape": shape, "error": [f"not run: needs ~{need:.0f} GB (> --peer-max-gb)"]})
                continue
            rows.append(run(which, shape, "cpu", subset, noise=args.noise, repeats=args.repeats))
    print(f"{'shape':<12} {'impl':<9} {'device':<6} {'Q x G':>15} {'best s':>8} {'peak GB':>8} {'above inputs':>12} "
          f"{'mAP':>8} {'R1':>7} {'mINP':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<12} {r['which']:<9} {r['error']}")
            continue
        print(f"{r['shape']:<12} {r['which']:<9} {r['device']:<6} {r['queries']:>6} x {r['gallery']:<6} {r['seconds']:>8.2f} "
              f"{r['peak_rss_gb']:>8.2f} {r['peak_rss_gb'] - r['inputs_rss_gb']:>12.2f} {r['mAP']:>8.5f} {r['rank1']:>7.4f} "
              f"{r['mINP']:>7.4f}")
    for shape in args.shapes:
        ours = next((r for r in rows if r.get("shape") == shape and r["which"] == "ours" and "error" not in r), None)
        for peer in ("fastreid", "reference"):
            ref = next((r for r in rows if r.get("shape") == shape and r["which"] == peer and "error" not in r), None)
            if ours and ref:
                scale = ours["queries"] / ref["queries"]
                note = f" ({peer} on {ref['queries']} queries, time scaled x{scale:.2f})" if scale != 1 else ""
                diff = f"mAP difference {abs(ours['mAP'] - ref['mAP']):.1e}" if scale == 1 else "results not compared"
                print(f"{shape}: ours {ref['seconds'] * scale / ours['seconds']:.2f}x faster than {peer}{note}; {diff}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
