"""CycleGAN for unpaired style transfer between two image domains (cameras or datasets).

CORE-ReID V2 enlarges its labelled source set with style-transferred copies (method.md §2.1-2.2):
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

Images are tensors in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..config import StyleCfg
from ..data.datasets import Sample
from ..data.loading import build_loader
from ..errors import InvalidInputError
from ..repro import seed_everything
from ..runtime import Runtime, StageRun, load_checkpoint, load_into, rng_state, set_rng_state

STYLE_RESUME_FREE = frozenset({"device", "num_workers", "generate_batch_size"})
"""StyleCfg fields a resumed CycleGAN may change: where it runs and how fast it translates."""

# --------------------------------------------------------------------------------------------
# networks


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
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
    """

    def __init__(self, ngf: int = 64, blocks: int = 9, n_down: int = 2, residual: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [_ResidualBlock(ch) for _ in range(blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7)]
        self.net = nn.Sequential(*layers)
        self.n_down, self.residual = n_down, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        if self.residual:  # in the pre-tanh space of the input, so the output stays in (-1, 1)
            h = h + torch.atanh(x.clamp(-0.999, 0.999))
        return torch.tanh(h)


class PatchDiscriminator(nn.Module):
    """PatchGAN: one real/fake score per overlapping patch (LSGAN: no sigmoid)."""

    def __init__(self, ndf: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < layers else 1  # the last widening layer keeps the resolution
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1), nn.InstanceNorm2d(ndf * mult),
                    nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
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
    """The two generators (A -> B, B -> A) and two discriminators of one domain pair."""

    def __init__(self, cfg: StyleCfg) -> None:
        super().__init__()
        for size, name in ((cfg.height, "height"), (cfg.width, "width")):
            if size % (2 ** cfg.gen_downsampling):
                raise InvalidInputError(f"StyleCfg.{name}={size} must be divisible by 2**gen_downsampling="
                                 f"{2 ** cfg.gen_downsampling}")
        self.g_ab = ResnetGenerator(cfg.ngf, cfg.gen_blocks, cfg.gen_downsampling, cfg.residual_generator)
        self.g_ba = ResnetGenerator(cfg.ngf, cfg.gen_blocks, cfg.gen_downsampling, cfg.residual_generator)
        self.d_a = PatchDiscriminator(cfg.ndf, cfg.disc_layers)  # tells real A from B -> A fakes
        self.d_b = PatchDiscriminator(cfg.ndf, cfg.disc_layers)
        self.apply(_init_weights)

    def generator(self, direction: str) -> ResnetGenerator:
        """``"ab"`` (A -> B) or ``"ba"``."""
        if direction not in ("ab", "ba"):
            raise InvalidInputError(f"direction must be 'ab' or 'ba', got {direction!r}")
        return self.g_ab if direction == "ab" else self.g_ba


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


def _lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return torch.mean((scores.float() - (1.0 if real else 0.0)) ** 2)


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
    from tqdm.auto import tqdm

    samples = []
    for name, items in (("A", images_a), ("B", images_b)):
        if len(items) == 0:
            raise InvalidInputError(f"domain {name} has no images: a CycleGAN needs images on both sides")
        samples.append([s if isinstance(s, Sample) else Sample(str(s), 0, 0) for s in items])
    rt = Runtime(cfg.device, cfg.precision)
    with StageRun(out_dir, cfg, rt, stage="style", resume=resume, overwrite=overwrite, free=STYLE_RESUME_FREE) as run:
        seed_everything(cfg.seed)
        device = rt.device
        model = CycleGAN(cfg).to(device)
        gens, discs = [model.g_ab, model.g_ba], [model.d_a, model.d_b]
        opt_g = torch.optim.Adam([p for g in gens for p in g.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_d = torch.optim.Adam([p for d in discs for p in d.parameters()], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, cfg.lr_factor)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, cfg.lr_factor)
        pools = [ImagePool(cfg.pool_size, cfg.seed + 11), ImagePool(cfg.pool_size, cfg.seed + 12)]
        steps = cfg.iters_per_epoch or math.ceil(max(len(s) for s in samples) / cfg.batch_size)
        tf = style_transforms(cfg, train=True)
        samplers = [_EpochBatches(len(s), cfg.batch_size, steps, cfg.seed, domain) for domain, s in enumerate(samples)]
        loaders = [build_loader(s, tf, cfg.batch_size, batch_sampler=sm, num_workers=cfg.num_workers, seed=cfg.seed + d,
                                pin_memory=rt.pin_memory)
                   for d, (s, sm) in enumerate(zip(samples, samplers))]
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
        l1 = nn.L1Loss()

        run.begin()  # every check has passed: config.yaml and metrics.jsonl from here
        for epoch in range(run.start, cfg.total_epochs):
            t0 = time.perf_counter()
            model.train()
            for sm in samplers:
                sm.set_epoch(epoch)
            totals = dict.fromkeys(("g_gan", "cycle", "identity", "d"), 0.0)
            bar = tqdm(zip(*loaders), total=steps, desc=f"{desc} {epoch + 1}/{cfg.total_epochs}", disable=not progress,
                       leave=False)
            for batch_a, batch_b in bar:
                real_a, real_b = batch_a[0].to(device, non_blocking=True), batch_b[0].to(device, non_blocking=True)
                # generators: fool both discriminators, reconstruct both ways, leave own-style images alone
                _set_requires_grad(discs, False)
                with rt.autocast():
                    fake_b, fake_a = model.g_ab(real_a), model.g_ba(real_b)
                    g_gan = _lsgan(model.d_b(fake_b), True) + _lsgan(model.d_a(fake_a), True)
                    cycle = l1(model.g_ba(fake_b).float(), real_a) + l1(model.g_ab(fake_a).float(), real_b)
                    identity = (l1(model.g_ab(real_b).float(), real_b) + l1(model.g_ba(real_a).float(), real_a)
                                if lam_i > 0 else torch.zeros((), device=device))
                    loss_g = g_gan + lam_c * cycle + lam_i * identity
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                # discriminators: real vs (pooled) fake, each term halved as in CycleGAN
                _set_requires_grad(discs, True)
                with rt.autocast():
                    pooled_b, pooled_a = pools[1].query(fake_b.detach()), pools[0].query(fake_a.detach())
                    loss_d = 0.5 * (_lsgan(model.d_b(real_b), True) + _lsgan(model.d_b(pooled_b), False)) + \
                        0.5 * (_lsgan(model.d_a(real_a), True) + _lsgan(model.d_a(pooled_a), False))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                values = {"g_gan": g_gan.item(), "cycle": cycle.item(), "identity": identity.item(), "d": loss_d.item()}
                if not all(math.isfinite(v) for v in values.values()):
                    raise FloatingPointError(f"{desc}: non-finite CycleGAN loss at epoch {epoch + 1} ({values}); "
                                             f"lower StyleCfg.lr or use precision='fp32'")
                for k, v in values.items():
                    totals[k] += v / steps
                bar.set_postfix(cycle=f"{values['cycle']:.3f}", d=f"{values['d']:.3f}")
            record = {"epoch": epoch + 1, "lr": opt_g.param_groups[0]["lr"], **totals}
            sched_g.step()
            sched_d.step()
            run.end_epoch(epoch, record, t0, model=model,
                          last={"opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "sched_g": sched_g.state_dict(),
                                "sched_d": sched_d.state_dict(), "pools": [p.state_dict() for p in pools],
                                "rng": rng_state()})
        model.eval()
        return CycleGANResult(model, run.last_path, run.log.history)


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
