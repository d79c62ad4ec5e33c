"""The conversion framework (corelib.models.convert) with a format of the test's own, the test protocol as a
network setting, CORE-ReID V1's split of odd map heights, and the published row beside a converted
checkpoint's scores. The formats of the official releases have their own test files
(test_convert_corereid_v1.py, test_convert_transreid.py, test_convert_ibn_net.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_convert_corereid_v1 import encoder_table, realistic, write_v1
from test_convert_transreid import TINY, TINY_OPTIONS, official_shapes, save_official

from corelib.config import MeanTeacherCfg, SourceModelCfg
from corelib.data import load_synthetic
from corelib.errors import CheckpointError, InvalidInputError, UnknownNameError
from corelib.explain import activation_maps, embed, similarity_cam
from corelib.export import check_export, export_onnx
from corelib.features import extract_features, uses_test_flip
from corelib.models import CameraBlind, build_model
from corelib.models.convert import FORMATS, Conversion, convert_checkpoint, read_foreign, register_format
from corelib.models.convert.core import MODEL_FIELDS
from corelib.published import published_beside
from corelib.training import analysis_features
from corelib.training.evaluate import load_trained_model

SIZE = (64, 32)


@pytest.fixture()
def toy_format():
    """A format whose files are a resnet18 source network's state dict under DataParallel's ``module.``,
    with one unused tensor the format documents."""

    @register_format("toy_format", description="a test's own", options={"task": "the task"})
    def toy(contents, *, config, options):
        sd = contents["state_dict"]
        mapping = {k[len("module."):]: f"state_dict.{k}" for k in sd
                   if k.startswith(("module.trunk.", "module.bnneck.", "module.classifier."))}
        return Conversion("pretrain", "source_net", {"backbone": "resnet18", "num_classes": 3}, mapping,
                          {"state_dict.module.unused": "never used by the forward"}, SIZE, epoch=contents.get("epoch"),
                          task=options.get("task"), method="CORE-ReID V1")

    yield "toy_format"
    FORMATS.pop("toy_format")


def _toy_file(path: Path, **extra) -> dict:
    torch.manual_seed(0)
    net = build_model("source_net", backbone="resnet18", num_classes=3, weights=None)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.unused"] = torch.ones(2)
    torch.save({"state_dict": state, "epoch": 7, "best_mAP": np.float64(0.25), **extra}, path)
    return net.state_dict()


def test_a_conversion_places_every_tensor_and_records_where_it_came_from(tmp_path, toy_format):
    original = _toy_file(tmp_path / "m.pth")
    done = convert_checkpoint(tmp_path / "m.pth", toy_format, tmp_path / "out.pt", task="market1501->cuhk03np")
    assert done.record["dropped"] == {"state_dict.module.unused": "never used by the forward"}
    assert done.record["sha256"] and done.record["source_file"] == "m.pth"
    trained = load_trained_model(tmp_path / "out.pt")
    assert (trained.stage, trained.epoch, trained.input_size) == ("pretrain", 7, SIZE)
    assert trained.converted["task"] == "market1501->cuhk03np"
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, original[key]), key


def test_numpy_values_are_read_as_numbers_and_pickled_code_is_refused(tmp_path):
    torch.save({"best_mAP": np.float64(0.5), "curve": np.arange(3)}, tmp_path / "np.pth")
    assert read_foreign(tmp_path / "np.pth") == {"best_mAP": 0.5, "curve": [0, 1, 2]}

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="pickled code"):
        read_foreign(tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_tensor_without_a_place_or_a_reason_is_refused(tmp_path, toy_format):
    _toy_file(tmp_path / "m.pth")
    state = torch.load(tmp_path / "m.pth", weights_only=False)
    state["state_dict"]["module.extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "more.pth")
    with pytest.raises(InvalidInputError, match="no documented reason to be dropped.*extra_head"):
        convert_checkpoint(tmp_path / "more.pth", toy_format, tmp_path / "out.pt")
    del state["state_dict"]["module.extra_head.weight"], state["state_dict"]["module.classifier.weight"]
    torch.save(state, tmp_path / "less.pth")
    with pytest.raises(InvalidInputError, match="have no source in the file .e.g. classifier.weight"):
        convert_checkpoint(tmp_path / "less.pth", toy_format, tmp_path / "out.pt")


def test_options_config_and_output_are_checked(tmp_path, toy_format):
    _toy_file(tmp_path / "m.pth")
    with pytest.raises(InvalidInputError, match="takes no option 'img_size'; its options: task"):
        convert_checkpoint(tmp_path / "m.pth", toy_format, tmp_path / "out.pt", img_size="256x128")
    with pytest.raises(InvalidInputError, match="no YAML config"):
        convert_checkpoint(tmp_path / "m.pth", toy_format, tmp_path / "out.pt", config=tmp_path / "c.yml")
    with pytest.raises(UnknownNameError, match="unknown checkpoint format"):
        convert_checkpoint(tmp_path / "m.pth", "no_such_format", tmp_path / "out.pt")
    foreign = tmp_path / "notes.pt"
    foreign.write_text("a file of the user's")
    with pytest.raises(CheckpointError, match="exists"):
        convert_checkpoint(tmp_path / "m.pth", toy_format, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint written by corelib convert"):
        convert_checkpoint(tmp_path / "m.pth", toy_format, foreign, overwrite=True)
    assert foreign.read_text() == "a file of the user's"
    convert_checkpoint(tmp_path / "m.pth", toy_format, tmp_path / "out.pt")
    convert_checkpoint(tmp_path / "m.pth", toy_format, tmp_path / "out.pt", overwrite=True)  # ours: replaced


def test_published_rows_are_put_beside_the_task_and_method_recorded():
    rows = published_beside("CORE-ReID V1", "market1501->cuhk03np", "cuhk03np")
    assert [r.mAP for r in rows] == [62.9]
    assert published_beside("CORE-ReID V1", "market1501->cuhk03np", "market1501") == []  # not the tested dataset
    assert published_beside("CORE-ReID V1", "market1501->dukemtmc", "dukemtmc") == []  # no such row
    assert published_beside(None, "market1501->cuhk03np", "cuhk03np") == []
    vit = published_beside("TransReID* (SIE camera)", "market1501", "market1501", backbone="ViT-B/16 (256×128)")
    assert [r.mAP for r in vit] == [88.9]


def test_the_test_protocol_is_the_networks_setting():
    corereid = build_model("corereid_net", backbone="resnet18", num_classes=3, weights=None)
    transreid = build_model("transreid_net", backbone="transreid_vit_tiny", num_classes=3, img_size=SIZE)
    pair = build_model("transreid_mean_teacher", backbone="transreid_vit_tiny", num_classes=3, img_size=SIZE)
    assert uses_test_flip(corereid) and uses_test_flip(CameraBlind(corereid))
    assert not uses_test_flip(transreid) and not uses_test_flip(CameraBlind(transreid)) and not uses_test_flip(pair)
    assert uses_test_flip(build_model("transreid_net", backbone="transreid_vit_tiny", num_classes=3, img_size=SIZE,
                                      test_flip=True))
    torch.manual_seed(0)
    images = torch.randn(4, 3, *SIZE)
    loader = [(images, torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.arange(4))]
    by_protocol = extract_features(transreid, loader, channels_last=False).features
    one_view = extract_features(transreid, loader, channels_last=False, flip=False).features
    flipped = extract_features(transreid, loader, channels_last=False, flip=True).features
    assert torch.equal(by_protocol, one_view) and not torch.allclose(by_protocol, flipped)


def test_odd_map_heights_split_as_set():
    torch.manual_seed(0)
    ours = build_model("corereid_net", backbone="resnet18", num_classes=3, weights=None).eval()
    v1 = build_model("corereid_net", backbone="resnet18", num_classes=3, weights=None, odd_height="drop").eval()
    v1.load_state_dict(ours.state_dict())
    even, odd = torch.randn(2, 512, 4, 2), torch.randn(2, 512, 5, 2)
    for a, b in zip(ours.halves(even), v1.halves(even)):
        assert torch.equal(a, b)
    top, bottom = v1.halves(odd)
    assert torch.equal(top, odd[:, :, :2]) and torch.equal(bottom, odd[:, :, 2:4])  # row 4 is in neither half
    assert torch.equal(ours.halves(odd)[1], odd[:, :, 2:])
    with pytest.raises(InvalidInputError, match="odd_height"):
        build_model("corereid_net", backbone="resnet18", num_classes=3, weights=None, odd_height="middle")


@pytest.mark.slow
def test_converted_checkpoints_work_everywhere(tmp_path, synthetic_small):
    """A converted V1 fine-tuning file and a converted TransReID file are studied like the workbench's own
    checkpoints: Grad-CAM and activation maps, the analysis chapters' descriptors (UMAP's input), the
    rank-list explorer's view, and the ONNX export of the test feature."""
    v1 = write_v1(tmp_path / "model_best.pth.tar", realistic(encoder_table(), 0))
    convert_checkpoint(v1, "corereid_v1", tmp_path / "v1.pt", img_size="64x32", task="market1501->cuhk03np")
    vit = save_official(tmp_path / "transformer_120.pth", official_shapes(**TINY, classes=5, sie_rows=3))
    convert_checkpoint(vit, "transreid", tmp_path / "vit.pt", **TINY_OPTIONS)
    target = load_synthetic(synthetic_small["cuhk_like"])
    for name in ("v1.pt", "vit.pt"):
        trained = load_trained_model(tmp_path / name)
        images = torch.randn(2, 3, *trained.input_size, generator=torch.Generator().manual_seed(0))
        references = embed(trained.model, images.flip(0))
        cams = similarity_cam(trained.model, images, references)
        assert cams.shape == (2, *trained.input_size) and np.isfinite(cams).all()
        assert torch.isfinite(activation_maps(trained.model, images)).all()
        feats = analysis_features(trained, target, max_images=12, progress=False)
        assert feats.features.shape[0] == 12 and torch.isfinite(feats.features).all()
        exported = export_onnx(tmp_path / name, tmp_path / f"{name}.onnx")
        assert check_export(exported, batch=3) < 1e-4


def test_the_converted_config_groups_the_network_as_the_stage_configs_do():
    """MODEL_FIELDS (the models layer cannot import corelib.config) names the fields of each stage's model group."""
    for stage, cls in (("pretrain", SourceModelCfg), ("finetune", MeanTeacherCfg)):
        fields = set(cls.__dataclass_fields__) - {"name", "weights", "net_args"}
        assert set(MODEL_FIELDS[stage]) == fields, stage


def test_a_conversion_can_be_returned_without_writing(tmp_path, toy_format):
    original = _toy_file(tmp_path / "m.pth")
    done = convert_checkpoint(tmp_path / "m.pth", toy_format)
    assert done.path is None and list(tmp_path.iterdir()) == [tmp_path / "m.pth"]
    assert done.checkpoint["stage"] == "pretrain" and done.checkpoint["cfg"]["augment"] == {"height": 64, "width": 32}
    assert all(torch.equal(v, original[k]) for k, v in done.model.state_dict().items())
