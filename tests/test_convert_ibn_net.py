"""The ``ibn_net`` checkpoint format (corelib.models.convert.ibn_net): IBN-Net's release files and its training
script's checkpoints, written here from the official layer tables, converted into source networks.

The layouts are data read from IBN-Net's ``ibnnet/resnet_ibn.py`` (github.com/XingangPan/IBN-Net,
commit d167338) and ``imagenet.py``, not imported: each key and shape comes from the table below."""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch

from corelib.config import FinetuneCfg
from corelib.data import load_synthetic
from corelib.errors import CheckpointError, InvalidInputError
from corelib.models import build_model
from corelib.models.convert import convert_checkpoint
from corelib.models.convert import ibn_net as ibn_format
from corelib.runtime.checkpoint import load_checkpoint
from corelib.training import finetune, load_trained_model
from corelib.training.finetune import load_source_trunk

SMALL = (64, 32)

# ibnnet/resnet_ibn.py: resnet{18,34}_ibn_* build ResNet_IBN(BasicBlock_IBN, ...), resnet{50,101}_ibn_*
# ResNet_IBN(Bottleneck_IBN, ...), with these blocks per stage and ibn_cfg per variant.
BLOCKS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
IBN_CFG = {"a": ("a", "a", "a", None), "b": ("b", "b", None, None)}
PLANES = (64, 128, 256, 512)
# len(state_dict()) of the official models without fc.*, counted from that code: checks the table below
OFFICIAL_KEY_COUNTS = {"resnet18_ibn_a": 132, "resnet18_ibn_b": 121, "resnet34_ibn_a": 242, "resnet34_ibn_b": 217,
                       "resnet50_ibn_a": 344, "resnet50_ibn_b": 319, "resnet101_ibn_a": 684, "resnet101_ibn_b": 625}
VARIANTS = list(OFFICIAL_KEY_COUNTS)


def _bn(prefix: str, n: int) -> list[tuple[str, tuple, str]]:
    return [(f"{prefix}.weight", (n,), "scale"), (f"{prefix}.bias", (n,), "shift"),
            (f"{prefix}.running_mean", (n,), "shift"), (f"{prefix}.running_var", (n,), "var"),
            (f"{prefix}.num_batches_tracked", (), "count")]


def _in(prefix: str, n: int) -> list[tuple[str, tuple, str]]:
    # nn.InstanceNorm2d(n, affine=True): weight and bias, no running statistics
    return [(f"{prefix}.weight", (n,), "scale"), (f"{prefix}.bias", (n,), "shift")]


def official_layout(name: str) -> list[tuple[str, tuple, str]]:
    """``[(key, shape, kind)]`` of IBN-Net's model ``name`` in its ``state_dict()`` order, ``fc.*`` included.

    ResNet_IBN: conv1, bn1 (IN(64) when ibn_cfg[0] == 'b'), layer1-4, fc. _make_layer: block 0 gets
    None for 'b' and the downsample (1x1 conv + BN) when the stride or width changes; block i > 0 gets
    None for 'b' unless i == blocks - 1. A block: conv1, bn1 (IBN(planes): IN on int(planes / 2), BN on
    the rest, for 'a'), conv2, bn2, [conv3, bn3], IN(planes * expansion) for 'b', downsample."""
    depth, variant = int(name[6:].split("_")[0]), name[-1]
    kind, blocks = BLOCKS[depth]
    cfg, expansion = IBN_CFG[variant], (1 if kind == "basic" else 4)
    keys = [("conv1.weight", (64, 3, 7, 7), "conv")]
    keys += _in("bn1", 64) if cfg[0] == "b" else _bn("bn1", 64)
    inplanes = 64
    for stage, (planes, n, ibn) in enumerate(zip(PLANES, blocks, cfg), start=1):
        for i in range(n):
            block_ibn = None if ibn == "b" and i < n - 1 else ibn
            p = f"layer{stage}.{i}"
            first = (planes, inplanes, 3, 3) if kind == "basic" else (planes, inplanes, 1, 1)
            keys.append((f"{p}.conv1.weight", first, "conv"))
            if block_ibn == "a":
                keys += _in(f"{p}.bn1.IN", planes // 2) + _bn(f"{p}.bn1.BN", planes - planes // 2)
            else:
                keys += _bn(f"{p}.bn1", planes)
            keys.append((f"{p}.conv2.weight", (planes, planes, 3, 3), "conv"))
            keys += _bn(f"{p}.bn2", planes)
            if kind == "bottleneck":
                keys.append((f"{p}.conv3.weight", (planes * 4, planes, 1, 1), "conv"))
                keys += _bn(f"{p}.bn3", planes * 4)
            if block_ibn == "b":
                keys += _in(f"{p}.IN", planes * expansion)
            if i == 0 and (stage > 1 or inplanes != planes * expansion):
                keys.append((f"{p}.downsample.0.weight", (planes * expansion, inplanes, 1, 1), "conv"))
                keys += _bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    return keys + [("fc.weight", (1000, 512 * expansion), "fc"), ("fc.bias", (1000,), "shift")]


def marked_state(name: str, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Float32 tensors of the official shapes, each carrying a value no other holds: element 0 is a
    marker unique to the key (a count holds its index), the rest small random values that keep a
    deep trunk's output finite."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for index, (key, shape, kind) in enumerate(official_layout(name), start=1):
        if kind == "count":
            state[key] = torch.tensor(index, dtype=torch.long)
            continue
        if kind == "conv":
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
        elif kind == "fc":
            value = torch.randn(shape, generator=g) * 0.01
        elif kind == "scale":
            value = torch.rand(shape, generator=g) * 0.5 + 0.5
        elif kind == "var":
            value = torch.rand(shape, generator=g) + 1.0
        else:
            value = (torch.rand(shape, generator=g) - 0.5) * 0.2
        value.view(-1)[0] = (1.0 if kind in ("scale", "var") else 0.0) + index * 1e-4
        state[key] = value
    return state


def release_file(path, name: str, seed: int = 0):
    """A v1.0 release file: the plain state dict, the ImageNet fc included."""
    torch.save(marked_state(name, seed), path)
    return path


def training_file(path, name: str, seed: int = 0, *, epoch: int = 100):
    """What imagenet.py's save_checkpoint writes after ``epoch`` epochs: {'epoch', 'state_dict' (DataParallel:
    'module.' keys), 'acc', 'best_acc', 'optimizer': SGD's state_dict (a momentum buffer per parameter)}."""
    state = marked_state(name, seed)
    params = [k for k, _, kind in official_layout(name) if not k.endswith(("running_mean", "running_var",
                                                                           "num_batches_tracked"))]
    optimizer = {"state": {i: {"momentum_buffer": torch.zeros_like(state[k])} for i, k in enumerate(params)},
                 "param_groups": [{"lr": 0.001, "momentum": 0.9, "dampening": 0, "weight_decay": 1e-4,
                                   "nesterov": False, "params": list(range(len(params)))}]}
    torch.save({"epoch": epoch, "state_dict": OrderedDict((f"module.{k}", v) for k, v in state.items()),
                "acc": 93.1, "best_acc": 93.2, "optimizer": optimizer}, path)
    return path


def _markers(state: dict) -> dict:
    """{marker: key} of a converted network's trunk tensors (element 0 of a float tensor, a count's value)."""
    return {round(float(v.reshape(-1)[0]), 6): k for k, v in state.items() if k.startswith("trunk.")}


def _assert_every_tensor_found(written: dict, converted: dict, prefix: str) -> None:
    found = _markers(converted)
    for key, value in written.items():
        if key.startswith("fc."):
            continue
        target = found.get(round(float(value.reshape(-1)[0]), 6))
        assert target == f"trunk.{key}", f"{prefix}{key} landed at {target}"
        assert torch.equal(converted[target], value)


def test_the_table_is_the_official_layout():
    for name, count in OFFICIAL_KEY_COUNTS.items():
        keys = [k for k, _, _ in official_layout(name) if not k.startswith("fc.")]
        assert len(keys) == len(set(keys)) == count, name


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("resnet101") else n
                                  for n in VARIANTS])
def test_release_files_of_every_variant_convert(name, tmp_path):
    path = release_file(tmp_path / f"{name}.pth", name)
    result = convert_checkpoint(path, "ibn_net", tmp_path / "out.pt")
    record, conversion = result.record, result.conversion
    assert (conversion.stage, conversion.model_name) == ("pretrain", "source_net")
    assert conversion.model_args == {"backbone": name, "num_classes": 1}
    assert record["method"] is None and record["task"] is None
    assert record["inferred"]["backbone"].startswith(f"{name} (")
    assert record["inferred"]["release"].startswith("not a release file")
    # nothing dropped but the ImageNet head; nothing kept as built but the re-ID head
    assert sorted(record["dropped"]) == ["fc.bias", "fc.weight"] and "ImageNet head" in record["dropped"]["fc.weight"]
    assert sorted(record["filled"]) == ["bnneck.bias", "bnneck.num_batches_tracked", "bnneck.running_mean",
                                        "bnneck.running_var", "bnneck.weight", "classifier.weight"]
    saved = load_checkpoint(tmp_path / "out.pt")
    assert saved["converted"]["sha256"] == record["sha256"] and saved["stage"] == "pretrain"
    written = torch.load(path, weights_only=True)
    _assert_every_tensor_found(written, saved["model"], "")
    trained = load_trained_model(tmp_path / "out.pt")
    assert trained.stage == "pretrain" and trained.input_size == (256, 128)
    x = torch.randn(2, 3, *SMALL, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first, second = trained.model(x), trained.model(x)
    width = 512 if name.startswith(("resnet18", "resnet34")) else 2048
    assert first.shape == (2, width) and torch.isfinite(first).all() and torch.equal(first, second)


@pytest.mark.parametrize("name", ["resnet18_ibn_a", "resnet34_ibn_b"])
def test_training_script_checkpoints_convert(name, tmp_path):
    path = training_file(tmp_path / "checkpoint.pth", name, epoch=100)
    result = convert_checkpoint(path, "ibn_net", tmp_path / "out.pt")
    record = result.record
    assert result.conversion.model_args["backbone"] == name and result.conversion.epoch == 100
    assert "training script" in record["inferred"]["layout"]
    written = torch.load(path, weights_only=True)
    # the weights under state_dict.module.…; the SGD momentum buffers dropped with their reason, nothing else
    others = {k for k in record["dropped"] if not k.startswith("state_dict.module.fc.")}
    assert {k for k in record["dropped"] if k.startswith("state_dict.")} == {"state_dict.module.fc.weight",
                                                                            "state_dict.module.fc.bias"}
    assert others == {f"optimizer.state.{i}.momentum_buffer" for i in range(len(written["optimizer"]["state"]))}
    assert all("momentum" in record["dropped"][k] for k in others)
    converted = load_checkpoint(tmp_path / "out.pt")
    assert converted["epoch"] == 99  # 0-based, as the workbench's own checkpoints; load_trained_model says 100
    weights = {k[len("module."):]: v for k, v in written["state_dict"].items()}
    _assert_every_tensor_found(weights, converted["model"], "state_dict.module.")
    assert load_trained_model(tmp_path / "out.pt").epoch == 100


def test_a_file_without_batch_counters_and_a_release_match(tmp_path, monkeypatch):
    # IBN-Net's older files (PyTorch < 0.4.1) have no num_batches_tracked: the counters are kept as built
    state = {k: v for k, v in marked_state("resnet18_ibn_b").items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    result = convert_checkpoint(path, "ibn_net", tmp_path / "old.pt")
    counters = [k for k in result.record["filled"] if k.startswith("trunk.")]
    assert counters and all(k.endswith(".num_batches_tracked") for k in counters)
    assert all("0.4.1" in result.record["filled"][k] for k in counters)
    # the release is recognised by the SHA-256 prefix in its file name (torch.hub's convention)
    digest = result.record["sha256"]
    monkeypatch.setitem(ibn_format.RELEASE_FILES, "resnet18_ibn_b", f"resnet18_ibn_b-{digest[:8]}.pth")
    again = convert_checkpoint(path, "ibn_net", tmp_path / "again.pt")
    assert again.record["inferred"]["release"] == f"release file resnet18_ibn_b-{digest[:8]}.pth"


def test_files_of_another_layout_are_refused(tmp_path):
    import torchvision

    plain = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), plain)
    with pytest.raises(InvalidInputError, match=r"ibn_net: the tensors show a resnet50 file, not one of IBN-Net's"):
        convert_checkpoint(plain, "ibn_net", tmp_path / "a.pt")
    extra = marked_state("resnet18_ibn_a")
    extra["layer1.0.se.fc.weight"] = torch.zeros(4, 64)  # a tensor the trunk has no place for: never dropped silently
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(InvalidInputError, match=r"no place in the source_net network.*layer1\.0\.se\.fc\.weight"):
        convert_checkpoint(tmp_path / "extra.pth", "ibn_net", tmp_path / "b.pt")
    short = marked_state("resnet18_ibn_a")
    del short["layer2.1.bn2.running_var"]
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(InvalidInputError, match=r"no source in the file \(e\.g\. trunk\.layer2\.1\.bn2\.running_var\)"):
        convert_checkpoint(tmp_path / "short.pth", "ibn_net", tmp_path / "c.pt")
    assert not any((tmp_path / n).exists() for n in ("a.pt", "b.pt", "c.pt"))


class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    state = {f"module.{k}": v for k, v in marked_state("resnet18_ibn_a").items()}
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": state, "epoch": 1, "arch": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="system"):
        convert_checkpoint(path, "ibn_net", tmp_path / "out.pt")
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_the_trunk_moves_into_a_mean_teacher(tmp_path):
    path = release_file(tmp_path / "r18b.pth", "resnet18_ibn_b")
    convert_checkpoint(path, "ibn_net", tmp_path / "source.pt")
    source = load_checkpoint(tmp_path / "source.pt")
    mt = build_model("mean_teacher", backbone="resnet18_ibn_b", num_classes=5, weights=None)
    written = torch.load(path, weights_only=True)
    for net in (mt.student, mt.teacher):
        load_source_trunk(net, source["model"], where="converted")
        own = net.state_dict()
        assert all(torch.equal(own[f"trunk.{k}"], v) for k, v in written.items() if not k.startswith("fc."))
    with pytest.raises(InvalidInputError, match="resnet18_ibn_a trunk"):
        load_source_trunk(build_model("corereid_net", backbone="resnet18_ibn_a", num_classes=5, weights=None),
                          source["model"])


@pytest.mark.slow
def test_finetune_adapts_a_converted_ibn_net_file(synthetic_small, tmp_path):
    path = release_file(tmp_path / "r18b.pth", "resnet18_ibn_b")
    source = convert_checkpoint(path, "ibn_net", tmp_path / "source.pt").path
    target = load_synthetic(synthetic_small["cuhk_like"])
    cfg = FinetuneCfg.smoke(epochs=1, model={"backbone": "resnet18_ibn_b"})
    res = finetune(cfg, target, tmp_path / "run", source_checkpoint=source, progress=False)
    assert set(res.direct_transfer) >= {"mAP", "rank1"} and [h["epoch"] for h in res.history] == [1]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)


def test_the_input_size_is_an_option(tmp_path):
    """An ImageNet trunk has no input size of its own: persons by default, vehicles by the option."""
    path = release_file(tmp_path / "resnet18_ibn_b.pth", "resnet18_ibn_b")
    done = convert_checkpoint(path, "ibn_net", tmp_path / "vehicle.pt", img_size="256x256")
    assert done.conversion.input_size == (256, 256) and "option img_size" in done.record["inferred"]["input_size"]
    assert load_trained_model(tmp_path / "vehicle.pt").input_size == (256, 256)
