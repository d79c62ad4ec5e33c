"""CycleGAN's networks: the generator, the PatchGAN discriminator, the pair of each, and loading one.

- :class:`ResnetGenerator`: reflection-padded 7x7 convolution, ``n_down`` stride-2 convolutions,
  ``blocks`` residual blocks, as many transposed convolutions back, a 7x7 convolution and tanh;
  instance norm throughout (Johnson et al. 2016, as CycleGAN uses it).
- :class:`PatchDiscriminator`: ``layers`` stride-2 4x4 convolutions, one stride-1, a 1-channel
  map of real/fake scores per patch (70x70 patches at ``layers=3``).
- :class:`CycleGAN`: the two generators and two discriminators of one domain pair;
  :func:`load_cyclegan` reads one back from the checkpoint :func:`~corelib.style.cyclegan.train_cyclegan` writes.

Images are tensors in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..config import StyleCfg, load_config
from ..errors import InvalidInputError
from ..runtime import load_checkpoint


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
        gen = (cfg.ngf, cfg.gen_blocks, cfg.gen_downsampling, cfg.residual_generator)
        self.g_ab = ResnetGenerator(*gen)
        self.g_ba = ResnetGenerator(*gen)
        self.d_a = PatchDiscriminator(cfg.ndf, cfg.disc_layers)  # tells real A from B -> A fakes
        self.d_b = PatchDiscriminator(cfg.ndf, cfg.disc_layers)
        self.apply(_init_weights)

    def generator(self, direction: str) -> ResnetGenerator:
        """``"ab"`` (A -> B) or ``"ba"``."""
        if direction not in ("ab", "ba"):
            raise InvalidInputError(f"direction must be 'ab' or 'ba', got {direction!r}")
        return self.g_ab if direction == "ab" else self.g_ba


def load_cyclegan(path: Union[str, Path], *, device: Union[str, torch.device] = "cpu") -> tuple[CycleGAN, StyleCfg]:
    """A trained CycleGAN and its config, from a checkpoint of :func:`~corelib.style.cyclegan.train_cyclegan`.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (train the style models first).
        ValueError: the file is not a style checkpoint.
    """
    state = load_checkpoint(path, map_location="cpu")
    if state.get("stage") != "style":
        raise InvalidInputError(f"{path} is a {state.get('stage', 'unknown')!r} checkpoint, not a CycleGAN "
                         f"(written by corelib style train / train_cyclegan)")
    cfg = load_config(StyleCfg, overrides=state["cfg"])
    model = CycleGAN(cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg
