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
- :func:`train_cyclegans`: several of them (the camera pairs of a source), one after the other,
  each with the result and the files :func:`train_cyclegan` gives it.
"""

from __future__ import annotations

import math
import time
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
from ..runtime import Runtime, StageRun, load_into, rng_state, set_rng_state
from .cyclegan_data import EpochBatches, ImagePool, StyleJob, job_samples, steps_per_epoch, style_transforms
from .gan_losses import l1_loss, lsgan_loss
from .networks import CycleGAN

STYLE_RESUME_FREE = frozenset({"device", "num_workers", "generate_batch_size"})
"""StyleCfg fields a resumed CycleGAN may change: where it runs and how fast it loads and translates."""


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
    return _train_pair(job, job_samples(job), cfg, resume=resume, overwrite=overwrite, progress=progress)


def train_cyclegans(
    jobs: Sequence[StyleJob],
    cfg: StyleCfg,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[CycleGANResult]:
    """Train several CycleGANs with one recipe, one after the other.

    Each job gets what :func:`train_cyclegan` would give it, in its own folder (``last.pt``,
    ``metrics.jsonl``, ``config.yaml``; resumable by either function). Every job's images are checked
    before the first one trains.

    Args:
        jobs: the CycleGANs to train, e.g. one per camera pair.
        resume, overwrite, progress: as :func:`train_cyclegan`, for every job.

    Returns:
        One :class:`CycleGANResult` per job, in the order of ``jobs``.
    """
    folders = [Path(job.out_dir).resolve() for job in jobs]
    repeated = sorted({str(f) for f in folders if folders.count(f) > 1})
    if repeated:
        raise InvalidInputError(f"two CycleGANs would train into the same folder ({', '.join(repeated)}); give each "
                                f"StyleJob its own out_dir")
    samples = [job_samples(job) for job in jobs]
    results = []
    bar = tqdm(total=len(jobs), desc="style models", disable=not progress or len(jobs) == 1, unit="pair")
    for job, smp in zip(jobs, samples):
        results.append(_train_pair(job, smp, cfg, resume=resume, overwrite=overwrite, progress=progress))
        bar.update(1)
    bar.close()
    return results


def _train_pair(job: StyleJob, samples: list[list[Sample]], cfg: StyleCfg, *, resume: bool, overwrite: bool,
                progress: bool) -> CycleGANResult:
    """Train the CycleGAN of ``job`` on ``samples`` (its two domains), or continue it."""
    rt = Runtime(cfg.device, cfg.precision)
    with StageRun(job.out_dir, cfg, rt, stage="style", resume=resume, overwrite=overwrite,
                  free=STYLE_RESUME_FREE) as run:
        seed_everything(cfg.seed)
        device = rt.device
        model = CycleGAN(cfg).to(device)
        gens, discs = [model.g_ab, model.g_ba], [model.d_a, model.d_b]
        dtype = next(model.parameters()).dtype
        opt_g = torch.optim.Adam([p for g in gens for p in g.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_d = torch.optim.Adam([p for d in discs for p in d.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, cfg.lr_factor)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, cfg.lr_factor)
        pools = [ImagePool(cfg.pool_size, cfg.seed + 11), ImagePool(cfg.pool_size, cfg.seed + 12)]  # fakes of A, of B
        steps = steps_per_epoch(cfg, samples)
        tf = style_transforms(cfg, train=True)
        samplers, loaders = [], []  # domain A, domain B
        for domain, s in enumerate(samples):
            sm = EpochBatches(len(s), cfg.batch_size, steps, cfg.seed, domain)
            samplers.append(sm)
            loaders.append(build_loader(s, tf, cfg.batch_size, batch_sampler=sm, num_workers=cfg.num_workers,
                                        seed=cfg.seed + domain, pin_memory=rt.pin_memory))
        if run.resumed:
            state = run.state
            load_into(model, state, run.last_path)
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            sched_g.load_state_dict(state["sched_g"])
            sched_d.load_state_dict(state["sched_d"])
            for pool, ps in zip(pools, state["pools"]):
                pool.load_state_dict(ps)
            set_rng_state(state["rng"])
        lam_c, lam_i = cfg.lambda_cycle, cfg.lambda_cycle * cfg.lambda_identity
        names = ("g_gan", "cycle", "identity", "d")

        run.begin()  # every check has passed: config.yaml and metrics.jsonl from here
        for epoch in range(run.start, cfg.total_epochs):
            t0 = time.perf_counter()
            model.train()
            for sm in samplers:
                sm.set_epoch(epoch)
            total = dict.fromkeys(names, 0.0)
            bar = tqdm(zip(*loaders), total=steps, desc=f"{job.desc} {epoch + 1}/{cfg.total_epochs}",
                       disable=not progress, leave=False)
            for batch_a, batch_b in bar:
                # the weights' dtype (float64 in the tests)
                real_a = batch_a[0].to(device, dtype, non_blocking=True)
                real_b = batch_b[0].to(device, dtype, non_blocking=True)
                # generators: fool both discriminators, reconstruct both ways, leave own-style images alone
                _set_requires_grad(discs, False)
                with rt.autocast():
                    fake_b, fake_a = model.g_ab(real_a), model.g_ba(real_b)
                    g_gan = lsgan_loss(model.d_b(fake_b), True) + lsgan_loss(model.d_a(fake_a), True)
                    cycle = l1_loss(model.g_ba(fake_b), real_a) + l1_loss(model.g_ab(fake_a), real_b)
                    identity = (l1_loss(model.g_ab(real_b), real_b) + l1_loss(model.g_ba(real_a), real_a)
                                if lam_i > 0 else torch.zeros((), device=device))
                    loss_g = g_gan + lam_c * cycle + lam_i * identity
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                # discriminators: real vs (pooled) fake, each term halved as in CycleGAN
                _set_requires_grad(discs, True)
                with rt.autocast():
                    pooled_b = pools[1].query(fake_b.detach())
                    pooled_a = pools[0].query(fake_a.detach())
                    loss_d_b = 0.5 * (lsgan_loss(model.d_b(real_b), True) + lsgan_loss(model.d_b(pooled_b), False))
                    loss_d_a = 0.5 * (lsgan_loss(model.d_a(real_a), True) + lsgan_loss(model.d_a(pooled_a), False))
                    loss_d = loss_d_b + loss_d_a
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                values = dict(zip(names, torch.stack([g_gan, cycle, identity, loss_d]).detach().tolist()))
                if not all(math.isfinite(v) for v in values.values()):
                    raise FloatingPointError(f"{job.desc}: non-finite CycleGAN loss at epoch {epoch + 1} ({values}); "
                                             f"lower StyleCfg.lr or use precision='fp32'")
                for k, v in values.items():
                    total[k] += v / steps
                bar.set_postfix(cycle=f"{values['cycle']:.3f}", d=f"{values['d']:.3f}")
                run.stop_epoch(epoch, finished=False)  # the job's time is up: last.pt holds the epoch before
            lr = opt_g.param_groups[0]["lr"]
            sched_g.step()
            sched_d.step()
            run.end_epoch(epoch, {"epoch": epoch + 1, "lr": lr, **total}, t0, model=model,
                          last={"opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "sched_g": sched_g.state_dict(),
                                "sched_d": sched_d.state_dict(), "rng": rng_state(),
                                "pools": [p.state_dict() for p in pools]})
            run.stop_epoch(epoch, finished=True)
        return CycleGANResult(model.eval(), run.last_path, run.log.history)
