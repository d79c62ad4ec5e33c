"""Small hostile inputs cannot exhaust memory or time, and inputs out of range are refused by name
(issue 33, "Nothing lost, second pass": small hostile inputs, messages).

- A 1 KB YAML of nested aliases ("billion laughs") as a manifest, a ``--params`` file, a sweep file
  or a ``--config`` file is refused in milliseconds, naming the file; so is a file too large to be a
  workbench file (without reading it whole), invalid YAML and a missing file.
- A notebook parameter of 10 MB is refused before anything runs, and no message quotes more than
  an excerpt of a value.
- A decompression bomb (an image whose header claims 400 or 100 million pixels) is refused by name
  where images are read for training and evaluation, and ``corelib verify`` flags it.
- ``verify --images -5 / 0`` and ``--scale 0 / -1`` of every command are refused.
"""

from __future__ import annotations

import dataclasses
import resource
import shutil
import signal
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest

from corelib.cli import main
from corelib.errors import ConfigError, CorruptImageError, InvalidInputError
from corelib.yamlfile import MAX_YAML_BYTES

MEMORY_BOUND = 50 * 2**20  # Python allocations of one refusal (tracemalloc peak)
TIME_BOUND = 1.0  # seconds of one refusal


def alias_bomb(levels: int = 10, width: int = 10) -> str:
    """A flow list of nested aliases, about 1 KB, describing ``width ** levels`` values."""
    parts = [f"&a0 [{', '.join(['x'] * width)}]"]
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _address_space() -> int:
    """This process's virtual memory size in bytes (VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextmanager
def bounded(extra_bytes: int = 2**30, seconds: int = 20):
    """Measure the block (``result["seconds"]``, ``result["peak"]`` of tracemalloc) under a hard stop:
    at most ``extra_bytes`` more address space (a MemoryError beyond) and ``seconds`` of wall time (a
    TimeoutError), so that a regression fails the test instead of exhausting the machine."""
    result: dict = {}
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)

    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + extra_bytes, hard))
    signal.alarm(seconds)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        result["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def no_chapter_runs(monkeypatch):
    """A chapter that starts fails the test (refusals come before anything runs)."""
    import papermill

    def refuse(*args, **kwargs):
        raise AssertionError("a chapter was executed; the input should have been refused before")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


@pytest.fixture(scope="module", autouse=True)
def _imported():
    """The modules the commands import lazily, imported before any measurement."""
    import corelib.data.manifests  # noqa: F401
    import corelib.notebooks  # noqa: F401
    import corelib.pairs  # noqa: F401
    import corelib.recipes  # noqa: F401
    import corelib.sweeps  # noqa: F401
    import corelib.training  # noqa: F401


# ------------------------------------------------------------------ YAML: one loader, bounded

MANIFEST = """name: bomb
title: bomb
kind: person
loader: market1501
folder: bomb
layout: {bomb}
protocol: market
splits: {{train: {{}}, query: {{}}, gallery: {{}}}}
"""

BOMB_FILES = {
    # command -> (file text, argv with FILE and TMP to fill in)
    "verify": (MANIFEST.format(bomb=alias_bomb()), ["verify", "FILE", "TMP/data", "--images", "none", "--quiet"]),
    "run-notebooks": (f"PAIRS: {alias_bomb()}\n", ["run-notebooks", "--run-dir", "TMP/run", "--chapters", "00",
                                                   "--params", "FILE"]),
    "sweep": (f"chapters: ['00']\nparameters: {{PAIRS: {alias_bomb()}}}\ngrid: {{SEED: [1, 2]}}\n",
              ["sweep", "FILE", "--root", "TMP/sweeps"]),
    "pretrain": (f"epochs: {alias_bomb()}\n", ["pretrain", "--source", "market_like", "TMP/data", "--config", "FILE",
                                               "--run-dir", "TMP/run"]),
}


def _argv(template: list[str], file: Path, tmp: Path) -> list[str]:
    return [str(file) if a == "FILE" else a.replace("TMP", str(tmp)) for a in template]


@pytest.mark.parametrize("command", sorted(BOMB_FILES))
def test_an_alias_bomb_is_refused_by_name_in_milliseconds(command, tmp_path, snapshot, one_line_error,
                                                          no_chapter_runs):
    """Before: 1 KB of nested aliases (10^10 values) exhausted memory or ran for minutes as a manifest,
    a --params file, a sweep file and a --config file."""
    text, template = BOMB_FILES[command]
    file = tmp_path / "bomb.yaml"
    file.write_text(text)
    assert len(text) < 1500
    before = snapshot(tmp_path)
    with bounded() as run:
        status = main(_argv(template, file, tmp_path))
    assert status == 2
    line = one_line_error()
    assert str(file) in line and "uses YAML aliases ('&'/'*') that expand to more than 100,000 values" in line
    assert run["seconds"] < TIME_BOUND and run["peak"] < MEMORY_BOUND, run
    assert snapshot(tmp_path) == before


def test_an_alias_bomb_on_the_command_line_is_refused(tmp_path, snapshot, one_line_error):
    """Before: ``-o NAME=VALUE`` and ``--source NAME ROOT OPTION=VALUE`` read their values with
    yaml.safe_load, aliases and all."""
    before = snapshot(tmp_path)
    with bounded() as run:
        status = main(["pretrain", "--source", "market_like", str(tmp_path / "data"), "-o", f"epochs={alias_bomb()}",
                       "--run-dir", str(tmp_path / "run")])
    assert status == 2
    assert "override epochs= uses YAML aliases" in one_line_error()
    assert run["seconds"] < TIME_BOUND and run["peak"] < MEMORY_BOUND, run
    assert snapshot(tmp_path) == before


def _huge_sparse_file(tmp_path: Path) -> Path:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(8 * 2**30)  # 8 GiB that take no disk: reading it whole would take 8 GiB of memory
    return path


@pytest.mark.parametrize("source, message", [
    (_huge_sparse_file, f"is larger than {MAX_YAML_BYTES:,} bytes"),
    (lambda tmp_path: Path("/dev/zero"), "is not a regular file"),
], ids=["8-GiB-sparse-file", "dev-zero"])
def test_a_file_too_large_to_be_a_sweep_is_refused_without_reading_it(source, message, tmp_path, snapshot,
                                                                      one_line_error):
    """Before: the whole file was read into memory first (8 GiB here; /dev/zero never ends)."""
    file = source(tmp_path)
    before = snapshot(tmp_path / "sweeps")
    with bounded() as run:
        status = main(["sweep", str(file), "--root", str(tmp_path / "sweeps")])
    assert status == 2
    line = one_line_error()
    assert f"sweep file {file} {message}" in line
    assert run["seconds"] < TIME_BOUND and run["peak"] < MEMORY_BOUND, run
    assert snapshot(tmp_path / "sweeps") == before


INVALID = "chapters: ['00']\ngrid: {SEED: [1, 2}\n"


@pytest.mark.parametrize("argv", [
    ["sweep", "FILE", "--root", "TMP/sweeps"],
    ["pretrain", "--source", "market_like", "TMP/data", "--config", "FILE", "--run-dir", "TMP/run"],
    ["verify", "FILE", "TMP/data", "--images", "none", "--quiet"],
], ids=["sweep", "pretrain-config", "verify-manifest"])
def test_invalid_yaml_is_one_line_naming_file_line_and_column(argv, tmp_path, snapshot, one_line_error):
    """Before: PyYAML's multi-line error as a traceback (a sweep file, --config), or over several
    lines (a manifest)."""
    file = tmp_path / "broken.yaml"
    file.write_text(INVALID)
    before = snapshot(tmp_path)
    assert main(_argv(argv, file, tmp_path)) == 2
    line = one_line_error()
    assert f"{file}, line 2, column 19: not valid YAML: did not find expected ',' or ']'" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, message", [
    (["sweep", "TMP/missing.yaml", "--root", "TMP/sweeps"], "sweep file TMP/missing.yaml does not exist"),
    (["run-notebooks", "--run-dir", "TMP/run", "--params", "TMP/missing.yaml"],
     "--params file TMP/missing.yaml does not exist"),
    (["pretrain", "--source", "market_like", "TMP/data", "--config", "TMP/missing.yaml", "--run-dir", "TMP/run"],
     "--config TMP/missing.yaml does not exist"),
], ids=["sweep", "params", "config"])
def test_a_missing_yaml_file_is_one_line_naming_it(argv, message, tmp_path, snapshot, one_line_error,
                                                   no_chapter_runs):
    """Before: a sweep file's FileNotFoundError as a traceback; --params and --config were refused as
    ConfigErrors that did not say which option named the file."""
    before = snapshot(tmp_path)
    assert main([a.replace("TMP", str(tmp_path)) for a in argv]) == 2
    assert message.replace("TMP", str(tmp_path)) in one_line_error()
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ notebook parameters: bounded

BIG = "x" * 10_000_000


@pytest.mark.parametrize("name", ["DEVICE", "SEED", "PAIRS"])
def test_a_10_mb_parameter_on_the_command_line_is_refused_before_anything_runs(name, tmp_path, snapshot,
                                                                              one_line_error, no_chapter_runs):
    """Before: a 10 MB text passed the type check of a str (DEVICE) and ran the chapters, leaving a
    50 MB executed notebook; for an int or a list the refusal printed all 10 MB."""
    before = snapshot(tmp_path)
    assert main(["run-notebooks", "--run-dir", str(tmp_path / "run"), "--chapters", "00", "-p", name, BIG]) == 2
    line = one_line_error()
    assert len(line) < 500
    assert f"parameter '{name}' is at least 10,000,002 characters long as JSON, more than the 65,536 allowed" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("parameters, message", [
    ({"DEVICE": BIG}, "parameter 'DEVICE' is at least 10,000,002 characters long as JSON"),
    ({"PAIRS": [BIG[:40_000], BIG[:40_000]]}, "characters long as JSON, more than the 65,536 allowed"),
    ({"SEED": "y" * 60_000}, "parameter SEED of chapter 00_data_tour is an int (its default is 0); got 'yyy"),
    ({"Y" * 60_000: 1}, "no chapter has a parameter 'YYY"),
], ids=["str", "list", "wrong-type", "unknown-name"])
def test_parameters_of_the_api_are_bounded_and_quoted_in_excerpts(parameters, message, tmp_path, snapshot,
                                                                  no_chapter_runs):
    """Before: run_notebooks passed a 10 MB value on to the chapters, and its refusals quoted a
    value or a name whole."""
    from corelib.notebooks import run_notebooks

    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as refused:
        run_notebooks(tmp_path / "run", parameters=parameters, chapters=["00"])
    text = str(refused.value)
    assert message in text and len(text) < 500 and "\n" not in text
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ decompression bombs

@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """Two PNGs of a few KB: 20000 x 20000 (beyond twice PIL's limit: PIL raised an error that did not
    name the file) and 10000 x 10000 (100 megapixels: PIL only warned and decoded it)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("bombs")
    out = {}
    for side in (20000, 10000):
        out[str(side)] = folder / f"0001_c1s1_00000{side // 10000}_00.jpg"  # a query's name, PNG bytes
        Image.new("1", (side, side)).save(out[str(side)], format="PNG")
    return out


SIZES = {"20000": "400,000,000", "10000": "10000 x 10000 = 100,000,000"}


def _refused_bomb(error: CorruptImageError, path: Path, side: str) -> None:
    text = str(error)
    limit = "more than the 89,478,485 allowed (PIL.Image.MAX_IMAGE_PIXELS)"
    assert f"image {path} has {SIZES[side]} pixels, {limit}" in text
    assert "resize it" in text and "\n" not in text


@pytest.mark.parametrize("side", ["20000", "10000"])
def test_a_decompression_bomb_is_refused_by_name_where_images_are_loaded(side, bombs):
    """Before: PIL's DecompressionBombError without the file's name (20000 x 20000), or a silent
    decode of 100 megapixels at full size (10000 x 10000)."""
    from corelib.data.batches import build_loader, read_image_cached

    with bounded() as run, pytest.raises(CorruptImageError) as refused:
        read_image_cached(bombs[side])
    _refused_bomb(refused.value, bombs[side], side)
    assert run["seconds"] < TIME_BOUND and run["peak"] < MEMORY_BOUND, run
    loader = build_loader([(str(bombs[side]), 1, 0)], None, 1)
    with pytest.raises(CorruptImageError) as refused:
        next(iter(loader))
    _refused_bomb(refused.value, bombs[side], side)


@pytest.mark.parametrize("side", ["20000", "10000"])
def test_a_decompression_bomb_among_the_queries_stops_evaluation_by_name(side, bombs, synthetic_small):
    """Before: the first evaluation crashed with PIL's error (or decoded 100 megapixels)."""
    import torch

    from corelib.data.synthetic import load_synthetic
    from corelib.training.evaluate import evaluate_model

    class MeanColour(torch.nn.Module):
        def forward(self, x, camids, viewids=None):
            return x.mean(dim=(2, 3))

    dataset = load_synthetic(synthetic_small["market_like"])
    query = dataset.query[0]
    dataset = dataclasses.replace(dataset, query=[query._replace(path=str(bombs[side]))] + dataset.query[1:])
    with pytest.raises(CorruptImageError) as refused:
        evaluate_model(MeanColour(), dataset, 32, 16, channels_last=False)
    _refused_bomb(refused.value, bombs[side], side)


def test_verify_flags_a_100_megapixel_image_with_the_same_limit(bombs, synthetic_small, tmp_path):
    """Before: verify decoded a 100-megapixel image (PIL only warned) and reported that it decodes."""
    from corelib.data.manifests import verify_dataset

    copy = tmp_path / "market_like"
    shutil.copytree(synthetic_small["market_like"], copy)
    victim = sorted((copy / "query").iterdir())[0]
    shutil.copyfile(bombs["10000"], victim)
    report = verify_dataset(copy / "manifest.yaml", copy, progress=False)
    assert not report.ok
    assert any(f"image {victim} has 10000 x 10000 = 100,000,000 pixels" in p for p in report.problems), report.problems


# ------------------------------------------------------------------ command-line values out of range

@pytest.mark.parametrize("images", ["-5", "0"])
def test_verify_images_must_be_all_none_or_a_positive_number(images, synthetic_small, snapshot, one_line_error):
    """Before: --images -5 ended in random.sample's ValueError; --images 0 decoded nothing and
    reported OK."""
    root = synthetic_small["market_like"]
    before = snapshot(root)
    assert main(["verify", str(root / "manifest.yaml"), str(root), "--images", images, "--quiet"]) == 2
    assert (f"--images must be 'all', 'none' or a positive number of images to decode (drawn at random, e.g. 200), "
            f"got '{images}'") in one_line_error()
    assert snapshot(root) == before


@pytest.mark.parametrize("scale", ["0", "-1"])
def test_synth_refuses_a_scale_that_is_not_positive(scale, tmp_path, snapshot, one_line_error):
    """Before: --scale 0 drew a 4-identity set named market_like_x0, --scale -1 one named _x-1."""
    assert main(["synth", "market_like", str(tmp_path / "data"), "--scale", scale, "--workers", "1"]) == 2
    assert f"--scale {float(scale)}: the identity scale must be a positive number" in one_line_error()
    assert snapshot(tmp_path) == {}
    from corelib.data.synthetic import generate_synthetic

    with pytest.raises(InvalidInputError, match=f"scale must be a positive number .*got {float(scale)}"):
        generate_synthetic("market_like", tmp_path / "data", scale=float(scale), workers=1, progress=False)
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("argv", [
    ["pretrain", "--source", "market_like", "TMP", "--print-config"],
    ["finetune", "--target", "cuhk_like", "TMP", "--print-config"],
    ["style", "train", "--source", "market_like", "TMP", "--print-config"],
    ["style", "generate", "--models", "TMP/models", "--source", "market_like", "TMP", "--out", "TMP/out"],
    ["style", "gap", "--models", "TMP/models", "--source", "market_like", "TMP"],
    ["evaluate", "TMP/best.pt", "--dataset", "market_like", "TMP"],
], ids=["pretrain", "finetune", "style-train", "style-generate", "style-gap", "evaluate"])
def test_every_scale_option_refuses_zero(argv, tmp_path, snapshot, one_line_error):
    """Before: the training, evaluation and style commands took --scale 0 (a preset drawn at scale 0,
    or the value printed in a recipe)."""
    assert main([a.replace("TMP", str(tmp_path)) for a in argv] + ["--scale", "0"]) == 2
    assert "--scale 0.0: the identity scale must be a positive number" in one_line_error()
    assert snapshot(tmp_path) == {}
