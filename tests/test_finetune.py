"""Mean-teacher fine-tuning: it runs end to end, resumes to the same result, and refuses bad input."""

from __future__ import annotations

import json

import pytest
import torch

from corelib.config import FinetuneCfg, PretrainCfg
from corelib.data import load_synthetic
from corelib.errors import ConfigError
from corelib.models import build_model
from corelib.repro import seed_everything
from corelib.training import evaluate_checkpoint, finetune, load_checkpoint, pretrain
from corelib.training.steps import forward_sub_batches

TIMING_KEYS = ("seconds",)


def _comparable(history: list[dict]) -> list[dict]:
    """Epoch records without wall-clock fields."""
    return [{k: v for k, v in h.items() if not k.startswith(TIMING_KEYS)} for h in history]


@pytest.fixture(scope="module")
def pair(synthetic_small, tmp_path_factory):
    """A pre-trained source model (smoke size) and the target it is adapted to."""
    source = load_synthetic(synthetic_small["market_like"])
    target = load_synthetic(synthetic_small["cuhk_like"])
    run = tmp_path_factory.mktemp("source_run")
    pretrain(PretrainCfg.smoke(), source, run, target=target, progress=False)
    return {"target": target, "checkpoint": run / "pretrain" / "best.pt"}


@pytest.mark.slow
def test_finetune_runs_logs_and_measures_pseudo_labels(pair, tmp_path):
    res = finetune(FinetuneCfg.smoke(), pair["target"], tmp_path, source_checkpoint=pair["checkpoint"], progress=False)
    assert set(res.direct_transfer) >= {"mAP", "rank1"}
    assert [h["epoch"] for h in res.history] == [1, 2]
    for h in res.history:
        assert 0.0 <= h["target_mAP"] <= 1.0
        assert 0.0 <= h["nmi_global"] <= 1.0 and "ari_top" in h and "nmi_bottom" in h
        assert h["clusters_global"] <= 8
        assert all(torch.isfinite(torch.tensor(h[k])) for k in ("loss", "ce", "tri_global", "tri_top", "tri_bottom"))
    lines = (tmp_path / "finetune" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    state = load_checkpoint(res.last_checkpoint)
    assert state["pseudo_labels"].shape == (3, len(pair["target"].train))
    assert state["stage"] == "finetune" and state["cfg"]["cluster"]["num_clusters"] == 8 and state["num_clusters"] == 8


@pytest.mark.slow
def test_resume_ends_like_a_straight_run(pair, tmp_path):
    cfg = FinetuneCfg.smoke(epochs=3)
    straight = finetune(cfg, pair["target"], tmp_path / "a", source_checkpoint=pair["checkpoint"], progress=False)
    finetune(FinetuneCfg.smoke(epochs=2), pair["target"], tmp_path / "b", source_checkpoint=pair["checkpoint"],
             progress=False)  # "stopped" after epoch 2
    resumed = finetune(cfg, pair["target"], tmp_path / "b", source_checkpoint=pair["checkpoint"], resume=True,
                       progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert _comparable(resumed.history) == _comparable(straight.history)
    assert resumed.direct_transfer == straight.direct_transfer
    a = load_checkpoint(straight.last_checkpoint)
    b = load_checkpoint(resumed.last_checkpoint)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["pseudo_labels"], b["pseudo_labels"])
    with pytest.raises(ConfigError, match=r"another recipe \(cluster.num_clusters 8 -> 9\)"):
        finetune(FinetuneCfg.smoke(epochs=4, cluster={"num_clusters": 9}), pair["target"], tmp_path / "b",
                 source_checkpoint=pair["checkpoint"], resume=True, progress=False)


@pytest.mark.slow
def test_fused_loss_trains_the_fusion(pair, tmp_path):
    """Published recipe: no loss reaches ECAB (it keeps its initial weights); fused_loss trains it."""
    cfg = FinetuneCfg.smoke(epochs=1)
    runs = {}
    for fused in (False, True):
        res = finetune(cfg.with_overrides({"loss.fused_loss": fused}), pair["target"], tmp_path / str(fused),
                       source_checkpoint=pair["checkpoint"], progress=False)
        runs[fused] = load_checkpoint(res.last_checkpoint)["model"]
        assert ("tri_fused_top" in res.history[0]) == fused
    seed_everything(cfg.seed)  # what finetune() does before building the pair
    initial = build_model("mean_teacher_resnet18", num_classes=cfg.cluster.num_clusters, weights="none").state_dict()
    ecab = [k for k in runs[False] if k.startswith(("student.ecab_top.", "student.ecab_bottom."))]
    assert ecab
    assert all(torch.equal(runs[False][k], initial[k]) for k in ecab)
    assert any(not torch.equal(runs[True][k], initial[k]) for k in ecab), "fused_loss did not train ECAB"


@pytest.mark.slow
def test_plain_cluster_feature_and_lloyd_are_options(pair, tmp_path):
    cfg = FinetuneCfg.smoke(epochs=1, cluster={"feature": "plain", "kmeans": {"algorithm": "minibatch", "max_iter": 5}})
    res = finetune(cfg, pair["target"], tmp_path, source_checkpoint=pair["checkpoint"], progress=False)
    assert res.history[0]["clusters_global"] >= 1


@pytest.mark.slow
def test_checkpoint_evaluates_at_its_own_size(pair, tmp_path):
    res = finetune(FinetuneCfg.smoke(epochs=1), pair["target"], tmp_path, source_checkpoint=pair["checkpoint"],
                   progress=False)
    m = evaluate_checkpoint(res.best_checkpoint, pair["target"])
    assert m["stage"] == "finetune" and m["epoch"] == 1
    assert m["mAP"] == pytest.approx(res.history[0]["target_mAP"], abs=1e-6)
    src = evaluate_checkpoint(pair["checkpoint"], pair["target"])
    assert src["stage"] == "pretrain" and src["mAP"] == pytest.approx(res.direct_transfer["mAP"], abs=1e-6)


@pytest.mark.slow
def test_bad_inputs_name_the_fix(pair, tmp_path):
    with pytest.raises(ValueError, match="choose k <="):
        finetune(FinetuneCfg.smoke(cluster={"num_clusters": 10**6}), pair["target"], tmp_path,
                 source_checkpoint=pair["checkpoint"], progress=False)
    with pytest.raises(ValueError, match="set model.backbone=resnet18"):
        finetune(FinetuneCfg.smoke(model={"backbone": "resnet50"}), pair["target"], tmp_path, source_checkpoint=pair["checkpoint"],
                 progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        finetune(FinetuneCfg.smoke(), pair["target"], tmp_path / "empty", progress=False)
    with pytest.raises(ValueError, match="cluster.feature"):
        finetune(FinetuneCfg.smoke(cluster={"feature": "teacher"}), pair["target"], tmp_path,
                 source_checkpoint=pair["checkpoint"], progress=False)


def test_sub_batch_statistics_match_separate_forwards():
    """BN over fixed sub-batches = each sub-batch on its own; only the first moves running stats."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(8, 3, 6, 6)
    out = forward_sub_batches(net, x, 4)
    first = ref(x[:4])
    running = ref[1].running_mean.clone()
    second = ref(x[4:])
    torch.testing.assert_close(out, torch.cat([first, second]))
    torch.testing.assert_close(net[1].running_mean, running)
    assert net[1].momentum == 0.1  # restored after the forward


@pytest.mark.slow
@pytest.mark.gpu
def test_finetune_on_cuda_with_bf16(pair, tmp_path):
    res = finetune(FinetuneCfg.smoke(epochs=1, runtime={"device": "cuda", "precision": "bf16"}), pair["target"], tmp_path,
                   source_checkpoint=pair["checkpoint"], progress=False)
    assert 0.0 <= res.last["target_mAP"] <= 1.0 and res.last["loss"] == res.last["loss"]  # finite, not NaN


@pytest.mark.slow
def test_a_short_run_is_the_start_of_a_long_one_and_scoring_the_start_changes_nothing(pair, tmp_path):
    """The budget study reads every budget off one long run (corelib.budget_study): that holds only if
    the first epochs of a longer run are exactly a shorter run, and if scoring the network before
    its first step (score_start) draws nothing from the training's random numbers."""
    short = finetune(FinetuneCfg.smoke(epochs=2), pair["target"], tmp_path / "short",
                     source_checkpoint=pair["checkpoint"], progress=False)
    long = finetune(FinetuneCfg.smoke(epochs=3, score_start=True), pair["target"], tmp_path / "long",
                    source_checkpoint=pair["checkpoint"], progress=False)
    start = {k: v for k, v in long.history[0].items() if k.startswith("start_")}
    assert set(start) >= {"start_target_mAP", "start_target_rank1", "start_test_flip"}
    assert 0.0 <= start["start_target_mAP"] <= 1.0
    assert not any(k.startswith("start_") for h in long.history[1:] for k in h)  # logged once, with epoch 1
    without_start = [{k: v for k, v in h.items() if not k.startswith("start_")} for h in long.history]
    assert _comparable(without_start)[:2] == _comparable(short.history)
    assert load_checkpoint(long.last_checkpoint)["epoch"] == load_checkpoint(short.last_checkpoint)["epoch"] + 1
