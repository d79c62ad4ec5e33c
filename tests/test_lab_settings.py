"""The JupyterLab settings ``make lab`` installs (corelib.notebooks.install_lab_settings)."""

from __future__ import annotations

import json

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
    assert merged[PLUGIN] == {"saveState": True, "x": 1}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_broken_settings_file_is_named_and_left_alone(tmp_path, text):
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(InvalidInputError, match="overrides.json"):
        install_lab_settings(tmp_path)
    assert path.read_text() == text
