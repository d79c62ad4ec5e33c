"""Stacking: several CycleGANs trained as one network, and the state surgery in and out of it.

``CycleGAN(cfg, stack=n)`` holds ``n`` domain pairs side by side (grouped convolutions, images of
pair ``s`` in channels ``3s .. 3s + 2``), so that one forward and backward trains them all, which
fills a GPU that batch-1 training of one pair leaves mostly idle. Off by default
(``StyleCfg.stack_pairs = 1``): on a CPU the grouped kernels are slower (benchmarks/README.md,
"Style transfer: several camera pairs at once"). Everything the stack needs lives here:

- :func:`stack_states` / :func:`unstack_state`: single CycleGANs' weights into a stacked one and back
  (and the same for Adam's moments);
- :func:`plan_stacks`: which jobs can share every step (same steps per epoch, same start epoch);
- :class:`PairStack`: the stacked model of one training run, built from the weights one-by-one
  training starts from, resumed from the pairs' own checkpoints and split into them at every epoch end;
- :func:`query_pools`: each pair's fakes through its own image pool.

With ``n == 1`` every function does exactly what single-pair training always did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from ..config import StyleCfg
from ..runtime import load_checkpoint, load_into
from .cyclegan_data import ImagePool
from .networks import CycleGAN


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


def _start_epoch(out_dir: Union[str, Path], resume: bool) -> int:
    """The epoch a run in ``out_dir`` would continue from (0: a new run)."""
    last = Path(out_dir) / "last.pt"
    if not (resume and last.is_file()):
        return 0
    return int(load_checkpoint(last, map_location="cpu", stage="style")["epoch"]) + 1


def plan_stacks(steps: Sequence[int], out_dirs: Sequence[Union[str, Path]], stack: int,
                resume: bool) -> list[list[int]]:
    """The jobs (indices) that train together, at most ``stack`` at once, in the order of their first job.

    Jobs share a stack only with equal steps per epoch (``steps[i]``) and, when resuming, the same
    epoch to continue from (read from ``out_dirs[i]/last.pt``).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (n_steps, out_dir) in enumerate(zip(steps, out_dirs)):
        key = (n_steps, _start_epoch(out_dir, resume) if stack > 1 else 0)
        groups.setdefault(key, []).append(i)
    return sorted((idx[k:k + stack] for idx in groups.values() for k in range(0, len(idx), stack)), key=min)


def query_pools(pools: Sequence[ImagePool], fakes: torch.Tensor) -> torch.Tensor:
    """Each stacked pair's fakes through its own history pool."""
    if len(pools) == 1:
        return pools[0].query(fakes)
    return torch.cat([pool.query(part) for pool, part in zip(pools, fakes.chunk(len(pools), dim=1))], dim=1)


class PairStack:
    """The model of ``n`` CycleGANs trained at once, and each pair's single CycleGAN.

    ``model`` is ``CycleGAN(cfg, stack=n)`` on ``device`` (``n == 1``: a plain CycleGAN). Every pair
    starts from the weights one-by-one training draws first after seeding (the caller seeds), and
    the global RNG is drawn from only for those: the stacked and the other single networks are
    built on the meta device.
    """

    def __init__(self, cfg: StyleCfg, n: int, device: torch.device) -> None:
        self.n = n
        singles = [CycleGAN(cfg)]  # the weights every pair starts from, as one by one (same seed)
        if n == 1:
            self.model = singles[0].to(device)
        else:
            with torch.device("meta"):  # shapes only: no weights drawn, the global RNG untouched
                model = CycleGAN(cfg, stack=n)
                singles += [CycleGAN(cfg) for _ in range(n - 1)]
            singles = [singles[0]] + [m.to_empty(device="cpu") for m in singles[1:]]
            self.model = model.to_empty(device=device)
            self.model.load_state_dict(stack_states([singles[0].state_dict()] * n))
        self.singles = singles

    def images(self, batches: Sequence, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(real_a, real_b)``: the loaders' batches (per pair: domain A, domain B) as ``(N, 3n, H, W)``."""
        real_a = torch.cat([b[0] for b in batches[0::2]], dim=1).to(device, dtype, non_blocking=True)
        real_b = torch.cat([b[0] for b in batches[1::2]], dim=1).to(device, dtype, non_blocking=True)
        return real_a, real_b

    def load(self, states: Sequence[dict], paths: Sequence[Path], opt_g: torch.optim.Optimizer,
             opt_d: torch.optim.Optimizer) -> None:
        """Resume the weights and the optimisers from the pairs' own ``last.pt`` states."""
        if self.n == 1:
            load_into(self.model, states[0], paths[0])
        else:  # each file checked against a single CycleGAN first, so a mismatch names its file
            for single, state, path in zip(self.singles, states, paths):
                load_into(single, state, path)
            self.model.load_state_dict(stack_states([m.state_dict() for m in self.singles]))
        for opt, key in ((opt_g, "opt_g"), (opt_d, "opt_d")):
            opt.load_state_dict(states[0][key] if self.n == 1 else _stack_optimizer_states([s[key] for s in states]))

    def _split(self) -> list[nn.Module]:
        """The stacked weights copied into the single CycleGANs (``n > 1``)."""
        for single, state in zip(self.singles, unstack_state(self.model.state_dict(), self.n)):
            single.load_state_dict(state)
        return self.singles

    def pair_states(self, opt_g: torch.optim.Optimizer,
                    opt_d: torch.optim.Optimizer) -> list[tuple[nn.Module, dict, dict]]:
        """Per pair, what its checkpoint holds: ``(single CycleGAN, opt_g state, opt_d state)``."""
        if self.n == 1:
            return [(self.model, opt_g.state_dict(), opt_d.state_dict())]
        singles = self._split()
        return list(zip(singles, _unstack_optimizer_state(opt_g.state_dict(), self.n),
                        _unstack_optimizer_state(opt_d.state_dict(), self.n)))

    def trained(self, device: torch.device) -> list[nn.Module]:
        """The pairs' trained CycleGANs on ``device``, in eval mode."""
        if self.n == 1:
            return [self.model.eval()]
        return [single.to(device).eval() for single in self._split()]
