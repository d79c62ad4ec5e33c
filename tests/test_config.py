"""Config dataclasses: YAML files and command-line overrides, with errors that name the fix."""

from __future__ import annotations

import pytest

from corelib.config import EMBEDDED_PAIRS, FinetuneCfg, PretrainCfg, load_config, save_config
from corelib.errors import ConfigError, UnknownNameError


def test_yaml_and_overrides_round_trip(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 40\nmilestones: [10, 20]\n")
    cfg = load_config(PretrainCfg, path, ["lr=1e-3", "runtime.device=cpu", "runtime.channels_last=false"])
    assert cfg.epochs == 40 and cfg.milestones == (10, 20) and cfg.lr == 0.001
    assert cfg.runtime.device == "cpu" and cfg.runtime.channels_last is False
    assert cfg.model == PretrainCfg().model  # untouched fields keep the base's value
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(PretrainCfg, tmp_path / "again.yaml") == cfg


def test_overrides_apply_on_top_of_a_base():
    cfg = load_config(FinetuneCfg, None, {"epochs": 3}, base=FinetuneCfg.smoke())
    assert cfg == FinetuneCfg.smoke(epochs=3)


@pytest.mark.parametrize("override, message", [
    ("epoch=3", "no field 'epoch'; did you mean 'epochs'\\? Valid fields: model, augment"),
    ("epochs=three", "takes an int"),
    ("runtime.channels_last=1", "takes true or false"),
    ("lr=fast", "takes a number"),
    ("milestones=4", "takes a list"),
    ("epochs", "is not NAME=VALUE"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainCfg, None, [override])


def test_config_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(PretrainCfg, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(PretrainCfg, tmp_path / "missing.yaml")


@pytest.mark.parametrize("pair", sorted(EMBEDDED_PAIRS))
def test_embedded_recipes(pair):
    pre, fine = PretrainCfg.embedded(pair), FinetuneCfg.embedded(pair)
    assert pre.model.backbone == fine.model.backbone == "resnet18"
    assert (pre.augment.height, pre.augment.width) == (fine.augment.height, fine.augment.width)
    assert pre.model.weights == "none"  # no ImageNet download on the embedded data
    smoke = FinetuneCfg.embedded(pair, smoke=True)
    assert smoke.epochs <= 2 and (smoke.augment.height, smoke.augment.width) == (fine.augment.height, fine.augment.width)
    with pytest.raises(UnknownNameError, match="valid pairs"):
        PretrainCfg.embedded("bicycle")


def test_groups_take_dotted_names_and_partial_mappings():
    cfg = load_config(FinetuneCfg, None, ["cluster.num_clusters=500", "cluster.kmeans.init=random", "model.fusion=v1"])
    assert (cfg.cluster.num_clusters, cfg.cluster.kmeans.init, cfg.model.fusion) == (500, "random", "v1")
    assert cfg.cluster.kmeans.algorithm == FinetuneCfg().cluster.kmeans.algorithm  # the rest of the group stays
    same = FinetuneCfg().with_overrides({"cluster": {"num_clusters": 500, "kmeans": {"init": "random"}},
                                         "model": {"fusion": "v1"}})
    assert same == cfg
    assert cfg.flat()["cluster.kmeans.init"] == "random"
    assert FinetuneCfg.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("old, new", [("num_clusters=500", "cluster.num_clusters"), ("depth=50", "model.backbone"),
                                      ("kmeans_init=random", "cluster.kmeans.init"), ("fused_loss=true", "loss.fused_loss"),
                                      ("device=cpu", "runtime.device"), ("height=256", "augment.height")])
def test_a_name_of_the_flat_layout_names_its_new_place(old, new):
    with pytest.raises(ConfigError, match=f"no field '{old.split('=')[0]}' any more: it moved to '{new}'"):
        load_config(FinetuneCfg, None, [old])


def test_wrong_groups_and_choices_are_named():
    with pytest.raises(ConfigError, match="FinetuneCfg.cluster is a group of settings"):
        FinetuneCfg().with_overrides({"cluster": 500})
    with pytest.raises(ConfigError, match="FinetuneCfg.epochs is a single value, not a group"):
        FinetuneCfg().with_overrides(["epochs.x=3"])
    with pytest.raises(ConfigError, match="FinetuneCfg.cluster has no field 'k'"):
        FinetuneCfg().with_overrides(["cluster.k=3"])
    with pytest.raises(ConfigError, match="cluster.kmeans.algorithm must be one of 'minibatch', 'lloyd', got 'lloy'"):
        FinetuneCfg().with_overrides(["cluster.kmeans.algorithm=lloy"])
    with pytest.raises(ConfigError, match="model.fusion must be one of 'v1', 'v2', got 'v3'"):
        FinetuneCfg().with_overrides(["model.fusion=v3"])


def test_flat_configs_of_older_checkpoints_are_upgraded():
    old = {"depth": 18, "height": 64, "num_clusters": 7, "cluster_camera_norm": True, "kmeans": "lloyd", "epochs": 3}
    up = FinetuneCfg.from_dict(FinetuneCfg.upgrade(old))
    assert (up.model.backbone, up.augment.height, up.cluster.num_clusters, up.cluster.normalize,
            up.cluster.kmeans.algorithm, up.epochs) == ("resnet18", 64, 7, "camera_mean", "lloyd", 3)
