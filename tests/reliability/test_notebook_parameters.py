"""Notebook parameters are checked against the chapters' own defaults, and ``--chapters`` entries
name chapters exactly, before any chapter runs (``corelib run-notebooks`` and ``run_notebooks``).

No chapter is executed: papermill's ``execute_notebook`` is replaced by a recorder, so each test
sees exactly what would have reached the chapters (or that nothing did).
"""

from __future__ import annotations

import json

import pytest

from corelib.cli import main


@pytest.fixture
def executed(monkeypatch):
    """The ``(chapter file name, parameters)`` papermill was asked to execute, in order."""
    import papermill

    import corelib.notebooks as nb

    calls = []

    def fake_execute(input_path, output_path, *, parameters, **_):
        calls.append((input_path.rsplit("/", 1)[-1], dict(parameters)))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(nb, "pick_kernel", lambda: "python3")  # no kernelspec lookup: nothing runs
    return calls


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_smoke_false_on_the_command_line_reaches_the_chapter_as_the_bool_false(tmp_path, executed, capsys):
    assert main(["run-notebooks", "--run-dir", str(tmp_path / "run"), "--chapters", "00", "-p", "SMOKE", "False"]) == 0
    assert [name for name, _ in executed] == ["00_data_tour.ipynb"]
    assert executed[0][1]["SMOKE"] is False  # not the truthy text "False"


def test_a_bool_parameter_refuses_text_that_is_no_bool_naming_it_and_its_chapter(tmp_path, executed, capsys):
    code = main(["run-notebooks", "--run-dir", str(tmp_path / "run"), "--chapters", "00", "-p", "SMOKE", "maybe"])
    assert code == 2
    err = _one_line_error(capsys)
    assert "SMOKE" in err and "00_data_tour" in err and "'maybe'" in err and "True or False" in err
    assert executed == [] and not (tmp_path / "run").exists()


def test_seed_abc_is_refused_naming_seed_before_any_chapter_runs(tmp_path, executed, capsys):
    code = main(["run-notebooks", "--run-dir", str(tmp_path / "run"), "--chapters", "00", "02",
                 "-p", "SEED", '"abc"'])
    assert code == 2
    err = _one_line_error(capsys)
    assert "parameter SEED of chapter 00_data_tour is an int" in err and "whole number" in err
    assert executed == [] and not (tmp_path / "run").exists()


def test_typed_values_of_the_python_api_are_checked_not_passed_on(tmp_path, executed):
    from corelib.errors import ConfigError
    from corelib.notebooks import run_notebooks

    with pytest.raises(ConfigError, match="parameter SMOKE of chapter 02_pretraining is a bool.*got 'False'"):
        run_notebooks(tmp_path / "run", parameters={"SMOKE": "False"}, chapters=["02"], progress=False)
    with pytest.raises(ConfigError, match="parameter SEED of chapter 02_pretraining is an int.*got True"):
        run_notebooks(tmp_path / "run", parameters={"SEED": True}, chapters=["02"], progress=False)
    assert executed == [] and not (tmp_path / "run").exists()


def _tiny_chapter(folder, name: str, parameters: str) -> None:
    """A chapter with only a parameters cell (never executed here)."""
    cell = {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": parameters,
            "outputs": [], "execution_count": None}
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = {"cells": [cell], "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    (folder / name).write_text(json.dumps(nb))


def test_a_parameter_two_chapters_type_differently_is_checked_against_each(tmp_path, executed):
    from corelib.errors import ConfigError
    from corelib.notebooks import run_notebooks

    chapters = tmp_path / "notebooks"
    chapters.mkdir()
    _tiny_chapter(chapters, "00_counts.ipynb", "SMOKE: bool = False\nLIMIT: int = 3\n")
    _tiny_chapter(chapters, "01_labels.ipynb", "SMOKE: bool = False\nLIMIT: str = 'all'\n")
    with pytest.raises(ConfigError, match="parameter LIMIT of chapter 01_labels is a str"):
        run_notebooks(tmp_path / "run", parameters={"LIMIT": 5}, notebooks_dir=chapters, progress=False)
    assert executed == []
    run_notebooks(tmp_path / "run", parameters={"LIMIT": 5}, chapters=["00"], notebooks_dir=chapters, progress=False)
    assert executed == [("00_counts.ipynb", {"RUN_DIR": str((tmp_path / "run").resolve()), "LIMIT": 5})]


def test_chapters_entries_that_name_no_chapter_are_refused_with_the_list(tmp_path, executed, capsys):
    code = main(["run-notebooks", "--run-dir", str(tmp_path / "run"), "--chapters", "02", "3O"])
    assert code == 2
    err = _one_line_error(capsys)
    assert "no chapter is named '3O'" in err and "02_pretraining" in err and "08_results" in err
    assert main(["run-notebooks", "--run-dir", str(tmp_path / "run"), "--chapters", "2"]) == 2  # a prefix is no name
    assert "no chapter is named '2'" in _one_line_error(capsys)
    assert executed == [] and not (tmp_path / "run").exists()
