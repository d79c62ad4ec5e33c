"""What chapter 07 will train, resolved without training: the recipes it compares, their budgets, and
the settings each recipe gets on a pair (:func:`baseline_settings`).

The method lists are written once, where each recipe is registered (its
:class:`~corelib.recipes.RecipeInfo`): chapter 07's ``RECIPES``, ``ABLATION_RECIPES`` and ``VIT_RECIPES``
left empty mean every recipe registered as compared, as an ablation, as a row of the ViT table
(:func:`chapter_recipes`). A :class:`BaselinePlan` carries the chapter's parameters for one pair to
:func:`corelib.baselines.run_baselines`.

:mod:`corelib.baselines` trains and reads these runs; this module only resolves settings, so that the
check of every chapter's parameters before the first chapter runs
(:func:`corelib.notebooks.check_parameters`) can resolve chapter 07's without importing the training
stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .config import preset
from .errors import InvalidInputError
from .recipes import RECIPES, get_recipe

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


def chapter_budgets(budget: Optional[Mapping[str, Any]] = None,
                    source_budget: Optional[Mapping[str, Any]] = None) -> tuple[dict, dict]:
    """Chapter 07's ``BUDGET`` and ``SOURCE_BUDGET`` on the embedded pairs, resolved: None becomes the
    preset (:data:`DEFAULT_BUDGET`, :data:`DEFAULT_SOURCE_BUDGET`), a mapping is kept (``{}``: each
    recipe's own schedule), so what a run records is the budget it trained with."""
    return (dict(DEFAULT_BUDGET if budget is None else budget),
            dict(DEFAULT_SOURCE_BUDGET if source_budget is None else source_budget))


def compared_recipes() -> list[str]:
    """The recipes chapter 07 compares on every pair by default: those registered with
    ``compared=True``, in registration order."""
    return RECIPES.where(compared=True)


def ablation_recipes() -> list[str]:
    """The recipes registered as an ablation of another (``ablation_of=...``), in registration order."""
    return [name for name in RECIPES.where() if RECIPES.info(name).ablation_of]


def vit_table_recipes() -> list[str]:
    """The rows of chapter 07's TransReID table: the recipes registered with ``vit_table=True``."""
    return RECIPES.where(vit_table=True)


def orientation_recipes() -> dict[str, list[str]]:
    """Chapter 09's runs by where the target's view ids come from: ``"metadata"``, the plain recipes
    (``orientation_of`` of an orientation-aware one) and the orientation-aware ones on the target's own
    views; ``"estimated"``, those on views an estimator predicted. From the registrations, in order."""
    oriented = [n for n in RECIPES.where() if RECIPES.info(n).orientation_of]
    plain = list(dict.fromkeys(RECIPES.info(n).orientation_of for n in oriented))
    return {"metadata": plain + [n for n in oriented if RECIPES.info(n).views == "metadata"],
            "estimated": [n for n in oriented if RECIPES.info(n).views == "estimated"]}


def recipe_views(name: str) -> str:
    """The view ids recipe ``name`` trains with: ``"metadata"``, ``"estimated"`` or ``"not used"``."""
    return RECIPES.info(name).views or "not used"


def chapter_recipes(recipes: Sequence[str] = (), ablations: Sequence[str] = (),
                    vit_rows: Sequence[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """Chapter 07's ``RECIPES``, ``ABLATION_RECIPES`` and ``VIT_RECIPES`` resolved: a list given is kept
    as it is, an empty one becomes what the registry declares (:func:`compared_recipes`,
    :func:`ablation_recipes`, :func:`vit_table_recipes`)."""
    return (list(recipes) or compared_recipes(), list(ablations) or ablation_recipes(),
            list(vit_rows) or vit_table_recipes())


@dataclass(frozen=True)
class BaselinePlan:
    """What :func:`corelib.baselines.run_baselines` trains on one pair: chapter 07's parameters."""

    recipes: Sequence[str] = ()
    """The recipes to train (empty: :func:`compared_recipes`), the oracle added when ``oracle``."""
    oracle: bool = True
    """Also train :data:`ORACLE`, the upper bound of the gap."""
    budget: Optional[Mapping[str, Any]] = None
    """On an embedded pair, the fine-tuning fields every recipe gets (None: :data:`DEFAULT_BUDGET`;
    ``{}`` keeps each recipe's own schedule)."""
    source_budget: Optional[Mapping[str, Any]] = None
    """Pre-training fields of a recipe's own source network (None: :data:`DEFAULT_SOURCE_BUDGET`).
    Neither budget applies with ``smoke``: every method gets one epoch of its CI-sized recipe
    (:data:`SMOKE_BUDGET`)."""
    real_budget: Optional[Mapping[str, Any]] = None
    """The same on a pair of real datasets, where each recipe keeps its published schedule by default."""
    real_source_budget: Optional[Mapping[str, Any]] = None
    """Pre-training fields of a recipe's own source network on real data (None: its published schedule)."""
    smoke: bool = False
    """The CI-sized recipes, one epoch each."""
    seed: Optional[int] = None
    device: Optional[str] = None
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per recipe, further fine-tuning changes (``{"cluster_contrast": {"loss.contrast.hard": True}}``)."""

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any], pair_name: str) -> "BaselinePlan":
        """The plan chapter 07 runs on the pair ``pair_name`` from its parameters ``values``
        (:data:`BASELINE_PARAMETERS` with ``SMOKE``, ``SEED``, ``DEVICE``): ``RECIPES``, then
        ``ABLATION_RECIPES`` when the pair is one of ``ABLATION_PAIRS`` (empty lists resolved by
        :func:`chapter_recipes`)."""
        recipes, ablations, _ = chapter_recipes(values["RECIPES"], values["ABLATION_RECIPES"])
        return cls(recipes=[*recipes, *(ablations if pair_name in values["ABLATION_PAIRS"] else [])],
                   oracle=values["ORACLE"], budget=values["BUDGET"], source_budget=values["SOURCE_BUDGET"],
                   real_budget=values["REAL_BUDGET"], real_source_budget=values["REAL_SOURCE_BUDGET"],
                   smoke=values.get("SMOKE", False), seed=values.get("SEED"), device=values.get("DEVICE"),
                   overrides=values["RECIPE_OVERRIDES"])


def _same_pretraining(pair, recipe: str, smoke: bool) -> bool:
    """Does ``recipe`` pre-train exactly as ``corereid_v2`` (so chapter 02's network is its source)?"""
    ours = dataclasses.replace(pair, recipe=recipe).pretrain_cfg(smoke=smoke).to_dict()
    return ours == dataclasses.replace(pair, recipe="corereid_v2").pretrain_cfg(smoke=smoke).to_dict()


def baseline_settings(pair, plan: BaselinePlan = BaselinePlan()) -> dict[str, tuple]:
    """The settings :func:`corelib.baselines.run_baselines` trains each recipe of ``plan`` with, resolved
    without training anything: ``{recipe: (pre-training settings of its own source network, or None
    when it starts from chapter 02's; fine-tuning settings)}``, the oracle under :data:`ORACLE` when
    ``plan.oracle``.

    Raises:
        UnknownNameError: an unknown recipe (the message lists the registered ones).
        InvalidInputError: ``plan.overrides`` name a recipe that is not run.
        ConfigError: a budget or an override names a field the settings do not have (the closest is
            named), or gives a value of the wrong type.
    """
    smoke, seed, device = plan.smoke, plan.seed, plan.device
    # the CI-sized recipes are already one budget for all (the budgets describe full runs); one
    # epoch of them each keeps the chapter within its 90 s in the notebook tests
    if smoke:
        budget, source_budget = dict(SMOKE_BUDGET), {}
    elif pair.embedded:
        budget = dict(DEFAULT_BUDGET if plan.budget is None else plan.budget)
        source_budget = dict(DEFAULT_SOURCE_BUDGET if plan.source_budget is None else plan.source_budget)
    else:  # real data: each recipe's published schedule unless the caller names a budget
        budget, source_budget = dict(plan.real_budget or {}), dict(plan.real_source_budget or {})
    overrides = dict(plan.overrides or {})
    names = list(dict.fromkeys([*(plan.recipes or compared_recipes()), *([ORACLE] if plan.oracle else [])]))
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
"""The parameters of chapter 07 that make its :class:`BaselinePlan` (:meth:`BaselinePlan.from_parameters`)."""


def check_baseline_parameters(pair, values: Mapping[str, Any]) -> None:
    """Resolve the settings chapter 07 will train ``pair`` with, from its parameters ``values``
    (:data:`BASELINE_PARAMETERS` with ``SMOKE``, ``SEED``, ``DEVICE``), as the chapter calls
    :func:`corelib.baselines.run_baselines` (the ablation recipes on ``ABLATION_PAIRS`` only), without training: what
    :func:`corelib.notebooks.check_parameters` runs before the first chapter.

    Raises:
        UnknownNameError, InvalidInputError, ConfigError: as :func:`baseline_settings`.
    """
    baseline_settings(pair, BaselinePlan.from_parameters(values, pair.name))
