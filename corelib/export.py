"""Deployable models out: a trained network as an ONNX graph of its test feature.

``corelib export onnx CHECKPOINT OUT.onnx`` (:func:`export_onnx`) writes the eval-mode descriptor of
any registered network (the ResNet and IBN-Net source networks, CORE-ReID's fine-tuning network and
mean teacher, TransReID with its camera and view embeddings), from a checkpoint of either training
loop, a converted one (``corelib convert``) included, or from a network in memory.

**The graph** computes the retrieval feature of ONE view of each image, as the network's eval mode
returns it:

- input ``images``: ``(B, 3, H, W)`` float32, RGB at the network's input size, preprocessed as the
  workbench's test pipeline does (resize to ``H x W`` bicubic, scale to [0, 1], subtract the ImageNet
  mean and divide by its std per channel; the metadata records the size, mean and std);
- input ``camids``: ``(B,)`` int64, only for a network whose trunk has a camera table (TransReID's
  SIE): 0-based camera ids below the table's camera count, -1 for an image of an unknown camera
  (the table's mean, the camera-blind embedding); an id outside the table is not checked by the graph
  (onnxruntime refuses it on the CPU);
- input ``views``: ``(B,)`` int64, only for a network whose trunk's SIE table has views (VeRi-776's
  orientations; the network's ``viewids``): 0-based view ids below the table's view count, -1 for an
  image of an unknown view (the mean of its camera's view rows);
- output ``features``: ``(B, D)`` float32, L2-normalised.

The batch axis is dynamic. A mean teacher exports its teacher (the network that is evaluated).

**The flip protocol.** The workbench's test feature of a network whose method tests with flips
(:func:`corelib.features.uses_test_flip`: CORE-ReID's networks, BMFN) is
``normalize(f(x) + f(flip(x)))``: run the graph on the images and on their horizontal flips (the
width axis reversed), add the two features and L2-normalise the sum. TransReID's official protocol
uses one view: the graph's output is the test feature. The metadata says which (``test_flip``, and
the rule in words under ``flip_protocol``).

**Opset 17** (:data:`ONNX_OPSET`), through torch's TorchScript exporter: the first opset with
LayerNormalization as one operator (the ViT's norms stay fused instead of decomposed), and every
operator of these graphs (Conv, BatchNormalization, InstanceNormalization, Reduce*, MatMul, Gather,
Where, Erf, Softmax, LayerNormalization) is implemented at opset 17 by onnxruntime's CPU and CUDA
execution providers. torch's dynamo exporter cannot trace TransReID's data-dependent SIE range check.

**Metadata** (``metadata_props`` of the ONNX model): ``model_name``, ``input_height``,
``input_width``, ``input_mean``, ``input_std``, ``preprocessing``, ``inputs``, ``num_cameras``,
``num_views``, ``test_flip``, ``flip_protocol``, ``corelib_version``, ``exported_by``, and for a
checkpoint file ``checkpoint`` (its name) and ``checkpoint_sha256``.

onnx and onnxruntime are an optional extra: ``pip install -e ".[onnx]"``.

Example::

    corelib export onnx runs/m2c/finetune/best.pt corereid.onnx
    # python
    import onnxruntime as ort
    session = ort.InferenceSession("corereid.onnx", providers=["CPUExecutionProvider"])
    features = session.run(["features"], {"images": batch})[0]        # (B, D)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .errors import InvalidInputError, InvalidTypeError, MissingExtraError, NotOwnedError
from .features import uses_test_flip
from .models import MeanTeacher, TransReIDViT
from .ownership import fingerprint
from .paths import atomic_file
from .repro import env_report
from .training.evaluate import load_trained_model

ONNX_OPSET = 17
"""The opset :func:`export_onnx` writes (the module docstring says why)."""

EXPORTED_BY = "corelib export onnx"
"""The ``exported_by`` metadata entry: what marks a file as one :func:`export_onnx` may replace."""

_TRACE_BATCH = 2
"""The batch the graph is traced with; the batch axis of the graph is dynamic."""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: Path
    network: nn.Module
    """The torch network the graph computes (eval mode; a mean teacher's teacher)."""
    inputs: tuple[str, ...]
    """``("images",)``, ``("images", "camids")`` or ``("images", "camids", "views")``."""
    input_size: tuple[int, int]
    metadata: dict[str, str]
    num_cameras: int
    """Rows of the camera axis of the SIE table the ``camids`` input indexes (0: no such input)."""
    num_views: int
    """Views of the SIE table the ``views`` input indexes (0: no such input)."""
    feature_dim: int
    """D of the ``features`` output."""
    opset: int


def require_onnx():
    """``(onnx, onnxruntime)``, or a one-line refusal naming the extra to install."""
    try:
        import onnx  # lazy: an optional extra, needed by the export only
        import onnxruntime  # lazy: an optional extra, needed by the export only
    except ImportError as e:
        raise MissingExtraError(f"the ONNX export needs onnx and onnxruntime ({e.name or e} is missing): "
                                f'pip install -e ".[onnx]"') from e
    return onnx, onnxruntime


class _OneView(nn.Module):
    """The graph's function: the eval-mode descriptor of one view, the id inputs named by ``inputs``."""

    def __init__(self, net: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.net, self.inputs = net, inputs

    def forward(self, images: torch.Tensor, *ids: torch.Tensor) -> torch.Tensor:
        side = dict(zip(self.inputs[1:], ids))
        if "views" in side:  # the graph's input keeps its name "views"; the networks call it viewids
            return self.net(images, side.get("camids"), side["views"])
        return self.net(images, side.get("camids"))


def _side_inputs(net: nn.Module) -> tuple[int, int]:
    """``(cameras, views)``: the SIE table's camera and view counts that the graph takes ids for
    (0 for none): camera ids when a ViT trunk's table has cameras, view ids when it has views (every
    network hands both to its trunk)."""
    tables = [m for m in net.modules() if isinstance(m, TransReIDViT) and m.sie_embed is not None]
    cameras = max((m.num_cameras for m in tables if m.num_cameras > 1), default=0)
    views = max((m.num_views for m in tables if m.num_views > 1), default=0)
    return cameras, views


def export_onnx(source: Union[str, Path, nn.Module], out: Union[str, Path], *, opset: int = ONNX_OPSET,
                input_size: Optional[tuple[int, int]] = None, overwrite: bool = False) -> OnnxExport:
    """Write the test feature of ``source`` as an ONNX graph at ``out`` (the module docstring).

    Args:
        source: a ``pretrain`` / ``finetune`` checkpoint (converted ones included;
            :func:`corelib.load_trained_model` rebuilds it, at the input size it records), or a network.
        out: the ``.onnx`` file to write.
        opset: the ONNX opset (17: onnxruntime's CPU and CUDA providers run every operator).
        input_size: ``(H, W)`` of a network given in memory; a checkpoint records its own.
        overwrite: replace an existing ``out`` (only an ONNX model this function wrote).

    Raises:
        MissingExtraError: onnx or onnxruntime is not installed (the message names the extra).
        NotOwnedError: ``out`` exists and ``overwrite`` is off, or it is not a file this function wrote.
        InvalidInputError: a network without ``input_size``, or a checkpoint with one.
        InvalidTypeError: ``source`` is neither a path nor a network.
    """
    onnx, _ = require_onnx()
    out = Path(out).expanduser()
    _check_out(onnx, out, overwrite)
    record: dict[str, str] = {}
    if isinstance(source, nn.Module):
        if input_size is None:
            raise InvalidInputError("a network in memory needs input_size=(H, W), the size it is tested at")
        model, model_name = source, type(source).__name__
    elif isinstance(source, (str, Path)):
        if input_size is not None:
            raise InvalidInputError("a checkpoint records its input size; drop input_size")
        trained = load_trained_model(source)
        model, model_name, input_size = trained.model, str(trained.cfg["model"]["name"]), trained.input_size
        record = {"checkpoint": Path(source).name, "checkpoint_sha256": fingerprint(Path(source).expanduser())}
    else:
        raise InvalidTypeError(f"source must be a checkpoint path or an nn.Module, got {type(source).__name__}")
    height, width = int(input_size[0]), int(input_size[1])
    net = model.teacher if isinstance(model, MeanTeacher) else model
    cameras, views = _side_inputs(net)
    inputs = ("images",) + (("camids",) if cameras else ()) + (("views",) if views else ())
    flip = uses_test_flip(model)
    metadata = {
        "model_name": model_name,
        "input_height": str(height),
        "input_width": str(width),
        "input_mean": ",".join(map(str, IMAGENET_MEAN)),
        "input_std": ",".join(map(str, IMAGENET_STD)),
        "preprocessing": f"RGB resized to {height} x {width} (bicubic), scaled to [0, 1], minus the mean "
                         f"{IMAGENET_MEAN}, over the std {IMAGENET_STD} per channel",
        "inputs": ",".join(inputs),
        "num_cameras": str(cameras),
        "num_views": str(views),
        "test_flip": str(flip).lower(),
        "flip_protocol": ("run the graph on the images and on their horizontal flips, add the two features and "
                          "L2-normalise the sum" if flip else "one view: the graph's features are the test feature"),
        "corelib_version": str(env_report()["corelib"]),
        "exported_by": EXPORTED_BY,
        **record,
    }
    was_training = net.training
    net.eval()
    try:
        graph, feature_dim = _trace(_OneView(net, inputs).eval(), inputs, (height, width), cameras, views, opset)
    finally:
        net.train(was_training)
    proto = onnx.load_from_string(graph)
    onnx.helper.set_model_props(proto, metadata)
    with atomic_file(out, "wb") as f:
        f.write(proto.SerializeToString())
    return OnnxExport(out, net, inputs, (height, width), metadata, cameras, views, feature_dim, opset)


def _example_inputs(inputs: tuple[str, ...], batch: int, input_size: tuple[int, int], cameras: int, views: int, *,
                   seed: int = 0, device: Union[str, torch.device] = "cpu") -> dict[str, torch.Tensor]:
    """A random batch for the graph's ``inputs``: normal images, camera ids in [-1, cameras) (-1: an
    unknown camera), view ids in [-1, views) (-1: an unknown view)."""
    g = torch.Generator().manual_seed(seed)
    made = {"images": torch.randn(batch, 3, *input_size, generator=g),
            "camids": torch.randint(-1, max(cameras, 1), (batch,), generator=g),
            "views": torch.randint(-1, max(views, 1), (batch,), generator=g)}
    return {name: made[name].to(device) for name in inputs}


def _trace(wrapper: nn.Module, inputs: tuple[str, ...], input_size: tuple[int, int], cameras: int, views: int,
           opset: int) -> tuple[bytes, int]:
    """The ONNX model of ``wrapper`` traced on a random batch, and D of its features."""
    device = next(wrapper.parameters()).device
    args = tuple(_example_inputs(inputs, _TRACE_BATCH, input_size, cameras, views, device=device).values())
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns about Python-side checks (input size, SIE index range): they hold for any
        # batch and input of the recorded shape, and are not part of the graph; the TorchScript
        # exporter, deprecated in favour of the dynamo one, is chosen on purpose (module docstring)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # IBN-Net's InstanceNorm keeps no running statistics: it normalises each image by its own in eval
        # mode too, which is what the exporter writes despite its warning
        warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True")
        torch.onnx.export(wrapper, args, buffer, dynamo=False, opset_version=opset, input_names=list(inputs),
                          output_names=["features"],
                          dynamic_axes={name: {0: "batch"} for name in (*inputs, "features")})
        feature_dim = int(wrapper(*args).shape[1])
    return buffer.getvalue(), feature_dim


def check_export(exported: OnnxExport, batch: int = 3, *, seed: int = 1) -> float:
    """max |onnxruntime - torch| of the features of a random ``batch`` (CPU provider)."""
    if batch < 1:
        raise InvalidInputError(f"the check batch must hold at least one image, got {batch}")
    _, ort = require_onnx()
    feeds = _example_inputs(exported.inputs, batch, exported.input_size, exported.num_cameras, exported.num_views,
                           seed=seed)
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {k: v.numpy() for k, v in feeds.items()})[0]
    device = next(exported.network.parameters()).device
    was_training = exported.network.training
    exported.network.eval()
    try:
        with torch.no_grad():
            want = _OneView(exported.network, exported.inputs)(*(v.to(device) for v in feeds.values()))
    finally:
        exported.network.train(was_training)
    return float(np.abs(got - want.float().cpu().numpy()).max())


def _check_out(onnx, out: Path, overwrite: bool) -> None:
    """Never replace a file the workbench did not write: only an ONNX model of this export, and only when asked."""
    if not out.exists():
        return
    if not overwrite:
        raise NotOwnedError(f"{out} exists; choose another output path, or pass --overwrite to replace an ONNX model "
                            f"that {EXPORTED_BY} wrote")
    try:
        props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001 - unreadable: certainly not ours
        props = {}
    if props.get("exported_by") != EXPORTED_BY:
        raise NotOwnedError(f"{out} is not an ONNX model written by {EXPORTED_BY}; it is not replaced. "
                            f"Choose another output path")
