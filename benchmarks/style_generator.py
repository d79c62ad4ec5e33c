"""CycleGAN's generator vs the residual generator at the same CPU budget, on embedded camera pairs.

Trains one camera-pair CycleGAN of the embedded person source (``market_like``) with the
``StyleCfg.embedded("person")`` recipe twice, once with CycleGAN's generator
(``residual_generator=False``) and once with the residual one (the recipe's default), and prints
per direction the colour gap before / after translation (``corelib.style.style_gap``), the
cycle-reconstruction error and the training time, side by side.

    python benchmarks/style_generator.py                  # camera pair c1-c2, 60 steps
    python benchmarks/style_generator.py --pairs 1-2 3-6 -o iters_per_epoch=40

``-o NAME=VALUE`` overrides StyleCfg fields for both runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from corelib import StyleCfg, load_config, open_dataset
from corelib.paths import synthetic_root
from corelib.style import StyleModels, StylePair, style_gap, summarize_gap, train_cyclegan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="*", default=["1-2"], help="1-based camera pairs, e.g. 1-2 3-6")
    ap.add_argument("--data-root", default=None, help="default: corelib.paths.synthetic_root()")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()

    source = open_dataset("market_like", args.data_root or synthetic_root())
    base = load_config(StyleCfg, None, args.override, base=StyleCfg.embedded("person"))
    steps = (base.iters_per_epoch or 0) * base.total_epochs
    pool = [s for split in base.train_splits for s in source.split(split)]
    work = Path(tempfile.mkdtemp(prefix="style_generator_"))
    print(f"market_like, {steps} steps of batch {base.batch_size} at {base.height}x{base.width}, ngf {base.ngf}, "
          f"{base.gen_blocks} blocks; work dir {work}")
    print(f"{'generator':<10} {'direction':<9} {'before':>8} {'after':>8} {'ratio':>6} {'cycle L1':>9} {'train s':>8}")
    for residual in (False, True):
        cfg = load_config(StyleCfg, None, {"residual_generator": residual}, base=base)
        name = "residual" if residual else "cyclegan"
        pairs, seconds = [], {}
        for text in args.pairs:
            a, b = (int(x) - 1 for x in text.split("-"))
            label = f"c{a + 1}-c{b + 1}"
            t0 = time.perf_counter()
            train_cyclegan([s for s in pool if s.camid == a], [s for s in pool if s.camid == b], cfg,
                           work / name / label, progress=False)
            seconds[label] = time.perf_counter() - t0
            pairs.append(StylePair(label, a, b, 0, 0, f"{label}/last.pt"))
        models = StyleModels("camera", work / name, source.name, None, pairs)
        rows = style_gap(source, models, device="cpu")
        for r in rows:
            print(f"{name:<10} {r['from'] + '->' + r['to']:<9} {r['before']:8.4f} {r['after']:8.4f} {r['ratio']:6.2f} "
                  f"{r['cycle_l1']:9.3f} {seconds[r['pair']]:8.1f}")
        total = summarize_gap(rows)
        print(f"{name:<10} {'all':<9} {total['before']:8.4f} {total['after']:8.4f} {total['ratio']:6.2f} "
              f"{total['cycle_l1']:9.3f} {sum(seconds.values()):8.1f}")


if __name__ == "__main__":
    main()
