"""Channel attention blocks of CORE-ReID: ECAB (V1, on the local parts) and SECAB (V2, global).

Both share one design (docs/method.md §3.3-3.4): a max-pooled and an average-pooled channel vector go
through the same MLP of six bias-free 1x1 convolutions with reduction r = 4 per layer,
``C -> C/4 -> C/16 -> C/64 -> C/16 -> C/4 -> C`` (five hidden layers, ReLU after each), and
the attention weights are ``sigmoid(MLP(GMP(X)) + MLP(GAP(X)))``.

- ECAB returns the *enhanced vector* ``psi = (GMP(X) + GAP(X)) * weights`` (C values per image).
- SECAB returns only the weights, to scale a feature map channel-wise.

Blocks are looked up by name, timm style: ``get_attention("ecab")``; an unknown name lists the valid
ones. ``"none"`` gives the ablation without attention (weights fixed to 1).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import InvalidInputError, UnknownNameError


def _pool_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GMP and GAP of a ``(B, C, h, w)`` map as ``(B, C, 1, 1)`` tensors (1x1-conv friendly)."""
    return torch.amax(x, dim=(2, 3), keepdim=True), torch.mean(x, dim=(2, 3), keepdim=True)


class SharedMLP(nn.Sequential):
    """Six bias-free 1x1 convolutions, C -> C/r -> C/r^2 -> C/r^3 -> C/r^2 -> C/r -> C."""

    def __init__(self, channels: int, reduction: int = 4, hidden_layers: int = 5) -> None:
        if hidden_layers % 2 != 1:
            raise InvalidInputError("hidden_layers must be odd: the first half shrinks, the second half expands")
        half = hidden_layers // 2 + 1
        widths = [channels // reduction**i for i in range(half + 1)]  # C, C/4, C/16, C/64
        widths = widths + widths[-2::-1]  # ... back up to C
        if min(widths) < 1:
            raise InvalidInputError(f"{channels} channels are too few for {hidden_layers} layers with reduction {reduction}")
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(cin, cout, kernel_size=1, bias=False))
            if i < len(widths) - 2:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.widths = tuple(widths)


class ChannelAttention(nn.Module):
    """``sigmoid(MLP(GMP(X)) + MLP(GAP(X)))``: channel weights in (0, 1), shape ``(B, C)``."""

    def __init__(self, channels: int, reduction: int = 4, hidden_layers: int = 5) -> None:
        super().__init__()
        self.mlp = SharedMLP(channels, reduction, hidden_layers)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        m, a = _pool_pair(x)
        return torch.sigmoid(self.mlp(m) + self.mlp(a)).flatten(1)


class ECAB(ChannelAttention):
    """Efficient Channel Attention Block: ``psi = (GMP(X) + GAP(X)) * weights``, shape ``(B, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, a = _pool_pair(x)
        w = torch.sigmoid(self.mlp(m) + self.mlp(a))
        return ((m + a) * w).flatten(1)


class SECAB(ChannelAttention):
    """Simplified ECAB (V2): only the channel weights, ``(B, C)``, used to scale a map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights(x)


class NoAttentionVector(nn.Module):
    """Ablation of ECAB: ``psi = GMP(X) + GAP(X)`` (all weights 1), no parameters."""

    def __init__(self, channels: int, **_: object) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, a = _pool_pair(x)
        return (m + a).flatten(1)


_ATTENTION: dict[str, Callable[..., nn.Module]] = {"ecab": ECAB, "secab": SECAB, "none": NoAttentionVector}


def get_attention(name: str) -> Callable[..., nn.Module]:
    """The attention class registered under ``name`` (``ecab``, ``secab`` or ``none``)."""
    key = name.lower()
    if key not in _ATTENTION:
        raise UnknownNameError(f"unknown attention {name!r}; valid names: {', '.join(sorted(_ATTENTION))}")
    return _ATTENTION[key]
