"""Config dataclasses: YAML files and command-line overrides, with errors that name the fix."""

from __future__ import annotations

import pytest

from corelib.config import EMBEDDED_PAIRS, FinetuneCfg, PretrainCfg, load_config, save_config
from corelib.errors import ConfigError, UnknownNameError


def test_yaml_and_overrides_round_trip(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 40\nmilestones: [10, 20]\n")
    cfg = load_config(PretrainCfg, path, ["lr=1e-3", "device=cpu", "channels_last=false"])
    assert cfg.epochs == 40 and cfg.milestones == (10, 20) and cfg.lr == 0.001
    assert cfg.device == "cpu" and cfg.channels_last is False
    assert cfg.depth == PretrainCfg().depth  # untouched fields keep the base's value
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(PretrainCfg, tmp_path / "again.yaml") == cfg


def test_overrides_apply_on_top_of_a_base():
    cfg = load_config(FinetuneCfg, None, {"epochs": 3}, base=FinetuneCfg.smoke())
    assert cfg == FinetuneCfg.smoke(epochs=3)


@pytest.mark.parametrize("override, message", [
    ("epoch=3", "no field 'epoch'; valid fields: depth"),
    ("epochs=three", "takes an int"),
    ("channels_last=1", "takes true or false"),
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
    assert pre.depth == fine.depth == 18 and (pre.height, pre.width) == (fine.height, fine.width)
    assert pre.weights == "none"  # no ImageNet download on the embedded data
    smoke = FinetuneCfg.embedded(pair, smoke=True)
    assert smoke.epochs <= 2 and (smoke.height, smoke.width) == (fine.height, fine.width)
    with pytest.raises(UnknownNameError, match="valid pairs"):
        PretrainCfg.embedded("bicycle")
