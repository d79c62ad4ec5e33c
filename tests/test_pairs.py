"""Pairs (``PAIRS`` / ``DATASETS``): how the chapters name the data they train on, embedded or real."""

from __future__ import annotations

import json
import os

import pytest

from corelib.config import FinetuneCfg, PretrainCfg, StyleCfg
from corelib.errors import ConfigError, UnknownNameError
from corelib.pairs import PAPER_CLUSTERS, dataset_refs, define_pair, experiment_pairs, manifest_for, read_pair

M2C = {"source": {"name": "market1501", "root": "~/datasets"}, "target": {"name": "cuhk03np", "subset": "labeled"}}


def test_embedded_pairs_keep_the_demo_recipes():
    pairs = experiment_pairs(["person", "vehicle"])
    assert [p.task for p in pairs.values()] == ["market_like → cuhk_like", "vehicleid_like → veri_like"]
    for name, p in pairs.items():
        assert p.embedded and p.kind == name
        assert p.pretrain_cfg(seed=3) == PretrainCfg.embedded(name, seed=3)
        assert p.finetune_cfg() == FinetuneCfg.embedded(name)
        assert p.style_cfg(smoke=True) == StyleCfg.embedded(name, smoke=True)
        assert p.finetune_cfg(smoke=True) == FinetuneCfg.embedded(name, smoke=True)
    assert pairs["person"].style_mode == "camera" and pairs["vehicle"].style_mode == "domain"


def test_real_pairs_get_the_paper_recipes():
    datasets = {"m2c": M2C, "v2v": {"source": "vehicleid", "target": "veri776"}}
    pairs = experiment_pairs(["m2c", "v2v"], datasets)
    m2c, v2v = pairs["m2c"], pairs["v2v"]
    assert not m2c.embedded and m2c.kind == "person" and m2c.style_mode == "camera"
    assert m2c.task == "market1501 → cuhk03np (subset=labeled)"
    assert m2c.source.root == os.path.expanduser("~/datasets")  # ~ expanded
    assert m2c.target.root == ""  # no root: $COREREID_DATA or data/ (the loader finds the folder below it)
    pre, fine = m2c.pretrain_cfg(), m2c.finetune_cfg()
    assert (pre.model.backbone, pre.model.weights, pre.epochs, pre.augment.height, pre.augment.width) == \
        ("resnet50", "imagenet", 120, 256, 128)
    assert (fine.cluster.num_clusters, fine.epochs, fine.augment.height, fine.augment.width) == (900, 80, 256, 128)
    assert m2c.style_cfg() == StyleCfg()
    # vehicles: 256x256 (docs/method.md §9-Q5), domain-aware style transfer, the paper's k for VeRi-776
    assert v2v.kind == "vehicle" and v2v.style_mode == "domain"
    assert (v2v.pretrain_cfg().augment.height, v2v.pretrain_cfg().augment.width) == (256, 256)
    assert v2v.finetune_cfg().cluster.num_clusters == PAPER_CLUSTERS["veri776"] == 500
    assert v2v.style_cfg() == StyleCfg.domain_aware()
    # SMOKE shrinks real pairs like embedded ones
    assert m2c.pretrain_cfg(smoke=True) == PretrainCfg.embedded("person", smoke=True)
    assert v2v.finetune_cfg(smoke=True) == FinetuneCfg.embedded("vehicle", smoke=True)


def test_pair_recipe_changes_apply_before_the_notebook_overrides():
    spec = {**M2C, "pretrain": {"epochs": 60, "model": {"backbone": "resnet101"}},
            "finetune": {"cluster": {"num_clusters": 700}}}
    p = define_pair("m2c", spec)
    assert p.pretrain_cfg().epochs == 60 and p.pretrain_cfg().model.backbone == "resnet101"
    assert p.pretrain_cfg(epochs=10).epochs == 10  # the notebook's PRETRAIN_OVERRIDES win (sweeps)
    assert p.pretrain_cfg(overrides={"epochs": 10}).model.backbone == "resnet101"  # a group is updated, not replaced
    assert p.finetune_cfg().cluster.num_clusters == 700
    assert p.finetune_cfg(overrides={"cluster.num_clusters": 500}).cluster.num_clusters == 500
    assert p.finetune_cfg(overrides={"cluster": {"normalize": "camera_mean"}}).cluster.num_clusters == 700
    with pytest.raises(ConfigError, match="no field 'num_clusters'; did you mean 'cluster.num_clusters'\\?"):
        define_pair("m2c", {**M2C, "finetune": {"num_clusters": 700}})  # k belongs to the cluster group


def test_errors_name_the_fix():
    with pytest.raises(UnknownNameError, match="embedded pairs: person, vehicle; pairs in DATASETS: m2c"):
        experiment_pairs(["m2d"], {"m2c": M2C})
    with pytest.raises(ConfigError, match=r"add the pairs to run to PAIRS, e.g. PAIRS = \['m2c'\]"):
        experiment_pairs(["person", "vehicle"], {"m2c": M2C})
    with pytest.raises(ConfigError, match="PAIRS is empty"):
        experiment_pairs([])
    with pytest.raises(ConfigError, match="needs a 'target'"):
        define_pair("x", {"source": "market1501"})
    with pytest.raises(ConfigError, match="no key 'sorce'; valid keys: source, target"):
        define_pair("x", {"sorce": "market1501", "target": "cuhk03np"})
    with pytest.raises(UnknownNameError, match="unknown dataset 'market1502'; loaders: .*market1501"):
        define_pair("x", {"source": "market1502", "target": "cuhk03np"})
    with pytest.raises(ConfigError, match=r"the cuhk03np loader has no option 'subsett'; .*loader's options \(subset\)"):
        define_pair("x", {"source": "market1501", "target": {"name": "cuhk03np", "subsett": "labeled"}})
    with pytest.raises(ConfigError, match="the market1501 loader has no option 'rooot'; a side takes \"name\", \"root\""):
        define_pair("x", {"source": {"name": "market1501", "rooot": "~/d"}, "target": "cuhk03np"})
    with pytest.raises(UnknownNameError, match="'cuhk03np_detected' is a manifest .* \\{\"name\": \"cuhk03np\", \"subset\": \"detected\"\\}"):
        define_pair("x", {"source": "market1501", "target": "cuhk03np_detected"})
    with pytest.raises(ConfigError, match="'kind' belongs to the pair, beside"):
        define_pair("x", {"source": {"name": "custom", "root": "a", "kind": "person"}, "target": "cuhk03np"})
    with pytest.raises(ConfigError, match="must be \"person\" or \"vehicle\", got 'persons'"):
        define_pair("x", {**M2C, "kind": "persons"})
    with pytest.raises(ConfigError, match="pairs a person source \\(market1501\\) with a vehicle target \\(veri776\\)"):
        define_pair("x", {"source": "market1501", "target": "veri776"})
    with pytest.raises(ConfigError, match="PretrainCfg has no field 'epoch'"):
        define_pair("x", {**M2C, "pretrain": {"epoch": 3}})  # a typo fails when the pair is read, not hours later
    with pytest.raises(ConfigError, match="person or a vehicle pair"):
        define_pair("x", {"source": {"name": "custom", "root": "a"}, "target": {"name": "custom", "root": "b"}})
    customs = {"source": {"name": "custom", "root": "a"}, "target": {"name": "custom", "root": "b"}, "kind": "person"}
    with pytest.raises(ConfigError, match=r"no k for the target 'custom'; set cluster.num_clusters \(in a pair: "
                                          r"\"finetune\": \{\"cluster\": \{\"num_clusters\": K\}\}"):
        define_pair("x", customs)  # when the pair is read, not in chapter 03 after hours of pre-training
    custom = define_pair("x", {**customs, "finetune": {"cluster.num_clusters": 50}})
    assert custom.finetune_cfg().cluster.num_clusters == 50 and custom.finetune_cfg(smoke=True).cluster.num_clusters == 8
    with pytest.raises(ConfigError, match="folder names"):
        experiment_pairs(["../escape"], {"../escape": M2C})


def test_relative_roots_are_relative_to_the_repository():
    from corelib.paths import repo_root

    # as data/ and runs/ are: the notebooks run with notebooks/ as their working directory
    p = define_pair("x", {"source": {"name": "market1501", "root": "data/real"}, "target": "cuhk03np"})
    assert p.source.root == str(repo_root() / "data" / "real")


def test_manifests_are_found_by_loader_and_options():
    assert manifest_for("market1501") == "market1501"
    assert manifest_for("cuhk03np") == "cuhk03np_detected"  # the loader's default subset
    assert manifest_for("cuhk03np", {"subset": "labeled"}) == "cuhk03np_labeled"
    assert manifest_for("vehicleid") == "vehicleid"
    assert manifest_for("vehicleid", {"test_size": 1600}) is None  # no committed manifest for Test1600
    assert manifest_for("custom") is None


def test_dataset_refs_are_listed_once_with_unique_labels():
    pairs = experiment_pairs(["a", "b", "person"], {
        "a": {"source": {"name": "market1501", "root": "/data/one"}, "target": "cuhk03np"},
        "b": {"source": {"name": "market1501", "root": "/data/two"}, "target": "cuhk03np"},
    })
    refs = dataset_refs(pairs)
    assert list(refs) == ["market1501_one", "cuhk03np", "market1501_two", "market_like", "cuhk_like"]


def test_claim_records_the_pair_and_refuses_another_pair_of_the_same_name(tmp_path):
    first = define_pair("m2c", M2C)
    pair_dir = first.claim(tmp_path)
    record = read_pair(pair_dir)
    assert record["task"] == first.task and record["target_options"] == {"subset": "labeled"}
    first.claim(tmp_path)  # the same pair again (a resumed run) is fine
    other = define_pair("m2c", {**M2C, "target": {"name": "cuhk03np", "subset": "detected"}})
    with pytest.raises(ConfigError, match="trained on market1501 → cuhk03np \\(subset=labeled\\).*another RUN_DIR"):
        other.claim(tmp_path)


def test_num_clusters_follows_the_run_then_the_recipe(tmp_path):
    from corelib.config import save_config

    p = experiment_pairs(["person"])["person"]
    assert p.num_clusters(tmp_path) == FinetuneCfg.embedded("person").cluster.num_clusters
    assert p.num_clusters("", smoke=True) == FinetuneCfg.embedded("person", smoke=True).cluster.num_clusters
    save_config(FinetuneCfg.embedded("person", cluster={"num_clusters": 123}), tmp_path / "person" / "finetune" / "config.yaml")
    assert p.num_clusters(tmp_path) == 123  # what chapter 03 used (e.g. a sweep point's k)
    (tmp_path / "old" / "person" / "finetune").mkdir(parents=True)  # a run directory of the 0.1 flat layout
    (tmp_path / "old" / "person" / "finetune" / "config.yaml").write_text("depth: 18\nnum_clusters: 77\n")
    with pytest.raises(ConfigError, match="has no field 'depth'"):
        p.num_clusters(tmp_path / "old")


def test_real_loaders_open_the_pair(synthetic_small, tmp_path):
    # real loaders on copies in their real layouts: Market-1501 and CUHK03-NP (detected) folders
    (tmp_path / "cuhk03-np").mkdir()
    (tmp_path / "Market-1501-v15.09.15").symlink_to(synthetic_small["market_like"], target_is_directory=True)
    (tmp_path / "cuhk03-np" / "detected").symlink_to(synthetic_small["cuhk_like"], target_is_directory=True)
    spec = {"source": {"name": "market1501", "root": str(tmp_path)}, "target": {"name": "cuhk03np", "root": str(tmp_path)}}
    p = experiment_pairs(["m2c"], {"m2c": spec})["m2c"]
    source, target = p.open()
    assert source.name == "market1501" and target.name == "cuhk03np" and target.extras["subset"] == "detected"
    assert len(source.train) > 0 and len(target.query) > 0
    assert p.open_target().root == target.root


def test_results_name_tasks_from_the_pair_record(tmp_path):
    from corelib.results import collect_results

    run = tmp_path / "run"
    pair_dir = define_pair("m2c", M2C).claim(run)
    (pair_dir / "pretrain").mkdir()
    (pair_dir / "pretrain" / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "target_mAP": 0.2, "source_mAP": 0.5}) + "\n")
    results = collect_results([run])
    assert set(results["task"]) == {"market1501 → cuhk03np (subset=labeled)"}


def _declared_parameters() -> set[str]:
    from corelib.notebooks import list_chapters, notebook_parameters

    return {name for nb in list_chapters() for name in notebook_parameters(nb)}


def test_the_committed_experiment_and_sweep_files_are_valid():
    import yaml

    from corelib.paths import repo_root
    from corelib.baseline_plan import BaselinePlan, baseline_settings
    from corelib.sweeps import expand_grid, load_sweep, point_parameters

    declared = _declared_parameters()
    experiments = sorted((repo_root() / "experiments").glob("*.yaml"))
    assert experiments
    for path in experiments:
        params = yaml.safe_load(path.read_text())
        assert set(params) <= declared, f"{path.name}: {set(params) - declared} is no chapter's parameter"
        pairs = experiment_pairs(params["PAIRS"], params["DATASETS"])
        everything = experiment_pairs(list(params["DATASETS"]), params["DATASETS"])
        assert set(pairs) <= set(everything)
        for p in everything.values():
            assert not p.embedded and p.finetune_cfg().cluster.num_clusters > 0 and p.source.manifest() and p.target.manifest()
    for path in sorted((repo_root() / "sweeps").glob("*.yaml")):
        spec = load_sweep(path)
        keys = set(spec["parameters"]) | {k.split(".")[0] for k in spec["grid"]}
        assert keys <= declared, f"{path.name}: {keys - declared} is no chapter's parameter"
        for point in expand_grid(spec["grid"]):
            params = point_parameters(spec["parameters"], point)  # PAIRS may be a grid key
            overrides = {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith("FINETUNE_OVERRIDES.")}
            for p in experiment_pairs(params.get("PAIRS", ["person", "vehicle"]), params.get("DATASETS")).values():
                p.finetune_cfg(overrides=overrides)
                if "BUDGET" in params or "SOURCE_BUDGET" in params:  # chapter 07's budgets name real fields
                    baseline_settings(p, BaselinePlan(budget=params.get("BUDGET"), source_budget=params.get("SOURCE_BUDGET")))
