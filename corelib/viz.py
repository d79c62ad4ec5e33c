"""Plotting functions: each builds and returns a matplotlib Figure, never saves or shows it.

Saving goes through :mod:`corelib.outputs` (PNG + PDF + sidecar); :func:`style` fixes fonts, DPI
and colours once so that every figure of a thesis looks the same.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from .data.dataset import ReIDDataset, read_image
from .errors import InvalidInputError


def style() -> None:
    """Apply the workbench's figure style (call once per notebook, in the setup cell)."""
    plt.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "image.interpolation": "nearest",
    })


def camera_rows(
    dataset: ReIDDataset,
    *,
    split: str = "train",
    per_camera: int = 6,
    max_cameras: Optional[int] = None,
    label: str = "",
) -> list[tuple[str, list[Image.Image]]]:
    """Rows of images, one per camera, the same identities in the same columns where possible.

    Identities seen by the most cameras are picked first, so reading down a column shows how one
    identity looks through different cameras (a blank cell: that camera never saw it).
    """
    items = dataset.split(split)
    if not items:
        raise InvalidInputError(f"{dataset.name}: split {split!r} is empty")
    by_pid_cam: dict = {}
    for s in items:
        by_pid_cam.setdefault(s.pid, {}).setdefault(s.camid, []).append(s)
    cams = sorted({s.camid for s in items}, key=lambda c: -1 if c is None else c)[:max_cameras]
    # the identities covering most of the shown cameras, ties broken by pid (deterministic)
    pids = sorted(by_pid_cam, key=lambda p: (-sum(c in by_pid_cam[p] for c in cams), p))[:per_camera]
    blank = Image.new("RGB", (4, 4), (255, 255, 255))
    rows = []
    for cam in cams:
        imgs = [read_image(by_pid_cam[p][cam][0].path) if cam in by_pid_cam[p] else blank for p in pids]
        cam_label = "no camera" if cam is None else f"cam {cam + 1}"
        rows.append((f"{label}\n{cam_label}" if label else cam_label, imgs))
    return rows


def camera_grid(dataset: ReIDDataset, *, split: str = "train", per_camera: int = 6,
                max_cameras: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """One dataset split as a grid: rows are cameras, columns identities (see :func:`camera_rows`)."""
    rows = camera_rows(dataset, split=split, per_camera=per_camera, max_cameras=max_cameras)
    return samples_overview(rows, title=title or f"{dataset.name}: {split} split, columns = identities")


def samples_overview(rows: Sequence[tuple[str, Sequence[Image.Image]]], *, ncols: Optional[int] = None,
                     title: Optional[str] = None, column_titles: Optional[Sequence[str]] = None) -> Figure:
    """A labelled grid: one row per (label, images) pair, images shown at their aspect ratio; a
    ``None`` image leaves its cell empty with "n/a" in it (e.g. a branch the network lacks)."""
    ncols = ncols or max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(ncols * 0.95, len(rows) * 1.25), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if c < len(imgs) and imgs[c] is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=7, color="0.5", transform=ax.transAxes)
            elif c < len(imgs):
                ax.imshow(imgs[c])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    for c, text in enumerate(column_titles or ()):
        axes[0][c].set_title(text, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def split_counts(stats: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Figure:
    """Bar charts of images and identities per split for several datasets (``{name: ds.stats()}``)."""
    names = list(stats)
    splits = ("train", "query", "gallery")
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    x = np.arange(len(names))
    width = 0.26
    for ax, key in zip(axes, ("images", "ids")):
        for i, split in enumerate(splits):
            vals = [stats[n][split][key] for n in names]
            bars = ax.bar(x + (i - 1) * width, vals, width, label=split)
            ax.bar_label(bars, fontsize=6, padding=1)
        ax.set_xticks(x, names, rotation=15, ha="right")
        ax.set_title(f"{key} per split")
    axes[0].legend()
    fig.tight_layout()
    return fig


def _series(history: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    """Epochs and values of ``key`` in a per-epoch history, skipping epochs that lack it."""
    pts = [(h["epoch"], h[key]) for h in history if isinstance(h.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def training_curves(history: Sequence[Mapping], *, losses: Sequence[str] = ("loss",),
                    scores: Mapping[str, str] = {"source_mAP": "source mAP"},
                    baselines: Optional[Mapping[str, float]] = None, title: str = "") -> Figure:
    """Loss terms per epoch (left) and retrieval scores per epoch in % (right).

    Args:
        history: one mapping per epoch with an ``epoch`` key (``metrics.jsonl`` of a run).
        losses: history keys drawn on the left.
        scores: ``{history key: legend label}`` drawn on the right (fractions, shown in %).
        baselines: ``{label: fraction}`` drawn as dashed horizontal lines on the right
            (e.g. the direct-transfer mAP).
    """
    fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(8, 2.9))
    for key in losses:
        ax_l.plot(*_series(history, key), marker=".", label=key)
    ax_l.set_xlabel("epoch")
    ax_l.set_title("training loss")
    ax_l.legend(fontsize=7)
    for i, (key, label) in enumerate(scores.items()):
        x, y = _series(history, key)
        ax_s.plot(x, [100 * v for v in y], marker="o", color=f"C{i}", label=label)
    for j, (label, value) in enumerate((baselines or {}).items()):
        ax_s.axhline(100 * value, ls="--", lw=1, color=f"C{len(scores) + j}", label=label)
    ax_s.set_xlabel("epoch")
    ax_s.set_ylabel("%")
    ax_s.set_title("retrieval")
    ax_s.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pseudo_label_quality(history: Sequence[Mapping], *, branches: Sequence[str] = ("global", "top", "bottom"),
                         title: str = "") -> Figure:
    """Per epoch and branch: NMI and ARI of the pseudo-labels against the hidden identities, and
    the fraction of clusters that span two or more cameras (``camera_mixing_*``)."""
    panels = [("nmi", "NMI"), ("ari", "ARI"), ("camera_mixing", "clusters spanning cameras")]
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), sharex=True)
    for ax, (metric, label) in zip(axes, panels):
        for b in branches:
            ax.plot(*_series(history, f"{metric}_{b}"), marker="o", label=b)
        ax.set_xlabel("epoch (clustering at its start)")
        ax.set_title(label)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def score_bars(results: Mapping[str, Mapping[str, float]], *,
               keys: Sequence[str] = ("mAP", "rank1", "rank5", "rank10"), title: str = "") -> Figure:
    """Grouped bars of retrieval scores in % for several models (``{label: metrics}``)."""
    labels = list(results)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(keys), 2.8))
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        vals = [100 * float(results[label].get(k, np.nan)) for k in keys]
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, vals, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(x, [k.replace("rank", "R-") for k in keys])
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def style_gap_bars(rows: Sequence[Mapping], *, title: Optional[str] = None) -> Figure:
    """Colour gap before vs after translation per direction (rows of :func:`corelib.style.style_gap`)."""
    labels = [f"{r['from']}→{r['to']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.42 * len(rows) + 1.5), 2.8))
    ax.bar(x - 0.2, [r["before"] for r in rows], 0.4, label="real X vs real Y (before)", color="0.6")
    ax.bar(x + 0.2, [r["after"] for r in rows], 0.4, label="X translated to Y vs real Y (after)", color="C0")
    ax.set_xticks(x, labels, rotation=60 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else "center", fontsize=7)
    ax.set_ylabel("Fréchet distance of\ncolour statistics")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


INIT_COLOURS = {"greedy_kmeans++": "C0", "kmeans++": "C2", "random": "C3"}


def inertia_curves(runs: Sequence[Mapping], *, title: Optional[str] = None) -> Figure:
    """Mean k-means inertia per Lloyd iteration for each seeding (runs of
    :func:`corelib.cluster.compare_inits`); iteration 1 is the assignment to the seeds, the band
    spans the seeds' minimum to maximum, and a dot marks where the runs stopped on average."""
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for init in dict.fromkeys(r["init"] for r in runs):
        mine = [r for r in runs if r["init"] == init]
        curves = [list(r["inertia_history"]) for r in mine]
        n = max(len(c) for c in curves)
        arr = np.asarray([c + [c[-1]] * (n - len(c)) for c in curves])  # a stopped run keeps its inertia
        colour = INIT_COLOURS.get(init)
        x = np.arange(1, n + 1)
        ax.plot(x, arr.mean(0), label=init, color=colour)
        ax.fill_between(x, arr.min(0), arr.max(0), alpha=0.15, color=colour)
        stop = float(np.mean([len(r["inertia_history"]) for r in mine]))
        ax.plot([stop], [np.interp(stop, x, arr.mean(0))], "o", color=colour, ms=4)
    ax.set_xlabel("Lloyd iteration (1 = assignment to the seeds; dot = mean stop)")
    ax.set_ylabel("inertia")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def init_comparison(summary: Sequence[Mapping], *, title: Optional[str] = None) -> Figure:
    """Iterations to converge, NMI against the identities and run-to-run stability (ARI between
    seeds) per seeding (rows of :func:`corelib.cluster.summarize_inits`); bars are seed means,
    whiskers one standard deviation."""
    panels = [("n_iter", "Lloyd iterations"), ("nmi", "NMI vs identities"), ("stability", "stability (ARI between seeds)")]
    panels = [p for p in panels if p[0] in summary[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
    axes = np.atleast_1d(axes)
    names = [s["init"] for s in summary]
    for ax, (key, label) in zip(axes, panels):
        vals = [s[key] for s in summary]
        errs = [s.get(f"{key}_std", 0.0) for s in summary]
        bars = ax.bar(range(len(names)), vals, yerr=errs, capsize=3,
                      color=[INIT_COLOURS.get(n, "0.5") for n in names])
        ax.bar_label(bars, fmt="%.2f" if key != "n_iter" else "%.1f", fontsize=7, label_type="center", color="white")
        ax.set_xticks(range(len(names)), [n.replace("_kmeans++", "\nk-means++") for n in names], fontsize=7)
        ax.set_title(label, fontsize=9)
        if key != "n_iter":
            ax.set_ylim(0, 1.05)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def k_sweep(rows: Sequence[Mapping], *, true_k: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """NMI and ARI of the pseudo-labels against the identities as k varies, one line per seeding
    (rows with ``k``, ``init``, ``nmi``, ``ari``); a dashed line marks the true number of identities."""
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8))
    for ax, key in zip(axes, ("nmi", "ari")):
        for init in dict.fromkeys(r["init"] for r in rows):
            mine = sorted((r for r in rows if r["init"] == init), key=lambda r: r["k"])
            ax.plot([r["k"] for r in mine], [r[key] for r in mine], "o-", label=init, color=INIT_COLOURS.get(init), ms=3)
        if true_k:
            ax.axvline(true_k, ls="--", color="0.5", lw=1)
        ax.set_xlabel("k (dashed: true number of identities)" if true_k else "k")
        ax.set_ylabel(key.upper())
    axes[0].legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


MATCH_COLOURS = {True: "#1a9850", False: "#d73027"}  # green: same identity, red: another one


def rank_list(rows: Sequence[Mapping], *, title: Optional[str] = None) -> Figure:
    """Rank lists, one per row: the query (blue frame), then its top-k gallery images with a green
    frame and ✓ for a correct match, a red frame and ✗ for a wrong one, and the similarity.

    Each row is a mapping with ``label``, ``query`` (image), ``gallery`` (images), ``correct``
    (bools) and ``scores`` (floats), and optionally ``captions`` (a second title line per gallery
    image, e.g. its pid and camera); :func:`corelib.explain.rank_list_row` builds it.
    """
    k = max(len(r["gallery"]) for r in rows)
    fig, axes = plt.subplots(len(rows), k + 1, figsize=((k + 1) * 0.95 + 0.6, len(rows) * 1.45), squeeze=False)
    for i, row in enumerate(rows):
        cells = [(row["query"], "#2166ac", "query")] + [
            (img, MATCH_COLOURS[bool(ok)], f"{'✓' if ok else '✗'} {s:.2f}" + (f"\n{c}" if c else ""))
            for img, ok, s, c in zip(row["gallery"], row["correct"], row["scores"],
                                     row.get("captions") or [None] * len(row["gallery"]))]
        for j in range(k + 1):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            if j >= len(cells):
                ax.set_axis_off()
                continue
            img, colour, text = cells[j]
            ax.imshow(img)
            for sp in ax.spines.values():
                sp.set_visible(True), sp.set_color(colour), sp.set_linewidth(2.5)
            ax.set_title(text, fontsize=7, color=colour, pad=2)
        axes[i][0].set_ylabel(row["label"], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if title else None)  # room for the title
    return fig


PAIR_KIND_STYLES = {"same id, same camera": ("C2", "--"), "same id, cross camera": ("C2", "-"),
                    "different id, same camera": ("C3", "--"), "different id, cross camera": ("C3", "-")}


def similarity_histograms(hists: Mapping[str, object], *, title: Optional[str] = None) -> Figure:
    """One panel per stage (``{"before adaptation": SimilarityHistograms, ...}``): the density of
    pairwise cosine similarity for the four kinds of pairs; dashed = same camera (or view: the
    histograms' ``side``), green = same identity. The gap between the two red curves is the camera
    (view) bias."""
    fig, axes = plt.subplots(1, len(hists), figsize=(3.6 * len(hists), 2.9), sharey=False, squeeze=False)
    for ax, (name, h) in zip(axes[0], hists.items()):
        centres = (h.edges[:-1] + h.edges[1:]) / 2
        width = h.edges[1] - h.edges[0]
        for kind, counts in h.counts.items():
            if counts.sum() == 0:
                continue
            colour, ls = PAIR_KIND_STYLES[kind]
            ax.plot(centres, counts / counts.sum() / width, color=colour, ls=ls, lw=1.2,
                    label=f"{h.kind_label(kind)} (mean {h.means[kind]:.2f})")
        occupied = np.flatnonzero(sum(h.counts.values()) > 0)
        if len(occupied):  # the occupied part of [-1, 1], with a margin
            pad = 3 * width
            ax.set_xlim(max(-1.0, h.edges[occupied[0]] - pad), min(1.0, h.edges[occupied[-1] + 1] + pad))
        ax.set_title(f"{name}\n{h.side} gap {h.gap:+.3f}", fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.set_ylabel("density")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.5)  # headroom for the legend
        ax.legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def umap_panels(points: Mapping[str, np.ndarray], colourings: Mapping[str, Mapping[str, Sequence]], *,
                title: Optional[str] = None, legend_max: int = 12) -> Figure:
    """A grid of 2-D scatter plots: rows are projections (``{"before adaptation": (N, 2), ...}``),
    columns colourings (``{row: {"camera": labels, ...}}``, one label per point; ``None`` or -1
    draws the point light grey, e.g. source images when colouring target cameras). Legends are
    drawn when a colouring has at most ``legend_max`` values; identities and clusters get cycled
    tab20 colours and no legend."""
    rows = list(points)
    cols = list(next(iter(colourings.values())))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.7 * len(cols), 2.6 * len(rows)), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for i, row in enumerate(rows):
        xy = np.asarray(points[row])
        for j, col in enumerate(cols):
            ax = axes[i][j]
            labels = list(colourings[row][col])
            grey = np.asarray([lab is None or (isinstance(lab, (int, np.integer)) and lab < 0) for lab in labels])
            ax.scatter(xy[grey, 0], xy[grey, 1], s=2, c="0.85", linewidths=0)
            values = sorted({lab for lab, g in zip(labels, grey) if not g}, key=str)
            index = {v: n for n, v in enumerate(values)}
            few = len(values) <= legend_max
            for v in values if few else [None]:
                sel = ~grey & (np.asarray([lab == v for lab in labels]) if few else True)
                colour = [cmap(index[v] % 20)] if few else [cmap(index[lab] % 20) for lab, g in zip(labels, grey) if not g]
                ax.scatter(xy[sel, 0], xy[sel, 1], s=3, c=colour, linewidths=0, label=str(v) if few else None)
            if few and len(values) > 1:
                ax.legend(fontsize=6, markerscale=3, loc="best", handletextpad=0.2, borderpad=0.2)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{col}" + ("" if few else f" ({len(values)} values)"), fontsize=9)
        axes[i][0].set_ylabel(row, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def cluster_size_histogram(sizes: Mapping[str, np.ndarray], *, title: Optional[str] = None) -> Figure:
    """How many clusters have each size, one outline per labeling (``{"true identities": sizes,
    "pseudo-labels (after)": sizes, ...}``, sizes from :func:`corelib.feature_space.cluster_sizes`)."""
    fig, ax = plt.subplots(figsize=(4.6, 2.9))
    top = max(int(np.max(s)) for s in sizes.values() if len(s))
    edges = np.arange(0.5, top + 1.5, max(1, int(np.ceil(top / 40))))
    for n, (name, s) in enumerate(sizes.items()):
        ax.hist(s, bins=edges, histtype="step", lw=1.4, color=f"C{n}",
                label=f"{name}: {len(s)} groups, median size {np.median(s):.0f}")
    ax.set_xlabel("images per cluster")
    ax.set_ylabel("clusters")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.45)  # headroom for the legend
    ax.legend(fontsize=7, loc="upper right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def image_gallery(images: Sequence[Image.Image], captions: Sequence[str], *, colours: Optional[Sequence[str]] = None,
                  columns: int = 8, title: Optional[str] = None) -> Figure:
    """Images in rows of ``columns``, each with a caption (and a frame in ``colours``, when given)."""
    if not images:
        raise InvalidInputError("no images to show")
    nrows = -(-len(images) // columns)
    ncols = min(columns, len(images))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.95, nrows * 1.4), squeeze=False)
    for n, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if n >= len(images):
            ax.set_axis_off()
            continue
        ax.imshow(images[n])
        colour = colours[n] if colours else "0.3"
        for sp in ax.spines.values():
            sp.set_visible(colours is not None), sp.set_color(colour), sp.set_linewidth(2)
        ax.set_title(captions[n], fontsize=7, color=colour, pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _bar_pairs(ax, labels: Sequence[str], left: tuple, right: tuple) -> None:
    """Two labelled bars per x position; ``left`` / ``right`` are ``(values in %, legend, colour)``."""
    x = np.arange(len(labels))
    for (values, name, colour), shift in ((left, -0.2), (right, 0.2)):
        ax.bar_label(ax.bar(x + shift, values, 0.4, label=name, color=colour), fmt="%.1f", fontsize=7)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, max(max(left[0]), max(right[0])) * 1.25)
    ax.legend(fontsize=7, loc="upper left")


def adaptation_bars(table, *, title: Optional[str] = None) -> Figure:
    """Target mAP of direct transfer and after adaptation, per run and task (rows of
    :func:`corelib.results.adaptation_table`)."""
    labels = [f"{r['run']}\n{r['task']}" for _, r in table.iterrows()]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 1.0), 3.0))
    _bar_pairs(ax, labels, (table["direct mAP"], "direct transfer", "0.6"), (table["adapted mAP"], "adapted (CORE-ReID V2)", "C0"))
    ax.set_ylabel("target mAP (%)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def sweep_bars(table, keys: Sequence[str], *, title: Optional[str] = None) -> Figure:
    """Target mAP and R-1 after adaptation at each sweep point (rows of
    :func:`corelib.results.sweep_table`), one panel per task; each point is named by its grid values."""
    def named(v) -> bool:
        return v is not None and not (isinstance(v, float) and np.isnan(v))

    def value(v) -> str:  # pandas stores an int grid column as float when some runs lack it
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    tasks = list(dict.fromkeys(table["task"]))
    if not tasks:
        raise InvalidInputError("the sweep table is empty: no sweep point has finished chapters 02 and 03")
    width = max(len(table[table["task"] == t]) for t in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(len(tasks) * max(3.2, 1.0 * width + 1.2), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = table[table["task"] == task]
        labels = ["\n".join(f"{k.split('.')[-1]}={value(r[k])}" for k in keys if named(r[k])) or str(r["run"])
                  for _, r in sub.iterrows()]
        _bar_pairs(ax, labels, (sub["mAP"], "mAP", "C0"), (sub["R-1"], "R-1", "C1"))
        ax.set_ylabel("target score after adaptation (%)")
        ax.set_title(task, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _legend_beside(fig: Figure, legend_ax, title: str) -> Figure:
    """Title, tight layout, then one legend (``legend_ax``'s entries) beside the panels: with a dozen
    methods a legend inside a panel hides the curves."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    handles, labels = legend_ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def baseline_curves(runs: Mapping[str, object], *, oracle: Optional[str] = "supervised_oracle",
                    title: str = "") -> Figure:
    """Per method (``{recipe: BaselineRun}`` of :func:`corelib.baselines.run_baselines`): target
    mAP per epoch in %, epoch 0 being its source network (direct transfer), with the oracle dotted;
    the number of clusters and the NMI of the global pseudo-labels per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.0))
    ax_map, ax_k, ax_nmi = axes
    for i, (name, run) in enumerate(runs.items()):
        style = {"ls": ":", "color": "0.3"} if name == oracle else {"color": f"C{i}"}
        x, y = _series(run.history, "target_mAP")
        if "mAP" in run.direct:
            x, y = [0, *x], [run.direct["mAP"], *y]
        ax_map.plot(x, [100 * v for v in y], marker="o", ms=3, label=name, **style)
        if name != oracle:
            ax_k.plot(*_series(run.history, "clusters_global"), marker="o", ms=3, label=name, **style)
            ax_nmi.plot(*_series(run.history, "nmi_global"), marker="o", ms=3, label=name, **style)
    ax_map.set_title("target mAP (epoch 0: direct transfer)")
    ax_map.set_ylabel("%")
    ax_k.set_title("clusters (global level)")
    ax_nmi.set_title("NMI of the pseudo-labels")
    ax_nmi.set_ylim(0, 1)
    from matplotlib.ticker import MaxNLocator  # lazy: plotting only

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    return _legend_beside(fig, ax_map, title)


def gap_closed_bars(rows: Sequence[Mapping], *, title: Optional[str] = None) -> Figure:
    """Share of the direct -> oracle gap each method closes, per pair (rows of
    :func:`corelib.baselines.baseline_table`; the oracle rows and rows without a gap are left out)."""
    rows = [r for r in rows if r.get("gap closed") is not None]
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if not rows:
        raise InvalidInputError("no row with a gap to close: the oracle must beat direct transfer")
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(pairs) * max(1, len(methods)) / 2 + 1.5), 3.0))
    x = np.arange(len(pairs))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        vals = [next((100 * r["gap closed"] for r in rows if r["pair"] == p and r["method"] == m), np.nan)
                for p in pairs]
        ax.bar_label(ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=m, color=f"C{i}"),
                     fmt="%.0f", fontsize=6, padding=1)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, pairs)
    ax.set_ylabel("gap closed (%)")
    ax.legend(fontsize=6)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


ORIENTATION_PANELS = (("mAP",), ("view gap", "same-id view gap"), ("nearest wrong, same view",))
"""The columns of chapter 09's rows that :func:`orientation_bars` draws, one panel per tuple."""
ORIENTATION_LABELS = {"mAP": "target mAP (%)", "view gap": "different ids: same view - other view",
                      "same-id view gap": "same id: same view - other view",
                      "nearest wrong, same view": "nearest wrong match\nfrom the query's view (%)"}


def orientation_bars(rows: Sequence[Mapping], *, title: Optional[str] = None) -> Figure:
    """Chapter 09 for one pair: bars per network (rows of ``{"network", "mAP", "view gap",
    "same-id view gap", "nearest wrong, same view", "chance"}``) in three panels: target mAP; the
    view gaps (mean similarity from the same view minus from other views, of pairs of different
    identities and of the same identity); the share of queries whose nearest wrong match shares
    their view (dotted: ``chance``, what a match blind to orientation gives). A missing value (None)
    leaves its bar out."""
    if not rows:
        raise InvalidInputError("orientation_bars needs at least one row")
    names = [r["network"] for r in rows]
    fig, axes = plt.subplots(1, len(ORIENTATION_PANELS), figsize=(3.4 * len(ORIENTATION_PANELS), 3.3), squeeze=False)
    x = np.arange(len(rows))
    for ax, keys in zip(axes[0], ORIENTATION_PANELS):
        width = 0.8 / len(keys)
        for j, key in enumerate(keys):
            vals = [np.nan if r.get(key) is None else float(r[key]) for r in rows]
            colours = [f"C{i}" for i in range(len(rows))] if len(keys) == 1 else f"C{j}"
            bars = ax.bar(x + (j - (len(keys) - 1) / 2) * width, vals, width, color=colours,
                          label=ORIENTATION_LABELS[key] if len(keys) > 1 else None)
            ax.bar_label(bars, fmt="%.3f" if "gap" in key else "%.1f", fontsize=5 if len(keys) > 1 else 6, padding=1)
        if keys == ("nearest wrong, same view",):
            chance = [r.get("chance") for r in rows if r.get("chance") is not None]
            if chance:
                ax.axhline(float(np.mean(chance)), color="0.3", ls=":", lw=1.0, label="chance")
        if len(keys) > 1 or keys == ("nearest wrong, same view",):
            ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # headroom: the legend sits above the bars
            ax.legend(fontsize=6, loc="upper left")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=7)
        ax.set_ylabel(ORIENTATION_LABELS[keys[0]] if len(keys) == 1 else "view gap (cosine similarity)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def budget_curves(summary, pair: str, *, oracle: str = "supervised_oracle", title: str = "") -> Figure:
    """The budget study of one pair (rows of :func:`corelib.budget_study.study_summary`): target mAP
    against optimiser steps, from each run's start at step 0 (the oracle dotted), and the share of the
    start -> oracle gap closed against steps and against fine-tuning seconds (0 at the start, by
    definition); each line the mean over the seeds, its band ± one standard deviation (none with one seed)."""
    rows = summary[summary["pair"] == pair]
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.2))
    ax_map, ax_steps, ax_sec = axes
    for i, (recipe, r) in enumerate(rows.groupby("recipe", sort=False)):
        r = r.sort_values("steps")
        style = {"ls": ":", "color": "0.3"} if recipe == oracle else {"color": f"C{i}"}
        x = np.array([0, *r["steps"]])
        m = np.array([r["start mAP"].iloc[0], *r["mAP"]])
        s = np.array([0.0, *r["mAP std"].fillna(0)])
        ax_map.plot(x, m, marker="o", ms=3, label=recipe, **style)
        ax_map.fill_between(x, m - s, m + s, alpha=0.15, color=style["color"], lw=0)
        if recipe == oracle:
            continue
        g = np.array([0.0, *(100 * r["gap closed"])])
        gs = np.array([0.0, *(100 * r["gap closed std"].fillna(0))])
        for ax, xs in ((ax_steps, x), (ax_sec, np.array([0.0, *r["seconds"]]))):
            ax.plot(xs, g, marker="o", ms=3, **style)
            ax.fill_between(xs, g - gs, g + gs, alpha=0.15, color=style["color"], lw=0)
    ax_map.set_title("target mAP (%), step 0: start")
    ax_steps.set_title("gap closed (%)")
    ax_sec.set_title("gap closed (%) against time")
    for ax in (ax_steps, ax_sec):
        ax.axhline(0, color="0.3", lw=0.8)
        ax.axhline(100, color="0.3", lw=0.8, ls=":")  # the oracle
    for ax in (ax_map, ax_steps):
        ax.set_xlabel("optimiser steps")
    ax_sec.set_xlabel("fine-tuning seconds (mean over seeds)")
    return _legend_beside(fig, ax_map, title)
