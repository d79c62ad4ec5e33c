"""Cluster Contrast as a fine-tuning criterion (issue 19): InfoNCE on the cluster memory, the
momentum and hard-instance updates, and the loop rebuilding the memory at every clustering."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corelib.config import FinetuneCfg, PretrainCfg
from corelib.errors import ConfigError, InvalidInputError
from corelib.losses import AdaptBatch, build_criterion
from corelib.losses.cluster_contrast import momentum_update


def _batch(q, y, d_local=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = SimpleNamespace(global_feat=q, top_feat=torch.randn(len(y), d_local, generator=g),
                          bottom_feat=torch.randn(len(y), d_local, generator=g))
    return AdaptBatch([out, out, out], [y, y, y], [None, None], lambda x: x)


def test_info_nce_over_the_centroids_with_tau():
    cfg = FinetuneCfg().with_overrides({"loss.name": "cluster_contrast"}).loss
    crit = build_criterion(cfg, stage="finetune")
    assert crit.terms == ("loss", "nce", "tri_top", "tri_bottom")
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(5, 8, generator=g)
    q, y = torch.randn(8, 8, generator=g), torch.tensor([0, 0, 1, 1, 2, 3, 4, 4])
    crit.start_clustering(centres)
    out = crit(_batch(q, y))
    psi = F.normalize(centres, dim=1)
    qn = F.normalize(q, dim=1)
    expected = -(torch.log_softmax(qn @ psi.t() / 0.05, dim=1)[torch.arange(8), y]).mean()
    assert torch.allclose(out["nce"], expected, atol=1e-5)
    assert torch.allclose(out["loss"], out["nce"] + 0.5 * (out["tri_top"] + out["tri_bottom"]))
    # the memory moved towards the batch (and stays unit length); the loss used the old one
    assert not torch.allclose(crit.memory, psi) and torch.allclose(crit.memory.norm(dim=1), torch.ones(5), atol=1e-5)


def test_the_momentum_update_is_sequential_and_weighs_the_old_value():
    memory = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    q = F.normalize(torch.tensor([[1.0, 1.0], [1.0, -2.0], [0.0, 1.0]]), dim=1)
    y = torch.tensor([0, 0, 1])
    m = 0.1
    ref = memory.clone()
    for qi, yi in zip(q, y):  # sample by sample, in batch order
        ref[yi] = F.normalize(m * ref[yi] + (1 - m) * qi, dim=0)
    assert torch.allclose(momentum_update(memory, q, y, m), ref)
    # hard: only the member least similar to its centroid (here q[1] for cluster 0)
    hard = momentum_update(memory, q, y, m, hard=True)
    assert torch.allclose(hard[0], F.normalize(m * memory[0] + (1 - m) * q[1], dim=0))
    assert torch.equal(memory, F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1))  # input untouched


def test_settings_and_a_missing_memory_are_refused():
    with pytest.raises(ConfigError, match="loss.contrast.momentum must lie in"):
        FinetuneCfg().with_overrides({"loss.contrast.momentum": 1.0})
    crit = build_criterion(FinetuneCfg().with_overrides({"loss.name": "cluster_contrast"}).loss, stage="finetune")
    with pytest.raises(InvalidInputError, match="start_clustering"):
        crit(_batch(torch.randn(2, 4), torch.tensor([0, 1])))


@pytest.fixture(scope="module")
def source_checkpoint(synthetic_small, tmp_path_factory):
    from corelib.data import load_synthetic
    from corelib.training import pretrain

    run = tmp_path_factory.mktemp("cc_source")
    pretrain(PretrainCfg.smoke(), load_synthetic(synthetic_small["market_like"]), run, progress=False)
    return run / "pretrain" / "best.pt"


@pytest.mark.slow
@pytest.mark.parametrize("labeler", ["kmeans", "dbscan"])
def test_cluster_contrast_fine_tunes_on_kmeans_or_dbscan_labels_and_resumes_exactly(
        synthetic_small, source_checkpoint, tmp_path, labeler):
    from corelib.data import load_synthetic
    from corelib.runtime import load_checkpoint
    from corelib.training import finetune

    target = load_synthetic(synthetic_small["cuhk_like"])

    def cfg(epochs):
        return FinetuneCfg.smoke(epochs=epochs, batch_size=8, loss={"name": "cluster_contrast", "contrast": {"hard": True}},
                                 cluster={"labeler": labeler, "normalize": "camera_guided",
                                          "dbscan": {"k1": 10, "k2": 3, "eps": 0.55}})

    straight = finetune(cfg(2), target, tmp_path / "a", source_checkpoint=source_checkpoint, progress=False)
    assert straight.loss_terms == ("loss", "nce", "tri_top", "tri_bottom")
    assert all(np.isfinite(h["nce"]) and h["nce"] > 0 for h in straight.history)
    finetune(cfg(1), target, tmp_path / "b", source_checkpoint=source_checkpoint, progress=False)
    resumed = finetune(cfg(2), target, tmp_path / "b", source_checkpoint=source_checkpoint, resume=True,
                       progress=False)
    untimed = [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in straight.history]
    assert [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in resumed.history] == untimed
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_the_baseline_recipes_resolve_by_name():
    from corelib.recipes import RecipeContext, list_recipes, resolve_recipe

    assert {"corereid_v2", "corereid_v2_dbscan", "cluster_contrast"} <= set(list_recipes())
    real = RecipeContext("person", embedded=False, target="market1501")
    dbscan = resolve_recipe("finetune", real, recipe="corereid_v2_dbscan")
    assert (dbscan.cluster.labeler, dbscan.cluster.dbscan.eps, dbscan.cluster.dbscan.k1, dbscan.loss.name) == \
        ("dbscan", 0.6, 30, "corereid")
    cc = resolve_recipe("finetune", real, recipe="cluster_contrast")
    assert (cc.loss.name, cc.loss.contrast.temperature, cc.loss.contrast.momentum) == ("cluster_contrast", 0.05, 0.1)
    assert (cc.batch_size, cc.num_instances, cc.epochs, cc.iters_per_epoch) == (256, 16, 50, 200)
    # DBSCAN needs no k: a target without the paper's k is fine for the DBSCAN recipes
    resolve_recipe("finetune", RecipeContext("person", False, "custom"), recipe="corereid_v2_dbscan")
    embedded = resolve_recipe("finetune", RecipeContext("vehicle", embedded=True, target="veri_like"),
                              recipe="cluster_contrast")
    assert (embedded.cluster.dbscan.k1, embedded.cluster.normalize) == (10, "camera_guided")
    assert resolve_recipe("pretrain", real, recipe="cluster_contrast") == resolve_recipe("pretrain", real)


def test_the_command_line_takes_a_baseline_recipe(capsys):
    from corelib.cli import main

    assert main(["finetune", "--target", "market_like", "--recipe", "cluster_contrast", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "labeler: dbscan" in out and "name: cluster_contrast" in out
