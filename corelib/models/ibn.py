"""IBN-Net trunks (ResNet-IBN-a, ResNet-IBN-b) as registered backbones, for the re-ID baselines.

IBN-Net (Pan, Luo, Shi and Tang, "Two at Once: Enhancing Learning and Generalization Capacities via
IBN-Net", ECCV 2018) mixes Instance Normalization into a ResNet's shallow stages: IN removes the
per-image appearance (colour, contrast, style) that differs between domains, BN keeps the content.
Many UDA re-ID baselines use ResNet-50-IBN-a as their trunk, so the comparisons need it.

Registered as the backbones ``resnet{18,34,50,101}_ibn_a`` and ``resnet{18,34,50,101}_ibn_b``, the
eight trunks IBN-Net publishes ImageNet weights for (:func:`corelib.models.build_backbone`), with the
contract of the ResNet trunks (:class:`~corelib.models.resnet.ResNetTrunk`): ``(B, 3, H, W) ->
(B, 2048, H/16, W/16)`` for the Bottleneck trunks (last stride 1), ``(B, 512, H/32, W/32)`` for
ResNet-18/34, ``last_stride`` overridable, ``cam_layers()`` = the last block of each stage.

- **IBN-a** (``ibn_cfg=('a', 'a', 'a', None)``): in every block of ``layer1``-``layer3`` the norm after
  the block's first conv (``bn1``) becomes :class:`IBN`: IN on the first half of the channels, BN on
  the rest. ResNet-50: IN 32 / BN 32 in ``layer1``, 64/64 in ``layer2``, 128/128 in ``layer3``.
- **IBN-b** (``ibn_cfg=('b', 'b', None, None)``): the stem's ``bn1`` becomes ``InstanceNorm2d(64)``,
  and the last block of ``layer1`` and ``layer2`` (only that block: IBN-Net's ``_make_layer`` gives the
  others none) passes its output through ``InstanceNorm2d`` after the residual addition, before the
  final ReLU: IN(256), IN(512) for ResNet-50/101, IN(64), IN(128) for the BasicBlock ResNet-18/34.

The trunk is torchvision's ResNet with those norms swapped, so every module keeps torchvision's name
and the new ones take IBN-Net's (``layer1.0.bn1.IN``, ``layer1.0.bn1.BN``, ``layer1.2.IN``): the
checkpoints IBN-Net publishes load key for key.

Weights: None (or ``"none"``) is random initialisation; a path loads a local file, either a plain
``state_dict`` or ``{'state_dict': ...}`` with ``module.`` prefixes (``fc.*`` ignored), read with
``weights_only=True`` and checked key by key. ``"imagenet"``: torchvision publishes no IBN weights,
so the trunk is random and one warning (per backbone, per process) says which file of IBN-Net's
releases to pass as ``weights=PATH``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..errors import InvalidInputError, MissingFileError
from ..runtime.checkpoint import load_checkpoint
from .registry import BACKBONES, register_backbone
from .resnet import ResNetTrunk, key_mismatches

IBN_A = ("a", "a", "a", None)
IBN_B = ("b", "b", None, None)

# name -> (depth, ibn_cfg): the variants IBN-Net publishes ImageNet weights for
VARIANTS: dict[str, tuple[int, tuple]] = {
    "resnet18_ibn_a": (18, IBN_A),
    "resnet34_ibn_a": (34, IBN_A),
    "resnet50_ibn_a": (50, IBN_A),
    "resnet101_ibn_a": (101, IBN_A),
    "resnet18_ibn_b": (18, IBN_B),
    "resnet34_ibn_b": (34, IBN_B),
    "resnet50_ibn_b": (50, IBN_B),
    "resnet101_ibn_b": (101, IBN_B),
}

RELEASES = "https://github.com/XingangPan/IBN-Net/releases"
# the file names of IBN-Net's v1.0 release (what the warning tells a user to download)
RELEASE_FILES = {
    "resnet18_ibn_a": "resnet18_ibn_a-2f571257.pth",
    "resnet34_ibn_a": "resnet34_ibn_a-94bc1577.pth",
    "resnet50_ibn_a": "resnet50_ibn_a-d9d0bb7b.pth",
    "resnet101_ibn_a": "resnet101_ibn_a-59ea0ac6.pth",
    "resnet18_ibn_b": "resnet18_ibn_b-bc2f3c11.pth",
    "resnet34_ibn_b": "resnet34_ibn_b-04134c37.pth",
    "resnet50_ibn_b": "resnet50_ibn_b-9ca61e85.pth",
    "resnet101_ibn_b": "resnet101_ibn_b-c55f6dba.pth",
}

_WARNED: set[str] = set()


class IBN(nn.Module):
    """Instance-Batch Normalization: IN on the first ``int(planes * ratio)`` channels, BN on the rest.

    The attribute names ``IN`` and ``BN`` are IBN-Net's, so its checkpoints' keys (``...bn1.IN.weight``,
    ``...bn1.BN.running_mean``) fit. IN (affine, no running statistics) normalises each image on its
    own, in training and in eval mode alike; BN uses the batch in training and running statistics in eval.
    """

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        if not 0 < self.half < planes:
            raise InvalidInputError(f"IBN({planes}, ratio={ratio}) leaves one part empty (IN gets {self.half} of "
                                    f"{planes} channels); choose a ratio strictly between 0 and 1")
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, planes, h, w) -> the same shape. The slices are copied to contiguous tensors as IBN-Net does:
        # BatchNorm on a strided view takes another kernel whose results differ in the last bits. (InstanceNorm
        # returns NCHW whatever its input; in a channels_last network the next conv restores that layout.)
        return torch.cat((self.IN(x[:, :self.half].contiguous()), self.BN(x[:, self.half:].contiguous())), dim=1)

    def extra_repr(self) -> str:
        return f"half={self.half}"


class INAfterResidual(nn.Module):
    """A torchvision ``BasicBlock`` / ``Bottleneck`` whose output goes through IN after the residual
    addition and before the final ReLU (IBN-Net's ``ibn='b'`` block).

    It takes over the block's own submodules under their names (``conv1``, ``bn1``, ..., ``downsample``)
    and adds ``IN``, so the keys are IBN-Net's (``layer1.2.IN.weight``). The forward is torchvision's
    block forward with the IN inserted: torchvision reuses one ReLU module three times, so the IN
    cannot be slotted in by replacing a submodule.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        for name, module in block.named_children():
            self.add_module(name, module)
        self.downsample = block.downsample  # None (not a child) in the blocks that keep their shape
        self.stride = block.stride
        self.bottleneck = hasattr(block, "conv3")
        # the block's last norm gives its output channels: planes for BasicBlock, 4 * planes for Bottleneck
        out_channels = (block.bn3 if self.bottleneck else block.bn2).num_features
        self.IN = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        else:
            out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.IN(out + identity))


def _check_cfg(ibn_cfg: Sequence) -> tuple:
    cfg = tuple(ibn_cfg)
    if len(cfg) != 4 or any(c not in ("a", "b", None) for c in cfg):
        raise InvalidInputError(f"ibn_cfg must give 'a', 'b' or None for each of the 4 stages, got {ibn_cfg!r}; "
                                f"IBN-a is {IBN_A}, IBN-b is {IBN_B}")
    return cfg


def arch_name(depth: int, ibn_cfg: Sequence) -> str:
    """``resnet50_ibn_a`` for the published configurations, ``resnet50_ibn('a', 'b', None, None)`` otherwise."""
    cfg = tuple(ibn_cfg)
    suffix = {IBN_A: "_ibn_a", IBN_B: "_ibn_b"}.get(cfg, f"_ibn{cfg}")
    return f"resnet{depth}{suffix}"


class IBNResNetTrunk(ResNetTrunk):
    """A :class:`ResNetTrunk` with IBN-Net's norms: ``(B, 3, H, W) -> (B, C, h, w)``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        ibn_cfg: per stage ``layer1``-``layer4``: ``'a'`` (IBN in every block's ``bn1``), ``'b'`` (IN
            after the stage's last block; ``'b'`` in the first stage also turns the stem's BN into IN,
            as in IBN-Net) or None (unchanged).
        last_stride: stride of ``layer4``; default 1 for ResNet-50/101/152 and 2 for ResNet-18/34.
    """

    def __init__(self, depth: int, ibn_cfg: Sequence = IBN_A, last_stride: Optional[int] = None) -> None:
        cfg = _check_cfg(ibn_cfg)
        super().__init__(depth, last_stride)  # torchvision's ResNet, last stride set, avgpool/fc dropped
        self.ibn_cfg = cfg
        self.arch = arch_name(depth, cfg)
        if cfg[0] == "b":  # IBN-Net ties the IN stem to IBN-b in the first stage
            self.bn1 = nn.InstanceNorm2d(self.bn1.num_features, affine=True)
        for stage, kind in zip((self.layer1, self.layer2, self.layer3, self.layer4), cfg):
            if kind == "a":
                for block in stage:  # every block, the first (with the downsample) included
                    block.bn1 = IBN(block.bn1.num_features)
            elif kind == "b":  # only the stage's last block, never inside it
                stage[-1] = INAfterResidual(stage[-1])


def build_ibn_trunk(name: str, weights: Union[str, Path, None] = "imagenet",
                    last_stride: Optional[int] = None) -> IBNResNetTrunk:
    """A registered IBN-Net trunk (``resnet50_ibn_a`` ...) with weights loaded.

    Args:
        name: one of :data:`VARIANTS`.
        weights: None or ``"none"`` (random), a path to a local file (a plain ``state_dict`` or
            ``{'state_dict': ...}``, ``module.`` prefixes and ``fc.*`` ignored), or ``"imagenet"``
            (random with one warning: torchvision has no IBN weights; pass IBN-Net's file as a path).
        last_stride: stride of ``layer4``; default 1 for ResNet-50/101 and 2 for ResNet-18/34.

    Raises:
        MissingFileError: ``weights`` names a file that does not exist.
        CheckpointError: the file cannot be read safely (see :func:`corelib.runtime.checkpoint.load_checkpoint`).
        InvalidInputError: the file's keys or shapes do not fit the trunk (the message names them).
    """
    if name not in VARIANTS:
        raise InvalidInputError(f"unknown IBN-Net trunk {name!r}; choose one of {', '.join(VARIANTS)}")
    depth, cfg = VARIANTS[name]
    trunk = IBNResNetTrunk(depth, cfg, last_stride)
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
        return trunk
    if isinstance(weights, str) and weights.lower() == "imagenet":
        if name not in _WARNED:
            _WARNED.add(name)
            warnings.warn(
                f"torchvision has no ImageNet weights for {name}; the trunk is initialised at random. To use "
                f"IBN-Net's, download {RELEASE_FILES[name]} from {RELEASES} and pass weights=PATH "
                f"(e.g. weights='~/weights/{RELEASE_FILES[name]}').",
                stacklevel=3,
            )
        return trunk

    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingFileError(f"weights file {path} does not exist; pass weights=None, 'imagenet' or an existing "
                               f"file (e.g. {RELEASE_FILES[name]} from {RELEASES})")
    state = load_checkpoint(path)  # weights_only=True: never unpickle code
    # IBN-Net's training script saves {'state_dict': ..., 'epoch': ...} with DataParallel's 'module.' prefix
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    load_ibn_state(trunk, state, source=str(path))
    return trunk


def _clean(state: dict) -> dict:
    """The trunk's tensors of a ``state_dict``: wrapper prefixes stripped, ``fc.*`` and non-tensors dropped."""
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone.", "base.", "trunk."):  # the wrappers resnet.load_trunk_state strips
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("fc.") or not torch.is_tensor(value):
            continue
        cleaned[key] = value
    return cleaned


# (Bottleneck?, blocks in layer3) -> depth, as torchvision builds the ResNets
_DEPTH_BY_LAYOUT = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}


def guess_arch(state: dict) -> Optional[str]:
    """The backbone a (cleaned) ResNet-family ``state_dict`` belongs to: ``resnet50``, ``resnet50_ibn_a``,
    ``resnet50_ibn_b`` ..., or None when its block layout is not a torchvision ResNet's."""
    blocks = {k.split(".")[1] for k in state if k.startswith("layer3.")}
    depth = _DEPTH_BY_LAYOUT.get((any(k.startswith("layer1.0.conv3.") for k in state), len(blocks)))
    if depth is None:
        return None
    if any(".bn1.IN." in k for k in state):
        return f"resnet{depth}_ibn_a"
    # IBN-b: an IN stem (affine only, no running statistics) and IN modules after blocks
    if ("bn1.weight" in state and "bn1.running_mean" not in state) or any(k.endswith(".IN.weight") for k in state):
        return f"resnet{depth}_ibn_b"
    return f"resnet{depth}"


def load_ibn_state(trunk: IBNResNetTrunk, state: dict, *, source: str = "state_dict") -> None:
    """Load an IBN-Net ``state_dict`` into a trunk, checking every key and shape.

    Any missing key, unexpected key or shape mismatch raises an error that names the keys and, when
    the file is another member of the ResNet family, the backbone it fits (a plain ResNet-50 file given
    to ``resnet50_ibn_a`` says ``backbone='resnet50'``).
    """
    cleaned = _clean(state)
    own = trunk.state_dict()
    # files written before PyTorch 0.4.1 have no BatchNorm batch counters; they change nothing with a fixed momentum
    for key in own:
        if key.endswith(".num_batches_tracked") and key not in cleaned and key.rsplit(".", 1)[0] + ".weight" in cleaned:
            cleaned[key] = own[key]
    parts = key_mismatches(own, cleaned)
    if parts:
        guess, release = guess_arch(cleaned), RELEASE_FILES.get(trunk.arch)
        if guess == trunk.arch:  # the right family and depth, yet incomplete or resized: no other backbone fits
            hint = ""
        elif guess in BACKBONES:
            hint = f" The file looks like a {guess}; build the model with backbone='{guess}'."
        elif guess:
            hint = f" The file looks like a {guess}, which is not a registered backbone."
        else:
            hint = f" Pass a {trunk.arch} file" + (f" ({release} from {RELEASES})." if release else ".")
        raise InvalidInputError(f"{source} does not fit a {trunk.arch} trunk: {'; '.join(parts)}.{hint}")
    trunk.load_state_dict(cleaned, strict=True)


def _register(name: str) -> None:
    @register_backbone(name)
    def build(weights: Union[str, Path, None] = "imagenet", last_stride: Optional[int] = None) -> IBNResNetTrunk:
        return build_ibn_trunk(name, weights, last_stride)

    depth, cfg = VARIANTS[name]
    build.__doc__ = f"ResNet-{depth}-IBN-{'a' if cfg == IBN_A else 'b'} trunk; see :func:`build_ibn_trunk`."


for _name in VARIANTS:
    _register(_name)
