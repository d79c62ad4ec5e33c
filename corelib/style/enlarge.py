"""Style-transferred copies of a labelled source set (docs/method.md §2.1-2.2), on datasets.

Two modes:

- ``"camera"`` (CamStyle, persons): one CycleGAN per unordered camera pair of the source, trained
  on the images of the two cameras; every training image of camera ``a`` gets one copy in the
  style of each other camera, K-1 copies in all.
- ``"domain"`` (vehicles, or sources without camera labels): one CycleGAN between the source and
  the target's unlabelled training images; every source training image gets one target-style copy.

:func:`train_style_models` trains the models (resumable: a finished pair is skipped, an
interrupted one continues from its last epoch); :func:`write_style_set` writes the enlarged set,
real images plus copies, in the source's own layout (Market-1501 or VeRi-776 folders, otherwise a
``custom`` CSV), with file names from which the loader parses the original pid and camera
(``0002_c1s1_000451_03_fake_1to2.jpg``); :func:`load_style_set` reads it back.
:func:`style_gap` measures how far translation moves images toward the other side's colours.

Example::

    models = train_style_models(market, StyleCfg(), "runs/style/market", mode="camera")
    root = write_style_set(market, models, "data/market1501_camstyle")
    enlarged = load_style_set(root)        # 6x the training images, same pids and cameras
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .. import paths
from ..config import STYLE_MODES, StyleCfg, save_config
from ..data.batches import build_loader
from ..data.dataset import ReIDDataset, Sample, build_dataset, read_image
from ..data.layout import trusted_roots
from ..errors import InvalidInputError, MissingStageError, NotOwnedError, StyleError
from ..ownership import RunLock, install_folder
from ..repro import resolve_device
from .cyclegan import CycleGAN, StyleJob, load_cyclegan, style_transforms, to_pil, train_cyclegans

MODELS_INDEX = "style_models.json"
SET_STAMP = "style_set.json"

# split folder names of the layouts the enlarged set can be written in, keyed by loader
_LAYOUT_FOLDERS = {
    "market1501": ("bounding_box_train", "query", "bounding_box_test"),
    "veri776": ("image_train", "image_query", "image_test"),
}


@dataclass
class StylePair:
    """One trained CycleGAN: domain A (camera ``a`` or the source) <-> domain B."""

    name: str
    """Folder name: ``c1-c2`` (1-based cameras) or ``domain``."""
    a: Optional[int]
    """0-based camera of side A (None in domain mode)."""
    b: Optional[int]
    """0-based camera of side B (None in domain mode)."""
    images_a: int
    images_b: int
    checkpoint: str
    """Path of ``last.pt``, relative to the models folder."""


@dataclass
class StyleModels:
    """The style models of one source: what :func:`write_style_set` and :func:`style_gap` use."""

    mode: str
    root: Path
    source: str
    target: Optional[str]
    pairs: list[StylePair] = field(default_factory=list)

    def load(self, pair: StylePair, device: Union[str, torch.device] = "cpu") -> tuple[CycleGAN, StyleCfg]:
        """The trained CycleGAN of ``pair`` and the config it was trained with."""
        return load_cyclegan(self.root / pair.checkpoint, device=device)

    def save(self) -> Path:
        data = {"mode": self.mode, "source": self.source, "target": self.target,
                "pairs": [asdict(p) for p in self.pairs]}
        path = self.root / MODELS_INDEX
        path.write_text(json.dumps(data, indent=1))
        return path


def load_style_models(root: Union[str, Path]) -> StyleModels:
    """The index written by :func:`train_style_models` in ``root``.

    Raises:
        MissingStageError: ``root`` holds no trained style models; names the command that makes them.
    """
    root = Path(root)
    path = root / MODELS_INDEX
    if not path.is_file():
        raise MissingStageError(f"no style models in {root} ({MODELS_INDEX} missing); train them with "
                                f"`corelib style train` or notebook 01_style_transfer")
    data = json.loads(path.read_text())
    pairs = [StylePair(**p) for p in data["pairs"]]
    missing = [p.name for p in pairs if not (root / p.checkpoint).is_file()]
    if missing:
        raise MissingStageError(f"{root}: checkpoints missing for pair(s) {', '.join(missing)}; "
                                f"re-run `corelib style train` (it resumes)")
    return StyleModels(data["mode"], root, data["source"], data.get("target"), pairs)


def _check_mode(mode: str) -> None:
    if mode not in STYLE_MODES:
        raise StyleError(f"unknown style mode {mode!r}; valid modes: {', '.join(STYLE_MODES)}")


def _split_images(dataset: ReIDDataset, splits: Sequence[str]) -> list[Sample]:
    return [s for split in splits for s in dataset.split(split)]


def camera_pairs(dataset: ReIDDataset) -> list[tuple[int, int]]:
    """The unordered camera pairs of ``dataset``'s training split, C(K, 2) of them.

    Raises:
        StyleError: the dataset has no camera labels or a single camera (use ``mode="domain"``).
    """
    if not dataset.has_cameras:
        raise StyleError(f"{dataset.name} has no camera labels: camera-aware style transfer needs them; "
                         f"use mode='domain' with a target dataset instead")
    cams = sorted({s.camid for s in dataset.train})
    if len(cams) < 2:
        raise StyleError(f"{dataset.name} has {len(cams)} camera(s) in its training split; camera-aware style "
                         f"transfer needs at least 2 (use mode='domain')")
    return list(combinations(cams, 2))


def train_style_models(
    source: ReIDDataset,
    cfg: StyleCfg,
    out_dir: Union[str, Path],
    *,
    mode: str = "camera",
    target: Optional[ReIDDataset] = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> StyleModels:
    """Train the CycleGANs of ``source``: one per camera pair, or one source <-> target.

    Args:
        source: the labelled source; its ``cfg.train_splits`` images train the models (no labels used).
        cfg: CycleGAN settings, shared by all pairs.
        out_dir: one sub-folder per pair (``c1-c2/last.pt`` ...) plus ``style_models.json``.
        mode: ``"camera"`` or ``"domain"``.
        target: the target dataset (domain mode); only its unlabelled training split is used.
        resume: skip finished pairs and continue interrupted ones.
        overwrite: with ``resume=False``, set each pair's earlier model aside
            (``<pair>.replaced-<time>``) and train it again; without either, a pair folder that holds
            a model is refused, so nothing trained is replaced unasked.
        progress: a progress bar over the pairs and one per epoch.

    ``cfg.stack_pairs`` pairs with equal steps per epoch train at once (:func:`~corelib.style.cyclegan.train_cyclegans`).

    Raises:
        StyleError: an unknown mode, domain mode without a target, camera mode on a dataset without
            cameras.
    """

    _check_mode(mode)
    out = Path(out_dir)
    pool = _split_images(source, cfg.train_splits)
    jobs: list[tuple[StylePair, list[Sample], list[Sample]]] = []
    if mode == "camera":
        by_cam: dict[int, list[Sample]] = {}
        for s in pool:
            by_cam.setdefault(s.camid, []).append(s)
        for a, b in camera_pairs(source):
            name = f"c{a + 1}-c{b + 1}"
            jobs.append((StylePair(name, a, b, len(by_cam[a]), len(by_cam[b]), f"{name}/last.pt"), by_cam[a], by_cam[b]))
    else:
        if target is None:
            raise StyleError("domain-aware style transfer needs a target dataset (target=...)")
        jobs.append((StylePair("domain", None, None, len(pool), len(target.train), "domain/last.pt"), pool,
                     list(target.train)))
    models = StyleModels(mode, out, source.name, target.name if target is not None else None, [j[0] for j in jobs])
    with RunLock(out, what=f"style train ({mode})"):  # one owner for all the pairs (each CycleGAN nests in it)
        train_cyclegans([StyleJob(imgs_a, imgs_b, out / pair.name, pair.name) for pair, imgs_a, imgs_b in jobs], cfg,
                        resume=resume, overwrite=overwrite, progress=progress)
        save_config(cfg, out / "config.yaml")  # once every pair has accepted these settings
        models.save()
    return models


# --------------------------------------------------------------------------------------------
# translation


class _WithSize:
    """A transform that also returns the image's own (width, height), to resize its copy back."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(img), torch.tensor(img.size)


@torch.no_grad()
def translate(
    model: CycleGAN,
    cfg: StyleCfg,
    samples: Sequence[Sample],
    direction: str,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Iterable[tuple[int, Image.Image]]:
    """Yield ``(index, translated PIL image)`` for ``samples`` through generator ``direction``.

    Images are resized to the config's (height, width), translated, and resized to their own size
    again (bicubic), so the copies match the real images of the dataset.
    """
    gen = model.generator(direction)
    device = next(gen.parameters()).device
    loader = build_loader(samples, _WithSize(style_transforms(cfg, train=False)), batch_size, num_workers=num_workers)
    for (images, sizes), _, _, idx in loader:
        fakes = to_pil(gen(images.to(device)))
        for fake, (w, h), i in zip(fakes, sizes.tolist(), idx.tolist()):
            yield i, fake.resize((w, h), Image.Resampling.BICUBIC) if fake.size != (w, h) else fake


def _fake_name(path: str, tag: str) -> str:
    p = Path(path)
    return f"{p.stem}_fake_{tag}{p.suffix or '.jpg'}"


def _layout_loader(dataset: ReIDDataset) -> str:
    """The loader whose folder layout the enlarged set is written in (``custom`` CSV otherwise)."""
    for loader, folders in _LAYOUT_FOLDERS.items():
        if all((Path(dataset.root) / f).is_dir() for f in folders):
            return loader
    return "custom"


def _link(src: str, dst: Path) -> None:
    try:
        os.link(src, dst)  # no second copy of the real images when the file system allows it
    except OSError:
        shutil.copy2(src, dst)


def write_style_set(
    source: ReIDDataset,
    models: Union[StyleModels, str, Path],
    out_root: Union[str, Path],
    *,
    device: str = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the enlarged source set: every real image plus its style copies, in the source's layout.

    The training split holds the real images and, per image, K-1 camera-style copies (camera mode;
    ``<stem>_fake_<a>to<b>.jpg``, 1-based cameras) or one target-style copy (domain mode;
    ``<stem>_fake_domain.jpg``). Copies keep the pid and the camera of their real image, which the
    loader parses from the name. Query and gallery are the source's own (linked, not copied), so the
    set is evaluated like the source. Market-1501 and VeRi-776 layouts are written as such (the
    embedded presets use them); any other dataset becomes a ``custom`` ``dataset.csv``.

    The set is built in ``<out_root>.partial`` and renamed when complete; an existing complete set
    from the same models is returned as it is unless ``overwrite``, and one of other models or of
    another source is replaced.

    Only folders this writer made are ever removed: ``out_root`` must be absent, empty or an enlarged
    set (it holds ``style_set.json``), and a left-over ``.partial`` folder must carry the marker the
    writer put there (:data:`corelib.paths.PARTIAL_MARKER`). Both are checked before any image is
    translated.

    Returns:
        ``out_root``, loadable with :func:`load_style_set`.

    Raises:
        NotOwnedError: ``out_root`` or its ``.partial`` folder holds files of someone else, or
            ``out_root`` is (or contains) the source dataset or the style models folder.
        InvalidInputError: ``out_root`` lies inside the source dataset or the style models folder.
    """
    from ..progress import tqdm

    models = models if isinstance(models, StyleModels) else load_style_models(models)
    out = Path(out_root).expanduser()
    _check_out_apart(out, source, models)
    stamp_path = out / SET_STAMP
    if stamp_path.is_file() and not overwrite:
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("models") == str(models.root.resolve()) and stamp.get("source_root") == str(Path(source.root).resolve()):
            return out
    if models.source != source.name:
        raise StyleError(f"the style models in {models.root} were trained on {models.source!r}, not on {source.name!r}")
    what = "an enlarged style set"
    fix = "pass another --out (a new or empty folder), or remove it yourself if nothing in it is needed"
    paths.check_owned_tree(out, (SET_STAMP,), what, fix)  # refuse now, not after translating every image
    loader = _layout_loader(source)
    partial = out.with_name(out.name + ".partial")
    paths.remove_owned_tree(partial, (paths.PARTIAL_MARKER, SET_STAMP), "a partial folder of `corelib style generate`",
                            f"remove {partial} yourself if nothing in it is needed, or pass another --out")
    paths.make_partial_dir(partial, "write_style_set")
    dev = resolve_device(device)
    folders = _LAYOUT_FOLDERS.get(loader, ("train", "query", "gallery"))
    for f in folders:
        (partial / f).mkdir()
    rows: list[tuple[str, str, int, Optional[int]]] = []  # custom layout: (split, path, pid, camid)
    # real images keep their file names (which hold the original pid and camera)
    for split, folder in zip(("train", "query", "gallery"), folders):
        for s in source.split(split):
            if loader == "custom":
                rows.append((split, str(Path(s.path).resolve()), s.pid, s.camid))
            else:
                _link(s.path, partial / folder / Path(s.path).name)
    train = list(source.train)
    jobs = []  # (pair, direction, samples, tag)
    for pair in models.pairs:
        if models.mode == "camera":
            jobs.append((pair, "ab", [s for s in train if s.camid == pair.a], f"{pair.a + 1}to{pair.b + 1}"))
            jobs.append((pair, "ba", [s for s in train if s.camid == pair.b], f"{pair.b + 1}to{pair.a + 1}"))
        else:
            jobs.append((pair, "ab", train, "domain"))
    total = sum(len(j[2]) for j in jobs)
    bar = tqdm(total=total, desc="style copies", unit="img", disable=not progress, mininterval=0.5)
    n_fake, current = 0, None
    for pair, direction, samples, tag in jobs:
        if current is None or current[0] != pair.name:
            current = (pair.name, *models.load(pair, dev))
        _, model, cfg = current
        for i, fake in translate(model, cfg, samples, direction, batch_size=batch_size, num_workers=num_workers):
            s = samples[i]
            name = _fake_name(s.path, tag)
            if loader == "custom":
                (partial / "train" / name).parent.mkdir(exist_ok=True)
                fake.save(partial / "train" / name, quality=95)
                rows.append(("train", f"train/{name}", s.pid, s.camid))
            else:
                fake.save(partial / folders[0] / name, quality=95)
            n_fake += 1
            bar.update(1)
    bar.close()
    if loader == "custom":
        import csv

        with open(partial / "dataset.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("split", "path", "pid", "camid"))
            w.writerows((sp, p, pid, "" if cam is None else cam) for sp, p, pid, cam in rows)
    stamp = {"mode": models.mode, "loader": loader, "source": source.name,
             "source_root": str(Path(source.root).resolve()), "models": str(models.root.resolve()),
             "real_train_images": len(train), "style_copies": n_fake,
             "copies_per_image": n_fake / max(1, len(train))}
    (partial / SET_STAMP).write_text(json.dumps(stamp, indent=1))
    (partial / paths.PARTIAL_MARKER).unlink()  # complete: the stamp says whose it is from now on
    install_folder(partial, out, writer="write_style_set", markers=(SET_STAMP,), what=what, fix=fix)
    return out


def _check_out_apart(out: Path, source: ReIDDataset, models: StyleModels) -> None:
    """Refuse an output folder that is, contains or lies inside the source dataset or the models.

    Replacing it would delete the real images or the trained CycleGANs; writing inside it would add
    foreign files to them (and a later rewrite would delete the folder from under them).
    """
    target = out.resolve()
    for label, folder in (("the source dataset", source.root), ("the style models folder", models.root)):
        other = Path(folder).resolve()
        if target == other or target in other.parents:
            raise NotOwnedError(
                f"--out {out} {'is' if target == other else 'contains'} {label} ({other}); writing the enlarged "
                f"set there would replace it. Fix: pass another --out, e.g. {other.parent / (other.name + '_enlarged')}"
            )
        if other in target.parents:
            raise InvalidInputError(
                f"--out {out} lies inside {label} ({other}); the enlarged set would add its files to it. "
                f"Fix: pass an --out outside {other}"
            )


def load_style_set(root: Union[str, Path]) -> ReIDDataset:
    """The enlarged set written by :func:`write_style_set`, through the source's own loader.

    Its images must lie inside ``root`` or inside the source root recorded in its stamp (the real
    query, gallery and, for the custom layout, training images); any other path is refused
    (``UnsafePathError``), as for every dataset.

    Raises:
        MissingStageError: ``root`` holds no complete enlarged set (names the command that writes one).
    """
    root = Path(root).expanduser()
    stamp_path = root / SET_STAMP
    if not stamp_path.is_file():
        hint = " (an interrupted write left a .partial folder: run it again)" if root.with_name(root.name + ".partial").exists() else ""
        raise MissingStageError(f"no enlarged style set at {root}{hint}; write one with `corelib style generate` "
                                f"or notebook 01_style_transfer")
    stamp = json.loads(stamp_path.read_text())
    # The set links to (market / VeRi layouts) or lists (custom CSV) the real images of its source:
    # those may lie in the source root its stamp records, and nowhere else outside the set.
    extra = [stamp["source_root"]] if stamp.get("source_root") else []
    with trusted_roots(*extra):
        ds = build_dataset(stamp["loader"], root)
    ds.name = f"{stamp['source']}+{stamp['mode']}style"
    ds.extras["style_set"] = stamp
    return ds


# --------------------------------------------------------------------------------------------
# how far translation moves images: colour statistics


def colour_statistics(images: Sequence[Union[Image.Image, str]], size: tuple[int, int]) -> torch.Tensor:
    """Per image, the mean and standard deviation of R, G and B in [0, 1] at ``size`` (H, W): (N, 6)."""
    out = []
    for img in images:
        img = read_image(img) if isinstance(img, (str, Path)) else img.convert("RGB")
        t = torch.from_numpy(np.asarray(img.resize(size[::-1], Image.Resampling.BICUBIC), dtype=np.float32) / 255.0)
        flat = t.reshape(-1, 3)
        out.append(torch.cat([flat.mean(0), flat.std(0)]))
    return torch.stack(out).double()


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``x`` and ``y`` (FID's formula).

    ``|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2))``; the trace of the matrix square root is
    computed as the sum of the square roots of the eigenvalues of ``S_x^(1/2) S_y S_x^(1/2)``
    (symmetric, so ``eigh`` is exact and stable).
    """
    if len(x) < 2 or len(y) < 2:
        raise StyleError("the Fréchet distance needs at least 2 images on each side")
    mx, my = x.mean(0), y.mean(0)
    sx, sy = torch.cov(x.T), torch.cov(y.T)
    w, v = torch.linalg.eigh(sx)
    root_x = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_x @ sy @ root_x).clamp_min(0).sqrt().sum()
    return float((mx - my).pow(2).sum() + torch.trace(sx) + torch.trace(sy) - 2 * cross)


def style_gap(
    source: ReIDDataset,
    models: Union[StyleModels, str, Path],
    *,
    target: Optional[ReIDDataset] = None,
    split: str = "train",
    max_images: int = 200,
    device: str = "auto",
    progress: bool = False,
) -> list[dict]:
    """How much translation closes the colour gap, per pair and direction.

    For each direction X -> Y (camera ``a`` -> camera ``b`` and back, or source -> target) the gap is
    the Fréchet distance between the per-image colour statistics (:func:`colour_statistics`) of two
    image sets: ``before`` compares real X with real Y, ``after`` compares X translated to Y's style
    with real Y; ``ratio = after / before`` (below 0.5: the gap fell by more than half).
    ``cycle_l1`` is the mean absolute error, in [0, 1] pixel units, of X -> Y -> X reconstructions,
    which stays small only when translation keeps the content.

    Args:
        source, models: the dataset and its trained style models.
        target: required in domain mode (its training images are the Y side).
        split: the source split whose images are translated.
        max_images: at most this many images per side (evenly spaced), to bound the time.
    """
    from ..progress import tqdm

    models = models if isinstance(models, StyleModels) else load_style_models(models)
    dev = resolve_device(device)
    items = source.split(split)

    def subset(samples: Sequence[Sample]) -> list[Sample]:
        step = max(1, -(-len(samples) // max_images))
        return list(samples)[::step]

    rows = []
    directions = []
    for pair in models.pairs:
        if models.mode == "camera":
            side = {c: subset([s for s in items if s.camid == c]) for c in (pair.a, pair.b)}
            directions += [(pair, "ab", side[pair.a], side[pair.b], f"c{pair.a + 1}", f"c{pair.b + 1}"),
                           (pair, "ba", side[pair.b], side[pair.a], f"c{pair.b + 1}", f"c{pair.a + 1}")]
        else:
            if target is None:
                raise StyleError("style_gap in domain mode needs the target dataset (target=...)")
            directions.append((pair, "ab", subset(items), subset(target.train), source.name, target.name))
    loaded = None  # (pair name, model, cfg): both directions of a pair share one load
    for pair, direction, xs, ys, x_name, y_name in tqdm(directions, desc="style gap", disable=not progress):
        if loaded is None or loaded[0] != pair.name:
            loaded = (pair.name, *models.load(pair, dev))
        _, model, cfg = loaded
        size = (cfg.height, cfg.width)
        real_x = [read_image(sample.path) for sample in xs]  # read once: translated, compared, summarised
        fakes = [img for _, img in translate_images(model, cfg, real_x, direction)]
        back = [img for _, img in translate_images(model, cfg, fakes, "ba" if direction == "ab" else "ab")]
        tf = style_transforms(cfg, train=False)
        # both in [-1, 1]: half the absolute difference is in [0, 1] pixel units
        cycle = sum(float((tf(b) - tf(x)).abs().mean()) / 2 for b, x in zip(back, real_x)) / len(xs)
        stats_y = colour_statistics([s.path for s in ys], size)
        before = frechet_distance(colour_statistics(real_x, size), stats_y)
        after = frechet_distance(colour_statistics(fakes, size), stats_y)
        rows.append({"pair": pair.name, "from": x_name, "to": y_name, "images": len(xs), "before": before,
                     "after": after, "ratio": after / before if before > 0 else float("nan"), "cycle_l1": cycle})
    return rows


@torch.no_grad()
def translate_images(model: CycleGAN, cfg: StyleCfg, images: Sequence[Image.Image], direction: str,
                     batch_size: int = 64) -> Iterable[tuple[int, Image.Image]]:
    """Like :func:`translate` for in-memory PIL images; outputs stay at the config's size."""
    gen = model.generator(direction)
    device = next(gen.parameters()).device
    tf = style_transforms(cfg, train=False)
    for start in range(0, len(images), batch_size):
        batch = torch.stack([tf(im) for im in images[start:start + batch_size]]).to(device)
        for j, fake in enumerate(to_pil(gen(batch))):
            yield start + j, fake


# --------------------------------------------------------------------------------------------
# figures and run folders


class StyleRunPaths(NamedTuple):
    models: Path
    """Folder of the trained CycleGANs (``style_models.json`` + one folder per pair)."""
    enlarged: Path
    """Folder of the enlarged source set."""


def style_run_paths(run_dir: Union[str, Path], pair: str) -> StyleRunPaths:
    """Where notebook 01 puts an embedded pair's style models and enlarged set, and 02 finds them."""
    base = Path(run_dir) / pair / "style"
    return StyleRunPaths(base / "models", base / "enlarged")


def camera_style_rows(source: ReIDDataset, models: Union[StyleModels, str, Path], *, split: str = "train",
                      device: str = "cpu") -> tuple[list[tuple[str, list[Image.Image]]], list[str]]:
    """Rows for :func:`corelib.viz.samples_overview`: one image per camera, in every camera's style.

    Row ``a`` holds an image of camera ``a``; column ``b`` is that image translated to camera ``b``'s
    style, so the diagonal holds the real images. Returns ``(rows, column_titles)``.
    """
    models = models if isinstance(models, StyleModels) else load_style_models(models)
    items = source.split(split)
    cams = sorted({s.camid for s in items})
    pick = {c: next(s for s in items if s.camid == c) for c in cams}
    cells: dict[tuple[int, int], Image.Image] = {}
    for pair in models.pairs:
        model, cfg = models.load(pair, resolve_device(device))
        for x, y, direction in ((pair.a, pair.b, "ab"), (pair.b, pair.a, "ba")):
            cells[x, y] = next(iter(translate(model, cfg, [pick[x]], direction)))[1]
    rows = [(f"cam {a + 1}", [read_image(pick[a].path) if a == b else cells[a, b] for b in cams]) for a in cams]
    return rows, [f"as cam {b + 1}" for b in cams]


def domain_style_rows(source: ReIDDataset, target: ReIDDataset, models: Union[StyleModels, str, Path], *,
                      n: int = 8, device: str = "cpu") -> list[tuple[str, list[Image.Image]]]:
    """Rows for :func:`corelib.viz.samples_overview`: source images, their target-style copies, and
    target images for reference (``n`` each, evenly spaced through the training splits)."""
    models = models if isinstance(models, StyleModels) else load_style_models(models)
    model, cfg = models.load(models.pairs[0], resolve_device(device))
    xs = source.train[:: max(1, len(source.train) // n)][:n]
    fakes = dict(translate(model, cfg, xs, "ab"))
    refs = target.train[:: max(1, len(target.train) // n)][:n]
    return [(f"{source.name}\n(real)", [read_image(s.path) for s in xs]),
            (f"→ {target.name}\nstyle", [fakes[i] for i in range(len(xs))]),
            (f"{target.name}\n(real)", [read_image(s.path) for s in refs])]


def summarize_gap(rows: Sequence[dict]) -> dict:
    """The overall effect of translation: total gap before and after over all directions, and
    their ratio (below 0.5: translation closed more than half of the colour gap)."""
    before, after = sum(r["before"] for r in rows), sum(r["after"] for r in rows)
    return {"directions": len(rows), "before": before, "after": after, "ratio": after / before if before else float("nan"),
            "worst_ratio": max(r["ratio"] for r in rows), "cycle_l1": sum(r["cycle_l1"] for r in rows) / len(rows)}
