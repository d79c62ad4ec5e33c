"""Gathering runs into the paper's tables (corelib.results) and sweeps (corelib.sweeps)."""

from __future__ import annotations

import json

import pytest
import yaml

from corelib import results as R
from corelib import sweeps as S
from corelib.errors import ConfigError


def _log(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _fake_run(run, *, k, adapted, direct=0.1, point=None):
    for pair in ("person", "vehicle"):
        _log(run / pair / "pretrain" / "metrics.jsonl", [
            {"epoch": 1, "loss": 2.0},  # not evaluated: skipped
            {"epoch": 4, "source_mAP": 0.7, "source_rank1": 0.8, "source_rank5": 0.9, "source_rank10": 0.95,
             "target_mAP": direct, "target_rank1": 0.05, "target_rank5": 0.1, "target_rank10": 0.2}])
        _log(run / pair / "finetune" / "metrics.jsonl", [
            {"epoch": 1, "target_mAP": 0.2, "target_rank1": 0.2, "target_rank5": 0.3, "target_rank10": 0.4},
            {"epoch": 2, "target_mAP": adapted, "target_rank1": 0.3, "target_rank5": 0.5, "target_rank10": 0.6}])
        (run / pair / "finetune" / "config.yaml").write_text(yaml.safe_dump({"model": {"backbone": "resnet18", "ecab": True,
                                                                                       "fusion": "v2"},
                                                                             "cluster": {"num_clusters": k}}))
    (run / "notebooks").mkdir()
    if point is not None:
        (run / "sweep.json").write_text(json.dumps({"point": point}))


def test_runs_become_the_papers_tables(tmp_path):
    _fake_run(tmp_path / "demo", k=160, adapted=0.34)
    _fake_run(tmp_path / "sweeps" / "num_clusters=120", k=120, adapted=0.30, point={"FINETUNE_OVERRIDES.num_clusters": 120})
    (tmp_path / "empty").mkdir()
    runs = R.find_runs([tmp_path / "demo", tmp_path / "sweeps", tmp_path / "empty"])
    assert [r.name for r in runs] == ["demo", "num_clusters=120"]
    df = R.collect_results(runs)
    assert len(df) == 2 * 2 * 3  # runs x pairs x stages
    adapted = df[(df.run == "demo") & (df.pair == "person") & (df.stage == "adapted")].iloc[0]
    assert (adapted["epoch"], adapted["mAP"], adapted["R-5"], adapted["num_clusters"]) == (2, 34.0, 50.0, 160)
    assert adapted["task"] == "market_like → cuhk_like"
    source = df[(df.run == "demo") & (df.pair == "person") & (df.stage == "source")].iloc[0]
    assert (source["epoch"], source["mAP"]) == (4, 70.0)

    main = R.pair_table(df)
    assert list(main["run"]) == ["demo", "num_clusters=120"]
    assert list(main.columns[1:5]) == [f"market_like → cuhk_like · {m}" for m in ("mAP", "R-1", "R-5", "R-10")]
    assert main.loc[main.run == "num_clusters=120", "vehicleid_like → veri_like · mAP"].item() == 30.0

    gain = R.adaptation_table(df)
    assert set(gain["mAP gain"]) == {24.0, 20.0}
    assert R.grid_keys(df) == ["FINETUNE_OVERRIDES.num_clusters"]
    sweep = R.sweep_table(df, R.grid_keys(df))
    assert len(sweep) == 2 and set(sweep["FINETUNE_OVERRIDES.num_clusters"].dropna()) == {120}
    from corelib import viz

    fig = viz.sweep_bars(sweep, R.grid_keys(df))  # one panel per task, mAP and R-1 per point
    assert [ax.get_title() for ax in fig.axes] == list(dict.fromkeys(sweep["task"]))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["num_clusters=120"]
    assert len(fig.axes[0].patches) == 2
    with pytest.raises(ValueError, match="sweep table is empty"):
        viz.sweep_bars(sweep.iloc[:0], R.grid_keys(df))
    with pytest.raises(ValueError, match="not in the results"):
        R.sweep_table(df, ["nope"])
    with pytest.raises(ValueError, match="run chapters 02 and 03"):
        R.pair_table(R.collect_results([]))

    tex = R.to_latex(main, caption="Target scores (%)", label="tab:main")
    assert tex.count(r"\\") == 4 and r"\toprule" in tex and r"\label{tab:main}" in tex  # 2 header rows + 2 runs
    # the paper's layout: each task once over its four metrics, the metrics below
    assert r"\multicolumn{4}{c}{market\_like $\rightarrow$ cuhk\_like} & \multicolumn{4}{c}{vehicleid\_like" in tex
    assert r"\cmidrule(lr){2-5} \cmidrule(lr){6-9}" in tex and "run & mAP & R-1 & R-5 & R-10 & mAP" in tex
    assert "34.0" in tex and "\\%" in tex


def test_grid_expansion_names_and_parameters(tmp_path):
    grid = {"FINETUNE_OVERRIDES.num_clusters": [120, 200], "SEED": [1, 2]}
    points = S.expand_grid(grid)
    assert len(points) == 4 and points[1] == {"FINETUNE_OVERRIDES.num_clusters": 120, "SEED": 2}
    assert S.point_name(points[1]) == "num_clusters=120,SEED=2"
    assert S.point_name({"X.tag": "a b/c"}).startswith("tag=a_b_c-")  # sanitised: a hash keeps it unique
    assert S.point_name({"X.tag": "a b/c"}) != S.point_name({"X.tag": "a_b_c"})
    params = S.point_parameters({"FINETUNE_OVERRIDES": {"epochs": 2}, "PAIRS": ["person"]}, points[1])
    assert params == {"FINETUNE_OVERRIDES": {"epochs": 2, "num_clusters": 120}, "PAIRS": ["person"], "SEED": 2}
    with pytest.raises(ConfigError, match="non-empty list"):
        S.expand_grid({"SEED": 3})
    with pytest.raises(ConfigError, match="is not a dict"):
        S.point_parameters({"SEED": 1}, {"SEED.x": 2})
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {}\n")
    with pytest.raises(ConfigError, match="no grid"):
        S.load_sweep(bad)
    bad.write_text("grids: {SEED: [1]}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        S.load_sweep(bad)


@pytest.mark.slow
def test_sweep_skips_finished_points_and_reruns_interrupted_ones(tmp_path, monkeypatch):
    import corelib.notebooks as nb

    calls = []

    def fake_run_notebooks(run_dir, *, parameters, chapters, **_):
        import os

        calls.append((run_dir.name, parameters))
        assert os.environ["COREREID_FIGURES"] == str((run_dir / "figures").resolve())  # figures stay in the run
        if parameters["FINETUNE_OVERRIDES"]["cluster.num_clusters"] == 200 and len(calls) == 2:
            raise KeyboardInterrupt  # the second point is interrupted the first time
        return [{"chapter": "03_finetuning", "seconds": 1.0}]

    monkeypatch.setattr(nb, "run_notebooks", fake_run_notebooks)
    grid = {"FINETUNE_OVERRIDES.cluster.num_clusters": [120, 200]}  # checked before any point runs
    with pytest.raises(KeyboardInterrupt):
        S.run_sweep(tmp_path, grid, parameters={"SMOKE": True}, chapters=["03"])
    assert (tmp_path / "num_clusters=120" / "sweep_done.json").is_file()
    assert not (tmp_path / "num_clusters=200" / "sweep_done.json").exists()
    assert json.loads((tmp_path / "num_clusters=200" / "sweep.json").read_text())["parameters"]["RESUME"] is True
    records = S.run_sweep(tmp_path, grid, parameters={"SMOKE": True}, chapters=["03"])
    assert [(r["name"], r["ran"]) for r in records] == [("num_clusters=120", False), ("num_clusters=200", True)]
    assert [c[0] for c in calls] == ["num_clusters=120", "num_clusters=200", "num_clusters=200"]
    assert calls[0][1]["SMOKE"] is True
