"""Grouped settings: frozen dataclasses with nested groups, dotted overrides and typed values.

The training recipes (:class:`~corelib.config.PretrainCfg`, :class:`~corelib.config.FinetuneCfg`)
group their fields where the plug-ins are (``model``, ``augment``, ``cluster``, ``loss``,
``runtime``). This module gives every such dataclass the same handling:

- overrides as a mapping or as ``"name=value"`` strings, where a name is dotted
  (``cluster.num_clusters=500``, ``cluster.kmeans.init=random``) or a group takes a mapping
  (``{"cluster": {"num_clusters": 500}}``, a partial update of the group);
- every value typed where it enters (YAML lists become tuples, ``1e-3`` a float, ``"3"`` is
  refused for an int), the message naming the field;
- an unknown name answered with the valid ones and the closest match.

Example::

    cfg = FinetuneCfg().with_overrides(["cluster.num_clusters=500", "epochs=40"])
    cfg = cfg.with_overrides({"model": {"fusion": "v1"}})
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

import yaml

from .errors import ConfigError
from .paths import atomic_write_text
from .registry import did_you_mean
from .yamlfile import parse_yaml, read_yaml

SettingsT = TypeVar("SettingsT", bound="Settings")
Overrides = Union[Mapping[str, Any], Sequence[str], None]


class Settings:
    """Mixin of the frozen settings dataclasses (see the module docstring)."""

    def to_dict(self) -> dict:
        """Nested plain values (groups become mappings)."""
        return asdict(self)  # type: ignore[call-overload]

    def flat(self) -> dict[str, Any]:
        """Dotted names -> values (``{"cluster.num_clusters": 900, ...}``); mappings stay whole."""
        return flatten(self.to_dict(), _group_names(type(self)))

    def with_overrides(self: SettingsT, overrides: Overrides = None, **kwargs: Any) -> SettingsT:
        """A copy with ``overrides`` (a mapping or ``"name=value"`` strings), then ``kwargs``, applied.

        Raises:
            ConfigError: an unknown or moved field, a value of the wrong type.
        """
        out = _apply(self, _parse(overrides), type(self).__name__)
        return _apply(out, kwargs, type(self).__name__) if kwargs else out

    @classmethod
    def from_dict(cls: type[SettingsT], data: Mapping[str, Any]) -> SettingsT:
        """The settings a :meth:`to_dict` mapping describes (fields it leaves out keep their defaults)."""
        return cls().with_overrides(data)


# Checks a settings class runs in its __post_init__, so a misspelt or out-of-range value is refused
# when the settings are made, not an epoch into training.

def check_choice(field_name: str, value, choices: tuple) -> None:
    """Refuse a misspelt choice when the settings are made, not an epoch into training."""
    if value not in choices:
        raise ConfigError(f"{field_name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
                          f"{did_you_mean(value, [str(c) for c in choices])}")


def check_at_least(field_name: str, value, low, why: str = "") -> None:
    """Refuse a count or an interval below ``low`` (``epochs=0`` would train nothing and report a
    best checkpoint that does not exist; ``eval_every=0`` would divide by zero after an epoch), and
    a NaN or infinite weight (``weight_decay=nan`` passed the comparison)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{field_name} must be a finite number of at least {low}, got {value!r}")
    if value < low:
        raise ConfigError(f"{field_name} must be at least {low}, got {value!r}{f' ({why})' if why else ''}")


def check_within(field_name: str, value, low: float, high: float, *, high_open: bool = False) -> None:
    """Refuse a probability, a factor or a momentum outside ``[low, high]`` (``[low, high)``)."""
    if not (low <= value < high if high_open else low <= value <= high) or value != value:  # NaN fails both
        raise ConfigError(f"{field_name} must lie in [{low}, {high}{')' if high_open else ']'}, got {value!r}")


def check_positive(field_name: str, value) -> None:
    """Refuse a rate, a factor or a weight that is not a finite number above 0 (``lr=inf`` was
    accepted, and Adam's first step turns every weight into inf)."""
    if not 0 < value < math.inf:  # NaN too
        raise ConfigError(f"{field_name} must be greater than 0 and finite, got {value!r}")


def flatten(data: Mapping[str, Any], groups: set[str], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for the entries of ``data`` whose dotted name is in ``groups``; other values as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name in groups and isinstance(value, Mapping):
            out.update(flatten(value, groups, f"{name}."))
        else:
            out[name] = value
    return out


def _group_names(cls: type, prefix: str = "") -> set[str]:
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        if is_dataclass(kind):
            out.add(f"{prefix}{f.name}")
            out |= _group_names(kind, f"{prefix}{f.name}.")
    return out


def _parse(overrides: Overrides) -> dict[str, Any]:
    """A mapping of overrides; ``"name=value"`` strings are read as YAML values (``epochs=40``,
    ``milestones=[40,70]``, ``device=cpu``)."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = [overrides]

    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not NAME=VALUE (e.g. epochs=40 or cluster.num_clusters=500)")
        values[key.strip()] = parse_yaml(text, source=f"override {key.strip()}=")
    return values


def _apply(obj: Any, values: Mapping[str, Any], where: str) -> Any:
    """``obj`` (a settings dataclass) with ``values`` set; dotted keys and group mappings descend."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: a field name must be a non-empty string, got {key!r}")
        head, _, rest = key.partition(".")
        if head not in known:
            raise ConfigError(_unknown(cls, where, key))
        kind = hints[head]
        if is_dataclass(kind):
            group = nested.setdefault(head, {})
            if rest:
                group[rest] = value
            elif isinstance(value, kind):
                changes[head] = value
                nested.pop(head)
            elif isinstance(value, Mapping):
                group.update(value)
            else:
                raise ConfigError(f"{where}.{head} is a group of settings: give a mapping such as "
                                  f"{{{_example(kind)}}} or set one field, e.g. {head}.{_example(kind, dotted=True)}")
        elif rest:
            if kind is not dict and typing.get_origin(kind) is not dict:
                raise ConfigError(f"{where}.{head} is a single value, not a group: write {head}=VALUE, not {key}")
            current = dict(changes.get(head, getattr(obj, head)))
            current[rest] = value
            changes[head] = current
        else:
            changes[head] = _coerce(f"{where}.{head}", kind, value)
    for head, group in nested.items():
        base = changes.get(head, getattr(obj, head))
        changes[head] = _apply(base, group, f"{where}.{head}")
    return replace(obj, **changes) if changes else obj


def settings_from(cls: type[SettingsT], values: Mapping[str, Any], where: str) -> SettingsT:
    """``cls()`` with ``values`` set, the messages naming the fields as ``where.<field>``: a plug-in's
    settings held in a mapping of its host (an outside labeller's ``cluster.options``).

    Raises:
        ConfigError: an unknown field (the valid ones are named), a value of the wrong type.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} takes a mapping of {cls.__name__} fields, got {values!r}")
    return _apply(cls(), values, where)


def _example(kind: type, *, dotted: bool = False) -> str:
    f = fields(kind)[0]
    value = getattr(kind(), f.name)
    return f"{f.name}={value}" if dotted else f"{f.name!r}: {value!r}"


def _unknown(cls: type, where: str, key: str) -> str:
    """The message for an unknown field: the valid names and the closest, or the group that holds a
    field of that name (``num_clusters`` is ``cluster.num_clusters``)."""
    names = [f.name for f in fields(cls)]
    in_group = [name for name in _field_paths(cls) if name.endswith(f".{key}")]
    hint = f"; did you mean {in_group[0]!r}?" if in_group else did_you_mean(key.split('.')[0], names)
    return f"{where} has no field {key!r}{hint} Valid fields: {', '.join(names)}"


def _field_paths(cls: type, prefix: str = "") -> list[str]:
    """The dotted name of every single-value field of ``cls``, inside its groups too."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in fields(cls):
        kind = hints[f.name]
        out += _field_paths(kind, f"{prefix}{f.name}.") if is_dataclass(kind) else [f"{prefix}{f.name}"]
    return out


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """``value`` as field ``name`` wants it (YAML lists become tuples, ints floats)."""
    origin = typing.get_origin(kind)
    if origin is Union:  # Optional[X]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else _coerce(name, args[0], value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} takes a list, got {value!r}")
        return tuple(value)
    if kind is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} takes a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} takes true or false, got {value!r}")
        return value
    if kind is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} takes a number, got {value!r}") from None
    if kind in (int, str) and (not isinstance(value, kind) or isinstance(value, bool)):
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name} takes a{'n int' if kind is int else ' string'}, got {value!r}")
    return value


def load_config(
    cls: type[SettingsT],
    path: Union[str, Path, None] = None,
    overrides: Overrides = None,
    *,
    base: Optional[SettingsT] = None,
) -> SettingsT:
    """A settings dataclass from ``base`` (default ``cls()``), a YAML file, then overrides.

    Args:
        cls: e.g. :class:`~corelib.config.PretrainCfg` or :class:`~corelib.config.FinetuneCfg`.
        path: a YAML mapping of fields, nested as :func:`save_config` writes it
            (``cluster: {num_clusters: 500}``) or with dotted names; None skips it.
        overrides: a mapping, or ``"name=value"`` strings as typed on the command line (the value
            is read as YAML: ``epochs=40``, ``milestones=[40,70]``, ``runtime.device=cpu``).
        base: the starting point, e.g. ``FinetuneCfg.smoke()``.

    Raises:
        ConfigError: an unknown or moved field (the message names the valid ones or the new
            place), a value of the wrong type, or a file that is not a YAML mapping.
    """
    cfg = base if base is not None else cls()
    if path is not None:
        cfg = cfg.with_overrides(read_mapping(path, f"{cls.__name__} fields"))
    return cfg.with_overrides(overrides)


def read_mapping(path: Union[str, Path], what: str = "settings") -> dict:
    """The YAML mapping in ``path`` (read by :func:`corelib.yamlfile.read_yaml`; an empty file is ``{}``).

    Raises:
        ConfigError: no such file, a file that :func:`~corelib.yamlfile.read_yaml` refuses (invalid
            YAML, too large, aliases that expand too far), or one that holds something else than a mapping.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    loaded = read_yaml(path, what="config file") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of {what}, e.g. 'epochs: 40'")
    return loaded


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_yaml(cfg: Any) -> str:
    """A settings dataclass as the YAML text :func:`load_config` reads back to an equal object."""
    return yaml.safe_dump(_plain(dataclasses.asdict(cfg)), sort_keys=False)


def save_config(cfg: Any, path: Union[str, Path]) -> Path:
    """Write :func:`config_yaml` of ``cfg`` to ``path`` (through a temporary file, so a reader never
    sees half of it)."""
    path = Path(path)
    atomic_write_text(path, config_yaml(cfg))
    return path


def merge_overrides(*sources: Overrides) -> dict:
    """One nested mapping from several override sets (mappings, nested or dotted, or ``"name=value"``
    strings), later sets winning field by field: e.g. a YAML ``--config`` file, then ``-o`` flags."""
    merged: dict = {}
    for source in sources:
        for key, value in _parse(source).items():
            node = merged
            *heads, last = str(key).split(".")
            for head in heads:
                if not isinstance(node.get(head), dict):
                    node[head] = {}
                node = node[head]
            if isinstance(value, Mapping) and isinstance(node.get(last), dict):
                node[last] = _deep_merge(node[last], value)
            else:
                node[last] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _deep_merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_saved_config(cls: type[SettingsT], path: Union[str, Path]) -> SettingsT:
    """A ``config.yaml`` a training loop wrote."""
    return cls.from_dict(read_mapping(path, f"{cls.__name__} fields"))
