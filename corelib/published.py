"""Published results, as data: the numbers a thesis table puts beside one's own measurements.

Why this module exists: a reproduction is judged against what the papers report, and copying those
numbers by hand into every notebook and LaTeX table invites typos and lost caveats ("arXiv v1 only",
"with re-ranking", "USL, no source domain"). Here every published number the project relies on is one
:class:`PublishedResult` record of (task, method, mAP, R-1, R-5, R-10, source, setting, backbone, note),
so :func:`corelib.results.published_table` and :func:`corelib.results.beside_published` can lay the
paper rows next to the measured ones.

**The numbers are transcriptions, not measurements.** They were copied from the project's two source
notes, which in turn transcribed the papers, repositories and tables they cite; nothing here was
re-derived or completed, and a cell a table leaves empty ("–") is ``None``. Each record's ``source``
names the note and section it came from, then the primary source the note cites:

- ``docs/method.md §8``: CORE-ReID V2's results tables (project page, [V2-page]): CORE-ReID V2 (ResNet101),
  V2 Tiny (ResNet18), direct transfer and the V1 / "baseline" column, for the six person and vehicle
  pairs and every VehicleID / VERI-Wild test size; the SECAB ablation (mAP only) and the V1 ECAB / BMFN
  ablation (approximate values) of the same section;
- ``docs/method.md §3.7``: the cluster-count sweep of CORE-ReID V2 (approximate mAP read off a figure);
- ``docs/baselines.md §1.8``: TransReID, Table 7 (supervised, persons and vehicles), Table 8 (training-setting
  ablation of the ViT baseline) and the repository README's "reorganized code" results;
- ``docs/baselines.md §1b.5``: TransReID-SSL, the README's "Paper" and "Reproduced" columns (supervised,
  USL and UDA);
- ``docs/baselines.md §2.2``: Learn by Guessing and the rows its slides compare with (MMT, SSG);
- ``docs/baselines.md §3.7``: MMT (k-means, from the paper; OpenUnReID's DBSCAN "MMT+"; MMT as quoted by
  SpCL / Cluster Contrast), SpCL (UDA and USL) and Cluster Contrast (USL only);
- ``docs/baselines.md §4.4``: the re-ID numbers of the IBN-Net README (reid-strong-baseline, supervised).

Tasks are named with the workbench's loader names (:func:`corelib.data.list_datasets`):
``"<source>-><target>"`` for UDA (``"market1501->cuhk03np"``) and the dataset alone for USL and
supervised results (``"msmt17"``). VehicleID and VERI-Wild carry their test size, as the loaders'
``test_size`` option does: ``"veri776->vehicleid@1600"``, ``"vehicleid->veriwild@10000"``.
Datasets the workbench has no loader for keep a plain lower-case name: ``occduke`` (Occluded-Duke),
``personx``, ``vehiclex``. :func:`canonical_task` accepts the friendly spellings of the papers and of
the workbench's own tables ("Market→CUHK03", "CUHK03 -> Market-1501", "VeRi → VehicleID 2400",
"veri776 → vehicleid (test_size=1600)"); a VehicleID / VERI-Wild name without a size means the loader's
default (800 / 3000).

Method names keep the papers' names, written so that LaTeX can print them: TransReID's superscripts
become words (``TransReID*^c`` is ``TransReID* (SIE camera)``; ``*`` still means overlapping patches,
stride 12). Caveats the notes mark travel in ``note``. Two more caveats apply to CORE-ReID V2's own
numbers (docs/method.md §9): its code keeps the best epoch by target-test mAP (Q9), and its vehicle
"baseline" column is undefined (Q16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Optional

from .errors import InvalidInputError, UnknownNameError

SETTINGS = ("uda", "usl", "supervised")
"""``uda``: source -> target adaptation (direct-transfer rows included); ``usl``: unsupervised on the
target alone; ``supervised``: trained with the labels of the dataset it is tested on."""

METRIC_FIELDS = ("mAP", "rank1", "rank5", "rank10")


@dataclass(frozen=True)
class PublishedResult:
    """One published row: a method's scores (in %) on one task, and where they were read."""

    task: str
    """Canonical task (:func:`canonical_task`): ``"market1501->cuhk03np"``, ``"msmt17"`` ..."""
    method: str
    mAP: Optional[float]
    rank1: Optional[float]
    rank5: Optional[float]
    rank10: Optional[float]
    source: str
    """The note and section it was transcribed from, then the primary source that note cites."""
    setting: str = "uda"
    """One of :data:`SETTINGS`."""
    backbone: str = ""
    """As the source names it, with the input size where the table distinguishes sizes; empty when
    the source does not say."""
    note: str = ""
    """Caveats the source notes mark (another paper version, re-ranking, an assumed test size ...)."""
    decimals: int = 1
    """Digits after the point as the source prints them (the vehicle rows of CORE-ReID V2 have two),
    so that a table can show 49.50 and not 49.5."""

    def __post_init__(self) -> None:
        # A malformed record is a transcription bug: fail at import, not in a thesis table.
        if self.setting not in SETTINGS:
            raise InvalidInputError(f"{self.method} on {self.task}: setting {self.setting!r} is not one of {SETTINGS}")
        if all(getattr(self, f) is None for f in METRIC_FIELDS):
            raise InvalidInputError(f"{self.method} on {self.task}: a published record needs at least one metric")

    @property
    def metrics(self) -> dict[str, Optional[float]]:
        """``{"mAP": .., "rank1": .., "rank5": .., "rank10": ..}`` (None where the source gives none)."""
        return {f: getattr(self, f) for f in METRIC_FIELDS}

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What tells two records apart: (task, method, backbone, setting, note)."""
        return (self.task, self.method, self.backbone, self.setting, self.note)


# ---------------------------------------------------------------------------------------------------------------
# Transcription helpers. Each row is written as the note prints it ("66.4 / 66.9 / 83.4 / 88.9",
# "95.0 (88.2)", "–" for an empty cell) with the order of its metrics, so that a row can be checked
# against the note by eye; the helper only splits it.

_ORDERS = {
    "mAP/R1/R5/R10": ("mAP", "rank1", "rank5", "rank10"),
    "mAP/R1": ("mAP", "rank1"),
    "mAP": ("mAP",),
    "R1/R5": ("rank1", "rank5"),  # TransReID's VehicleID columns
    "R1/R5/R10/mAP": ("rank1", "rank5", "rank10", "mAP"),  # the Learn by Guessing slides
    "R1 (mAP)": ("rank1", "mAP"),  # the IBN-Net README
}

_records: list[PublishedResult] = []


def _put(task: str, method: str, values: str, *, order: str, source: str, setting: str = "uda",
         backbone: str = "", note: str = "") -> None:
    """Add one record; ``values`` is the cell text, read in ``order``; "–" alone is an empty cell."""
    names = _ORDERS[order]
    if values.strip() in ("–", "-"):
        return  # the table has no entry for this (method, task): no record rather than an all-None one
    cells = re.findall(r"\d+(?:\.\d+)?|–", values)
    if len(cells) != len(names):
        raise InvalidInputError(f"{method} on {task}: {values!r} does not hold the {len(names)} values of {order}")
    metrics = dict.fromkeys(METRIC_FIELDS)
    metrics.update({n: (None if c == "–" else float(c)) for n, c in zip(names, cells)})
    decimals = max((len(c.partition(".")[2]) for c in cells if c != "–"), default=1)
    _records.append(PublishedResult(task, method, **metrics, source=source, setting=setting, backbone=backbone,
                                    note=note, decimals=decimals))


# --- docs/method.md §8: CORE-ReID V2's results tables ([V2-page]) ----------------------------------------------------

_V2 = "docs/method.md §8: CORE-ReID V2 results tables (project page, V2-page)"
_V2_VEHICLE_BASELINE = "vehicle 'baseline' column: undefined, V1 is person-only; informational (docs/method.md §9-Q16)"
_V2_TABLE = [
    # task, CORE-ReID V2 (ResNet101), V2 Tiny (ResNet18), direct transfer, V1 / "baseline"
    ("market1501->cuhk03np", "66.4 / 66.9 / 83.4 / 88.9", "33.0 / 31.9 / 48.9 / 59.1", "23.9 / 24.6 / 40.3 / 48.9",
     "62.9 / 61.0 / 79.6 / 87.2"),
    ("cuhk03np->market1501", "84.5 / 93.9 / 97.6 / 98.7", "60.3 / 83.4 / 91.8 / 94.7", "35.5 / 63.3 / 77.8 / 83.2",
     "83.6 / 93.6 / 97.3 / 98.7"),
    ("market1501->msmt17", "44.1 / 71.3 / 82.4 / 86.0", "35.8 / 64.7 / 76.6 / 80.8", "11.7 / 30.2 / 42.9 / 48.0",
     "41.9 / 69.5 / 80.3 / 84.4"),
    ("cuhk03np->msmt17", "40.7 / 68.7 / 79.7 / 83.4", "18.8 / 44.2 / 57.1 / 62.3", "35.5 / 63.3 / 77.8 / 82.7",
     "40.4 / 67.3 / 79.0 / 83.1"),
    ("vehicleid->veri776", "49.50 / 80.15 / 89.05 / 90.29", "40.17 / 73.00 / 81.41 / 85.40",
     "22.71 / 62.04 / 71.79 / 76.32", "47.70 / 78.12 / 86.23 / 88.14"),
    ("veri776->vehicleid@800", "67.04 / 58.32 / 76.51 / 84.32", "63.87 / 55.18 / 73.43 / 81.11",
     "61.28 / 53.50 / 69.81 / 76.13", "64.28 / 56.16 / 74.55 / 81.15"),
    ("veri776->vehicleid@1600", "63.02 / 53.49 / 74.36 / 81.85", "59.69 / 50.05 / 70.88 / 77.75",
     "57.23 / 48.57 / 67.05 / 73.77", "60.02 / 51.84 / 71.62 / 78.08"),
    ("veri776->vehicleid@2400", "57.99 / 48.62 / 68.30 / 77.11", "55.14 / 45.99 / 65.07 / 73.54",
     "52.31 / 44.04 / 61.08 / 68.60", "56.15 / 47.85 / 66.89 / 75.27"),
    ("vehicleid->veriwild@3000", "40.2 / 76.6 / 90.2 / 92.1", "28.6 / 56.5 / 74.9 / 80.2", "20.9 / 48.2 / 64.3 / 70.7",
     "39.8 / 75.2 / 89.3 / 91.6"),
    ("vehicleid->veriwild@5000", "34.9 / 70.2 / 86.2 / 89.3", "23.1 / 52.1 / 70.6 / 78.4", "18.9 / 44.3 / 60.9 / 66.9",
     "34.5 / 69.6 / 81.7 / 88.7"),
    ("vehicleid->veriwild@10000", "27.8 / 62.1 / 79.8 / 82.3", "19.9 / 48.1 / 66.3 / 74.6",
     "15.6 / 38.0 / 53.3 / 59.8", "26.8 / 61.1 / 79.6 / 81.3"),
]
for _task, _main, _tiny, _direct, _v1 in _V2_TABLE:
    _v2 = partial(_put, _task, order="mAP/R1/R5/R10", source=_V2)
    _v2("CORE-ReID V2", _main, backbone="ResNet101")
    _v2("CORE-ReID V2 Tiny", _tiny, backbone="ResNet18")
    _v2("Direct transfer", _direct,
        note="sic: repeats the CUHK→Market numbers, likely a table error (docs/method.md §8)"
        if _task == "cuhk03np->msmt17" else "")
    if _task.startswith(("market1501", "cuhk03np")):
        _v2("CORE-ReID V1", _v1)
    else:
        _v2("Baseline (V2 page)", _v1, note=_V2_VEHICLE_BASELINE)

# The SECAB ablation gives mAP only; its "with SECAB" values are the CORE-ReID V2 (ResNet101) row above.
_SECAB = "docs/method.md §8: CORE-ReID V2 SECAB ablation (V2-page), same K"
for _task, _map in [("market1501->cuhk03np", "65.0"), ("cuhk03np->market1501", "83.9"), ("market1501->msmt17", "43.2"),
                    ("cuhk03np->msmt17", "40.5"), ("vehicleid->veri776", "48.03"), ("veri776->vehicleid@800", "65.14")]:
    _put(_task, "CORE-ReID V2 without SECAB", _map, order="mAP", source=_SECAB, backbone="ResNet101",
         note="ablation, mAP only")

# docs/method.md gives these as approximate ("≈"): kept as printed, flagged in the note.
_V1_ABLATION = "docs/method.md §8: CORE-ReID V1 ECAB / BMFN ablation (V1-page), K=900"
_put("market1501->cuhk03np", "CORE-ReID V1 without ECAB", "56.9", order="mAP", source=_V1_ABLATION,
     note="approximate value (docs/method.md marks it so), mAP only")
_put("market1501->cuhk03np", "CORE-ReID V1 without BMFN", "62.3", order="mAP", source=_V1_ABLATION,
     note="approximate value (docs/method.md marks it so), mAP only")

# --- docs/method.md §3.7: the cluster-count sweep (K=900 is the main row) ------------------------------------------------

_K_SWEEP = "docs/method.md §3.7: CORE-ReID V2 cluster-count sweep (V2-page SECAB table and Fig. 12)"
for _task, _k500, _k700 in [("market1501->cuhk03np", "44", "58"), ("cuhk03np->market1501", "69", "82")]:
    for _k, _map in (("500", _k500), ("700", _k700)):
        _put(_task, f"CORE-ReID V2 (K={_k})", _map, order="mAP", source=_K_SWEEP, backbone="ResNet101",
             note="approximate value read off a figure (docs/method.md marks it so), mAP only")

# --- docs/baselines.md §1.8: TransReID (supervised) ------------------------------------------------------------------

_TR7 = "docs/baselines.md §1.8: TransReID paper Table 7 (damo-cv/TransReID figs/sota.png)"
_TR_PERSON = [
    # backbone, method, MSMT17, Market, Duke, Occ-Duke (mAP / R1)
    ("ViT-B/16 (256×128)", "Baseline", "61.0 / 81.8", "86.8 / 94.7", "79.3 / 88.8", "53.1 / 60.5"),
    ("ViT-B/16 (256×128)", "TransReID (SIE camera)", "64.9 / 83.3", "88.2 / 95.0", "80.6 / 89.6", "55.7 / 64.2"),
    ("ViT-B/16 (384×128)", "TransReID (SIE camera)", "66.6 / 84.6", "88.8 / 95.0", "81.8 / 90.4", "–"),
    ("ViT-B/16 (256×128)", "TransReID* (SIE camera)", "67.4 / 85.3", "88.9 / 95.2", "82.0 / 90.7", "59.2 / 66.4"),
    ("ViT-B/16 (384×128)", "TransReID* (SIE camera)", "69.4 / 86.2", "89.5 / 95.2", "82.6 / 90.7", "–"),
    ("DeiT-B/16 (256×128)", "Baseline", "61.4 / 81.9", "86.6 / 94.4", "78.9 / 89.3", "53.1 / 60.6"),
    ("DeiT-B/16 (256×128)", "TransReID (SIE camera)", "63.9 / 82.7", "88.0 / 94.7", "81.2 / 90.1", "55.6 / 62.8"),
    ("DeiT-B/16 (384×128)", "TransReID (SIE camera)", "65.5 / 83.5", "88.1 / 94.9", "81.3 / 90.2", "–"),
    ("DeiT-B/16 (256×128)", "TransReID* (SIE camera)", "66.2 / 84.3", "88.4 / 95.0", "81.9 / 91.1", "58.1 / 66.4"),
    ("DeiT-B/16 (384×128)", "TransReID* (SIE camera)", "66.3 / 84.5", "88.5 / 95.1", "82.1 / 91.1", "–"),
]
for _backbone, _method, *_cells in _TR_PERSON:
    for _task, _cell in zip(("msmt17", "market1501", "dukemtmc", "occduke"), _cells):
        _put(_task, _method, _cell, order="mAP/R1", source=_TR7, setting="supervised", backbone=_backbone)

_TR_VEHICLE = [
    # backbone, method, VeRi-776 (mAP / R1), VehicleID small test set (R1 / R5)
    ("ViT-B/16", "Baseline", "78.2 / 96.5", "82.3 / 96.1"),
    ("ViT-B/16", "TransReID (SIE view)", "79.6 / 97.0", "83.6 / 97.1"),
    ("ViT-B/16", "TransReID (SIE camera+view)", "80.6 / 96.9", "–"),
    ("ViT-B/16", "TransReID* (SIE view)", "80.5 / 96.8", "85.2 / 97.5"),
    ("ViT-B/16", "TransReID* (SIE camera+view)", "82.0 / 97.1", "–"),
    ("DeiT-B/16", "Baseline", "78.4 / 95.9", "83.1 / 96.8"),
    ("DeiT-B/16", "TransReID (SIE view)", "80.6 / 96.8", "84.6 / 97.4"),
    ("DeiT-B/16", "TransReID (SIE camera+view)", "81.2 / 96.8", "–"),
    ("DeiT-B/16", "TransReID* (SIE view)", "81.4 / 96.8", "85.2 / 97.6"),
    ("DeiT-B/16", "TransReID* (SIE camera+view)", "82.3 / 97.1", "–"),
]
for _backbone, _method, _veri, _vid in _TR_VEHICLE:
    _put("veri776", _method, _veri, order="mAP/R1", source=_TR7, setting="supervised", backbone=_backbone)
    _put("vehicleid@800", _method, _vid, order="R1/R5", source=_TR7, setting="supervised", backbone=_backbone)

_TR8 = "docs/baselines.md §1.8: TransReID paper Table 8 (damo-cv/TransReID figs/ablation.png)"
_TR_ABLATION = [
    # change from the default training setting of the ViT-B/16 baseline, MSMT17, VeRi-776 (mAP / R1)
    ("Baseline, default training", "61.0 / 81.8", "78.2 / 96.5"),
    ("Baseline with Adam", "37.4 / 60.2", "65.8 / 91.7"),
    ("Baseline with AdamW", "60.6 / 81.7", "78.0 / 96.5"),
    ("Baseline without position embedding", "22.4 / 38.3", "68.0 / 92.8"),
    ("Baseline without stochastic depth", "59.9 / 80.2", "77.2 / 96.1"),
    ("Baseline + dropout", "60.0 / 80.7", "78.0 / 96.3"),
    ("Baseline + attention dropout", "58.0 / 78.8", "74.3 / 94.9"),
    ("Baseline, hard-margin triplet", "60.3 / 81.3", "77.5 / 95.6"),
    ("Baseline + label smoothing", "59.8 / 80.4", "77.4 / 96.5"),
]
for _method, _msmt, _veri in _TR_ABLATION:
    for _task, _cell in (("msmt17", _msmt), ("veri776", _veri)):
        _put(_task, _method, _cell, order="mAP/R1", source=_TR8, setting="supervised", backbone="ViT-B/16",
             note="training-setting ablation")

_TR_README = "docs/baselines.md §1.8: damo-cv/TransReID README, reorganized-code results"
_TR_README_ROWS = [
    # method, backbone, MSMT17, Market, Duke, Occ-Duke, VeRi (mAP / R1), VehicleID (R1 / R5)
    ("Baseline", "ViT-B/16", "61.8 / 81.8", "87.1 / 94.6", "79.6 / 89.0", "53.8 / 61.1", "79.0 / 96.6", "83.5 / 96.7"),
    ("TransReID*", "ViT-B/16", "67.8 / 85.3", "89.0 / 95.1", "82.2 / 90.7", "59.5 / 67.4", "82.1 / 97.4",
     "85.2 / 97.4"),
    ("TransReID*", "DeiT-B/16", "66.3 / 84.0", "88.5 / 95.1", "81.9 / 90.7", "57.7 / 65.2", "82.4 / 97.1",
     "86.0 / 97.6"),
]
_TR_README_NOTE = "README re-run of the reorganized code (256 size); slightly different from the paper"
for _method, _backbone, *_cells in _TR_README_ROWS:
    for _task, _cell in zip(("msmt17", "market1501", "dukemtmc", "occduke", "veri776"), _cells):
        _put(_task, _method, _cell, order="mAP/R1", source=_TR_README, setting="supervised", backbone=_backbone,
             note=_TR_README_NOTE)
    _put("vehicleid@800", _method, _cells[-1], order="R1/R5", source=_TR_README, setting="supervised",
         backbone=_backbone, note=_TR_README_NOTE + "; VehicleID test size not stated, taken as the small set (800)")

# --- docs/baselines.md §1b.5: TransReID-SSL --------------------------------------------------------------------------

_SSL_PAPER = "docs/baselines.md §1b.5: damo-cv/TransReID-SSL README, Paper column"
_SSL_REPRODUCED = "docs/baselines.md §1b.5: damo-cv/TransReID-SSL README, Reproduced column"
_SSL = [
    # setting, task, backbone (size), Paper, Reproduced (mAP / R1)
    ("supervised", "market1501", "ViT-S/16 (256×128)", "91.0 / 96.0", "91.2 / 95.8"),
    ("supervised", "market1501", "ViT-S/16+ICS (256×128)", "91.3 / 96.2", "91.4 / 96.2"),
    ("supervised", "market1501", "ViT-B/16+ICS (384×128)", "93.2 / 96.7", "93.1 / 96.6"),
    ("supervised", "msmt17", "ViT-S/16 (256×128)", "66.1 / 84.6", "66.3 / 84.8"),
    ("supervised", "msmt17", "ViT-S/16+ICS (256×128)", "68.1 / 86.1", "68.3 / 86.2"),
    ("supervised", "msmt17", "ViT-B/16+ICS (384×128)", "75.0 / 89.6", "75.1 / 89.6"),
    ("usl", "market1501", "ViT-S/16 (256×128)", "88.2 / 94.2", "88.4 / 94.6"),
    ("usl", "market1501", "ViT-S/16+ICS (256×128)", "89.6 / 95.3", "89.5 / 95.3"),
    ("usl", "msmt17", "ViT-S/16 (256×128)", "40.9 / 66.4", "40.9 / 66.4"),
    ("usl", "msmt17", "ViT-S/16+ICS (256×128)", "50.6 / 75.0", "50.6 / 75.0"),
    ("uda", "msmt17->market1501", "ViT-S/16 (256×128)", "89.4 / 95.4", "89.2 / 95.3"),
    ("uda", "msmt17->market1501", "ViT-S/16+ICS (256×128)", "89.9 / 95.5", "89.9 / 95.4"),
    ("uda", "market1501->msmt17", "ViT-S/16 (256×128)", "47.4 / 70.8", "47.7 / 71.2"),
    ("uda", "market1501->msmt17", "ViT-S/16+ICS (256×128)", "57.8 / 79.5", "57.8 / 79.4"),
]
for _setting, _task, _backbone, _paper, _reproduced in _SSL:
    # USL and UDA are Cluster Contrast on the LUPerson-pretrained ViT (docs/baselines.md §1b.4).
    _note = {"usl": "USL, no source domain; via Cluster Contrast", "uda": "via Cluster Contrast"}.get(_setting, "")
    _put(_task, "TransReID-SSL", _paper, order="mAP/R1", source=_SSL_PAPER, setting=_setting, backbone=_backbone,
         note=_note)
    _put(_task, "TransReID-SSL (reproduced)", _reproduced, order="mAP/R1", source=_SSL_REPRODUCED, setting=_setting,
         backbone=_backbone, note="; ".join(n for n in (_note, "authors' re-run in the README") if n))

# --- docs/baselines.md §2.2: Learn by Guessing (the slides print R-1 / R-5 / R-10 / mAP) -----------------------------

_LBG = "docs/baselines.md §2.2: Learn by Guessing slides (Pereira & de Campos, Feb 2022), results table"
_LBG_ROWS = [
    # method, backbone, note, Market→Duke, Duke→Market
    ("MMT", "", "as quoted in the Learn by Guessing slides", "79.3 / 89.1 / 92.4 / 65.7", "90.9 / 96.4 / 97.9 / 76.5"),
    ("SSG", "", "as quoted in the Learn by Guessing slides", "76.0 / 85.8 / 89.3 / 60.3", "86.2 / 94.6 / 96.5 / 68.7"),
    ("Learn by Guessing", "IBN-Net50-a", "", "82.7 / 90.5 / 93.5 / 69.3", "89.1 / 95.8 / 97.2 / 73.6"),
    ("Learn by Guessing + re-ranking", "IBN-Net50-a", "with re-ranking", "84.8 / 90.8 / 93.2 / 81.2",
     "92.0 / 95.3 / 96.6 / 88.1"),
]
for _method, _backbone, _note, _m2d, _d2m in _LBG_ROWS:
    for _task, _cell in (("market1501->dukemtmc", _m2d), ("dukemtmc->market1501", _d2m)):
        _put(_task, _method, _cell, order="R1/R5/R10/mAP", source=_LBG, backbone=_backbone, note=_note)

# --- docs/baselines.md §3.7: MMT, SpCL, Cluster Contrast, OpenUnReID -------------------------------------------------

_MMT = "docs/baselines.md §3.7: MMT paper (yxgeee/MMT figs/results.png), k-means"
_MMT_DUKE = [
    # backbone, method, Market→Duke, Duke→Market (mAP / R1 / R5 / R10)
    ("ResNet-50", "Pre-trained (source only)", "29.6 / 46.0 / 61.5 / 67.2", "31.8 / 61.9 / 76.4 / 82.2"),
    ("ResNet-50", "MMT-500", "63.1 / 76.8 / 88.0 / 92.2", "71.2 / 87.7 / 94.9 / 96.9"),
    ("ResNet-50", "MMT-700", "65.1 / 78.0 / 88.8 / 92.5", "69.0 / 86.8 / 94.6 / 96.9"),
    ("ResNet-50", "MMT-900", "63.1 / 77.4 / 88.1 / 92.5", "66.2 / 86.8 / 94.9 / 96.6"),
    ("IBN-ResNet-50", "Pre-trained (source only)", "35.4 / 54.0 / 67.7 / 72.9", "35.6 / 65.3 / 79.7 / 84.3"),
    ("IBN-ResNet-50", "MMT-500", "65.7 / 79.3 / 89.1 / 92.4", "76.5 / 90.9 / 96.4 / 97.9"),
    ("IBN-ResNet-50", "MMT-700", "68.7 / 81.8 / 91.2 / 93.4", "74.5 / 91.1 / 96.5 / 98.2"),
    ("IBN-ResNet-50", "MMT-900", "67.3 / 80.8 / 90.3 / 93.0", "72.7 / 91.2 / 96.3 / 98.0"),
]
for _backbone, _method, _m2d, _d2m in _MMT_DUKE:
    _put("market1501->dukemtmc", _method, _m2d, order="mAP/R1/R5/R10", source=_MMT, backbone=_backbone)
    _put("dukemtmc->market1501", _method, _d2m, order="mAP/R1/R5/R10", source=_MMT, backbone=_backbone)

_MMT_MSMT = [
    # backbone, method, Market→MSMT, Duke→MSMT (mAP / R1)
    ("ResNet-50", "Pre-trained (source only)", "7.1 / 19.4", "9.4 / 27.0"),
    ("ResNet-50", "MMT-500", "16.6 / 37.5", "17.9 / 41.3"),
    ("ResNet-50", "MMT-1000", "21.6 / 46.1", "23.5 / 50.0"),
    ("ResNet-50", "MMT-1500", "22.9 / 49.2", "23.3 / 50.1"),
    ("ResNet-50", "MMT-2000", "20.8 / 45.7", "22.4 / 49.0"),
    ("IBN-ResNet-50", "Pre-trained (source only)", "9.5 / 25.3", "11.9 / 32.6"),
    ("IBN-ResNet-50", "MMT-500", "19.6 / 43.3", "23.3 / 50.0"),
    ("IBN-ResNet-50", "MMT-1000", "26.3 / 52.5", "29.7 / 58.8"),
    ("IBN-ResNet-50", "MMT-1500", "26.6 / 54.4", "29.3 / 58.2"),
    ("IBN-ResNet-50", "MMT-2000", "25.1 / 52.7", "28.1 / 56.8"),
]
for _backbone, _method, _m2m, _d2m in _MMT_MSMT:
    _put("market1501->msmt17", _method, _m2m, order="mAP/R1", source=_MMT, backbone=_backbone)
    _put("dukemtmc->msmt17", _method, _d2m, order="mAP/R1", source=_MMT, backbone=_backbone)

_OPENUNREID_ZOO = "docs/baselines.md §3.7: open-mmlab/OpenUnReID docs/MODEL_ZOO.md"
_MMT_PLUS = "OpenUnReID re-implementation (MMT+), DBSCAN, trained end to end from ImageNet"
_put("dukemtmc->market1501", "MMT+ (OpenUnReID)", "80.9 / 92.2 / 97.6 / 98.4", order="mAP/R1/R5/R10",
     source=_OPENUNREID_ZOO, backbone="ResNet-50", note=_MMT_PLUS)
_put("market1501->dukemtmc", "MMT+ (OpenUnReID)", "67.7 / 80.3 / 89.9 / 92.9", order="mAP/R1/R5/R10",
     source=_OPENUNREID_ZOO, backbone="ResNet-50", note=_MMT_PLUS)

_MMT_QUOTED = "docs/baselines.md §3.7: MMT as quoted in the SpCL and Cluster Contrast comparison tables"
_put("msmt17->market1501", "MMT", "75.6 / 89.3 / 95.8 / 97.5", order="mAP/R1/R5/R10", source=_MMT_QUOTED,
     note="quoted by SpCL / Cluster Contrast; MMT variant not stated")
_put("market1501->msmt17", "MMT", "24.0 / 50.1 / 63.5 / 69.3", order="mAP/R1/R5/R10", source=_MMT_QUOTED,
     note="quoted by SpCL / Cluster Contrast; discrepancy with the MMT paper's best 22.9 / 49.2 (ResNet-50): "
          "another MMT variant, probably DBSCAN")

_SPCL_README = "docs/baselines.md §3.7: SpCL README (yxgeee/SpCL figs/results.png)"
_put("market1501->dukemtmc", "SpCL", "68.8 / 82.9 / 90.1 / 92.5", order="mAP/R1/R5/R10",
     source="docs/baselines.md §3.7: SpCL arXiv v1, quoted in OpenUnReID LEADERBOARD.md and the Cluster Contrast "
            "table",
     backbone="ResNet-50", note="arXiv v1 only: Duke was removed from the NeurIPS camera-ready")
_put("dukemtmc->market1501", "SpCL", "76.7 / 90.3 / 96.2 / 97.7", order="mAP/R1/R5/R10",
     source="docs/baselines.md §3.7: OpenUnReID LEADERBOARD.md (copied from the original papers)",
     backbone="ResNet-50")
_SPCL_ROWS = [
    # task, ResNet-50, IBN-ResNet-50 (None: not reported), order
    ("market1501->msmt17", "26.8 / 53.7 / 65.0 / 69.8", "31.0 / 58.1 / 69.6 / 74.1", "mAP/R1/R5/R10"),
    ("msmt17->market1501", "77.5 / 89.7 / 96.1 / 97.6", "79.9 / 92.0 / 97.1 / 98.1", "mAP/R1/R5/R10"),
    ("personx->market1501", "73.8 / 88.0", "77.9 / 90.5", "mAP/R1"),
    ("personx->msmt17", "22.7 / 47.7", "25.4 / 50.6", "mAP/R1"),
    ("vehicleid->veri776", "38.9 / 80.4", None, "mAP/R1"),
    ("vehiclex->veri776", "38.9 / 81.3", None, "mAP/R1"),
]
for _task, _r50, _ibn, _order in _SPCL_ROWS:
    _put(_task, "SpCL", _r50, order=_order, source=_SPCL_README, backbone="ResNet-50")
    if _ibn is not None:
        _put(_task, "SpCL", _ibn, order=_order, source=_SPCL_README, backbone="IBN-ResNet-50")
_USL = "USL, no source domain"
for _task, _cell in (("market1501", "73.1 / 88.1"), ("msmt17", "19.1 / 42.3"), ("veri776", "36.9 / 79.9")):
    _put(_task, "SpCL", _cell, order="mAP/R1", source=_SPCL_README, setting="usl", backbone="ResNet-50", note=_USL)
_put("dukemtmc", "SpCL", "65.3 / 81.2", order="mAP/R1", setting="usl", backbone="ResNet-50", note=_USL,
     source="docs/baselines.md §3.7: Cluster Contrast comparison table and OpenUnReID")
_OPENUNREID_BOARD = "docs/baselines.md §3.7: open-mmlab/OpenUnReID LEADERBOARD.md (SpCL+)"
_put("dukemtmc->market1501", "SpCL+ (OpenUnReID)", "78.2 / 90.5", order="mAP/R1", source=_OPENUNREID_BOARD,
     note="OpenUnReID re-implementation")
_put("market1501->dukemtmc", "SpCL+ (OpenUnReID)", "70.4 / 83.8", order="mAP/R1", source=_OPENUNREID_BOARD,
     note="OpenUnReID re-implementation")

_CC = "docs/baselines.md §3.7: Cluster Contrast paper and README (alibaba/cluster-contrast-reid figs/resultsv2.png)"
_CC_ROWS = [
    # target, DBSCAN, InfoMap (mAP / R1 / R5 / R10; USL, ResNet-50)
    ("market1501", "82.1 / 92.3 / 96.7 / 97.9", "83.0 / 92.9 / 97.2 / 98.0"),
    ("dukemtmc", "72.6 / 84.9 / 91.9 / 93.9", "73.6 / 85.5 / 92.2 / 94.3"),
    ("msmt17", "27.6 / 56.0 / 66.8 / 71.5", "31.2 / 61.5 / 71.8 / 76.7"),
    ("personx", "84.7 / 94.4 / 98.3 / 99.3", "86.6 / 95.3 / 98.8 / 99.5"),
    ("veri776", "40.3 / 84.6 / 89.2 / 91.6", "40.8 / 86.2 / 90.5 / 92.8"),
]
for _task, _dbscan, _infomap in _CC_ROWS:
    _put(_task, "Cluster Contrast (DBSCAN)", _dbscan, order="mAP/R1/R5/R10", source=_CC, setting="usl",
         backbone="ResNet-50", note=_USL)
    _put(_task, "Cluster Contrast (InfoMap)", _infomap, order="mAP/R1/R5/R10", source=_CC, setting="usl",
         backbone="ResNet-50", note=_USL)
_CC_ISSUE = "docs/baselines.md §3.7: alibaba/cluster-contrast-reid issue 11 (maintainer)"
_put("market1501", "Cluster Contrast", "87.0 / 94.6", order="mAP/R1", source=_CC_ISSUE, setting="usl",
     backbone="IBN-ResNet-50a, GeM pooling, hard update", note=_USL + "; maintainer's number in an issue")
_put("market1501", "Cluster Contrast", "84.5 / 93.6", order="mAP/R1", source=_CC_ISSUE, setting="usl",
     backbone="IBN-ResNet-50a, average pooling", note=_USL + "; maintainer's number in an issue")
# Another version of the Cluster Contrast paper, as users quote it; the README figure's values are above.
_put("market1501", "Cluster Contrast", "82.6", order="mAP", setting="usl",
     source="docs/baselines.md §3.7: alibaba/cluster-contrast-reid issue 22, quoting the paper",
     note=_USL + "; discrepancy between paper versions (README figure: 82.1); mAP only")
_put("msmt17", "Cluster Contrast", "33.3", order="mAP", setting="usl",
     source="docs/baselines.md §3.7: alibaba/cluster-contrast-reid issue 14, quoting the paper",
     note=_USL + "; discrepancy between paper versions (README figure: 27.6); mAP only")

# --- docs/baselines.md §4.4: IBN-Net README, re-ID with reid-strong-baseline (printed as "R1 (mAP)") -----------------

_IBN = "docs/baselines.md §4.4: XingangPan/IBN-Net README (numbers from reid-strong-baseline)"
_IBN_ROWS = [
    # backbone, Market, Duke (R1 (mAP))
    ("IBN-Net-a", "95.0 (88.2)", "90.1 (79.1)"),
    ("ResNet-50", "94.5 (85.9)", "86.4 (76.4)"),
]
for _backbone, _market, _duke in _IBN_ROWS:
    _put("market1501", "reid-strong-baseline", _market, order="R1 (mAP)", source=_IBN, setting="supervised",
         backbone=_backbone)
    _put("dukemtmc", "reid-strong-baseline", _duke, order="R1 (mAP)", source=_IBN, setting="supervised",
         backbone=_backbone)

PUBLISHED: tuple[PublishedResult, ...] = tuple(_records)
"""Every transcribed record, in the order of the source notes."""

_TASKS = frozenset(r.task for r in PUBLISHED)


# ---------------------------------------------------------------------------------------------------------------
# Task names

_DATASET_ALIASES = {
    "market1501": ("market1501", "market"),
    "cuhk03np": ("cuhk03np", "cuhk03", "cuhk"),
    "msmt17": ("msmt17v1", "msmt17", "msmt"),
    "dukemtmc": ("dukemtmcreid", "dukemtmc", "duke"),
    "veri776": ("veri776", "veri"),
    "vehicleid": ("vehicleid",),
    "veriwild": ("veriwild",),
    "occduke": ("occludeddukemtmc", "occludedduke", "occduke"),
    "personx": ("personx",),
    "vehiclex": ("vehiclex",),
}
"""Canonical dataset name -> its spellings once lower-cased and stripped of spaces, ``-``, ``_`` and ``.``."""

_ALIASES = sorted(((alias, name) for name, aliases in _DATASET_ALIASES.items() for alias in aliases),
                  key=lambda pair: -len(pair[0]))  # longest first: "veri776" and "veriwild" before "veri"

TEST_SIZES: dict[str, tuple[int, ...]] = {"vehicleid": (800, 1600, 2400), "veriwild": (3000, 5000, 10000)}
"""The test sizes the published tables report, the first being the loader's default ``test_size``."""

_SIZE_WORDS = {"small": 0, "medium": 1, "large": 2}  # VehicleID / VERI-Wild's Small / Medium / Large test sets


def _dataset(text: str, *, tested: bool = True) -> Optional[str]:
    """Canonical dataset name of ``text``; None if unreadable.

    A dataset that is ``tested`` on (a target, or the one dataset of a USL / supervised task) carries
    its test size when it is VehicleID or VERI-Wild (``vehicleid@800``); a source is trained on, so it
    has none and a size given for it is refused.
    """
    t = text.strip().lower()
    size: Optional[int] = None
    # The workbench labels options in brackets ("vehicleid (test_size=1600)", "cuhk03np (subset=labeled)"):
    # only the test size names a different published table; other options are ignored.
    for opts in re.findall(r"\(([^)]*)\)", t):
        found = re.search(r"test_?size\s*=\s*(\d+)", opts) or re.fullmatch(r"\s*(?:test\s*)?(\d+)\s*", opts)
        if found:
            size = int(found.group(1))
    squashed = re.sub(r"[\s\-_.]", "", re.sub(r"\([^)]*\)", "", t))
    for alias, name in _ALIASES:
        if not squashed.startswith(alias):
            continue
        rest = squashed[len(alias):]
        if name not in TEST_SIZES or not tested:
            return name if not rest and size is None else None
        sizes = TEST_SIZES[name]
        if rest:
            found = re.fullmatch(r"@?(?:test)?(\d+)", rest)
            given = int(found.group(1)) if found else (sizes[_SIZE_WORDS[rest]] if rest in _SIZE_WORDS else None)
            if given is None or (size is not None and size != given):
                return None
            size = given
        size = sizes[0] if size is None else size
        return f"{name}@{size}" if size in sizes else None
    return None


def canonical_task(task: str) -> str:
    """The canonical name of ``task`` (``"Market→CUHK03"`` -> ``"market1501->cuhk03np"``).

    Case-insensitive; ``→`` or ``->`` between source and target; a dataset alone for USL and supervised
    results. Raises :class:`~corelib.errors.UnknownNameError` naming the known tasks when a name cannot
    be read or no published record has that task.
    """
    if not isinstance(task, str):
        raise InvalidInputError(f"a task is a string such as 'market1501->cuhk03np', not {type(task).__name__}")
    parts = task.replace("→", "->").split("->")
    names = [_dataset(p, tested=i == len(parts) - 1) for i, p in enumerate(parts)]
    canonical = "->".join(names) if len(parts) <= 2 and None not in names else None
    if canonical not in _TASKS:
        read = f" (read as {canonical!r})" if canonical else ""
        raise UnknownNameError(f"no published results for task {task!r}{read}; known tasks: {', '.join(list_tasks())}")
    return canonical


def list_tasks(setting: Optional[str] = None) -> list[str]:
    """The canonical tasks with published records (of ``setting`` only, when given), in source order."""
    _check_setting(setting)
    return list(dict.fromkeys(r.task for r in PUBLISHED if setting is None or r.setting == setting))


def list_methods(task: Optional[str] = None) -> list[str]:
    """The method names with published records (on ``task`` only, when given), in source order."""
    wanted = canonical_task(task) if task is not None else None
    return list(dict.fromkeys(r.method for r in PUBLISHED if wanted is None or r.task == wanted))


def _check_setting(setting: Optional[str]) -> None:
    if setting is not None and setting not in SETTINGS:
        raise InvalidInputError(f"unknown setting {setting!r}; valid settings: {', '.join(SETTINGS)}")


def published_results(task: Optional[str] = None, method: Optional[str] = None,
                      setting: Optional[str] = None) -> list[PublishedResult]:
    """The published records, optionally of one task, method and setting.

    Args:
        task: any spelling :func:`canonical_task` reads; an unknown one raises
            :class:`~corelib.errors.UnknownNameError` naming the known tasks.
        method: case-insensitive part of the method name (``"spcl"`` finds ``SpCL`` and
            ``SpCL+ (OpenUnReID)``); one that no record has raises ``UnknownNameError`` naming the methods.
        setting: ``uda``, ``usl`` or ``supervised``.

    A filter that matches records on its own but none together with the others gives an empty list.
    """
    _check_setting(setting)
    wanted = canonical_task(task) if task is not None else None
    if method is not None:
        needle = method.strip().lower()
        if not any(needle in r.method.lower() for r in PUBLISHED):
            raise UnknownNameError(f"no published results for method {method!r}; known methods: "
                                   f"{', '.join(list_methods())}")
    return [r for r in PUBLISHED
            if (wanted is None or r.task == wanted) and (setting is None or r.setting == setting)
            and (method is None or method.strip().lower() in r.method.lower())]


__all__ = ["METRIC_FIELDS", "PUBLISHED", "PublishedResult", "SETTINGS", "TEST_SIZES", "canonical_task", "list_methods",
           "list_tasks", "published_results"]
