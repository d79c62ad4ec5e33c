"""Inputs that used to end in a raw traceback, or in nothing at all, now end in one line that names the
thing and the fix (issue "Nothing lost, second pass", Messages):

- a symbolic link loop in a dataset root or inside a split (``a -> b``, ``b -> a``; the root itself):
  ``UnsafePathError`` / ``DatasetRootError`` naming the link, for the Market-1501 layout, the VeRi
  layout, the ``custom`` layouts and ``corelib verify``; a link back to a parent folder is never
  followed round;
- a ``metrics.jsonl`` whose last line a killed run left half written: ``--resume`` keeps the
  complete lines and says on stderr what it dropped, the results tables skip it with a warning, and
  a damaged line in the middle is an error naming the file and the line;
- a loader option the loader does not take, given through ``build_dataset``, a manifest's
  ``loader_kwargs``, a pair's side or the command line: the same line, with the closest option;
- a misspelt field inside ``PRETRAIN_OVERRIDES`` / ``FINETUNE_OVERRIDES`` / chapter 07's budgets and
  ``RECIPE_OVERRIDES``, or in a pair of ``DATASETS``: refused before the first chapter runs, naming
  the parameter, the field and the closest valid one, with nothing written (also for sweep points).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from corelib.cli import main
from corelib.data.dataset import build_dataset
from corelib.errors import CheckpointError, ConfigError, DatasetRootError, ManifestError, UnsafePathError

# --------------------------------------------------------------------------------------------
# symbolic link loops


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), (90, 40, 200)).save(path)
    return path


def _copy(loader: str, folder: Path) -> tuple[Path, str]:
    """A complete tiny copy in ``folder`` for ``loader``: ``(its root, its query split folder name)``."""
    if loader == "market1501":
        root = folder / "Market-1501-v15.09.15"
        for split, name in (("bounding_box_train", "0002_c1s1_000451_03.jpg"), ("query", "0002_c3s1_000451_03.jpg"),
                            ("bounding_box_test", "0002_c2s1_000451_03.jpg")):
            _image(root / split / name)
        return root, "query"
    if loader == "veri776":
        root = folder / "VeRi"
        for split, name in (("image_train", "0001_c001_00016450_0.jpg"), ("image_query", "0002_c002_00030600_0.jpg"),
                            ("image_test", "0002_c003_00084280_0.jpg")):
            _image(root / split / name)
        return root, "image_query"
    root = folder / "mine"
    for split, pid in (("train", "0001"), ("query", "0002"), ("gallery", "0002")):
        _image(root / split / pid / f"{pid}_c1_x.jpg")
    return root, "query"


LOADERS = ["market1501", "veri776", "custom"]


@pytest.mark.parametrize("loader", LOADERS)
def test_two_images_linked_to_each_other_are_named_not_a_raw_eloop(tmp_path, snapshot, loader):
    """Before: OSError: [Errno 40] Too many levels of symbolic links, a traceback from os.scandir."""
    root, query = _copy(loader, tmp_path)
    images = root / query / ("0002" if loader == "custom" else "")
    os.symlink("b.jpg", images / "a.jpg")
    os.symlink("a.jpg", images / "b.jpg")
    before = snapshot(tmp_path)
    with pytest.raises(UnsafePathError) as info:
        build_dataset(loader, root)
    message = str(info.value)
    assert "\n" not in message and "symbolic link loop" in message
    assert f"{images / 'a.jpg'} is" in message or f"{images / 'b.jpg'} is" in message
    assert "Fix: remove the link" in message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("loader", LOADERS)
def test_a_split_folder_that_is_a_link_loop_is_named_not_reported_missing(tmp_path, snapshot, loader):
    """Before: 'no dataset found ... (missing in ROOT: query)', though the entry is there, as a loop."""
    root, query = _copy(loader, tmp_path)
    shutil.rmtree(root / query)
    os.symlink(query, root / query)  # query -> query
    before = snapshot(tmp_path)
    with pytest.raises(UnsafePathError, match=rf"^{root / query} is a symbolic link loop \(the {loader} layout entry "
                                              rf"'{query}'\).*Fix: remove the link"):
        build_dataset(loader, root)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("loader", LOADERS)
def test_a_dataset_root_that_is_a_link_loop_is_named_not_reported_missing(tmp_path, snapshot, loader):
    """Before: 'no dataset found at ROOT (ROOT does not exist)', though ROOT is there, as a loop."""
    os.symlink("r2", tmp_path / "r1")
    os.symlink("r1", tmp_path / "r2")
    before = snapshot(tmp_path)
    with pytest.raises(DatasetRootError) as info:
        build_dataset(loader, tmp_path / "r1")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'r1'} is a symbolic link loop (the {loader} dataset root)")
    assert "\n" not in message and "Fix: remove the link" in message
    assert snapshot(tmp_path) == before


def test_custom_layouts_name_a_looping_pid_folder_and_a_looping_csv_row(tmp_path):
    # a pid folder that is a loop used to be skipped without a word (is_dir() is False for a loop)
    root, _ = _copy("custom", tmp_path / "tree")
    os.symlink("0009", root / "query" / "0009")
    with pytest.raises(UnsafePathError, match=rf"{root / 'query' / '0009'} is a symbolic link loop \(a pid folder"):
        build_dataset("custom", root)
    # a CSV row naming a loop: the file and the line, then the link
    folder = tmp_path / "csv"
    for name in ("a.jpg", "g.jpg"):
        _image(folder / "images" / name)
    os.symlink("q2.jpg", folder / "images" / "q.jpg")
    os.symlink("q.jpg", folder / "images" / "q2.jpg")
    (folder / "dataset.csv").write_text("split,path,pid,camid\ntrain,images/a.jpg,1,0\nquery,images/q.jpg,3,0\n"
                                        "gallery,images/g.jpg,3,1\n")
    with pytest.raises(UnsafePathError, match=r"symbolic link loop \(.*dataset.csv, line 3: path 'images/q.jpg'\)"):
        build_dataset("custom", folder)


@pytest.mark.parametrize("loader", LOADERS)
def test_a_link_back_to_a_parent_folder_is_never_followed_round(tmp_path, loader):
    """``loop -> .`` and ``up.jpg -> ..`` inside a split: the scan is flat and finishes (the custom
    layout reads a non-integer folder as a misnamed pid folder, as before)."""
    root, query = _copy(loader, tmp_path)
    os.symlink(".", root / query / "loop")
    os.symlink("..", root / query / "up.jpg")
    if loader == "custom":
        with pytest.raises(DatasetRootError, match="pid folders must be named by an integer id"):
            build_dataset(loader, root)
    else:
        assert len(build_dataset(loader, root).query) == 1


def _synthetic_copy(synthetic_small, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_small["market_like"], copy, symlinks=True)
    return copy


def test_verify_names_a_link_loop_inside_a_split(synthetic_small, tmp_path, snapshot, one_line_error):
    copy = _synthetic_copy(synthetic_small, tmp_path)
    os.symlink("b.jpg", copy / "query" / "a.jpg")
    os.symlink("a.jpg", copy / "query" / "b.jpg")
    before = snapshot(tmp_path)
    assert main(["verify", str(copy / "manifest.yaml"), str(copy), "--quiet"]) == 2
    line = one_line_error()
    assert line.startswith("corelib verify: ") and "symbolic link loop" in line and "Fix: remove the link" in line
    assert str(copy / "query" / "a.jpg") in line or str(copy / "query" / "b.jpg") in line
    assert snapshot(tmp_path) == before


def test_verify_names_a_root_that_is_a_link_loop(synthetic_small, tmp_path, snapshot, one_line_error):
    """Before: a report 'dataset folder not found: neither ROOT nor ... holds any of ...' (exit 1)."""
    copy = _synthetic_copy(synthetic_small, tmp_path)
    os.symlink("r2", tmp_path / "r1")
    os.symlink("r1", tmp_path / "r2")
    before = snapshot(tmp_path)
    assert main(["verify", str(copy / "manifest.yaml"), str(tmp_path / "r1"), "--quiet"]) == 2
    line = one_line_error()
    assert line.startswith(f"corelib verify: {tmp_path / 'r1'} is a symbolic link loop") and "remove the link" in line
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# a metrics.jsonl torn by a kill while appending


def _pretrain_argv(root: str, run: Path, *extra: str) -> list[str]:
    return ["pretrain", "--source", "market_like", root, "--scale", "0.05", "--smoke", "-o", "runtime.device=cpu",
            "--run-dir", str(run), *extra]


@pytest.fixture(scope="module")
def one_epoch_run(synthetic_small, tmp_path_factory):
    """A finished one-epoch smoke pre-training run, made through the command line: ``(data root, run)``."""
    root = str(synthetic_small["market_like"].parent)
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    assert main(_pretrain_argv(root, run, "-o", "epochs=1")) == 0
    return root, run


def _torn_copy(one_epoch_run, tmp_path) -> tuple[str, Path, bytes]:
    """A copy of the run killed while appending epoch 2's line: ``(data root, run, the complete line)``."""
    root, run = one_epoch_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    log = copy / "pretrain" / "metrics.jsonl"
    complete = log.read_bytes()
    second = json.dumps({"epoch": 2, "lr": 0.00035, "loss": 5.19, "source_mAP": 0.4})
    log.write_bytes(complete + second[: len(second) // 2].encode())  # no newline: the write never finished
    return root, copy, complete


@pytest.mark.slow
def test_resume_drops_a_torn_last_line_says_so_and_continues(one_epoch_run, tmp_path, capsys):
    """Before: json.decoder.JSONDecodeError: Expecting ',' delimiter, a traceback from EpochLog."""
    root, run, complete = _torn_copy(one_epoch_run, tmp_path)
    capsys.readouterr()
    assert main(_pretrain_argv(root, run, "-o", "epochs=2", "--resume")) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "metrics.jsonl" in line]
    assert len(notes) == 1, notes
    assert notes[0].startswith(f"corelib: {run / 'pretrain' / 'metrics.jsonl'}: its last line (line 2, ")
    assert "'{\"epoch\": 2" in notes[0] and "cut short" in notes[0] and "1 complete epoch record(s)" in notes[0]
    text = (run / "pretrain" / "metrics.jsonl").read_text()
    assert text.startswith(complete.decode()) and text.endswith("\n")  # the complete line kept as it was
    assert [json.loads(line)["epoch"] for line in text.splitlines()] == [1, 2]


@pytest.mark.slow
def test_resume_refuses_a_damaged_line_before_the_last_naming_the_file_and_line(one_epoch_run, tmp_path, snapshot,
                                                                             one_line_error):
    root, run = one_epoch_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    log = copy / "pretrain" / "metrics.jsonl"
    complete = log.read_text()
    log.write_text(complete[:25] + "\n" + complete)  # line 1 cut, line 2 whole: damage, not a kill
    before = snapshot(copy)
    assert main(_pretrain_argv(root, copy, "-o", "epochs=2", "--resume")) == 2
    line = one_line_error()
    assert line.startswith(f"corelib pretrain: {log}, line 1: ") and "is not a JSON record of an epoch" in line
    assert "Fix: restore the file" in line
    assert snapshot(copy) == before  # config.yaml not rewritten, the log not cut


def _pair_run(one_epoch_run, tmp_path, torn: str) -> tuple[Path, Path]:
    """``RUN_DIR/person/pretrain`` from the one-epoch run, its log then ending in ``torn``."""
    _, run = one_epoch_run
    run_dir = tmp_path / "runs" / "r"
    shutil.copytree(run / "pretrain", run_dir / "person" / "pretrain")
    log = run_dir / "person" / "pretrain" / "metrics.jsonl"
    log.write_bytes(log.read_bytes() + torn.encode())
    return run_dir, log


@pytest.mark.slow
def test_results_tables_skip_a_torn_last_line_with_a_warning(one_epoch_run, tmp_path, snapshot):
    from corelib.results import collect_results

    run_dir, log = _pair_run(one_epoch_run, tmp_path, '{"epoch": 2, "source_m')
    before = snapshot(run_dir)
    with pytest.warns(UserWarning, match=r"metrics.jsonl: its last line \(line 2, .*cut short .* is skipped"):
        table = collect_results([run_dir])
    assert list(table["epoch"]) == [1] and list(table["stage"]) == ["source"]
    assert snapshot(run_dir) == before  # a reader never rewrites the log


@pytest.mark.slow
def test_results_tables_refuse_a_damaged_middle_line_naming_the_file_and_line(one_epoch_run, tmp_path):
    from corelib.results import collect_results

    run_dir, log = _pair_run(one_epoch_run, tmp_path, '{"epoch": 2, "source_m\n{"epoch": 3}\n')
    with pytest.raises(CheckpointError, match=rf"^{log}, line 2: .*is not a JSON record of an epoch"):
        collect_results([run_dir])


@pytest.mark.slow
def test_chapter_07_readers_skip_a_torn_last_line_too(one_epoch_run, tmp_path):
    from corelib.baselines import read_baselines, transfer_table

    _, run = one_epoch_run
    pair_dir = tmp_path / "person"
    folder = pair_dir / "baselines" / "corereid_v2" / "finetune"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "target_mAP": 0.5, "target_rank1": 0.6}\n{"epoch": 2, "tar')
    shutil.copytree(run / "pretrain", pair_dir / "pretrain")
    (pair_dir / "pretrain" / "metrics.jsonl").write_bytes((run / "pretrain" / "metrics.jsonl").read_bytes() + b'{"ep')
    with pytest.warns(UserWarning, match="cut short"):
        runs = read_baselines(pair_dir)
    assert runs["corereid_v2"].adapted_mAP == 0.5
    with pytest.warns(UserWarning, match="cut short"):
        rows = transfer_table({"person": runs}, {"person": pair_dir})
    assert rows[0]["source mAP"] is not None


# --------------------------------------------------------------------------------------------
# loader options: one check for every way in


def test_build_dataset_refuses_an_option_its_loader_does_not_take(synthetic_small, tmp_path, snapshot):
    """Before: build_dataset("market1501", root, subsett="x") loaded the copy and dropped the option."""
    root = synthetic_small["market_like"]
    before = snapshot(root)
    with pytest.raises(ConfigError, match=r"^the market1501 loader has no option 'subsett'; it takes the dataset root "
                                          r"and the loader's options \(none for market1501\)$"):
        build_dataset("market1501", root, subsett="x")
    with pytest.raises(ConfigError, match=r"^the vehicleid loader has no option 'test_sise'; .*loader's options "
                                          r"\(test_size, draw_seed\); did you mean 'test_size'\?$"):
        build_dataset("vehicleid", tmp_path / "nowhere", test_sise=1600)  # refused before the root is looked at
    assert snapshot(root) == before


def test_every_way_in_refuses_a_misspelt_loader_option_with_the_same_line(synthetic_small, tmp_path, one_line_error):
    from corelib.data.manifests import load_manifest
    from corelib.pairs import define_pair

    core = "the cuhk03np loader has no option 'subsett'"
    hint = "the loader's options (subset); did you mean 'subset'?"
    # the Python API
    with pytest.raises(ConfigError) as api:
        build_dataset("cuhk03np", tmp_path, subsett="labeled")
    # a manifest's loader_kwargs (a copy of the committed one, misspelt)
    manifest = tmp_path / "mine.yaml"
    manifest.write_text(json.dumps({**load_manifest("cuhk03np_labeled"), "loader_kwargs": {"subsett": "labeled"}}))
    with pytest.raises(ManifestError) as from_manifest:
        load_manifest(manifest)
    # a pair of DATASETS
    with pytest.raises(ConfigError) as pair:
        define_pair("m2c", {"source": "market1501", "target": {"name": "cuhk03np", "subsett": "labeled"}})
    for error, where in ((api, ""), (from_manifest, f"{manifest}: loader_kwargs: "),
                         (pair, "DATASETS['m2c']['target']: ")):
        assert str(error.value).startswith(where + core) and str(error.value).endswith(hint), str(error.value)
    # the command line: verify with the manifest, a training command with the side
    assert main(["verify", str(manifest), str(tmp_path), "--quiet"]) == 2
    line = one_line_error()
    assert line.startswith(f"corelib verify: {manifest}: loader_kwargs: {core}") and line.endswith(hint)
    run = tmp_path / "run"
    assert main(["pretrain", "--source", "cuhk03np", str(tmp_path), "subsett=labeled", "--run-dir", str(run)]) == 2
    line = one_line_error()
    assert core in line and line.endswith(hint) and not run.exists()


# --------------------------------------------------------------------------------------------
# every chapter's parameters resolved before the first chapter runs


@pytest.fixture
def executed(monkeypatch):
    """The chapters papermill was asked to execute (none should be)."""
    import papermill

    import corelib.notebooks as nb

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda input_path, *a, **k: calls.append(input_path))
    monkeypatch.setattr(nb, "pick_kernel", lambda: "python3")
    return calls


M2C = {"source": "market1501", "target": "cuhk03np"}

MISSPELT = [
    # (parameter and its JSON text, what the line names: the parameter and chapter, the field, the closest)
    ([("PRETRAIN_OVERRIDES", '{"optim.lrr": 0.1}')], "parameter PRETRAIN_OVERRIDES of chapter 02_pretraining",
     "no field 'optim'; did you mean 'optimizer'?"),
    ([("PRETRAIN_OVERRIDES", '{"lrr": 0.1}')], "parameter PRETRAIN_OVERRIDES of chapter 02_pretraining",
     "no field 'lrr'; did you mean 'lr'?"),
    ([("FINETUNE_OVERRIDES", '{"cluster": {"num_clusterz": 6}}')], "parameter FINETUNE_OVERRIDES of chapter 03_finetuning",
     "FinetuneCfg.cluster has no field 'num_clusterz'; did you mean 'num_clusters'?"),
    ([("RECIPE_OVERRIDES", '{"cluster_contrast": {"loss.contrast.hardd": true}}')],
     "parameter RECIPE_OVERRIDES of chapter 07_baselines", "has no field 'hardd'; did you mean 'hard'?"),
    ([("BUDGET", '{"epoch": 2}')], "parameter BUDGET of chapter 07_baselines", "no field 'epoch'; did you mean 'epochs'?"),
    ([("PAIRS", '["m2c"]'), ("DATASETS", json.dumps({"m2c": {**M2C, "finetune": {"epoch": 2}}}))],
     "parameters PAIRS / DATASETS of chapter 00_data_tour", "no field 'epoch'; did you mean 'epochs'?"),
    ([("PAIRS", '["m2c"]'), ("DATASETS", json.dumps({"m2c": {**M2C, "target": {"name": "cuhk03np", "subsett": 1}}}))],
     "parameters PAIRS / DATASETS of chapter 00_data_tour", "no option 'subsett'"),
]


@pytest.mark.parametrize("given, names, field", MISSPELT, ids=["optim.lrr", "lrr", "finetune-cluster", "recipe-overrides",
                                                               "budget", "datasets-pair-field", "datasets-loader-option"])
def test_a_misspelt_field_inside_a_parameter_is_refused_before_the_first_chapter(tmp_path, executed, one_line_error,
                                                                                 given, names, field):
    """Before: chapters 00 and 01 ran (minutes; with real data, hours), then the chapter using the
    parameter stopped with the field's error."""
    run = tmp_path / "run"
    argv = ["run-notebooks", "--run-dir", str(run)]  # the full recipes: with SMOKE, chapter 07 ignores BUDGET
    for name, text in given:
        argv += ["-p", name, text]
    assert main(argv) == 2
    line = one_line_error()
    assert line.startswith(f"corelib run-notebooks: {names}") and field in line
    assert executed == [] and not run.exists()  # no executed notebook, no params/ files


def test_the_python_api_and_a_chapter_subset_check_the_same(tmp_path, executed):
    from corelib.notebooks import run_notebooks

    # the value reaches no selected chapter: still checked against the chapter that declares it
    with pytest.raises(ConfigError, match=r"parameter PRETRAIN_OVERRIDES of chapter 02_pretraining \(pair person\): "
                                          r"PretrainCfg has no field 'lrr'; did you mean 'lr'\?"):
        run_notebooks(tmp_path / "run", parameters={"PRETRAIN_OVERRIDES": {"lrr": 0.1}}, chapters=["00"])
    assert executed == [] and not (tmp_path / "run").exists()
    # correct fields pass, and the chapters run as before
    run_notebooks(tmp_path / "run", parameters={"SMOKE": True, "PRETRAIN_OVERRIDES": {"epochs": 1}},
                  chapters=["00", "02"], progress=False)
    assert [Path(p).name for p in executed] == ["00_data_tour.ipynb", "02_pretraining.ipynb"]


def test_a_sweep_point_with_a_misspelt_field_is_refused_before_any_point_runs(tmp_path, executed, one_line_error):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text('chapters: ["02", "03"]\nparameters: {PAIRS: [person]}\n'
                     'grid: {FINETUNE_OVERRIDES.cluster.num_clusterz: [6, 8]}\n')
    root = tmp_path / "sweeps"
    assert main(["sweep", str(sweep), "--root", str(root), "--smoke"]) == 2
    line = one_line_error()
    assert line.startswith("corelib sweep: sweep point num_clusterz=6: parameter FINETUNE_OVERRIDES of chapter "
                           "03_finetuning (pair person): FinetuneCfg.cluster has no field 'num_clusterz'; did you mean "
                           "'num_clusters'?")
    assert executed == [] and not root.exists()
