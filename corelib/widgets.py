"""Interactive explorers for JupyterLab (ipywidgets): rank lists with Grad-CAM, clusters.

Both explorers render with :mod:`corelib.viz` into an ``ipywidgets.Image`` (PNG), so they work in
any front end that shows widgets and can be built and driven without one (the tests set the
controls' values and read the rendered image). Show one by leaving it as the last expression of a
cell, or ``display(explorer.widget)``.

Example::

    explorer = RankListExplorer.from_model(trained, target, topk=5, device="cpu")
    explorer            # pick a query, toggle the Grad-CAM overlays, switch the branch
    clusters = ClusterExplorer(target.train, pseudo_labels)
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Optional, Sequence, Union

import numpy as np
import torch

from . import viz
from .data.datasets import ReIDDataset, Sample, read_image
from .errors import InvalidInputError
from .explain import BRANCHES, explain_rank_list, has_branch, rank_list_row, rank_lists
from .features import Features


def _png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed (widgets re-render often)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class _Explorer:
    widget: object

    def _repr_mimebundle_(self, **kwargs):  # show as the widget in notebooks
        return self.widget._repr_mimebundle_(**kwargs)


class RankListExplorer(_Explorer):
    """Pick a query, see its top-k gallery matches (✓/✗), with or without Grad-CAM overlays.

    Controls: ``query`` (index into the query split), ``branch`` (which embedding the CAMs explain),
    ``cams`` (overlays on / off). ``image`` holds the rendered rank list, ``summary`` its text.
    """

    def __init__(self, model: torch.nn.Module, query: Features, gallery: Features, query_samples: Sequence[Sample],
                 gallery_samples: Sequence[Sample], transform, *, topk: int = 5, layer: Optional[str] = None,
                 start: int = 0) -> None:
        import ipywidgets as w

        if not len(query_samples):
            raise InvalidInputError("the query split is empty: nothing to explore")
        self.model, self.transform, self.topk, self.layer = model, transform, topk, layer
        self.query_features, self.gallery_features = query, gallery
        self.query_samples, self.gallery_samples = list(query_samples), list(gallery_samples)
        self.query = w.BoundedIntText(value=start, min=0, max=len(query_samples) - 1, description="query")
        self.branch = w.Dropdown(options=[b for b in BRANCHES if has_branch(model, b)], value="descriptor",
                                 description="branch")
        self.cams = w.Checkbox(value=True, description="Grad-CAM")
        self.summary = w.HTML()
        self.image = w.Image(format="png")
        for control in (self.query, self.branch, self.cams):
            control.observe(lambda _change: self.refresh(), names="value")
        self.widget = w.VBox([w.HBox([self.query, self.branch, self.cams]), self.summary, self.image])
        self.refresh()

    @classmethod
    def from_model(cls, trained, dataset: ReIDDataset, *, topk: int = 5, layer: Optional[str] = None,
                   device: Union[str, torch.device] = "cpu") -> "RankListExplorer":
        """Extract ``dataset``'s query and gallery descriptors with a :class:`~corelib.TrainedModel`."""
        from .data.transforms import build_transforms
        from .training.analysis import analysis_features

        tf = build_transforms("test", *trained.input_size)
        q = analysis_features(trained, dataset, split="query", device=device)
        g = analysis_features(trained, dataset, split="gallery", device=device)
        return cls(trained.model, q, g, dataset.query, dataset.gallery, tf, topk=topk, layer=layer)

    def refresh(self) -> None:
        """Re-rank and re-render for the current control values."""
        rl = rank_lists(self.query_features, self.gallery_features, self.query_samples, self.gallery_samples,
                        indices=[int(self.query.value)], topk=self.topk)[0]
        explained = explain_rank_list(self.model, rl, self.transform, branch=self.branch.value, layer=self.layer)
        q = rl.query
        label = f"pid {q.pid}\ncam {q.camid + 1}" if q.camid is not None and q.camid >= 0 else f"pid {q.pid}"
        fig = viz.rank_list([rank_list_row(explained, label, cams=self.cams.value)])
        self.image.value = _png(fig)
        self.summary.value = (f"query {self.query.value}: {sum(rl.correct)} of the top {len(rl.correct)} are the "
                              f"same identity; maps explain the <b>{self.branch.value}</b> similarity")


class ClusterExplorer(_Explorer):
    """Pick a cluster (largest first), see its members with their true identity and camera.

    ``cluster`` is the control; ``image`` holds the rendered members and ``summary`` the cluster's
    size, identity count and purity (share of its largest identity).
    """

    def __init__(self, samples: Sequence[Sample], labels: Sequence[int], *, max_members: int = 24,
                 columns: int = 8) -> None:
        import ipywidgets as w

        labels = np.asarray(labels)
        if len(labels) != len(samples):
            raise InvalidInputError(f"{len(labels)} labels for {len(samples)} samples")
        ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
        if not len(ids):
            raise InvalidInputError("no clusters: every label is -1")
        order = np.argsort(-sizes, kind="stable")
        self.samples, self.labels = list(samples), labels
        self.max_members, self.columns = max_members, columns
        self.cluster = w.Dropdown(options=[(f"cluster {ids[i]} ({sizes[i]} images)", int(ids[i])) for i in order],
                                  description="cluster")
        self.summary = w.HTML()
        self.image = w.Image(format="png")
        self.cluster.observe(lambda _change: self.refresh(), names="value")
        self.widget = w.VBox([self.cluster, self.summary, self.image])
        self.refresh()

    def members(self, cluster: Optional[int] = None) -> list[Sample]:
        """The samples labelled ``cluster`` (default: the selected one)."""
        c = self.cluster.value if cluster is None else cluster
        return [s for s, lab in zip(self.samples, self.labels) if lab == c]

    def refresh(self) -> None:
        members = self.members()
        pids = [s.pid for s in members]
        top = Counter(pids).most_common(1)[0][0]  # ties: the identity met first
        shown = members[: self.max_members]
        # green: the cluster's largest identity; red: images of other identities (impurities)
        fig = viz.image_gallery([read_image(s.path) for s in shown],
                                [f"pid {s.pid}" + (f" c{s.camid + 1}" if s.camid is not None and s.camid >= 0 else "")
                                 for s in shown],
                                colours=[viz.MATCH_COLOURS[s.pid == top] for s in shown], columns=self.columns)
        self.image.value = _png(fig)
        self.summary.value = (f"{len(members)} images of {len(set(pids))} identities; purity {pids.count(top) / len(pids):.2f} "
                              f"(largest identity: pid {top})" + (f"; first {len(shown)} shown" if len(shown) < len(members) else ""))
