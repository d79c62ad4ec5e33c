"""CycleGAN style transfer: networks, training and resume, the enlarged sets and their loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corelib.config import PretrainCfg, StyleCfg
from corelib.data.dataset import build_dataset
from corelib.data.synthetic import load_synthetic
from corelib.errors import ConfigError, InvalidInputError, MissingStageError, StyleError
from corelib.runtime.checkpoint import FORMAT_VERSION
from corelib.style import (
    CycleGAN,
    ImagePool,
    PatchDiscriminator,
    ResnetGenerator,
    StyleJob,
    camera_pairs,
    camera_style_rows,
    colour_statistics,
    domain_style_rows,
    frechet_distance,
    load_cyclegan,
    load_style_models,
    load_style_set,
    style_gap,
    summarize_gap,
    train_cyclegan,
    train_cyclegans,
    train_style_models,
    write_style_set,
)

TINY = StyleCfg.smoke(seed=3)


@pytest.fixture(scope="module")
def market(synthetic_small):
    return load_synthetic(synthetic_small["market_like"])


@pytest.fixture(scope="module")
def camera_models(market, tmp_path_factory):
    return train_style_models(market, TINY, tmp_path_factory.mktemp("camstyle"), mode="camera", progress=False)


@pytest.fixture(scope="module")
def vehicle_pair(synthetic_small):
    return load_synthetic(synthetic_small["vehicleid_like"]), load_synthetic(synthetic_small["veri_like"])


@pytest.fixture(scope="module")
def domain_models(vehicle_pair, tmp_path_factory):
    source, target = vehicle_pair
    return train_style_models(source, TINY, tmp_path_factory.mktemp("domstyle"), mode="domain", target=target,
                              progress=False)


# ---------------------------------------------------------------------------------------------
# networks


def test_generator_keeps_shape_and_range():
    g = ResnetGenerator(ngf=8, blocks=2, n_down=2)
    x = torch.rand(2, 3, 32, 16) * 2 - 1
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() < 1


def test_residual_generator_starts_near_the_identity():
    torch.manual_seed(0)
    cfg = StyleCfg.smoke(residual_generator=True)
    plain = CycleGAN(StyleCfg.smoke(residual_generator=False)).g_ab
    residual = CycleGAN(cfg).g_ab
    x = torch.rand(2, 3, 32, 16) * 1.6 - 0.8
    near, far = (residual(x) - x).abs().mean(), (plain(x) - x).abs().mean()
    assert near < 0.5 * far  # CycleGAN's generator starts far from its input, the residual one near it
    # (a zero-initialised last layer would start exactly at the identity, but then most embedded
    # camera pairs never leave it: the inner layers get no gradient at the first steps)


def test_patch_discriminator_scores_patches():
    d = PatchDiscriminator(ndf=8, layers=3)
    out = d(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1, 6, 6)  # 70x70 receptive fields on a 64x64 image: a 6x6 map


def test_size_must_fit_the_downsampling():
    with pytest.raises(ValueError, match="divisible"):
        CycleGAN(StyleCfg.smoke(height=30))


def test_linear_decay_schedule():
    cfg = StyleCfg(epochs=3, decay_epochs=2)
    assert [round(cfg.lr_factor(e), 3) for e in range(5)] == [1.0, 1.0, 1.0, 0.667, 0.333]
    assert cfg.total_epochs == 5
    d = StyleCfg.domain_aware()
    assert (d.epochs, d.decay_epochs, d.batch_size) == (100, 100, 32)


def test_image_pool_returns_history_and_round_trips():
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: fakes come back as they are
    later = torch.full((64, 1, 1, 1), 9.0)
    out = pool.query(later)
    swapped = (out != 9.0).sum().item()
    assert 0 < swapped <= 4  # some fakes are swapped for stored ones, each stored image at most once
    state = pool.state_dict()
    copy = ImagePool(4, seed=5)
    copy.load_state_dict(state)
    probe = torch.full((16, 1, 1, 1), 7.0)
    assert torch.equal(copy.query(probe.clone()), pool.query(probe.clone()))


# ---------------------------------------------------------------------------------------------
# training


def _tiny_domains(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(0)
    paths = ([], [])
    for side, tint in enumerate(((1.0, 0.6, 0.6), (0.6, 0.6, 1.0))):
        for i in range(6):
            a = rng.uniform(60, 200, (32, 16, 3)) * np.asarray(tint)
            p = tmp_path / f"{side}_{i}.png"
            Image.fromarray(a.astype(np.uint8)).save(p)
            paths[side].append(p)
    return paths


@pytest.mark.slow
def test_train_writes_checkpoint_and_log(tmp_path):
    a, b = _tiny_domains(tmp_path)
    result = train_cyclegan(a, b, TINY, tmp_path / "run", progress=False)
    assert result.checkpoint.is_file()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == TINY.total_epochs == len(result.history)
    rec = json.loads(lines[-1])
    assert {"g_gan", "cycle", "identity", "d", "lr", "seconds"} <= set(rec)
    model, cfg = load_cyclegan(result.checkpoint)
    assert cfg == TINY
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


@pytest.mark.slow
def test_resume_equals_a_straight_run(tmp_path, monkeypatch):
    import corelib.runtime.loop as cg  # the shared loop runtime writes every loop's checkpoints

    a, b = _tiny_domains(tmp_path)
    cfg = StyleCfg.smoke(epochs=2, decay_epochs=1)
    straight = train_cyclegan(a, b, cfg, tmp_path / "straight", progress=False)

    real_save = cg.save_checkpoint
    calls = {"n": 0}

    def save_then_stop(state, path):
        real_save(state, path)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stopped after the second epoch's checkpoint

    monkeypatch.setattr(cg, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_cyclegan(a, b, cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(cg, "save_checkpoint", real_save)
    resumed = train_cyclegan(a, b, cfg, tmp_path / "resumed", progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for k, v in straight.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k
    assert resumed.history[-1]["cycle"] == pytest.approx(straight.history[-1]["cycle"], rel=1e-5)


def test_empty_domain_is_an_error(tmp_path):
    a, _ = _tiny_domains(tmp_path)
    with pytest.raises(ValueError, match="domain B has no images"):
        train_cyclegan(a, [], TINY, tmp_path / "run", progress=False)


def test_non_style_checkpoint_is_refused(tmp_path):
    torch.save({"stage": "pretrain", "model": {}, "format_version": FORMAT_VERSION}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a CycleGAN"):
        load_cyclegan(tmp_path / "x.pt")


@pytest.mark.slow
def test_several_cyclegans_train_one_after_the_other_as_alone(tmp_path):
    a, b = _tiny_domains(tmp_path)
    jobs = [StyleJob(a, b, tmp_path / "listed" / "ab", "ab"), StyleJob(b, a, tmp_path / "listed" / "ba", "ba")]
    listed = train_cyclegans(jobs, TINY, progress=False)
    for job, result in zip(jobs, listed):  # in the order of the jobs, each what train_cyclegan gives it
        alone = train_cyclegan(job.images_a, job.images_b, TINY, tmp_path / "alone" / job.desc, progress=False)
        assert result.checkpoint == job.out_dir / "last.pt"
        for k, v in alone.model.state_dict().items():
            assert torch.equal(v, result.model.state_dict()[k]), k
    assert not torch.equal(listed[0].model.g_ab.net[1].weight, listed[1].model.g_ab.net[1].weight)
    with pytest.raises(InvalidInputError, match="same folder"):  # refused before anything is written
        train_cyclegans([StyleJob(a, b, tmp_path / "one"), StyleJob(b, a, tmp_path / "one")], TINY, progress=False)
    assert not (tmp_path / "one").exists()


# ---------------------------------------------------------------------------------------------
# camera-aware and domain-aware sets

MARKET_NAME = re.compile(r"([-\d]+)_c(\d+)")


def test_camera_pairs_cover_every_unordered_pair(market):
    k = market.num_train_cams
    pairs = camera_pairs(market)
    assert len(pairs) == k * (k - 1) // 2
    assert all(a < b for a, b in pairs)


@pytest.mark.slow
def test_camera_models_one_per_pair(camera_models, market):
    again = load_style_models(camera_models.root)
    assert again.mode == "camera" and again.source == market.name
    assert [p.name for p in again.pairs] == [f"c{a + 1}-c{b + 1}" for a, b in camera_pairs(market)]


@pytest.mark.slow
def test_camera_aware_set_loads_through_the_market_loader(camera_models, market, tmp_path):
    root = write_style_set(market, camera_models, tmp_path / "enlarged", progress=False)
    enlarged = build_dataset("market1501", root)  # the real Market-1501 loader, nothing special
    k = market.num_train_cams
    assert len(enlarged.train) == k * len(market.train)  # (K-1) copies + the real image
    assert enlarged.num_train_pids == market.num_train_pids
    assert len(enlarged.query) == len(market.query) and len(enlarged.gallery) == len(market.gallery)
    real = {Path(s.path).stem: s for s in market.train}
    fakes = [s for s in enlarged.train if "_fake_" in Path(s.path).name]
    assert len(fakes) == (k - 1) * len(market.train)
    relabel = {}
    for s in fakes:
        stem, tag = Path(s.path).stem.split("_fake_")
        origin = real[stem]
        assert s.camid == origin.camid  # the copy keeps the camera of its real image
        relabel.setdefault(s.pid, set()).add(origin.pid)  # and its identity
        frm, to = map(int, tag.split("to"))
        assert frm == origin.camid + 1 and to != frm
    assert all(len(v) == 1 for v in relabel.values())
    # the original pid in the file name is the real image's pid
    for s in fakes[:20]:
        stem = Path(s.path).stem.split("_fake_")[0]
        assert MARKET_NAME.search(Path(s.path).name).group(1) == MARKET_NAME.search(stem).group(1)
    # load_style_set gives the same set, with its stamp
    again = load_style_set(root)
    assert len(again.train) == len(enlarged.train) and again.extras["style_set"]["mode"] == "camera"
    assert again.extras["style_set"]["copies_per_image"] == pytest.approx(k - 1)
    # copies have the size of the real images
    fake_img = Image.open(fakes[0].path)
    assert fake_img.size == Image.open(real[Path(fakes[0].path).stem.split("_fake_")[0]].path).size


@pytest.mark.slow
def test_domain_aware_set_doubles_the_source(domain_models, vehicle_pair, tmp_path):
    source, target = vehicle_pair
    root = write_style_set(source, domain_models, tmp_path / "enlarged", progress=False)
    enlarged = build_dataset("veri776", root)
    assert len(enlarged.train) == 2 * len(source.train)
    assert enlarged.num_train_pids == source.num_train_pids
    assert sorted((s.pid, s.camid) for s in enlarged.train) == sorted(
        [(s.pid, s.camid) for s in source.train] * 2)
    # a copy keeps the view of its real image (the view files are written beside the folders)
    assert enlarged.has_views and sorted((s.pid, s.viewid) for s in enlarged.train) == sorted(
        [(s.pid, s.viewid) for s in source.train] * 2)


@pytest.mark.slow
def test_write_is_skipped_when_complete_and_partial_is_not_loaded(camera_models, market, tmp_path):
    root = write_style_set(market, camera_models, tmp_path / "set", progress=False)
    stamp = (root / "style_set.json").stat().st_mtime_ns
    write_style_set(market, camera_models, tmp_path / "set", progress=False)
    assert (root / "style_set.json").stat().st_mtime_ns == stamp
    (tmp_path / "broken.partial").mkdir()
    with pytest.raises(MissingStageError, match="partial"):
        load_style_set(tmp_path / "broken")


@pytest.mark.slow
def test_custom_layout_for_other_datasets(tmp_path, camera_models):
    # a dataset whose layout has no writer (here a custom CSV) gets a dataset.csv
    rng = np.random.default_rng(1)
    rows = ["split,path,pid,camid,viewid"]
    for split in ("train", "query", "gallery"):
        for pid in range(3):
            for cam in range(2):
                name = f"{split}/{pid}_{cam}.png"
                (tmp_path / "src" / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)).save(tmp_path / "src" / name)
                rows.append(f"{split},{name},{pid},{cam},{(pid + cam) % 3}")
    (tmp_path / "src" / "dataset.csv").write_text("\n".join(rows) + "\n")
    source = build_dataset("custom", tmp_path / "src")
    models = train_style_models(source, TINY, tmp_path / "models", mode="camera", progress=False)
    root = write_style_set(source, models, tmp_path / "enlarged", progress=False)
    enlarged = load_style_set(root)
    assert (root / "dataset.csv").is_file()
    assert len(enlarged.train) == 2 * len(source.train)
    assert sorted((s.pid, s.camid, s.viewid) for s in enlarged.train) == sorted(
        [(s.pid, s.camid, s.viewid) for s in source.train] * 2)
    assert enlarged.has_views


@pytest.mark.slow
def test_errors_name_the_fix(market, vehicle_pair, camera_models, tmp_path):
    source, _ = vehicle_pair
    with pytest.raises(StyleError, match="needs a target"):
        train_style_models(source, TINY, tmp_path / "m", mode="domain", progress=False)
    with pytest.raises(StyleError, match="unknown style mode"):
        train_style_models(source, TINY, tmp_path / "m", mode="cameras", progress=False)
    no_cams = build_dataset("market1501", market.root)
    no_cams.has_cameras = False
    with pytest.raises(StyleError, match="mode='domain'"):
        camera_pairs(no_cams)
    with pytest.raises(StyleError, match="trained on"):
        write_style_set(source, camera_models, tmp_path / "x", progress=False)
    with pytest.raises(MissingStageError, match="corelib style train"):
        load_style_models(tmp_path / "nothing")
    with pytest.raises(MissingStageError, match="corelib style generate"):
        load_style_set(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------
# the colour-gap measure


def test_frechet_distance_matches_the_scipy_reference():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(150, 6, generator=g, dtype=torch.float64) * 0.5 + 0.3
    sx, sy = np.cov(x.numpy().T), np.cov(y.numpy().T)
    covmean = linalg.sqrtm(sx @ sy).real
    ref = float(((x.mean(0) - y.mean(0)) ** 2).sum()) + np.trace(sx + sy - 2 * covmean)
    assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_colour_statistics_see_a_tint():
    grey = [Image.new("RGB", (16, 32), (100 + i, 100 + i, 100 + i)) for i in range(5)]
    red = [Image.new("RGB", (16, 32), (180 + i, 100 + i, 100 + i)) for i in range(5)]
    s_grey, s_red = colour_statistics(grey, (32, 16)), colour_statistics(red, (32, 16))
    assert s_grey.shape == (5, 6)
    assert frechet_distance(s_grey, s_red) > 0.05 > frechet_distance(s_grey, s_grey)


@pytest.mark.slow
def test_style_gap_rows(camera_models, market, domain_models, vehicle_pair):
    rows = style_gap(market, camera_models, max_images=8, device="cpu")
    assert len(rows) == 2 * len(camera_models.pairs)
    assert {"pair", "from", "to", "before", "after", "ratio", "cycle_l1"} <= set(rows[0])
    total = summarize_gap(rows)
    assert total["ratio"] == pytest.approx(total["after"] / total["before"])
    source, target = vehicle_pair
    with pytest.raises(StyleError, match="target"):
        style_gap(source, domain_models)
    (row,) = style_gap(source, domain_models, target=target, max_images=8)
    assert row["to"] == target.name


@pytest.mark.slow
def test_figure_rows(camera_models, market, domain_models, vehicle_pair):
    rows, titles = camera_style_rows(market, camera_models)
    k = market.num_train_cams
    assert len(rows) == k and len(titles) == k and all(len(r[1]) == k for r in rows)
    source, target = vehicle_pair
    drows = domain_style_rows(source, target, domain_models, n=3)
    assert [len(r[1]) for r in drows] == [3, 3, 3]


# ---------------------------------------------------------------------------------------------
# pre-training on the enlarged set


@pytest.mark.slow
def test_pretrain_takes_the_enlarged_set(camera_models, market, tmp_path):
    from corelib.training import pretrain
    from corelib.training.pretrain import style_training_split

    root = write_style_set(market, camera_models, tmp_path / "enlarged", progress=False)
    train = style_training_split(root, market)
    assert len(train) == market.num_train_cams * len(market.train)
    cfg = PretrainCfg.smoke(epochs=1, iters_per_epoch=1, style_set=str(root))
    result = pretrain(cfg, market, tmp_path / "run", progress=False)
    assert result.last["epoch"] == 1
    state = torch.load(result.last_checkpoint, weights_only=True)
    assert state["cfg"]["style_set"] == str(root)


@pytest.mark.slow
def test_pretrain_refuses_a_set_of_another_source(camera_models, market, vehicle_pair, tmp_path):
    from corelib.training.pretrain import style_training_split

    root = write_style_set(market, camera_models, tmp_path / "enlarged", progress=False)
    with pytest.raises(ConfigError, match="was built from"):
        style_training_split(root, vehicle_pair[0])
    with pytest.raises(ConfigError, match="corelib style generate"):
        style_training_split(tmp_path / "missing", market)


@pytest.mark.slow
def test_cli_style_commands(synthetic_small, tmp_path, capsys):
    from corelib.cli import main

    data_root = Path(synthetic_small["vehicleid_like"]).parent
    src, tgt = Path(synthetic_small["vehicleid_like"]), Path(synthetic_small["veri_like"])
    assert main(["style", "train", "--mode", "domain", "--source", "veri776", str(src), "--target", "veri776",
                 str(tgt), "--out", str(tmp_path / "m"), "--smoke", "-o", "epochs=1", "--gap"]) == 0
    out = capsys.readouterr().out
    assert "1 style model(s) (domain-aware)" in out and "colour gap over 1 direction" in out
    assert main(["style", "generate", "--models", str(tmp_path / "m"), "--source", "veri776", str(src),
                 "--out", str(tmp_path / "set")]) == 0
    assert "style_set=" in capsys.readouterr().out
    # a camera-mode run on a source without cameras is a readable error, not a traceback
    assert main(["style", "generate", "--models", str(tmp_path / "nothing"), "--source", "veri776", str(src),
                 "--out", str(tmp_path / "x")]) == 2
    assert "corelib style train" in capsys.readouterr().err
    assert data_root.is_dir()


@pytest.mark.slow
@pytest.mark.gpu
def test_cuda_training_and_translation_in_bf16(tmp_path):
    a, b = _tiny_domains(tmp_path)
    cfg = StyleCfg.smoke(device="cuda", precision="bf16")
    result = train_cyclegan(a, b, cfg, tmp_path / "run", progress=False)
    assert next(result.model.parameters()).is_cuda
    assert all(np.isfinite(h["cycle"]) for h in result.history)
    model, cfg2 = load_cyclegan(result.checkpoint, device="cuda")
    from corelib.data.dataset import Sample
    from corelib.style import translate

    out = list(translate(model, cfg2, [Sample(str(a[0]), 0, 0)], "ab"))
    assert out[0][1].size == Image.open(a[0]).size
