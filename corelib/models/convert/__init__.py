"""Published checkpoints in: the files other codebases release, rewritten as corelib checkpoints.

``corelib convert FORMAT IN OUT`` (:func:`convert_checkpoint`) reads a file of another codebase
safely, maps every tensor onto a registered corelib network, and writes a checkpoint that works
wherever one of the workbench's own does: ``corelib evaluate``, :func:`corelib.load_trained_model`,
``finetune(source_checkpoint=...)``, Grad-CAM, UMAP and the explorers.

The machinery is :mod:`.core`. A **format** is a plug-in: one file of this package that registers a converter with
:func:`register_format`, declaring the options it takes (:class:`FormatInfo`). The converter gets
the file's contents (read by :func:`read_foreign`: tensors and plain values, numpy scalars and arrays
allowed by name, nothing else is unpickled), the official YAML config when one is given, and the
options, and returns a :class:`Conversion`: which corelib network to build, with which arguments,
and for each of its state-dict keys the file's key it comes from. Everything the tensors determine
(depth, width, the class count, grids and strides, camera tables) is inferred from them; what they
cannot tell comes from the config or the options, and a converter refuses with one line naming the
missing option (:func:`require`).

This module then checks the conversion (every key of the network is filled, every key of the file
lands somewhere or is listed in ``dropped`` with the reason, and every shape fits), loads the
network, and writes the checkpoint with :func:`~corelib.runtime.checkpoint.save_checkpoint`. The
checkpoint records, under ``converted``, the format, the file's name and SHA-256, the options, what
was inferred and from where, every dropped key with why, and the published method and task the
weights belong to (:mod:`corelib.published`), so ``corelib evaluate`` can print the paper's row
beside the measured one.

Registered formats: ``corereid_v1`` (:mod:`.corereid_v1`), ``transreid`` (:mod:`.transreid`),
``ibn_net`` (:mod:`.ibn_net`).

Example::

    corelib convert corereid_v1 logs/market2cuhk/model_best.pth.tar runs/v1_m2c.pt \\
        --option task=market1501->cuhk03np
    corelib evaluate runs/v1_m2c.pt --dataset cuhk03np ~/datasets
"""

from . import corereid_v1, ibn_net, transreid  # noqa: F401 - the formats: each registers itself (they import .core)
from .core import (
    FORMATS,
    Conversion,
    ConvertedCheckpoint,
    FormatInfo,
    convert_checkpoint,
    list_formats,
    parse_pair,
    read_foreign,
    register_format,
    require,
    stage_cfg,
    strip_prefix,
)

__all__ = ["FORMATS", "Conversion", "ConvertedCheckpoint", "FormatInfo", "convert_checkpoint",
           "list_formats", "parse_pair", "read_foreign", "register_format", "require", "stage_cfg", "strip_prefix"]
