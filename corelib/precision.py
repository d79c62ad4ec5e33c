"""What a device multiplies fast: the bf16 probe of the exact bf16 pre-filter of k-means
(:mod:`corelib.cluster.kmeans`, on by default on a CPU where this says yes).

A bf16 pre-filter pays only where bf16 products run faster than float32 ones: GPUs with bf16
tensor cores, and CPUs with AVX-512 BF16 or AMX, where oneDNN's kernels run 2-4x the float32
rate (measured on a Sapphire Rapids Xeon with AMX: 0.24 s against 0.93 s for the product below).
Elsewhere torch emulates bf16 products, several times *slower* than float32 (measured on an
AVX2-only EPYC: a 3,368 x 15,913 x 2,048 product took 18.0 s in bf16 against 2.7 s in float32).
"""

from __future__ import annotations

import torch


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices faster than float32 ones."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(p()) for p in probes if p is not None)
