"""Images/s of TransReID's ViT-B/16 (stride 12, SIE for 6 cameras, JPM, 751 classes) beside a
ResNet-50 network, in training and in inference, measured side by side in one run.

Training: one step (forward in train mode, the transreid / ce_triplet loss, backward, SGD) on a P x K
batch, under bf16 autocast on CUDA (fp32 on the CPU unless --bf16); inference: the eval-mode
descriptor, no gradients. Prints images/s per model and the ResNet-50 / ViT-B ratio.

    python benchmarks/vit_throughput.py --device cuda --train-batch 64 --eval-batch 256 --iters 20
    python benchmarks/vit_throughput.py --device cpu --train-batch 8 --eval-batch 16 --iters 2   # CPU check
"""

from __future__ import annotations

import argparse

import torch

from corelib.config import SourceLossCfg
from corelib.losses import build_criterion
from corelib.models import build_model
from timing import seconds_per_call


def _networks(size, num_classes: int, cameras: int) -> dict:
    return {
        "transreid_vit_base (SIE, JPM)": (build_model("transreid_net", backbone="transreid_vit_base", num_classes=num_classes,
                                                      num_cameras=cameras, img_size=size, weights=None), "transreid"),
        "resnet50 (source_net)": (build_model("source_net", backbone="resnet50", num_classes=num_classes, weights=None),
                                  "ce_triplet"),
    }


def _layout(net, x: torch.Tensor, channels_last: bool):
    """``net`` and ``x`` in NHWC memory format when ``channels_last`` (the convolutions' fast layout)."""
    if channels_last:
        return net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return net, x


def train_rate(net, loss_name: str, device, size, batch: int, iters: int, bf16: bool, cameras: int,
               channels_last: bool = False) -> float:
    crit = build_criterion(SourceLossCfg(name=loss_name, label_smooth=0.0), stage="pretrain").to(device)
    net, x = _layout(net.to(device).train(), torch.randn(batch, 3, *size, device=device), channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    pids = torch.arange(batch // 4, device=device).repeat_interleave(4)
    cams = torch.randint(0, cameras, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = crit(net(x, cams), pids)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch / seconds_per_call(step, iters, device)


@torch.inference_mode()
def eval_rate(net, device, size, batch: int, iters: int, bf16: bool, cameras: int, channels_last: bool = False) -> float:
    net, x = _layout(net.to(device).eval(), torch.randn(batch, 3, *size, device=device), channels_last)
    cams = torch.randint(0, cameras, (batch,), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return batch / seconds_per_call(lambda: net(x, cams), iters, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (the default on CUDA)")
    args = ap.parse_args()
    device = torch.device(args.device)
    bf16 = args.bf16 or device.type == "cuda"
    size = (args.height, args.width)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{'bf16' if bf16 else 'fp32'}, input {size[0]}x{size[1]}, train batch {args.train_batch}, "
          f"eval batch {args.eval_batch}, {args.iters} iterations")
    rates = {}
    for name, (net, loss) in _networks(size, 751, 6).items():
        tr = train_rate(net, loss, device, size, args.train_batch, args.iters, bf16, 6)
        ev = eval_rate(net, device, size, args.eval_batch, args.iters, bf16, 6)
        rates[name] = (tr, ev)
        print(f"{name:<32} train {tr:9.1f} img/s   inference {ev:9.1f} img/s")
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    (vt, ve), (rt, re_) = rates.values()
    print(f"ResNet-50 / ViT-B: train x{rt / vt:.2f}, inference x{re_ / ve:.2f}")


if __name__ == "__main__":
    main()
