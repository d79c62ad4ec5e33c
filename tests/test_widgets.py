"""The ipywidgets explorers, built and driven headlessly (corelib.widgets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corelib.data.synthetic import load_synthetic
from corelib.errors import UnknownNameError
from corelib.models import CoreReIDNet, SourceNet
from corelib.training import TrainedModel
from corelib.widgets import ClusterExplorer, RankListExplorer


@pytest.fixture(scope="module")
def dataset(synthetic_small):
    return load_synthetic(synthetic_small["market_like"])


def test_rank_list_explorer_reacts_to_its_controls(dataset):
    torch.manual_seed(0)
    trained = TrainedModel(CoreReIDNet(18, num_classes=4, weights="none").eval(), "finetune",
                           {"augment": {"height": 64, "width": 32}}, 1)
    ex = RankListExplorer.from_model(trained, dataset, topk=3, layer="layer3")
    assert list(ex.branch.options) == ["global", "top", "bottom", "descriptor"]
    first = ex.image.value
    assert first[:4] == b"\x89PNG" and "of the top 3" in ex.summary.value
    ex.query.value = 1
    assert ex.image.value != first and ex.summary.value.startswith("query 1:")
    with_cams = ex.image.value
    ex.cams.value = False
    assert ex.image.value != with_cams
    ex.branch.value = "bottom"
    assert "<b>bottom</b>" in ex.summary.value
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()
    with pytest.raises(UnknownNameError, match="valid layers"):
        RankListExplorer.from_model(trained, dataset, topk=2, layer="layer5")
    src = TrainedModel(SourceNet(18, num_classes=3, weights="none").eval(), "pretrain", {"augment": {"height": 64, "width": 32}}, 1)
    assert list(RankListExplorer.from_model(src, dataset, topk=2).branch.options) == ["global", "descriptor"]


def test_cluster_explorer_lists_clusters_largest_first(dataset):
    samples = dataset.train[:30]
    labels = np.array([0] * 4 + [1] * 16 + [2] * 10)
    ex = ClusterExplorer(samples, labels, max_members=12)
    assert [v for _, v in ex.cluster.options] == [1, 2, 0]
    pids = [s.pid for s in samples[4:20]]
    top = max(pids, key=pids.count)
    assert f"16 images of {len(set(pids))} identities" in ex.summary.value
    assert f"purity {pids.count(top) / 16:.2f}" in ex.summary.value and "first 12 shown" in ex.summary.value
    first = ex.image.value
    ex.cluster.value = 0
    assert ex.image.value != first and len(ex.members()) == 4 and "4 images" in ex.summary.value
    with pytest.raises(ValueError, match="30 labels for 29 samples"):
        ClusterExplorer(samples[:29], labels)
    with pytest.raises(ValueError, match="no clusters"):
        ClusterExplorer(samples, -np.ones(30, dtype=int))
