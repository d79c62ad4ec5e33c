"""ResNet-18/34/50/101/152 backbones from torchvision, with the method's last-stride rule and weights.

Registered as the backbones ``resnet18`` ... ``resnet152`` (:func:`corelib.models.build_backbone`).

The trunk is torchvision's ResNet without ``avgpool`` and ``fc``: an image ``(B, 3, H, W)`` becomes a
feature map ``(B, C, H/16, W/16)`` for the Bottleneck trunks (ResNet-50/101/152, C = 2048, last
stride set to 1 as CORE-ReID does) and ``(B, C, H/32, W/32)`` for the BasicBlock trunks
(ResNet-18/34, C = 512, stride kept: their block puts the stride in ``conv1``, where the method
does not change it; docs/method.md §2.3).

Weights: ``weights="imagenet"`` reads torchvision's published file from torch's cache
(``$TORCH_HOME/hub/checkpoints``, downloaded there where there is internet), checks its SHA-256
against the prefix in its name and loads it with ``weights_only=True``; a path loads a local file
(a torchvision ``state_dict``, with or without ``fc.*``) as safely; ``None`` means random
initialisation.
When ImageNet weights cannot be had, the trunk is initialised at random and one warning says so.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from ..errors import CheckpointError, InvalidInputError, MissingFileError
from ..paths import OFFLINE_ENV
from ..runtime.checkpoint import load_checkpoint
from .registry import Backbone, register_backbone

DEPTHS = (18, 34, 50, 101, 152)
# feature channels of the last stage: BasicBlock trunks end at 512, Bottleneck trunks at 2048
CHANNELS = {18: 512, 34: 512, 50: 2048, 101: 2048, 152: 2048}

_WARNED: set[int] = set()


def feature_channels(depth: int) -> int:
    """C of the trunk's output map (512 for ResNet-18/34, 2048 for ResNet-50/101/152)."""
    _check_depth(depth)
    return CHANNELS[depth]


def _check_depth(depth: int) -> None:
    if depth not in DEPTHS:
        raise InvalidInputError(f"ResNet depth {depth} is not supported; choose one of {', '.join(map(str, DEPTHS))}")


class ResNetTrunk(Backbone):
    """torchvision ResNet up to ``layer4``: ``(B, 3, H, W) -> (B, C, h, w)`` (camera ids are not used)."""

    def __init__(self, depth: int, last_stride: Optional[int] = None) -> None:
        super().__init__()
        _check_depth(depth)
        net = get_model(f"resnet{depth}", weights=None)
        self.depth = depth
        self.out_channels = CHANNELS[depth]
        # last stride 1 only for Bottleneck trunks by default (the authors' rule)
        self.last_stride = last_stride if last_stride is not None else (1 if depth >= 50 else 2)
        if self.last_stride == 1:
            block = net.layer4[0]
            # Bottleneck carries the stride in conv2, BasicBlock in conv1; both in the shortcut
            conv = block.conv2 if depth >= 50 else block.conv1
            conv.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> torch.Tensor:
        # no side information: the camera and view ids are accepted and ignored
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def cam_layers(self) -> dict[str, nn.Module]:
        """The last block of each stage (strides 4, 8, 16 and 32 or 16; ``layer4`` is the paper's)."""
        return {name: getattr(self, name)[-1] for name in ("layer1", "layer2", "layer3", "layer4")}


def build_trunk(depth: int, weights: Union[str, Path, None] = "imagenet", last_stride: Optional[int] = None) -> ResNetTrunk:
    """A ResNet trunk with weights loaded.

    Args:
        depth: 18, 34, 50, 101 or 152.
        weights: ``"imagenet"`` (torchvision weights API; random init and one warning when they
            cannot be downloaded or found in the cache), a path to a local ``state_dict`` file, or
            None (or ``"none"``, as configs spell it) for random initialisation.
        last_stride: stride of ``layer4``; default 1 for ResNet-50/101/152 and 2 for ResNet-18/34.
    """
    trunk = ResNetTrunk(depth, last_stride)
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
        return trunk
    if isinstance(weights, str) and weights.lower() == "imagenet":
        state = _imagenet_state_dict(depth)
        if state is None:
            return trunk
        load_trunk_state(trunk, state, source=f"torchvision ImageNet weights of resnet{depth}")
        return trunk

    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingFileError(f"weights file {path} does not exist; pass weights='imagenet', None or an existing file")
    state = load_checkpoint(path)  # weights_only=True: never unpickle code
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    load_trunk_state(trunk, state, source=str(path))
    return trunk


def _imagenet_state_dict(depth: int) -> Optional[dict]:
    """torchvision's ImageNet weights of ``resnet<depth>``, read safely, or None (one warning) when
    they can be neither found in torch's hub cache nor downloaded.

    The file is read with ``weights_only=True`` (torchvision's own loader would unpickle it) after
    its SHA-256 is checked against the prefix torchvision puts in the file name, so a file planted
    in the cache can neither run code nor pass as ImageNet weights.

    Raises:
        CheckpointError: the cached file is not the published one (hash), or cannot be read.
    """
    weights = get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    name = Path(weights.url).name
    cache = Path(torch.hub.get_dir()) / "checkpoints" / name
    expected = _hash_prefix(name)
    if not cache.is_file() and os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        # a cluster job (corelib.launch sets it): no download is tried, and a paper recipe never trains
        # from a random trunk by accident
        raise MissingFileError(f"ImageNet weights for resnet{depth} are not in {cache}, and {OFFLINE_ENV} is set (a "
                               f"compute node without network): copy {name} there before submitting (TORCH_HOME "
                               f"sets the folder above hub/), or pass weights=PATH or weights=none")
    if not cache.is_file():
        try:  # no network here in CI: the failure is the usual path
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(cache), hash_prefix=expected, progress=False)
        except Exception as e:  # noqa: BLE001 - no network, proxy errors, a refused hash ...
            if depth not in _WARNED:
                _WARNED.add(depth)
                warnings.warn(
                    f"ImageNet weights for resnet{depth} are not available ({type(e).__name__}: {e}); the trunk "
                    f"is initialised at random. To use them offline, copy {name} to {cache} or pass weights=PATH.",
                    stacklevel=3,
                )
            return None
    if expected and not _sha256(cache).startswith(expected):
        raise CheckpointError(f"{cache} is not torchvision's {name}: its SHA-256 does not start with {expected}, as "
                              f"the published file's does. Remove it (it is downloaded again where there is "
                              f"internet), copy the genuine file there, or pass weights=PATH")
    return load_checkpoint(cache)


def _hash_prefix(filename: str) -> str:
    """The hex digits torchvision writes into its weight file names (``resnet50-0676ba61.pth``)."""
    found = re.search(r"-([a-f0-9]{6,})\.", filename)
    return found.group(1) if found else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_mismatches(own: dict, cleaned: dict) -> list[str]:
    """What keeps the state dict ``cleaned`` from loading into a module whose own is ``own``: shape
    mismatches, missing and unexpected keys (up to five of each named); empty when it fits."""
    missing = sorted(set(own) - set(cleaned))
    unexpected = sorted(set(cleaned) - set(own))
    mismatched = sorted(k for k in set(own) & set(cleaned) if own[k].shape != cleaned[k].shape)
    parts = []
    if mismatched:
        k = mismatched[0]
        parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {k}: file {tuple(cleaned[k].shape)} vs "
                     f"model {tuple(own[k].shape)}; first: {', '.join(mismatched[:5])}")
    if missing:
        parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:5])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:5])}")
    return parts


def load_trunk_state(trunk: ResNetTrunk, state: dict, *, source: str = "state_dict") -> None:
    """Load a torchvision-style ResNet ``state_dict`` into a trunk, checking names and shapes.

    ``fc.*`` and a leading ``module.`` / ``backbone.`` / ``base.`` prefix are ignored. Any missing
    key, unexpected key or shape mismatch raises an error that names the keys (a ResNet-50 file
    given to a ResNet-18 trunk says so instead of failing deep inside ``load_state_dict``).
    """
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone.", "base.", "trunk."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("fc.") or not torch.is_tensor(value):
            continue
        cleaned[key] = value
    own = trunk.state_dict()
    parts = key_mismatches(own, cleaned)
    if parts:
        guess = _guess_depth(cleaned)
        hint = (f" The file looks like a resnet{guess}; build the model with backbone='resnet{guess}'."
                if guess and guess != trunk.depth else "")
        raise InvalidInputError(f"{source} does not fit a resnet{trunk.depth} trunk: {'; '.join(parts)}.{hint}")
    trunk.load_state_dict(cleaned, strict=True)


def _guess_depth(state: dict) -> Optional[int]:
    """Which ResNet a state_dict belongs to, from its block counts (None when unsure)."""
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
    bottleneck = any(k.startswith("layer1.0.conv3") for k in state)
    n3 = len(blocks)
    table = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}
    return table.get((bottleneck, n3))


PAPER_TABLE = {
    18: {"params_m": 12.97, "gflops": 1.18, "params": 12_970_756},
    34: {"params_m": 23.08, "gflops": 2.35, "params": 23_078_916},
    50: {"params_m": 46.62, "gflops": 5.10, "params": 46_621_956},
    101: {"params_m": 65.61, "gflops": 7.58, "params": 65_614_084},
    152: {"params_m": 81.26, "gflops": 10.61, "params": 81_257_732},
}
"""CORE-ReID V2's complexity table per ResNet depth: params (millions and exact) and GFLOPs at 256x128
(docs/method.md §6); each ResNet declares its row."""


def _register(depth: int) -> None:
    @register_backbone(f"resnet{depth}", complexity="corereid_net", paper=PAPER_TABLE[depth])
    def build(weights: Union[str, Path, None] = "imagenet", last_stride: Optional[int] = None) -> ResNetTrunk:
        return build_trunk(depth, weights, last_stride)

    build.__doc__ = f"ResNet-{depth} trunk ({CHANNELS[depth]} channels); see :func:`build_trunk`."


for _depth in DEPTHS:
    _register(_depth)
