"""CORE-ReID V1's released checkpoints (the authors' code, github.com/TrinhQuocNguyen/CORE-ReID) in.

Format ``corereid_v1``. The two files its training scripts write, ``{'state_dict': ..., 'epoch': e + 1,
'best_mAP': mAP}`` (``best_mAP`` a ``numpy.float64``), are told apart by their keys:

- ``source_pretrain.py``'s source network (``reid/models/resnet_source.py``, in ``nn.DataParallel``:
  ``module.base.0`` ... ``module.base.7``, ``module.feat_bn``, ``module.classifier``) becomes a
  ``source_net`` (stage ``pretrain``): evaluated on its own (direct transfer), or adapted by any
  recipe with ``finetune(source_checkpoint=...)``. A ResNet-IBN-a source network (V1's
  ``resnet_ibn50a``) keeps its IBN trunk.
- ``target_train.py``'s fine-tuning network (``reid/models/resnet.py``'s ``Encoder``: the student
  ``model.module.*``, the EMA teacher ``model_ema.module.*``, the fusion block ``fuse_net.bn_1..3``)
  becomes a ``mean_teacher`` with Ensemble Fusion V1 (stage ``finetune``), GAP + GMP pooling, ECAB,
  and V1's split of odd map heights (``odd_height="drop"``); evaluating it evaluates the teacher, as
  V1's ``Encoder`` does in eval mode.

Files without the ``{'state_dict': ...}`` wrapper or without DataParallel's ``module.`` are read too.
Inferred from the tensors: the trunk (depth from the block layout, IBN from its norms) and the class
count (the classifier's rows). Not in the file: the input size (option ``img_size``, V1's default
256x128) and the UDA task (option ``task``, only for the published row ``corelib evaluate`` prints).

Dropped, as V1's forward never uses them: the fine-tuning networks' ``feat_bn`` (a BN-neck on the
global average, left from the source network's head) and ``sa_upper`` / ``sa_low`` (CBAM spatial
attention, called only in commented-out lines). The test protocol is V1's: both networks average
each descriptor with the flipped image's (BMFN, the networks' default ``test_flip=True``).
"""

from __future__ import annotations

from typing import Any, Optional

from ...errors import InvalidInputError, UnknownNameError
from ...published import canonical_task
from ..ibn import guess_arch
from .core import Conversion, parse_pair, register_format

FORMAT = "corereid_v1"
METHOD = "CORE-ReID V1"
"""The method's name in corelib/published.csv."""
DEFAULT_SIZE = (256, 128)
"""V1's ``--height 256 --width 128`` (source_pretrain.py, target_train.py)."""

# V1's base = Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4): indices 2 and 3 hold nothing
TRUNK = {"base.0.": "trunk.conv1.", "base.1.": "trunk.bn1.", "base.4.": "trunk.layer1.", "base.5.": "trunk.layer2.",
         "base.6.": "trunk.layer3.", "base.7.": "trunk.layer4."}
SOURCE_HEAD = {"feat_bn.": "bnneck.", "classifier.": "classifier."}
FINETUNE_HEAD = {"BN_g.": "bn_global.", "BN_u.": "bn_top.", "BN_l.": "bn_bottom.", "adativeFC_upper.": "fc_top.",
                 "adativeFC_low.": "fc_bottom.", "ca_upper.se.": "ecab_top.mlp.", "ca_low.se.": "ecab_bottom.mlp.",
                 "classifier.": "classifier."}
FUSE = {"bn_1.": "fusion.bn_global.", "bn_2.": "fusion.bn_top.", "bn_3.": "fusion.bn_bottom."}
UNUSED = {
    "feat_bn.": "V1's fine-tuning forward never uses feat_bn (a BN-neck on the global average left from the source "
                "network's head): its descriptor is [BN_g; BN_u; BN_l]",
    "sa_upper.": "V1 registers CBAM spatial attention (sa_upper) but calls it only in commented-out lines",
    "sa_low.": "V1 registers CBAM spatial attention (sa_low) but calls it only in commented-out lines",
}
"""Modules of V1's fine-tuning ResNet that its forward never uses, with why."""

ARCHS = {"pretrain": ("resnet50", "resnet101", "resnet152", "resnet50_ibn_a", "resnet101_ibn_a"),
         "finetune": ("resnet50", "resnet101", "resnet152")}
"""The trunks V1's scripts build: its source network on torchvision's ResNets or its own IBN-a ones
(``resnet_ibn50a`` / ``resnet_ibn101a``); its fine-tuning network on torchvision's only (its
``Fuse`` and ``ECAB`` are 2048 channels wide)."""


def _rename(key: str, table: dict[str, str]) -> Optional[str]:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _img_size(value: Any) -> tuple[tuple[int, int], str]:
    """``(height, width)`` and where it came from, from the option (``"256x128"`` or a pair) or V1's default."""
    if value is None:
        return DEFAULT_SIZE, f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} (V1's default --height 256 --width 128)"
    h, w = parse_pair(value, FORMAT, "img_size")
    if h < 32 or w < 16:
        raise InvalidInputError(f"{FORMAT}: img_size {h}x{w} is too small for a ResNet trunk; pass at least 32x16")
    return (h, w), f"{h}x{w} (option img_size)"


def _task(value: Any) -> Optional[str]:
    """The task's canonical name; one the published tables do not hold is kept as given (no row to print)."""
    if value is None:
        return None
    try:
        return canonical_task(str(value))
    except UnknownNameError:
        return str(value)


def _prefix(keys: list[str], root: str) -> str:
    """``root`` followed by DataParallel's ``module.`` when the file has it (``model.module.base.0.weight``)."""
    wrapped = root + "module."
    return wrapped if any(k.startswith(wrapped) for k in keys) else root


def _place(keys: list[str], prefix: str, head: dict[str, str], unused: dict[str, str]
           ) -> tuple[dict[str, str], dict[str, str]]:
    """One V1 ResNet's tensors (its keys under ``prefix``): ``({our name: file key}, {unused file key: why})``."""
    placed: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        target = _rename(name, TRUNK) or _rename(name, head)
        why = next((why for old, why in unused.items() if name.startswith(old)), None)
        if target is not None:
            placed[target] = key
        elif why is not None:
            dropped[key] = why
    return placed, dropped


def _trunk_arch(trunk: dict[str, Any], stage: str, where: str) -> str:
    """The registered backbone the trunk's tensors (torchvision names) belong to, checked against what V1 builds."""
    arch = guess_arch(trunk)
    if arch is None:
        raise InvalidInputError(f"{FORMAT}: the {where} has no torchvision ResNet trunk under base.0 ... base.7; "
                                f"not a file of CORE-ReID V1's scripts")
    if "layer1.0.conv3.weight" not in trunk:
        raise InvalidInputError(f"{FORMAT}: the {where} is a {arch} (BasicBlocks), which V1's code cannot run (it "
                                f"sets layer4[0].conv2's stride to 1, a Bottleneck's stride); convert a "
                                f"ResNet-50/101/152 file")
    if arch not in ARCHS[stage]:
        raise InvalidInputError(f"{FORMAT}: the {where} is a {arch}, which V1's {stage} script does not build; its "
                                f"networks are {', '.join(ARCHS[stage])}")
    return arch


@register_format(
    FORMAT,
    description="CORE-ReID V1's model_best.pth.tar: the source network or the fine-tuning Encoder",
    options={"task": "the UDA task the file was trained for (market1501->cuhk03np ...), for the published row "
                     "corelib evaluate prints beside the scores",
             "img_size": "HxW the file was trained with (--height/--width of V1's scripts; default 256x128)"},
)
def convert_corereid_v1(contents: Any, *, config: Optional[dict], options: dict) -> Conversion:
    """A V1 file's :class:`~corelib.convert.Conversion` (the module docstring says which files)."""
    if not isinstance(contents, dict):
        raise InvalidInputError(f"{FORMAT}: the file holds a {type(contents).__name__}, not a state dict or "
                                f"{{'state_dict': ...}}; not a file of CORE-ReID V1's scripts")
    wrapped = isinstance(contents.get("state_dict"), dict)
    state = contents["state_dict"] if wrapped else contents
    outer = "state_dict." if wrapped else ""
    keys = list(state)
    finetune = any(k.startswith(("model_ema.", "fuse_net.")) for k in keys)
    stage = "finetune" if finetune else "pretrain"
    if finetune:  # Encoder: student model, EMA teacher model_ema (each a ResNet), Fuse fuse_net
        nets = {"student.": _prefix(keys, "model."), "teacher.": _prefix(keys, "model_ema.")}
        head, unused = FINETUNE_HEAD, UNUSED
        network = "the fine-tuning Encoder: student model, EMA teacher model_ema, fusion fuse_net (from the keys)"
    else:
        nets, head, unused = {"": _prefix(keys, "")}, SOURCE_HEAD, {}  # nothing of V1's source network is unused
        network = "the source network of source_pretrain.py (from the keys: no model_ema, no fuse_net)"
    placed: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for ours, prefix in nets.items():
        net_placed, net_dropped = _place(keys, prefix, head, unused)
        placed.update({ours + k: v for k, v in net_placed.items()})
        dropped.update(net_dropped)
    for key in keys:
        target = _rename(key[len("fuse_net."):], FUSE) if key.startswith("fuse_net.") else None
        if target is not None:
            placed[target] = key
    # the network that is evaluated (the teacher of a pair) tells the trunk and the class count
    evaluated, where = ("teacher.", "fine-tuning file's teacher") if finetune else ("", "source file")
    trunk = {k[len(evaluated + "trunk."):]: state[v] for k, v in placed.items() if k.startswith(evaluated + "trunk.")}
    arch = _trunk_arch(trunk, stage, where)
    classifier = placed.get(evaluated + "classifier.weight")
    if classifier is None:
        raise InvalidInputError(f"{FORMAT}: the {where} has no classifier.weight; not a file of CORE-ReID V1's scripts")
    classes = int(state[classifier].shape[0])
    size, size_from = _img_size(options.get("img_size"))
    task = _task(options.get("task"))
    # V1's evaluator averages every descriptor with the flipped image's (BMFN): its test protocol
    model_args: dict = {"backbone": arch, "num_classes": classes, "test_flip": True}
    filled: dict[str, str] = {}
    inferred = {"network": network, "backbone": f"{arch} (the trunk's block layout and norms)",
                "num_classes": f"{classes} (the classifier's rows)", "img_size": size_from,
                "wrapper": ("{'state_dict': ...}" if wrapped else "a plain state dict")
                           + (" with DataParallel's module." if any(p.endswith("module.") for p in nets.values())
                              else " without module."),
                "test_flip": "on (V1's evaluator averages each descriptor with the flipped image's, BMFN)"}
    if finetune:
        model_args.update(fusion="v1", pool="gap+gmp", ecab=True, odd_height="drop")
        filled["step"] = ("MeanTeacher's count of EMA steps: V1 keeps none in its files (its trainer derives the step "
                          "from the epoch and batch), so it starts at 0")
        inferred["odd_height"] = ("drop (V1's split x[:, :, h // 2 * s : h // 2 * (s + 1)]: a map of odd height loses "
                                  "its last row)")
    best = contents.get("best_mAP") if wrapped else None
    if isinstance(best, (int, float)):
        inferred["best_mAP"] = f"{best:.4f} (the file's best_mAP: the target-test mAP V1 chose the epoch by)"
    epoch = contents.get("epoch") if wrapped else None
    return Conversion(
        stage=stage, model_name="mean_teacher" if finetune else "source_net", model_args=model_args,
        mapping={k: outer + v for k, v in placed.items()}, dropped={outer + k: why for k, why in dropped.items()},
        input_size=size, filled=filled, inferred=inferred,
        # the published CORE-ReID V1 rows are of adapted networks: none is beside a source network's scores
        method=METHOD if finetune else None, task=task,
        epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else None,
    )
