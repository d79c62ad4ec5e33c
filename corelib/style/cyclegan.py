"""CycleGAN training for unpaired style transfer between two image domains (cameras or datasets).

CORE-ReID V2 enlarges its labelled source set with style-transferred copies (docs/method.md §2.1-2.2):
one CycleGAN per camera pair (CamStyle) or one per source <-> target pair. This module holds the
training loop; the networks are in :mod:`corelib.style.networks`, the data in
:mod:`corelib.style.cyclegan_data`, the losses in :mod:`corelib.style.gan_losses`, and
:mod:`corelib.style.model_index` uses them on datasets.

- :func:`train_cyclegan`: LSGAN objective, cycle L1 (weight ``lambda_cycle``), identity L1
  (``lambda_identity * lambda_cycle``), an image-history pool for the discriminators, Adam
  (``lr``, ``beta1``) with the constant-then-linear-decay schedule, an atomic full-state checkpoint
  after every epoch and ``resume``.
- :func:`train_cyclegans`: several of them (the camera pairs of a source), up to ``stack`` at
  once as one stacked network (:mod:`corelib.style.stacking`), each pair with the result and the
  files :func:`train_cyclegan` gives it.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

from ..config import StyleCfg
from ..data.batches import build_loader
from ..data.dataset import Sample
from ..errors import InvalidInputError
from ..progress import tqdm
from ..repro import seed_everything
from ..runtime import Runtime, StageRun, rng_state, set_rng_state
from .cyclegan_data import EpochBatches, ImagePool, StyleJob, job_samples, steps_per_epoch, style_transforms
from .gan_losses import l1_loss, lsgan_loss
from .networks import CycleGAN
from .stacking import PairStack, plan_stacks, query_pools

STYLE_RESUME_FREE = frozenset({"device", "num_workers", "generate_batch_size", "stack_pairs"})
"""StyleCfg fields a resumed CycleGAN may change: where it runs, how many pairs train at once, how fast it
translates."""


@dataclass
class CycleGANResult:
    """What :func:`train_cyclegan` leaves behind."""

    model: CycleGAN  # on the training device, eval mode
    checkpoint: Path  # last.pt: the full state, also what generation loads
    history: list[dict]  # one record of mean losses per epoch


def _set_requires_grad(modules: Sequence[nn.Module], flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def train_cyclegan(
    images_a: Sequence[Union[str, Path, Sample]],
    images_b: Sequence[Union[str, Path, Sample]],
    cfg: StyleCfg,
    out_dir: Union[str, Path],
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "cyclegan",
) -> CycleGANResult:
    """Train a CycleGAN between two unpaired image sets; resumable, one checkpoint per epoch.

    Args:
        images_a, images_b: image paths (or ``Sample``s) of domain A and domain B.
        cfg: networks, losses, schedule and data settings.
        out_dir: receives ``last.pt`` (full state after every epoch) and ``metrics.jsonl``.
        resume: continue from ``out_dir/last.pt`` when present (a finished run returns at once);
            on the CPU the result equals an uninterrupted run.
        overwrite: set an existing run in ``out_dir`` aside (``<out_dir>.replaced-<time>``) and train
            again; without it or ``resume`` a folder that holds a run is refused.
        progress: show a tqdm bar per epoch.
        desc: label of the progress bar (e.g. the camera pair).

    Raises:
        ValueError: a domain without images, or a checkpoint written with other network sizes.
    """
    job = StyleJob(images_a, images_b, out_dir, desc)
    return _train_stack([job], [job_samples(job)], cfg, resume=resume, overwrite=overwrite, progress=progress)[0]


def train_cyclegans(
    jobs: Sequence[StyleJob],
    cfg: StyleCfg,
    *,
    stack: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[CycleGANResult]:
    """Train several CycleGANs with one recipe, up to ``stack`` of them at once on one device.

    Each job gets what :func:`train_cyclegan` would give it, in its own folder (``last.pt``,
    ``metrics.jsonl``, ``config.yaml``; resumable by either function). Jobs with the same steps
    per epoch and the same epoch to start from train together as one stacked CycleGAN
    (``CycleGAN(cfg, stack=n)``: grouped convolutions, one forward and backward for all of them),
    which fills a GPU that batch-1 training of one pair leaves mostly idle. The stacked pairs see
    the same images, crops, initial weights and pool draws as one by one, and their losses and
    gradients are separate (a sum over pairs with disjoint parameters; Adam is element-wise), so
    the results equal one-by-one training up to the rounding of the grouped kernels (the tests
    compare them).

    Args:
        jobs: the CycleGANs to train, e.g. one per camera pair.
        stack: most pairs trained at once; ``None`` takes ``cfg.stack_pairs``.
        resume, overwrite, progress: as :func:`train_cyclegan`, for every job.

    Returns:
        One :class:`CycleGANResult` per job, in the order of ``jobs``.
    """
    stack = cfg.stack_pairs if stack is None else stack
    if stack < 1:
        raise InvalidInputError(f"stack={stack}: at least one CycleGAN trains at a time")
    folders = [Path(job.out_dir).resolve() for job in jobs]
    repeated = sorted({str(f) for f in folders if folders.count(f) > 1})
    if repeated:
        raise InvalidInputError(f"two CycleGANs would train into the same folder ({', '.join(repeated)}); give each "
                                f"StyleJob its own out_dir")
    samples = [job_samples(job) for job in jobs]
    stacks = plan_stacks([steps_per_epoch(cfg, smp) for smp in samples], [job.out_dir for job in jobs], stack, resume)
    results: list = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="style models", disable=not progress or len(jobs) == 1, unit="pair")
    for chunk in stacks:
        done = _train_stack([jobs[i] for i in chunk], [samples[i] for i in chunk], cfg, resume=resume,
                            overwrite=overwrite, progress=progress)
        for i, result in zip(chunk, done):
            results[i] = result
        bar.update(len(chunk))
    bar.close()
    return results


def _train_stack(jobs: Sequence[StyleJob], samples: Sequence[list[list[Sample]]], cfg: StyleCfg, *, resume: bool,
                 overwrite: bool, progress: bool) -> list[CycleGANResult]:
    """Train ``len(jobs)`` CycleGANs (same steps per epoch, same start) as one stacked CycleGAN."""
    n = len(jobs)
    rt = Runtime(cfg.device, cfg.precision)
    with ExitStack() as held:
        runs = [held.enter_context(StageRun(job.out_dir, cfg, rt, stage="style", resume=resume, overwrite=overwrite,
                                            free=STYLE_RESUME_FREE)) for job in jobs]
        if len({run.start for run in runs}) > 1:  # train_cyclegans groups by start epoch; a run changed under us
            raise InvalidInputError(f"{', '.join(j.desc for j in jobs)}: these runs continue from different epochs "
                                    f"and cannot train stacked; run them with stack=1")
        seed_everything(cfg.seed)
        device = rt.device
        stacked = PairStack(cfg, n, device)
        model = stacked.model
        gens, discs = [model.g_ab, model.g_ba], [model.d_a, model.d_b]
        dtype = next(model.parameters()).dtype
        opt_g = torch.optim.Adam([p for g in gens for p in g.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_d = torch.optim.Adam([p for d in discs for p in d.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, cfg.lr_factor)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, cfg.lr_factor)
        # pools[s] = [fakes of A, fakes of B] of pair s, each seeded as one by one
        pools = [[ImagePool(cfg.pool_size, cfg.seed + 11), ImagePool(cfg.pool_size, cfg.seed + 12)] for _ in range(n)]
        steps = steps_per_epoch(cfg, samples[0])
        tf = style_transforms(cfg, train=True)
        workers = cfg.num_workers if n == 1 else math.ceil(cfg.num_workers / n)  # keyed draws: any count gives the same images
        samplers, loaders = [], []  # per pair: domain A, domain B
        for smp in samples:
            for domain, s in enumerate(smp):
                sm = EpochBatches(len(s), cfg.batch_size, steps, cfg.seed, domain)
                samplers.append(sm)
                loaders.append(build_loader(s, tf, cfg.batch_size, batch_sampler=sm, num_workers=workers,
                                            seed=cfg.seed + domain, pin_memory=rt.pin_memory))
        if runs[0].resumed:
            states = [run.state for run in runs]
            stacked.load(states, [run.last_path for run in runs], opt_g, opt_d)
            sched_g.load_state_dict(states[0]["sched_g"])
            sched_d.load_state_dict(states[0]["sched_d"])
            for pair_pools, state in zip(pools, states):
                for pool, ps in zip(pair_pools, state["pools"]):
                    pool.load_state_dict(ps)
            set_rng_state(states[0]["rng"])
        lam_c, lam_i = cfg.lambda_cycle, cfg.lambda_cycle * cfg.lambda_identity
        names = ("g_gan", "cycle", "identity", "d")
        label = jobs[0].desc if n == 1 else f"{'+'.join(j.desc for j in jobs)}"

        for run in runs:
            run.begin()  # every check has passed: config.yaml and metrics.jsonl from here
        for epoch in range(runs[0].start, cfg.total_epochs):
            t0 = time.perf_counter()
            model.train()
            for sm in samplers:
                sm.set_epoch(epoch)
            totals = [dict.fromkeys(names, 0.0) for _ in range(n)]
            bar = tqdm(zip(*loaders), total=steps, desc=f"{label} {epoch + 1}/{cfg.total_epochs}", disable=not progress,
                       leave=False)
            for batches in bar:
                real_a, real_b = stacked.images(batches, device, dtype)  # the weights' dtype (float64 in the tests)
                # generators: fool both discriminators, reconstruct both ways, leave own-style images alone
                _set_requires_grad(discs, False)
                with rt.autocast():
                    fake_b, fake_a = model.g_ab(real_a), model.g_ba(real_b)
                    g_gan = lsgan_loss(model.d_b(fake_b), True, n) + lsgan_loss(model.d_a(fake_a), True, n)
                    cycle = l1_loss(model.g_ba(fake_b), real_a, n) + l1_loss(model.g_ab(fake_a), real_b, n)
                    identity = (l1_loss(model.g_ab(real_b), real_b, n) + l1_loss(model.g_ba(real_a), real_a, n)
                                if lam_i > 0 else torch.zeros(n, device=device))
                    # one sum over pairs: each pair's parameters get its own loss's gradient
                    loss_g = (g_gan + lam_c * cycle + lam_i * identity).sum()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                # discriminators: real vs (pooled) fake, each term halved as in CycleGAN
                _set_requires_grad(discs, True)
                with rt.autocast():
                    pooled_b = query_pools([p[1] for p in pools], fake_b.detach())
                    pooled_a = query_pools([p[0] for p in pools], fake_a.detach())
                    loss_d_b = 0.5 * (lsgan_loss(model.d_b(real_b), True, n) + lsgan_loss(model.d_b(pooled_b), False, n))
                    loss_d_a = 0.5 * (lsgan_loss(model.d_a(real_a), True, n) + lsgan_loss(model.d_a(pooled_a), False, n))
                    loss_d = loss_d_b + loss_d_a
                opt_d.zero_grad(set_to_none=True)
                loss_d.sum().backward()
                opt_d.step()
                per_pair = torch.stack([g_gan, cycle, identity, loss_d]).detach().t().tolist()
                for job, total, row in zip(jobs, totals, per_pair):
                    values = dict(zip(names, row))
                    if not all(math.isfinite(v) for v in row):
                        raise FloatingPointError(f"{job.desc}: non-finite CycleGAN loss at epoch {epoch + 1} ({values}); "
                                                 f"lower StyleCfg.lr or use precision='fp32'")
                    for k, v in values.items():
                        total[k] += v / steps
                bar.set_postfix(cycle=f"{per_pair[0][1]:.3f}", d=f"{per_pair[0][3]:.3f}")
            lr = opt_g.param_groups[0]["lr"]
            sched_g.step()
            sched_d.step()
            shared = {"sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(), "rng": rng_state()}
            for run, (single, og, od), total, pair_pools in zip(runs, stacked.pair_states(opt_g, opt_d), totals, pools):
                run.end_epoch(epoch, {"epoch": epoch + 1, "lr": lr, **total}, t0, model=single,
                              last={"opt_g": og, "opt_d": od, **shared, "pools": [p.state_dict() for p in pair_pools]})
        return [CycleGANResult(single, run.last_path, run.log.history)
                for single, run in zip(stacked.trained(device), runs)]

