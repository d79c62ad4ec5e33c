"""The adaptation gain on an embedded pair: source pre-training, then mean-teacher fine-tuning.

Runs the CPU recipe of ``make demo`` (``PretrainCfg.embedded`` / ``FinetuneCfg.embedded``) from
scratch and prints the source mAP, the direct-transfer target mAP, the adapted target mAP per
epoch with the pseudo-label NMI, and the wall time of both stages together.

    python benchmarks/adaptation.py --pair person
    python benchmarks/adaptation.py --pair person -o cluster.normalize=none   # the paper's clustering

Options ``-p``/``-o`` override fields of the pre-training / fine-tuning configs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from corelib import EMBEDDED_PAIRS, FinetuneCfg, PretrainCfg, finetune, load_config, open_dataset, pretrain
from corelib.paths import synthetic_root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=sorted(EMBEDDED_PAIRS), default="person")
    ap.add_argument("--run-dir", default=None, help="default: a temporary folder")
    ap.add_argument("--data-root", default=None, help="default: corelib.paths.synthetic_root()")
    ap.add_argument("-p", "--pretrain", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("-o", "--finetune", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()

    source_name, target_name = EMBEDDED_PAIRS[args.pair]
    root = args.data_root or synthetic_root()
    source, target = open_dataset(source_name, root), open_dataset(target_name, root)
    pre = load_config(PretrainCfg, None, args.pretrain, base=PretrainCfg.embedded(args.pair))
    fine = load_config(FinetuneCfg, None, args.finetune, base=FinetuneCfg.embedded(args.pair))
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix=f"adapt_{args.pair}_"))
    print(f"{args.pair}: {source_name} ({len(source.train)} train images) -> {target_name} "
          f"({len(target.train)} train images, {target.num_train_pids} hidden ids); run dir {run_dir}")

    t0 = time.perf_counter()
    pre_res = pretrain(pre, source, run_dir, target=target, progress=False)
    t_pre = time.perf_counter() - t0
    best = next(h for h in pre_res.history if h["epoch"] == pre_res.best_epoch)
    print(f"pre-training: {t_pre:.0f} s; source mAP {100 * best['source_mAP']:.1f} "
          f"(rank-1 {100 * best['source_rank1']:.1f}) at epoch {pre_res.best_epoch}")

    t1 = time.perf_counter()
    res = finetune(fine, target, run_dir, progress=False)
    t_fine = time.perf_counter() - t1
    direct = res.direct_transfer
    print(f"direct transfer: target mAP {100 * direct['mAP']:.1f} (rank-1 {100 * direct['rank1']:.1f})")
    for h in res.history:
        print(f"  epoch {h['epoch']:>2}: target mAP {100 * h['target_mAP']:5.1f}  rank-1 {100 * h['target_rank1']:5.1f}"
              f"  NMI(global) {h['nmi_global']:.3f}  ARI(global) {h['ari_global']:.3f}  {h['seconds']:.0f} s")
    last = res.last
    print(f"fine-tuning: {t_fine:.0f} s; adapted target mAP {100 * last['target_mAP']:.1f} "
          f"(rank-1 {100 * last['target_rank1']:.1f}), gain {100 * (last['target_mAP'] - direct['mAP']):+.1f} points")
    print(f"both stages: {t_pre + t_fine:.0f} s ({(t_pre + t_fine) / 60:.1f} min)")


if __name__ == "__main__":
    main()
