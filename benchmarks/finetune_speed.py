"""Fine-tuning iterations per second, fp32 against bf16, on the device at hand.

One iteration is the full step of ``corelib.finetune``: three pseudo-labelled P x K batches
(global, top, bottom) through the student with gradients and through the teacher for its BN
statistics, the Ensemble Fusion++ forward, the loss, Adam and the EMA update. The images come
from disk through the real loaders (the embedded ``market_like`` target), so decoding counts
too, as it would in a real run. Clustering and evaluation are excluded (timed separately by
``finetune`` as ``seconds_cluster``).

    python benchmarks/finetune_speed.py                         # ResNet-50, 256x128, batch 128 (GPU)
    python benchmarks/finetune_speed.py --depth 18 --height 64 --width 32 --batch 32 --iters 5   # CPU check

A short first epoch warms the device up; the second epoch is timed.
"""

from __future__ import annotations

import argparse
import tempfile

from corelib import FinetuneCfg, PretrainCfg, finetune, open_dataset, pretrain
from corelib.paths import synthetic_root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20, help="timed iterations")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers per loader")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()

    data = open_dataset("market_like", args.data_root or synthetic_root())
    run = tempfile.mkdtemp(prefix="ft_speed_")
    # a source checkpoint to start from (one short epoch: only its shapes matter here)
    backbone = f"resnet{args.depth}"
    size = {"augment.height": args.height, "augment.width": args.width}
    pretrain(PretrainCfg().with_overrides({**size, "model.backbone": backbone, "model.weights": "none", "batch_size": 32,
                                           "epochs": 1, "iters_per_epoch": 1, "warmup_epochs": 0, "milestones": (),
                                           "runtime.device": args.device, "runtime.num_workers": 0}),
             data, run, progress=False)
    print(f"ResNet-{args.depth} at {args.height}x{args.width}, batch {args.batch} x 3 loaders, "
          f"{len(data.train)} target images, device {args.device}")
    speeds = {}
    for precision in args.precisions:
        cfg = FinetuneCfg().with_overrides({
            **size, "model.backbone": backbone, "batch_size": args.batch, "epochs": 2, "iters_per_epoch": args.iters,
            "cluster.num_clusters": 200, "cluster.kmeans.algorithm": "lloyd", "cluster.kmeans.max_iter": 5,
            "eval_every": 1000, "runtime.precision": precision, "runtime.device": args.device,
            "runtime.num_workers": args.workers})
        res = finetune(cfg, data, f"{run}/{precision}", source_checkpoint=f"{run}/pretrain/last.pt", progress=False)
        timed = res.history[-1]
        speeds[precision] = args.iters / timed["seconds_train"]
        print(f"{precision:>5}: {speeds[precision]:.2f} it/s ({args.batch * 3 * speeds[precision]:.0f} images/s "
              f"through the student), clustering {timed['seconds_cluster']:.1f} s per epoch")
    if "fp32" in speeds and "bf16" in speeds:
        print(f"bf16 / fp32 speed-up: {speeds['bf16'] / speeds['fp32']:.2f}x")


if __name__ == "__main__":
    main()
