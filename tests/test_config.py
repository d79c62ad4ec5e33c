"""Config dataclasses: YAML files and command-line overrides, with errors that name the fix."""

from __future__ import annotations

import pytest

from corelib.config import EMBEDDED_PAIRS, DataCfg, FinetuneCfg, PretrainCfg, StyleCfg, load_config, preset, save_config
from corelib.errors import ConfigError, UnknownNameError
from corelib.settings import read_saved_config


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
    ("epoch=3", "no field 'epoch'; did you mean 'epochs'\\? Valid fields: batch_size, num_instances"),
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


@pytest.mark.parametrize("name, inside", [("num_clusters=500", "cluster.num_clusters"),
                                          ("fused_loss=true", "loss.fused_loss"), ("device=cpu", "runtime.device"),
                                          ("height=256", "augment.height")])
def test_a_field_of_a_group_given_alone_names_its_group(name, inside):
    with pytest.raises(ConfigError, match=f"no field '{name.split('=')[0]}'; did you mean '{inside}'\\?"):
        load_config(FinetuneCfg, None, [name])


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


def test_flat_configs_of_the_0_1_layout_are_refused(tmp_path):
    """The names of the flat layout before the groups (``depth``, ``kmeans``) are not translated any more."""
    path = tmp_path / "config.yaml"
    path.write_text("depth: 18\nnum_clusters: 7\nepochs: 3\n")
    with pytest.raises(ConfigError, match="FinetuneCfg has no field 'depth'"):
        read_saved_config(FinetuneCfg, path)
    save_config(FinetuneCfg.embedded("person"), path)
    assert read_saved_config(FinetuneCfg, path) == FinetuneCfg.embedded("person")


def test_the_loop_fields_are_shared_and_keep_their_flat_names():
    pre, fine = PretrainCfg(), FinetuneCfg()
    shared = ("batch_size", "num_instances", "optimizer", "lr", "weight_decay", "momentum", "bias_lr_factor", "seed")
    assert all(getattr(pre, name) == getattr(fine, name) for name in shared)
    assert (pre.epochs, pre.iters_per_epoch, pre.eval_every) == (120, 200, 3)  # the paper's, per stage
    assert (fine.epochs, fine.iters_per_epoch, fine.eval_every) == (80, 400, 1)
    for cls in (PretrainCfg, FinetuneCfg):
        cfg = load_config(cls, None, ["lr=1e-3", "epochs=4", "iters_per_epoch=5", "optimizer=sgd", "momentum=0.8"])
        assert (cfg.lr, cfg.epochs, cfg.iters_per_epoch, cfg.optimizer, cfg.momentum) == (1e-3, 4, 5, "sgd", 0.8)
        with pytest.raises(ConfigError, match="optimizer must be one of 'adam', 'sgd'"):
            cls(optimizer="lion")
        with pytest.raises(ConfigError, match="epochs must be at least 1"):
            cls(epochs=0)


def test_presets_are_the_data_file():
    """``.smoke()`` / ``.embedded()`` are the defaults with ``corelib/presets.yaml``'s fields, nothing else."""
    assert FinetuneCfg.smoke() == FinetuneCfg().with_overrides(preset("finetune", "smoke"))
    assert StyleCfg.domain_aware() == StyleCfg().with_overrides(preset("style", "domain_aware"))
    assert DataCfg.smoke() == DataCfg(**preset("data", "smoke"))
    person = FinetuneCfg.embedded("person")
    assert person == FinetuneCfg().with_overrides({**preset("finetune", "embedded"), "epochs": 4,
                                                   "cluster.num_clusters": 160, "augment.height": 64,
                                                   "augment.width": 32})
    assert PretrainCfg.embedded("vehicle", smoke=True) == PretrainCfg.smoke(augment={"height": 64, "width": 64})
    assert StyleCfg.embedded("vehicle", smoke=True) == StyleCfg.smoke()  # the style models keep the smoke size
    assert (StyleCfg.embedded("vehicle").height, StyleCfg.embedded("vehicle").lambda_identity) == (64, 0.0)
    with pytest.raises(UnknownNameError, match="no preset finetune.tiny in .*presets.yaml; finetune presets: smoke, "):
        preset("finetune", "tiny")
