"""Source -> target pairs: what every chapter trains and studies, embedded or real.

A chapter's ``PAIRS`` parameter lists pair names; its ``DATASETS`` parameter defines pairs of your
own. :func:`experiment_pairs` resolves both into :class:`ExperimentPair` objects, so the same
notebooks run on the embedded synthetic data (``make demo``) and on the real datasets::

    PAIRS = ["m2c"]
    DATASETS = {"m2c": {"source": {"name": "market1501", "root": "~/datasets"},
                        "target": {"name": "cuhk03np", "root": "~/datasets", "subset": "detected"}}}

A side is a loader name (``corelib datasets``) or an embedded preset (``market_like`` ...), given
as a string or as a mapping with ``name``, an optional ``root`` (the dataset folder or its parent;
default ``$COREREID_DATA`` or ``data/``) and loader options (``subset``, ``test_size`` ...).
Optional keys of a pair: ``kind`` (``person`` / ``vehicle``; read from the dataset's manifest when
omitted), ``style_mode`` (``camera`` / ``domain``), ``recipe`` (a registered recipe,
:mod:`corelib.recipes`; default ``corereid_v2``) and recipe changes for this pair only:
``pretrain``, ``finetune``, ``style`` (fields of :class:`~corelib.config.PretrainCfg`,
:class:`~corelib.config.FinetuneCfg`, :class:`~corelib.config.StyleCfg`, dotted or nested:
``"finetune": {"cluster": {"num_clusters": 700}}``).

Recipes come from :func:`corelib.recipes.resolve_recipe`, the resolver the command line uses too:
a pair of embedded presets trains with the CPU recipes of ``make demo``, any other pair with the
paper's, and ``smoke=True`` gives the CI-sized recipe either way (the pair's own recipe changes
describe its full run and are left out). Recipe changes apply in this order: the pair's own, then
the seed and device, then the notebook's ``*_OVERRIDES`` (what sweeps vary).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .config import EMBEDDED_PAIRS, EMBEDDED_STYLE_MODES, STYLE_MODES, FinetuneCfg, PretrainCfg, StyleCfg
from .data.dataset import check_loader_options, list_datasets, loader_options
from .data.manifests import list_manifests, load_manifest
from .data.opening import open_dataset
from .data.synthetic import PRESETS, get_preset
from .errors import ConfigError, UnknownNameError
from .paths import atomic_write_text, data_root, repo_root
from .paths import synthetic_root as default_synthetic
from .recipes import INPUT_SIZES, KINDS, PAPER_CLUSTERS, RecipeContext, get_recipe, resolve_recipe
from .settings import Overrides, merge_overrides, read_saved_config

__all__ = ["DatasetRef", "ExperimentPair", "INPUT_SIZES", "KINDS", "PAPER_CLUSTERS", "dataset_ref", "dataset_refs",
           "define_pair", "experiment_pairs", "manifest_for", "read_pair", "recipe_context"]

PAIR_KEYS = ("source", "target", "kind", "style_mode", "recipe", "pretrain", "finetune", "style")
PAIR_RECORD = "pair.json"
"""Written into ``RUN_DIR/<pair>/`` by the training chapters: which datasets the pair's
checkpoints were trained on (read back by :mod:`corelib.results` for the task names)."""


@dataclass(frozen=True)
class DatasetRef:
    """One side of a pair: a loader or preset name, where the copy lies and the loader's options."""

    name: str
    """A loader (``market1501`` ...) or an embedded preset (``market_like`` ...)."""
    root: str = ""
    """The dataset folder or its parent; "" means the default (``$COREREID_DATA`` or ``data/``
    for loaders, the synthetic root for presets)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Loader options, e.g. ``{"subset": "labeled"}`` for CUHK03-NP or ``{"test_size": 1600}``."""

    @property
    def is_preset(self) -> bool:
        return self.name in PRESETS

    @property
    def label(self) -> str:
        """The name as tables show it, with the options: ``cuhk03np (subset=labeled)``."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name} ({opts})" if opts else self.name

    @property
    def caption(self) -> str:
        """Two lines for figure rows: the name, then the embedded domain or the dataset's title."""
        if self.is_preset:
            return f"{self.name}\n{get_preset(self.name).domain.name.split(' (')[0]}"
        manifest = self.manifest()
        title = load_manifest(manifest).get("title") if manifest else None
        return f"{self.name}\n{title or Path(self.root).name or 'custom'}"

    def to_dict(self) -> dict:
        return {"name": self.name, "root": self.root, **dict(self.options)}

    def open(self, synthetic_root: Union[str, Path, None] = None, scale: float = 1.0):
        """The :class:`~corelib.data.dataset.ReIDDataset`: a preset is generated under
        ``synthetic_root`` when missing (at ``scale``); a loader reads ``root``."""
        if self.is_preset:
            root = self.root or synthetic_root or default_synthetic()
            return open_dataset(self.name, root, scale=scale)
        return open_dataset(self.name, self.root or data_root(), **dict(self.options))

    def manifest(self) -> Optional[str]:
        """The committed manifest this copy is checked against (``corelib verify``), or None."""
        return manifest_for(self.name, self.options)


def _loader_defaults(name: str) -> dict:
    """The options a loader takes (its keyword parameters besides ``root``) with their defaults."""
    return loader_options(name)


def manifest_for(loader: str, options: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The manifest of ``loader`` whose ``loader_kwargs`` agree with ``options`` (the loader's
    defaults fill what ``options`` leaves out), or None (e.g. ``custom``, or a VehicleID test size
    without a manifest)."""
    options = {**_loader_defaults(loader), **dict(options or {})}
    for name in list_manifests():
        if name.startswith("synthetic_"):
            continue
        m = load_manifest(name)
        if m["loader"] == loader and all(options.get(k, v) == v for k, v in (m.get("loader_kwargs") or {}).items()):
            return name
    return None


def _kind_of(ref: DatasetRef) -> Optional[str]:
    """``person`` / ``vehicle`` from the preset or the loader's manifest; None when unknown."""
    if ref.is_preset:
        return get_preset(ref.name).kind
    name = ref.manifest()
    return load_manifest(name).get("kind") if name else None


def dataset_ref(spec: Any, where: str = "a dataset") -> DatasetRef:
    """A :class:`DatasetRef` from a name or a mapping ``{name, root, ...loader options}``, checked
    (``where`` names the caller in the messages: ``DATASETS['m2c']['target']``, ``--target``).

    Raises:
        UnknownNameError: an unknown loader or preset, or a manifest name given as a loader.
        ConfigError: a misspelt loader option, a pair key inside a side, options for a preset.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise ConfigError(f"{where} must be a dataset name such as \"market1501\" or a mapping "
                          f"{{\"name\": \"market1501\", \"root\": \"~/datasets\", ...loader options}}, got {spec!r}")

    name = spec["name"]
    if name not in PRESETS and name not in list_datasets():
        if name in list_manifests():  # e.g. cuhk03np_detected: what `corelib verify` takes, not a loader
            m = load_manifest(name)
            as_side = {"name": m["loader"], **(m.get("loader_kwargs") or {})}
            raise UnknownNameError(f"{where}: {name!r} is a manifest (what `corelib verify` takes), not a loader; "
                                   f"write the side as {json.dumps(as_side)} plus its \"root\"")
        raise UnknownNameError(f"{where}: unknown dataset {name!r}; loaders: {', '.join(list_datasets())}; "
                               f"embedded presets: {', '.join(sorted(PRESETS))}")
    root = spec.get("root") or ""
    if not isinstance(root, str):
        raise ConfigError(f"{where}['root'] must be a folder path (a string), got {root!r}")
    options = {k: v for k, v in spec.items() if k not in ("name", "root")}
    misplaced = [k for k in options if k in PAIR_KEYS]
    if misplaced:
        raise ConfigError(f"{where}: {misplaced[0]!r} belongs to the pair, beside \"source\" and \"target\", "
                          f"not inside a side")
    if name in PRESETS and options:
        raise ConfigError(f"{where}: the embedded preset {name!r} takes no loader options ({', '.join(options)}); "
                          f"its size follows DATA_ROOT and SMOKE")
    check_loader_options(name, options, where, takes='a side takes "name", "root" and')
    if root:  # relative to the repository, like data/ and runs/ (notebooks run with notebooks/ as cwd)
        path = Path(root).expanduser()
        root = str(path if path.is_absolute() else repo_root() / path)
    return DatasetRef(name, root, options)


@dataclass(frozen=True)
class ExperimentPair:
    """A labelled source, an unlabelled target, and the recipes that train one on the other."""

    name: str
    """The pair's name: its folder in the run directory (``RUN_DIR/<name>/``)."""
    source: DatasetRef
    """The labelled source domain."""
    target: DatasetRef
    """The unlabelled target domain (its labels only measure the results)."""
    kind: str
    """``person`` or ``vehicle``: input size and style-transfer mode."""
    style_mode: str
    """``camera`` (one CycleGAN per source camera pair) or ``domain`` (source <-> target)."""
    pretrain_overrides: Mapping[str, Any] = field(default_factory=dict)
    """This pair's changes to its pre-training recipe."""
    finetune_overrides: Mapping[str, Any] = field(default_factory=dict)
    """This pair's changes to its fine-tuning recipe."""
    style_overrides: Mapping[str, Any] = field(default_factory=dict)
    """This pair's changes to its CycleGAN recipe."""
    recipe: str = "corereid_v2"
    """The registered recipe (:func:`corelib.recipes.list_recipes`)."""

    @property
    def embedded(self) -> bool:
        """Both sides are embedded presets: the CPU recipes of ``make demo`` apply."""
        return self.source.is_preset and self.target.is_preset

    @property
    def task(self) -> str:
        """``source → target`` as the paper's tables name a task."""
        return f"{self.source.label} → {self.target.label}"

    @property
    def context(self) -> RecipeContext:
        """What the recipe resolver needs to know of the pair."""
        return RecipeContext(self.kind, self.embedded, self.target.name, self.style_mode)

    def open(self, data=None):
        """``(source, target)`` datasets. ``data`` (a :class:`~corelib.config.DataCfg`) says where
        the embedded presets are generated and at which scale; real copies are read from their roots."""
        return self.source.open(*_synthetic_place(data)), self.target.open(*_synthetic_place(data))

    def open_target(self, data=None):
        """The target dataset alone (see :meth:`open`)."""
        return self.target.open(*_synthetic_place(data))

    def _recipe(self, stage: str, own: Mapping[str, Any], smoke: bool, seed: Optional[int], device: Optional[str],
                overrides: Overrides, fields: Mapping[str, Any]):
        where = f"DATASETS[{self.name!r}]" if not self.embedded else f"the {self.name} pair"
        return resolve_recipe(stage, self.context, recipe=self.recipe, smoke=smoke, own=own, seed=seed, device=device,
                              overrides=merge_overrides(overrides, fields), where=where)

    def pretrain_cfg(self, *, smoke: bool = False, seed: Optional[int] = None, device: Optional[str] = None,
                     overrides: Overrides = None, **fields) -> PretrainCfg:
        """The pre-training recipe (see the module docstring), then the pair's own changes, ``seed``,
        ``device``, ``overrides`` (dotted names or group mappings, e.g. a chapter's
        ``PRETRAIN_OVERRIDES``) and the keyword ``fields``."""
        return self._recipe("pretrain", self.pretrain_overrides, smoke, seed, device, overrides, fields)

    def finetune_cfg(self, *, smoke: bool = False, seed: Optional[int] = None, device: Optional[str] = None,
                     overrides: Overrides = None, **fields) -> FinetuneCfg:
        """The fine-tuning recipe, then the pair's own changes, ``seed``, ``device``, ``overrides``
        and ``fields`` (as :meth:`pretrain_cfg`).

        Raises:
            ConfigError: the target is not one of the paper's (e.g. ``custom``) and no
                ``cluster.num_clusters`` was given.
        """
        return self._recipe("finetune", self.finetune_overrides, smoke, seed, device, overrides, fields)

    def style_cfg(self, *, smoke: bool = False, seed: Optional[int] = None, device: Optional[str] = None,
                  overrides: Overrides = None, **fields) -> StyleCfg:
        """The CycleGAN recipe (CamStyle's, or the authors' domain-aware one), then the changes."""
        return self._recipe("style", self.style_overrides, smoke, seed, device, overrides, fields)

    def num_clusters(self, run_dir: Union[str, Path, None] = None, *, smoke: bool = False) -> int:
        """k of this pair's pseudo-labels: what fine-tuning used in ``run_dir`` (its saved
        ``config.yaml``, so a sweep's k is honoured), else the recipe's (also when ``run_dir`` is
        empty: a chapter's own default run directory holds no fine-tuning)."""
        if run_dir:
            saved = Path(run_dir) / self.name / "finetune" / "config.yaml"
            if saved.is_file():
                return read_saved_config(FinetuneCfg, saved).cluster.num_clusters
        return self.finetune_cfg(smoke=smoke).cluster.num_clusters

    def to_dict(self) -> dict:
        return {"name": self.name, "task": self.task, "source": self.source.to_dict(), "target": self.target.to_dict(),
                "kind": self.kind, "style_mode": self.style_mode, "recipe": self.recipe, "embedded": self.embedded}

    def claim(self, run_dir: Union[str, Path]) -> Path:
        """``RUN_DIR/<name>/``, recording which datasets this pair trains on there (``pair.json``).

        Raises:
            ConfigError: the folder holds a pair of the same name trained on other datasets, whose
                checkpoints would otherwise be resumed or mixed up with this pair's.
        """
        pair_dir = Path(run_dir) / self.name
        record = pair_dir / PAIR_RECORD
        mine = {"source": self.source.name, "source_options": dict(self.source.options),
                "target": self.target.name, "target_options": dict(self.target.options)}
        if record.is_file():
            theirs = json.loads(record.read_text())
            if {k: theirs.get(k) for k in mine} != mine:
                raise ConfigError(
                    f"{pair_dir} holds the pair {self.name!r} trained on {theirs.get('task', '?')}, not {self.task}; "
                    f"give this pair another name in DATASETS or use another RUN_DIR")

        atomic_write_text(record, json.dumps({**self.to_dict(), **mine}, indent=2))
        return pair_dir


def _synthetic_place(data) -> tuple:
    """``(root, scale)`` of the embedded presets from a :class:`~corelib.config.DataCfg` (or the defaults)."""
    return (data.dataset_root(), data.scale) if data is not None else (None, 1.0)


def _embedded_pair(name: str) -> ExperimentPair:
    source, target = EMBEDDED_PAIRS[name]
    return ExperimentPair(name, DatasetRef(source), DatasetRef(target), kind=name, style_mode=EMBEDDED_STYLE_MODES[name])


def define_pair(name: str, spec: Mapping[str, Any]) -> ExperimentPair:
    """An :class:`ExperimentPair` from one ``DATASETS`` entry (see the module docstring).

    Raises:
        ConfigError: a missing side, an unknown key, a kind that cannot be read from a manifest.
        UnknownNameError: an unknown loader or preset.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"DATASETS[{name!r}] must be a mapping with \"source\" and \"target\", got {spec!r}")
    unknown = sorted(set(spec) - set(PAIR_KEYS))
    if unknown:
        raise ConfigError(f"DATASETS[{name!r}] has no key {unknown[0]!r}; valid keys: {', '.join(PAIR_KEYS)}")
    missing = [k for k in ("source", "target") if k not in spec]
    if missing:
        raise ConfigError(f"DATASETS[{name!r}] needs a {missing[0]!r}, e.g. \"{missing[0]}\": "
                          f"{{\"name\": \"market1501\", \"root\": \"~/datasets\"}}")
    source = dataset_ref(spec["source"], f"DATASETS[{name!r}]['source']")
    target = dataset_ref(spec["target"], f"DATASETS[{name!r}]['target']")
    ctx = recipe_context(source, target, kind=spec.get("kind"), style_mode=spec.get("style_mode"),
                         where=f"DATASETS[{name!r}]")
    recipe = spec.get("recipe", "corereid_v2")
    get_recipe(recipe)  # an unknown recipe is named now
    recipes = {}
    for key, cls in (("pretrain", PretrainCfg), ("finetune", FinetuneCfg), ("style", StyleCfg)):
        own = spec.get(key) or {}
        if not isinstance(own, Mapping):
            raise ConfigError(f"DATASETS[{name!r}][{key!r}] must be a mapping of {cls.__name__} fields, got {own!r}")
        recipes[key] = dict(own)
    pair = ExperimentPair(name, source, target, kind=ctx.kind, style_mode=ctx.style_mode,
                          pretrain_overrides=recipes["pretrain"], finetune_overrides=recipes["finetune"],
                          style_overrides=recipes["style"], recipe=recipe)
    # resolve every stage now: an unknown field, a wrong type or a missing k is named here, not hours later
    pair.pretrain_cfg(), pair.finetune_cfg(), pair.style_cfg()
    return pair


def recipe_context(source: Optional[DatasetRef], target: Optional[DatasetRef], *, kind: Optional[str] = None,
                   style_mode: Optional[str] = None, where: str = "the pair") -> RecipeContext:
    """The :class:`~corelib.recipes.RecipeContext` of a source and / or a target.

    The data count as embedded when every side given is an embedded preset; the kind comes from
    ``kind`` or else from the presets' and manifests' (they must agree); the style mode from
    ``style_mode`` or else the kind (camera-aware for persons, domain-aware for vehicles).

    Raises:
        ConfigError: sides of different kinds, a kind no manifest tells, an unknown style mode.
    """
    sides = [s for s in (source, target) if s is not None]
    if not sides:
        raise ConfigError(f"{where}: name a source or a target dataset")
    kinds = {side.name: _kind_of(side) for side in sides}
    known = {k for k in kinds.values() if k is not None}
    if len(known) > 1:
        first, second = sides[0], sides[1]
        raise ConfigError(f"{where} pairs a {kinds[first.name]} source ({first.name}) with a {kinds[second.name]} "
                          f"target ({second.name}); both sides must show the same kind of object")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"{where}: kind must be \"person\" or \"vehicle\", got {kind!r}")
    kind = kind or next(iter(known), None)
    if kind not in KINDS:
        names = " -> ".join(s.name for s in sides)
        raise ConfigError(f"{where}: cannot tell whether {names} is a person or a vehicle pair (no manifest says); "
                          f"add \"kind\": \"person\" or \"vehicle\" to the pair (on the command line: --kind)")
    style_mode = style_mode or ("camera" if kind == "person" else "domain")
    if style_mode not in STYLE_MODES:
        raise ConfigError(f"{where}: style_mode must be one of {', '.join(STYLE_MODES)}, got {style_mode!r}")
    return RecipeContext(kind, all(s.is_preset for s in sides), target.name if target is not None else None,
                         style_mode)


def experiment_pairs(names: Sequence[str], datasets: Optional[Mapping[str, Any]] = None) -> dict[str, ExperimentPair]:
    """The pairs a chapter runs: each name of ``names`` (its ``PAIRS``) defined in ``datasets``
    (its ``DATASETS``) or, failing that, one of :data:`~corelib.config.EMBEDDED_PAIRS`.

    Raises:
        UnknownNameError: a name neither defines (the message lists both).
        ConfigError: ``datasets`` defines pairs but ``names`` runs none of them (add them to
            ``PAIRS``), a malformed definition, or an empty ``names``.
    """
    datasets = dict(datasets or {})
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ConfigError(f"PAIRS is empty; name the pairs to run, e.g. {list(EMBEDDED_PAIRS)} or those of DATASETS")
    pairs = {}
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"pair names are folder names in RUN_DIR (letters, digits, '_', '-'), got {name!r}")
        if name in datasets:
            pairs[name] = define_pair(name, datasets[name])
        elif name in EMBEDDED_PAIRS:
            pairs[name] = _embedded_pair(name)
        else:
            raise UnknownNameError(f"unknown pair {name!r}; embedded pairs: {', '.join(EMBEDDED_PAIRS)}; "
                                   f"pairs in DATASETS: {', '.join(datasets) or 'none'}")
    if datasets and not set(names) & set(datasets):  # DATASETS given, PAIRS left at the embedded default
        raise ConfigError(f"DATASETS defines {', '.join(datasets)} but PAIRS lists only {', '.join(names)}: "
                          f"add the pairs to run to PAIRS, e.g. PAIRS = {list(datasets)}")
    return pairs


def dataset_refs(pairs: Mapping[str, ExperimentPair]) -> dict[str, DatasetRef]:
    """Every dataset the pairs use, once, keyed by a file-name-safe label (``market_like``,
    ``cuhk03np_labeled`` ...; the root's folder name is added when one loader reads two roots)."""
    refs: dict[tuple, DatasetRef] = {}
    for pair in pairs.values():
        for ref in (pair.source, pair.target):
            refs.setdefault((ref.name, ref.root, json.dumps(dict(ref.options), sort_keys=True, default=str)), ref)

    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")

    base = {key: slug("_".join([ref.name, *map(str, ref.options.values())])) for key, ref in refs.items()}
    out = {}
    for key, ref in refs.items():
        label = base[key]
        if list(base.values()).count(label) > 1:
            label = slug(f"{label}_{Path(ref.root).name or 'default'}")
        out[label] = ref
    return out


def read_pair(pair_dir: Union[str, Path]) -> Optional[dict]:
    """What :meth:`ExperimentPair.claim` recorded in ``RUN_DIR/<pair>/``, or None."""
    record = Path(pair_dir) / PAIR_RECORD
    return json.loads(record.read_text()) if record.is_file() else None

