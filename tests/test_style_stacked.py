"""Stacked CycleGAN training: several camera pairs at once equal one by one (same seed, CPU)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from corelib.config import StyleCfg
from corelib.errors import InvalidInputError
from corelib.style import (
    CycleGAN,
    StyleJob,
    load_cyclegan,
    stack_states,
    train_cyclegan,
    train_cyclegans,
    unstack_state,
)

CFG = StyleCfg.smoke(seed=5, epochs=2, decay_epochs=1)  # 3 epochs of 3 steps, batch 4, pool of 8


def _domains(root, pairs: int, sizes=None):
    """``pairs`` (A, B) image sets of 32 x 16 images, each side with its own tint."""
    rng = np.random.default_rng(0)
    out = []
    for p in range(pairs):
        n_a, n_b = sizes[p] if sizes else (5, 6)
        sides = []
        for side, n in (("a", n_a), ("b", n_b)):
            tint = rng.uniform(0.5, 1.2, 3)
            paths = []
            for i in range(n):
                img = rng.uniform(60, 200, (32, 16, 3)) * tint
                path = root / f"p{p}{side}_{i}.png"
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
                paths.append(path)
            sides.append(paths)
        out.append(sides)
    return out


def _jobs(root, domains, tag):
    return [StyleJob(a, b, root / tag / f"pair{p}", f"pair{p}") for p, (a, b) in enumerate(domains)]


def _assert_same_training(one, stacked):
    """The same weights, bit for bit, and the same logged losses (a per-pair mean sums in another
    order than a plain one: the last bit of a logged loss may differ, never a gradient)."""
    for r1, rs in zip(one, stacked):
        assert [h["epoch"] for h in r1.history] == [h["epoch"] for h in rs.history]
        for h1, hs in zip(r1.history, rs.history):
            for key in ("lr", "g_gan", "cycle", "identity", "d"):
                assert hs[key] == pytest.approx(h1[key], rel=1e-12, abs=0), key
        s1, ss = r1.model.state_dict(), rs.model.state_dict()
        for k, v in s1.items():
            assert torch.equal(ss[k], v), k


@pytest.fixture
def float64():
    """Train in float64, where the grouped and the plain convolutions of the CPU sum in the same
    order, so a stack must reproduce one-by-one training bit for bit. (In float32 they round
    differently, and Adam's first steps, about lr * sign(gradient), turn rounding-sized gradients,
    such as those of biases before an instance norm, into lr-sized differences.)"""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ---------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stacked_networks_compute_each_pair_alone(dtype):
    cfg = StyleCfg.smoke(residual_generator=True)
    torch.manual_seed(0)
    singles = [CycleGAN(cfg).to(dtype) for _ in range(3)]
    stacked = CycleGAN(cfg, stack=3).to(dtype)
    stacked.load_state_dict(stack_states([m.state_dict() for m in singles]))
    xs = [torch.rand(2, 3, 32, 16, dtype=dtype) * 2 - 1 for _ in range(3)]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for name in ("g_ab", "g_ba", "d_a", "d_b"):
        out = getattr(stacked, name)(torch.cat(xs, dim=1))
        # each pair owns its channels: 3 image channels per generator, 1 score map per discriminator
        assert out.shape[1] == (9 if name.startswith("g") else 3)
        for s, (single, x) in enumerate(zip(singles, xs)):
            alone = getattr(single, name)(x)
            width = alone.shape[1]
            assert torch.allclose(out[:, s * width:(s + 1) * width], alone, atol=tol, rtol=0), (name, s)
    # gradients: a sum of the pairs' losses gives each pair its own loss's gradient
    loss = (stacked.g_ab(torch.cat(xs, dim=1)) ** 2).mean(dim=(0, 2, 3)).reshape(3, 3).sum()
    loss.backward()
    grads = unstack_state({k: p.grad for k, p in stacked.named_parameters() if k.startswith("g_ab")}, 3)
    for single, x, grad in zip(singles, xs, grads):
        (single.g_ab(x) ** 2).mean(dim=(0, 2, 3)).sum().backward()
        for k, p in single.named_parameters():
            if k.startswith("g_ab"):
                assert torch.allclose(grad[k], p.grad, atol=tol * 10, rtol=tol * 10), k


def test_stack_and_unstack_are_inverse():
    torch.manual_seed(1)
    singles = [CycleGAN(StyleCfg.smoke()) for _ in range(2)]
    back = unstack_state(stack_states([m.state_dict() for m in singles]), 2)
    for single, state in zip(singles, back):
        assert state.keys() == single.state_dict().keys()
        assert all(torch.equal(v, state[k]) for k, v in single.state_dict().items())


# ---------------------------------------------------------------------------------------------
# training


@pytest.mark.slow
def test_stacked_training_equals_one_by_one(tmp_path, float64):
    domains = _domains(tmp_path, 3)
    one = train_cyclegans(_jobs(tmp_path, domains, "one"), CFG, stack=1, progress=False)
    stacked = train_cyclegans(_jobs(tmp_path, domains, "stacked"), CFG, stack=3, progress=False)
    assert next(stacked[0].model.parameters()).dtype == torch.float64
    _assert_same_training(one, stacked)
    # the pairs learned different things (a stack that mixed them up would not)
    w = [r.model.g_ab.net[1].weight for r in stacked]
    assert not torch.allclose(w[0], w[1], atol=1e-4)


@pytest.mark.slow
def test_stacked_training_in_float32_differs_by_rounding_only(tmp_path):
    from corelib.style import style_transforms

    domains = _domains(tmp_path, 3)
    one = train_cyclegans(_jobs(tmp_path, domains, "one"), CFG, stack=1, progress=False)
    stacked = train_cyclegans(_jobs(tmp_path, domains, "stacked"), CFG, stack=3, progress=False)
    tf = style_transforms(CFG, train=False)
    for (a, _), r1, rs in zip(domains, one, stacked):
        for h1, hs in zip(r1.history, rs.history):
            for key in ("g_gan", "cycle", "identity", "d"):
                assert hs[key] == pytest.approx(h1[key], rel=1e-2), key
        x = torch.stack([tf(Image.open(p)) for p in a])
        with torch.no_grad():  # the translations agree (measured: within 0.025 of the [-1, 1] range)
            assert (r1.model.g_ab(x) - rs.model.g_ab(x)).abs().max() < 0.1
    # every pair's folder is what train_cyclegan writes: a loadable single CycleGAN, its own log
    for job, result in zip(_jobs(tmp_path, domains, "stacked"), stacked):
        model, cfg = load_cyclegan(job.out_dir / "last.pt")
        assert cfg == CFG and model.stack == 1
        assert all(torch.equal(v, result.model.state_dict()[k].cpu()) for k, v in model.state_dict().items())
        assert len((job.out_dir / "metrics.jsonl").read_text().splitlines()) == CFG.total_epochs
    # saved moments are the pair's own slices, not views of the whole stack's storage
    one_size = os.path.getsize(tmp_path / "one" / "pair0" / "last.pt")
    assert os.path.getsize(tmp_path / "stacked" / "pair0" / "last.pt") < 1.2 * one_size


@pytest.mark.slow
def test_single_pair_training_is_the_one_pair_stack(tmp_path):
    (a, b), = _domains(tmp_path, 1)
    alone = train_cyclegan(a, b, CFG, tmp_path / "alone", progress=False)
    listed, = train_cyclegans([StyleJob(a, b, tmp_path / "listed")], CFG, stack=4, progress=False)
    for k, v in alone.model.state_dict().items():
        assert torch.equal(v, listed.model.state_dict()[k]), k


@pytest.mark.slow
def test_pairs_with_other_steps_per_epoch_train_in_their_own_stack(tmp_path, float64, monkeypatch):
    import corelib.style.cyclegan as cg

    stacks = []
    real = cg._train_stack
    monkeypatch.setattr(cg, "_train_stack", lambda jobs, *a, **k: stacks.append([j.desc for j in jobs]) or real(jobs, *a, **k))
    cfg = CFG.with_overrides({"iters_per_epoch": 0, "batch_size": 2})  # steps = ceil(larger side / 2)
    domains = _domains(tmp_path, 3, sizes=[(3, 4), (5, 2), (2, 4)])  # 2, 3 and 2 steps per epoch
    one = train_cyclegans(_jobs(tmp_path, domains, "one"), cfg, stack=1, progress=False)
    stacks.clear()
    stacked = train_cyclegans(_jobs(tmp_path, domains, "stacked"), cfg, stack=3, progress=False)
    assert stacks == [["pair0", "pair2"], ["pair1"]]
    _assert_same_training(one, stacked)


@pytest.mark.slow
def test_stacked_run_resumes_alone_and_stacked(tmp_path, monkeypatch, float64):
    import corelib.runtime.loop as loop

    domains = _domains(tmp_path, 2)
    straight = train_cyclegans(_jobs(tmp_path, domains, "straight"), CFG, stack=2, progress=False)

    real_save = loop.save_checkpoint
    calls = {"n": 0}

    def save_then_stop(state, path):
        real_save(state, path)
        calls["n"] += 1
        if calls["n"] == 2:  # both pairs' first epoch is on disk
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_cyclegans(_jobs(tmp_path, domains, "stopped"), CFG, stack=2, progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    jobs = _jobs(tmp_path, domains, "stopped")
    # pair 0 goes on alone with the single-pair loop, pair 1 in a stack of one
    resumed = [train_cyclegan(jobs[0].images_a, jobs[0].images_b, CFG, jobs[0].out_dir, progress=False),
               *train_cyclegans(jobs[1:], CFG, stack=2, progress=False)]
    _assert_same_training(straight, resumed)


def test_stack_must_be_positive(tmp_path):
    (a, b), = _domains(tmp_path, 1)
    with pytest.raises(InvalidInputError, match="stack=0"):
        train_cyclegans([StyleJob(a, b, tmp_path / "run")], CFG, stack=0, progress=False)
    with pytest.raises(ValueError, match="stack_pairs"):
        StyleCfg(stack_pairs=0)
    with pytest.raises(InvalidInputError, match="same folder"):  # before anything is written
        train_cyclegans([StyleJob(a, b, tmp_path / "one"), StyleJob(a, b, tmp_path / "one")], CFG, progress=False)
    assert not (tmp_path / "one").exists()


@pytest.mark.slow
@pytest.mark.gpu
def test_stacked_training_on_cuda_in_bf16(tmp_path):
    domains = _domains(tmp_path, 2)
    cfg = CFG.with_overrides({"device": "cuda", "precision": "bf16"})
    stacked = train_cyclegans(_jobs(tmp_path, domains, "bf16"), cfg, stack=2, progress=False)
    for result in stacked:
        assert next(result.model.parameters()).is_cuda
        assert all(np.isfinite(h["cycle"]) and np.isfinite(h["d"]) for h in result.history)
        model, _ = load_cyclegan(result.checkpoint, device="cuda")
        assert model.stack == 1
