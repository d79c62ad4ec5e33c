"""The budget study read back from its sweep points (corelib.budget_study): budgets, seconds, the gap to
the same seed's oracle at the same budget, means over seeds, the ranking claimed only where the
intervals separate, and the committed summary chapter 08 draws."""

from __future__ import annotations

import json
import math

import pytest

from corelib import budget_study as B
from corelib import viz
from corelib.errors import MissingFileError
from corelib.runtime import save_checkpoint

ORACLE = "supervised_oracle"
CURVES = {  # recipe -> target mAP per epoch (before the seed's offset), start mAP
    "a": ([0.15, 0.20, 0.30], 0.10),
    "b": ([0.18, 0.19, 0.05], 0.10),
    ORACLE: ([0.20, 0.30, 0.40], 0.10),
}


def _log(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _study(root, seeds=(1, 2, 3)):
    """Sweep points as chapter 07 leaves them: 'a' logs no start score (its direct transfer in last.pt
    is the fallback), 'b' and the oracle log one; 3 epochs of 10 steps, 5 s each."""
    for seed in seeds:
        point = root / f"SEED={seed}"
        point.mkdir(parents=True)
        (point / "sweep.json").write_text(json.dumps({"written_by": "corelib.sweeps", "point": {"SEED": seed},
                                                      "parameters": {"SEED": seed}}))
        _log(point / "person" / "pretrain" / "metrics.jsonl", [{"epoch": 1, "seconds": 100.0}])
        for recipe, (curve, start) in CURVES.items():
            folder = point / "person" / "baselines" / recipe / "finetune"
            rows = [{"epoch": e + 1, "target_mAP": m + 0.01 * seed, "target_rank1": m, "seconds": 5.0,
                     "clusters_global": 50 + e, "outliers_global": 0.5, "nmi_global": 0.8}
                    for e, m in enumerate(curve)]
            if recipe != "a":
                rows[0].update({"start_target_mAP": start, "start_target_rank1": start})
            _log(folder / "metrics.jsonl", rows)
            (folder / "config.yaml").write_text("iters_per_epoch: 10\n")
            save_checkpoint({"stage": "finetune", "direct_transfer": {"mAP": start, "rank1": start}}, folder / "last.pt")
    return root


def test_points_give_steps_seconds_and_the_gap_to_the_same_seeds_oracle_at_the_same_budget(tmp_path):
    points = B.study_points(_study(tmp_path / "study"))
    assert len(points) == 3 * 3 * 3
    a1 = points[(points["recipe"] == "a") & (points["seed"] == 1)].sort_values("steps")
    assert list(a1["steps"]) == [10, 20, 30] and list(a1["seconds"]) == [5.0, 10.0, 15.0]
    assert set(a1["start from"]) == {"direct"}  # no start score logged: the source network's direct transfer
    b1 = points[(points["recipe"] == "b") & (points["seed"] == 1)]
    assert set(b1["start from"]) == {"start"}
    last = a1.iloc[-1]
    assert last["gap closed"] == pytest.approx((31 - 10) / (41 - 10))
    assert last["oracle mAP"] == pytest.approx(41) and last["source seconds"] == 100.0
    assert points[points["recipe"] == ORACLE]["gap closed"].isna().all()


def test_summary_ranks_only_where_the_intervals_separate_and_says_when_the_order_settles(tmp_path):
    summary = B.study_summary(B.study_points(_study(tmp_path / "study")))
    row = summary[(summary["recipe"] == "a") & (summary["steps"] == 30)].iloc[0]
    assert row["seeds"] == 3 and row["mAP"] == pytest.approx(32) and row["mAP std"] == pytest.approx(1)
    assert B.ranking(summary, "person", 10) == ["b", "a"]
    assert B.ranking(summary, "person", 30) == ["a", "b"]
    assert B.settled_from(summary, "person") == 20  # a ahead from 20 steps on
    assert B.ranking_text(summary, "person", 30) == "a > b"
    assert B.ranking_text(summary, "person", 20) == "a ≈ b"  # 21 ± 1 against 20 ± 1: no claim
    table = B.ranking_table(summary)
    assert [r["settled"] for r in table] == [False, True, True]
    assert [r["separated"] for r in table] == ["b > a", "", "a > b"]  # 10 steps: 19 ± 1 against 16 ± 1
    assert B.below_start(summary) == [{"pair": "person", "recipe": "b", "steps": 30, "start mAP": 10.0, "mAP": 7.0,
                                       "mAP std": 1.0}]


def test_one_seed_never_claims_an_order_and_an_unsettled_study_says_so(tmp_path):
    summary = B.study_summary(B.study_points(_study(tmp_path / "one", seeds=(1,))))
    assert summary["mAP std"].isna().all()
    assert B.ranking_text(summary, "person", 30) == "a ≈ b"
    flipping = summary[summary["steps"] != 20]  # 10: b first, 30: a first
    assert B.settled_from(flipping, "person") is None


def test_headline_table_has_the_preview_budget_and_the_largest(tmp_path):
    summary = B.study_summary(B.study_points(_study(tmp_path / "study")))
    rows = B.headline_table(summary)
    assert sorted({r["steps"] for r in rows}) == [B.PREVIEW_STEPS, 30]
    a = next(r for r in rows if r["method"] == "a" and r["steps"] == 30)
    assert a["mAP"] == "32.0 ± 1.0" and a["gap closed"] == "0.69 ± 0.01" and a["seeds"] == 3
    metrics = B.headline_metrics(summary)
    assert metrics["budget_study.person.a.mAP"] == 32.0
    assert metrics["budget_study.person.a.gap_closed"] == pytest.approx(0.687, abs=1e-3)
    assert f"budget_study.person.{ORACLE}.mAP" in metrics and f"budget_study.person.{ORACLE}.gap_closed" not in metrics
    labels = B.label_table(summary)
    assert {r["method"] for r in labels} == {"a", "b"} and labels[0]["clusters"] == 50


def test_replaced_and_foreign_folders_are_left_out_and_an_empty_root_is_named(tmp_path):
    root = _study(tmp_path / "study", seeds=(1,))
    (root / "someones_run" / "person" / "baselines").mkdir(parents=True)
    (root / "SEED=1").rename(root / "SEED=1.replaced-20261207T000000Z")
    with pytest.raises(MissingFileError, match="corelib sweep sweeps/budget_study.yaml"):
        B.study_points(root)
    with pytest.raises(MissingFileError, match="not a folder"):
        B.study_points(tmp_path / "nowhere")


def test_committed_summary_round_trips_and_draws(tmp_path):
    summary = B.study_summary(B.study_points(_study(tmp_path / "study")))
    summary.to_csv(tmp_path / f"{B.SUMMARY_TABLE}.csv", index=False)
    back = B.committed_summary(tmp_path)
    assert list(back["recipe"]) == list(summary["recipe"])
    assert math.isclose(back["mAP"].iloc[-1], summary["mAP"].iloc[-1])
    fig = viz.budget_curves(back, "person", title="t")
    assert len(fig.axes) == 3 and fig.axes[0].get_legend_handles_labels()[1] == ["a", "b", ORACLE]
    with pytest.raises(MissingFileError, match="corelib budget-study ROOT"):
        B.committed_summary(tmp_path / "empty")


def test_gathering_writes_only_the_study_files_and_chapter_08_reads_them_back(tmp_path, capsys):
    from corelib.cli import main

    root = _study(tmp_path / "study")
    assert main(["budget-study", str(root), "--smoke"]) == 0
    out = root / "figures"
    names = sorted(p.name for p in out.iterdir())
    assert {f"{B.SUMMARY_TABLE}.csv", "08_budget_headline.md", "08_budget_headline.tex", "08_budget_ranking.md",
            "08_budget_labels.csv", "08_budget_person.png", "08_budget_person.pdf"} <= set(names)
    assert all(n.startswith("08_budget_") for n in names)
    assert "person | 30 | a | 3 | 32.0 ± 1.0" in capsys.readouterr().out
    summary = B.committed_summary(out)
    assert B.settled_from(summary, "person") == 20
    assert not (root / "env.json").exists()  # the sweep root is not made a run directory


def test_the_quick_run_is_laid_beside_the_study_at_the_same_and_the_largest_budget(tmp_path):
    import pandas as pd

    summary = B.study_summary(B.study_points(_study(tmp_path / "study")))
    results = pd.DataFrame([
        {"run": "demo · a", "pair": "person", "stage": "adapted", "mAP": 15.5},
        {"run": "demo · a", "pair": "person", "stage": "direct", "mAP": 9.0},
        {"run": "other · b", "pair": "person", "stage": "adapted", "mAP": 99.0}])  # another run: not the preview
    rows = B.beside_quick_run(summary, results, "demo")
    assert rows == [{"pair": "person", "method": "a", "preview mAP (20 steps, 1 seed)": 15.5,
                     "study mAP (20 steps)": "22.0 ± 1.0", "study mAP (30 steps)": "32.0 ± 1.0",
                     "study gap closed (30 steps)": "0.69 ± 0.01"}]


@pytest.mark.slow
def test_a_variant_replays_the_studys_run_with_only_its_change(tmp_path):
    from corelib.baseline_plan import BaselinePlan, baseline_settings
    from corelib.config import DataCfg
    from corelib.errors import InvalidInputError
    from corelib.pairs import experiment_pairs
    from corelib.runtime.checkpoint import read_epoch_log
    from corelib.training import finetune, pretrain

    root = tmp_path / "study"
    point = root / "SEED=1"
    point.mkdir(parents=True)
    params = {"SMOKE": True, "SEED": 1, "PAIRS": ["person"], "DATA_ROOT": str(tmp_path / "data")}
    (point / "sweep.json").write_text(json.dumps({"written_by": "corelib.sweeps", "point": {"SEED": 1},
                                                  "parameters": params}))
    pair = experiment_pairs(["person"])["person"]
    source, target = pair.open(DataCfg.smoke(root=params["DATA_ROOT"]))
    pretrain(pair.pretrain_cfg(smoke=True, seed=1), source, point / "person", progress=False)
    # the study's own run, as chapter 07 trains it
    _, cfg = baseline_settings(pair, BaselinePlan(recipes=["corereid_v2"], oracle=False, smoke=True, seed=1))["corereid_v2"]
    finetune(cfg, target, point / "person" / "baselines" / "corereid_v2",
             source_checkpoint=point / "person" / "pretrain" / "best.pt", progress=False)

    B.run_variant(root, "corereid_v2", "same_lr", {"lr": cfg.lr}, progress=False)
    B.run_variant(root, "corereid_v2", "lr_x0.1", {"lr": cfg.lr / 10}, progress=False)

    def scores(folder):
        return [{k: v for k, v in r.items() if not k.startswith("seconds")}
                for r in read_epoch_log(folder / "finetune" / "metrics.jsonl")]

    studied = scores(point / "person" / "baselines" / "corereid_v2")
    assert scores(root / "variants" / "same_lr" / "SEED=1" / "person") == studied  # same settings, same source, same run
    assert scores(root / "variants" / "lr_x0.1" / "SEED=1" / "person") != studied
    rows = B.variant_table(root)
    assert [r["variant"] for r in rows] == ["as in the study", "lr_x0.1", "same_lr"]  # variants by name
    assert rows[0]["mAP"] == rows[2]["mAP"] and rows[1]["change"] == json.dumps({"lr": cfg.lr / 10})
    with pytest.raises(InvalidInputError, match="another name"):
        B.run_variant(root, "corereid_v2", "lr_x0.1", {"lr": 1.0}, progress=False)
