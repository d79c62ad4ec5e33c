"""The JupyterLab settings ``make lab`` installs (corelib.notebooks.install_lab_settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corelib.errors import InvalidInputError
from corelib.notebooks import LAB_SETTINGS, install_lab_settings

PLUGIN = "@jupyter-widgets/jupyterlab-manager:plugin"


def test_widget_state_is_saved_with_notebooks(tmp_path):
    path = install_lab_settings(tmp_path)
    assert path == tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert json.loads(path.read_text()) == LAB_SETTINGS and LAB_SETTINGS[PLUGIN]["saveState"] is True
    before = path.stat().st_mtime_ns
    install_lab_settings(tmp_path)  # already there: the file is not rewritten
    assert path.stat().st_mtime_ns == before


def test_the_users_own_settings_are_kept(tmp_path):
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True)
    mine = {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}, PLUGIN: {"saveState": False, "x": 1}}
    path.write_text(json.dumps(mine))
    merged = json.loads(install_lab_settings(tmp_path).read_text())
    assert merged["@jupyterlab/apputils-extension:themes"] == mine["@jupyterlab/apputils-extension:themes"]
    assert merged[PLUGIN] == {"saveState": False, "x": 1}  # the user's explicit choice is kept (issue 33)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_broken_settings_file_is_named_and_left_alone(tmp_path, text):
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(InvalidInputError, match="overrides.json"):
        install_lab_settings(tmp_path)
    assert path.read_text() == text


def _schema(plugin: str) -> dict:
    """The settings schema JupyterLab ships for ``plugin`` ("<package>:<name>") in this environment."""
    import sys

    package, name = plugin.split(":")
    share = Path(sys.prefix) / "share" / "jupyter"
    # the lab's own plugins, then those of a prebuilt extension (ipywidgets' manager)
    candidates = [share / "lab" / "schemas" / package / f"{name}.json",
                  share / "labextensions" / package / "schemas" / package / f"{name}.json"]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    raise AssertionError(f"JupyterLab has no settings schema for {plugin!r} (looked at {candidates}): is the id right?")


def _allowed(spec: dict, value) -> bool:
    if "oneOf" in spec:
        return any(option.get("const") == value for option in spec["oneOf"])
    if "enum" in spec:
        return value in spec["enum"]
    return isinstance(value, {"boolean": bool, "string": str, "number": (int, float)}[spec["type"]])


@pytest.mark.parametrize("plugin", sorted(LAB_SETTINGS))
def test_every_setting_is_one_the_installed_jupyterlab_knows(plugin):
    # a misspelt id or value is ignored by the lab without a word: check them against its own schemas
    properties = _schema(plugin)["properties"]
    for key, value in LAB_SETTINGS[plugin].items():
        assert key in properties, f"{plugin} has no setting {key!r} (it has {sorted(properties)})"
        assert _allowed(properties[key], value), f"{plugin}:{key} does not accept {value!r}: {properties[key]}"
