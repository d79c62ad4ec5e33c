"""Chapter 09's measurements of orientation: the view gap, the views of the nearest wrong matches, the figure,
and the run-directory helpers the chapter reads networks through."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from corelib.baselines import finetuned_checkpoint, shared_source_network
from corelib.errors import InvalidInputError, MissingFileError
from corelib.feature_space import nearest_wrong_views, similarity_histograms
from corelib.viz import orientation_bars

matplotlib.use("Agg")


def unit(*angles_deg: float) -> torch.Tensor:
    """2-D unit vectors at the given angles: cosine similarity is the cosine of the angle between them."""
    a = np.radians(angles_deg)
    return torch.tensor(np.stack([np.cos(a), np.sin(a)], axis=1), dtype=torch.float32)


def test_the_nearest_wrong_match_is_read_among_other_identities_with_a_view():
    # query 0 (pid 1, view 0) at 0 degrees: gallery 0 is its own identity (left out); the nearest wrong one is
    # gallery 1 (pid 2, view 1) at 10 degrees -> another view.
    # query 1 (pid 2, view 1) at 100 degrees: gallery 3 (pid 4) at 100 degrees has no view and is left out; the
    # nearest wrong one with a view is gallery 4 (pid 5, view 1) at 95 degrees -> the same view.
    # query 2 has no view: not counted.
    query = unit(0, 100, 50)
    gallery = unit(1, 10, 20, 100, 95)
    out = nearest_wrong_views(query, gallery, [1, 2, 9], [1, 2, 3, 4, 5], [0, 1, -1], [0, 1, 0, -1, 1])
    assert out["queries"] == 2
    assert out["same view"] == pytest.approx(0.5)  # query 0: other view; query 1: same view
    # chance: query 0's wrong images with a view are gallery 1, 2, 4 (views 1, 0, 1): 1/3 share its view 0;
    # query 1's are gallery 0, 2, 4 (views 0, 0, 1): 1/3 share its view 1
    assert out["chance"] == pytest.approx(1 / 3)


def test_no_qualifying_query_gives_nan_and_mismatched_lengths_are_refused():
    out = nearest_wrong_views(unit(0), unit(0, 10), [1], [1, 2], [-1], [0, 1])
    assert out["queries"] == 0 and math.isnan(out["same view"]) and math.isnan(out["chance"])
    with pytest.raises(InvalidInputError, match="pids / views"):
        nearest_wrong_views(unit(0), unit(0, 10), [1], [1, 2], [0], [0])


def test_pairs_split_by_view_are_worded_for_views_and_the_camera_wording_is_unchanged():
    # two identities, each seen from views 0 and 1; images of view 0 all point the same way
    feats = unit(0, 90, 0, 90)
    pids, views = [1, 1, 2, 2], [0, 1, 0, 1]
    by_view = similarity_histograms(feats, pids, views, side="view", bins=20)
    # different ids, same view: (0, 2) and (1, 3), similarity 1; different ids, other view: (0, 3), (1, 2), 0
    assert by_view.gap == pytest.approx(1.0, abs=1e-6)
    assert by_view.kind_label("different id, cross camera") == "different id, other view"
    assert by_view.kind_label("same id, same camera") == "same id, same view"
    assert set(by_view.to_dict()) == {"means", "pairs", "view_gap"}
    assert "different id, same view" in by_view.to_dict()["means"]
    by_camera = similarity_histograms(feats, pids, views, bins=20)
    assert by_camera.camera_gap == by_camera.gap == pytest.approx(1.0, abs=1e-6)
    assert set(by_camera.to_dict()) == {"means", "pairs", "camera_gap"}
    assert by_camera.kind_label("different id, cross camera") == "different id, cross camera"


def test_the_chapter_figure_has_a_panel_per_measure():
    rows = [{"network": "source network", "mAP": 5.0, "view gap": 0.1, "nearest wrong, same view": 60.0, "chance": 33.3},
            {"network": "corereid_v2", "mAP": 9.0, "view gap": 0.05, "nearest wrong, same view": None, "chance": None}]
    fig = orientation_bars(rows, title="t")
    assert len(fig.axes) == 3
    with pytest.raises(InvalidInputError):
        orientation_bars([])


def test_the_run_directory_helpers(tmp_path):
    assert finetuned_checkpoint(tmp_path, "corereid_v2") == tmp_path / "baselines" / "corereid_v2" / "finetune" / "best.pt"

    class Pair:
        name = "person"

    with pytest.raises(MissingFileError, match="chapter 02"):
        shared_source_network(Pair(), None, None, tmp_path, train_missing=False)
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "best.pt").write_bytes(b"x")
    assert shared_source_network(Pair(), None, None, tmp_path, train_missing=False) == tmp_path / "pretrain" / "best.pt"
