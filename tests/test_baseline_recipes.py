"""The baseline recipes' parts: the centre loss and its own optimiser, fixed-margin triplet, criteria
of the global batch alone, one network instead of a mean teacher, the oracle labeller, and the
recipes that put them together (learn_by_guessing, cluster_contrast, supervised_oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corelib.cluster import cluster_pseudo_labels
from corelib.config import ClusterCfg, PretrainCfg, SourceLossCfg
from corelib.errors import InvalidInputError
from corelib.losses import MarginTripletLoss, build_criterion, center_loss
from corelib.models import SourceOutput
from corelib.recipes import RecipeContext, resolve_recipe

PERSON = RecipeContext("person", True, "cuhk_like")


def test_margin_triplet_and_centre_loss_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(12, 5, generator=g), torch.arange(4).repeat_interleave(3)
    d = torch.cdist(f, f)
    want = []
    for i in range(12):  # per anchor: hardest positive, hardest negative, hinge at 0.3
        pos = [d[i, j] for j in range(12) if y[j] == y[i] and j != i]
        neg = [d[i, j] for j in range(12) if y[j] != y[i]]
        want.append(max(0.0, float(max(pos) - min(neg)) + 0.3))
    assert MarginTripletLoss(0.3)(f, y).item() == pytest.approx(np.mean(want), rel=1e-5)
    c = torch.randn(4, 5, generator=g)
    assert center_loss(f, y, c).item() == pytest.approx(np.mean([float(((f[i] - c[y[i]]) ** 2).sum())
                                                                 for i in range(12)]), rel=1e-5)
    with pytest.raises(InvalidInputError):
        MarginTripletLoss(0.0)


def test_centres_step_with_their_own_sgd_and_a_gradient_rescaled_by_one_over_beta():
    cfg = SourceLossCfg(name="ce_triplet_center").with_overrides({"center.weight": 0.005, "center.lr": 0.5})
    crit = build_criterion(cfg, stage="pretrain")
    torch.manual_seed(0)
    crit.start_training(4, 5, "cpu")
    before = crit.centres.detach().clone()
    f, y = torch.randn(8, 5, requires_grad=True), torch.arange(4).repeat_interleave(2)
    terms = crit(SourceOutput(f, torch.randn(8, 4)), y)
    assert set(terms) == {"loss", "ce", "triplet", "center"}
    terms["loss"].backward()
    # d(beta * L_c)/dc rescaled by 1/beta is dL_c/dc = -2/B sum_{i in c} (f_i - c)
    grad = torch.zeros_like(before)
    for i in range(8):
        grad[y[i]] -= 2.0 / 8 * (f[i].detach() - before[y[i]])
    crit.own_step()
    assert torch.allclose(crit.centres.detach(), before - 0.5 * grad, atol=1e-5)
    assert crit.centres.grad is None  # zeroed for the next step
    state = crit.own_state()
    other = build_criterion(cfg, stage="pretrain")
    other.start_training(4, 5, "cpu")
    other.load_own_state(state)
    assert torch.equal(other.centres.detach(), crit.centres.detach())


def test_criteria_of_the_global_batch_alone_declare_one_level():
    from corelib.config import AdaptLossCfg

    assert build_criterion(AdaptLossCfg(name="ce_triplet_center"), stage="finetune").levels == 1
    assert build_criterion(AdaptLossCfg(name="cluster_contrast", local_weight=0.0), stage="finetune").levels == 1
    assert build_criterion(AdaptLossCfg(name="cluster_contrast"), stage="finetune").levels == 3
    assert build_criterion(AdaptLossCfg(), stage="finetune").levels == 3


def test_the_oracle_labeller_returns_the_hidden_identities_and_needs_them():
    feats = [torch.randn(6, 4) for _ in range(3)]
    pids = np.array([7, 7, 3, 9, 3, 9])
    pseudo, _ = cluster_pseudo_labels(feats, np.zeros(6, int), ClusterCfg(labeler="oracle"), seed=0, identities=pids)
    for lab in pseudo.labels:
        assert lab.tolist() == [1, 1, 0, 2, 0, 2]
    with pytest.raises(InvalidInputError, match="identities"):
        cluster_pseudo_labels(feats, np.zeros(6, int), ClusterCfg(labeler="oracle"), seed=0)


def test_baseline_recipes_resolve_to_their_parts():
    lbg_pre = resolve_recipe("pretrain", PERSON, recipe="learn_by_guessing")
    assert lbg_pre.model.backbone == "resnet18_ibn_a" and lbg_pre.loss.name == "ce_triplet_center"
    lbg = resolve_recipe("finetune", PERSON, recipe="learn_by_guessing")
    assert (lbg.model.backbone, lbg.model.alpha, lbg.cluster.labeler, lbg.cluster.normalize, lbg.cluster.dbscan.outliers,
            lbg.loss.name) == ("resnet18_ibn_a", 0.0, "dbscan", "camera_guided", "drop", "ce_triplet_center")
    real = RecipeContext("person", False, "market1501")
    assert resolve_recipe("pretrain", real, recipe="learn_by_guessing").model.backbone == "resnet50_ibn_a"
    cc = resolve_recipe("finetune", real, recipe="cluster_contrast")
    assert (cc.model.alpha, cc.loss.local_weight, cc.batch_size, cc.cluster.dbscan.eps) == (0.0, 0.0, 256, 0.6)
    assert resolve_recipe("finetune", PERSON, recipe="supervised_oracle").cluster.labeler == "oracle"


@pytest.fixture(scope="module")
def data(synthetic_small):
    from corelib.data import load_synthetic

    return load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])


@pytest.mark.slow
def test_learn_by_guessing_trains_its_ibn_source_and_one_network_and_resumes(data, tmp_path):
    """The IBN source network with centre loss resumes to the straight run's weights and centres;
    the refinement steps keep the teacher an exact copy of the student (one network)."""
    from corelib.runtime import load_checkpoint
    from corelib.training import finetune, pretrain

    source, target = data
    pre = resolve_recipe("pretrain", PERSON, recipe="learn_by_guessing", smoke=True)
    straight = pretrain(pre, source, tmp_path / "a", progress=False)
    pretrain(pre.with_overrides({"epochs": 1}), source, tmp_path / "b", progress=False)
    resumed = pretrain(pre, source, tmp_path / "b", resume=True, progress=False)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert torch.equal(a["criterion"]["centres"], b["criterion"]["centres"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "center" in straight.last

    ft = resolve_recipe("finetune", PERSON, recipe="learn_by_guessing", smoke=True, overrides={"batch_size": 8})
    res = finetune(ft, target, tmp_path / "a", progress=False)
    assert res.loss_terms == ("loss", "ce", "triplet", "center")
    state = load_checkpoint(res.last_checkpoint)["model"]
    student = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    teacher = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
    assert student.keys() == teacher.keys()
    assert all(torch.equal(student[k], teacher[k]) for k in student)


@pytest.mark.slow
def test_the_oracle_recipe_trains_on_the_true_identities(data, tmp_path):
    from corelib.training import finetune, pretrain

    source, target = data
    pretrain(PretrainCfg.smoke(), source, tmp_path, progress=False)
    ft = resolve_recipe("finetune", PERSON, recipe="supervised_oracle", smoke=True, overrides={"batch_size": 8})
    res = finetune(ft, target, tmp_path, progress=False)
    assert all(h["nmi_global"] == pytest.approx(1.0) and h["outliers_global"] == 0 for h in res.history)
    assert res.history[-1]["clusters_global"] == target.num_train_pids


@pytest.mark.slow
def test_a_run_given_its_direct_transfer_equals_one_that_measures_it(data, tmp_path):
    """Chapter 07 measures the direct transfer once per source network and hands it over; the run
    must then be the one `corelib finetune` makes (same draws from the seeded RNG)."""
    from corelib.config import FinetuneCfg
    from corelib.training import finetune, pretrain

    source, target = data
    pretrain(PretrainCfg.smoke(), source, tmp_path, progress=False)
    cfg = FinetuneCfg.smoke(batch_size=8)
    measured = finetune(cfg, target, tmp_path / "a", source_checkpoint=tmp_path / "pretrain" / "best.pt",
                        progress=False)
    given = finetune(cfg, target, tmp_path / "b", source_checkpoint=tmp_path / "pretrain" / "best.pt",
                     direct_transfer=measured.direct_transfer, progress=False)

    def untimed(history):
        return [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in history]

    assert given.direct_transfer == measured.direct_transfer
    assert untimed(given.history) == untimed(measured.history)
