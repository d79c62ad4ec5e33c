"""The ipywidgets explorers, built and driven headlessly (corelib.widgets)."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch

from corelib.data.synthetic import load_synthetic
from corelib.errors import InvalidInputError, UnknownNameError
from corelib.models import CoreReIDNet, SourceNet
from corelib.progress import WIDGETS_ENV
from corelib.training import TrainedModel
from corelib.widgets import ClusterExplorer, RankListExplorer, RankListView, png_size

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def dataset(synthetic_small):
    return load_synthetic(synthetic_small["market_like"])


@pytest.fixture(scope="module")
def views(dataset):
    torch.manual_seed(0)
    adapted = TrainedModel(CoreReIDNet(18, num_classes=4, weights="none").eval(), "finetune",
                           {"augment": {"height": 64, "width": 32}}, 1)
    source = TrainedModel(SourceNet(18, num_classes=3, weights="none").eval(), "pretrain",
                          {"augment": {"height": 64, "width": 32}}, 1)
    return {"person": RankListView.from_model(adapted, dataset, start=2),
            "source-net": RankListView.from_model(source, dataset)}


def _shown_size(ex):
    return int(ex.image.width), int(ex.image.height)


@pytest.mark.slow
def test_rank_list_explorer_reacts_to_every_control(views, dataset):
    ex = RankListExplorer(views, topk=3, layer="layer3", pair="person")
    assert list(ex.pair.options) == ["person", "source-net"] and ex.query.value == 2
    assert list(ex.branch.options) == ["global", "top", "bottom", "descriptor"]
    n = len(dataset.query)
    assert ex.query.max == n - 1 and ex.range.value == f"of 0–{n - 1} ({n} queries)"
    first = ex.image.value
    assert first[:4] == b"\x89PNG" and "of the top 3" in ex.summary.value and ex.status.value == ""
    q = dataset.query[2]
    assert f"query 2 (pid {q.pid} c{q.camid + 1})" in ex.summary.value
    # natural size: the widget is told the PNG's own pixel size
    assert _shown_size(ex) == png_size(first)
    ex.next.click()
    assert ex.query.value == 3 and ex.image.value != first and "query 3 (" in ex.summary.value
    ex.previous.click(), ex.previous.click()
    assert ex.query.value == 1
    ex.query.value = 0
    ex.previous.click()
    assert ex.query.value == 0  # the range holds
    with_cams = ex.image.value
    ex.cams.value = False
    assert ex.image.value != with_cams and "no overlays" in ex.summary.value
    ex.cams.value = True
    ex.branch.value = "bottom"
    assert "<b>bottom</b>" in ex.summary.value
    # another pair: its own branches and query; coming back restores the first pair's view
    person_view = ex.image.value
    ex.pair.value = "source-net"
    assert list(ex.branch.options) == ["global", "descriptor"] and ex.branch.value == "descriptor"
    assert ex.query.value == 0 and ex.summary.value.startswith("source-net, query 0")
    assert ex.image.value != person_view
    ex.pair.value = "person"
    assert ex.query.value == 0 and ex.summary.value.startswith("person, query 0")


def test_rank_list_explorer_renders_once_per_change(views):
    ex = RankListExplorer(views, topk=2, layer="layer3")
    renders = []
    original = ex._render
    ex._render = lambda: renders.append(1) or original()
    ex.pair.value = "person"  # resets query range, branches: one render, not one per control
    assert len(renders) == 1
    states = []
    ex.status.observe(lambda c: states.append(c["new"]), names="value")
    ex.next.click()
    assert "computing" in states[0] and states[-1] == ""


def test_explorers_show_a_static_view_where_no_widget_front_end_draws_them(views, dataset, monkeypatch):
    ex = RankListExplorer(views, topk=3, layer="layer3")
    live = ex._repr_mimebundle_()
    assert WIDGET_MIME in live and not live["text/plain"].startswith("VBox")
    monkeypatch.setenv(WIDGETS_ENV, "static")
    static = ex._repr_mimebundle_()
    assert WIDGET_MIME not in static
    img = re.search(r'src="data:image/png;base64,([^"]+)" width="(\d+)" height="(\d+)"', static["text/html"])
    png = base64.b64decode(img.group(1))
    assert png == ex.image.value and (int(img.group(2)), int(img.group(3))) == png_size(png)
    assert static["text/plain"] in static["text/html"] and "of the top 3 are the same identity" in static["text/plain"]
    clusters = ClusterExplorer({"person": (dataset.train[:6], [0, 0, 1, 1, 1, -1])})
    assert "cluster 1: 3 images of" in clusters._repr_mimebundle_()["text/plain"]


def test_rank_list_explorer_refuses_what_it_cannot_show(views, dataset):
    with pytest.raises(UnknownNameError, match="valid layers"):
        RankListExplorer(views, topk=2, layer="layer5")
    with pytest.raises(UnknownNameError, match="pair 'vehicle' is not among"):
        RankListExplorer(views, pair="vehicle")
    with pytest.raises(InvalidInputError, match="start query 999 is outside"):
        RankListView(views["person"].model, views["person"].query, views["person"].gallery, dataset.query,
                     dataset.gallery, views["person"].transform, start=999)


def test_cluster_explorer_lists_clusters_largest_first_per_pair(dataset):
    samples = dataset.train[:30]
    labels = np.array([0] * 4 + [1] * 16 + [2] * 10)
    ex = ClusterExplorer({"a": (samples, labels), "b": (samples[:3], [5, -1, 5])}, max_members=12, pair="a")
    assert [v for _, v in ex.cluster.options] == [1, 2, 0] and ex.range.value == "3 clusters, largest first"
    pids = [s.pid for s in samples[4:20]]
    top = max(pids, key=pids.count)
    assert f"16 images of {len(set(pids))} identities" in ex.summary.value
    assert f"purity {pids.count(top) / 16:.2f}" in ex.summary.value and "first 12 shown" in ex.summary.value
    first = ex.image.value
    assert _shown_size(ex) == png_size(first)
    ex.next.click()
    assert ex.cluster.value == 2 and ex.image.value != first
    ex.next.click(), ex.next.click()
    assert ex.cluster.value == 0 and len(ex.members()) == 4 and "4 images" in ex.summary.value
    ex.pair.value = "b"
    assert [v for _, v in ex.cluster.options] == [5] and ex.range.value == "1 cluster, largest first"
    assert "b, cluster 5: 2 images of" in ex.summary.value
    one = "1 identity;" in ex.summary.value or "2 identities;" in ex.summary.value
    assert one and ex.cluster.options[0][0] == "cluster 5 (2 images)"
    ex.pair.value = "a"
    assert ex.cluster.value == 0  # each pair keeps its cluster
    with pytest.raises(ValueError, match="a: 30 labels for 29 samples"):
        ClusterExplorer({"a": (samples[:29], labels)})
    with pytest.raises(ValueError, match="no clusters"):
        ClusterExplorer({"a": (samples, -np.ones(30, dtype=int))})
