"""The conversion machinery behind :mod:`corelib.models.convert`: the format registry, the safe reader of
foreign files, the checked mapping of their tensors onto a registered network, and the writer of the
converted checkpoint. The formats are the other modules of this package."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

from ...errors import CheckpointError, InvalidInputError, MissingFileError
from ...ownership import fingerprint
from ...registry import Registry
from ...runtime.checkpoint import load_checkpoint, save_checkpoint
from ...yamlfile import read_yaml
from ..registry import build_model

STAGES = ("pretrain", "finetune")


@dataclass(frozen=True)
class FormatInfo:
    """What a checkpoint format declares at registration (:func:`register_format`)."""

    description: str = ""
    """One line for ``corelib convert --help``: which files of which release."""
    options: Mapping[str, str] = field(default_factory=dict)
    """The options the converter reads (``--option NAME=VALUE``; keyword arguments of
    :func:`convert_checkpoint`), each with one line of help. Another name is refused."""
    takes_config: bool = False
    """Whether the format's releases configure their networks in a YAML file (``--config``)."""
    takes_sha256: bool = False
    """Whether the converter also gets the file's SHA-256 (keyword ``sha256``), to recognise a
    published release file by the hash prefix in its name (IBN-Net's ``resnet50_ibn_a-d9d0bb7b.pth``)."""


@dataclass
class Conversion:
    """What a converter returns: the network to build and where each of its tensors comes from."""

    stage: str
    """``"pretrain"`` (a source network: evaluated, or adapted by ``finetune``) or ``"finetune"``."""
    model_name: str
    """A registered network (:func:`corelib.models.list_models`)."""
    model_args: dict
    """Its builder's arguments (``num_classes`` included; ``weights`` is always None)."""
    mapping: dict[str, str]
    """``{corelib state-dict key: the file's key}``, for every key the file fills."""
    dropped: dict[str, str]
    """``{the file's key: why it has no place}`` (a tensor the official forward never uses ...)."""
    input_size: tuple[int, int]
    """``(height, width)`` the network is tested at (the checkpoint's ``augment.height/width``)."""
    filled: dict[str, str] = field(default_factory=dict)
    """``{corelib key: why it keeps the built network's value}`` (a buffer the file cannot have)."""
    transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    """``{corelib key: a function of the file's tensor}`` where a value changes form on the way."""
    inferred: dict[str, str] = field(default_factory=dict)
    """``{setting: "value (from where)"}``: what the conversion decided and why, for the record."""
    method: Optional[str] = None
    """The published method the weights are (a ``method`` of :mod:`corelib.published`), or None."""
    task: Optional[str] = None
    """The published task (``"market1501->dukemtmc"``, ``"market1501"``), or None when unknown."""
    published_backbone: str = ""
    """The backbone as the published tables spell it (``"ViT-B/16 (256×128)"``, ``"ResNet50"``): a row
    that names a backbone is put beside this network only when it names this one."""
    published_also: list[tuple[str, str]] = field(default_factory=list)
    """Further ``(method, backbone)`` names the published tables give these weights' configuration
    (the rows of a repository's released models beside the paper's)."""
    epoch: Optional[int] = None
    """The 1-based epoch the file says its weights are from, None when it does not say."""


FORMATS: Registry[Callable[..., Conversion]] = Registry(
    "checkpoint format", "Register your own with corelib.convert.register_format.", info=FormatInfo)


def register_format(name: str, **info: Any) -> Callable:
    """Register ``fn(contents, *, config, options) -> Conversion`` under ``name`` (fields of
    :class:`FormatInfo`: ``description``, ``options``, ``takes_config``, ``takes_sha256``; with the
    last, ``fn`` also gets ``sha256=`` the file's hex digest).

    ``contents`` is what :func:`read_foreign` read (the top-level object, wrappers included);
    ``config`` the official YAML as a dict (None when not given); ``options`` the user's options
    (names declared in ``options``; values as given, strings from the command line)."""
    return FORMATS.register(name, **info)


def list_formats() -> list[str]:
    """Names :func:`convert_checkpoint` accepts."""
    return FORMATS.names()


# ----------------------------------------------------------------------------- reading a foreign file

_NP_CORE = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1

_NUMPY_GLOBALS = [
    (np.dtype, "numpy.dtype"),
    (np.ndarray, "numpy.ndarray"),
    (_NP_CORE.multiarray.scalar, "numpy._core.multiarray.scalar"),
    (_NP_CORE.multiarray.scalar, "numpy.core.multiarray.scalar"),  # the name numpy 1.x files use
    (_NP_CORE.multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (_NP_CORE.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
] + [(type(np.dtype(t)), f"numpy.dtypes.{type(np.dtype(t)).__name__}")
     for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1")]
"""The only classes a foreign file may name besides torch's own: numpy scalars, arrays and their
dtypes (the authors' code stores ``best_mAP`` as a ``numpy.float64``)."""


def read_foreign(path: Union[str, Path]) -> Any:
    """The contents of a checkpoint of another codebase, read without running code.

    torch's safe unpickler (``weights_only=True``) with numpy's scalar, array and dtype classes
    allowed by name: a file that names any other class or function (pickled code) is refused, not
    run. numpy values come back as plain Python numbers and lists.

    Raises:
        MissingFileError: no file at ``path``.
        CheckpointError: empty, truncated, corrupt, or holding pickled code (the message names it).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"no file at {path}; pass the released checkpoint file")
    with torch.serialization.safe_globals(_NUMPY_GLOBALS):
        contents = load_checkpoint(path)  # its refusals: code (named), empty, truncated, not a torch file
    return _plain(contents)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists, through dicts, lists and tuples."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` under ``prefix`` (e.g. DataParallel's ``module.``), the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def parse_pair(value: Any, fmt: str, what: str) -> tuple[int, int]:
    """``(H, W)`` from ``[256, 128]``, ``"256x128"``, ``"256,128"`` or one number for both (an option
    from the command line, a value of an official YAML).

    Raises:
        InvalidInputError: not one or two positive integers (one line naming the option)."""
    parts = value if isinstance(value, (list, tuple)) else re.split(r"\s*[x×,]\s*", str(value).strip(" ()[]"))
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    try:
        pair = (int(str(parts[0]).strip()), int(str(parts[1]).strip())) if len(parts) == 2 else None
    except ValueError:
        pair = None
    if pair is None or min(pair) < 1:
        raise InvalidInputError(f"{fmt}: {what} must be two positive integers such as 256x128, got {value!r}; "
                                f"pass --option {what}=HxW")
    return pair


def require(options: Mapping[str, Any], name: str, fmt: str, why: str, *, config_key: Optional[str] = None) -> Any:
    """``options[name]``, or a one-line refusal naming the option (and the YAML key that also gives it)."""
    if options.get(name) is not None:
        return options[name]
    alt = f" or --config the official YAML (its {config_key})" if config_key else ""
    raise InvalidInputError(f"{fmt}: {why}; pass --option {name}=...{alt}")


# ----------------------------------------------------------------------------- the conversion


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """What :func:`convert_checkpoint` made (and wrote, given a path)."""

    path: Optional[Path]
    """Where it was written; None when only returned."""
    conversion: Conversion
    record: dict
    """The checkpoint's ``converted`` entry."""
    checkpoint: dict
    """The checkpoint's contents (stage, model, model_name, model_args, cfg, epoch, converted)."""
    model: torch.nn.Module
    """The converted network, loaded, in eval mode."""


def convert_checkpoint(path: Union[str, Path], format: str, out: Union[str, Path, None] = None, *,
                       config: Union[str, Path, None] = None, overwrite: bool = False, **options: Any
                       ) -> ConvertedCheckpoint:
    """Convert the file ``path`` of format ``format`` into a corelib checkpoint, written to ``out``
    (``corelib convert``) or, without ``out``, only returned (:attr:`ConvertedCheckpoint.checkpoint`:
    what :func:`~corelib.runtime.checkpoint.save_checkpoint` would write; ``.model`` the network).

    Args:
        format: a registered format (:func:`list_formats`).
        config: the official YAML config the file was trained with (formats that take one).
        overwrite: replace an existing ``out`` (it must then be a checkpoint this function wrote).
        options: the format's options (:class:`FormatInfo`), e.g. ``task="market1501->dukemtmc"``.

    Raises:
        UnknownNameError: an unknown format.
        InvalidInputError: an option the format does not take, or one it needs and cannot infer;
            a file whose keys or shapes do not fit the format's layout (the message names them).
        CheckpointError: the file cannot be read safely; ``out`` exists and is not ours to replace.
    """
    convert = FORMATS.get(format)
    info: FormatInfo = FORMATS.info(format)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        known = ", ".join(info.options) or "none"
        raise InvalidInputError(f"{format} takes no option {unknown[0]!r}; its options: {known}")
    if config is not None and not info.takes_config:
        raise InvalidInputError(f"{format} files have no YAML config; drop --config")
    if out is not None:
        out = Path(out).expanduser()
        _check_out(out, overwrite)
    path = Path(path).expanduser()
    contents = read_foreign(path)
    cfg = read_yaml(config, what=f"the {format} config") if config is not None else None
    digest = fingerprint(path)  # the file's SHA-256
    extra = {"sha256": digest} if info.takes_sha256 else {}
    conversion = convert(contents, config=cfg, options=dict(options), **extra)
    flat = _flat_tensors(contents)
    model = _load(conversion, flat, format, path)
    record = {
        "format": format,
        "source_file": path.name,
        "sha256": digest,
        "options": {k: str(v) for k, v in options.items()},
        "config": Path(config).name if config is not None else None,
        "inferred": dict(conversion.inferred),
        "dropped": dict(sorted(conversion.dropped.items())),
        "filled": dict(sorted(conversion.filled.items())),
        "method": conversion.method,
        "task": conversion.task,
        "published_backbone": conversion.published_backbone,
        "published_also": [list(pair) for pair in conversion.published_also],
    }
    state = {
        "stage": conversion.stage,
        "model": model.state_dict(),
        "model_name": conversion.model_name,
        "model_args": dict(conversion.model_args),
        "cfg": stage_cfg(conversion),
        "epoch": (conversion.epoch - 1) if conversion.epoch else None,
        "converted": record,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, out)
    return ConvertedCheckpoint(out, conversion, record, state, model)


def _check_out(out: Path, overwrite: bool) -> None:
    """Never replace a file the workbench did not write: only a converted checkpoint, and only when asked."""
    if not out.exists():
        return
    if not overwrite:
        raise CheckpointError(f"{out} exists; choose another output path, or pass --overwrite to replace a "
                              f"checkpoint that corelib convert wrote")
    try:
        ours = isinstance(load_checkpoint(out).get("converted"), dict)
    except Exception:  # noqa: BLE001 - unreadable: certainly not ours
        ours = False
    if not ours:
        raise CheckpointError(f"{out} is not a checkpoint written by corelib convert; it is not replaced. "
                              f"Choose another output path")


def _flat_tensors(contents: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of the file under its dotted path of dict keys (``state_dict.module.base.0.weight``)."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(contents, dict):
        for k, v in contents.items():
            key = f"{prefix}{k}"
            if torch.is_tensor(v):
                out[key] = v
            elif isinstance(v, dict):
                out.update(_flat_tensors(v, key + "."))
    return out


def _load(conversion: Conversion, flat: dict[str, torch.Tensor], fmt: str, path: Path) -> torch.nn.Module:
    """Build the network, fill it from the file by ``mapping`` and check that nothing was left out."""
    if conversion.stage not in STAGES:
        raise InvalidInputError(f"{fmt}: a conversion's stage must be one of {', '.join(STAGES)}")
    model = build_model(conversion.model_name, **{**conversion.model_args, "weights": None})
    own = model.state_dict()
    where = f"{path.name} ({fmt})"
    missing = sorted(k for k in own if k not in conversion.mapping and k not in conversion.filled)
    if missing:
        raise InvalidInputError(f"{where}: {len(missing)} tensor(s) of the {conversion.model_name} network have no "
                                f"source in the file (e.g. {missing[0]}): not a file of the layout this format reads")
    foreign = [k for k in conversion.mapping if k not in own]
    if foreign:
        raise InvalidInputError(f"{where}: the conversion maps onto {foreign[0]}, which the {conversion.model_name} "
                                f"network does not have")
    sources = set(conversion.mapping.values())
    absent = sorted(s for s in sources if s not in flat)
    if absent:
        raise InvalidInputError(f"{where}: the file has no {absent[0]} ({len(absent)} key(s) missing): an incomplete "
                                f"file or another layout")
    unplaced = sorted(k for k in flat if k not in sources and k not in conversion.dropped)
    if unplaced:
        raise InvalidInputError(f"{where}: {len(unplaced)} tensor(s) of the file have no place in the "
                                f"{conversion.model_name} network and no documented reason to be dropped (e.g. "
                                f"{unplaced[0]}): another variant of the network than this format knows")
    state = {}
    for key, src in conversion.mapping.items():
        value = flat[src]
        if key in conversion.transforms:
            value = conversion.transforms[key](value)
        if tuple(value.shape) != tuple(own[key].shape):
            raise InvalidInputError(f"{where}: {src} is {tuple(value.shape)} but {key} of the {conversion.model_name} "
                                    f"network is {tuple(own[key].shape)}")
        state[key] = value.to(own[key].dtype)
    for key in conversion.filled:
        state[key] = own[key]
    model.load_state_dict(state, strict=True)
    return model.eval()


MODEL_FIELDS = {"pretrain": ("backbone", "backbone_args"),
                "finetune": ("backbone", "backbone_args", "ecab", "pool", "fusion", "alpha")}
"""The network arguments that are fields of each stage config's ``model`` group besides ``name``,
``weights`` and ``net_args`` (:class:`~corelib.config.SourceModelCfg`, :class:`~corelib.config.MeanTeacherCfg`;
a test holds the two equal); every other argument goes to ``net_args``."""


def stage_cfg(conversion: Conversion) -> dict:
    """The stage config a converted checkpoint carries, as a ``to_dict`` mapping of the fields the file
    determines: the network (``model``), the input size (``augment``) and, for fine-tuning, the class
    count (``cluster.num_clusters``). :func:`corelib.load_trained_model` fills in the stage's defaults
    for the rest, as for a checkpoint of the workbench's own written before a field existed."""
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in conversion.model_args.items()}
    classes = args.pop("num_classes", None)
    fields = MODEL_FIELDS[conversion.stage]
    model = {"name": conversion.model_name, **{k: v for k, v in args.items() if k in fields},
             "net_args": {k: v for k, v in args.items() if k not in fields}}
    cfg: dict = {"model": model, "augment": {"height": int(conversion.input_size[0]),
                                             "width": int(conversion.input_size[1])}}
    if conversion.stage == "pretrain":
        model["weights"] = "none"
    elif classes is not None:
        cfg["cluster"] = {"num_clusters": int(classes)}
    return cfg
