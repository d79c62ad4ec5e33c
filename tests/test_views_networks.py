"""Views (orientations) reach the networks: TransReID's SIE camera x view table as the official code
indexes it (damo-cv/TransReID, model/backbones/vit_pytorch.py ``TransReID.forward_features``), every
network's and backbone's ``viewids`` argument, and the loops that look the views of a batch up from
its sample indices and hand them to the network and to a criterion that reads them."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
import torch.nn.functional as F

from corelib.config import FinetuneCfg, PretrainCfg
from corelib.data import load_synthetic
from corelib.data.dataset import Sample
from corelib.errors import InvalidInputError
from corelib.losses import Criterion
from corelib.models import build_backbone, build_model, list_backbones, list_models, model_context, view_count
from corelib.models.registry import MODELS
from corelib.models.vit import IMAGENET_MEAN, IMAGENET_STD, TransReIDViT
from corelib.recipes import TRANSREID_EMBEDDED_PRETRAIN, TRANSREID_FINETUNE

SIZE = (64, 32)
CAMERAS, VIEWS = 3, 2


def tiny_net(**kw):
    """The tiny TransReID network (dim 96, depth 4, JPM), random, in eval mode."""
    torch.manual_seed(0)
    args = dict(backbone="transreid_vit_tiny", num_classes=4, img_size=SIZE, num_cameras=CAMERAS, num_views=VIEWS)
    return build_model("transreid_net", **{**args, **kw}).eval()


# --------------------------------------------------------------------------------------------
# 1. the SIE table: its size follows the switches, its rows are the official code's


@pytest.mark.parametrize("switches, rows", [
    (dict(), CAMERAS),  # SIE_CAMERA alone: the released Market-1501 config
    (dict(sie_view=True), CAMERAS * VIEWS),  # SIE_CAMERA and SIE_VIEW: the released VeRi-776 config
    (dict(sie_camera=False, sie_view=True), VIEWS),
    (dict(sie_camera=False), 0),
    (dict(sie=False, sie_view=True), 0),
    (dict(sie_view=True, num_views=1), CAMERAS),  # an axis of one id is left out, as in the official code
    (dict(sie_view=True, num_views=0), CAMERAS),
])
def test_the_sie_table_size_follows_the_switches_and_the_counts(switches, rows):
    table = tiny_net(**switches).trunk.sie_embed
    assert (0 if table is None else table.shape[0]) == rows


def test_a_camera_x_view_table_is_indexed_cam_times_v_plus_view():
    trunk = tiny_net(sie_view=True).trunk
    table, coe = trunk.sie_embed.detach(), trunk.sie_coe
    cams, views = torch.tensor([0, 2, 1, 2, 0, 1]), torch.tensor([1, 0, 0, 1, 0, 1])
    with torch.no_grad():
        got = trunk.side_information(cams, 6, views)
    for i, (c, v) in enumerate(zip(cams.tolist(), views.tolist())):
        assert torch.equal(got[i], coe * table[c * VIEWS + v])  # sie_embed[camera_id * view_num + view_id]


def test_one_axis_tables_are_indexed_by_their_own_ids_and_ignore_the_other():
    cams, views = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 1])
    camera_only = tiny_net().trunk
    view_only = tiny_net(sie_camera=False, sie_view=True).trunk
    with torch.no_grad():
        assert torch.equal(camera_only.side_information(cams, 3, views), camera_only.sie_coe * camera_only.sie_embed[cams])
        assert torch.equal(camera_only.side_information(cams, 3, None), camera_only.side_information(cams, 3, views))
        assert torch.equal(view_only.side_information(cams, 3, views), view_only.sie_coe * view_only.sie_embed[views])
        assert torch.equal(view_only.side_information(None, 3, views), view_only.side_information(cams, 3, views))


def test_an_unknown_view_or_camera_takes_the_mean_of_the_rows_it_could_be():
    trunk = tiny_net(sie_view=True).trunk
    table, coe = trunk.sie_embed.detach(), trunk.sie_coe
    cams, views = torch.tensor([0, 2, -1, -1]), torch.tensor([1, -1, 1, -1])
    with torch.no_grad():
        got = trunk.side_information(cams, 4, views)
        assert torch.equal(trunk.side_information(cams, 4, None), trunk.side_information(cams, 4, torch.full((4,), -1)))
    torch.testing.assert_close(got[0], coe * table[0 * VIEWS + 1])
    torch.testing.assert_close(got[1], coe * table[2 * VIEWS:3 * VIEWS].mean(dim=0))  # camera 2's view rows
    torch.testing.assert_close(got[2], coe * table[1::VIEWS].mean(dim=0))  # view 1 over the cameras
    torch.testing.assert_close(got[3], coe * table.mean(dim=0))  # camera-blind: the whole table
    with pytest.raises(InvalidInputError, match=r"view index 2 .*table of 6 rows"):
        trunk.side_information(torch.tensor([0]), 1, torch.tensor([2]))


def reference_feature(net, x: torch.Tensor, cams: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """TransReID's test feature from the paper's description, the network's submodules called one by one:
    tokens = [cls; patch embeddings] + pos + lambda * S[cam * V + view], the blocks, then JPM (the
    global branch on all tokens; shift m = 5 as the official code, patch shuffle over 2 groups, k = 4
    groups each led by [cls] through the jigsaw branch), ``[f_g, f_l / k]`` before the BN-necks, L2."""
    trunk = net.trunk
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    half = (x * std + mean - 0.5) / 0.5  # TransReID normalises with mean = std = 0.5
    b = x.shape[0]
    patches = trunk.patch_embed.proj(half).flatten(2).transpose(1, 2)
    tokens = torch.cat([trunk.cls_token.expand(b, -1, -1), patches], dim=1) + trunk.pos_embed
    tokens = tokens + trunk.sie_coe * trunk.sie_embed[cams * trunk.num_views + views]
    for block in trunk.blocks:  # all but the last, which JPM took as its branches
        tokens = block(tokens)
    f_g = net.b1(tokens)[:, 0]
    d, n, k = tokens.shape[2], tokens.shape[1] - 1, 4
    seq = torch.cat([tokens[:, 5:], tokens[:, 1:5]], dim=1)  # shift: patches 1..m-1 to the end
    if seq.shape[1] % 2:
        seq = torch.cat([seq, seq[:, -2:-1]], dim=1)
    seq = seq.view(b, 2, -1, d).transpose(1, 2).reshape(b, -1, d)  # patch shuffle: the halves interleave
    length = n // k
    parts = [net.b2(torch.cat([tokens[:, :1], seq[:, j * length:(j + 1) * length]], dim=1))[:, 0] / k
             for j in range(k)]
    return F.normalize(torch.cat([f_g, *parts], dim=1), dim=1)


def test_the_eval_feature_with_cameras_and_views_equals_the_paper_written_out():
    net = tiny_net(sie_view=True)
    x = torch.randn(4, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    cams, views = torch.tensor([0, 1, 2, 1]), torch.tensor([1, 1, 0, 0])
    with torch.no_grad():
        ours = net(x, cams, views)
        theirs = reference_feature(net, x, cams, views)
        other_views = net(x, cams, 1 - views)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - other_views).abs().max() > 1e-3  # the views move the feature


# --------------------------------------------------------------------------------------------
# 2. every network and backbone takes viewids


def _heavy(name: str) -> bool:
    """All but the ResNet-18 and tiny-ViT networks and trunks in the slow tier (seconds each on 2 shared cores)."""
    light = ("resnet18", "vit_tiny", "source_net", "corereid_net", "mean_teacher", "transreid_net",
             "transreid_mean_teacher")
    return not (name.endswith(light) or "resnet18" in name) or name.endswith("_ibn_b")


def small_args(name: str) -> dict:
    args: dict = {"weights": None, "num_classes": 4}
    if name.startswith("transreid"):
        args["backbone"] = "transreid_vit_tiny"
    elif name in ("source_net", "corereid_net", "mean_teacher"):
        args["backbone"] = "resnet18"
    context = getattr(MODELS.get(name), "context_args", ())
    args.update({k: v for k, v in {"num_cameras": CAMERAS, "num_views": VIEWS, "img_size": SIZE}.items()
                 if k in context})
    return args


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if _heavy(n) else n for n in list_models()])
def test_every_network_accepts_viewids_and_ignores_them_without_a_view_table(name):
    torch.manual_seed(0)
    net = build_model(name, **small_args(name)).eval()
    x = torch.randn(2, 3, *SIZE)
    cams, views = torch.tensor([0, 2]), torch.tensor([1, -1])
    with torch.no_grad():
        assert torch.equal(net(x, cams, viewids=views), net(x, cams))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if _heavy(n) else n
                                  for n in list_backbones()])
def test_every_backbone_accepts_viewids(name):
    torch.manual_seed(0)
    trunk = build_backbone(name, weights=None, **({"img_size": SIZE} if "vit" in name else {})).eval()
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(trunk(x, None, torch.tensor([0, 1])), trunk(x))


def test_the_mean_teacher_hands_views_to_the_network_it_runs():
    torch.manual_seed(0)
    mt = build_model("transreid_mean_teacher", num_classes=4, backbone="transreid_vit_tiny", img_size=SIZE,
                     num_cameras=CAMERAS, num_views=VIEWS, sie_view=True).eval()
    x, cams = torch.randn(2, 3, *SIZE), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(mt(x, cams, torch.tensor([1, 0])), mt.teacher(x, cams, torch.tensor([1, 0])))
        assert not torch.equal(mt(x, cams, torch.tensor([1, 0])), mt(x, cams, torch.tensor([0, 1])))


# --------------------------------------------------------------------------------------------
# 3. the loops: views from the sample indices to the network and the criterion


class ViewSample(Sample):
    """A sample with a view, whether or not :class:`Sample` has the field (before / after views were added
    to the data): the view is a function of the image, kept through ``_replace`` (a relabelling)."""

    __slots__ = ()

    @property
    def viewid(self) -> int:
        return int(self.path.rsplit("/", 1)[-1].encode().hex(), 16) % 3


def with_views(dataset):
    def split(samples):
        return [ViewSample(s.path, s.pid, s.camid) for s in samples]
    return dataclasses.replace(dataset, train=split(dataset.train), query=split(dataset.query),
                               gallery=split(dataset.gallery))


def without_views(dataset):
    return dataclasses.replace(dataset, train=[Sample(s.path, s.pid, s.camid) for s in dataset.train])


class ViewSpy(Criterion):
    """Wraps a loop's criterion, declares ``uses_views`` and records the views it is handed."""

    uses_views = True

    def __init__(self, inner: Criterion) -> None:
        super().__init__()
        self.inner, self.seen = inner, []
        self.terms, self.levels, self.uses_fused = inner.terms, inner.levels, inner.uses_fused

    def forward(self, *args, views=None):
        if len(args) == 3:  # pre-training: (outputs, pids, gather)
            outputs, pids, gather = args
            self.seen.append((views.cpu(), pids.cpu()))
            return self.inner(outputs, pids, gather)
        batch = args[0]
        self.seen.append((None if batch.views is None else [v.cpu() for v in batch.views], None))
        return self.inner(batch)

    def start_clustering(self, centres):
        self.inner.start_clustering(centres)


@pytest.fixture
def spies(monkeypatch):
    """The criteria the loops build (wrapped) and the ids every SIE lookup got: (training, camids, viewids)."""
    finetune_module = importlib.import_module("corelib.training.finetune")
    pretrain_module = importlib.import_module("corelib.training.pretrain")

    built, lookups = [], []
    for module in (pretrain_module, finetune_module):
        real = module.build_criterion

        def build(cfg, stage, real=real):
            built.append(ViewSpy(real(cfg, stage=stage)))
            return built[-1]

        monkeypatch.setattr(module, "build_criterion", build)
    looked_up = TransReIDViT.side_information

    def side_information(self, camids, batch, viewids=None):
        lookups.append((self.training, None if camids is None else camids.clone(),
                        None if viewids is None else viewids.clone()))
        return looked_up(self, camids, batch, viewids)

    monkeypatch.setattr(TransReIDViT, "side_information", side_information)
    # the relabelled samples keep their views (the fine-tuning loop's own _relabel does, with views in Sample)
    monkeypatch.setattr(finetune_module, "_relabel",
                        lambda samples, labels: [s._replace(pid=int(y)) for s, y in zip(samples, labels) if y >= 0])
    return built, lookups


@pytest.mark.slow
def test_the_loops_hand_each_batch_its_views(synthetic_small, tmp_path, spies):
    from corelib.training import finetune, pretrain

    built, lookups = spies
    source = with_views(load_synthetic(synthetic_small["market_like"]))
    target = with_views(load_synthetic(synthetic_small["cuhk_like"]))
    view_of = {s.path: s.viewid for s in source.train}
    assert view_count(source) == 3 and model_context("transreid_net", source, *SIZE)["num_views"] == 3
    net = {"model.net_args": {"sie_view": True}}
    pre = PretrainCfg.smoke(epochs=1, iters_per_epoch=2).with_overrides({**TRANSREID_EMBEDDED_PRETRAIN, **net})
    res = pretrain(pre, source, tmp_path, progress=False)
    criterion = built[0]
    assert len(criterion.seen) == 2
    train_lookups = [(c, v) for training, c, v in lookups if training]
    assert len(train_lookups) == 2
    for (views, pids), (cams, net_views) in zip(criterion.seen, train_lookups):
        assert views.dtype == torch.long and views.shape == pids.shape == (pre.batch_size,)
        assert torch.equal(views, net_views.cpu())  # the network and the criterion got the same views
        # the views are those of the batch's images: each identity's images carry their own views
        assert set(views.tolist()) <= {0, 1, 2}
    seen_views = torch.cat([v for v, _ in criterion.seen]).tolist()
    assert set(seen_views) <= set(view_of.values())
    eval_views = [v for training, _, v in lookups if not training]
    assert eval_views and all(v is not None and (v >= 0).all() for v in eval_views)  # query / gallery views

    lookups.clear()
    fine = FinetuneCfg.smoke(epochs=1, iters_per_epoch=1).with_overrides({**TRANSREID_FINETUNE, **net})
    finetune(fine, target, tmp_path, source_checkpoint=res.best_checkpoint, progress=False)
    adapt = built[-1]
    assert len(adapt.seen) == 1
    views = adapt.seen[0][0]
    assert views is not None and len(views) == adapt.levels == 1
    train_lookups = [v for training, _, v in lookups if training and v is not None]
    assert train_lookups and torch.equal(views[0], train_lookups[0].cpu())
    assert views[0].shape == (fine.batch_size,) and set(views[0].tolist()) <= {0, 1, 2}


@pytest.mark.slow
def test_pretraining_passes_the_views_of_the_batch_by_index(synthetic_small, tmp_path, spies, monkeypatch):
    """The views a criterion gets are those of the batch's sample indices (checked against the list)."""
    from corelib.training import pretrain

    pretrain_module = importlib.import_module("corelib.training.pretrain")

    built, lookups = spies
    source = with_views(load_synthetic(synthetic_small["market_like"]))
    indices = []
    real_lookup = pretrain_module.batch_viewids

    def lookup(samples, index, **kw):
        indices.append(torch.as_tensor(index).clone())
        return real_lookup(samples, index, **kw)

    monkeypatch.setattr(pretrain_module, "batch_viewids", lookup)
    cfg = PretrainCfg.smoke(epochs=1, iters_per_epoch=1, eval_every=5)
    pretrain(cfg, source, tmp_path, progress=False)
    (views, _), = built[0].seen
    assert torch.equal(views, torch.tensor([source.train[int(i)].viewid for i in indices[0]]))


def test_a_criterion_that_reads_views_is_refused_on_a_split_without_views(synthetic_small, tmp_path, spies):
    from corelib.training import finetune, pretrain

    source = without_views(load_synthetic(synthetic_small["market_like"]))
    with pytest.raises(InvalidInputError, match=r"ViewSpy criterion reads each image's view.*no view ids"):
        pretrain(PretrainCfg.smoke(), source, tmp_path / "pre", progress=False)
    assert not (tmp_path / "pre" / "pretrain" / "metrics.jsonl").exists()  # before the first step
    target = without_views(load_synthetic(synthetic_small["cuhk_like"]))
    with pytest.raises(InvalidInputError, match=r"training split of .* has no view ids"):
        finetune(FinetuneCfg.smoke(), target, tmp_path / "fine", source_checkpoint=tmp_path / "none.pt", progress=False)


@pytest.mark.parametrize("kind, embedded, view_axis", [("person", True, False), ("person", False, False),
                                                       ("vehicle", True, True), ("vehicle", False, True)])
def test_the_transreid_recipe_uses_views_for_vehicles_as_the_released_configs(kind, embedded, view_axis):
    """configs/Market: SIE_CAMERA alone; configs/VeRi: SIE_CAMERA and SIE_VIEW (both stages)."""
    from corelib.recipes import RecipeContext, get_recipe

    ctx = RecipeContext(kind, embedded, "veri776" if kind == "vehicle" else "market1501")
    for stage in ("pretrain", "finetune"):
        net_args = getattr(get_recipe("transreid"), stage)(ctx, False).model.net_args
        assert bool(net_args.get("sie_view", False)) is view_axis
        assert net_args.get("sie_camera", True) is True
    assert "sie_view" not in get_recipe("transreid_no_sie").pretrain(ctx, False).model.net_args
