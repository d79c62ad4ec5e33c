"""The ``transreid`` format: TransReID's trained models (damo-cv/TransReID, He et al., ICCV 2021) as
``transreid_net`` checkpoints (docs/baselines.md §1).

**The file.** The official training loop saves ``model.state_dict()`` as ``transformer_<epoch>.pth``
(``processor/processor.py``): a plain state dict, keys ``module.``-prefixed when trained with
DistributedDataParallel. With JPM (``build_transformer_local``): ``base.*`` (the ViT:
``cls_token``, ``pos_embed``, ``sie_embed`` of C·V | C | V rows, ``patch_embed.proj``, ``blocks.*``,
``norm``, ``fc``), ``b1`` and ``b2`` (copies of the last block and the final norm), ``bottleneck``
and ``bottleneck_1..4`` (BN-necks), ``classifier`` and ``classifier_1..4``; without JPM
(``build_transformer``): ``base.*``, ``bottleneck``, ``classifier``.

**Renames.** ``base.`` -> ``trunk.``; ``bottleneck_j`` -> ``local_bottlenecks.(j-1)``;
``classifier_j`` -> ``local_classifiers.(j-1)``; ``b1``, ``b2``, ``bottleneck``, ``classifier``
keep their names (the timm ``Block`` of :mod:`corelib.models.vit` names its tensors as the official
``Block``: ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``).
**Dropped**, as the official forward never uses them: ``base.fc`` (the 1000-way ImageNet head) and,
with JPM, ``base.blocks.<last>`` and ``base.norm`` (the JPM forward runs ``b1`` / ``b2`` instead).

**Inferred from the tensors:** the width (and so the registered backbone: 768 ``transreid_vit_base``,
384 ``transreid_vit_small``, 96 ``transreid_vit_tiny``; the head count, which no tensor holds, is the
variant's unless ``num_heads`` is given), the depth, the patch size, the MLP ratio, JPM (``b1`` /
``b2`` present), the class count K (the classifiers), the SIE table's rows, the patch grid
(``pos_embed``) and, with the image size, the stride.

**From the official YAML** (``--config``, e.g. ``configs/Market/vit_transreid_stride.yml``; a key
the YAML omits has its ``config/defaults.py`` value, as the official code reads it) **or the
options**: ``INPUT.SIZE_TEST`` (``img_size``), ``MODEL.SIE_CAMERA`` / ``MODEL.SIE_VIEW`` (``sie``:
how the rows split; with both, the camera count C is ``num_cameras`` or the dataset's known count),
``MODEL.SIE_COE``, ``MODEL.SHIFT_NUM``, ``MODEL.SHUFFLE_GROUP``, ``MODEL.DEVIDE_LENGTH``,
``MODEL.RE_ARRANGE``, ``TEST.NECK_FEAT``, ``INPUT.PIXEL_MEAN`` / ``PIXEL_STD`` (``input_norm``) and
``DATASETS.NAMES`` (``dataset``: the task of the published row; TransReID's results are supervised,
the task is the dataset). Without a YAML, a setting on which the released configs differ (the
image size; JPM's shift, 5 for persons and 8 for vehicles; the SIE split) must be given, or the
conversion is refused in one line naming ``--option NAME=...`` and ``--config``; one on which they
all agree takes that value (recorded as such). Refused, as ``transreid_net`` cannot compute them:
``TEST.NECK_FEAT: 'after'`` (the descriptor after the BN-necks), ``TEST.FEAT_NORM: 'no'``, a
``DEVIDE_LENGTH`` other than 4, the cosine ID heads (``MODEL.ID_LOSS_TYPE`` arcface, cosface,
amsoftmax, circle: no ``classifier_1..4``), TransReID's ``vit_small_patch16_224_TransReID`` (no qkv
bias, its own attention scale) and a ViT width none of the registered variants has.

**The network** gets ``test_flip=False``: the official inference (``processor.do_inference``)
computes one view, no flip, and the published numbers are on that protocol. **Views**: the
workbench's loaders feed camera ids, not view ids, yet; a camera × view table (VeRi) converts, and
evaluation looks up each camera's view-0 row; a view-only table is evaluated with its mean row (the
record's ``inferred`` says which).

**Published row.** The method is named as :mod:`corelib.published` spells Table 7 (``Baseline``:
no JPM, no SIE, stride = patch; ``TransReID (SIE camera)``; ``TransReID* (SIE camera+view)``: ``*``
for overlapping patches, stride < patch ...), None for a configuration the tables do not report
(JPM or SIE alone); the backbone as the table spells it (``ViT-B/16 (256×128)``; the vehicle rows,
all at 256 × 256, name no size). DeiT files cannot be told from ViT files by their tensors: a YAML
whose ``MODEL.PRETRAIN_PATH`` or ``MODEL.TRANSFORMER_TYPE`` names DeiT, or ``backbone_label``, says so.

Example::

    corelib convert transreid transformer_120.pth runs/transreid_market.pt \\
        --config configs/Market/vit_transreid_stride.yml
    corelib evaluate runs/transreid_market.pt --dataset market1501 --root ~/data
"""

from __future__ import annotations

import ast
import re
from typing import Any, Mapping, Optional

import torch

from ...data import load_manifest
from ...errors import CorelibError, InvalidInputError, UnknownNameError
from ...published import canonical_task
from ..vit import VARIANTS, patch_grid
from .core import Conversion, parse_pair, register_format, require

FORMAT = "transreid"

OPTIONS = {
    "img_size": "the test input size HxW (INPUT.SIZE_TEST: 256x128, 384x128; 256x256 for vehicles)",
    "sie": "how the SIE table's rows split: camera, view or camera+view (MODEL.SIE_CAMERA / MODEL.SIE_VIEW)",
    "num_cameras": "the camera count C of a camera x view table (default: the dataset's known count)",
    "sie_coe": "lambda, the weight of SIE (MODEL.SIE_COE; 3.0 in every released config)",
    "shift_num": "JPM's shift m (MODEL.SHIFT_NUM: 5 in the person configs, 8 in the vehicle ones)",
    "shuffle_group": "JPM's patch-shuffle groups (MODEL.SHUFFLE_GROUP; 2 in every released config)",
    "devide_length": "JPM's number of token groups (MODEL.DEVIDE_LENGTH; 4, the only value the network has)",
    "re_arrange": "JPM's shift and shuffle on or off (MODEL.RE_ARRANGE; true in every released config)",
    "neck_feat": "the test feature (TEST.NECK_FEAT; 'before' the BN-necks in every released config)",
    "input_norm": "half (INPUT.PIXEL_MEAN / STD 0.5, the released ViT configs) or imagenet",
    "dataset": "the dataset trained and tested on (DATASETS.NAMES: market1501, dukemtmc, msmt17, occ_duke, veri, "
               "VehicleID): the task of the published row",
    "stride": "the patch stride (MODEL.STRIDE_SIZE), needed only when pos_embed's length fits several",
    "num_heads": "attention heads (no tensor holds them: 12 at width 768, 6 at 384, 4 at 96 by default)",
    "backbone_label": "the backbone as the published tables spell it, e.g. 'DeiT-B/16 (256x128)' (a DeiT file)",
}

_DEFAULTS: dict[str, Any] = {
    "MODEL.NAME": "resnet50",
    "MODEL.TRANSFORMER_TYPE": "None",
    "MODEL.PRETRAIN_PATH": "",
    "MODEL.ID_LOSS_TYPE": "softmax",
    "MODEL.STRIDE_SIZE": [16, 16],
    "MODEL.JPM": False,
    "MODEL.SHIFT_NUM": 5,
    "MODEL.SHUFFLE_GROUP": 2,
    "MODEL.DEVIDE_LENGTH": 4,
    "MODEL.RE_ARRANGE": True,
    "MODEL.SIE_COE": 3.0,
    "MODEL.SIE_CAMERA": False,
    "MODEL.SIE_VIEW": False,
    "INPUT.SIZE_TEST": [384, 128],
    "INPUT.PIXEL_MEAN": [0.485, 0.456, 0.406],
    "INPUT.PIXEL_STD": [0.229, 0.224, 0.225],
    "DATASETS.NAMES": "market1501",
    "TEST.NECK_FEAT": "after",
    "TEST.FEAT_NORM": "yes",
}
"""What damo-cv/TransReID's ``config/defaults.py`` sets for the keys read here: a YAML that omits a key means this."""

_REQUIRED = object()
_OMITTED = object()
_NORMS = {"half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
          "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
_SIE_SPLITS = ("camera", "view", "camera+view")
_COSINE_HEADS = ("arcface", "cosface", "amsoftmax", "circle")
_VEHICLE_TASKS = ("veri776", "vehicleid")  # Table 7's vehicle rows, all at 256 x 256, name no input size
_WIDTH_NAMES = {768: "B", 384: "S"}
_LOCAL_GROUPS = 4  # build_transformer_local has four local branches, written out


class _Settings:
    """Each setting from ``--option``, else the YAML (its official default where it omits the key), else
    the value every released config agrees on; remembers where each came from."""

    def __init__(self, config: Optional[Mapping], options: Mapping[str, Any]) -> None:
        self.config, self.options = config, options

    def _lookup(self, key: str) -> Any:
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return _OMITTED
            node = node[part]
        return node

    def yaml(self, key: str) -> Any:
        """The YAML's value of ``SECTION.KEY`` (the official default when it omits it)."""
        value = self._lookup(key)
        return _DEFAULTS[key] if value is _OMITTED else _literal(value)

    def get(self, option: str, key: str, why: str, released: Any = _REQUIRED) -> tuple[Any, str]:
        """The value and where it came from; without the option, a YAML or a ``released`` value, the refusal
        ``why`` naming the option and ``key``."""
        if self.options.get(option) is not None:
            return self.options[option], f"--option {option}"
        if self.config is not None:
            omitted = self._lookup(key) is _OMITTED
            return self.yaml(key), f"{key}: the official default, the YAML omits it" if omitted else key
        if released is _REQUIRED:
            require(self.options, option, FORMAT, why, config_key=key)
        return released, "the value of every released config"


def _literal(value: Any) -> Any:
    """A YAML value as yacs reads it: a string that is a Python literal (``('market1501')``) is that literal."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # a plain word: the string
            return value
    return value


def _int(value: Any, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidInputError(f"{FORMAT}: {what} must be an integer, got {value!r}") from None


def _float(value: Any, what: str) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise InvalidInputError(f"{FORMAT}: {what} must be a number, got {value!r}") from None


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise InvalidInputError(f"{FORMAT}: {what} must be true or false, got {value!r}")


# ----------------------------------------------------------------------------- the converter


@register_format(FORMAT, options=OPTIONS, takes_config=True,
                 description="damo-cv/TransReID's transformer_<epoch>.pth (JPM, SIE; with its YAML config)")
def convert_transreid(contents: Any, *, config: Optional[Mapping], options: Mapping[str, Any]) -> Conversion:
    state, prefix = _state(contents)
    settings = _Settings(config, options)
    inferred: dict[str, str] = {}
    _check_config(settings)

    variant, d, depth, patch, heads, mlp_ratio = _vit(state, options, inferred)
    jpm = "b1.0.norm1.weight" in state
    if jpm and "classifier_1.weight" not in state:
        raise InvalidInputError(f"{FORMAT}: a JPM network without classifier_1..4: trained with a cosine ID head "
                                f"(MODEL.ID_LOSS_TYPE {'/'.join(_COSINE_HEADS)}), which transreid_net does not have")
    if config is not None and _bool(settings.yaml("MODEL.JPM"), "MODEL.JPM") != jpm:
        raise InvalidInputError(f"{FORMAT}: the config sets MODEL.JPM {not jpm} but the file has "
                                f"{'' if jpm else 'no '}b1 / b2: pass the config the file was trained with")
    num_classes = state["classifier.weight"].shape[0]
    inferred["jpm"] = f"{jpm} ({'b1 / b2 present' if jpm else 'no b1 / b2'}); {num_classes} classes (the classifiers)"

    # image size, grid and stride
    size, where = settings.get("img_size", "INPUT.SIZE_TEST", "the image size is not in the tensors")
    img_size = parse_pair(size, FORMAT, "img_size")
    stride = _stride(state["base.pos_embed"].shape[1] - 1, img_size, patch, settings)
    grid = patch_grid(*img_size, patch, stride)
    inferred["img_size"] = f"{img_size[0]}x{img_size[1]} ({where})"
    inferred["stride"] = f"{stride}: a {grid[0]} x {grid[1]} grid (pos_embed's {grid[0] * grid[1]} patch positions)"

    # SIE
    sie, num_cameras, num_views, coe = _sie(state, settings, inferred)

    # JPM's token order
    jpm_args: dict[str, Any] = {}
    if jpm:
        jpm_args = _jpm(settings, inferred)

    # test feature, input normalisation, task, published names
    neck, where = settings.get("neck_feat", "TEST.NECK_FEAT", "", released="before")
    if str(neck).lower() != "before":
        raise InvalidInputError(f"{FORMAT}: TEST.NECK_FEAT {neck!r} ({where}) tests the features after the BN-necks; "
                                f"transreid_net's descriptor is the one before them: use NECK_FEAT 'before'")
    input_norm = _input_norm(settings, inferred)
    task = _task(settings, inferred)
    overlap = stride < patch
    method = _method(jpm, sie, overlap, task)
    backbone_label = _backbone_label(settings, d, patch, img_size, task)
    also = _released_rows(jpm, sie, overlap, img_size, task, backbone_label.split(" (")[0], method)
    inferred["test_flip"] = "False (one view: the official inference, processor.do_inference, does not flip)"

    model_args = dict(backbone=variant, num_classes=num_classes, num_cameras=num_cameras, num_views=num_views,
                      sie=bool(sie), sie_camera=num_cameras > 1, sie_view=num_views > 1, sie_coe=coe, jpm=jpm, **jpm_args, img_size=img_size,
                      backbone_args=dict(patch_size=patch, stride=stride, depth=depth, num_heads=heads,
                                         mlp_ratio=mlp_ratio, input_norm=input_norm),
                      test_flip=False)
    mapping, dropped = _mapping(state, depth, jpm)
    return Conversion(
        stage="pretrain", model_name="transreid_net", model_args=model_args,
        mapping={ours: prefix + theirs for ours, theirs in mapping.items()},
        dropped={prefix + theirs: why for theirs, why in dropped.items()},
        input_size=img_size, inferred=inferred, method=method, task=task, published_backbone=backbone_label,
        published_also=also)


def _vit(state: Mapping[str, torch.Tensor], options: Mapping[str, Any], inferred: dict[str, str]
         ) -> tuple[str, int, int, int, int, float]:
    """The registered ViT variant of the file's width, and the width, depth, patch, heads and MLP ratio."""
    d = state["base.cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"base\.blocks\.(\d+)\.", k)))
    patch = state["base.patch_embed.proj.weight"].shape[-1]
    variant = next((name for name, v in VARIANTS.items() if v["embed_dim"] == d), None)
    if variant is None:
        widths = ", ".join(f"{v['embed_dim']} ({name})" for name, v in VARIANTS.items())
        raise InvalidInputError(f"{FORMAT}: a ViT of width {d} is none of the registered ones: {widths}")
    if "base.blocks.0.attn.qkv.bias" not in state:
        raise InvalidInputError(f"{FORMAT}: the blocks have no qkv bias: TransReID's vit_small_patch16_224_TransReID "
                                f"(attention scale 768^-0.5), which transreid_net does not build")
    given = options.get("num_heads")
    heads = _int(given if given is not None else VARIANTS[variant]["num_heads"], "num_heads")
    mlp_ratio = state["base.blocks.0.mlp.fc1.weight"].shape[0] / d
    inferred["backbone"] = (f"{variant}: width {d}, depth {depth}, patch {patch}, MLP ratio {mlp_ratio:g} (the "
                            f"tensors), {heads} heads ({'--option num_heads' if given is not None else 'the variant'})")
    return variant, d, depth, patch, heads, mlp_ratio


def _state(contents: Any) -> tuple[dict[str, torch.Tensor], str]:
    """The file's state dict without DistributedDataParallel's ``module.`` prefix, and that prefix."""
    if not isinstance(contents, dict) or not contents:
        raise InvalidInputError(f"{FORMAT}: the file holds a {type(contents).__name__}, not TransReID's state dict "
                                f"(transformer_<epoch>.pth)")
    prefix = "module." if all(str(k).startswith("module.") for k in contents) else ""
    state = {str(k)[len(prefix):]: v for k, v in contents.items()}
    needed = ("base.cls_token", "base.pos_embed", "base.patch_embed.proj.weight", "base.blocks.0.mlp.fc1.weight",
              "classifier.weight")
    missing = [k for k in needed if not torch.is_tensor(state.get(k))]
    if missing:
        raise InvalidInputError(f"{FORMAT}: the file has no {prefix}{missing[0]}: not a state dict of TransReID's "
                                f"transformer network (MODEL.NAME 'transformer')")
    return state, prefix


def _check_config(settings: _Settings) -> None:
    """Refuse a YAML of a network other than the transformer, or one whose test this network cannot compute."""
    if settings.config is None:
        return
    if not isinstance(settings.config, Mapping):
        raise InvalidInputError(f"{FORMAT}: the config is not a mapping of sections (MODEL, INPUT, ...): not an "
                                f"official TransReID YAML")
    name = settings.yaml("MODEL.NAME")
    if name != "transformer":
        raise InvalidInputError(f"{FORMAT}: the config builds MODEL.NAME {name!r}, not 'transformer': pass the YAML "
                                f"the file was trained with")
    loss = str(settings.yaml("MODEL.ID_LOSS_TYPE")).lower()
    if loss in _COSINE_HEADS:
        raise InvalidInputError(f"{FORMAT}: MODEL.ID_LOSS_TYPE {loss!r} is a cosine ID head, which transreid_net does "
                                f"not have (it has the softmax classifiers)")
    if str(settings.yaml("TEST.FEAT_NORM")).lower() != "yes":
        raise InvalidInputError(f"{FORMAT}: TEST.FEAT_NORM 'no' ranks unnormalised features; the workbench ranks "
                                f"L2-normalised descriptors (FEAT_NORM 'yes', every released config)")


def _stride(positions: int, img_size: tuple[int, int], patch: int, settings: _Settings) -> int:
    """The stride that lays ``positions`` patches over ``img_size``; a given one must agree."""
    h, w = img_size
    if h < patch or w < patch:
        raise InvalidInputError(f"{FORMAT}: an image of {h}x{w} is smaller than the file's {patch}-pixel patches: "
                                f"not the file's image size (--option img_size=HxW or --config)")
    fits = [s for s in range(1, patch + 1) if _positions(img_size, patch, s) == positions]
    given, where = None, ""
    if settings.options.get("stride") is not None or settings.config is not None:
        value, where = settings.get("stride", "MODEL.STRIDE_SIZE", "")
        sy, sx = parse_pair(value, FORMAT, "stride")
        if sy != sx:
            raise InvalidInputError(f"{FORMAT}: MODEL.STRIDE_SIZE {value} ({where}) strides the two axes differently; "
                                    f"transreid_net has one stride for both")
        given = sy
    if given is not None:
        if given not in fits:
            gives = _positions(img_size, patch, given) if 0 < given <= patch else 0
            raise InvalidInputError(f"{FORMAT}: pos_embed has {positions} patch positions but stride {given} ({where}) "
                                    f"at {h}x{w} gives {gives}: the config or img_size is not the file's")
        return given
    if not fits:
        raise InvalidInputError(f"{FORMAT}: no stride lays pos_embed's {positions} patch positions over {h}x{w} with "
                                f"{patch}-pixel patches: pass the file's --option img_size=HxW or --config")
    if len(fits) > 1:
        require(settings.options, "stride", FORMAT, f"strides {fits} all give {positions} patch positions at {h}x{w}",
                config_key="MODEL.STRIDE_SIZE")
    return fits[0]


def _positions(img_size: tuple[int, int], patch: int, stride: int) -> int:
    rows, cols = patch_grid(*img_size, patch, stride)
    return rows * cols


def _sie(state: Mapping[str, torch.Tensor], settings: _Settings, inferred: dict[str, str]
         ) -> tuple[str, int, int, float]:
    """The SIE split (``""``, camera, view, camera+view), the camera and view counts, and lambda."""
    table = state.get("base.sie_embed")
    rows = 0 if table is None else table.shape[0]
    if settings.options.get("sie") is not None:
        split, where = str(settings.options["sie"]).strip().lower(), "--option sie"
        if split not in _SIE_SPLITS:
            raise InvalidInputError(f"{FORMAT}: --option sie must be one of {', '.join(_SIE_SPLITS)}, got {split!r}")
    elif settings.config is not None:
        flags = [w for w, key in (("camera", "MODEL.SIE_CAMERA"), ("view", "MODEL.SIE_VIEW"))
                 if _bool(settings.yaml(key), key)]
        split, where = "+".join(flags), "MODEL.SIE_CAMERA / MODEL.SIE_VIEW"
    elif rows:
        split, where = require(settings.options, "sie", FORMAT, f"the SIE table's {rows} rows can be cameras, views "
                               f"or cameras x views", config_key="MODEL.SIE_CAMERA / SIE_VIEW"), ""
    else:
        split, where = "", ""
    if not rows:
        if split:
            raise InvalidInputError(f"{FORMAT}: {where} sets SIE {split} but the file has no sie_embed: pass the "
                                    f"config the file was trained with")
        inferred["sie"] = "none (no sie_embed in the file)"
        return "", 0, 0, 3.0
    if not split:
        raise InvalidInputError(f"{FORMAT}: the file has an SIE table of {rows} rows but {where} sets neither "
                                f"camera nor view: pass the config the file was trained with")
    coe = _float(settings.get("sie_coe", "MODEL.SIE_COE", "", released=3.0)[0], "sie_coe")
    if split == "camera":
        cameras, views = rows, 0
        note = "evaluation looks up each image's camera"
    elif split == "view":
        cameras, views = 0, rows
        note = "evaluation looks up each image's view (the table's mean for an image without one)"
    else:
        cameras = _cameras(settings, rows)
        views = rows // cameras if cameras > 0 else 0
        if cameras < 2 or views < 2 or cameras * views != rows:
            raise InvalidInputError(f"{FORMAT}: the SIE table's {rows} rows are not {cameras} cameras x views (both "
                                    f"> 1): pass the file's --option num_cameras=C")
        note = ("evaluation looks up each image's camera and view (row camera x views + view; an image without "
                "a view: the mean of its camera's rows)")
    inferred["sie"] = (f"{split} ({where}): {rows} rows = {cameras or 1} camera(s) x {views or 1} view(s), lambda "
                       f"{coe:g}; {note}")
    return split, cameras, views, coe


def _cameras(settings: _Settings, rows: int) -> int:
    """C of a camera x view table: ``num_cameras``, else the camera count of the dataset's manifest."""
    if settings.options.get("num_cameras") is not None:
        return _int(settings.options["num_cameras"], "num_cameras")
    task = _task(settings, {})
    known = None
    if task is not None:
        try:
            known = load_manifest(task.split("@")[0]).get("cameras")
        except CorelibError:  # a dataset without a committed manifest: its count must be given
            known = None
    if not known:
        require(settings.options, "num_cameras", FORMAT, f"the SIE table's {rows} rows are cameras x views and the "
                "camera count of the dataset is not known")
    return int(known)


def _jpm(settings: _Settings, inferred: dict[str, str]) -> dict[str, Any]:
    """transreid_net's JPM arguments from SHIFT_NUM, SHUFFLE_GROUP, DEVIDE_LENGTH and RE_ARRANGE."""
    groups, where = settings.get("devide_length", "MODEL.DEVIDE_LENGTH", "", released=_LOCAL_GROUPS)
    if _int(groups, "devide_length") != _LOCAL_GROUPS:
        raise InvalidInputError(f"{FORMAT}: MODEL.DEVIDE_LENGTH {groups} ({where}) cuts the tokens into groups of N // "
                                f"{groups} of which the official network uses four; transreid_net cuts N into four "
                                f"(DEVIDE_LENGTH 4)")
    rearrange, r_where = settings.get("re_arrange", "MODEL.RE_ARRANGE", "", released=True)
    if not _bool(rearrange, "re_arrange"):
        inferred["jpm_order"] = f"consecutive patches, no shift or shuffle (RE_ARRANGE false: {r_where})"
        return dict(shift=1, shuffle_groups=1, num_groups=_LOCAL_GROUPS, shift_reading="code")
    shift, s_where = settings.get("shift_num", "MODEL.SHIFT_NUM",
                                  "JPM's shift is not in the tensors (5 in the person configs, 8 in the vehicle ones)")
    shuffle, g_where = settings.get("shuffle_group", "MODEL.SHUFFLE_GROUP", "", released=2)
    shift, shuffle = _int(shift, "shift_num"), _int(shuffle, "shuffle_group")
    inferred["jpm_order"] = (f"shift {shift} ({s_where}; the code's reading: patches 1..{shift - 1} move to the end), "
                             f"shuffle groups {shuffle} ({g_where}), {_LOCAL_GROUPS} groups")
    return dict(shift=shift, shuffle_groups=shuffle, num_groups=_LOCAL_GROUPS, shift_reading="code")


def _input_norm(settings: _Settings, inferred: dict[str, str]) -> str:
    """``half`` (mean = std = 0.5) or ``imagenet``: the normalisation the network was trained on."""
    if settings.options.get("input_norm") is not None:
        norm, where = str(settings.options["input_norm"]).strip().lower(), "--option input_norm"
        if norm not in _NORMS:
            raise InvalidInputError(f"{FORMAT}: --option input_norm must be half or imagenet, got {norm!r}")
    elif settings.config is not None:
        given = (settings.yaml("INPUT.PIXEL_MEAN"), settings.yaml("INPUT.PIXEL_STD"))
        norm = next((n for n, stats in _NORMS.items()
                     if all(len(g) == 3 and all(abs(float(a) - b) < 1e-6 for a, b in zip(g, s))
                            for g, s in zip(given, stats))), None)
        if norm is None:
            raise InvalidInputError(f"{FORMAT}: INPUT.PIXEL_MEAN / PIXEL_STD {list(given[0])} / {list(given[1])} are "
                                    f"neither 0.5 nor ImageNet's, the two normalisations the ViT trunk takes")
        where = "INPUT.PIXEL_MEAN / PIXEL_STD"
    else:
        norm = "half"
        where = ("0.5, every released ViT config; the DeiT vehicle configs omit it and use ImageNet's: "
                 "--option input_norm=imagenet")
    inferred["input_norm"] = f"{norm} ({where})"
    return norm


def _task(settings: _Settings, inferred: dict[str, str]) -> Optional[str]:
    """The published task: the dataset (a loader name; VehicleID with its test size), None when not given."""
    if settings.options.get("dataset") is None and settings.config is None:
        inferred["task"] = "not given (--option dataset=NAME or --config: the task of the published row)"
        return None
    name, where = settings.get("dataset", "DATASETS.NAMES", "")
    try:
        task = canonical_task(str(name))
    except (InvalidInputError, UnknownNameError):
        inferred["task"] = f"none: {name!r} ({where}) has no published TransReID results"
        return None
    inferred["task"] = f"{task} ({where}; supervised: trained and tested on it)"
    return task


def _method(jpm: bool, sie: str, overlap: bool, task: Optional[str]) -> Optional[str]:
    """The configuration's name in :mod:`corelib.published`, None for one the tables do not report."""
    star = "*" if overlap else ""
    if not jpm:
        return "Baseline" if not sie and not overlap else None
    if sie:
        return f"TransReID{star} (SIE {sie})"
    # the released VehicleID configs (JPM, stride 12, no SIE) are the README's "TransReID*" rows
    return "TransReID*" if overlap and task is not None and task.startswith("vehicleid") else None


_RELEASED_SIE = {"veri776": "camera+view", "vehicleid": ""}
"""SIE of the released ``vit_transreid_stride.yml`` configs per dataset (persons: cameras)."""


def _released_rows(jpm: bool, sie: str, overlap: bool, img_size: tuple[int, int], task: Optional[str], family: str,
                   method: Optional[str]) -> list[tuple[str, str]]:
    """The README's rows of the released models ("reorganized code", size 256) when the file is one of the
    released configurations: ``vit_transreid_stride.yml`` ("TransReID*": JPM, stride 12, the dataset's SIE)
    or ``vit_base.yml`` ("Baseline": stride 16, neither JPM nor SIE)."""
    if task is None or img_size[0] != 256:
        return []
    dataset = task.split("@")[0]
    if jpm and overlap and sie == _RELEASED_SIE.get(dataset, "camera") and method != "TransReID*":
        return [("TransReID*", family)]
    if not jpm and not overlap and not sie:
        return [("Baseline", family)]
    return []


def _backbone_label(settings: _Settings, d: int, patch: int, img_size: tuple[int, int], task: Optional[str]) -> str:
    """The backbone as the published tables spell it: ``ViT-B/16 (256×128)``, ``DeiT-B/16``, ..."""
    given = settings.options.get("backbone_label")
    if given is not None:
        return re.sub(r"(\d)\s*x\s*(\d)", r"\1×\2", str(given).strip())
    hints = (str(settings.yaml("MODEL.PRETRAIN_PATH")), str(settings.yaml("MODEL.TRANSFORMER_TYPE"))) \
        if settings.config is not None else ()
    family = "DeiT" if any("deit" in h.lower() for h in hints) else "ViT"
    label = f"{family}-{_WIDTH_NAMES.get(d, f'{d}d')}/{patch}"
    if task is not None and task.split("@")[0] in _VEHICLE_TASKS and img_size == (256, 256):
        return label
    return f"{label} ({img_size[0]}×{img_size[1]})"


_BLOCK = r"(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
_LAYOUT = re.compile(
    r"base\.(cls_token|pos_embed|sie_embed|patch_embed\.proj\.(weight|bias)|blocks\.\d+\." + _BLOCK
    + r"|norm\.(weight|bias))"
    r"|b[12]\.(0\." + _BLOCK + r"|1\.(weight|bias))"
    r"|bottleneck(_[1-4])?\.(weight|bias|running_mean|running_var|num_batches_tracked)|classifier(_[1-4])?\.weight")
"""The keys of the official network's state dict that ``transreid_net`` has a place for."""


def _mapping(state: Mapping[str, torch.Tensor], depth: int, jpm: bool) -> tuple[dict[str, str], dict[str, str]]:
    """``{ours: theirs}`` and ``{theirs: why dropped}``, without the ``module.`` prefix; a key of no known
    place is in neither (the conversion then names it)."""
    mapping: dict[str, str] = {}
    dropped: dict[str, str] = {}
    last = f"base.blocks.{depth - 1}."
    for key in state:
        if key.startswith("base.fc."):
            dropped[key] = "the ViT's 1000-way ImageNet head: no TransReID forward uses it"
        elif jpm and key.startswith(last):
            dropped[key] = "the trunk's last block: the JPM forward runs its copies b1 and b2 instead"
        elif jpm and key.startswith("base.norm."):
            dropped[key] = "the trunk's final LayerNorm: the JPM forward runs its copies in b1 and b2 instead"
        elif not _LAYOUT.fullmatch(key):
            continue
        elif key.startswith("base."):
            mapping["trunk." + key[len("base."):]] = key
        elif (m := re.fullmatch(r"(bottleneck|classifier)_(\d)\.(.+)", key)) is not None:
            head = "local_bottlenecks" if m.group(1) == "bottleneck" else "local_classifiers"
            mapping[f"{head}.{int(m.group(2)) - 1}.{m.group(3)}"] = key
        else:  # b1, b2, bottleneck, classifier: the same names
            mapping[key] = key
    return mapping, dropped
