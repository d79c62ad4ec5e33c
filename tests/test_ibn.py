"""IBN-Net trunks (corelib.models.ibn): where the IN goes, parameter counts, shapes, IN/BN behaviour,
checkpoint layouts and the ImageNet fallback. Inputs are 64x32 so that everything runs on a CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from corelib.errors import CorelibError
from corelib.models import build_backbone, build_model, list_backbones
from corelib.models import ibn as ibn_mod
from corelib.models.ibn import IBN, IBNResNetTrunk, INAfterResidual

SMALL = (64, 32)
STAGES = ("layer1", "layer2", "layer3", "layer4")
IBN_NAMES = ["resnet18_ibn_a", "resnet18_ibn_b", "resnet34_ibn_a", "resnet34_ibn_b", "resnet50_ibn_a", "resnet50_ibn_b",
             "resnet101_ibn_a", "resnet101_ibn_b"]


@pytest.fixture(scope="module")
def r50a() -> IBNResNetTrunk:
    torch.manual_seed(0)
    return build_backbone("resnet50_ibn_a", weights=None)


@pytest.fixture(scope="module")
def r50b() -> IBNResNetTrunk:
    torch.manual_seed(0)
    return build_backbone("resnet50_ibn_b", weights=None)


def _with_fc_head(trunk: nn.Module) -> int:
    """Parameters of the trunk plus a 1000-way fc head, as IBN-Net's ImageNet models count them."""
    fc = nn.Linear(trunk.out_channels, 1000)
    return sum(p.numel() for p in trunk.parameters()) + sum(p.numel() for p in fc.parameters())


def test_registered_names():
    assert list_backbones("*ibn*") == IBN_NAMES


def test_parameter_counts(r50a, r50b):
    # IN(p/2) + BN(p/2) has the 2p affine parameters of BN(p): IBN-a counts as ResNet-50
    assert _with_fc_head(r50a) == 25_557_032 == sum(p.numel() for p in torchvision.models.resnet50().parameters())
    # IBN-b: the stem's IN(64) replaces BN(64); IN(256) and IN(512) add 2 * (256 + 512)
    assert _with_fc_head(r50b) == 25_558_568


def test_ibn_a_in_bn_split_per_stage(r50a):
    assert type(r50a.bn1) is nn.BatchNorm2d  # the stem is unchanged
    expected = {"layer1": (32, 32), "layer2": (64, 64), "layer3": (128, 128)}
    for stage in STAGES:
        for block in getattr(r50a, stage):
            assert not hasattr(block, "IN")
            assert type(block.bn2) is nn.BatchNorm2d and type(block.bn3) is nn.BatchNorm2d
            if block.downsample is not None:
                assert type(block.downsample[1]) is nn.BatchNorm2d
            if stage == "layer4":
                assert type(block.bn1) is nn.BatchNorm2d
                continue
            assert isinstance(block.bn1, IBN), f"{stage}: every block's bn1 is IBN"
            assert (block.bn1.IN.num_features, block.bn1.BN.num_features) == expected[stage]
            assert block.bn1.half == expected[stage][0] and block.bn1.IN.affine
            assert not block.bn1.IN.track_running_stats
    assert sum(isinstance(m, IBN) for m in r50a.modules()) == 13  # 3 + 4 + 6 blocks
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in r50a.layer4.modules())
    # BasicBlock trunks follow the same rule on their bn1
    r18 = build_backbone("resnet18_ibn_a", weights=None)
    assert [(b.bn1.IN.num_features, b.bn1.BN.num_features) for s in STAGES[:3] for b in getattr(r18, s)] == \
        [(32, 32)] * 2 + [(64, 64)] * 2 + [(128, 128)] * 2
    assert all(type(b.bn1) is nn.BatchNorm2d for b in r18.layer4) and type(r18.bn1) is nn.BatchNorm2d


def test_ibn_b_placement(r50b):
    assert type(r50b.bn1) is nn.InstanceNorm2d and r50b.bn1.num_features == 64 and r50b.bn1.affine
    assert not any(isinstance(m, IBN) for m in r50b.modules())
    with_in = {(stage, i): block.IN.num_features for stage in STAGES
               for i, block in enumerate(getattr(r50b, stage)) if hasattr(block, "IN")}
    assert with_in == {("layer1", 2): 256, ("layer2", 3): 512}
    assert isinstance(r50b.layer1[-1], INAfterResidual) and r50b.layer1[-1].IN.affine
    instance_norms = [name for name, m in r50b.named_modules() if isinstance(m, nn.InstanceNorm2d)]
    assert instance_norms == ["bn1", "layer1.2.IN", "layer2.3.IN"]


# IBN-Net's ibnnet/resnet_ibn.py (ResNet_IBN._make_layer): with ibn='b' a stage's blocks get None except
# the last (i == blocks - 1), whose IN(planes * expansion) follows the residual; ibn_cfg[0] == 'b' makes
# the stem's bn1 an IN(64). Parameters of the official models with their 1000-way fc, counted from that code.
IBN_B_LAYOUT = {
    "resnet18_ibn_b": ({"layer1.1.IN": 64, "layer2.1.IN": 128}, 11_689_896),
    "resnet34_ibn_b": ({"layer1.2.IN": 64, "layer2.3.IN": 128}, 21_798_056),
    "resnet50_ibn_b": ({"layer1.2.IN": 256, "layer2.3.IN": 512}, 25_558_568),
    "resnet101_ibn_b": ({"layer1.2.IN": 256, "layer2.3.IN": 512}, 44_550_696),
}


@pytest.mark.parametrize("name", list(IBN_B_LAYOUT))
def test_ibn_b_placement_of_every_depth(name):
    trunk = build_backbone(name, weights=None)
    after_block, params = IBN_B_LAYOUT[name]
    norms = {n: m.num_features for n, m in trunk.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    assert norms == {"bn1": 64, **after_block}
    assert all(m.affine and not m.track_running_stats for m in trunk.modules() if isinstance(m, nn.InstanceNorm2d))
    assert not any(isinstance(m, IBN) for m in trunk.modules())
    assert _with_fc_head(trunk) == params


def test_in_after_residual_comes_before_the_relu():
    torch.manual_seed(0)
    block = torchvision.models.resnet.Bottleneck(256, 64).eval()
    wrapped = INAfterResidual(block).eval()
    x = torch.randn(2, 256, 8, 4)
    with torch.no_grad():
        out = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
        expected = F.relu(wrapped.IN(out + x))
        assert torch.equal(wrapped(x), expected)
        wrapped.IN.weight.fill_(0)  # IN's affine then sets every value to relu(bias) = 0: it is the last norm
        assert torch.equal(wrapped(x), torch.zeros_like(x))


def test_state_dict_keys_are_ibn_nets():
    """The keys IBN-Net's checkpoints use: torchvision's, with bn1 split into bn1.IN / bn1.BN (IBN-a), or
    with an affine-only IN stem and ``layerN.M.IN`` after the stage's last block (IBN-b)."""
    plain = [k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")]
    expected_a = []
    for k in plain:
        parts = k.split(".")
        if parts[0] in ("layer1", "layer2", "layer3") and parts[2] == "bn1":
            stem = ".".join(parts[:3])
            if parts[3] in ("weight", "bias"):
                expected_a.append(f"{stem}.IN.{parts[3]}")
            expected_a.append(f"{stem}.BN.{parts[3]}")
        else:
            expected_a.append(k)
    assert set(build_backbone("resnet50_ibn_a", weights=None).state_dict()) == set(expected_a)
    expected_b = {k for k in plain if k not in ("bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked")}
    expected_b |= {"layer1.2.IN.weight", "layer1.2.IN.bias", "layer2.3.IN.weight", "layer2.3.IN.bias"}
    assert set(build_backbone("resnet50_ibn_b", weights=None).state_dict()) == expected_b


def test_output_shapes_and_last_stride(r50a, r50b):
    x = torch.randn(2, 3, *SMALL)
    with torch.no_grad():
        assert r50a.eval()(x).shape == (2, 2048, SMALL[0] // 16, SMALL[1] // 16)
        assert r50b.eval()(x).shape == (2, 2048, 4, 2)
        r18 = build_backbone("resnet18_ibn_a", weights=None).eval()
        assert r18(x).shape == (2, 512, SMALL[0] // 32, SMALL[1] // 32)  # BasicBlock: last stride 2
        assert build_backbone("resnet18_ibn_a", weights=None, last_stride=1).eval()(x).shape == (2, 512, 4, 2)
    assert r50a.last_stride == 1 and r50a.out_channels == 2048
    assert r50a.layer4[0].conv2.stride == (1, 1) and r50a.layer4[0].downsample[0].stride == (1, 1)
    assert list(r50a.cam_layers()) == list(STAGES) and r50b.cam_layers()["layer1"] is r50b.layer1[-1]


def test_in_takes_the_first_half():
    torch.manual_seed(0)
    norm = IBN(64).train()
    x = torch.randn(4, 64, 6, 5)
    other = x.clone()
    other[1:] = other[1:] * 3 + 1  # change the other images of the batch
    a, b = norm(x), norm(other)
    # channels 0..31 are normalised per image (instance statistics), 32..63 with the batch's
    assert torch.allclose(a[0, :32], b[0, :32], atol=1e-5)
    assert not torch.allclose(a[0, 32:], b[0, 32:], atol=1e-2)
    assert torch.allclose(a[:, :32], F.instance_norm(x[:, :32]), atol=1e-5)
    assert torch.allclose(a[:, 32:], F.batch_norm(x[:, 32:], None, None, training=True), atol=1e-5)
    # eval: BN uses running statistics, IN still each image's own (a rescaled image gives the same IN half)
    norm.eval()
    scaled = norm(x * 5 + 2)
    assert torch.allclose(scaled[:, :32], norm(x)[:, :32], atol=1e-4)
    assert not torch.allclose(scaled[:, 32:], norm(x)[:, 32:], atol=1e-2)
    assert IBN(65).half == 32 and IBN(65).BN.num_features == 33  # half = int(planes * 0.5)


def test_eval_output_does_not_depend_on_the_batch(r50a):
    torch.manual_seed(1)
    x = torch.randn(3, 3, *SMALL)
    with torch.no_grad():
        together = r50a.eval()(x)
        alone = r50a(x[:1])
        # (conv kernels for another batch size round differently: equal to float precision, not bit for bit)
        assert torch.allclose(together[:1], alone, rtol=1e-4, atol=1e-4)
        # in training mode the BN halves use the batch, so the other images matter
        r50a.train()
        try:
            assert not torch.allclose(r50a(x)[:1], r50a(x[:2])[:1], rtol=1e-2, atol=1e-2)
        finally:
            r50a.eval()


def _perturbed(name: str) -> IBNResNetTrunk:
    """A trunk whose norms are no longer at their initial values (so loading them is visible)."""
    torch.manual_seed(123)
    trunk = build_backbone(name, weights=None)
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                if m.running_mean is not None:
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    return trunk.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50_ibn_a", "resnet50_ibn_b"])
def test_both_published_layouts_load_exactly(name, tmp_path):
    ref = _perturbed(name)
    fc = {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}  # ImageNet head: ignored
    wrapped, plain = tmp_path / "wrapped.pth.tar", tmp_path / "plain.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in {**ref.state_dict(), **fc}.items()}, "epoch": 100}, wrapped)
    torch.save({**ref.state_dict(), **fc}, plain)
    x = torch.randn(2, 3, *SMALL)
    with torch.no_grad():
        expected = ref(x)
        for path in (wrapped, plain):
            torch.manual_seed(7)  # another random init: only the file makes the outputs equal
            trunk = build_backbone(name, weights=str(path)).eval()
            assert torch.equal(trunk(x), expected)


def test_a_file_without_batch_counters_loads(tmp_path):
    # files written before PyTorch 0.4.1 have no num_batches_tracked: the counters are the only keys excused
    ref = _perturbed("resnet18_ibn_a")
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    x = torch.randn(1, 3, *SMALL)
    with torch.no_grad():
        assert torch.equal(build_backbone("resnet18_ibn_a", weights=path).eval()(x), ref(x))
    torch.save({k: v for k, v in ref.state_dict().items() if k != "layer1.0.bn1.IN.bias"}, path)
    with pytest.raises(CorelibError, match=r"1 missing key\(s\): layer1\.0\.bn1\.IN\.bias\.$"):
        build_backbone("resnet18_ibn_a", weights=path)


def test_a_file_of_another_architecture_names_the_keys(tmp_path):
    r50 = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), r50)
    with pytest.raises(CorelibError, match=r"resnet50_ibn_a.*missing key.*layer1\.0\.bn1\.BN.*unexpected key.*"
                                          r"layer1\.0\.bn1\.running_mean.*backbone='resnet50'") as err:
        build_backbone("resnet50_ibn_a", weights=r50)
    assert isinstance(err.value, ValueError)
    a_file = tmp_path / "ibn_a.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _perturbed("resnet50_ibn_a").state_dict().items()}}, a_file)
    with pytest.raises(CorelibError, match=r"does not fit a resnet50_ibn_b.*backbone='resnet50_ibn_a'"):
        build_backbone("resnet50_ibn_b", weights=a_file)
    with pytest.raises(CorelibError, match=r"shape mismatch.*backbone='resnet50_ibn_a'"):
        build_backbone("resnet18_ibn_a", weights=a_file)
    with pytest.raises(FileNotFoundError, match="does not exist.*resnet50_ibn_a-d9d0bb7b.pth"):
        build_backbone("resnet50_ibn_a", weights=tmp_path / "nope.pth")


def test_imagenet_request_warns_once_and_gives_a_random_trunk(monkeypatch):
    monkeypatch.setattr(ibn_mod, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trunks = [build_backbone("resnet18_ibn_a", weights="imagenet") for _ in range(2)]
    msgs = [str(w.message) for w in caught if "resnet18_ibn_a" in str(w.message)]
    assert len(msgs) == 1
    assert "random" in msgs[0] and "weights=PATH" in msgs[0] and "resnet18_ibn_a-2f571257.pth" in msgs[0]
    with torch.no_grad():
        out = trunks[0].eval()(torch.randn(1, 3, *SMALL))
    assert out.shape == (1, 512, 2, 1) and torch.isfinite(out).all()


def test_bad_configuration_is_refused():
    with pytest.raises(CorelibError, match="ibn_cfg"):
        IBNResNetTrunk(50, ("a", "c", None, None))
    with pytest.raises(CorelibError, match="ratio"):
        IBN(64, ratio=1.0)


def test_source_net_with_an_ibn_trunk_and_its_cam_layers():
    from corelib.explain import trunk_layers, trunk_map

    torch.manual_seed(0)
    net = build_model("source_net", backbone="resnet50_ibn_a", num_classes=5, weights="none")
    x = torch.randn(2, 3, *SMALL)
    out = net.train()(x)
    assert out.features.shape == (2, 2048) and out.logits.shape == (2, 5)
    (out.logits.sum() + out.features.mean()).backward()
    assert net.trunk.layer1[0].bn1.IN.weight.grad is not None and torch.isfinite(net.trunk.conv1.weight.grad).all()
    net.eval()
    with torch.no_grad():
        d = net(x)
        assert d.shape == (2, 2048) and torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)
        assert list(trunk_layers(net)) == list(STAGES)
        assert trunk_map(net, x, "layer2").shape == (2, 512, 8, 4)


@pytest.mark.gpu
def test_cuda_bf16_channels_last_forward():
    net = build_model("corereid_net", backbone="resnet50_ibn_a", num_classes=10, weights=None)
    net = net.cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 256, 128, device="cuda").to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        d = net(x)
    assert d.shape == (4, 6144) and torch.isfinite(d.float()).all()
