"""``corelib convert corereid_v1``: the files CORE-ReID V1's scripts write convert tensor for tensor, the
converted network computes V1's descriptor, fine-tunes, and evaluates with the published row beside.

The files are written here from V1's layer tables, set out below as data from reading the official
repository (github.com/TrinhQuocNguyen/CORE-ReID): ``reid/models/resnet.py`` (the fine-tuning ``ResNet``
with ``num_split=2``, ``ECAB``, ``SpatialAttention``, ``Fuse``, ``Encoder``), ``reid/models/resnet_source.py``
(the source network), ``reid/models/resnet_ibn_a.py`` (its IBN-a trunk) and the ``save_checkpoint`` calls
of ``source_pretrain.py`` / ``target_train.py``: ``{'state_dict': net.state_dict(), 'epoch': epoch + 1,
'best_mAP': best_mAP}``, networks in ``nn.DataParallel`` (``module.``), ``best_mAP`` the evaluator's
``numpy.float64``.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from corelib.cli import main
from corelib.config import FinetuneCfg
from corelib.data import load_synthetic
from corelib.data.synthetic import generate_synthetic
from corelib.errors import CheckpointError, InvalidInputError
from corelib.models.convert import FORMATS, convert_checkpoint, read_foreign
from corelib.training import finetune, load_checkpoint, load_trained_model

C = 2048
K = 9  # pseudo-identity clusters of the fine-tuning file
N_SOURCE = 7  # source identities of the source file
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# torchvision's ResNets as V1's ``base = nn.Sequential(conv1, bn1, relu, maxpool, layer1, ..., layer4)``:
# (index in base, blocks, planes). V1 sets layer4[0].conv2 and layer4[0].downsample[0] to stride 1.
RESNET50 = ((4, 3, 64), (5, 4, 128), (6, 6, 256), (7, 3, 512))
RESNET18 = ((4, 2, 64), (5, 2, 128), (6, 2, 256), (7, 2, 512))  # BasicBlocks
ECAB_WIDTHS = (C, C // 4, C // 16, C // 64, C // 16, C // 4, C)  # ECAB(2048, reduction=4): six bias-free 1x1 convs


def bn(prefix: str, n: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.{p}", () if p == "num_batches_tracked" else (n,)) for p in BN]


def trunk_table(stages=RESNET50, *, bottleneck: bool = True, ibn: bool = False) -> list[tuple[str, tuple]]:
    """``base.*`` keys and shapes of V1's trunk (torchvision's module order)."""
    rows = [("base.0.weight", (64, 3, 7, 7))] + bn("base.1", 64)
    inplanes = 64
    for index, blocks, planes in stages:
        out = planes * (4 if bottleneck else 1)
        for b in range(blocks):
            p, cin = f"base.{index}.{b}", inplanes if b == 0 else out
            convs = [(cin, planes, 1), (planes, planes, 3), (planes, out, 1)] if bottleneck else \
                [(cin, planes, 3), (planes, planes, 3)]
            for i, (ci, co, k) in enumerate(convs, 1):
                rows.append((f"{p}.conv{i}.weight", (co, ci, k, k)))
                if i == 1 and ibn and planes != 512:  # resnet_ibn_a.py: IBN as bn1 wherever planes != 512
                    half = planes // 2
                    rows += [(f"{p}.bn1.IN.weight", (half,)), (f"{p}.bn1.IN.bias", (half,))]
                    rows += bn(f"{p}.bn1.BN", planes - half)
                else:
                    rows += bn(f"{p}.bn{i}", co)
            if b == 0 and (cin != out or index > 4):  # torchvision: a shortcut conv where the shape changes
                rows += [(f"{p}.downsample.0.weight", (out, cin, 1, 1))] + bn(f"{p}.downsample.1", out)
        inplanes = out
    return rows


def ecab(prefix: str) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.se.{2 * i}.weight", (co, ci, 1, 1))
            for i, (ci, co) in enumerate(zip(ECAB_WIDTHS[:-1], ECAB_WIDTHS[1:]))]


def source_table(classes: int = N_SOURCE, **trunk) -> list[tuple[str, tuple]]:
    """resnet_source.py ``ResNet(num_features=0, num_classes=N)``."""
    return trunk_table(**trunk) + bn("feat_bn", C) + [("classifier.weight", (classes, C))]


def finetune_net_table(classes: int = K) -> list[tuple[str, tuple]]:
    """resnet.py ``ResNet(num_features=0, num_classes=K, num_split=2)``, modules in registration order."""
    return (trunk_table() + ecab("ca_upper") + [("sa_upper.conv1.weight", (1, 2, 5, 5))] + ecab("ca_low")
            + [("sa_low.conv1.weight", (1, 2, 5, 5))] + bn("feat_bn", C) + bn("BN_g", C) + bn("BN_u", C)
            + bn("BN_l", C) + [("classifier.weight", (classes, C))]
            + [("adativeFC_upper.weight", (C, 2 * C)), ("adativeFC_upper.bias", (C,))]
            + [("adativeFC_low.weight", (C, 2 * C)), ("adativeFC_low.bias", (C,))])


def encoder_table(module: str = "module.") -> list[tuple[str, tuple]]:
    """resnet.py ``Encoder(DataParallel(model), DataParallel(model_ema))`` with its ``Fuse``."""
    net = finetune_net_table()
    return ([(f"model.{module}{k}", s) for k, s in net] + [(f"model_ema.{module}{k}", s) for k, s in net]
            + bn("fuse_net.bn_1", C) + bn("fuse_net.bn_2", C) + bn("fuse_net.bn_3", C))


# Where each of V1's tensors belongs in corelib's networks (reid_net.py, fusion.py, attention.py, mean_teacher.py)
TRUNK_NAMES = {"base.0.": "trunk.conv1.", "base.1.": "trunk.bn1.", "base.4.": "trunk.layer1.",
               "base.5.": "trunk.layer2.", "base.6.": "trunk.layer3.", "base.7.": "trunk.layer4."}
SOURCE_NAMES = {**TRUNK_NAMES, "feat_bn.": "bnneck.", "classifier.": "classifier."}
FINETUNE_NAMES = {**TRUNK_NAMES, "BN_g.": "bn_global.", "BN_u.": "bn_top.", "BN_l.": "bn_bottom.",
                  "adativeFC_upper.": "fc_top.", "adativeFC_low.": "fc_bottom.", "ca_upper.se.": "ecab_top.mlp.",
                  "ca_low.se.": "ecab_bottom.mlp.", "classifier.": "classifier."}
ENCODER_NAMES = {"model.module.": "student.", "model_ema.module.": "teacher.", "fuse_net.bn_1.": "fusion.bn_global.",
                 "fuse_net.bn_2.": "fusion.bn_top.", "fuse_net.bn_3.": "fusion.bn_bottom."}
UNUSED = ("feat_bn.", "sa_upper.conv1.", "sa_low.conv1.")  # in V1's fine-tuning ResNet, never in its forward


def rename(key: str, table: dict[str, str]) -> str:
    old = next(o for o in table if key.startswith(o))
    return table[old] + key[len(old):]


def expected_target(key: str) -> str | None:
    """Our key for a V1 file key (``state_dict.`` stripped), None for the documented unused ones."""
    if key.startswith("fuse_net."):
        return rename(key, ENCODER_NAMES)
    if key.startswith(("model.", "model_ema.")):
        outer = next(o for o in ENCODER_NAMES if key.startswith(o))
        inner = key[len(outer):]
        return None if inner.startswith(UNUSED) else ENCODER_NAMES[outer] + rename(inner, FINETUNE_NAMES)
    return rename(key.removeprefix("module."), SOURCE_NAMES)


def tagged(rows) -> dict[str, torch.Tensor]:
    """Tensor ``i`` holds only the value ``i + 1`` (stored once, expanded): every tensor findable at its target."""
    return {k: torch.tensor(i + 1) if k.endswith("num_batches_tracked")
            else torch.tensor(float(i + 1)).expand(s) for i, (k, s) in enumerate(rows)}


def realistic(rows, seed: int) -> dict[str, torch.Tensor]:
    """Random float32 weights of a trained network's scale (fan-in scaled convs, BN statistics near 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in rows:
        leaf = k.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            out[k] = torch.tensor(1000)
        elif leaf == "running_var":
            out[k] = 0.5 + torch.rand(s, generator=g)
        elif leaf == "weight" and len(s) > 1:
            out[k] = torch.randn(s, generator=g) * math.sqrt(2.0 / math.prod(s[1:]))
        elif leaf == "weight":
            out[k] = 1.0 + 0.1 * torch.randn(s, generator=g)
        else:  # bias, running_mean
            out[k] = 0.1 * torch.randn(s, generator=g)
    return out


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def write_v1(path: Path, state: dict, *, wrap: bool = True, epoch: int = 40) -> Path:
    """A file as V1's save_checkpoint writes it (``wrap``) or a bare state dict."""
    torch.save({"state_dict": state, "epoch": epoch, "best_mAP": np.float64(0.6289)} if wrap else state, path)
    return path


@pytest.fixture(scope="module")
def tagged_files(tmp_path_factory) -> Iterator[dict]:
    """The two files with a distinct value in every tensor, converted with the defaults."""
    d = tmp_path_factory.mktemp("v1_tagged")
    src = write_v1(d / "source_model_best.pth.tar", tagged(prefixed(dict(source_table()), "module.").items()), epoch=61)
    enc = write_v1(d / "model_best.pth.tar", tagged(encoder_table()), epoch=40)
    yield {"source": (src, convert_checkpoint(src, "corereid_v1", d / "source.pt")),
           "finetune": (enc, convert_checkpoint(enc, "corereid_v1", d / "v1.pt", task="Market→CUHK03"))}
    shutil.rmtree(d)  # four ResNet-50-sized files: freed when the module is done, not at the session's end


@pytest.fixture(scope="module")
def real_encoder(tmp_path_factory) -> Iterator[Path]:
    """A fine-tuning file with independent random weights of a trained network's scale in student and teacher."""
    d = tmp_path_factory.mktemp("v1_real")
    state = realistic(encoder_table(), seed=0)
    yield write_v1(d / "model_best.pth.tar", state, epoch=40)
    shutil.rmtree(d)


# ----------------------------------------------------------------------------- every tensor where it belongs


@pytest.mark.parametrize("kind", ["source", "finetune"])
def test_every_tensor_lands_where_it_belongs(tagged_files, kind):
    path, done = tagged_files[kind]
    file = read_foreign(path)["state_dict"]
    ours = load_checkpoint(done.path)["model"]
    placed = {}
    for key, value in file.items():
        target = expected_target(key)
        if target is None:
            continue
        placed[target] = key
        assert torch.equal(ours[target], value), f"{key} is not at {target}"
    # every key of the network is filled from the file, but MeanTeacher's own step counter
    assert set(ours) - set(placed) == ({"step"} if kind == "finetune" else set())
    assert done.conversion.mapping == {t: f"state_dict.{k}" for t, k in placed.items()}
    # 324 tensors of the source network; 715 of the fine-tuning one (student, teacher, fusion)
    assert len(placed) == (324 if kind == "source" else 715)


@pytest.mark.slow
def test_an_ibn_a_source_network_keeps_its_trunk(tmp_path):
    path = write_v1(tmp_path / "model_best.pth.tar", tagged(prefixed(dict(source_table(ibn=True)), "module.").items()))
    done = convert_checkpoint(path, "corereid_v1", tmp_path / "source.pt")
    ours = load_checkpoint(done.path)["model"]
    file = read_foreign(path)["state_dict"]
    assert done.conversion.model_args["backbone"] == "resnet50_ibn_a"
    assert set(ours) == {expected_target(k) for k in file}
    assert all(torch.equal(ours[expected_target(k)], v) for k, v in file.items())


def test_only_the_documented_unused_keys_are_dropped(tagged_files):
    assert tagged_files["source"][1].record["dropped"] == {}
    record = tagged_files["finetune"][1].record
    assert sorted(record["dropped"]) == sorted(f"state_dict.{net}.module.{k}" for net in ("model", "model_ema")
                                               for k, _ in finetune_net_table() if k.startswith(UNUSED))
    assert len(record["dropped"]) == 14 and all(why for why in record["dropped"].values())
    assert set(record["filled"]) == {"step"}


def test_what_the_conversion_infers_and_records(tagged_files):
    (_, src), (enc_path, enc) = tagged_files["source"], tagged_files["finetune"]
    s, f = load_checkpoint(src.path), load_checkpoint(enc.path)
    assert (s["stage"], s["model_name"], s["model_args"]) == (
        "pretrain", "source_net", {"backbone": "resnet50", "num_classes": N_SOURCE, "test_flip": True})
    assert (f["stage"], f["model_name"]) == ("finetune", "mean_teacher")
    # V1's test protocol (BMFN) and its split of odd map heights
    assert f["model_args"] == {"backbone": "resnet50", "num_classes": K, "test_flip": True, "fusion": "v1",
                               "pool": "gap+gmp", "ecab": True, "odd_height": "drop"}
    assert (s["epoch"], f["epoch"]) == (60, 39)  # 0-based, as the loops write it; the files say 61 and 40
    assert f["cfg"]["augment"]["height"] == 256 and f["cfg"]["augment"]["width"] == 128
    assert "V1's default" in f["converted"]["inferred"]["img_size"]
    assert f["converted"]["inferred"]["best_mAP"].startswith("0.6289")
    assert (f["converted"]["method"], f["converted"]["task"]) == ("CORE-ReID V1", "market1501->cuhk03np")
    assert s["converted"]["method"] is None  # V1's published rows are of adapted networks
    assert f["converted"]["sha256"] == hashlib.sha256(enc_path.read_bytes()).hexdigest()
    assert f["cfg"]["model"]["fusion"] == "v1"
    assert f["cfg"]["model"]["net_args"] == {"test_flip": True, "odd_height": "drop"}


def test_the_file_is_recognised_with_or_without_its_wrappers():
    convert = FORMATS.get("corereid_v1")
    tensors = {k: torch.zeros(()).expand(s) for k, s in encoder_table("")}
    bare = convert(tensors, config=None, options={})
    wrapped = convert({"state_dict": tagged(encoder_table()), "epoch": 3}, config=None, options={})
    assert bare.stage == wrapped.stage == "finetune" and bare.epoch is None and wrapped.epoch == 3

    def with_module(key: str) -> str:
        net, _, rest = key.partition(".")
        return f"{net}.module.{rest}" if net in ("model", "model_ema") else key

    assert len(bare.mapping) == 715
    assert wrapped.mapping == {t: "state_dict." + with_module(k) for t, k in bare.mapping.items()}
    for module in ("", "module."):
        src = convert(prefixed({k: torch.zeros(()).expand(s) for k, s in source_table()}, module),
                      config=None, options={"img_size": "384x192"})
        assert (src.stage, src.model_name, src.input_size) == ("pretrain", "source_net", (384, 192))
        assert src.mapping["trunk.layer4.2.conv3.weight"] == f"{module}base.7.2.conv3.weight"
    ibn = convert({k: torch.zeros(()).expand(s) for k, s in source_table(ibn=True)}, config=None, options={})
    assert ibn.model_args["backbone"] == "resnet50_ibn_a" and "trunk.layer1.0.bn1.IN.weight" in ibn.mapping


def test_files_v1_cannot_have_written_are_refused_in_one_line(tmp_path):
    convert = FORMATS.get("corereid_v1")
    basic = {k: torch.zeros(()).expand(s) for k, s in source_table(stages=RESNET18, bottleneck=False)}
    with pytest.raises(InvalidInputError, match="BasicBlocks.*convert a ResNet-50/101/152 file") as e:
        convert(basic, config=None, options={})
    assert "\n" not in str(e.value)
    table = {k: torch.zeros(()).expand(s) for k, s in source_table()}
    with pytest.raises(InvalidInputError, match="img_size must be two positive integers .* got '256 by 128'"):
        convert(table, config=None, options={"img_size": "256 by 128"})
    # a tensor V1's networks do not have (an embedding layer, features > 0) has no place and no reason to drop
    extra = {**{k: torch.zeros(()).expand(s) for k, s in source_table()}, "feat.weight": torch.zeros(C, C)}
    with pytest.raises(InvalidInputError, match="no place in the source_net network.*feat.weight"):
        convert_checkpoint(write_v1(tmp_path / "extra.pth.tar", extra), "corereid_v1", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


class _Payload:
    """What a malicious checkpoint pickles: a call that creates a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_malicious_pickle_is_refused_and_not_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = {k: torch.zeros(()).expand(s) for k, s in source_table()}
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": state, "epoch": 1, "best_mAP": _Payload(marker)}, path)
    with pytest.raises(CheckpointError):
        convert_checkpoint(path, "corereid_v1", tmp_path / "out.pt")
    assert main(["convert", "corereid_v1", str(path), str(tmp_path / "out.pt")]) == 2
    assert "corelib convert:" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


# ----------------------------------------------------------------------------- V1's numerics


def _bn(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=1e-5)


def v1_trunk(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """``self.base(x)`` of V1's ResNet-50 in eval mode, from its keys (torchvision's Bottleneck; layer4 stride 1)."""
    x = F.max_pool2d(F.relu(_bn(F.conv2d(x, sd["base.0.weight"], stride=2, padding=3), sd, "base.1.")), 3, 2, 1)
    for index, blocks, _ in RESNET50:
        for b in range(blocks):
            p, stride = f"base.{index}.{b}.", 2 if b == 0 and index in (5, 6) else 1
            y = F.relu(_bn(F.conv2d(x, sd[p + "conv1.weight"]), sd, p + "bn1."))
            y = F.relu(_bn(F.conv2d(y, sd[p + "conv2.weight"], stride=stride, padding=1), sd, p + "bn2."))
            y = _bn(F.conv2d(y, sd[p + "conv3.weight"]), sd, p + "bn3.")
            if p + "downsample.0.weight" in sd:
                x = _bn(F.conv2d(x, sd[p + "downsample.0.weight"], stride=stride), sd, p + "downsample.1.")
            x = F.relu(y + x)
    return x


def v1_descriptor(sd: dict, images: torch.Tensor) -> torch.Tensor:
    """V1's ``Encoder`` in eval mode: ``normalize(cat(x1_ema))``, x1 of ``ResNet.forward`` with num_split = 2
    (``sd``: the teacher's keys)."""
    x = v1_trunk(sd, images)
    h = x.size(2)
    x1 = [_bn(F.avg_pool2d(x, x.size()[2:]).flatten(1) + F.max_pool2d(x, x.size()[2:]).flatten(1), sd, "BN_g.")]
    halves = [x[:, :, h // 2 * s: h // 2 * (s + 1), :] for s in range(2)]
    for part, fc, norm in zip(halves, ("adativeFC_upper.", "adativeFC_low."), ("BN_u.", "BN_l.")):
        pooled = torch.cat((F.avg_pool2d(part, part.size()[2:]), F.max_pool2d(part, part.size()[2:])), dim=1)
        x1.append(_bn(F.linear(pooled.flatten(1), sd[fc + "weight"], sd[fc + "bias"]), sd, norm))
    return F.normalize(torch.cat(x1, dim=1))


@pytest.mark.slow
def test_the_converted_network_computes_v1s_descriptor(real_encoder, tmp_path):
    done = convert_checkpoint(real_encoder, "corereid_v1", tmp_path / "v1.pt")
    teacher = {k.removeprefix("model_ema.module."): v.double()
               for k, v in torch.load(real_encoder, weights_only=False)["state_dict"].items()
               if k.startswith("model_ema.module.")}
    model = load_trained_model(done.path).model.double()
    g = torch.Generator().manual_seed(1)
    for size, rows in (((256, 128), 16), ((264, 128), 17)):  # 17 rows: V1 leaves the last one out of both halves
        images = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
        with torch.no_grad():
            assert model.teacher.trunk(images).shape[2] == rows
            ours, theirs = model(images), v1_descriptor(teacher, images)
            assert (ours - theirs).abs().max().item() < 1e-10
            model.teacher.odd_height = "bottom"  # the workbench's own split: the middle row in the bottom half
            kept = model(images)
            model.teacher.odd_height = "drop"
        gap = (kept - theirs).abs().max().item()
        if rows % 2 == 0:
            assert gap < 1e-10  # the two splits agree on even heights
        else:
            assert gap > 1e-3


@pytest.mark.slow
def test_converted_outputs_are_finite_and_deterministic(real_encoder, tmp_path):
    done = convert_checkpoint(real_encoder, "corereid_v1", tmp_path / "v1.pt", img_size="64x32")
    model = load_trained_model(done.path).model
    images = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = model(images), model(images)
        fused = model.fused_features(images)
    assert a.shape == (3, 3 * C) and torch.isfinite(a).all() and torch.equal(a, b)
    assert all(torch.isfinite(f).all() for f in fused)


# ----------------------------------------------------------------------------- the entry points


@pytest.mark.slow
def test_a_converted_source_network_is_fine_tuned(tmp_path):
    src = write_v1(tmp_path / "source_model_best.pth.tar", prefixed(realistic(source_table(), seed=3), "module."))
    source = convert_checkpoint(src, "corereid_v1", tmp_path / "source.pt", img_size="64x32").path
    # the one preset this test needs, not every one (conftest's synthetic_small)
    target = load_synthetic(generate_synthetic("cuhk_like", tmp_path / "data", scale=0.05, workers=1, progress=False))
    cfg = FinetuneCfg.smoke(model={"backbone": "resnet50"}, epochs=1)
    res = finetune(cfg, target, tmp_path / "run", source_checkpoint=source, progress=False)
    assert 0.0 <= res.direct_transfer["mAP"] <= 1.0 and [h["epoch"] for h in res.history] == [1]
    assert all(math.isfinite(res.history[0][k]) for k in ("loss", "target_mAP"))


def _cuhk03np(parent: Path) -> Path:
    """CUHK03-NP (detected) in its release layout: every query has its identity in the gallery, another camera."""
    rng = np.random.default_rng(0)
    top = parent / "cuhk03-np" / "detected"
    split = {"bounding_box_train": ["0001_c1_1.png", "0001_c2_1.png", "0002_c1_1.png", "0002_c2_1.png"],
             "query": ["0003_c1_1.png", "0004_c1_1.png", "0005_c1_1.png"],
             "bounding_box_test": ["0003_c2_1.png", "0004_c2_1.png", "0005_c2_1.png", "0006_c1_1.png"]}
    for folder, names in split.items():
        (top / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(top / folder / name)
    return parent


@pytest.mark.slow
def test_corelib_evaluate_prints_the_published_row_beside_ours(real_encoder, tmp_path, capsys):
    root, out = _cuhk03np(tmp_path / "data"), tmp_path / "v1_market2cuhk.pt"
    assert main(["convert", "corereid_v1", str(real_encoder), str(out), "--option", "task=market1501->cuhk03np",
                 "--option", "img_size=64x32"]) == 0
    printed = capsys.readouterr().out
    assert "mean_teacher (finetune), input 64x32, 715 tensors placed, 14 dropped" in printed
    assert "published method 'CORE-ReID V1', task market1501->cuhk03np" in printed
    assert main(["evaluate", str(out), "--dataset", "cuhk03np", str(root), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "finetune checkpoint (epoch 40; test: flip-averaged (BMFN)) on cuhk03np: mAP " in printed
    assert "published, CORE-ReID V1 on market1501->cuhk03np: mAP 62.9, rank1 61.0" in printed
