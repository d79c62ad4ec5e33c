"""Nothing read from disk runs code, and a checkpoint that cannot be used says which file, what is
wrong with it and what to do (issue "Nothing lost, nobody in")."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from corelib.errors import CheckpointError, CorelibError, MissingStageError
from corelib.runtime import load_checkpoint, save_checkpoint


class _Payload:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}, path)  # a torch zip holding a payload


def test_imagenet_weights_from_a_planted_cache_file_run_no_code(tmp_path, monkeypatch):
    """Before: torchvision's loader unpickled the cached file (weights_only=False): the payload ran."""
    from torchvision.models import get_model_weights

    from corelib.models.resnet import build_trunk

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = Path(get_model_weights("resnet18").IMAGENET1K_V1.url).name
    marker = tmp_path / "PWNED"
    _plant(tmp_path / "torch" / "hub" / "checkpoints" / name, marker)
    with pytest.raises(CheckpointError, match=f"is not torchvision's {name}: its SHA-256"):
        build_trunk(18, "imagenet")
    assert not marker.exists()


def test_a_weights_file_with_code_is_refused_and_runs_nothing(tmp_path):
    from corelib.models.resnet import build_trunk

    marker = tmp_path / "PWNED"
    _plant(tmp_path / "r18.pth", marker)
    with pytest.raises(CheckpointError, match="r18.pth holds Python objects beyond tensors.*refuses it"):
        build_trunk(18, str(tmp_path / "r18.pth"))
    assert not marker.exists()


def test_a_plain_pickle_with_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "last.pt"
    path.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.fixture
def good_checkpoint(tmp_path) -> Path:
    return save_checkpoint({"stage": "pretrain", "epoch": 0, "model": {"w": torch.ones(64, 64)}}, tmp_path / "best.pt")


def test_an_empty_checkpoint_says_so(tmp_path):
    """Before: a bare EOFError."""
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"best.pt is empty \(0 bytes\).*Train the stage again"):
        load_checkpoint(tmp_path / "best.pt")


def test_a_truncated_checkpoint_says_so(good_checkpoint):
    """Before: torch's own error about the zip archive."""
    data = good_checkpoint.read_bytes()
    good_checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="best.pt is truncated or corrupt") as e:
        load_checkpoint(good_checkpoint)
    assert "weights_only" not in str(e.value)


def test_a_random_file_says_so_without_torchs_advice(tmp_path):
    """Before: torch's advice to set weights_only=False, i.e. to run whatever the file holds."""
    path = tmp_path / "last.pt"
    for seed in range(6):  # random bytes fail in several ways inside torch (unpickler, zip reader, IndexError)
        path.write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(CheckpointError, match="last.pt is (not a readable checkpoint|truncated or corrupt)") as e:
            load_checkpoint(path)
        assert "weights_only" not in str(e.value)


def test_a_file_that_is_not_a_mapping_is_not_a_checkpoint(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="is not a corelib checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_a_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(MissingStageError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_checkpoint_of_another_stage_is_refused(good_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="written by the 'pretrain' stage, not by 'finetune'"):
        load_checkpoint(good_checkpoint, stage="finetune")


def test_a_finetune_checkpoint_is_not_taken_as_a_source_checkpoint(tmp_path, synthetic_small):
    from corelib.config import FinetuneCfg
    from corelib.data import load_synthetic
    from corelib.training import finetune

    ckpt = save_checkpoint({"stage": "finetune", "epoch": 0, "model": {}}, tmp_path / "ft.pt")
    target = load_synthetic(synthetic_small["cuhk_like"])
    with pytest.raises(CheckpointError, match="'finetune' stage, not by 'pretrain'"):
        finetune(FinetuneCfg.smoke(), target, tmp_path / "run", source_checkpoint=ckpt, progress=False)
    assert not (tmp_path / "run" / "finetune").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04trunc", b"not a checkpoint at all"])
def test_evaluate_on_a_broken_checkpoint_is_one_line_and_exit_2(tmp_path, capsys, content, synthetic_small):
    from corelib.cli import main

    path = tmp_path / "best.pt"
    path.write_bytes(content)
    root = str(synthetic_small["market_like"].parent)
    assert main(["evaluate", str(path), "--dataset", "market_like", root, "--scale", "0.05"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corelib evaluate: ") and str(path) in err and len(err.strip().splitlines()) == 1


def test_checkpoint_errors_are_corelib_errors():
    assert issubclass(CheckpointError, CorelibError) and issubclass(CheckpointError, ValueError)
