"""Sweeps run every point, the lab settings merge, files follow the umask, and the operating system's
refusals of a write are one line (issue 33, "Nothing lost, second pass").

No chapter is executed: the sweep cases replace ``corelib.notebooks.run_notebooks`` with a stand-in
that fails for the point it is told to. A full disk and a read-only folder are simulated (the tests
run as root, whom chmod does not stop): ``torch.save`` or ``os.open`` / ``os.mkdir`` raise the
OSError the kernel would.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from corelib.cli import main
from corelib.errors import CheckpointError, NotOwnedError, SweepFailed, WriteError

# -- sweeps: every point runs, each failure is recorded ------------------------------------------------


@pytest.fixture
def point_runs(monkeypatch):
    """The points ``run_notebooks`` was called for; a point whose num_clusters is in ``failing`` fails
    in chapter 03 as a real chapter does (its executed copy left in RUN_DIR/notebooks/)."""
    import corelib.notebooks as nb

    calls, failing = [], set()

    def fake_run_notebooks(run_dir, *, parameters, chapters, **_):
        clusters = parameters["FINETUNE_OVERRIDES"]["cluster.num_clusters"]
        calls.append(clusters)
        if clusters in failing:
            executed = Path(run_dir).resolve() / "notebooks" / "03_finetuning.ipynb"
            executed.parent.mkdir(parents=True, exist_ok=True)
            executed.write_text("{}")
            raise nb.NotebookFailed(f"03_finetuning.ipynb failed in cell 7 (ValueError: diverged at {clusters}); "
                                    f"the executed copy with the traceback is {executed}", executed=executed)
        return [{"chapter": "03_finetuning", "seconds": 0.1, "executed": "x"}]

    monkeypatch.setattr(nb, "run_notebooks", fake_run_notebooks)
    return calls, failing


def _sweep_file(tmp_path: Path) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text('chapters: ["03"]\nparameters: {PAIRS: [person]}\n'
                    "grid: {FINETUNE_OVERRIDES.cluster.num_clusters: [6, 7, 8]}\n")
    return str(path)


def test_a_failing_point_does_not_stop_the_sweep_and_is_recorded(tmp_path, point_runs, capsys, snapshot):
    calls, failing = point_runs
    failing.add(7)
    root = tmp_path / "sweeps"
    assert main(["sweep", _sweep_file(tmp_path), "--root", str(root)]) == 1
    assert calls == [6, 7, 8]  # the point after the failure ran
    out = capsys.readouterr().out
    assert "1 of 3 point(s) failed" in out and "num_clusters=7: NotebookFailed: 03_finetuning.ipynb failed" in out
    failed = root / "num_clusters=7"
    record = json.loads((failed / "sweep_failed.json").read_text())
    assert record["point"] == {"FINETUNE_OVERRIDES.cluster.num_clusters": 7}
    assert "diverged at 7" in record["error"] and "NotebookFailed" in record["traceback"]
    assert record["executed_notebook"] == str(failed.resolve() / "notebooks" / "03_finetuning.ipynb")
    assert record["executed_notebook"] in out
    assert not (failed / "sweep_done.json").exists()  # not finished: the next run retries it
    for ok in ("num_clusters=6", "num_clusters=8"):
        assert (root / ok / "sweep_done.json").is_file() and not (root / ok / "sweep_failed.json").exists()

    failing.clear()  # the cause fixed: the same command retries the failed point only
    before = snapshot(root)
    assert main(["sweep", _sweep_file(tmp_path), "--root", str(root)]) == 0
    assert calls == [6, 7, 8, 7]
    after = snapshot(root)
    assert {k.split("/")[0] for k in set(before) ^ set(after) | {k for k in before if before[k] != after.get(k)}} == {
        "num_clusters=7"}  # the finished points are untouched
    assert "num_clusters=7: failed earlier" in capsys.readouterr().out
    assert (failed / "sweep_done.json").is_file() and not (failed / "sweep_failed.json").exists()


def test_a_failed_sweep_says_so_on_stderr_in_one_line(tmp_path, point_runs, one_line_error):
    point_runs[1].update({6, 8})
    assert main(["sweep", _sweep_file(tmp_path), "--root", str(tmp_path / "sweeps")]) == 1
    err = one_line_error()
    assert err.startswith("corelib sweep: 2 of 3 sweep point(s) failed (num_clusters=6, num_clusters=8)")
    assert "sweep_failed.json" in err and "failed ones retried" in err


def test_fail_fast_stops_at_the_first_failing_point(tmp_path, point_runs, one_line_error):
    calls, failing = point_runs
    failing.add(6)
    root = tmp_path / "sweeps"
    assert main(["sweep", _sweep_file(tmp_path), "--root", str(root), "--fail-fast"]) == 2
    assert calls == [6] and "03_finetuning.ipynb failed in cell 7" in one_line_error()
    assert (root / "num_clusters=6" / "sweep_failed.json").is_file()  # recorded all the same
    assert sorted(p.name for p in root.iterdir()) == ["num_clusters=6"]  # later points never started


def test_the_api_runs_every_point_then_raises_with_every_record(tmp_path, point_runs):
    from corelib.sweeps import run_sweep

    calls, failing = point_runs
    failing.add(6)
    grid = {"FINETUNE_OVERRIDES.cluster.num_clusters": [6, 7]}
    with pytest.raises(SweepFailed, match="1 of 2 sweep point") as e:
        run_sweep(tmp_path, grid, parameters={"SMOKE": True}, chapters=["03"])
    assert calls == [6, 7]
    first, second = e.value.records
    assert first["failed"]["executed_notebook"].endswith("num_clusters=6/notebooks/03_finetuning.ipynb")
    assert first["failed"]["record"] == str(tmp_path / "num_clusters=6" / "sweep_failed.json")
    assert second["ran"] and second["failed"] is None


def test_a_keyboard_interrupt_still_stops_the_sweep_at_once(tmp_path, monkeypatch):
    import corelib.notebooks as nb
    from corelib.sweeps import run_sweep

    calls = []

    def interrupted(run_dir, **_):
        calls.append(run_dir.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(nb, "run_notebooks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tmp_path, {"FINETUNE_OVERRIDES.cluster.num_clusters": [6, 7]}, parameters={"SMOKE": True},
                  chapters=["03"])
    assert calls == ["num_clusters=6"] and not (tmp_path / "num_clusters=6" / "sweep_failed.json").exists()


# -- the lab settings merge ------------------------------------------------------------------------------

NEWS = "@jupyterlab/apputils-extension:notification"
WIDGETS = "@jupyter-widgets/jupyterlab-manager:plugin"


def _overrides(prefix: Path) -> Path:
    return prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def test_the_lab_settings_keep_every_choice_of_the_user_and_add_the_missing_ones(tmp_path, capsys, snapshot):
    from corelib.notebooks import install_lab_settings

    path = _overrides(tmp_path)
    path.parent.mkdir(parents=True)
    mine = {WIDGETS: {"saveState": False}, NEWS: {"fetchNews": "true"}, "x:y": {"z": 1}}
    path.write_text(json.dumps(mine))
    before = snapshot(tmp_path)
    install_lab_settings(tmp_path)
    assert json.loads(path.read_text()) == {WIDGETS: {"saveState": False}, NEWS: {"fetchNews": "true",
                                            "checkForUpdates": False}, "x:y": {"z": 1}}
    out = capsys.readouterr().out.strip()
    assert out == (f"lab settings {path}: added {NEWS}:checkForUpdates=false; kept your {WIDGETS}:saveState=false "
                   f"(ours: true), {NEWS}:fetchNews=\"true\" (ours: \"false\")")
    after = snapshot(tmp_path)
    assert {k for k in after if after[k] != before.get(k)} == {path.relative_to(tmp_path).as_posix()}


def test_a_symlinked_lab_settings_file_is_written_through(tmp_path, capsys, snapshot):
    from corelib.notebooks import install_lab_settings

    dotfile = tmp_path / "dotfiles" / "jupyter-overrides.json"
    dotfile.parent.mkdir()
    dotfile.write_text(json.dumps({WIDGETS: {"saveState": False}}))
    (tmp_path / "dotfiles" / "README").write_text("my dotfiles\n")
    link = _overrides(tmp_path / "env")
    link.parent.mkdir(parents=True)
    link.symlink_to(dotfile)
    before = snapshot(tmp_path / "dotfiles")
    install_lab_settings(tmp_path / "env")
    assert link.is_symlink() and link.resolve() == dotfile  # the link stays a link
    assert json.loads(dotfile.read_text())[WIDGETS] == {"saveState": False}
    assert json.loads(dotfile.read_text())[NEWS] == {"fetchNews": "false", "checkForUpdates": False}
    assert f"added {NEWS}:fetchNews" in capsys.readouterr().out
    after = snapshot(tmp_path / "dotfiles")
    assert after["README"] == before["README"] and set(after) == set(before)  # no temporary file left


# -- file modes follow the umask -------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_the_workbench_writes_follows_the_umask(tmp_path, umask, mode):
    from corelib.config import PretrainCfg
    from corelib.notebooks import install_lab_settings
    from corelib.outputs import Run
    from corelib.runtime import save_checkpoint
    from corelib.settings import save_config

    old = os.umask(umask)
    try:
        written = [save_checkpoint({"epoch": 0, "model": {}}, tmp_path / "run" / "pretrain" / "last.pt"),
                   save_config(PretrainCfg.smoke(), tmp_path / "run" / "pretrain" / "config.yaml"),
                   install_lab_settings(tmp_path / "env")]
        Run(tmp_path / "run").record_metric("m2c_mAP", 0.5)
        written.append(tmp_path / "run" / "metrics.json")
    finally:
        os.umask(old)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: oct(mode) for p in written}


def test_a_file_replaced_keeps_its_mode_as_writing_it_with_open_would(tmp_path):
    """The user made their lab settings (a dotfile) private: merging our settings keeps it private."""
    from corelib.notebooks import install_lab_settings

    settings = install_lab_settings(tmp_path / "env")
    settings.write_text("{}")
    settings.chmod(0o600)
    old = os.umask(0o022)
    try:
        install_lab_settings(tmp_path / "env")
    finally:
        os.umask(old)
    assert json.loads(settings.read_text()) and stat.S_IMODE(settings.stat().st_mode) == 0o600


# -- the operating system's refusals: one line, exit 2 ---------------------------------------------------


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_checkpoint_byte_identical(tmp_path, monkeypatch, snapshot):
    from corelib.runtime import save_checkpoint

    last = save_checkpoint({"epoch": 3, "model": {"w": torch.ones(4)}}, tmp_path / "pretrain" / "last.pt")
    before = snapshot(tmp_path)
    monkeypatch.setattr(torch, "save", _no_space)
    with pytest.raises(WriteError) as e:
        save_checkpoint({"epoch": 4, "model": {"w": torch.zeros(4)}}, last)
    assert str(e.value) == (f"disk full: last.pt could not be written in {last.parent}; the previous last.pt is kept "
                            f"intact. Free space on that disk (old run directories, *.replaced-* folders) or write "
                            f"elsewhere (another --run-dir, COREREID_RUNS), then run the command again")
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert snapshot(tmp_path) == before  # the old bytes, and no temporary file


def test_a_full_disk_seen_through_torchs_own_writer_is_named_too(tmp_path, monkeypatch, snapshot):
    """torch reports a failed write of a file object as a RuntimeError ("unexpected pos") whose context is
    the OSError: the errno is found there."""
    import io

    from corelib.runtime import save_checkpoint

    real_save = torch.save

    class FillsUp(io.RawIOBase):
        def __init__(self, f):
            self.f, self.written = f, 0

        def writable(self):
            return True

        def write(self, b):
            self.written += len(b)
            if self.written > 200:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

    monkeypatch.setattr(torch, "save", lambda state, f: real_save(state, FillsUp(f)))
    with pytest.raises(WriteError, match=f"^disk full: best.pt could not be written in {tmp_path}"):
        save_checkpoint({"model": {"w": torch.ones(100, 100)}}, tmp_path / "best.pt")
    assert snapshot(tmp_path) == {}


@pytest.mark.slow
def test_a_full_disk_during_pretrain_is_one_line_and_exit_2(synthetic_small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "save", _no_space)
    run = tmp_path / "run"
    assert main(["pretrain", "--source", "market_like", str(synthetic_small["market_like"].parent), "--scale",
                 "0.05", "--smoke", "-o", "runtime.device=cpu", "--run-dir", str(run)]) == 2
    stderr = capsys.readouterr().err  # the epoch's progress bar, then the error: one line, no traceback
    err = stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "Traceback" not in stderr and stderr.count("corelib pretrain:") == 1
    assert err.startswith("corelib pretrain: disk full: ") and f"written in {run / 'pretrain'}" in err
    assert not [p for p in (run / "pretrain").iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def refuse_creating_in(monkeypatch):
    """``refuse_creating_in(folder, code)``: creating a file or folder inside ``folder`` raises the OSError
    ``code`` (EROFS: a read-only mount; EACCES: a folder not writable for the user), as the kernel would."""
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(folder: Path, code: int) -> None:
        def inside(path) -> bool:
            return Path(os.fspath(path)).resolve().is_relative_to(folder.resolve())

        def guarded_open(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and inside(path):
                raise OSError(code, os.strerror(code), os.fspath(path))
            return real_open(path, flags, *args, **kwargs)

        def guarded_mkdir(path, *args, **kwargs):
            if inside(path) and Path(os.fspath(path)).resolve() != folder.resolve():
                raise OSError(code, os.strerror(code), os.fspath(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)
        monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    return refuse


@pytest.mark.parametrize("code, words", [(errno.EROFS, "is on a read-only file system"),
                                         (errno.EACCES, "permission denied for")], ids=["EROFS", "EACCES"])
def test_a_read_only_run_dir_is_one_line_naming_it(tmp_path, refuse_creating_in, one_line_error, snapshot, code,
                                                    words):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.md").write_text("mine\n")
    before = snapshot(tmp_path)
    refuse_creating_in(run, code)
    assert main(["run-notebooks", "--run-dir", str(run), "--chapters", "00", "--smoke"]) == 2
    err = one_line_error()
    assert err.startswith("corelib run-notebooks: ") and words in err and str(run) in err
    assert "writable" in err and "another --run-dir" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES], ids=["EROFS", "EACCES"])
def test_the_atomic_writers_name_a_read_only_folder(tmp_path, refuse_creating_in, snapshot, code):
    from corelib.config import PretrainCfg
    from corelib.settings import save_config

    stage = tmp_path / "run" / "pretrain"
    stage.mkdir(parents=True)
    before = snapshot(tmp_path)
    refuse_creating_in(stage, code)
    with pytest.raises(WriteError, match=f"{stage}.*(read-only file system|not writable)") as e:
        save_config(PretrainCfg.smoke(), stage / "config.yaml")
    assert e.value.errno == code and ".tmp" not in str(e.value)  # named by the file, not its temporary name
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="chmod does not stop root")
def test_a_really_read_only_run_dir_is_named(tmp_path, one_line_error):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        assert main(["run-notebooks", "--run-dir", str(run), "--chapters", "00", "--smoke"]) == 2
        assert "permission denied" in one_line_error() and not any(run.iterdir())
    finally:
        run.chmod(0o755)


def test_a_run_dir_that_is_a_file_is_one_line(tmp_path, one_line_error, snapshot):
    afile = tmp_path / "run"
    afile.write_text("not a folder\n")
    before = snapshot(tmp_path)
    assert main(["run-notebooks", "--run-dir", str(afile), "--chapters", "00", "--smoke"]) == 2
    assert one_line_error() == (f"corelib run-notebooks: {afile} is a file where a folder is expected; move that "
                                f"file away or choose another folder (another --run-dir or ROOT)")
    assert snapshot(tmp_path) == before


def test_a_stage_folder_that_is_a_file_is_one_line(synthetic_small, tmp_path, one_line_error, snapshot):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pretrain").write_text("not a folder\n")
    before = snapshot(run)
    assert main(["pretrain", "--source", "market_like", str(synthetic_small["market_like"].parent), "--scale",
                 "0.05", "--smoke", "-o", "runtime.device=cpu", "--run-dir", str(run)]) == 2
    err = one_line_error()
    assert f"{run / 'pretrain'} is a file where a folder is expected" in err
    assert snapshot(run) == before


def test_an_atomic_writer_names_the_file_in_the_way(tmp_path, snapshot):
    from corelib.runtime import save_checkpoint

    (tmp_path / "run").write_text("x")
    before = snapshot(tmp_path)
    with pytest.raises(WriteError, match=f"^{tmp_path / 'run'} is a file where a folder is expected "
                                         rf"\(to hold {tmp_path / 'run' / 'pretrain' / 'last.pt'}\)"):
        save_checkpoint({"epoch": 0}, tmp_path / "run" / "pretrain" / "last.pt")
    assert snapshot(tmp_path) == before


def test_other_os_errors_keep_their_traceback(tmp_path, monkeypatch):
    import corelib.cli as cli

    def broken(_run_dir):
        raise OSError(errno.EIO, "Input/output error", str(tmp_path / "x"))

    monkeypatch.setattr(cli, "write_report", broken)  # the command's own reference
    with pytest.raises(OSError, match="Input/output error"):
        main(["report", str(tmp_path)])


def test_an_existing_folder_is_no_file_in_the_way():
    from corelib.paths import write_error

    # mkdir without exist_ok on a folder that exists: EEXIST, but no file is in the way: not explained
    assert write_error(FileExistsError(errno.EEXIST, "File exists", "/")) is None
    assert not issubclass(NotOwnedError, WriteError)


# -- a checkpoint holding pickled code -------------------------------------------------------------------


class _Runs:
    """Unpickling this would run ``os.system``: a module torch blocks outright."""

    def __reduce__(self):
        return (os.system, ("touch /nonexistent-corelib-marker",))


class _Writes:
    """Unpickling this would write a file: a global torch does not allow."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.parametrize("payload, globals_named", [
    ("blocked", "posix.system"), ("not-allowed", "builtins.getattr"), ("legacy-format", "")],
    ids=["blocked-module", "unsupported-global", "legacy-format"])
def test_a_checkpoint_holding_code_says_so(tmp_path, payload, globals_named, snapshot):
    """Before: the pinned torch's "unsupported GLOBAL ... is blocked" was reported as a corrupt file."""
    from corelib.runtime import load_checkpoint

    marker = tmp_path / "PWNED"
    path = tmp_path / "ckpt" / "last.pt"
    path.parent.mkdir()
    if payload == "blocked":
        torch.save({"model": {}, "evil": _Runs()}, path)
    elif payload == "not-allowed":
        torch.save({"model": {}, "evil": _Writes(marker)}, path)
    else:  # the pre-zip format: torch's words are all there is to go by
        torch.save({"model": {}, "evil": _Writes(marker)}, path, _use_new_zipfile_serialization=False)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path} holds Python objects beyond tensors and plain values: pickled code")
    assert "that is not run, for safety" in message and "corrupt" not in message and "weights_only" not in message
    assert globals_named in message
    assert not marker.exists() and snapshot(tmp_path) == before


def test_evaluate_on_a_checkpoint_holding_code_is_one_line(tmp_path, synthetic_small, one_line_error):
    path = tmp_path / "best.pt"
    torch.save({"model": {}, "evil": _Runs()}, path)
    assert main(["evaluate", str(path), "--dataset", "market_like", str(synthetic_small["market_like"].parent),
                 "--scale", "0.05"]) == 2
    err = one_line_error()
    assert err.startswith(f"corelib evaluate: {path} holds Python objects") and "not run, for safety" in err
