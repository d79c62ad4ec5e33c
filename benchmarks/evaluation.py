"""Time and peak memory of our evaluator next to a plain reference, on the same inputs.

Run:  .venv/bin/python benchmarks/evaluation.py [--shapes market msmt] [--device cpu|cuda] [--noise 0.075]
                                                 [--reference-msmt-queries 2915]

Inputs: identity-structured, L2-normalised float32 descriptors (an identity centre plus noise,
Market-like cameras, a share of distractors), generated with a fixed seed. Each measurement runs in
its own subprocess so that its peak resident memory (``ru_maxrss``) is its own; the peak is reported
in total and above the inputs (RSS after the features are built).

- ours: ``corelib.evaluation.evaluate_ranking`` (chunked distances + rank-of-positives, no sort);
- reference: the torchreid-style plain algorithm: full (Q, G) distance matrix by one matrix product,
  ``np.argsort`` of every row, an int64 match matrix and a per-query loop. At the MSMT17 shape it
  needs ~19 GB, so by default it runs on a subset of the queries (scale its time by Q / subset).

Targets (issue 4): Market shape on the 2-core CPU <= 2 s including the distances; MSMT17 shape on
the CPU with peak memory <= 4 GB; MSMT17 shape on a GPU <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

SHAPES = {  # (queries, gallery, identities, cameras)
    "market": (3368, 15913, 750, 6),
    "msmt": (11659, 82161, 3060, 15),
}
DIM = 2048


def make_inputs(shape: str, seed: int = 0, noise: float = 0.075):
    import torch

    nq, ng, n_ids, n_cams = SHAPES[shape]
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


def rss_gb() -> float:
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def worker(which: str, shape: str, device: str, subset: int, noise: float) -> dict:
    import torch

    qf, gf, qp, gp, qc, gc = make_inputs(shape, noise=noise)
    if subset and subset < len(qp):
        qf, qp, qc = qf[:subset], qp[:subset], qc[:subset]
    base = current_rss_gb()
    if which == "ours":
        from corelib.evaluation import evaluate_ranking

        if device == "cuda":
            qf, gf = qf.cuda(), gf.cuda()
            torch.cuda.synchronize()
            evaluate_ranking(qf[:64], gf, qp[:64], gp, qc[:64], gc)  # warm-up (CUDA context, kernels)
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = evaluate_ranking(qf, gf, qp, gp, qc, gc, protocol="market")
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out = {"mAP": res.mAP, "rank1": res.rank1}
        if device == "cuda":
            out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        t0 = time.perf_counter()
        m, r1 = reference_eval(qf, gf, qp, gp, qc, gc)
        dt = time.perf_counter() - t0
        out = {"mAP": m, "rank1": r1}
    out.update({"which": which, "shape": shape, "queries": len(qp), "gallery": len(gp), "seconds": dt,
                "peak_rss_gb": rss_gb(), "inputs_rss_gb": base, "device": device,
                "threads": torch.get_num_threads()})
    return out


def run(which: str, shape: str, device: str = "cpu", subset: int = 0, noise: float = 0.075) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--shapes", shape, "--device", device, "--subset", str(subset),
           "--noise", str(noise)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"which": which, "shape": shape, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=["market", "msmt"], choices=list(SHAPES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reference-msmt-queries", type=int, default=2915,
                        help="queries for the reference at the MSMT17 shape (0 = all, needs ~19 GB)")
    parser.add_argument("--noise", type=float, default=0.075,
                        help="feature noise: 0.07 ~ mAP 0.8, 0.075 ~ 0.65, 0.08 ~ 0.5, 0.1 ~ 0.1 (Market shape)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--subset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.shapes[0], args.device, args.subset, args.noise)))
        return

    rows = []
    for shape in args.shapes:
        rows.append(run("ours", shape, args.device, noise=args.noise))
        subset = args.reference_msmt_queries if shape == "msmt" else 0
        rows.append(run("reference", shape, "cpu", subset, noise=args.noise))
    print(f"{'shape':<7} {'impl':<10} {'device':<6} {'Q x G':>15} {'seconds':>8} {'peak GB':>8} {'above inputs':>12} "
          f"{'mAP':>7} {'R1':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<7} {r['which']:<10} failed: {r['error']}")
            continue
        print(f"{r['shape']:<7} {r['which']:<10} {r['device']:<6} {r['queries']:>6} x {r['gallery']:<6} {r['seconds']:>8.2f} "
              f"{r['peak_rss_gb']:>8.2f} {r['peak_rss_gb'] - r['inputs_rss_gb']:>12.2f} {r['mAP']:>7.4f} {r['rank1']:>7.4f}")
    for shape in args.shapes:
        ours = next((r for r in rows if r.get("shape") == shape and r["which"] == "ours" and "error" not in r), None)
        ref = next((r for r in rows if r.get("shape") == shape and r["which"] == "reference" and "error" not in r), None)
        if ours and ref:
            scale = ours["queries"] / ref["queries"]
            note = f" (reference on {ref['queries']} queries, time scaled x{scale:.2f})" if scale != 1 else ""
            print(f"{shape}: ours {ref['seconds'] * scale / ours['seconds']:.1f}x faster than the reference{note}; "
                  f"mAP difference {abs(ours['mAP'] - ref['mAP']) if scale == 1 else float('nan'):.2e}")


if __name__ == "__main__":
    main()
