"""Two gloo processes under torchrun agree with one process on the same data.

The one-process run keeps BatchNorm statistics per sub-batch of half the global batch
(``bn_sub_batch``), which is what each of the two processes sees; augmentations are keyed by the
place of an image in the global batch, and the losses of both runs are computed on the whole
global batch, so both take the same steps up to float rounding. One epoch is compared: after a few
Adam steps rounding-level differences reach the size of a step (Adam divides by the gradient's
scale), and on the tiny test target a later k-means can then flip a label.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from corelib.config import PretrainCfg
from corelib.data import load_synthetic
from corelib.training import load_checkpoint, pretrain

pytestmark = pytest.mark.slow

OVERRIDES = ["runtime.device=cpu", "epochs=1", "iters_per_epoch=3", "bn_sub_batch=8", "cluster.kmeans.max_iter=10"]


def _finetune(nproc: int, target_root, checkpoint, run_dir) -> list[dict]:
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "corelib", "finetune", "--target", "cuhk_like", str(target_root.parent), "--scale", "0.05",
            "--smoke", "--source-checkpoint", str(checkpoint), "--run-dir", str(run_dir)]
    for o in OVERRIDES:
        cmd += ["-o", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return [json.loads(x) for x in (run_dir / "finetune" / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process(synthetic_small, tmp_path):
    source = load_synthetic(synthetic_small["market_like"])
    pretrain(PretrainCfg.smoke(), source, tmp_path / "src", progress=False)
    checkpoint = tmp_path / "src" / "pretrain" / "best.pt"
    target_root = synthetic_small["cuhk_like"]

    one = _finetune(1, target_root, checkpoint, tmp_path / "one")
    two = _finetune(2, target_root, checkpoint, tmp_path / "two")

    assert [h["epoch"] for h in two] == [h["epoch"] for h in one] == [1]
    a, b = one[0], two[0]
    # the clustering saw the same features (split across the processes, gathered back)
    for key in ("nmi_global", "nmi_top", "nmi_bottom", "ari_global"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    # the same batches, augmentations and BatchNorm statistics: the same losses, up to rounding
    for key in ("loss", "ce", "tri_global", "tri_top", "tri_bottom"):
        assert b[key] == pytest.approx(a[key], rel=1e-3), key
    assert b["target_mAP"] == pytest.approx(a["target_mAP"], abs=1e-3)
    sa = load_checkpoint(tmp_path / "one" / "finetune" / "last.pt")
    sb = load_checkpoint(tmp_path / "two" / "finetune" / "last.pt")
    assert torch.equal(sa["pseudo_labels"], sb["pseudo_labels"])
    worst = max((sa["model"][k] - sb["model"][k]).abs().max().item()
                for k in sa["model"] if sa["model"][k].is_floating_point() and "running_" not in k)
    assert worst < 2e-3, f"weights of the one- and two-process runs differ by {worst}"


GROWING_LABELLER = '''
import sys

from corelib.cli import main
from corelib.cluster import kmeans, register_labeler


@register_labeler("growing")
def growing(features, camids, cfg, *, seed, epoch, device):
    out = []
    for i, x in enumerate(features):
        labels = kmeans(x, 3 + epoch, seed=seed + i, device=device, max_iter=10).labels.cpu().numpy()
        labels[::7] = -1
        out.append(labels)
    return out


sys.exit(main(sys.argv[1:]))
'''


def test_a_changing_cluster_count_under_two_gloo_processes(synthetic_small, tmp_path):
    """K grows from 3 to 4 between the epochs: rank 0 broadcasts K before the centres, every rank
    resizes its classifiers and rebuilds the DDP wrapper, and the first epoch agrees with one process."""
    source = load_synthetic(synthetic_small["market_like"])
    pretrain(PretrainCfg.smoke(), source, tmp_path / "src", progress=False)
    script = tmp_path / "growing.py"
    script.write_text(GROWING_LABELLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    runs = {}
    for nproc in (1, 2):
        cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                                  if nproc > 1 else [])
        cmd += [str(script), "finetune", "--target", "cuhk_like", str(synthetic_small["cuhk_like"].parent),
                "--scale", "0.05", "--smoke", "--source-checkpoint", str(tmp_path / "src" / "pretrain" / "best.pt"),
                "--run-dir", str(tmp_path / str(nproc))]
        for o in ("runtime.device=cpu", "epochs=2", "iters_per_epoch=3", "batch_size=8", "bn_sub_batch=4",
                  "cluster.labeler=growing"):
            cmd += ["-o", o]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        runs[nproc] = [json.loads(x) for x in (tmp_path / str(nproc) / "finetune" / "metrics.jsonl").read_text().splitlines()]
        state = load_checkpoint(tmp_path / str(nproc) / "finetune" / "last.pt")
        assert state["num_clusters"] == 4 and state["model"]["student.classifier.weight"].shape[0] == 4
    a, b = runs[1][0], runs[2][0]
    assert [h["epoch"] for h in runs[2]] == [1, 2] and b["outliers_global"] > 0
    for key in ("nmi_global", "loss", "ce", "tri_global"):
        assert b[key] == pytest.approx(a[key], rel=1e-3), key
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in runs[2])
