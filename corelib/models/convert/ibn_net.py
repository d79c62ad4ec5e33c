"""IBN-Net's ImageNet files as corelib source networks (format ``ibn_net``).

IBN-Net (github.com/XingangPan/IBN-Net) releases its ImageNet-trained ResNet-IBN trunks in two
layouts, both read here for every trunk :mod:`corelib.models.ibn` registers
(``resnet{18,34,50,101}_ibn_{a,b}``):

- the v1.0 release files (``resnet50_ibn_a-d9d0bb7b.pth`` ...): a plain ``state_dict`` with the
  1000-way ImageNet classifier ``fc.*``;
- its training script's checkpoints (``imagenet.py``, and the ``resnet50_ibn_a.pth.tar`` that MMT,
  SpCL and Cluster Contrast start from): ``{'state_dict': {'module.…'}, 'epoch', 'acc', 'best_acc',
  'optimizer', …}``, DataParallel's ``module.`` prefix on every key.

The trunk (depth, IBN-a or IBN-b) is inferred from the tensors
(:func:`corelib.models.ibn.guess_arch`). The file becomes a ``source_net`` (stage ``"pretrain"``)
around that trunk: the ImageNet head is dropped, the BN-neck and a one-row classifier keep their
built values. Evaluated, it is the ImageNet trunk as a re-ID network (GAP features through an
untrained BN-neck); ``finetune(source_checkpoint=…)`` adapts it directly, as it adapts a source
network of the workbench's own. The conversion records whether the file is one of IBN-Net's
release files (the SHA-256 prefix in the release name). The weights belong to no published re-ID
method: method and task are None.

Example::

    corelib convert ibn_net resnet50_ibn_a-d9d0bb7b.pth runs/r50_ibn_a_imagenet.pt
    corelib evaluate runs/r50_ibn_a_imagenet.pt --dataset market1501 --root ~/data
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import InvalidInputError
from ..ibn import RELEASE_FILES, RELEASES, VARIANTS, guess_arch
from ..registry import build_model
from .core import Conversion, parse_pair, register_format

INPUT_SIZE = (256, 128)
"""(height, width) of the converted network's checkpoint: the person re-ID input the source
networks are trained at (an ImageNet trunk is fully convolutional; any size runs)."""

DATA_PARALLEL = "module."

# The training script's entries besides the weights that may hold tensors (older PyTorch kept the
# accuracies as 0-d tensors), with why they have no place in the network
_RECORDS = {
    "acc": "the ImageNet validation accuracy the training script recorded for the epoch: not a weight",
    "best_acc": "the best ImageNet validation accuracy the training script recorded: not a weight",
    "best_prec1": "the best ImageNet top-1 precision the training script recorded: not a weight",
}
_OPTIMIZER = "the SGD optimizer's state (momentum buffers) the training script saved to resume: not a weight"
_FC = "the 1000-way ImageNet classifier: an ImageNet head, no re-ID classes (a re-ID network classifies identities)"
_FILLED = {
    "bnneck.": "the re-ID BN-neck: an ImageNet file has none; kept as built (scale 1, shift 0, running mean 0, "
               "variance 1: the evaluated descriptor is the normalised GAP feature)",
    "classifier.": "a 1-row re-ID classifier: an ImageNet file has no re-ID classes; fine-tuning builds its own",
}
_NO_COUNTER = ("the file was written before PyTorch 0.4.1, without BatchNorm batch counters; the counter changes "
               "nothing with a fixed momentum")


def _weights(contents: Any) -> tuple[str, dict]:
    """``(prefix, state_dict)``: the file's weights and the dotted path of their keys in the file
    (``""``, ``"module."``, ``"state_dict.module."``), wrapper dict and DataParallel prefix included."""
    if not isinstance(contents, dict):
        raise InvalidInputError(f"ibn_net: the file holds a {type(contents).__name__}, not a state dict; pass an "
                                f"IBN-Net release .pth or its training script's checkpoint")
    prefix, state = "", contents
    if isinstance(contents.get("state_dict"), dict):
        prefix, state = "state_dict.", contents["state_dict"]
    if state and all(isinstance(k, str) and k.startswith(DATA_PARALLEL) for k in state):
        prefix += DATA_PARALLEL
        state = {k[len(DATA_PARALLEL):]: v for k, v in state.items()}
    return prefix, state


def _dropped(contents: dict, prefix: str, state: dict) -> dict[str, str]:
    """``{file key: why}`` for the file's tensors that are not the trunk's: ``fc.*`` and the training records."""
    dropped = {prefix + k: _FC for k in state if k.startswith("fc.")}
    if prefix.startswith("state_dict."):
        for key, value in contents.items():
            if key in _RECORDS and torch.is_tensor(value):
                dropped[key] = _RECORDS[key]
            elif key == "optimizer" and isinstance(value, dict):
                dropped.update({k: _OPTIMIZER for k in _tensor_paths(value, "optimizer.")})
    return dropped


def _tensor_paths(value: Any, prefix: str) -> list[str]:
    """The dotted paths of the tensors in nested dicts (the framework's names for them)."""
    if torch.is_tensor(value):
        return [prefix[:-1]]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _tensor_paths(v, f"{prefix}{k}.")]
    return []


def _release(arch: str, sha256: str) -> str:
    """Which of IBN-Net's release files this is: torch.hub names each by the first hex digits of its SHA-256."""
    name = RELEASE_FILES[arch]
    expected = name.rsplit("-", 1)[1].split(".")[0]
    if sha256.startswith(expected):
        return f"release file {name}"
    return f"not a release file (SHA-256 {sha256[:8]}…; {name} of {RELEASES} begins {expected})"


@register_format(
    "ibn_net",
    description="IBN-Net's ImageNet ResNet-IBN-a/-b trunks: a v1.0 release .pth (resnet50_ibn_a-d9d0bb7b.pth ...) "
                "or its training script's {'state_dict': {'module.…'}} checkpoint; a source_net",
    takes_sha256=True,
    options={"img_size": "the re-ID input size HxW (default 256x128 for persons; 256x256 for vehicles)"},
)
def convert_ibn_net(contents: Any, *, config: Any, options: dict, sha256: str) -> Conversion:
    given = options.get("img_size")
    input_size = parse_pair(given, "ibn_net", "img_size") if given is not None else INPUT_SIZE
    prefix, state = _weights(contents)
    trunk = {k: v for k, v in state.items() if torch.is_tensor(v) and not k.startswith("fc.")}
    arch = guess_arch(trunk)
    if arch not in VARIANTS:
        found = f"a {arch} file" if arch else "no torchvision ResNet block layout"
        raise InvalidInputError(f"ibn_net: the tensors show {found}, not one of IBN-Net's trunks "
                                f"({', '.join(VARIANTS)}); pass an IBN-Net ResNet-IBN file")
    with torch.device("meta"):  # only the key names: nothing is allocated or initialised
        own = build_model("source_net", backbone=arch, num_classes=1, weights=None).state_dict()
    # a tensor the network has no place for stays unmapped: the framework then refuses the file naming it
    mapping = {f"trunk.{k}": prefix + k for k in trunk if f"trunk.{k}" in own}
    filled = {}
    for key in own:
        if key in mapping:
            continue
        why = next((why for head, why in _FILLED.items() if key.startswith(head)), None)
        if why is None and key.endswith(".num_batches_tracked") and key.replace(
                "num_batches_tracked", "running_mean") in mapping:
            why = _NO_COUNTER
        if why is not None:
            filled[key] = why
    depth, variant = VARIANTS[arch][0], arch[-1]
    wrapped = prefix.startswith("state_dict.")
    layout = ("the training script's checkpoint ({'state_dict': {'module.…'}})" if wrapped else
              f"a plain state dict{' with module. prefixes' if prefix else ''} (the release files)")
    norms = "IN halves in bn1" if variant == "a" else "an IN stem, IN after blocks"
    epoch = contents.get("epoch") if wrapped else None
    return Conversion(
        stage="pretrain",
        model_name="source_net",
        model_args={"backbone": arch, "num_classes": 1},
        mapping=mapping,
        dropped=_dropped(contents, prefix, state),
        filled=filled,
        input_size=input_size,
        inferred={
            "backbone": f"{arch} (ResNet-{depth} from the blocks of layer3, IBN-{variant} from the norms: {norms})",
            "layout": layout,
            "release": _release(arch, sha256),
            "input_size": f"{input_size[0]}x{input_size[1]} " + ("(option img_size)" if given is not None else
                                                                  "(the person re-ID default; the file is an ImageNet "
                                                                  "trunk: --option img_size=256x256 for vehicles)"),
            "last_stride": "the re-ID trunk's default (1 for ResNet-50/101, 2 for ResNet-18/34); ImageNet used 2: "
                           "the same weights",
        },
        epoch=int(epoch) if isinstance(epoch, int) else None,
    )
