"""Model size and cost: parameters (as the paper counts them), FLOPs/MACs, images per second.

The paper's table (docs/method.md §6) counts **one** fine-tuning network with K = 900 classes and every
parameter the authors' module registers, Fusion block and SECAB excluded. The authors' module also
registers three things its forward never uses, which ours does not build: the source BN-neck
``feat_bn`` (2C parameters) and two CBAM spatial-attention convolutions (2 x 7x7x2 = 196). The
``"paper"`` convention adds exactly these back so the counts can be compared to the table.

GFLOPs: the paper's values match multiply-accumulates (MACs) of the convolutions for ResNet-18 but
are 1.0-1.7 G higher for ResNet-50+ (docs/method.md §6, Q11). We report torch's flop counter: FLOPs =
2 x MACs for convolutions and matrix products, MACs = FLOPs / 2.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .fusion import EnsembleFusion
from .registry import BACKBONES, backbone_info, build_model

CBAM_SPATIAL_UNUSED = 2 * (2 * 7 * 7)  # two 7x7 convs, 2 -> 1 channel, no bias


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once)."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def paper_parameter_count(net: nn.Module) -> int:
    """Parameters of a :class:`CoreReIDNet` counted as the CORE-ReID V2 paper counts them.

    Our network's parameters plus the authors' unused ``feat_bn`` (2C) and CBAM spatial-attention
    convolutions (196); valid for the paper's configuration (ECAB on, GAP + GMP pooling).
    """
    c = net.feature_dim
    return count_parameters(net) + 2 * c + CBAM_SPATIAL_UNUSED


def measure_flops(model: nn.Module, input_size: tuple[int, int] = (256, 128), *, batch: int = 1,
                  device: Optional[torch.device] = None) -> int:
    """FLOPs of one eval-mode forward of ``batch`` images, counted by ``torch.utils.flop_counter``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, *input_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def images_per_second(model: nn.Module, *, device: torch.device, input_size: tuple[int, int] = (256, 128),
                      batch: int = 64, iters: int = 5, warmup: int = 2, bf16: bool = False,
                      channels_last: bool = False) -> float:
    """Eval-mode throughput on ``device`` (synchronised timing, random inputs)."""
    model = model.to(device).eval()
    x = torch.randn(batch, 3, *input_size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        sync()
        dt = time.perf_counter() - t0
    return batch * iters / dt


def table_backbones(network: str) -> list[str]:
    """The backbones registered for the complexity table in ``network`` ("corereid_net" or
    "transreid_net"), in the order they were registered (the ResNets by depth, then ViT-S, ViT-B)."""
    return BACKBONES.where(complexity=network)


def complexity_table(backbones: Optional[Sequence[Union[str, int]]] = None, *, device: Optional[torch.device] = None,
                     input_size: tuple[int, int] = (256, 128), batch: int = 64, iters: int = 3,
                     num_classes: int = 900, bf16: bool = False, channels_last: bool = False) -> list[dict]:
    """Per backbone in CORE-ReID V2's network: parameters (ours and as the paper counts), MACs/FLOPs and
    eval images/s, with the paper's row when the backbone declares one (NaN otherwise).

    Args:
        backbones: names (an int ``d`` stands for ``resnet{d}``, as ``corelib bench --depths``); None:
            every backbone registered with ``complexity="corereid_net"`` (:func:`table_backbones`).
    """
    device = device or torch.device("cpu")
    names = table_backbones("corereid_net") if backbones is None else \
        [f"resnet{b}" if isinstance(b, int) else b for b in backbones]
    rows = []
    for name in names:
        net = build_model("corereid_net", backbone=name, num_classes=num_classes, weights=None)
        flops = measure_flops(net, input_size)
        fusion = EnsembleFusion(net.feature_dim, secab=True)
        ips = images_per_second(net, device=device, input_size=input_size, batch=batch, iters=iters,
                                warmup=1, bf16=bf16, channels_last=channels_last) if iters > 0 else float("nan")
        paper = backbone_info(name).paper or {"params": float("nan"), "gflops": float("nan")}
        rows.append({
            "backbone": name,
            "params": count_parameters(net),
            "params_paper_convention": paper_parameter_count(net),
            "params_paper": paper["params"],
            "secab_params": count_parameters(fusion.secab),
            "fusion_bn_params": count_parameters(fusion) - count_parameters(fusion.secab),
            "gmacs": flops / 2e9,
            "gflops": flops / 1e9,
            "gflops_paper": paper["gflops"],
            "images_per_s": ips,
            "device": str(device),
            "batch": batch,
            "dtype": "bf16" if bf16 else "fp32",
            "input": f"{input_size[0]}x{input_size[1]}",
        })
        del net
    return rows


def vit_complexity_table(backbones: Optional[Sequence[str]] = None, *, device: Optional[torch.device] = None,
                         input_size: tuple[int, int] = (256, 128), batch: int = 64, iters: int = 3,
                         num_classes: int = 751, num_cameras: int = 6, bf16: bool = False) -> list[dict]:
    """Per ViT: the TransReID network's parameters (SIE for ``num_cameras``, JPM, the five heads for
    ``num_classes``: 95,794,944 for ViT-B at 256 x 128, stride 12, 6 cameras, 751 classes), MACs /
    FLOPs of one eval forward and eval images/s, with the keys of :func:`complexity_table` (no
    paper columns: CORE-ReID's paper has no ViT). ``backbones`` None: every backbone registered
    with ``complexity="transreid_net"`` (TransReID-SSL's ViT-S, TransReID's ViT-B)."""
    device = device or torch.device("cpu")
    rows = []
    for name in table_backbones("transreid_net") if backbones is None else backbones:
        net = build_model("transreid_net", backbone=name, num_classes=num_classes, num_cameras=num_cameras,
                          img_size=input_size, weights=None)
        flops = measure_flops(net, input_size)
        ips = images_per_second(net, device=device, input_size=input_size, batch=batch, iters=iters, warmup=1,
                                bf16=bf16) if iters > 0 else float("nan")
        rows.append({"backbone": name, "network": "transreid_net (SIE, JPM)", "params": count_parameters(net),
                     "gmacs": flops / 2e9, "gflops": flops / 1e9, "images_per_s": ips, "device": str(device),
                     "batch": batch, "dtype": "bf16" if bf16 else "fp32", "input": f"{input_size[0]}x{input_size[1]}"})
        del net
    return rows


def format_complexity(rows: list[dict]) -> str:
    """The complexity table as text, our MACs next to the paper's "GFLOPs"."""
    head = (f"{'backbone':<10} {'params':>11} {'paper count':>12} {'paper':>11} {'+SECAB':>10} {'+fuse BN':>9} "
            f"{'GMACs':>7} {'GFLOPs':>7} {'paper':>6} {'diff':>6} {'img/s':>8}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['backbone']:<10} {r['params']:>11,} {r['params_paper_convention']:>12,} {r['params_paper']:>11,} "
            f"{r['secab_params']:>10,} {r['fusion_bn_params']:>9,} {r['gmacs']:>7.3f} {r['gflops']:>7.3f} "
            f"{r['gflops_paper']:>6.2f} {r['gmacs'] - r['gflops_paper']:>+6.2f} {r['images_per_s']:>8.1f}"
        )
    r0 = rows[0]
    lines.append(f"(input {r0['input']}, eval batch {r0['batch']}, {r0['dtype']}, device {r0['device']}; "
                 "'paper count' adds the authors' unused feat_bn and CBAM convs; 'diff' = our GMACs - paper GFLOPs)")
    return "\n".join(lines)
