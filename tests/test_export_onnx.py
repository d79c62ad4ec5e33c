"""ONNX export (corelib.export, ``corelib export onnx``): for every registered network and every
backbone, onnxruntime's features equal torch's on the same input, at another batch size than the
one exported with (the batch axis is dynamic); the camera and view ids of TransReID's SIE as inputs;
the metadata; the flip protocol it documents; the command line and its refusals."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corelib.cli import main
from corelib.config import FinetuneCfg
from corelib.errors import InvalidInputError, MissingExtraError, NotOwnedError
from corelib.export import EXPORTED_BY, ONNX_OPSET, export_onnx
from corelib.features import uses_test_flip
from corelib.models import bmfn, build_model, list_backbones, list_models
from corelib.models.registry import MODELS, backbone_info
from corelib.runtime import save_checkpoint

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SIZE = (64, 32)
BATCH = 5  # the export traces with 2: another batch shows the batch axis is dynamic
CAMERAS, VIEWS = 3, 2
# networks whose trunk is a ViT: the tiny one (10 x 5 patches at 64 x 32)
VIT_NETWORKS = {"transreid_net", "transreid_mean_teacher"}
# networks of any backbone: around ResNet-18 (their twins with a depth in the name, and the backbone
# test below, cover the other trunks)
ANY_BACKBONE = {"source_net", "corereid_net", "mean_teacher"}


def small_args(name: str) -> dict:
    """Builder arguments of a small, random network ``name``: four classes, the tiny ViT, three cameras."""
    args: dict = {"weights": None, "num_classes": 4}
    if name in VIT_NETWORKS:
        args["backbone"] = "transreid_vit_tiny"
    elif name in ANY_BACKBONE:
        args["backbone"] = "resnet18"
    context = getattr(MODELS.get(name), "context_args", ())
    args.update({k: v for k, v in {"num_cameras": CAMERAS, "img_size": SIZE}.items() if k in context})
    return args


def small_backbone_args(backbone: str) -> dict:
    """A ViT trunk laid out for 64 x 32 with a camera table (its ids become a graph input)."""
    if "img_size" in backbone_info(backbone).needs:
        return {"img_size": SIZE, "num_cameras": CAMERAS}
    return {}


@pytest.fixture
def onnx_file(tmp_path):
    """The .onnx path of one test, removed afterwards (a ResNet-152 graph is 300 MB)."""
    path = tmp_path / "net.onnx"
    yield path
    path.unlink(missing_ok=True)


def inputs_for(exported, batch: int = BATCH, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feeds = {"images": torch.randn(batch, 3, *SIZE, generator=g)}
    if "camids" in exported.inputs:
        feeds["camids"] = torch.tensor([-1, 0, 1, 2, 1][:batch])  # -1: an unknown camera (the table's mean)
    if "views" in exported.inputs:
        feeds["views"] = torch.tensor([0, 1, -1, 0, 1][:batch])  # -1: an unknown view (its camera's mean)
    return feeds


def torch_features(net, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        if "views" in feeds:
            return net(feeds["images"], feeds.get("camids"), viewids=feeds["views"])
        return net(feeds["images"], feeds.get("camids"))


def onnx_features(path, feeds: dict[str, torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(feeds)
    assert session.get_inputs()[0].shape[0] == "batch"  # a dynamic axis, not the traced 2
    return session.run(["features"], {k: v.numpy() for k, v in feeds.items()})[0]


def assert_same_features(model, path) -> object:
    exported = export_onnx(model, path, input_size=SIZE)
    feeds = inputs_for(exported)
    want = torch_features(exported.network, feeds)
    got = onnx_features(path, feeds)
    assert got.shape == tuple(want.shape) == (BATCH, exported.feature_dim)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)
    assert not model.training  # export_onnx evaluates the network and gives it back as it was
    return exported


def _heavy(name: str) -> bool:
    """The 2,048-channel ResNets and ViT-B: over 5 s each on 2 cores (the slow tier)."""
    return any(d in name for d in ("resnet50", "resnet101", "resnet152", "vit_base"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if _heavy(n) else n for n in list_models()])
def test_every_registered_network_exports_its_test_feature(name, onnx_file):
    torch.manual_seed(0)
    model = build_model(name, **small_args(name)).eval()
    exported = assert_same_features(model, onnx_file)
    net = model.teacher if hasattr(model, "teacher") else model  # a mean teacher exports its teacher
    assert exported.network is net
    assert exported.inputs == (("images", "camids") if name in VIT_NETWORKS else ("images",))


# corereid_net around resnet50 is the registered corereid_resnet50, tested above
@pytest.mark.parametrize("backbone", [pytest.param(b, marks=pytest.mark.slow) if _heavy(b) else b
                                      for b in list_backbones() if f"corereid_{b}" not in list_models()])
def test_every_backbone_exports_inside_the_corereid_network(backbone, onnx_file):
    torch.manual_seed(0)
    model = build_model("corereid_net", backbone=backbone, num_classes=4, weights=None,
                        backbone_args=small_backbone_args(backbone)).eval()
    exported = assert_same_features(model, onnx_file)
    assert exported.num_cameras == (CAMERAS if "camids" in exported.inputs else 0)


@pytest.mark.parametrize("kw", [dict(num_cameras=CAMERAS, num_views=VIEWS, sie_view=True),
                                dict(num_views=VIEWS, sie_camera=False, sie_view=True),
                                dict(num_cameras=CAMERAS, jpm=False), dict(num_cameras=CAMERAS, sie=False)],
                         ids=["cameras_views", "views_only", "no_jpm", "no_sie"])
def test_transreid_takes_the_ids_its_sie_table_has(kw, onnx_file):
    torch.manual_seed(0)
    model = build_model("transreid_net", backbone="transreid_vit_tiny", num_classes=4, img_size=SIZE, **kw).eval()
    exported = assert_same_features(model, onnx_file)
    cameras = kw.get("num_cameras", 0) if kw.get("sie", True) else 0
    views = kw.get("num_views", 0) if kw.get("sie_view") else 0
    want = ("images",) + (("camids",) if cameras else ()) + (("views",) if views else ())
    assert exported.inputs == want
    assert exported.metadata["inputs"] == ",".join(want)
    assert (exported.num_cameras, exported.num_views) == (cameras, views)


def test_view_ids_pick_their_rows_of_the_sie_table():
    """viewids=None is an unknown view (its camera's mean row, as -1); a view id moves the feature."""
    torch.manual_seed(0)
    net = build_model("transreid_net", backbone="transreid_vit_tiny", num_classes=4, img_size=SIZE,
                      num_cameras=CAMERAS, num_views=VIEWS, sie_view=True).eval()
    x, cams = torch.randn(3, 3, *SIZE), torch.tensor([0, 2, 1])
    with torch.no_grad():
        plain = net(x, cams)
        assert torch.equal(net(x, cams, viewids=torch.full((3,), -1)), plain)
        moved = net(x, cams, viewids=torch.ones(3, dtype=torch.long))
        row = net.trunk.side_information(cams, 3, torch.ones(3, dtype=torch.long))
        assert torch.equal(row, net.trunk.sie_coe * net.trunk.sie_embed[cams * VIEWS + 1])
    assert (moved - plain).abs().max() > 1e-3


def test_the_documented_flip_protocol_gives_the_evaluated_descriptor(onnx_file):
    """CORE-ReID tests with flips: graph(x) + graph(flip(x)), L2-normalised, is what the evaluation computes."""
    torch.manual_seed(0)
    model = build_model("mean_teacher_resnet18", num_classes=4, weights=None).eval()
    exported = export_onnx(model, onnx_file, input_size=SIZE)
    assert uses_test_flip(model) and exported.metadata["test_flip"] == "true"
    assert "horizontal flip" in exported.metadata["flip_protocol"]
    x = torch.randn(BATCH, 3, *SIZE)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    both = sum(session.run(["features"], {"images": v.numpy()})[0] for v in (x, torch.flip(x, dims=[3])))
    with torch.no_grad():
        want = bmfn(model, x)
    np.testing.assert_allclose(F.normalize(torch.from_numpy(both), dim=1).numpy(), want.numpy(), atol=1e-4, rtol=0)


def test_a_network_in_memory_needs_its_input_size(onnx_file):
    model = build_model("source_resnet18", num_classes=4, weights=None)
    with pytest.raises(InvalidInputError, match="input_size"):
        export_onnx(model, onnx_file)
    assert not onnx_file.exists()


def _checkpoint(path) -> tuple:
    """A fine-tuning checkpoint of a TransReID mean teacher (three cameras), as load_trained_model reads it."""
    torch.manual_seed(0)
    args = {"backbone": "transreid_vit_tiny", "num_classes": 4, "num_cameras": CAMERAS, "img_size": list(SIZE)}
    model = build_model("transreid_mean_teacher", weights=None, **args)
    cfg = FinetuneCfg().with_overrides({"model.name": "transreid_mean_teacher", "model.backbone": "transreid_vit_tiny",
                                        "augment.height": SIZE[0], "augment.width": SIZE[1]}).to_dict()
    save_checkpoint({"stage": "finetune", "model": model.state_dict(), "model_name": "transreid_mean_teacher",
                     "model_args": args, "cfg": cfg, "epoch": 0}, path)
    return model.eval()


def test_cli_exports_a_checkpoint_with_its_metadata_and_checks_it(tmp_path, capsys):
    ckpt, out = tmp_path / "best.pt", tmp_path / "model.onnx"
    model = _checkpoint(ckpt)
    assert main(["export", "onnx", str(ckpt), str(out), "--batch", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (ONNX opset {ONNX_OPSET}, transreid_mean_teacher" in printed
    assert "images   float32 (batch, 3, 64, 32)" in printed and "camids   int64 (batch,)" in printed
    assert f"features float32 (batch, {model.teacher.descriptor_dim}), L2-normalised" in printed
    diff = float(printed.rsplit("max |onnx - torch| = ", 1)[1])
    assert diff < 1e-4
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version == ONNX_OPSET
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_name"] == "transreid_mean_teacher" and meta["exported_by"] == EXPORTED_BY
    assert (meta["input_height"], meta["input_width"]) == ("64", "32")
    assert meta["input_mean"] == "0.485,0.456,0.406" and meta["input_std"] == "0.229,0.224,0.225"
    assert meta["test_flip"] == "false" and meta["flip_protocol"].startswith("one view")
    assert meta["checkpoint"] == "best.pt" and meta["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["inputs"] == "images,camids" and meta["num_cameras"] == str(CAMERAS)
    assert meta["corelib_version"] not in ("", "None")
    # the graph computes the teacher's descriptor of the checkpoint's weights
    feeds = {"images": torch.randn(2, 3, *SIZE), "camids": torch.tensor([2, -1])}
    np.testing.assert_allclose(onnx_features(out, feeds), torch_features(model.teacher, feeds).numpy(),
                               atol=1e-4, rtol=0)


def test_cli_replaces_only_an_onnx_model_it_wrote(tmp_path, capsys):
    ckpt, out, foreign = tmp_path / "best.pt", tmp_path / "model.onnx", tmp_path / "notes.onnx"
    _checkpoint(ckpt)
    foreign.write_text("not ours")
    assert main(["export", "onnx", str(ckpt), str(foreign)]) == 2
    assert "exists; choose another output path, or pass --overwrite" in capsys.readouterr().err
    assert main(["export", "onnx", str(ckpt), str(foreign), "--overwrite"]) == 2
    assert "not an ONNX model written by corelib export onnx; it is not replaced" in capsys.readouterr().err
    assert foreign.read_text() == "not ours"
    assert main(["export", "onnx", str(ckpt), str(out)]) == 0
    first = out.stat().st_mtime_ns
    assert main(["export", "onnx", str(ckpt), str(out)]) == 2
    assert out.stat().st_mtime_ns == first
    assert main(["export", "onnx", str(ckpt), str(out), "--overwrite", "--opset", "18"]) == 0
    assert onnx.load(str(out)).opset_import[0].version == 18
    with pytest.raises(NotOwnedError):
        export_onnx(ckpt, out)


def test_missing_onnx_names_the_extra_to_install(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "best.pt"
    _checkpoint(ckpt)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[onnx\]"'):
        export_onnx(ckpt, tmp_path / "m.onnx")
    assert main(["export", "onnx", str(ckpt), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install -e ".[onnx]"' in err
    assert not (tmp_path / "m.onnx").exists()
