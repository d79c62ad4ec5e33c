"""Chapter 07's library side: the gap a method closes, the table, the recipe folders read back into
the results tables, and the camera-normalisation study."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from corelib.baselines import (BaselineRun, baseline_table, compare_normalisations, gap_closed, read_baselines)
from corelib.config import ClusterCfg
from corelib.results import collect_results, pair_table
from corelib.runtime import save_checkpoint


def test_gap_closed_is_the_share_of_the_direct_to_oracle_gap():
    assert gap_closed(0.10, 0.20, 0.30) == pytest.approx(0.5)
    assert gap_closed(0.10, 0.30, 0.30) == pytest.approx(1.0)
    assert gap_closed(0.10, 0.05, 0.30) == pytest.approx(-0.25)
    assert math.isnan(gap_closed(0.30, 0.40, 0.30))  # no gap: the oracle does not beat direct transfer


def _history(maps, clusters):
    return [{"epoch": i + 1, "target_mAP": m, "target_rank1": m / 2, "clusters_global": k, "outliers_global": 0.1,
             "nmi_global": 0.5 + 0.1 * i, "seconds": 10.0} for i, (m, k) in enumerate(zip(maps, clusters))]


def test_baseline_table_measures_each_method_against_the_oracle():
    runs = {"person": {
        "corereid_v2": BaselineRun("corereid_v2", {"mAP": 0.05, "rank1": 0.04}, _history([0.10, 0.15], [160, 160]), 20.0),
        "learn_by_guessing": BaselineRun("learn_by_guessing", {"mAP": 0.07, "rank1": 0.06},
                                         _history([0.08, 0.07], [90, 95]), 55.0, own_source=True),
        "supervised_oracle": BaselineRun("supervised_oracle", {"mAP": 0.05, "rank1": 0.04}, _history([0.2, 0.25], [160, 160]),
                                         20.0)}}
    rows = {r["method"]: r for r in baseline_table(runs, tasks={"person": "a → b"})}
    assert rows["corereid_v2"]["gap closed"] == pytest.approx((0.15 - 0.05) / (0.25 - 0.05), abs=1e-3)
    # each method's gap is measured from its own source network's direct transfer
    assert rows["learn_by_guessing"]["gap closed"] == pytest.approx((0.07 - 0.07) / (0.25 - 0.07), abs=1e-3)
    assert rows["supervised_oracle"]["gap closed"] is None
    assert rows["learn_by_guessing"]["source"] == "own" and rows["corereid_v2"]["source"] == "chapter 02"
    assert (rows["corereid_v2"]["mAP"], rows["corereid_v2"]["direct mAP"], rows["corereid_v2"]["clusters"]) == (15.0, 5.0, 160)
    assert rows["corereid_v2"]["task"] == "a → b"
    assert rows["corereid_v2"]["test"] == ""  # records without the protocol (written before it was recorded)
    flipped = _history([0.1], [160])[0] | {"test_flip": True}
    one_view = _history([0.1], [160])[0] | {"test_flip": False}
    runs = {"person": {"corereid_v2": BaselineRun("corereid_v2", {"mAP": 0.05}, [flipped], 1.0),
                       "transreid": BaselineRun("transreid", {"mAP": 0.05}, [one_view], 1.0)}}
    assert {r["method"]: r["test"] for r in baseline_table(runs)} == {"corereid_v2": "flip", "transreid": "one view"}


def test_recipe_folders_are_read_back_and_every_method_is_a_row_of_the_main_table(tmp_path):
    run = tmp_path / "demo"
    pair = run / "person"
    (pair / "finetune").mkdir(parents=True)
    (pair / "pair.json").write_text(json.dumps({"task": "a → b", "recipe": "corereid_v2"}))
    (pair / "finetune" / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "target_mAP": 0.2, "target_rank1": 0.1}) + "\n")
    for recipe, m in (("cluster_contrast", 0.12), ("supervised_oracle", 0.3)):
        folder = pair / "baselines" / recipe / "finetune"
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(h) for h in _history([m / 2, m], [9, 10])) + "\n")
        save_checkpoint({"stage": "finetune", "direct_transfer": {"mAP": 0.05, "rank1": 0.02}}, folder / "last.pt")
    (pair / "baselines" / "cluster_contrast.replaced-20260101T000000Z").mkdir()  # set aside: not a method
    found = read_baselines(pair)
    assert sorted(found) == ["cluster_contrast", "supervised_oracle"]
    assert found["cluster_contrast"].adapted_mAP == pytest.approx(0.12) and found["cluster_contrast"].seconds == 20.0
    results = collect_results([run])
    table = pair_table(results).set_index("run")
    assert table.loc["demo", "a → b · mAP"] == 20.0
    assert table.loc["demo · cluster_contrast", "a → b · mAP"] == 12.0
    assert table.loc["demo · supervised_oracle", "a → b · mAP"] == 30.0
    direct = results[(results["stage"] == "direct") & (results["method"] == "cluster_contrast")]
    assert direct["mAP"].tolist() == [5.0]


def test_compare_normalisations_reports_camera_mixing_and_nmi_per_normalisation():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=1)
    pids = np.repeat(np.arange(6), 8)
    cams = np.tile([0, 1], 24)
    shift = torch.randn(2, 16, generator=g) * 0.6  # a strong per-camera offset: plain features split by camera
    feats = centres[pids] + 0.05 * torch.randn(48, 16, generator=g) + shift[cams]
    cfg = ClusterCfg(labeler="dbscan").with_overrides({"dbscan.k1": 6, "dbscan.k2": 2, "dbscan.eps": 0.5,
                                                       "dbscan.min_samples": 3})
    rows = {r["normalisation"]: r for r in compare_normalisations(feats, cams, pids, cfg)}
    assert set(rows) == {"none", "camera_mean", "camera_guided"}
    assert rows["camera_guided"]["camera mixing"] > rows["none"]["camera mixing"]
    assert rows["camera_guided"]["NMI"] > rows["none"]["NMI"]
