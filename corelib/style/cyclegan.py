"""CycleGAN for unpaired style transfer between two image domains (cameras or datasets).

CORE-ReID V2 enlarges its labelled source set with style-transferred copies (docs/method.md §2.1-2.2):
one CycleGAN per camera pair (CamStyle) or one per source <-> target pair. This module holds the
networks and their training; :mod:`corelib.style.enlarge` uses them on datasets.

- :class:`ResnetGenerator`: reflection-padded 7x7 convolution, ``n_down`` stride-2 convolutions,
  ``blocks`` residual blocks, as many transposed convolutions back, a 7x7 convolution and tanh;
  instance norm throughout (Johnson et al. 2016, as CycleGAN uses it).
- :class:`PatchDiscriminator`: ``layers`` stride-2 4x4 convolutions, one stride-1, a 1-channel
  map of real/fake scores per patch (70x70 patches at ``layers=3``).
- :func:`train_cyclegan`: LSGAN objective, cycle L1 (weight ``lambda_cycle``), identity L1
  (``lambda_identity * lambda_cycle``), an image-history pool for the discriminators, Adam
  (``lr``, ``beta1``) with the constant-then-linear-decay schedule, an atomic full-state checkpoint
  after every epoch and ``resume``.
- :func:`train_cyclegans`: several of them (the camera pairs of a source), up to ``stack`` at
  once as one stacked network (``CycleGAN(cfg, stack=n)``, grouped convolutions), each pair with
  the result and the files :func:`train_cyclegan` gives it.

Images are tensors in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..config import StyleCfg
from ..data.batches import build_loader
from ..data.dataset import Sample
from ..errors import InvalidInputError
from ..repro import seed_everything
from ..runtime import Runtime, StageRun, load_checkpoint, load_into, rng_state, set_rng_state

STYLE_RESUME_FREE = frozenset({"device", "num_workers", "generate_batch_size", "stack_pairs"})
"""StyleCfg fields a resumed CycleGAN may change: where it runs, how many pairs train at once, how fast it
translates."""

# --------------------------------------------------------------------------------------------
# networks


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, stack: int = 1) -> None:
        super().__init__()
        c, g = channels * stack, stack
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, groups=g), nn.InstanceNorm2d(c), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, groups=g), nn.InstanceNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator: encoder, residual blocks, decoder; output in [-1, 1].

    Args:
        ngf: filters of the first convolution; each downsampling doubles them.
        blocks: residual blocks at the bottleneck.
        n_down: stride-2 convolutions (input height and width must be divisible by ``2**n_down``).
        residual: predict a change of the input instead of the image, ``tanh(atanh(x) + h)``
            (not CycleGAN's generator): training starts near the identity mapping, so colour and
            illumination changes, most of a camera's style, are learned in far fewer steps.
        stack: independent generators held side by side (:func:`stack_states`): every convolution
            has ``groups=stack``, input and output are ``(N, 3 * stack, H, W)``, channels
            ``3s .. 3s + 2`` belonging to generator ``s``. Instance norm and the element-wise layers
            act per channel, so generator ``s`` computes what it would alone.
    """

    def __init__(self, ngf: int = 64, blocks: int = 9, n_down: int = 2, residual: bool = False,
                 stack: int = 1) -> None:
        super().__init__()
        g = stack
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3 * g, ngf * g, 7, groups=g),
                                   nn.InstanceNorm2d(ngf * g), nn.ReLU(True)]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch * g, ch * 2 * g, 3, stride=2, padding=1, groups=g), nn.InstanceNorm2d(ch * 2 * g),
                       nn.ReLU(True)]
            ch *= 2
        layers += [_ResidualBlock(ch, g) for _ in range(blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(ch * g, ch // 2 * g, 3, stride=2, padding=1, output_padding=1, groups=g),
                       nn.InstanceNorm2d(ch // 2 * g), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch * g, 3 * g, 7, groups=g)]
        self.net = nn.Sequential(*layers)
        self.n_down, self.residual, self.stack = n_down, residual, stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        if self.residual:  # in the pre-tanh space of the input, so the output stays in (-1, 1)
            h = h + torch.atanh(x.clamp(-0.999, 0.999))
        return torch.tanh(h)


class PatchDiscriminator(nn.Module):
    """PatchGAN: one real/fake score per overlapping patch (LSGAN: no sigmoid).

    ``stack`` discriminators side by side, as :class:`ResnetGenerator`: input ``(N, 3 * stack, H, W)``,
    output ``(N, stack, h, w)``, one score map per discriminator.
    """

    def __init__(self, ndf: int = 64, layers: int = 3, stack: int = 1) -> None:
        super().__init__()
        g = stack
        seq: list[nn.Module] = [nn.Conv2d(3 * g, ndf * g, 4, stride=2, padding=1, groups=g), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < layers else 1  # the last widening layer keeps the resolution
            seq += [nn.Conv2d(ndf * prev * g, ndf * mult * g, 4, stride=stride, padding=1, groups=g),
                    nn.InstanceNorm2d(ndf * mult * g), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * mult * g, g, 4, stride=1, padding=1, groups=g)]
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init_weights(module: nn.Module) -> None:
    # CycleGAN's "normal" init: N(0, 0.02) weights, zero biases
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CycleGAN(nn.Module):
    """The two generators (A -> B, B -> A) and two discriminators of one domain pair.

    ``stack > 1`` holds the networks of ``stack`` domain pairs side by side (grouped convolutions,
    images of pair ``s`` in channels ``3s .. 3s + 2``), so that one forward trains them all; build it
    from single models with :func:`stack_states` and take them apart with :func:`unstack_state`.
    """

    def __init__(self, cfg: StyleCfg, stack: int = 1) -> None:
        super().__init__()
        for size, name in ((cfg.height, "height"), (cfg.width, "width")):
            if size % (2 ** cfg.gen_downsampling):
                raise InvalidInputError(f"StyleCfg.{name}={size} must be divisible by 2**gen_downsampling="
                                 f"{2 ** cfg.gen_downsampling}")
        gen = (cfg.ngf, cfg.gen_blocks, cfg.gen_downsampling, cfg.residual_generator, stack)
        self.g_ab = ResnetGenerator(*gen)
        self.g_ba = ResnetGenerator(*gen)
        self.d_a = PatchDiscriminator(cfg.ndf, cfg.disc_layers, stack)  # tells real A from B -> A fakes
        self.d_b = PatchDiscriminator(cfg.ndf, cfg.disc_layers, stack)
        self.stack = stack
        self.apply(_init_weights)

    def generator(self, direction: str) -> ResnetGenerator:
        """``"ab"`` (A -> B) or ``"ba"``."""
        if direction not in ("ab", "ba"):
            raise InvalidInputError(f"direction must be 'ab' or 'ba', got {direction!r}")
        return self.g_ab if direction == "ab" else self.g_ba


def stack_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of ``CycleGAN(cfg, stack=len(states))`` holding these single CycleGANs.

    A grouped convolution's weight is its groups' weights one after another along dimension 0
    (``(groups * out, in, k, k)``, or ``(groups * in, out, k, k)`` transposed), and so is its bias.
    """
    return {k: torch.cat([s[k] for s in states]) for k in states[0]}


def unstack_state(state: Mapping[str, torch.Tensor], stack: int) -> list[dict[str, torch.Tensor]]:
    """The single CycleGANs' state dicts inside a stacked one (views: clone before saving)."""
    return [{k: v.unflatten(0, (stack, -1))[s] for k, v in state.items()} for s in range(stack)]


def _stack_optimizer_states(states: Sequence[dict]) -> dict:
    # Adam's moments have their parameter's shape; its step count is one scalar, equal in a stack
    first = states[0]
    merged = {}
    for idx, entry in first["state"].items():
        merged[idx] = {k: (torch.cat([s["state"][idx][k] for s in states]) if v.dim() else v)
                       for k, v in entry.items()}
    return {"state": merged, "param_groups": first["param_groups"]}


def _unstack_optimizer_state(state: dict, stack: int) -> list[dict]:
    return [{"state": {idx: {k: (v.unflatten(0, (stack, -1))[s].clone() if v.dim() else v.clone())
                             for k, v in entry.items()} for idx, entry in state["state"].items()},
             "param_groups": state["param_groups"]} for s in range(stack)]


# --------------------------------------------------------------------------------------------
# data


def style_transforms(cfg: StyleCfg, *, train: bool) -> T.Compose:
    """PIL image -> tensor in [-1, 1] at (height, width); training adds the resize-crop-flip jitter."""
    norm = [T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    size = (cfg.height, cfg.width)
    if not train:
        return T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC), *norm])
    load = (round(cfg.height * cfg.load_scale), round(cfg.width * cfg.load_scale))
    return T.Compose([T.Resize(load, interpolation=InterpolationMode.BICUBIC), T.RandomCrop(size),
                      T.RandomHorizontalFlip(), *norm])


def to_pil(images: torch.Tensor) -> list:
    """Generator outputs in [-1, 1] (N, 3, H, W) -> PIL RGB images."""
    from PIL import Image

    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


class _EpochBatches(Sampler):
    """``steps`` batches of one domain per epoch, drawn from seeded random permutations.

    Batches are lists of ``(index, (domain, epoch, step, slot))`` keys, so each image's crop and
    flip are a function of the seed and its place in the stream (:class:`ImageDataset` keyed
    draws): an epoch replays identically after a resume, with any number of workers.
    """

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, domain: int) -> None:
        self.n, self.batch_size, self.steps, self.seed, self.domain, self.epoch = n, batch_size, steps, seed, domain, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list]:
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.domain, self.epoch]).generate_state(1)[0]))
        need = self.steps * self.batch_size
        order = torch.cat([torch.randperm(self.n, generator=gen) for _ in range(math.ceil(need / self.n))])[:need]
        for step in range(self.steps):
            chunk = order[step * self.batch_size:(step + 1) * self.batch_size].tolist()
            yield [(i, (self.domain, self.epoch, step, slot)) for slot, i in enumerate(chunk)]


class ImagePool:
    """History of generated images (Shrivastava et al. 2017, as CycleGAN uses it).

    Until the pool holds ``size`` images every fake is stored and returned; afterwards each fake
    is, with probability 1/2, swapped for a stored one (which is returned instead). The
    discriminator thus also sees older generator outputs, which damps oscillation.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.images = size, []
        self.gen = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.cpu())
                out.append(img)
            elif torch.rand(1, generator=self.gen).item() < 0.5:
                j = int(torch.randint(self.size, (1,), generator=self.gen))
                old = self.images[j]
                self.images[j] = img.cpu()
                out.append(old.to(img.device))
            else:
                out.append(img)
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"images": torch.cat(self.images) if self.images else torch.empty(0), "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"].split(1)) if state["images"].numel() else []
        self.gen.set_state(state["rng"])


# --------------------------------------------------------------------------------------------
# training


@dataclass
class CycleGANResult:
    """What :func:`train_cyclegan` leaves behind."""

    model: CycleGAN  # on the training device, eval mode
    checkpoint: Path  # last.pt: the full state, also what generation loads
    history: list[dict]  # one record of mean losses per epoch


@dataclass
class StyleJob:
    """One CycleGAN to train: its two unpaired image sets, its folder and its progress label."""

    images_a: Sequence[Union[str, Path, Sample]]
    images_b: Sequence[Union[str, Path, Sample]]
    out_dir: Union[str, Path]
    desc: str = "cyclegan"


def _pair_means(values: torch.Tensor, stack: int) -> torch.Tensor:
    """``(stack,)`` means of a ``(N, stack * c, ...)`` tensor, one per stacked pair."""
    if stack == 1:  # the plain mean, so that one pair computes exactly what it always did
        return values.mean().view(1)
    return values.reshape(values.shape[0], stack, -1).mean(dim=(0, 2))


def _loss_precision(x: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least: bf16 autocast outputs go up, float64 (the tests) stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _lsgan(scores: torch.Tensor, real: bool, stack: int = 1) -> torch.Tensor:
    return _pair_means((_loss_precision(scores) - (1.0 if real else 0.0)) ** 2, stack)


def _l1(output: torch.Tensor, target: torch.Tensor, stack: int) -> torch.Tensor:
    if stack == 1:
        return nn.functional.l1_loss(_loss_precision(output), target).view(1)
    return _pair_means((_loss_precision(output) - target).abs(), stack)


def _query_pools(pools: Sequence[ImagePool], fakes: torch.Tensor) -> torch.Tensor:
    """Each stacked pair's fakes through its own history pool."""
    if len(pools) == 1:
        return pools[0].query(fakes)
    return torch.cat([pool.query(part) for pool, part in zip(pools, fakes.chunk(len(pools), dim=1))], dim=1)


def _set_requires_grad(modules: Sequence[nn.Module], flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def _job_samples(job: StyleJob) -> list[list[Sample]]:
    samples = []
    for name, items in (("A", job.images_a), ("B", job.images_b)):
        if len(items) == 0:
            raise InvalidInputError(f"{job.desc}: domain {name} has no images: a CycleGAN needs images on both sides")
        samples.append([s if isinstance(s, Sample) else Sample(str(s), 0, 0) for s in items])
    return samples


def _steps_per_epoch(cfg: StyleCfg, samples: Sequence[Sequence[Sample]]) -> int:
    return cfg.iters_per_epoch or math.ceil(max(len(s) for s in samples) / cfg.batch_size)


def _start_epoch(out_dir: Union[str, Path], resume: bool) -> int:
    """The epoch a run in ``out_dir`` would continue from (0: a new run)."""
    last = Path(out_dir) / "last.pt"
    if not (resume and last.is_file()):
        return 0
    return int(load_checkpoint(last, map_location="cpu", stage="style")["epoch"]) + 1


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
    return _train_stack([job], [_job_samples(job)], cfg, resume=resume, overwrite=overwrite, progress=progress)[0]


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
    from ..progress import tqdm

    stack = cfg.stack_pairs if stack is None else stack
    if stack < 1:
        raise InvalidInputError(f"stack={stack}: at least one CycleGAN trains at a time")
    folders = [Path(job.out_dir).resolve() for job in jobs]
    repeated = sorted({str(f) for f in folders if folders.count(f) > 1})
    if repeated:
        raise InvalidInputError(f"two CycleGANs would train into the same folder ({', '.join(repeated)}); give each "
                                f"StyleJob its own out_dir")
    samples = [_job_samples(job) for job in jobs]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (job, smp) in enumerate(zip(jobs, samples)):
        key = (_steps_per_epoch(cfg, smp), _start_epoch(job.out_dir, resume) if stack > 1 else 0)
        groups.setdefault(key, []).append(i)
    # stacks of at most `stack` jobs that can share every step, trained in the order of their first job
    stacks = sorted((idx[k:k + stack] for idx in groups.values() for k in range(0, len(idx), stack)), key=min)
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
    from contextlib import ExitStack

    from ..progress import tqdm

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
        singles = [CycleGAN(cfg)]  # the weights every pair starts from, as one by one (same seed)
        if n == 1:
            model = singles[0].to(device)
        else:
            with torch.device("meta"):  # shapes only: no weights drawn, the global RNG untouched
                model = CycleGAN(cfg, stack=n)
                singles += [CycleGAN(cfg) for _ in range(n - 1)]
            singles = [singles[0]] + [m.to_empty(device="cpu") for m in singles[1:]]
            model = model.to_empty(device=device)
            model.load_state_dict(stack_states([singles[0].state_dict()] * n))
        gens, discs = [model.g_ab, model.g_ba], [model.d_a, model.d_b]
        dtype = next(model.parameters()).dtype
        opt_g = torch.optim.Adam([p for g in gens for p in g.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_d = torch.optim.Adam([p for d in discs for p in d.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, cfg.lr_factor)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, cfg.lr_factor)
        # pools[s] = [fakes of A, fakes of B] of pair s, each seeded as one by one
        pools = [[ImagePool(cfg.pool_size, cfg.seed + 11), ImagePool(cfg.pool_size, cfg.seed + 12)] for _ in range(n)]
        steps = _steps_per_epoch(cfg, samples[0])
        tf = style_transforms(cfg, train=True)
        workers = cfg.num_workers if n == 1 else math.ceil(cfg.num_workers / n)  # keyed draws: any count gives the same images
        samplers, loaders = [], []  # per pair: domain A, domain B
        for smp in samples:
            for domain, s in enumerate(smp):
                sm = _EpochBatches(len(s), cfg.batch_size, steps, cfg.seed, domain)
                samplers.append(sm)
                loaders.append(build_loader(s, tf, cfg.batch_size, batch_sampler=sm, num_workers=workers,
                                            seed=cfg.seed + domain, pin_memory=rt.pin_memory))
        if runs[0].resumed:
            states = [run.state for run in runs]
            if n == 1:
                load_into(model, states[0], runs[0].last_path)
            else:  # each file checked against a single CycleGAN first, so a mismatch names its file
                for single, state, run in zip(singles, states, runs):
                    load_into(single, state, run.last_path)
                model.load_state_dict(stack_states([m.state_dict() for m in singles]))
            opt_g.load_state_dict(states[0]["opt_g"] if n == 1 else _stack_optimizer_states([s["opt_g"] for s in states]))
            opt_d.load_state_dict(states[0]["opt_d"] if n == 1 else _stack_optimizer_states([s["opt_d"] for s in states]))
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
                # (N, 3n, H, W): pair s in channels 3s .. 3s + 2; in the weights' dtype (float64 in the tests)
                real_a = torch.cat([b[0] for b in batches[0::2]], dim=1).to(device, dtype, non_blocking=True)
                real_b = torch.cat([b[0] for b in batches[1::2]], dim=1).to(device, dtype, non_blocking=True)
                # generators: fool both discriminators, reconstruct both ways, leave own-style images alone
                _set_requires_grad(discs, False)
                with rt.autocast():
                    fake_b, fake_a = model.g_ab(real_a), model.g_ba(real_b)
                    g_gan = _lsgan(model.d_b(fake_b), True, n) + _lsgan(model.d_a(fake_a), True, n)
                    cycle = _l1(model.g_ba(fake_b), real_a, n) + _l1(model.g_ab(fake_a), real_b, n)
                    identity = (_l1(model.g_ab(real_b), real_b, n) + _l1(model.g_ba(real_a), real_a, n)
                                if lam_i > 0 else torch.zeros(n, device=device))
                    # one sum over pairs: each pair's parameters get its own loss's gradient
                    loss_g = (g_gan + lam_c * cycle + lam_i * identity).sum()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                # discriminators: real vs (pooled) fake, each term halved as in CycleGAN
                _set_requires_grad(discs, True)
                with rt.autocast():
                    pooled_b = _query_pools([p[1] for p in pools], fake_b.detach())
                    pooled_a = _query_pools([p[0] for p in pools], fake_a.detach())
                    loss_d = 0.5 * (_lsgan(model.d_b(real_b), True, n) + _lsgan(model.d_b(pooled_b), False, n)) + \
                        0.5 * (_lsgan(model.d_a(real_a), True, n) + _lsgan(model.d_a(pooled_a), False, n))
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
            if n == 1:
                opts = [(opt_g.state_dict(), opt_d.state_dict())]
            else:
                for single, state in zip(singles, unstack_state(model.state_dict(), n)):
                    single.load_state_dict(state)
                opts = list(zip(_unstack_optimizer_state(opt_g.state_dict(), n),
                                _unstack_optimizer_state(opt_d.state_dict(), n)))
            for run, single, total, pair_pools, (og, od) in zip(runs, singles if n > 1 else [model], totals, pools, opts):
                run.end_epoch(epoch, {"epoch": epoch + 1, "lr": lr, **total}, t0, model=single,
                              last={"opt_g": og, "opt_d": od, **shared, "pools": [p.state_dict() for p in pair_pools]})
        if n == 1:
            model.eval()
            return [CycleGANResult(model, runs[0].last_path, runs[0].log.history)]
        for single, state in zip(singles, unstack_state(model.state_dict(), n)):
            single.load_state_dict(state)
        return [CycleGANResult(single.to(device).eval(), run.last_path, run.log.history)
                for single, run in zip(singles, runs)]


def load_cyclegan(path: Union[str, Path], *, device: Union[str, torch.device] = "cpu") -> tuple[CycleGAN, StyleCfg]:
    """A trained CycleGAN and its config from a checkpoint written by :func:`train_cyclegan`.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (train the style models first).
        ValueError: the file is not a style checkpoint.
    """
    from ..config import load_config

    state = load_checkpoint(path, map_location="cpu")
    if state.get("stage") != "style":
        raise InvalidInputError(f"{path} is a {state.get('stage', 'unknown')!r} checkpoint, not a CycleGAN "
                         f"(written by corelib style train / train_cyclegan)")
    cfg = load_config(StyleCfg, overrides=state["cfg"])
    model = CycleGAN(cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg
