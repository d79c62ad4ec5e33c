"""What chapter 08 will train, resolved without training: the recipes it compares, their budgets, and
the settings each recipe gets on a pair (:func:`baseline_settings`).

:mod:`corelib.baselines` trains and reads these runs; this module only resolves settings, so that the
check of every chapter's parameters before the first chapter runs
(:func:`corelib.notebooks.check_parameters`) can resolve chapter 08's without importing the training
stack.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from .config import preset
from .errors import InvalidInputError
from .recipes import get_recipe

BASELINE_RECIPES = ("corereid_v2", "corereid_v2_dbscan", "cluster_contrast", "learn_by_guessing")
"""The recipes chapter 08 compares by default (see :mod:`corelib.recipes`)."""

ORACLE = "supervised_oracle"
"""The upper bound: fine-tuning with the target's own identities."""

DEFAULT_BUDGET = preset("budgets", "embedded")
"""The fine-tuning budget of every recipe on the embedded pairs in ``make demo`` (two cores): the
same epochs (clusterings) and optimiser steps for each (``budgets.embedded`` of ``corelib/presets.yaml``)."""

DEFAULT_SOURCE_BUDGET = preset("budgets", "embedded_source")
"""Pre-training of a recipe's own source network in ``make demo`` (``budgets.embedded_source``): 80
steps, where chapter 02's network had 300 (what fits in the demo's 25 minutes; a handicap the chapter states)."""

SMOKE_BUDGET = preset("budgets", "smoke")
"""With ``smoke``: one epoch of each recipe's CI-sized fine-tuning (``budgets.smoke``; the caller's
budgets are not applied)."""


def _same_pretraining(pair, recipe: str, smoke: bool) -> bool:
    """Does ``recipe`` pre-train exactly as ``corereid_v2`` (so chapter 02's network is its source)?"""
    ours = dataclasses.replace(pair, recipe=recipe).pretrain_cfg(smoke=smoke).to_dict()
    return ours == dataclasses.replace(pair, recipe="corereid_v2").pretrain_cfg(smoke=smoke).to_dict()


def baseline_settings(pair, *, recipes: Sequence[str] = BASELINE_RECIPES, oracle: bool = True,
                      budget: Optional[Mapping[str, Any]] = None, source_budget: Optional[Mapping[str, Any]] = None,
                      real_budget: Optional[Mapping[str, Any]] = None,
                      real_source_budget: Optional[Mapping[str, Any]] = None, smoke: bool = False,
                      seed: Optional[int] = None, device: Optional[str] = None,
                      overrides: Optional[Mapping[str, Mapping[str, Any]]] = None) -> dict[str, tuple]:
    """The settings :func:`corelib.baselines.run_baselines` trains each recipe with (same arguments), resolved without
    training anything: ``{recipe: (pre-training settings of its own source network, or None when it
    starts from chapter 02's; fine-tuning settings)}``, the oracle under :data:`ORACLE` when ``oracle``.

    Raises:
        UnknownNameError: an unknown recipe (the message lists the registered ones).
        InvalidInputError: ``overrides`` name a recipe that is not run.
        ConfigError: a budget or an override names a field the settings do not have (the closest is
            named), or gives a value of the wrong type.
    """
    # the CI-sized recipes are already one budget for all (the budgets describe full runs); one
    # epoch of them each keeps the chapter within its 90 s in the notebook tests
    if smoke:
        budget, source_budget = dict(SMOKE_BUDGET), {}
    elif pair.embedded:
        budget = dict(DEFAULT_BUDGET if budget is None else budget)
        source_budget = dict(DEFAULT_SOURCE_BUDGET if source_budget is None else source_budget)
    else:  # real data: each recipe's published schedule unless the caller names a budget
        budget, source_budget = dict(real_budget or {}), dict(real_source_budget or {})
    overrides = dict(overrides or {})
    names = list(dict.fromkeys([*recipes, *([ORACLE] if oracle else [])]))
    for name in names:
        get_recipe(name)  # an unknown name fails before anything trains
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise InvalidInputError(f"overrides name recipes that are not run: {unknown}; run: {names}")
    settings = {}
    for name in names:
        mine = dataclasses.replace(pair, recipe=name)
        pre_cfg = None if _same_pretraining(pair, name, smoke) else \
            mine.pretrain_cfg(smoke=smoke, seed=seed, device=device, overrides=source_budget)
        cfg = mine.finetune_cfg(smoke=smoke, seed=seed, device=device, overrides={**budget, **overrides.get(name, {})})
        settings[name] = (pre_cfg, cfg)
    return settings


BASELINE_PARAMETERS = frozenset({"RECIPES", "ABLATION_RECIPES", "ABLATION_PAIRS", "ORACLE", "BUDGET", "SOURCE_BUDGET",
                                 "REAL_BUDGET", "REAL_SOURCE_BUDGET", "RECIPE_OVERRIDES"})
"""The parameters of chapter 08 that become :func:`corelib.baselines.run_baselines`' arguments."""


def check_baseline_parameters(pair, values: Mapping[str, Any]) -> None:
    """Resolve the settings chapter 08 will train ``pair`` with, from its parameters ``values``
    (:data:`BASELINE_PARAMETERS` with ``SMOKE``, ``SEED``, ``DEVICE``), as the chapter calls
    :func:`corelib.baselines.run_baselines` (the ablation recipes on ``ABLATION_PAIRS`` only), without training: what
    :func:`corelib.notebooks.check_parameters` runs before the first chapter.

    Raises:
        UnknownNameError, InvalidInputError, ConfigError: as :func:`baseline_settings`.
    """
    ablation = values["ABLATION_RECIPES"] if pair.name in values["ABLATION_PAIRS"] else []
    baseline_settings(pair, recipes=[*values["RECIPES"], *ablation], oracle=values["ORACLE"], budget=values["BUDGET"],
                      source_budget=values["SOURCE_BUDGET"], real_budget=values["REAL_BUDGET"],
                      real_source_budget=values["REAL_SOURCE_BUDGET"], smoke=values.get("SMOKE", False),
                      seed=values.get("SEED"), device=values.get("DEVICE"), overrides=values["RECIPE_OVERRIDES"])
