"""Interactive explorers for JupyterLab (ipywidgets): rank lists with Grad-CAM, clusters.

Both explorers render with :mod:`corelib.viz` into an ``ipywidgets.Image`` (PNG) shown at its
natural size, so they work in any front end that shows widgets and can be built and driven without
one (the tests set the controls' values and read the rendered image). Each covers every pair it is
given (a ``pair`` menu), steps through its queries or clusters with previous / next buttons, shows
the valid range, and says "computing…" while it re-renders.

Where no widget front end will draw them they render statically: the current view as an image with
its description (:meth:`_Explorer.static_html`). ``corelib run-notebooks`` (``make demo``) asks for
that through ``COREREID_WIDGETS=static`` (:func:`corelib.progress.headless_environment`), so the
executed copies and the HTML report show the view rather than a widget's text repr. In the lab,
``make lab`` turns on the widget manager's *save widget state* setting, so a notebook saved there
and reopened without its kernel shows each explorer's last view.

Example::

    views = {pair: RankListView.from_model(trained, target, device="cpu")}
    RankListExplorer(views, topk=5)       # pick a pair and a query, toggle the overlays, the branch
    ClusterExplorer({pair: (target.train, pseudo_labels)})
"""

from __future__ import annotations

import base64
import html
import io
import re
import struct
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from . import viz
from .data.dataset import ReIDDataset, Sample, read_image
from .data.transforms import build_transforms
from .errors import InvalidInputError, UnknownNameError
from .explain import BRANCHES, explain_rank_list, has_branch, identity_caption, rank_list_row, rank_lists
from .features import Features
from .progress import static_widgets
from .training.analysis import analysis_features

DPI = 150
"""Pixels per inch of the rendered views: thumbnails of 64-pixel-high images at a readable size."""


def _png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed (widgets re-render often)."""
    import matplotlib.pyplot as plt  # lazy: plotting only

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels, read from the PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise InvalidInputError("not a PNG image")
    return struct.unpack(">II", png[16:24])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


class _Explorer:
    """What both explorers share: the pair menu, a stepper (previous / next, the valid range), the
    busy state, the natural-size image and the static rendering."""

    widget: object
    kind: str = "explorer"

    def _build(self, pairs: Sequence[str], pair: Optional[str], selector, extra_controls: Sequence) -> None:
        import ipywidgets as w  # lazy: the widget stack, needed only in JupyterLab

        if not pairs:
            raise InvalidInputError(f"the {self.kind} has nothing to show: pass at least one pair")
        if pair is not None and pair not in pairs:
            raise UnknownNameError(f"pair {pair!r} is not among the explorer's pairs {list(pairs)}")
        self._quiet = False
        self.pair = w.Dropdown(options=list(pairs), value=pair or list(pairs)[-1], description="pair",
                               layout=w.Layout(width="max-content"))
        self.selector = selector
        self.previous = w.Button(description="◀ previous", layout=w.Layout(width="auto"), tooltip="previous")
        self.next = w.Button(description="next ▶", layout=w.Layout(width="auto"), tooltip="next")
        self.range = w.HTML()
        self.status = w.HTML()
        self.summary = w.HTML()
        self.image = w.Image(format="png")
        for part, name in ((self.status, "status"), (self.summary, "summary"), (self.image, "view")):
            part.add_class(f"corelib-{name}")  # stable hooks for the browser tests and for styling
        self.previous.on_click(lambda _b: self.step(-1))
        self.next.on_click(lambda _b: self.step(+1))
        self.pair.observe(lambda _c: self._pair_changed(), names="value")
        for control in (self.selector, *extra_controls):
            control.observe(lambda _c: self._changed(), names="value")
        row1 = w.HBox([self.pair, self.selector, self.previous, self.next, self.range],
                      layout=w.Layout(align_items="center", flex_flow="row wrap"))
        rows = [row1] + ([w.HBox(list(extra_controls), layout=w.Layout(align_items="center"))] if extra_controls else [])
        # flex-start: a column box stretches its children to its width (images upscaled, blurry)
        self.widget = w.VBox(rows + [w.HBox([self.status, self.summary]), self.image],
                             layout=w.Layout(align_items="flex-start"))
        self.widget.add_class(f"corelib-{self.kind}")
        self._pair_changed()

    # -- controls ---------------------------------------------------------------------------------
    @contextmanager
    def _holding(self):
        """Change several controls with one refresh at the end."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _changed(self) -> None:
        if not self._quiet:
            self.refresh()

    def _pair_changed(self) -> None:
        with self._holding():
            self._configure_pair()
        self.refresh()

    def step(self, delta: int) -> None:
        """Move the selector ``delta`` places, within its range (the previous / next buttons)."""
        self.selector.value = self._stepped(delta)

    # -- rendering --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-render the view for the current control values ("computing…" meanwhile)."""
        self.status.value = "<i>⏳ computing…</i>&nbsp;"
        try:
            png, text = self._render()
        except Exception:
            self.status.value = "<b style='color:#b2182b'>failed</b>&nbsp;"
            raise
        width, height = png_size(png)
        self.image.value = png
        # the PNG's own pixel size: no stretching to the output's width
        self.image.width, self.image.height = str(width), str(height)
        self.summary.value = text
        self.status.value = ""

    def description(self) -> str:
        """The current view in words (the summary without markup)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.summary.value))

    def static_html(self) -> str:
        """The current view as an HTML fragment: the image (embedded PNG, natural size) and its
        description, for front ends without widgets (executed copies, the HTML report)."""
        png = self.image.value
        width, height = png_size(png)
        b64 = base64.b64encode(png).decode("ascii")
        text = self.description()
        return (f'<div class="corelib-{self.kind}-static">'
                f'<img src="data:image/png;base64,{b64}" width="{width}" height="{height}" alt="{html.escape(text)}">'
                f"<p>{html.escape(text)} <i>(a static view: run the notebook in JupyterLab for the live "
                f"{self.kind})</i></p></div>")

    def _repr_mimebundle_(self, **kwargs):
        if static_widgets():
            return {"text/html": self.static_html(), "text/plain": self.description()}
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.description()  # not the VBox(children=...) repr
        return bundle


@dataclass
class RankListView:
    """What :class:`RankListExplorer` shows for one pair: a network and its target's descriptors."""

    model: torch.nn.Module
    query: Features
    gallery: Features
    query_samples: Sequence[Sample]
    gallery_samples: Sequence[Sample]
    transform: object
    start: int = 0
    """The query shown first."""

    def __post_init__(self) -> None:
        if not len(self.query_samples):
            raise InvalidInputError("the query split is empty: nothing to explore")
        if not 0 <= self.start < len(self.query_samples):
            raise InvalidInputError(f"start query {self.start} is outside 0–{len(self.query_samples) - 1}")

    @classmethod
    def from_model(cls, trained, dataset: ReIDDataset, *, device: Union[str, torch.device] = "cpu",
                   start: int = 0) -> "RankListView":
        """Extract ``dataset``'s query and gallery descriptors with a :class:`~corelib.TrainedModel`."""
        tf = build_transforms("test", *trained.input_size)
        q = analysis_features(trained, dataset, split="query", device=device)
        g = analysis_features(trained, dataset, split="gallery", device=device)
        return cls(trained.model, q, g, dataset.query, dataset.gallery, tf, start=start)


class RankListExplorer(_Explorer):
    """Pick a pair and a query, see its top-k gallery matches (✓/✗, pid and camera), with or without
    Grad-CAM overlays.

    Controls: ``pair``, ``query`` (index into the pair's query split, with ``previous`` / ``next``
    and its range), ``branch`` (which embedding the maps explain), ``cams`` (overlays on / off).
    ``image`` holds the rendered rank list, ``summary`` its text.
    """

    kind = "rank-list-explorer"

    def __init__(self, views: Mapping[str, RankListView], *, topk: int = 5, layer: Optional[str] = None,
                 pair: Optional[str] = None) -> None:
        import ipywidgets as w  # lazy: the widget stack, needed only in JupyterLab

        if isinstance(views, RankListView):
            views = {"pair": views}
        self.views, self.topk, self.layer = dict(views), topk, layer
        self._query_of = {name: v.start for name, v in self.views.items()}  # each pair keeps its query
        query = w.BoundedIntText(value=0, min=0, max=0, description="query", layout=w.Layout(width="11em"))
        self.query = query
        self.branch = w.Dropdown(options=["descriptor"], value="descriptor", description="branch",
                                 layout=w.Layout(width="max-content"))
        self.cams = w.Checkbox(value=True, description="Grad-CAM overlays", indent=False)
        self._build(list(self.views), pair, query, [self.branch, self.cams])

    @classmethod
    def from_model(cls, trained, dataset: ReIDDataset, *, topk: int = 5, layer: Optional[str] = None,
                   device: Union[str, torch.device] = "cpu", pair: str = "pair") -> "RankListExplorer":
        """One pair's explorer, descriptors extracted with a :class:`~corelib.TrainedModel`."""
        return cls({pair: RankListView.from_model(trained, dataset, device=device)}, topk=topk, layer=layer)

    @property
    def view(self) -> RankListView:
        return self.views[self.pair.value]

    def _configure_pair(self) -> None:
        v = self.view
        n = len(v.query_samples)
        self.query.max = n - 1
        self.query.value = min(self._query_of[self.pair.value], n - 1)
        self.range.value = f"of 0–{n - 1} ({_plural(n, 'query')})"
        branches = [b for b in BRANCHES if has_branch(v.model, b)]
        keep = self.branch.value if self.branch.value in branches else "descriptor"
        self.branch.options = branches
        self.branch.value = keep

    def _stepped(self, delta: int) -> int:
        return int(np.clip(int(self.query.value) + delta, 0, self.query.max))

    def _render(self) -> tuple[bytes, str]:
        v, qi = self.view, int(self.query.value)
        self._query_of[self.pair.value] = qi
        rl = rank_lists(v.query, v.gallery, v.query_samples, v.gallery_samples, indices=[qi], topk=self.topk)[0]
        explained = explain_rank_list(v.model, rl, v.transform, branch=self.branch.value, layer=self.layer)
        q = rl.query
        label = f"query {qi}\npid {q.pid}" + (f"\ncam {q.camid + 1}" if q.camid is not None and q.camid >= 0 else "")
        row = rank_list_row(explained, label, cams=self.cams.value, identities=True)
        fig = viz.rank_list([row])
        maps = f"Grad-CAM of the <b>{self.branch.value}</b> similarity" if self.cams.value else "no overlays"
        text = (f"{self.pair.value}, query {qi} ({identity_caption(rl.query)}): {sum(rl.correct)} of the top "
                f"{len(rl.correct)} are the same identity; {maps}")
        return _png(fig), text


class ClusterExplorer(_Explorer):
    """Pick a pair and a cluster (largest first), see its members with their true identity and camera.

    ``clusters`` maps each pair to ``(samples, labels)`` (label -1: unclustered). ``cluster`` is the
    control (with ``previous`` / ``next``); ``image`` holds the rendered members and ``summary`` the
    cluster's size, identity count and purity (share of its largest identity).
    """

    kind = "cluster-explorer"

    def __init__(self, clusters: Mapping[str, tuple[Sequence[Sample], Sequence[int]]], *, max_members: int = 24,
                 columns: int = 6, pair: Optional[str] = None) -> None:
        import ipywidgets as w  # lazy: the widget stack, needed only in JupyterLab

        self.max_members, self.columns = max_members, columns
        self.clusters = {}
        for name, (samples, labels) in clusters.items():
            labels = np.asarray(labels)
            if len(labels) != len(samples):
                raise InvalidInputError(f"{name}: {len(labels)} labels for {len(samples)} samples")
            ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
            if not len(ids):
                raise InvalidInputError(f"{name}: no clusters: every label is -1")
            order = np.argsort(-sizes, kind="stable")
            options = [(f"cluster {ids[i]} ({_plural(int(sizes[i]), 'image')})", int(ids[i])) for i in order]
            self.clusters[name] = (list(samples), labels, options)
        self._cluster_of = {name: opts[0][1] for name, (_, _, opts) in self.clusters.items()}
        self.cluster = w.Dropdown(options=[("", -1)], value=-1, description="cluster")
        self._build(list(self.clusters), pair, self.cluster, [])

    def _configure_pair(self) -> None:
        _, _, options = self.clusters[self.pair.value]
        self.cluster.options = options
        self.cluster.value = self._cluster_of[self.pair.value]
        self.range.value = f"{_plural(len(options), 'cluster')}, largest first"

    def _stepped(self, delta: int) -> int:
        values = [v for _, v in self.cluster.options]
        return values[int(np.clip(values.index(self.cluster.value) + delta, 0, len(values) - 1))]

    def members(self, cluster: Optional[int] = None) -> list[Sample]:
        """The samples of the current pair labelled ``cluster`` (default: the selected one)."""
        samples, labels, _ = self.clusters[self.pair.value]
        c = self.cluster.value if cluster is None else cluster
        return [s for s, lab in zip(samples, labels) if lab == c]

    def _render(self) -> tuple[bytes, str]:
        self._cluster_of[self.pair.value] = self.cluster.value
        members = self.members()
        pids = [s.pid for s in members]
        top = Counter(pids).most_common(1)[0][0]  # ties: the identity met first
        shown = members[: self.max_members]
        # green: the cluster's largest identity; red: images of other identities (impurities)
        fig = viz.image_gallery([read_image(s.path) for s in shown], [identity_caption(s) for s in shown],
                                colours=[viz.MATCH_COLOURS[s.pid == top] for s in shown], columns=self.columns)
        text = (f"{self.pair.value}, cluster {self.cluster.value}: {_plural(len(members), 'image')} of "
                f"{_plural(len(set(pids)), 'identity')}; purity {pids.count(top) / len(pids):.2f} (largest "
                f"identity: pid {top})" + (f"; first {len(shown)} shown" if len(shown) < len(members) else ""))
        return _png(fig), text
