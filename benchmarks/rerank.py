"""Time and memory of k-reciprocal re-ranking (corelib.evaluation.rerank) on CPU.

Run:  .venv/bin/python benchmarks/rerank.py [--shape small|market|msmt] [--threads N]

Features are synthetic but identity-structured like ReID embeddings: random unit centres, each
image x = normalise(centre + noise), fixed seed, float32. What is measured:

- ``--shape market`` (default; target <= 60 s on the 2-core box): 3,368 queries + 15,913 gallery,
  2,048-d, 750 identities. Wall time of ``rerank`` end to end (distance pass, sparse V, query
  expansion, Jaccard, final mix) and its memory: the rise of the process's peak resident set
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its high-water mark before the call, plus
  that absolute peak. tracemalloc is not used: it does not see torch's allocations.
- ``--shape small``: 500 + 2,500 images. Additionally times the dense NumPy reference from
  tests/test_rerank.py (full argsort, dense N x N V, Python loops, float64) on the same inputs and
  prints the max abs difference between the two results.
- ``--shape msmt`` (long: several minutes on 2 cores): 11,659 + 82,161 images, 3,101 identities,
  the size at which the dense algorithm needs 35 GB per N x N matrix.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import time
from pathlib import Path

import torch

from corelib.evaluation.rerank import rerank

SHAPES = {  # name: (queries, gallery, identities)
    "small": (500, 2_500, 120),
    "market": (3_368, 15_913, 750),
    "msmt": (11_659, 82_161, 3_101),
}
DIM = 2048


def features(nq: int, ng: int, ids: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity-structured L2-normalised float32 features, generated in row chunks.

    Chunking keeps the generator's own temporaries small, so the peak-RSS high-water mark before
    the timed call is close to the features themselves.
    """
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(ids, DIM, generator=gen), dim=1)
    labels = torch.randint(0, ids, (nq + ng,), generator=gen)
    x = torch.empty(nq + ng, DIM)
    for s in range(0, nq + ng, 4096):
        e = min(s + 4096, nq + ng)
        # noise of norm ~1 around unit centres: cosine to the centre ~0.7, as in the k-means notes
        x[s:e] = centres[labels[s:e]] + torch.randn(e - s, DIM, generator=gen) / DIM**0.5
        x[s:e] = torch.nn.functional.normalize(x[s:e], dim=1)
    return x[:nq], x[nq:]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load_reference():
    """The dense NumPy reference, imported from the test file (one copy of it in the repo)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "test_rerank.py"
    spec = importlib.util.spec_from_file_location("test_rerank", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_rerank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="market")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    nq, ng, ids = SHAPES[args.shape]
    q, g = features(nq, ng, ids)
    print(f"shape {args.shape}: {nq:,} queries + {ng:,} gallery = {nq + ng:,} images, {DIM}-d, "
          f"{ids} identities, k1=20 k2=6 lambda=0.3, {torch.get_num_threads()} torch threads")

    before = peak_rss_mb()
    t0 = time.perf_counter()
    ours = rerank(q, g)
    wall = time.perf_counter() - t0
    after = peak_rss_mb()
    print(f"corelib rerank (torch, sparse): {wall:8.2f} s   peak RSS +{after - before:,.0f} MB "
          f"over the {before:,.0f} MB high-water mark before the call (ru_maxrss)")
    print(f"dense N x N float32 matrix the classic code would hold (several of them): "
          f"{(nq + ng) ** 2 * 4 / 2**30:.2f} GB each")

    if args.shape == "small":
        reference = load_reference()
        qn, gn = q.numpy(), g.numpy()
        t0 = time.perf_counter()
        dense = reference(qn, gn)
        ref_wall = time.perf_counter() - t0
        diff = float(abs(ours.numpy() - dense).max())
        print(f"dense NumPy reference (float64):  {ref_wall:8.2f} s   "
              f"({ref_wall / wall:.0f}x ours)")
        print(f"max abs difference ours vs reference: {diff:.2e}")


if __name__ == "__main__":
    main()
