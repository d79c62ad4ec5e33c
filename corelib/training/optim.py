"""The optimisers of the training loops, from their settings (``optimizer``, ``lr``, ``weight_decay``,
``momentum``, ``bias_lr_factor``): Adam (the paper's) or SGD with momentum (TransReID's), biases in
their own group at ``bias_lr_factor x lr`` (TransReID's configs: 2; weight decay on every
parameter, pos / cls embeddings included, as its code does)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def build_optimizer(named_parameters: Iterable[tuple[str, nn.Parameter]], cfg) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``(name, parameter)`` pairs (one group when the biases
    learn at ``lr`` too: the parameters as given, so the paper's recipe steps exactly as before)."""
    named = list(named_parameters)
    if cfg.bias_lr_factor == 1.0:
        groups: list = [{"params": [p for _, p in named]}]
    else:
        weights = [p for name, p in named if p.requires_grad and not name.endswith("bias")]
        biases = [p for name, p in named if p.requires_grad and name.endswith("bias")]
        groups = [{"params": weights, "lr": cfg.lr}] + ([{"params": biases, "lr": cfg.lr * cfg.bias_lr_factor}]
                                                       if biases else [])
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
