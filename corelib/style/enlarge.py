"""The enlarged source set: real images plus their style copies, written in the source's own layout.

In camera mode (CamStyle) every training image of camera ``a`` gets one copy in the style of each
other camera, K-1 copies in all; in domain mode every source training image gets one target-style
copy (:mod:`corelib.style.model_index` trains the models). :func:`write_style_set` writes the set in
the source's own layout (Market-1501 or VeRi-776 folders, otherwise a ``custom`` CSV), with file
names from which the loader parses the original pid and camera (``0002_c1s1_000451_03_fake_1to2.jpg``);
a copy keeps the view id of its real image (a style changes colours, not the orientation), written to
the layout's view files (``keypoint_train.txt`` / ``keypoint_test.txt``) or the CSV's ``viewid`` column
when the source has views. :func:`load_style_set` reads it back. :func:`style_run_paths` says where notebook 01 puts the models
and the set.

Example::

    models = train_style_models(market, StyleCfg(), "runs/style/market", mode="camera")
    root = write_style_set(market, models, "data/market1501_camstyle")
    enlarged = load_style_set(root)        # 6x the training images, same pids and cameras
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple, Optional, Union

from .. import paths
from ..data.dataset import ReIDDataset, build_dataset
from ..data.layout import VIEW_FILES, trusted_roots, write_view_file
from ..errors import InvalidInputError, MissingStageError, NotOwnedError, StyleError
from ..ownership import install_folder
from ..progress import tqdm
from ..repro import resolve_device
from .model_index import StyleModels, load_style_models
from .translation import translate

SET_STAMP = "style_set.json"

# split folder names of the layouts the enlarged set can be written in, keyed by loader
_LAYOUT_FOLDERS = {
    "market1501": ("bounding_box_train", "query", "bounding_box_test"),
    "veri776": ("image_train", "image_query", "image_test"),
}


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
    rows: list[tuple[str, str, int, Optional[int], Optional[int]]] = []  # custom: (split, path, pid, camid, viewid)
    views: tuple[dict[str, int], dict[str, int]] = ({}, {})  # folder layouts: train, test file {name: viewid}
    # real images keep their file names (which hold the original pid and camera)
    for split, folder in zip(("train", "query", "gallery"), folders):
        for s in source.split(split):
            if loader == "custom":
                rows.append((split, str(Path(s.path).resolve()), s.pid, s.camid, s.viewid))
            else:
                _link(s.path, partial / folder / Path(s.path).name)
                if s.viewid is not None:
                    views[split != "train"][Path(s.path).name] = s.viewid
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
                rows.append(("train", f"train/{name}", s.pid, s.camid, s.viewid))
            else:
                fake.save(partial / folders[0] / name, quality=95)
                if s.viewid is not None:
                    views[0][name] = s.viewid
            n_fake += 1
            bar.update(1)
    bar.close()
    if loader == "custom":
        with_views = any(row[4] is not None for row in rows)
        with open(partial / "dataset.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("split", "path", "pid", "camid") + (("viewid",) if with_views else ()))
            w.writerows((sp, p, pid, "" if cam is None else cam) + (("" if view is None else view,) if with_views else ())
                        for sp, p, pid, cam, view in rows)
    elif views[0] or views[1]:
        for name, listed in zip(VIEW_FILES, views):
            write_view_file(partial / name, listed)
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


class StyleRunPaths(NamedTuple):
    models: Path
    """Folder of the trained CycleGANs (``style_models.json`` + one folder per pair)."""
    enlarged: Path
    """Folder of the enlarged source set."""


def style_run_paths(run_dir: Union[str, Path], pair: str) -> StyleRunPaths:
    """Where notebook 01 puts an embedded pair's style models and enlarged set, and 02 finds them."""
    base = Path(run_dir) / pair / "style"
    return StyleRunPaths(base / "models", base / "enlarged")
