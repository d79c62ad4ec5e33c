"""Writing a synthetic dataset: which image of which identity goes where under which file name
(:func:`plan_jobs`), drawing and saving the images, the VeRi list files, the view files, the manifest and
the completion stamp (:func:`generate_synthetic`), and reading a written copy back (:func:`load_synthetic`).

Every preset, person or vehicle, gets the view drawn for each of its images written in VeRi-776's
orientation annotation format (:data:`~corelib.data.layout.VIEW_FILES`: ``keypoint_train.txt`` for the
train folder, ``keypoint_test.txt`` for query and gallery; one line per image: its file name, 40 keypoint
coordinates, all ``0`` since the generator places no keypoints, and the view id last: persons 0 front,
1 back, 2 side; vehicles 0 front, 1 rear, 2 side). The Market-layout and VeRi-776 loaders read them.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from PIL import Image

from ... import paths
from ...errors import MissingFileError
from ...ownership import install_folder
from ...progress import tqdm
from ..dataset import ReIDDataset, build_dataset
from ..layout import VIEW_FILES, write_view_file
from ..manifests import dump_manifest, load_manifest
from .canvas import camera_style, preset_rng
from .person import person_identity, render_person
from .presets import SyntheticPreset, get_preset
from .vehicle import render_vehicle, vehicle_identity

GENERATOR_VERSION = 2
"""Bumped whenever the drawing code changes the pixels or a copy's files change; part of the completion
stamp, so an older copy is redrawn. 2: the view files (the pixels are those of version 1)."""

STAMP_FILE = ".synthetic_complete.json"


# ============================================================================================
# the plan: which image of which identity goes where, with which file name


@dataclass(frozen=True)
class ImageJob:
    split: str  # folder name
    filename: str
    pid: int  # identity used for drawing (distractors and junk get their own identity numbers)
    cam: int  # 0-based
    index: int  # image index within (pid, cam)
    junk: bool = False


def _split_folders(preset: SyntheticPreset) -> dict[str, str]:
    if preset.layout == "market":
        return {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    return {"train": "image_train", "query": "image_query", "gallery": "image_test"}


def _filename(preset: SyntheticPreset, pid: int, cam: int, frame: int, index: int) -> str:
    if preset.layout == "market":
        # Market-1501: 0002_c1s1_000451_03.jpg = pid, camera (1-based), sequence, frame, box index
        pid_str = "-1" if pid < 0 else f"{pid:04d}"
        return f"{pid_str}_c{cam + 1}s1_{frame:06d}_{index:02d}.jpg"
    # VeRi-776: 0002_c002_00030600_0.jpg = vehicle id, camera (1-based), frame, index
    return f"{pid:04d}_c{cam + 1:03d}_{frame:08d}_{index}.jpg"


def plan_jobs(preset: SyntheticPreset) -> list[ImageJob]:
    """Assign identities to splits and cameras and name every file (no drawing yet).

    Train identities use pids 1..N_train, test identities the next N_test pids; test images are
    split Market-style: for every (identity, camera) one image goes to the query set and the rest to
    the gallery, so every query has a same-identity match in another camera of the gallery.
    """
    rng = preset_rng(preset, "plan")
    folders = _split_folders(preset)
    jobs: list[ImageJob] = []
    frame = 0
    n_ids = preset.num_train_ids + preset.num_test_ids
    for pid in range(1, n_ids + 1):
        is_train = pid <= preset.num_train_ids
        n_cams = int(rng.integers(preset.cams_per_id[0], min(preset.cams_per_id[1], preset.num_cameras) + 1))
        cams = sorted(rng.choice(preset.num_cameras, size=n_cams, replace=False).tolist())
        for cam in cams:
            n_img = int(rng.integers(preset.images_per_cam[0], preset.images_per_cam[1] + 1))
            frame += int(rng.integers(20, 400))
            for k in range(n_img):
                split = "train" if is_train else ("query" if k == 0 else "gallery")
                jobs.append(ImageJob(folders[split], _filename(preset, pid, cam, frame + 5 * k, k), pid, cam, k))
    # Distractors: people / vehicles never queried. Market names them 0000; VeRi has none, so the
    # vehicle presets give them fresh ids above the test range (they are still never queried).
    for j in range(preset.num_distractors):
        cam = int(rng.integers(preset.num_cameras))
        frame += int(rng.integers(5, 50))
        draw_pid = n_ids + 1 + j
        name_pid = 0 if preset.layout == "market" else draw_pid
        jobs.append(ImageJob(folders["gallery"], _filename(preset, name_pid, cam, frame, j % 100), draw_pid, cam, 0))
    for j in range(preset.num_junk):
        cam = int(rng.integers(preset.num_cameras))
        frame += int(rng.integers(5, 50))
        jobs.append(ImageJob(folders["gallery"], _filename(preset, -1, cam, frame, j % 100), n_ids + 10_000 + j, cam, 0, junk=True))
    return jobs


def _render_job(preset: SyntheticPreset, job: ImageJob) -> tuple[Image.Image, int]:
    """The image of ``job`` and the view it was drawn from."""
    rng = preset_rng(preset, "image", job.pid, job.cam, job.index)
    cam = camera_style(preset, job.cam)
    if preset.kind == "person":
        img, view = render_person(preset, person_identity(preset, job.pid), cam, rng)
    else:
        img, view = render_vehicle(preset, vehicle_identity(preset, job.pid), cam, rng)
    if job.junk:  # a bad detection: a thin off-centre crop of the frame, blown up
        w, h = img.size
        x0 = int(rng.integers(0, w // 2))
        img = img.crop((x0, 0, x0 + max(4, w // 3), h // 2)).resize((w, h), Image.Resampling.NEAREST)
    return img, view


def render_example(preset: str | SyntheticPreset, pid: int, cam: int, index: int = 0, *,
                   with_view: bool = False) -> Image.Image | tuple[Image.Image, int]:
    """Draw one image of identity ``pid`` seen by camera ``cam`` (0-based) without writing it; with
    ``with_view``, ``(image, view id)``: the view it was drawn from, as the view files record it."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    img, view = _render_job(p, ImageJob("", "", pid, cam, index))
    return (img, view) if with_view else img


def _write_chunk(args: tuple[SyntheticPreset, str, list[ImageJob]]) -> list[int]:
    """Draw and save ``jobs``; return the view of each, in order."""
    preset, root, jobs = args
    views = []
    for job in jobs:
        img, view = _render_job(preset, job)
        # Fixed quality, no EXIF or timestamps: the same seed gives byte-identical files.
        img.save(os.path.join(root, job.split, job.filename), format="JPEG", quality=90)
        views.append(view)
    return views


# ============================================================================================
# writing a dataset


def preset_fingerprint(preset: SyntheticPreset) -> str:
    """Hash of the preset and generator version; stored next to the data to detect stale copies."""
    blob = json.dumps({"v": GENERATOR_VERSION, "preset": asdict(preset)}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_folder(preset: SyntheticPreset) -> str:
    """Folder name of a preset's dataset inside the output root."""
    return preset.manifest_name


def generate_synthetic(
    preset: str | SyntheticPreset,
    root: str | Path,
    *,
    scale: float = 1.0,
    workers: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write one synthetic dataset under ``root/<synthetic_PRESET>`` and return that folder.

    An existing complete copy with the same fingerprint is reused (nothing is redrawn); a stale
    copy (its stamp names another fingerprint) is replaced. Files are written to a temporary sibling
    folder and renamed at the end, so an interrupted run never leaves a half-written dataset behind.

    Nothing the generator did not write is deleted: an existing ``root/<synthetic_PRESET>`` without
    the generator's stamp (other than an empty folder), or a left-over temporary folder without its
    marker, raises ``NotOwnedError`` before anything is drawn.

    Args:
        preset: a preset name (:func:`list_presets`) or a :class:`SyntheticPreset`.
        root: parent folder of the dataset folder.
        scale: multiply identity counts (e.g. 0.2 for smoke tests); 1.0 is the preset itself.
        workers: processes to draw with (default: all cores).
        overwrite: redraw even when a complete copy exists.
        progress: show a tqdm progress bar.

    Raises:
        NotOwnedError: the dataset folder or the temporary folder exists and is not the generator's.
        InvalidInputError: ``scale`` is not a positive number (:meth:`SyntheticPreset.scaled`).
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    if scale != 1.0:
        p = p.scaled(scale)
    root = Path(root).expanduser()
    out = root / dataset_folder(p)
    fp = preset_fingerprint(p)
    stamp = out / STAMP_FILE
    if not overwrite and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("fingerprint") == fp:
                return out
        except (json.JSONDecodeError, OSError):
            pass  # unreadable stamp: regenerate

    what = "a synthetic dataset written by corelib"
    fix = (f"pass another root, or move {out} away yourself if it is not needed; "
           f"generate_synthetic writes root/{dataset_folder(p)}")
    paths.check_owned_tree(out, (STAMP_FILE,), what, fix)  # refuse before drawing, not after
    jobs = plan_jobs(p)
    tmp = root / f".{dataset_folder(p)}.tmp-{os.getpid()}"
    # A temporary folder of this name is only removed when its marker says this generator made it.
    paths.remove_owned_tree(tmp, (paths.PARTIAL_MARKER, STAMP_FILE),
                            "a temporary folder of generate_synthetic",
                            f"remove {tmp} yourself if nothing in it is needed")
    paths.make_partial_dir(tmp, "generate_synthetic")
    for folder in _split_folders(p).values():
        (tmp / folder).mkdir(parents=True)
    workers = workers or os.cpu_count() or 1
    chunks = [jobs[i : i + 64] for i in range(0, len(jobs), 64)]
    bar = _progress(len(jobs), f"synth {p.name}", progress)
    views: list[int] = []  # one per job, in plan order (pool.map keeps the order of the chunks)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for chunk_views in pool.map(_write_chunk, [(p, str(tmp), c) for c in chunks]):
                views += chunk_views
                bar.update(len(chunk_views))
    else:
        for c in chunks:
            views += _write_chunk((p, str(tmp), c))
            bar.update(len(c))
    bar.close()
    if p.layout == "veri":
        _write_veri_lists(tmp, jobs)
    _write_view_files(p, tmp, jobs, views)
    manifest = preset_manifest(p, jobs, views)
    dump_manifest(manifest, tmp / "manifest.yaml")
    (tmp / STAMP_FILE).write_text(json.dumps({"fingerprint": fp, "preset": p.name, "images": len(jobs)}, indent=1))
    # The marker only guards the temporary folder: the dataset itself holds exactly what it always held.
    (tmp / paths.PARTIAL_MARKER).unlink()
    install_folder(tmp, out, writer="generate_synthetic", markers=(STAMP_FILE,), what=what, fix=fix)
    return out


def _write_veri_lists(root: Path, jobs: list[ImageJob]) -> None:
    # VeRi-776 ships name_train.txt / name_query.txt / name_test.txt listing the file names.
    for folder, listname in (("image_train", "name_train.txt"), ("image_query", "name_query.txt"), ("image_test", "name_test.txt")):
        names = sorted(j.filename for j in jobs if j.split == folder)
        (root / listname).write_text("".join(n + "\n" for n in names))


def _write_view_files(preset: SyntheticPreset, root: Path, jobs: list[ImageJob], views: list[int]) -> None:
    """The drawn views in VeRi's keypoint-file format (see the module docstring), every image listed,
    junk included: the train folder's in the first file, query and gallery's in the second."""
    folders = _split_folders(preset)
    for name, wanted in zip(VIEW_FILES, ((folders["train"],), (folders["query"], folders["gallery"]))):
        # zero coordinates: the generator places no keypoints
        write_view_file(root / name, {j.filename: v for j, v in zip(jobs, views) if j.split in wanted})


def _possible_views(preset: SyntheticPreset, cams: set[int]) -> int:
    """How many views cameras ``cams`` can draw (those of non-zero probability): what a full-size split
    shows, with hundreds of images; a drawn copy counts the views it drew instead."""
    return len({v for c in cams for v, prob in enumerate(camera_style(preset, c)["views"]) if prob > 0})


def preset_manifest(preset: SyntheticPreset, jobs: Optional[list[ImageJob]] = None,
                    views: Optional[list[int]] = None) -> dict:
    """The data manifest of a preset (same schema as ``data_manifests/*.yaml``).

    Its ``views`` (distinct view ids per split) count ``views``, the view drawn for each of ``jobs``, when
    given (as :func:`generate_synthetic` does); otherwise the views the split's cameras can draw, which a
    full-size preset shows (drawing every image only to count them would take seconds).
    """
    jobs = plan_jobs(preset) if jobs is None else jobs
    folders = _split_folders(preset)
    splits, view_counts = {}, {}
    for split, folder in folders.items():
        kept = [j for j in jobs if j.split == folder and not j.junk]
        name_pids = {int(j.filename.split("_")[0]) for j in kept}
        splits[split] = {"ids": len(name_pids), "images": len(kept), "cameras": len({j.cam for j in kept})}
        if views is None:
            view_counts[split] = _possible_views(preset, {j.cam for j in kept})
        else:
            view_counts[split] = len({v for j, v in zip(jobs, views) if j.split == folder and not j.junk})
    files = {folder: sum(1 for j in jobs if j.split == folder) for folder in folders.values()}
    loader = "market1501" if preset.layout == "market" else "veri776"
    layout = list(folders.values()) + (["name_train.txt", "name_query.txt", "name_test.txt"] if preset.layout == "veri" else [])
    layout += list(VIEW_FILES)
    return {
        "name": preset.manifest_name,
        "title": f"Synthetic {preset.name} ({preset.description})",
        "kind": preset.kind,
        "loader": loader,
        "loader_kwargs": {},
        "folder": dataset_folder(preset),
        "layout": layout,
        "image_format": "jpg",
        "image_size": list(preset.image_size),
        "cameras": preset.num_cameras,
        "protocol": "market",
        "splits": splits,
        "views": view_counts,
        "files": files,
        "obtain": f"generated locally: `corelib synth {preset.name} ROOT` (seed {preset.seed}, "
        f"generator version {GENERATOR_VERSION})",
        "licence": "synthetic, generated by corelib; no restrictions",
        "discrepancies": [],
        "domain": preset.domain.name,
        "fingerprint": preset_fingerprint(preset),
    }


def load_synthetic(dataset_root: str | Path) -> ReIDDataset:
    """Load a generated dataset folder with the loader its ``manifest.yaml`` names."""
    root = Path(dataset_root)
    if not (root / "manifest.yaml").is_file():
        raise MissingFileError(
            f"{root} has no manifest.yaml: it is not a generated synthetic dataset; "
            f"create one with `corelib synth PRESET {root.parent}`"
        )
    m = load_manifest(root / "manifest.yaml")
    ds = build_dataset(m["loader"], root, **(m.get("loader_kwargs") or {}))
    ds.name = m["name"]
    return ds


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, mininterval=0.5)
