"""The ``transreid`` checkpoint format (corelib.models.convert.transreid): files written in the official
layout (the tables below are data read from damo-cv/TransReID, not its code) convert with every
tensor at its place and nothing dropped beyond the documented unused keys; the converted network's
eval feature equals an independent re-implementation of the official eval forward; the settings
come from the YAML config or the options, and what is missing or inexpressible is refused in one
line; ``corelib evaluate`` prints the published row beside the measured scores; a converted network
fine-tunes."""

from __future__ import annotations

import os
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from test_datasets import make_market
from torch import nn

from corelib.cli import main
from corelib.data import load_synthetic
from corelib.errors import CheckpointError, InvalidInputError
from corelib.models import build_model
from corelib.models.convert import FORMATS, convert_checkpoint
from corelib.models.vit import IMAGENET_MEAN, IMAGENET_STD
from corelib.recipes import RecipeContext, resolve_recipe
from corelib.runtime.checkpoint import load_checkpoint
from corelib.training import finetune, load_trained_model

# ----------------------------------------------------------------------------- the official layout, as data

# model/backbones/vit_pytorch.py, class Block (norm1, attn = Attention(qkv, proj), norm2, mlp = Mlp(fc1, fc2)),
# built with qkv_bias=True and mlp_ratio=4 by vit_base_patch16_224_TransReID / deit_small_patch16_224_TransReID:
# (name, shape in terms of the width d)
BLOCK = (
    ("norm1.weight", lambda d: (d,)), ("norm1.bias", lambda d: (d,)),
    ("attn.qkv.weight", lambda d: (3 * d, d)), ("attn.qkv.bias", lambda d: (3 * d,)),
    ("attn.proj.weight", lambda d: (d, d)), ("attn.proj.bias", lambda d: (d,)),
    ("norm2.weight", lambda d: (d,)), ("norm2.bias", lambda d: (d,)),
    ("mlp.fc1.weight", lambda d: (4 * d, d)), ("mlp.fc1.bias", lambda d: (4 * d,)),
    ("mlp.fc2.weight", lambda d: (d, 4 * d)), ("mlp.fc2.bias", lambda d: (d,)),
)
# nn.BatchNorm1d's state (model/make_model.py: bottleneck, bottleneck_1..4)
BNNECK = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def official_shapes(*, d: int, depth: int, patch: int, positions: int, classes: int, sie_rows: int = 0,
                    jpm: bool = True, imagenet_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of ``model.state_dict()`` (train.py / processor.py save it) in the order the modules register.

    model/backbones/vit_pytorch.py, TransReID.__init__: patch_embed (PatchEmbed_overlap.proj), cls_token, pos_embed,
    sie_embed (camera * view | camera | view rows, when > 1), blocks, norm, fc (the ImageNet head, num_classes=1000);
    model/make_model.py: build_transformer_local (JPM) adds b1, b2 = Sequential(copy of blocks[-1], copy of norm),
    classifier, classifier_1..4 (bias-free Linear), bottleneck, bottleneck_1..4; build_transformer has base,
    classifier, bottleneck.
    """
    shapes: dict[str, tuple[int, ...]] = {"base.cls_token": (1, 1, d), "base.pos_embed": (1, positions + 1, d)}
    if sie_rows:
        shapes["base.sie_embed"] = (sie_rows, 1, d)
    shapes["base.patch_embed.proj.weight"] = (d, 3, patch, patch)
    shapes["base.patch_embed.proj.bias"] = (d,)
    for i in range(depth):
        shapes.update({f"base.blocks.{i}.{name}": shape(d) for name, shape in BLOCK})
    shapes.update({"base.norm.weight": (d,), "base.norm.bias": (d,), "base.fc.weight": (imagenet_classes, d),
                   "base.fc.bias": (imagenet_classes,)})
    branches = ("b1", "b2") if jpm else ()
    for b in branches:
        shapes.update({f"{b}.0.{name}": shape(d) for name, shape in BLOCK})
        shapes.update({f"{b}.1.weight": (d,), f"{b}.1.bias": (d,)})
    heads = ["", "_1", "_2", "_3", "_4"] if jpm else [""]
    for h in heads:
        shapes[f"classifier{h}.weight"] = (classes, d)
    for h in heads:
        shapes.update({f"bottleneck{h}.{name}": () if name == "num_batches_tracked" else (d,) for name in BNNECK})
    return shapes


def official_state(shapes: dict[str, tuple[int, ...]], *, seed: int = 0, module: bool = False
                   ) -> dict[str, torch.Tensor]:
    """A state dict of ``shapes`` with values of a trained network's kind (LayerNorm and BN scales near 1, positive
    running variances) and a different value in every tensor; ``module.`` keys as DistributedDataParallel saves them."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (key, shape) in enumerate(shapes.items()):
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(100 + i)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=g)
        elif (key.endswith(".weight") and len(shape) == 1):  # LayerNorm / BatchNorm scales
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            value = 0.05 * torch.randn(shape, generator=g)
        state[("module." if module else "") + key] = value
    return state


def save_official(path, shapes, **kw):
    torch.save(official_state(shapes, **kw), path)
    return path


# the tiny ViT (corelib transreid_vit_tiny: width 96, depth 4, 4 heads, patch 8) at 64 x 32, stride 6: 10 x 5 patches
TINY = dict(d=96, depth=4, patch=8, positions=50)
TINY_OPTIONS = dict(img_size="64x32", sie="camera", shift_num=5)
DOCUMENTED_JPM_DROPS = 16  # base.fc (2), base.blocks.<last> (12), base.norm (2)


def dropped_keys(depth: int, jpm: bool, prefix: str = "") -> set[str]:
    keys = {"base.fc.weight", "base.fc.bias"}
    if jpm:
        keys |= {f"base.blocks.{depth - 1}.{name}" for name, _ in BLOCK} | {"base.norm.weight", "base.norm.bias"}
    return {prefix + k for k in keys}


def target_of(key: str) -> str:
    """Where the documented renames put an official key."""
    for j in range(1, 5):
        for theirs, ours in (("bottleneck", "local_bottlenecks"), ("classifier", "local_classifiers")):
            if key.startswith(f"{theirs}_{j}."):
                return f"{ours}.{j - 1}." + key[len(f"{theirs}_{j}."):]
    return "trunk." + key[len("base."):] if key.startswith("base.") else key


# ----------------------------------------------------------------------------- key tables at ViT-B

VIT_B_CASES = {
    # configs/Market/vit_transreid_stride.yml: 256 x 128, stride 12 (21 x 10), SIE camera (6), JPM; 751 ids
    "market_jpm_sie": (dict(positions=210, classes=751, sie_rows=6, jpm=True),
                       dict(img_size="256x128", sie="camera", shift_num=5), 195),
    # configs/Market/vit_sie.yml: stride 16 (16 x 8), SIE camera, no JPM
    "market_sie": (dict(positions=128, classes=751, sie_rows=6, jpm=False),
                   dict(img_size="256x128", sie="camera"), 157),
    # configs/VeRi/vit_transreid_stride.yml: 256 x 256, stride 12 (21 x 21), SIE camera x view (20 x 8), JPM, shift 8
    "veri_jpm_sie_cv": (dict(positions=441, classes=576, sie_rows=160, jpm=True),
                        dict(img_size="256x256", sie="camera+view", dataset="veri", shift_num=8), 195),
}


def vit_b_conversion(case: str, **extra):
    """The converter's answer for a ViT-B file of ``case``, its tensors shapes without values (meta)."""
    layout, options, _ = VIT_B_CASES[case]
    shapes = official_shapes(d=768, depth=12, patch=16, **layout)
    contents = {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}
    return FORMATS.get("transreid")(contents, config=None, options={**options, **extra})


@pytest.mark.parametrize("case", VIT_B_CASES)
def test_vit_b_files_map_every_key_with_only_the_documented_drops(case):
    """At ViT-B dims (shapes only: meta tensors) the key counts of issue 35; the names are those of the corelib network
    (built at width 96 with the same depth, heads, grid and SIE: names do not depend on the width)."""
    layout, _, placed = VIT_B_CASES[case]
    shapes = official_shapes(d=768, depth=12, patch=16, **layout)
    conv = vit_b_conversion(case)
    assert len(conv.mapping) == placed and len(shapes) == placed + len(conv.dropped)
    assert set(conv.dropped) == dropped_keys(12, layout["jpm"])
    assert set(conv.mapping.values()) | set(conv.dropped) == set(shapes)
    assert all(target_of(src) == ours for ours, src in conv.mapping.items())
    args = conv.model_args
    assert (args["backbone"], args["num_classes"], args["jpm"], args["backbone_args"]["stride"]) == (
        "transreid_vit_base", layout["classes"], layout["jpm"], 12 if layout["positions"] != 128 else 16)
    assert args["test_flip"] is False
    names = build_model("transreid_net", **{**args, "backbone": "transreid_vit_tiny",
                                            "backbone_args": {**args["backbone_args"], "num_heads": 4}}).state_dict()
    assert set(names) == set(conv.mapping)


def test_vit_b_cases_name_their_published_rows():
    market = vit_b_conversion("market_jpm_sie", dataset="market1501")
    assert (market.method, market.task, market.published_backbone) == (
        "TransReID* (SIE camera)", "market1501", "ViT-B/16 (256×128)")
    assert vit_b_conversion("market_sie", dataset="market1501").method is None  # SIE alone: no published row
    assert vit_b_conversion("market_jpm_sie").task is None  # no dataset given: no published row
    veri = vit_b_conversion("veri_jpm_sie_cv")
    assert (veri.method, veri.task, veri.published_backbone) == ("TransReID* (SIE camera+view)", "veri776", "ViT-B/16")
    assert (veri.model_args["num_cameras"], veri.model_args["num_views"]) == (20, 8)  # the manifest's 20 VeRi cameras
    assert (veri.model_args["sie_camera"], veri.model_args["sie_view"]) == (True, True)
    assert "camera x views + view" in veri.inferred["sie"]
    # the released configurations also carry the README's rows of the released models
    assert market.published_also == [("TransReID*", "ViT-B/16")] and veri.published_also == [("TransReID*", "ViT-B/16")]
    assert vit_b_conversion("market_sie", dataset="market1501").published_also == []


# ----------------------------------------------------------------------------- placement, record, outputs


@pytest.mark.parametrize("module", [False, True], ids=["plain", "module_prefix"])
def test_every_tensor_lands_at_its_target(tmp_path, module):
    shapes = official_shapes(**TINY, classes=5, sie_rows=3)
    source = save_official(tmp_path / "transformer_120.pth", shapes, module=module)
    done = convert_checkpoint(source, "transreid", tmp_path / "out.pt", dataset="market1501", **TINY_OPTIONS)
    prefix = "module." if module else ""
    theirs = official_state(shapes, module=module)
    state = load_checkpoint(tmp_path / "out.pt")
    ours = state["model"]
    assert len(ours) == len(shapes) - DOCUMENTED_JPM_DROPS
    for key in shapes:
        if prefix + key in done.record["dropped"]:
            continue
        assert torch.equal(ours[target_of(key)], theirs[prefix + key]), key
    assert set(done.record["dropped"]) == dropped_keys(4, True, prefix)
    assert done.record["format"] == "transreid" and done.record["source_file"] == "transformer_120.pth"
    assert len(done.record["sha256"]) == 64 and done.record["method"] == "TransReID* (SIE camera)"
    assert state["model_name"] == "transreid_net" and state["model_args"]["test_flip"] is False
    assert state["model_args"]["num_cameras"] == 3 and state["stage"] == "pretrain"


def test_converted_network_is_finite_and_deterministic(tmp_path):
    source = save_official(tmp_path / "t.pth", official_shapes(**TINY, classes=5, sie_rows=3))
    convert_checkpoint(source, "transreid", tmp_path / "out.pt", **TINY_OPTIONS)
    trained = load_trained_model(tmp_path / "out.pt")
    assert trained.input_size == (64, 32) and trained.model.test_flip is False
    x = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = trained.model(x, torch.tensor([0, 1, 2])), trained.model(x, torch.tensor([0, 1, 2]))
    assert a.shape == (3, 5 * 96) and torch.isfinite(a).all() and torch.equal(a, b)


# ----------------------------------------------------------------------------- numerics against the official forward


def official_eval_feature(state: dict[str, torch.Tensor], x: torch.Tensor, cams: torch.Tensor, views: torch.Tensor, *,
                          heads: int, stride: int, split: str, num_views: int, coe: float, jpm: bool, shift: int = 5,
                          groups: int = 2) -> torch.Tensor:
    """The eval feature of the official network with NECK_FEAT 'before', written from reading
    model/backbones/vit_pytorch.py (TransReID.forward_features) and model/make_model.py (build_transformer*.forward,
    shuffle_unit): ``x`` normalised with mean = std = 0.5."""
    from timm.models.vision_transformer import Block  # lazy: timm, as corelib.models.vit imports it

    d = state["base.cls_token"].shape[-1]

    def block(prefix: str) -> nn.Module:
        b = Block(d, heads, 4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
        b.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        return b

    def norm(prefix: str, t: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(t, (d,), state[prefix + "weight"], state[prefix + "bias"], eps=1e-6)

    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("base.blocks."))
    t = F.conv2d(x, state["base.patch_embed.proj.weight"], state["base.patch_embed.proj.bias"], stride=stride)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([state["base.cls_token"].expand(len(x), -1, -1), t], dim=1) + state["base.pos_embed"]
    if split == "camera":
        t = t + coe * state["base.sie_embed"][cams]
    elif split == "camera+view":
        t = t + coe * state["base.sie_embed"][cams * num_views + views]
    if not jpm:
        for i in range(depth):
            t = block(f"base.blocks.{i}.")(t)
        return norm("base.norm.", t)[:, 0]
    for i in range(depth - 1):
        t = block(f"base.blocks.{i}.")(t)
    b1, b2 = block("b1.0."), block("b2.0.")
    global_feat = norm("b1.1.", b1(t))[:, 0]
    n = t.shape[1] - 1
    length = n // 4
    # shuffle_unit(features, shift, group, begin=1): tokens shift.. then 1..shift-1; pad with the second-to-last
    # token when the length does not divide into the groups; (B, group, -1, D) -> transpose -> flatten
    seq = torch.cat([t[:, shift:], t[:, 1:shift]], dim=1)
    if seq.shape[1] % groups:
        seq = torch.cat([seq, seq[:, -2:-1]], dim=1)
    seq = seq.view(len(x), groups, -1, d).transpose(1, 2).reshape(len(x), -1, d)
    token = t[:, :1]
    parts = [norm("b2.1.", b2(torch.cat([token, seq[:, j * length:(j + 1) * length]], dim=1)))[:, 0] / 4
             for j in range(4)]
    return torch.cat([global_feat, *parts], dim=1)


NUMERIC_CASES = {
    "jpm_sie_camera": (dict(sie_rows=3, jpm=True), dict(sie="camera", shift_num=5), "camera", 0),
    "jpm_sie_camera_view": (dict(sie_rows=6, jpm=True), dict(sie="camera+view", num_cameras=3, shift_num=8),
                            "camera+view", 2),
    "baseline": (dict(jpm=False), {}, "", 0),
}


@pytest.mark.parametrize("case", NUMERIC_CASES)
def test_converted_eval_feature_equals_the_official_forward(tmp_path, case):
    layout, options, split, num_views = NUMERIC_CASES[case]
    shapes = official_shapes(**TINY, classes=5, **layout)
    source = save_official(tmp_path / "t.pth", shapes, seed=3)
    convert_checkpoint(source, "transreid", tmp_path / "out.pt", img_size="64x32", **options)
    net = load_trained_model(tmp_path / "out.pt").model
    raw = torch.rand(4, 3, 64, 32, generator=torch.Generator().manual_seed(5))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    cams = torch.tensor([0, 1, 2, 1])
    views = torch.tensor([1, 0, 1, 1]) if num_views else torch.full((4,), -1)  # the views passed at evaluation
    with torch.no_grad():
        ours = net((raw - mean) / std, cams if split else None, views)
        f_g, f_l = net.features((raw - mean) / std, cams if split else None, views)
        before = torch.cat([f_g, (f_l / max(f_l.shape[1], 1)).flatten(1)], dim=1)
        theirs = official_eval_feature(official_state(shapes, seed=3), (raw - 0.5) / 0.5, cams,
                                       views.clamp_min(0), heads=4, stride=6, split=split,
                                       num_views=num_views, coe=3.0, jpm=layout["jpm"],
                                       shift=int(options.get("shift_num", 5)))
    # before L2 (f_l / k beside f_g, as the official feature) and the L2-normalised descriptor
    torch.testing.assert_close(before, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, F.normalize(theirs, dim=1), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- the YAML config, options, refusals

# configs/Market/vit_transreid_stride.yml, the keys the conversion reads, at the tiny ViT's size and stride
MARKET_YAML = """\
MODEL:
  PRETRAIN_CHOICE: 'imagenet'
  PRETRAIN_PATH: '/home/user/.cache/torch/checkpoints/{pretrain}'
  NAME: 'transformer'
  TRANSFORMER_TYPE: 'vit_base_patch16_224_TransReID'
  STRIDE_SIZE: [{stride}, {stride}]
  SIE_CAMERA: True
  SIE_COE: 3.0
  JPM: True
  RE_ARRANGE: True
INPUT:
  SIZE_TRAIN: [64, 32]
  SIZE_TEST: [64, 32]
  PIXEL_MEAN: [0.5, 0.5, 0.5]
  PIXEL_STD: [0.5, 0.5, 0.5]
DATASETS:
  NAMES: ('market1501')
  ROOT_DIR: ('../../data')
TEST:
  EVAL: True
  {neck}
  FEAT_NORM: 'yes'
"""


def market_yaml(path, *, pretrain="jx_vit_base_p16_224-80ecf9dd.pth", stride=6, neck="NECK_FEAT: 'before'"):
    path.write_text(MARKET_YAML.format(pretrain=pretrain, stride=stride, neck=neck))
    return path


def test_the_yaml_config_gives_every_setting(tmp_path):
    source = save_official(tmp_path / "t.pth", official_shapes(**TINY, classes=5, sie_rows=3))
    cfg = market_yaml(tmp_path / "vit_transreid_stride.yml")
    done = convert_checkpoint(source, "transreid", tmp_path / "out.pt", config=cfg)
    inferred = done.record["inferred"]
    assert inferred["img_size"] == "64x32 (INPUT.SIZE_TEST)"
    assert inferred["sie"].startswith("camera (MODEL.SIE_CAMERA / MODEL.SIE_VIEW): 3 rows")
    assert "shift 5 (MODEL.SHIFT_NUM: the official default, the YAML omits it" in inferred["jpm_order"]
    assert inferred["input_norm"].startswith("half") and "does not flip" in inferred["test_flip"]
    assert done.record["config"] == "vit_transreid_stride.yml"
    assert (done.record["task"], done.record["method"], done.record["published_backbone"]) == (
        "market1501", "TransReID* (SIE camera)", "ViT-96d/8 (64×32)")
    args = done.conversion.model_args
    assert (args["shift"], args["shuffle_groups"], args["sie_coe"]) == (5, 2, 3.0)
    assert args["backbone_args"]["input_norm"] == "half" and args["test_flip"] is False
    deit_cfg = market_yaml(tmp_path / "deit.yml", pretrain="deit_base_distilled_patch16_224-df68dfff.pth")
    deit = convert_checkpoint(source, "transreid", tmp_path / "deit.pt", config=deit_cfg)
    assert deit.record["published_backbone"] == "DeiT-96d/8 (64×32)"


@pytest.mark.parametrize("yaml_kw, match", [
    (dict(neck=""), "NECK_FEAT 'after'"),  # omitted: the official default 'after'
    (dict(stride=8), "stride 8 .*gives 32"),
])
def test_a_config_the_network_cannot_follow_is_refused(tmp_path, yaml_kw, match):
    source = save_official(tmp_path / "t.pth", official_shapes(**TINY, classes=5, sie_rows=3))
    with pytest.raises(InvalidInputError, match=match) as err:
        convert_checkpoint(source, "transreid", tmp_path / "out.pt", config=market_yaml(tmp_path / "c.yml", **yaml_kw))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("missing, named", [("img_size", "--option img_size=..."), ("sie", "--option sie=..."),
                                            ("shift_num", "--option shift_num=...")])
def test_a_missing_option_is_refused_in_one_line(tmp_path, missing, named):
    source = save_official(tmp_path / "t.pth", official_shapes(**TINY, classes=5, sie_rows=3))
    options = {k: v for k, v in TINY_OPTIONS.items() if k != missing}
    with pytest.raises(InvalidInputError) as err:
        convert_checkpoint(source, "transreid", tmp_path / "out.pt", **options)
    message = str(err.value)
    assert named in message and "--config" in message and "\n" not in message


def test_the_cli_refuses_a_missing_option_in_one_line(tmp_path, capsys):
    source = save_official(tmp_path / "t.pth", official_shapes(**TINY, classes=5, sie_rows=3))
    assert main(["convert", "transreid", str(source), str(tmp_path / "out.pt"), "--option", "sie=camera"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--option img_size=..." in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("change, match", [
    (lambda s: {k: v for k, v in s.items() if not k.startswith("classifier_")}, "cosine ID head"),
    (lambda s: {k: v for k, v in s.items() if not k.endswith("attn.qkv.bias")}, "no qkv bias"),
    (lambda s: {**s, "base.extra.weight": torch.zeros(2)}, "no place"),
])
def test_a_variant_the_network_lacks_is_refused(tmp_path, change, match):
    state = change(official_state(official_shapes(**TINY, classes=5, sie_rows=3)))
    torch.save(state, tmp_path / "t.pth")
    with pytest.raises(InvalidInputError, match=match):
        convert_checkpoint(tmp_path / "t.pth", "transreid", tmp_path / "out.pt", **TINY_OPTIONS)


class _Payload:
    def __reduce__(self):
        return os.system, ("echo pwned > pwned.txt",)


def test_a_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = official_state(official_shapes(**TINY, classes=5, sie_rows=3))
    torch.save({**state, "payload": _Payload()}, tmp_path / "t.pth")
    with pytest.raises(CheckpointError):
        convert_checkpoint(tmp_path / "t.pth", "transreid", tmp_path / "out.pt", **TINY_OPTIONS)
    assert not (tmp_path / "pwned.txt").exists()


# ----------------------------------------------------------------------------- corelib evaluate, fine-tuning


@pytest.mark.slow  # a ViT-B file: about 400 MB of tensors
def test_corelib_evaluate_prints_the_published_row_beside_the_scores(tmp_path, capsys):
    make_market(tmp_path / "data")
    shapes = official_shapes(d=768, depth=12, patch=16, **VIT_B_CASES["market_jpm_sie"][0])
    source = save_official(tmp_path / "transformer_120.pth", shapes)
    cfg = tmp_path / "vit_transreid_stride.yml"
    market_yaml(cfg, stride=12)
    cfg.write_text(cfg.read_text().replace("[64, 32]", "[256, 128]"))
    out = tmp_path / "transreid_market.pt"
    assert main(["convert", "transreid", str(source), str(out), "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "195 tensors placed, 16 dropped" in printed and "published method 'TransReID* (SIE camera)'" in printed
    assert main(["evaluate", str(out), "--dataset", "market1501", str(tmp_path / "data")]) == 0
    printed = capsys.readouterr().out
    assert "one view, no flip" in printed and "mAP" in printed
    assert "published, TransReID* (SIE camera) on market1501, ViT-B/16 (256×128): mAP 88.9, rank1 95.2" in printed
    # the released model of this configuration: the README's row of the reorganized code as well
    assert "published, TransReID* on market1501, ViT-B/16: mAP 89.0, rank1 95.1" in printed


@pytest.mark.slow  # a smoke fine-tuning
def test_a_converted_network_fine_tunes(tmp_path, synthetic_small):
    source = save_official(tmp_path / "t.pth", official_shapes(**TINY, classes=5, sie_rows=3))
    convert_checkpoint(source, "transreid", tmp_path / "src.pt", **TINY_OPTIONS)
    target = load_synthetic(synthetic_small["cuhk_like"])
    cfg = resolve_recipe("finetune", RecipeContext("person", True, "cuhk_like"), recipe="transreid", smoke=True,
                         overrides={"epochs": 1})
    res = finetune(cfg, target, tmp_path / "run", source_checkpoint=tmp_path / "src.pt", progress=False)
    last = res.history[-1]
    assert all(torch.isfinite(torch.tensor(last[k])) for k in res.loss_terms)
    assert set(res.direct_transfer) >= {"mAP", "rank1"}
