"""Source pre-training: it learns, it logs, and a stopped run resumes to the same result."""

from __future__ import annotations

import json

import pytest
import torch

from corelib.config import PretrainCfg
from corelib.data import load_synthetic
from corelib.errors import ConfigError
from corelib.training import load_checkpoint, pretrain


def test_lr_schedule_is_warmup_multistep():
    cfg = PretrainCfg()
    assert cfg.lr_factor(0) == pytest.approx(0.01)
    assert cfg.lr_factor(5) == pytest.approx(0.01 * 0.5 + 0.5)
    assert cfg.lr_factor(10) == 1.0 and cfg.lr_factor(40) == pytest.approx(0.1)
    assert cfg.lr_factor(70) == pytest.approx(0.01)


@pytest.mark.slow
def test_resume_ends_like_a_straight_run(synthetic_small, tmp_path):
    src = load_synthetic(synthetic_small["market_like"])
    cfg = PretrainCfg.smoke(epochs=3)
    straight = pretrain(cfg, src, tmp_path / "a", progress=False)
    pretrain(PretrainCfg.smoke(epochs=2), src, tmp_path / "b", progress=False)  # "stopped" after epoch 2
    resumed = pretrain(cfg, src, tmp_path / "b", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (resumed, straight)]
    assert untimed[0] == untimed[1]
    a = load_checkpoint(straight.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b" / "pretrain" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert "source_mAP" in straight.last and 0.0 <= straight.best_mAP <= 1.0
    # resuming with another recipe (e.g. the full one over a smoke run) is refused, not mixed
    with pytest.raises(ConfigError, match=r"trained with another recipe \(lr 0.00035 -> 0.001\).*another RUN_DIR"):
        pretrain(PretrainCfg.smoke(epochs=4, lr=1e-3), src, tmp_path / "b", resume=True, progress=False)


def test_bad_batch_geometry_is_named(synthetic_small, tmp_path):
    src = load_synthetic(synthetic_small["market_like"])
    with pytest.raises(ValueError, match="multiple"):
        pretrain(PretrainCfg.smoke(batch_size=10), src, tmp_path, progress=False)
