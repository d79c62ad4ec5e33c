"""TransReID (corelib.models.vit, corelib.models.transreid, corelib.losses.transreid, the recipes
transreid*): the layer arithmetic of ViT-B/16 with JPM and SIE, JPM's token order against the
official ``shuffle_unit`` (written out), SIE, timm-layout weights, the 0.5 / 0.5 input mapping, the
loss, and both training loops with the tiny ViT on CPU."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from corelib.config import AdaptLossCfg, SourceLossCfg
from corelib.errors import InvalidInputError, MissingFileError
from corelib.losses import SoftTripletLoss, build_criterion
from corelib.losses.registry import AdaptBatch
from corelib.models import build_backbone, build_model, model_context
from corelib.models.transreid import TransReIDNet, TransReIDOutput, jigsaw_order
from corelib.models.vit import IMAGENET_MEAN, IMAGENET_STD, TransReIDViT
from corelib.recipes import RecipeContext, resolve_recipe

PERSON = RecipeContext("person", True, "cuhk_like")
TINY = dict(backbone="transreid_vit_tiny", img_size=(64, 32))  # dim 96, depth 4, patch 8, stride 6: 10 x 5 patches


def tiny_net(num_classes: int = 5, num_cameras: int = 3, **kw) -> TransReIDNet:
    return build_model("transreid_net", num_classes=num_classes, num_cameras=num_cameras, **{**TINY, **kw})


def images(batch: int = 4, seed: int = 0, size=(64, 32)) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# 1. parameters from the layer shapes


def block_params(d: int, mlp_ratio: int = 4) -> int:
    """One timm Block of width d: qkv, proj, fc1, fc2 (with biases) and two LayerNorms."""
    h = mlp_ratio * d
    qkv = d * 3 * d + 3 * d
    proj = d * d + d
    fc1 = d * h + h
    fc2 = h * d + d
    norms = 2 * (2 * d)
    return qkv + proj + fc1 + fc2 + norms


def test_block_arithmetic_of_vit_b_is_written_out():
    assert 768 * 2304 + 2304 == 1_771_776  # qkv
    assert 768 * 768 + 768 == 590_592  # proj
    assert 768 * 3072 + 3072 == 2_362_368  # fc1
    assert 3072 * 768 + 768 == 2_360_064  # fc2
    assert 2 * 1536 == 3072  # norm1, norm2
    assert block_params(768) == 1_771_776 + 590_592 + 2_362_368 + 2_360_064 + 3072 == 7_087_872


def test_vit_b_with_jpm_and_sie_has_the_parameters_of_its_layer_shapes():
    d, n_patches, k, classes, cams = 768, 21 * 10, 4, 751, 6
    block = block_params(d)
    patch_embed = d * 3 * 16 * 16 + d
    trunk_no_head = patch_embed + d + (n_patches + 1) * d + 12 * block + 2 * d  # + cls, pos, 12 blocks, final norm
    assert trunk_no_head == 85_809_408
    last_block_and_norm = block + 2 * d
    assert last_block_and_norm == 7_089_408
    jpm = 2 * last_block_and_norm
    assert jpm == 14_178_816
    sie = cams * d
    assert sie == 4_608
    heads = (1 + k) * (2 * d + d * classes)  # BN-neck (weight, frozen bias) + bias-free classifier
    assert heads == 2_891_520
    want = trunk_no_head - last_block_and_norm + jpm + sie + heads
    assert want == 95_794_944

    net = build_model("transreid_net", backbone="transreid_vit_base", num_classes=751, num_cameras=6,
                      img_size=(256, 128))
    assert sum(p.numel() for p in net.parameters()) == want
    assert sum(p.numel() for p in net.b1.parameters()) == sum(p.numel() for p in net.b2.parameters()) == 7_089_408
    assert sum(p.numel() for p in net.b1[0].parameters()) == block
    assert tuple(net.b1[0].attn.qkv.weight.shape) == (2304, 768) and tuple(net.b1[0].mlp.fc1.weight.shape) == (3072, 768)
    assert len(net.trunk.blocks) == 11 and tuple(net.trunk.sie_embed.shape) == (6, 1, 768)
    assert net.b1[0] is not net.b2[0] and net.trunk.grid == (21, 10)
    # the trunk before JPM took its last block and norm away: the ViT without a head
    trunk = sum(p.numel() for p in net.trunk.parameters()) - sie + sum(p.numel() for p in net.b1.parameters())
    assert trunk == trunk_no_head
    assert net.descriptor_dim == 3840 and net.feature_dim == 768


def test_tiny_net_descriptor_and_every_parameter_is_used():
    torch.manual_seed(0)
    net = tiny_net(num_classes=5, num_cameras=3)
    assert net.descriptor_dim == 5 * 96
    x, cams = images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    net.eval()
    with torch.no_grad():
        desc = net(x, cams)
        f_g, f_l = net.features(x, cams)
    assert desc.shape == (6, 480)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(desc, F.normalize(torch.cat([f_g, (f_l / 4).flatten(1)], dim=1), dim=1))
    net.train()
    out = net(x, cams)
    assert isinstance(out, TransReIDOutput)
    assert (out.features.shape, out.logits.shape, out.local_features.shape, out.local_logits.shape) == (
        (6, 96), (6, 5), (6, 4, 96), (6, 4, 5))
    (out.features.sum() + out.logits.sum() + out.local_features.sum() + out.local_logits.sum()).backward()
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"bottleneck.bias"} | {f"local_bottlenecks.{j}.bias" for j in range(4)}
    unused = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert unused == []


# --------------------------------------------------------------------------------------------
# 2. JPM's token order against the official shuffle_unit

# The official TransReID code (model/make_model.py), applied to a tensor standing for the token
# indices arange(N + 1): shift with begin=1, patch shuffle over G groups, then k groups of N // k.
# Generated once with that script and written out here.
OFFICIAL_210 = [
    [5, 110, 6, 111, 7, 112, 8, 113, 9, 114, 10, 115, 11, 116, 12, 117, 13, 118, 14, 119, 15, 120, 16,
     121, 17, 122, 18, 123, 19, 124, 20, 125, 21, 126, 22, 127, 23, 128, 24, 129, 25, 130, 26, 131, 27,
     132, 28, 133, 29, 134, 30, 135],
    [31, 136, 32, 137, 33, 138, 34, 139, 35, 140, 36, 141, 37, 142, 38, 143, 39, 144, 40, 145, 41, 146,
     42, 147, 43, 148, 44, 149, 45, 150, 46, 151, 47, 152, 48, 153, 49, 154, 50, 155, 51, 156, 52, 157,
     53, 158, 54, 159, 55, 160, 56, 161],
    [57, 162, 58, 163, 59, 164, 60, 165, 61, 166, 62, 167, 63, 168, 64, 169, 65, 170, 66, 171, 67, 172,
     68, 173, 69, 174, 70, 175, 71, 176, 72, 177, 73, 178, 74, 179, 75, 180, 76, 181, 77, 182, 78, 183,
     79, 184, 80, 185, 81, 186, 82, 187],
    [83, 188, 84, 189, 85, 190, 86, 191, 87, 192, 88, 193, 89, 194, 90, 195, 91, 196, 92, 197, 93, 198,
     94, 199, 95, 200, 96, 201, 97, 202, 98, 203, 99, 204, 100, 205, 101, 206, 102, 207, 103, 208, 104,
     209, 105, 210, 106, 1, 107, 2, 108, 3],
]
OFFICIAL_128 = [
    [5, 69, 6, 70, 7, 71, 8, 72, 9, 73, 10, 74, 11, 75, 12, 76, 13, 77, 14, 78, 15, 79, 16, 80, 17, 81,
     18, 82, 19, 83, 20, 84],
    [21, 85, 22, 86, 23, 87, 24, 88, 25, 89, 26, 90, 27, 91, 28, 92, 29, 93, 30, 94, 31, 95, 32, 96, 33,
     97, 34, 98, 35, 99, 36, 100],
    [37, 101, 38, 102, 39, 103, 40, 104, 41, 105, 42, 106, 43, 107, 44, 108, 45, 109, 46, 110, 47, 111,
     48, 112, 49, 113, 50, 114, 51, 115, 52, 116],
    [53, 117, 54, 118, 55, 119, 56, 120, 57, 121, 58, 122, 59, 123, 60, 124, 61, 125, 62, 126, 63, 127,
     64, 128, 65, 1, 66, 2, 67, 3, 68, 4],
]


def official_shuffle_unit(features: torch.Tensor, shift: int, group: int, begin: int = 1) -> torch.Tensor:
    """The official code's shuffle_unit, verbatim in its operations."""
    batchsize, dim = features.size(0), features.size(-1)
    x = torch.cat([features[:, begin - 1 + shift:], features[:, begin:begin - 1 + shift]], dim=1)
    try:
        x = x.view(batchsize, group, -1, dim)
    except RuntimeError:
        x = torch.cat([x, x[:, -2:-1, :]], dim=1)
        x = x.view(batchsize, group, -1, dim)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, dim)


def official_groups(n: int, shift: int, groups: int = 2, k: int = 4) -> list[list[int]]:
    tokens = torch.arange(n + 1, dtype=torch.float64).view(1, n + 1, 1)
    x = official_shuffle_unit(tokens, shift, groups)
    length = n // k
    return [x[0, j * length:(j + 1) * length, 0].long().tolist() for j in range(k)]


def test_jigsaw_order_equals_the_official_code_written_out():
    assert [len(g) for g in OFFICIAL_210] == [52] * 4 and [len(g) for g in OFFICIAL_128] == [32] * 4
    assert OFFICIAL_210[0][:4] == [5, 110, 6, 111]
    assert jigsaw_order(210, shift=5, groups=2, num_groups=4).tolist() == OFFICIAL_210
    assert jigsaw_order(128, shift=5, groups=2, num_groups=4).tolist() == OFFICIAL_128
    assert jigsaw_order(210).tolist() == OFFICIAL_210  # the defaults are m = 5, G = 2, k = 4
    # the literals are the official operations (guards the literals themselves)
    assert official_groups(210, 5) == OFFICIAL_210 and official_groups(128, 5) == OFFICIAL_128
    flat = jigsaw_order(210).flatten().tolist()
    assert 0 not in flat and len(set(flat)) == 208  # no [cls], 210 -> 208 distinct patches


def test_jigsaw_order_of_an_odd_count_duplicates_like_the_official_code():
    order = jigsaw_order(441, shift=8, groups=2, num_groups=4)
    assert order.shape == (4, 110)
    assert order.tolist() == official_groups(441, 8)
    # 441 shifted -> 442 with the second-to-last token duplicated: the halves are 221 long, not 220.5
    assert order[0, :4].tolist() == [8, 229, 9, 230]
    assert order[3, -4:].tolist() == [226, 6, 227, 7]  # 6 is the second-to-last token after the shift
    assert order[1, :2].tolist() == [63, 284]


def test_the_paper_reading_moves_shift_patches():
    code = jigsaw_order(210, shift=5, reading="code")
    paper = jigsaw_order(210, shift=5, reading="paper")
    assert code[0, 0].item() == 5 and paper[0, 0].item() == 6
    assert paper.tolist() == official_groups(210, 6)  # the code reading of shift + 1
    assert paper.tolist() != code.tolist()
    assert paper[3, -6:].tolist() == [107, 2, 108, 3, 109, 4]  # patches 1..5 moved to the end (5 in the cut tail)
    assert code[3, -6:].tolist() == [106, 1, 107, 2, 108, 3]  # patches 1..4 moved
    with pytest.raises(InvalidInputError, match="shift_reading"):
        jigsaw_order(210, reading="neither")


def test_features_read_exactly_the_jigsaw_tokens():
    torch.manual_seed(1)
    net = tiny_net(num_classes=5, num_cameras=3).eval()
    assert net.trunk.num_patches == 50
    assert net.order.tolist() == official_groups(50, 5)
    x, cams = images(3, seed=2), torch.tensor([0, 2, -1])
    with torch.no_grad():
        f_g, f_l = net.features(x, cams)
        tokens = net.trunk.forward_tokens(x, cams)  # after blocks 1..3 (block 4 is b1), un-normalised
        assert torch.allclose(f_g, net.b1(tokens)[:, 0], atol=1e-6)
        shuffled = official_shuffle_unit(tokens, 5, 2)
        length = 50 // 4
        for j in range(4):
            manual = net.b2(torch.cat([tokens[:, :1], tokens[:, net.order[j]]], dim=1))[:, 0]
            torch.testing.assert_close(f_l[:, j], manual, atol=1e-6, rtol=1e-5)
            official = net.b2(torch.cat([tokens[:, :1], shuffled[:, j * length:(j + 1) * length]], dim=1))[:, 0]
            torch.testing.assert_close(f_l[:, j], official, atol=1e-6, rtol=1e-5)
        # the groups are led by the trunk's [cls], not by f_g, and differ from each other
        assert not torch.allclose(f_l[:, 0], f_l[:, 1])
    no_jpm = tiny_net(jpm=False)
    assert not hasattr(no_jpm, "b1") and len(no_jpm.trunk.blocks) == 4 and no_jpm.descriptor_dim == 96


# --------------------------------------------------------------------------------------------
# 3. SIE


def test_camera_ids_change_the_features_in_train_and_eval_mode():
    torch.manual_seed(2)
    net = tiny_net(num_cameras=3, backbone_args={"drop_path": 0.0})
    x = images(4, seed=3)
    zeros, twos = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    net.train()
    a, a2, b = net(x, zeros).features, net(x, zeros).features, net(x, twos).features
    assert torch.equal(a, a2)  # deterministic without stochastic depth: the difference is the cameras'
    assert not torch.allclose(a, b, atol=1e-4)
    net.eval()
    with torch.no_grad():
        assert not torch.allclose(net(x, zeros), net(x, twos), atol=1e-4)


def test_an_unknown_camera_gets_the_mean_row_and_out_of_range_is_refused():
    torch.manual_seed(3)
    trunk = build_backbone("transreid_vit_tiny", weights=None, img_size=(64, 32), num_cameras=3).eval()
    table = trunk.sie_embed.detach()
    assert tuple(table.shape) == (3, 1, 96) and trunk.sie_coe == 3.0
    x = images(3, seed=4)
    with torch.no_grad():
        base = trunk.patch_embed(x * trunk.input_scale + trunk.input_shift)
        base = torch.cat([trunk.cls_token.expand(3, -1, -1), base], dim=1) + trunk.pos_embed
        cams = torch.tensor([2, 0, 1])
        # lambda * SIE[cam] on every token, [cls] included
        torch.testing.assert_close(trunk.embed(x, cams), base + 3.0 * table[cams])
        blind = base + 3.0 * table.mean(dim=0, keepdim=True)
        torch.testing.assert_close(trunk.embed(x, None), blind)
        torch.testing.assert_close(trunk.embed(x, torch.full((3,), -1)), blind)
        mixed = trunk.embed(x, torch.tensor([1, -1, 0]))
        torch.testing.assert_close(mixed[0], (base + 3.0 * table[1])[0])
        torch.testing.assert_close(mixed[1], blind[1])
        torch.testing.assert_close(mixed[2], (base + 3.0 * table[0])[2])
        torch.testing.assert_close(trunk.forward_tokens(x, None), trunk.forward_tokens(x, torch.full((3,), -1)))
    with pytest.raises(InvalidInputError, match=r"index 3 .*table of 3 rows"):
        trunk(x, torch.tensor([0, 3, 1]))
    net = tiny_net(num_cameras=3).eval()
    with pytest.raises(InvalidInputError, match="3 rows"):
        net(x, torch.tensor([5, 0, 0]))


def test_no_sie_table_without_cameras_or_with_sie_false():
    for net in (tiny_net(num_cameras=3, sie=False), tiny_net(num_cameras=1), tiny_net(num_cameras=0)):
        assert net.trunk.sie_embed is None
        assert not any("sie" in n for n, _ in net.named_parameters())
        net.eval()
        x = images(2, seed=5)
        with torch.no_grad():
            assert torch.equal(net(x, torch.tensor([0, 2])), net(x, None))
    with_sie = tiny_net(num_cameras=3)
    without = tiny_net(num_cameras=3, sie=False)
    assert sum(p.numel() for p in with_sie.parameters()) - sum(p.numel() for p in without.parameters()) == 3 * 96


def test_the_dataset_camera_count_is_the_model_context(data):
    source, target = data

    def cameras(ds) -> int:  # written out: the largest camid of any split + 1
        return 1 + max(s.camid for split in (ds.train, ds.query, ds.gallery) for s in split)

    def views(ds) -> int:  # the largest viewid + 1, 0 for data without views
        return 1 + max((s.viewid for split in (ds.train, ds.query, ds.gallery) for s in split
                        if getattr(s, "viewid", None) is not None), default=-1)

    assert cameras(source) > 1 and cameras(target) > 1 and cameras(source) != cameras(target)
    for name in ("transreid_net", "transreid_mean_teacher"):
        assert model_context(name, source, 64, 32) == {"num_cameras": cameras(source), "num_views": views(source),
                                                       "img_size": [64, 32]}
        assert model_context(name, target, 256, 128) == {"num_cameras": cameras(target), "num_views": views(target),
                                                         "img_size": [256, 128]}
    assert model_context("source_net", source, 64, 32) == {}


# --------------------------------------------------------------------------------------------
# 4. timm-layout weights


def timm_state(dim: int = 64, depth: int = 2, heads: int = 2, seed: int = 0) -> dict:
    """A timm vit_*_patch16_224 state dict (1 + 14 x 14 positions, a head), every tensor random."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, num_classes=10)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) for k, v in vit.state_dict().items()}
    assert state["pos_embed"].shape == (1, 197, dim) and "head.weight" in state
    return state


SMALL = dict(embed_dim=64, depth=2, num_heads=2, patch_size=16, stride=12)


def test_a_timm_file_loads_with_its_position_grid_resampled(tmp_path):
    state = timm_state()
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    vit = build_backbone("transreid_vit_tiny", weights=path, img_size=(256, 128), num_cameras=3, **SMALL)
    assert vit.grid == (21, 10) and vit.pos_embed.shape == (1, 211, 64)
    own = vit.state_dict()
    # TransReID's resize_pos_embed: the 14 x 14 grid bilinearly to 21 x 10, the [cls] position kept
    grid = state["pos_embed"][:, 1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(21, 10), mode="bilinear", align_corners=False)
    want = torch.cat([state["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, 210, 64)], dim=1)
    torch.testing.assert_close(own["pos_embed"], want, atol=1e-6, rtol=1e-5)
    assert torch.equal(own["pos_embed"][:, 0], state["pos_embed"][:, 0])
    for k, v in state.items():
        if k.startswith("head") or k == "pos_embed":
            continue
        assert torch.equal(own[k], v), k
    assert not any(k.startswith("head") for k in own)
    assert vit.sie_embed.shape == (3, 1, 64)  # the file has none: the table stays the new one
    # a checkpoint wrapper and DataParallel prefixes are accepted
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    other = build_backbone("transreid_vit_tiny", weights=wrapped, img_size=(256, 128), **SMALL)
    assert all(torch.equal(other.state_dict()[k], own[k]) for k in own if not k.startswith("sie"))

    # through the network: the file's last block and norm become b1, b2 their copy
    net = build_model("transreid_net", backbone="transreid_vit_tiny", num_classes=7, weights=path, img_size=(256, 128),
                      backbone_args=SMALL)
    for prefix in ("b1.0.", "b2.0."):
        block = {k[len(prefix):]: v for k, v in net.state_dict().items() if k.startswith(prefix)}
        assert block and all(torch.equal(v, state[f"blocks.1.{k}"]) for k, v in block.items())
    assert torch.equal(net.b1[1].weight.detach(), state["norm.weight"])
    assert torch.equal(net.trunk.blocks[0].attn.qkv.weight.detach(), state["blocks.0.attn.qkv.weight"])


def test_a_file_that_does_not_fit_is_refused(tmp_path):
    narrow = tmp_path / "narrow.pth"
    torch.save(timm_state(dim=32), narrow)
    with pytest.raises(InvalidInputError) as info:
        build_backbone("transreid_vit_tiny", weights=narrow, img_size=(256, 128), **SMALL)
    msg = str(info.value)
    keys = timm_state(dim=32).keys()
    named = re.findall(r"([\w.]+) is \(", msg)
    assert named and named[0] in keys, msg
    assert "expected" in msg and "dim 64" in msg
    shallow = tmp_path / "shallow.pth"
    torch.save(timm_state(depth=1), shallow)
    with pytest.raises(InvalidInputError, match=r"blocks\.1\.[\w.]+ is missing"):
        build_backbone("transreid_vit_tiny", weights=shallow, img_size=(256, 128), **SMALL)
    with pytest.raises(MissingFileError, match="does not exist"):
        build_backbone("transreid_vit_tiny", weights=tmp_path / "absent.pth", img_size=(256, 128), **SMALL)


def test_a_deeper_file_is_refused(tmp_path):
    deep = tmp_path / "deep.pth"
    torch.save(timm_state(depth=3), deep)
    with pytest.raises(InvalidInputError, match="blocks.2"):
        build_backbone("transreid_vit_tiny", weights=deep, img_size=(256, 128), **SMALL)


def test_imagenet_weights_warn_and_stay_random(monkeypatch):
    import corelib.models.vit as vit

    monkeypatch.setattr(vit, "_WARNED", set())  # the warning is once per process and name
    torch.manual_seed(4)
    with pytest.warns(UserWarning, match="transreid_vit_tiny.*random"):
        warned = build_backbone("transreid_vit_tiny", weights="imagenet", img_size=(64, 32))
    torch.manual_seed(4)
    plain = build_backbone("transreid_vit_tiny", weights=None, img_size=(64, 32))
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in warned.state_dict().items())


# --------------------------------------------------------------------------------------------
# 5. input normalisation


def test_half_input_norm_equals_the_imagenet_trunk_fed_half_normalised_images():
    torch.manual_seed(5)
    half = TransReIDViT((64, 32), patch_size=8, stride=6, embed_dim=96, depth=2, num_heads=4, input_norm="half")
    plain = TransReIDViT((64, 32), patch_size=8, stride=6, embed_dim=96, depth=2, num_heads=4, input_norm="imagenet")
    plain.load_state_dict(half.state_dict())
    half.eval(), plain.eval()
    img = torch.rand(3, 3, 64, 32, generator=torch.Generator().manual_seed(6))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    imagenet_input, half_input = (img - mean) / std, (img - 0.5) / 0.5
    with torch.no_grad():
        a = half.forward_tokens(imagenet_input)
        b = plain.forward_tokens(half_input)
        c = plain.forward_tokens(imagenet_input)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a, c, atol=1e-3)  # the mapping matters
    with pytest.raises(InvalidInputError, match="input_norm"):
        TransReIDViT((64, 32), patch_size=8, stride=6, embed_dim=96, depth=2, num_heads=4, input_norm="0.5")


# --------------------------------------------------------------------------------------------
# 6. the loss


def soft_triplet(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Written out: per anchor, softplus(hardest positive - hardest negative), Euclidean distances."""
    d = torch.cdist(f.double(), f.double())
    losses = []
    for i in range(len(y)):
        pos = [d[i, j] for j in range(len(y)) if y[j] == y[i] and j != i]
        neg = [d[i, j] for j in range(len(y)) if y[j] != y[i]]
        losses.append(torch.log1p(torch.exp(max(pos) - min(neg))))
    return torch.stack(losses).mean()


def random_output(k: int = 4, seed: int = 7) -> tuple[TransReIDOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, d, c = 12, 8, 5
    y = torch.tensor([0, 1, 2, 3]).repeat_interleave(3)
    out = TransReIDOutput(torch.randn(b, d, generator=g), torch.randn(b, c, generator=g),
                          torch.randn(b, k, d, generator=g), torch.randn(b, k, c, generator=g))
    return out, y


def test_transreid_loss_equals_the_official_weighting():
    out, y = random_output()
    assert SoftTripletLoss()(out.features, y).item() == pytest.approx(soft_triplet(out.features, y).item(), rel=1e-5)
    ce_g = F.cross_entropy(out.logits, y)
    ce_l = torch.stack([F.cross_entropy(out.local_logits[:, j], y) for j in range(4)]).mean()
    t_g = soft_triplet(out.features, y)
    t_l = torch.stack([soft_triplet(out.local_features[:, j], y) for j in range(4)]).mean()
    want = {"id": 0.5 * ce_g + 0.5 * ce_l, "triplet": 0.5 * t_g + 0.5 * t_l}
    want["loss"] = want["id"] + want["triplet"]

    crit = build_criterion(SourceLossCfg(name="transreid", label_smooth=0.0), stage="pretrain")
    assert crit.terms == ("loss", "id", "triplet")
    terms = crit(out, y)
    for key in ("loss", "id", "triplet"):
        assert terms[key].item() == pytest.approx(float(want[key]), rel=1e-5), key

    paper = build_criterion(SourceLossCfg(name="transreid", label_smooth=0.0, jpm_weighting="paper"), stage="pretrain")
    twice = paper(out, y)
    for key in ("loss", "id", "triplet"):
        assert twice[key].item() == pytest.approx(2 * terms[key].item(), rel=1e-6), key

    adapt = build_criterion(AdaptLossCfg(name="transreid", label_smooth=0.0), stage="finetune")
    assert adapt.levels == 1
    fine = adapt(AdaptBatch(outputs=[out], labels=[y], fused=[None], gather=lambda t: t))
    assert fine["loss"].item() == pytest.approx(float(want["loss"]), rel=1e-5)


def test_transreid_loss_without_jpm_is_ce_plus_triplet_under_both_readings():
    out, y = random_output(k=0)
    want = F.cross_entropy(out.logits, y) + soft_triplet(out.features, y)
    for weighting in ("code", "paper"):
        crit = build_criterion(SourceLossCfg(name="transreid", label_smooth=0.0, jpm_weighting=weighting),
                               stage="pretrain")
        assert crit(out, y)["loss"].item() == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(InvalidInputError, match="TransReID network"):
        crit(type("Plain", (), {"features": out.features, "logits": out.logits})(), y)


# --------------------------------------------------------------------------------------------
# 7. both loops on CPU with the smoke recipes


@pytest.fixture(scope="module")
def data(synthetic_small):
    from corelib.data import load_synthetic

    return load_synthetic(synthetic_small["market_like"]), load_synthetic(synthetic_small["cuhk_like"])


@pytest.fixture(scope="module")
def transreid_source(data, tmp_path_factory):
    """The smoke ``transreid`` source network (tiny ViT, SIE, JPM), one epoch."""
    from corelib.training import pretrain

    source, _ = data
    run = tmp_path_factory.mktemp("transreid_source")
    cfg = resolve_recipe("pretrain", PERSON, recipe="transreid", smoke=True, overrides={"epochs": 1})
    assert (cfg.model.name, cfg.model.backbone, cfg.loss.name) == ("transreid_net", "transreid_vit_tiny", "transreid")
    return run, pretrain(cfg, source, run, progress=False)


def descriptors_equal(model_a, model_b, num_cameras: int) -> torch.Tensor:
    x = images(4, seed=8)
    cams = torch.arange(4) % num_cameras if num_cameras > 1 else None
    with torch.no_grad():
        a, b = model_a.eval()(x, cams), model_b.eval()(x, cams)
    assert torch.equal(a, b)
    return a


@pytest.mark.slow
def test_transreid_source_training_logs_its_terms_and_rebuilds(data, transreid_source):
    from corelib.models import camera_count
    from corelib.training import evaluate_checkpoint, load_checkpoint, load_trained_model

    source, _ = data
    run, res = transreid_source
    assert res.loss_terms == ("loss", "id", "triplet")
    last = res.history[-1]
    assert all(torch.isfinite(torch.tensor(last[k])) for k in ("loss", "id", "triplet"))
    assert last["loss"] == pytest.approx(last["id"] + last["triplet"], rel=1e-5)
    state = load_checkpoint(res.best_checkpoint)
    cams = camera_count(source)
    assert state["model_name"] == "transreid_net"
    assert state["model_args"]["num_cameras"] == cams and list(state["model_args"]["img_size"]) == [64, 32]
    assert tuple(state["model"]["trunk.sie_embed"].shape) == (cams, 1, 96)
    trained = load_trained_model(res.best_checkpoint)
    assert isinstance(trained.model, TransReIDNet) and trained.model.descriptor_dim == 480
    ref = build_model("transreid_net", num_classes=source.num_train_pids, num_cameras=cams, **TINY)
    ref.load_state_dict(state["model"])
    assert descriptors_equal(trained.model, ref, cams).shape == (4, 480)
    m = evaluate_checkpoint(res.best_checkpoint, source)
    assert m["mAP"] == pytest.approx(res.history[res.best_epoch - 1]["source_mAP"], abs=1e-6)


@pytest.mark.slow
def test_transreid_uda_starts_the_target_sie_from_the_source_mean(data, transreid_source, tmp_path, monkeypatch):
    from corelib.models import MeanTeacher, camera_count
    from corelib.training import evaluate_checkpoint, finetune, load_checkpoint, load_trained_model

    _, target = data
    run, src = transreid_source
    source_table = load_checkpoint(src.best_checkpoint)["model"]["trunk.sie_embed"]
    assert not torch.allclose(source_table[0], source_table[1])  # the rows differ: their mean is a real check
    started = []
    original = TransReIDNet.load_source_state

    def spy(self, state, *, where="source checkpoint"):
        original(self, state, where=where)
        started.append(self.trunk.sie_embed.detach().clone())

    monkeypatch.setattr(TransReIDNet, "load_source_state", spy)
    cfg = resolve_recipe("finetune", PERSON, recipe="transreid", smoke=True, overrides={"epochs": 1})
    assert (cfg.model.name, cfg.cluster.labeler, cfg.model.alpha) == ("transreid_mean_teacher", "kmeans", 0.999)
    res = finetune(cfg, target, tmp_path, source_checkpoint=src.best_checkpoint, progress=False)
    cams = camera_count(target)
    assert len(started) == 2  # student and teacher
    for table in started:
        assert table.shape == (cams, 1, 96)
        for row in table:
            torch.testing.assert_close(row, source_table.mean(dim=0))
    assert res.loss_terms == ("loss", "id", "triplet")
    h = res.history[-1]
    assert all(torch.isfinite(torch.tensor(h[k])) for k in ("loss", "id", "triplet"))
    assert h["clusters_global"] == 8
    state = load_checkpoint(res.last_checkpoint)
    assert state["model_args"]["num_cameras"] == cams
    assert state["model"]["student.trunk.sie_embed"].shape == state["model"]["teacher.trunk.sie_embed"].shape == (
        cams, 1, 96)
    trained = load_trained_model(res.last_checkpoint)
    assert isinstance(trained.model, MeanTeacher)
    ref = build_model("transreid_net", num_classes=8, num_cameras=cams, **TINY)
    ref.load_state_dict({k[len("teacher."):]: v for k, v in state["model"].items() if k.startswith("teacher.")})
    assert descriptors_equal(trained.model, ref, cams).shape == (4, 480)
    m = evaluate_checkpoint(res.last_checkpoint, target)
    assert m["mAP"] == pytest.approx(h["target_mAP"], abs=1e-6)


@pytest.mark.slow  # its fixture trains the source network
def test_transreid_with_the_corereid_loss_is_refused(data, transreid_source, tmp_path):
    from corelib.training import finetune

    _, target = data
    _, src = transreid_source
    cfg = resolve_recipe("finetune", PERSON, recipe="transreid", smoke=True,
                         overrides={"epochs": 1, "loss.name": "corereid"})
    with pytest.raises(InvalidInputError, match="global batch"):
        finetune(cfg, target, tmp_path, source_checkpoint=src.best_checkpoint, progress=False)


@pytest.mark.slow
def test_transreid_ssl_trains_one_plain_vit_with_cluster_contrast(data, tmp_path):
    from corelib.models import MeanTeacher
    from corelib.training import evaluate_checkpoint, finetune, load_checkpoint, load_trained_model, pretrain

    source, target = data
    pre = resolve_recipe("pretrain", PERSON, recipe="transreid_ssl", smoke=True, overrides={"epochs": 1})
    src = pretrain(pre, source, tmp_path, progress=False)
    assert src.loss_terms == ("loss", "id", "triplet")
    src_state = load_checkpoint(src.best_checkpoint)
    assert src_state["model_args"]["sie"] is False and src_state["model_args"]["jpm"] is False
    assert not any("sie" in k or k.startswith(("b1.", "b2.")) for k in src_state["model"])
    ft = resolve_recipe("finetune", PERSON, recipe="transreid_ssl", smoke=True,
                        overrides={"epochs": 1, "batch_size": 8})
    assert (ft.cluster.labeler, ft.loss.name, ft.model.alpha) == ("dbscan", "cluster_contrast", 0.0)
    res = finetune(ft, target, tmp_path, progress=False)
    assert res.loss_terms == ("loss", "nce")
    assert torch.isfinite(torch.tensor(res.history[-1]["nce"])) and res.history[-1]["clusters_global"] >= 1
    state = load_checkpoint(res.last_checkpoint)
    student = {k[len("student."):]: v for k, v in state["model"].items() if k.startswith("student.")}
    teacher = {k[len("teacher."):]: v for k, v in state["model"].items() if k.startswith("teacher.")}
    assert student.keys() == teacher.keys() and all(torch.equal(student[k], teacher[k]) for k in student)  # one network
    trained = load_trained_model(res.last_checkpoint)
    assert isinstance(trained.model, MeanTeacher) and trained.model.teacher.descriptor_dim == 96
    x = images(4, seed=9)
    with torch.no_grad():
        assert trained.model(x).shape == (4, 96)
    m = evaluate_checkpoint(res.last_checkpoint, target)
    assert m["mAP"] == pytest.approx(res.history[-1]["target_mAP"], abs=1e-6)


# --------------------------------------------------------------------------------------------
# 8. CUDA


@pytest.mark.gpu
def test_a_bf16_training_step_on_cuda():
    torch.manual_seed(0)
    net = tiny_net(num_classes=4, num_cameras=3).cuda().train()
    crit = build_criterion(SourceLossCfg(name="transreid", label_smooth=0.0), stage="pretrain")
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = images(8).cuda()
    y = torch.arange(4).repeat_interleave(2).cuda()
    cams = (torch.arange(8) % 3).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        terms = crit(net(x, cams), y)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]).item()
    assert all(torch.isfinite(p.grad).all().item() for p in net.parameters() if p.requires_grad)
    opt.step()
    net.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        desc = net(x, cams)
    assert desc.shape == (8, 480) and torch.isfinite(desc.float()).all().item()
    torch.testing.assert_close(desc.float().norm(dim=1), torch.ones(8, device="cuda"), atol=2e-2, rtol=0)
