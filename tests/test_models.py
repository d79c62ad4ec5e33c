"""The CORE-ReID networks: paper parameter counts, forward/backward contracts, attention, fusion,
mean teacher, weight loading and the model registry."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision

from corelib.errors import UnknownNameError
from corelib.models import (
    DEPTHS,
    ECAB,
    SECAB,
    CoreReIDNet,
    EnsembleFusion,
    FineTuneOutput,
    SourceOutput,
    bmfn,
    build_backbone,
    build_model,
    build_trunk,
    count_parameters,
    get_attention,
    list_backbones,
    list_models,
    measure_flops,
    paper_parameter_count,
    register_model,
)
from corelib.models import resnet as backbone_mod
from corelib.models.registry import backbone_info

SMALL = (64, 32)  # input size for CPU tests: R50+ maps 4x2, R18/34 maps 2x1


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_count_equals_the_papers_table(depth):
    net = build_model(f"corereid_resnet{depth}", num_classes=900, weights=None)
    expected = {18: 12_970_756, 34: 23_078_916, 50: 46_621_956, 101: 65_614_084, 152: 81_257_732}[depth]
    assert paper_parameter_count(net) == expected


def test_what_secab_and_fusion_add():
    for depth, c in ((18, 512), (50, 2048)):
        fusion = EnsembleFusion(c, secab=True)
        secab = count_parameters(fusion.secab)
        assert secab == {512: 139_776, 2048: 2_236_416}[c]
        assert count_parameters(fusion) == secab + 3 * 2 * c  # three BN1d (weight + bias)
        assert count_parameters(EnsembleFusion(c, secab=False)) == 3 * 2 * c


@pytest.mark.slow
@pytest.mark.parametrize("depth", DEPTHS)
def test_forward_backward_and_descriptor(depth):
    torch.manual_seed(0)
    net = CoreReIDNet(depth, num_classes=7, weights=None)
    x = torch.randn(2, 3, *SMALL)
    out = net(x)
    assert isinstance(out, FineTuneOutput)
    c = net.feature_dim
    assert c == (512 if depth < 50 else 2048)
    assert out.global_feat.shape == out.top_feat.shape == out.bottom_feat.shape == (2, c)
    assert out.logits.shape == (2, 7) and out.psi_top.shape == (2, c)
    loss = F.cross_entropy(out.logits, torch.tensor([1, 2])) + out.top_feat.pow(2).mean() + out.bottom_feat.pow(2).mean()
    loss.backward()
    assert net.trunk.conv1.weight.grad is not None and net.fc_top.weight.grad is not None
    assert torch.isfinite(net.trunk.conv1.weight.grad).all()
    net.eval()
    with torch.no_grad():
        d = net(x)
    assert d.shape == (2, 3 * c) == (2, {18: 1536, 34: 1536}.get(depth, 6144))
    assert torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.slow
def test_last_stride_rule_at_256x128():
    x = torch.zeros(1, 3, 256, 128)
    with torch.no_grad():
        assert build_trunk(50, weights=None).eval()(x).shape == (1, 2048, 16, 8)
        assert build_trunk(18, weights=None).eval()(x).shape == (1, 512, 8, 4)


def test_source_network_contract():
    net = build_model("source_resnet18", num_classes=5, weights=None)
    x = torch.randn(4, 3, *SMALL)
    out = net(x)
    assert isinstance(out, SourceOutput) and out.features.shape == (4, 512) and out.logits.shape == (4, 5)
    assert not net.bnneck.bias.requires_grad and net.classifier.bias is None
    net.eval()
    with torch.no_grad():
        d = net(x)
    assert d.shape == (4, 512) and torch.allclose(d.norm(dim=1), torch.ones(4), atol=1e-5)


def test_ecab_matches_its_definition():
    torch.manual_seed(0)
    ecab = ECAB(64)
    assert [m.out_channels for m in ecab.mlp if isinstance(m, torch.nn.Conv2d)] == [16, 4, 1, 4, 16, 64]
    assert all(m.bias is None for m in ecab.mlp if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(3, 64, 4, 2)
    m, a = x.amax(dim=(2, 3)), x.mean(dim=(2, 3))

    def mlp(v):
        h = v
        convs = [mod for mod in ecab.mlp if isinstance(mod, torch.nn.Conv2d)]
        for i, conv in enumerate(convs):
            h = h @ conv.weight[:, :, 0, 0].T
            if i < len(convs) - 1:
                h = torch.relu(h)
        return h

    weights = torch.sigmoid(mlp(m) + mlp(a))
    assert torch.allclose(ecab(x), (m + a) * weights, atol=1e-6)
    secab = SECAB(64)
    secab.load_state_dict(ecab.state_dict())
    assert torch.allclose(secab(x), weights, atol=1e-6)
    assert ECAB(512).mlp.widths == (512, 128, 32, 8, 32, 128, 512)
    assert count_parameters(ECAB(512)) == 139_776 and count_parameters(ECAB(2048)) == 2_236_416


def test_attention_registry_and_ablation_switches():
    assert get_attention("ecab") is ECAB
    with pytest.raises(UnknownNameError, match="ecab"):
        get_attention("cbam")
    full = CoreReIDNet(18, 10, weights=None)
    no_ecab = CoreReIDNet(18, 10, weights=None, ecab=False)
    assert count_parameters(full) - count_parameters(no_ecab) == 2 * 139_776
    gap = CoreReIDNet(18, 10, weights=None, pool="gap")
    assert gap.fc_top.in_features == 512 and full.fc_top.in_features == 1024
    with pytest.raises(ValueError, match="gap"):
        CoreReIDNet(18, 10, weights=None, pool="max")


def test_fusion_v1_and_v2_match_their_equations():
    torch.manual_seed(0)
    c = 64
    tau = torch.randn(2, c, 4, 2)
    psi_t, psi_b = torch.rand(2, c), torch.rand(2, c)
    v1 = EnsembleFusion(c, secab=False).eval()
    v2 = EnsembleFusion(c, secab=True).eval()
    assert v1.version == "v1" and v2.version == "v2"

    def pool(z):
        return z.mean(dim=(2, 3)) + z.amax(dim=(2, 3))

    def bn(layer, z):
        return (z - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps)  # weight 1, bias 0

    out1 = v1(tau, psi_t, psi_b)
    assert torch.allclose(out1.global_feat, bn(v1.bn_global, pool(tau)), atol=1e-5)
    assert torch.allclose(out1.top_feat, bn(v1.bn_top, pool(tau * psi_t[:, :, None, None])), atol=1e-5)
    out2 = v2(tau, psi_t, psi_b)
    tau2 = tau * v2.secab(tau)[:, :, None, None]
    assert torch.allclose(out2.bottom_feat, bn(v2.bn_bottom, pool(tau2 * psi_b[:, :, None, None])), atol=1e-5)
    # SECAB is a registered, saved module: the same input gives the same output every call
    assert any(k.startswith("secab.") for k in v2.state_dict())
    assert torch.equal(v2(tau, psi_t, psi_b).global_feat, out2.global_feat)


@pytest.mark.slow
def test_mean_teacher_ema_and_no_teacher_gradients():
    torch.manual_seed(0)
    mt = build_model("mean_teacher_resnet18", num_classes=6, weights=None, alpha=0.9)
    assert all(not p.requires_grad for p in mt.teacher.parameters())
    assert torch.equal(mt.teacher.classifier.weight, mt.student.classifier.weight)
    x = torch.randn(2, 3, *SMALL)
    opt = torch.optim.SGD([p for p in mt.student.parameters() if p.requires_grad], lr=0.1)
    mt.train()
    for step in range(3):
        old_teacher = {k: v.clone() for k, v in mt.teacher.named_parameters()}
        out = mt(x)
        loss = F.cross_entropy(out.logits, torch.tensor([0, 1])) + out.global_feat.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        a = mt.update_teacher()
        assert a == pytest.approx(min(1 - 1 / (step + 1), 0.9))
        for (k, t), s in zip(mt.teacher.named_parameters(), mt.student.parameters()):
            assert torch.allclose(t, a * old_teacher[k] + (1 - a) * s.detach(), atol=1e-6), k
            assert t.grad is None
    assert int(mt.step) == 3
    # buffers are not averaged: the teacher's running stats are its own
    assert not torch.equal(mt.teacher.trunk.bn1.running_mean, mt.student.trunk.bn1.running_mean)
    mt.eval()
    with torch.no_grad():
        assert mt(x).shape == (2, 1536)


def test_fused_features_and_classifier_reset():
    mt = build_model("mean_teacher_resnet18", num_classes=6, weights=None, fusion="v1").eval()
    with torch.no_grad():
        fused = mt.fused_features(torch.randn(3, 3, *SMALL))
    assert fused.global_feat.shape == fused.top_feat.shape == (3, 512) and mt.fusion.secab is None
    centroids = torch.randn(9, 512)
    mt.reset_classifiers(centroids)
    assert mt.student.num_classes == mt.teacher.num_classes == 9
    assert torch.allclose(mt.student.classifier.weight, F.normalize(centroids, dim=1))
    with pytest.raises(ValueError, match="512"):
        mt.student.reset_classifier(torch.randn(9, 100))
    with pytest.raises(ValueError, match="v1"):
        build_model("mean_teacher_resnet18", weights=None, fusion="v1", secab=True)


def test_registry_lists_names():
    names = list_models()
    assert "corereid_resnet50" in names and "source_resnet18" in names and "mean_teacher_resnet152" in names
    assert {"source_net", "corereid_net", "mean_teacher"} <= set(names)
    with pytest.raises(UnknownNameError, match="corereid_resnet50"):
        build_model("resnet50")
    # digits sort as numbers; a pattern selects; any name (not only resnet<d>) can be registered
    assert list_models("corereid_resnet*") == [f"corereid_resnet{d}" for d in DEPTHS]
    assert [n for n in list_backbones("resnet*") if n[6:].isdigit()] == [f"resnet{d}" for d in DEPTHS]
    assert list_backbones("*_ibn_*") == [f"resnet{d}_ibn_{v}" for d in (18, 34, 50, 101) for v in "ab"]
    register_model("zz_plain_name")(lambda **kw: torch.nn.Identity())
    try:
        assert "zz_plain_name" in list_models()
        with pytest.raises(UnknownNameError, match="did you mean 'zz_plain_name'"):
            build_model("zz_plain_nam")
    finally:
        from corelib.models import registry

        registry.MODELS.pop("zz_plain_name")
    with pytest.raises(UnknownNameError, match="unknown backbone 'resnet51'; did you mean 'resnet50'.*register_backbone"):
        build_model("corereid_net", backbone="resnet51", weights=None)


# every registered network and backbone, timm style: a new one is tested without editing this file
MODEL_NAMES = list_models()


def _tensors(out):
    return [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, torch.Tensor)]


def _context(name: str) -> dict:
    """What a builder takes from the data (``context_args``: TransReID's cameras, views and input size), at
    the CPU test size, with the small ViT (a ViT-B at 64 x 32 would only be slow)."""
    from corelib.models.registry import MODELS

    wants = getattr(MODELS.get(name), "context_args", ())
    extra = {"num_cameras": 2, "num_views": 3, "img_size": SMALL}
    return {**{k: extra[k] for k in wants}, **({"backbone": "transreid_vit_tiny"} if wants else {})}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_registered_model_keeps_the_contract(name):
    torch.manual_seed(0)
    net = build_model(name, num_classes=5, weights=None, **_context(name))
    x, camids = torch.randn(2, 3, *SMALL), torch.tensor([0, 1])
    out = net.train()(x, camids)
    assert isinstance(out, tuple) and hasattr(out, "_fields"), f"{name}: training mode must return a named structure"
    parts = _tensors(out)
    assert parts and all(torch.isfinite(t).all() for t in parts)
    sum(t.float().mean() for t in parts).backward()
    assert any(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.eval()
    with torch.no_grad():
        d = net(x, camids)
    assert d.dim() == 2 and d.shape[0] == 2 and torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_keeps_the_contract(name):
    # what the backbone declares it needs: a ViT lays its position embedding out for one input size
    # (img_size); the others take any
    trunk = build_backbone(name, weights=None, **{k: {"img_size": SMALL}[k] for k in backbone_info(name).needs})
    x = torch.randn(2, 3, *SMALL)
    with torch.no_grad():
        m = trunk.eval()(x, torch.tensor([0, 1]))
    assert m.dim() == 4 and m.shape[:2] == (2, trunk.out_channels) and torch.isfinite(m).all()
    layers = trunk.cam_layers()
    assert layers and all(isinstance(v, torch.nn.Module) for v in layers.values())


@pytest.mark.slow
def test_weights_from_a_local_file(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    trunk = build_trunk(18, weights=path)
    assert torch.equal(trunk.conv1.weight, ref.conv1.weight)
    assert torch.equal(trunk.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    # a checkpoint of another backbone names the mismatching keys and the fix
    other = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), other)
    with pytest.raises(ValueError, match=r"unexpected key.*layer1\.2.*backbone='resnet34'"):
        build_trunk(18, weights=other)
    r50 = tmp_path / "r50.pth"
    torch.save({"state_dict": torchvision.models.resnet50(weights=None).state_dict()}, r50)
    with pytest.raises(ValueError, match=r"shape mismatch.*resnet50.*backbone='resnet50'"):
        build_trunk(18, weights=r50)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_trunk(18, weights=tmp_path / "nope.pth")


def test_missing_imagenet_weights_warn_once_and_init_randomly(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.ResNet34_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    monkeypatch.setattr(backbone_mod, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_trunk(34, weights="imagenet")
        build_trunk(34, weights="imagenet")
    msgs = [str(w.message) for w in caught if "ImageNet weights" in str(w.message)]
    assert len(msgs) == 1 and "random" in msgs[0] and "weights=PATH" in msgs[0]


@pytest.mark.slow
def test_bmfn_is_flip_invariant_and_normalised():
    torch.manual_seed(0)
    net = CoreReIDNet(18, 4, weights=None).eval()
    x = torch.randn(2, 3, *SMALL)
    with torch.no_grad():
        a, b = bmfn(net, x), bmfn(net, torch.flip(x, dims=[3]))
        manual = F.normalize(net(x) + net(torch.flip(x, dims=[3])), dim=1)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, manual, atol=1e-5)


def test_flop_counter_on_resnet18():
    net = CoreReIDNet(18, 900, weights=None)
    gmacs = measure_flops(net) / 2e9
    assert gmacs == pytest.approx(1.185, abs=0.01)  # the paper: 1.18 GFLOPs (= MACs)
    assert backbone_info("resnet18").paper["gflops"] == 1.18


@pytest.mark.gpu
def test_cuda_bf16_channels_last_forward():
    net = CoreReIDNet(50, 10, weights=None).cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 256, 128, device="cuda").to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        d = net(x)
    assert d.shape == (4, 6144) and torch.isfinite(d.float()).all()
