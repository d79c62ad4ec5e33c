"""Checks of the arrays that enter the evaluation and the clustering: descriptors and ids.

The ranking (:mod:`corelib.evaluation`), k-means, the Jaccard distance and the re-ranking form
squared distances as ``|x|^2 + |y|^2 - 2 x.y`` in float32. A diverged network gives *finite*
descriptors whose squared norms overflow float32 (a magnitude of 1e19 is enough): the distances
turn into inf or NaN and the metrics or the clusters come out wrong without a word.
:func:`check_features` refuses such descriptors, and NaN or inf, from one number per row: the row
norms (k-means and the Jaccard distance pass the ones they compute anyway; elsewhere they cost one
pass over the features, no slower than the sum the NaN check took before).

:func:`integer_ids` refuses person and camera ids that are not integers: a float pid used to be
truncated, so that query pid 0.1 and gallery pid 0.9 counted as one person.
"""

from __future__ import annotations

import numbers
from typing import Optional

import numpy as np
import torch

from .errors import InvalidInputError

MAX_FEATURE_NORM = 2.0**50
"""Largest row norm (about 1.1e15) a descriptor may have. A network's descriptors have norm 1
(L2-normalised) to a few hundred; one beyond this comes from a diverged network. Below it every
float32 quantity the ranking and the clustering form stays finite: a squared distance is at most
4 x the largest squared norm (2^102), and sums of up to 2^25 of them (k-means' variance and centre
shift) stay below float32's largest value, about 2^128."""


def check_features(x: torch.Tensor, name: str, *, sq_norms: Optional[torch.Tensor] = None) -> None:
    """Refuse an (N, D) descriptor matrix with NaN or inf, or with a row norm above :data:`MAX_FEATURE_NORM`.

    One pass over ``x`` for its row norms (none when the caller passes the float32 squared norms it
    computes anyway as ``sq_norms``); only a refused matrix is looked at again, to say why.

    Raises:
        InvalidInputError: naming ``name`` (e.g. ``"query features"``), the first bad row and the fix.
    """
    if x.shape[0] == 0:
        return
    if sq_norms is None:
        # float64 stays float64; float32 norms of half-precision or integer descriptors (a copy: rare)
        rows = x if x.dtype in (torch.float32, torch.float64) else x.float()
        sq_norms = torch.linalg.vector_norm(rows, dim=1) ** 2
    if float(sq_norms.max()) <= MAX_FEATURE_NORM**2:  # NaN fails the comparison too
        return
    bad = torch.nonzero(~torch.isfinite(x).all(dim=1))[:, 0]
    if bad.numel():
        raise InvalidInputError(f"{name} contain NaN or inf in {bad.numel()} row(s) (first: row {int(bad[0])}): an "
                                f"image is corrupt or the network diverged; check that image, or the training run "
                                f"(its loss, its learning rate)")
    row = int(torch.argmax(sq_norms))
    raise InvalidInputError(
        f"{name} diverged: their largest magnitude is {float(x.abs().max()):.3g} and row {row} has norm "
        f"{float(torch.linalg.vector_norm(x[row].double())):.3g}, beyond the {MAX_FEATURE_NORM:.2g} up to which "
        f"float32 distances are safe from overflow; check the training run that produced them (its loss, its "
        f"learning rate), or L2-normalise them (in float64) first")


def integer_ids(values, name: str) -> np.ndarray:
    """``values`` (person or camera ids: a sequence, array or tensor) as an int64 array.

    Integers and integer-valued floats (``3.0``) pass; anything else (``0.1``, NaN, a string, a
    bool) is refused rather than truncated.

    Raises:
        InvalidInputError: naming ``name`` and the first offending entry.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = values.double() if values.is_floating_point() else values
        a = values.numpy()
    else:
        a = np.asarray(values)
        if a.dtype.kind in "US" and not isinstance(values, np.ndarray):  # [3, "x"]: find the "x"
            a = np.asarray(values, dtype=object)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        ok = np.isfinite(a) & (a == np.round(a))
    elif a.dtype.kind == "O":  # a list mixing numbers with something else
        ok = np.array([isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(float(v))
                       and float(v) == round(float(v)) for v in a.flat], dtype=bool).reshape(a.shape)
    else:  # bool, str, complex ...
        ok = np.zeros(a.shape, dtype=bool)
    if ok.all():
        return a.astype(np.float64).astype(np.int64)
    first = int(np.flatnonzero(~ok)[0])
    value = a.flat[first]
    value = value.item() if isinstance(value, np.generic) else value
    raise InvalidInputError(f"{name} must hold integer ids (3, or 3.0), but entry {first} is {value!r}: ids "
                            f"are compared as integers, so pass the dataset's integer ids")
