"""Data manifests: what a dataset copy must contain, and a verifier that checks a copy against it.

A manifest (``data_manifests/<name>.yaml``) records a dataset's layout, per-split identity, image
and camera counts as the loader returns them, optionally the distinct view (orientation) ids per split
(``views: {train: 3, ...}``; the embedded presets have them), the evaluation protocol, where to obtain it,
licence notes and known count discrepancies. ``verify_dataset`` checks a copy against it and returns a
readable report, view coverage included (the share of each split's images that have a view id);
``corelib verify NAME ROOT`` prints that report and exits non-zero on a problem.

Every folder a manifest names (``layout`` entries and the keys of ``files``) must lie inside the
dataset root, also once symbolic links are followed; so must every image file the verifier decodes.
A manifest or copy that points elsewhere raises ``UnsafePathError`` instead of reading foreign files.

Example::

    report = verify_dataset("market1501", "~/datasets/Market-1501-v15.09.15")
    print(report.format())
    assert report.ok
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional, Union

import yaml

from .. import paths
from ..errors import DatasetRootError, InvalidInputError, ManifestError, UnsafePathError
from ..progress import tqdm
from ..yamlfile import read_yaml
from .dataset import build_dataset, check_loader_options, expected_layout, open_image
from .layout import IMAGE_EXTENSIONS, RootGuard, refuse_link_loop

REQUIRED_KEYS = ("name", "title", "kind", "loader", "folder", "layout", "protocol", "splits")
SPLITS = ("train", "query", "gallery")


def list_manifests() -> list[str]:
    """Names of the committed manifests (file stems in ``data_manifests/``)."""
    return sorted(p.stem for p in paths.manifests_dir().glob("*.yaml"))


def load_manifest(name_or_path: Union[str, Path, Mapping]) -> dict:
    """Read and validate a manifest given by name, by path to a YAML file, or as a dict.

    Raises:
        ManifestError: unknown name (the message lists the known ones), unreadable YAML (or YAML
            that :func:`~corelib.yamlfile.read_yaml` refuses: too large, aliases that expand too far), a
            missing key, or a layout entry that would escape the dataset root.
        UnsafePathError: a ``files`` entry (a folder whose images are counted) would escape it.
    """
    if isinstance(name_or_path, Mapping):
        data, source = dict(name_or_path), "<dict>"
    else:
        p = Path(name_or_path).expanduser()
        if p.suffix not in (".yaml", ".yml"):
            p = paths.manifests_dir() / f"{name_or_path}.yaml"
            if not p.is_file():
                raise ManifestError(
                    f"no manifest named {name_or_path!r}; known manifests: {', '.join(list_manifests())} "
                    f"(or pass the path of a manifest .yaml file)"
                )
        if not p.is_file():
            raise ManifestError(f"manifest file {p} does not exist")
        data = read_yaml(p, what="manifest", error=ManifestError)  # safe loader: manifests are data, never code
        source = str(p)
    _validate(data, source)
    return data


def _validate(data: Any, source: str) -> None:
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest must be a YAML mapping, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ManifestError(f"{source}: missing key(s) {', '.join(missing)}")
    for entry in list(data["layout"]) + [data["folder"]]:
        pp = PurePosixPath(str(entry))
        if pp.is_absolute() or ".." in pp.parts:
            raise ManifestError(f"{source}: layout entry {entry!r} escapes the dataset root; use relative paths")
    files = data.get("files") or {}
    if not isinstance(files, Mapping):
        raise ManifestError(f"{source}: files must map folders to image counts, got {type(files).__name__}")
    for entry in files:
        pp = PurePosixPath(str(entry))
        if pp.is_absolute() or ".." in pp.parts:
            raise UnsafePathError(
                f"{source}: files entry {entry!r} escapes the dataset root. Fix: name folders relative to "
                f"the dataset root without '..' (e.g. bounding_box_train)"
            )
    for split in SPLITS:
        if split not in data["splits"]:
            raise ManifestError(f"{source}: splits.{split} is missing")
    views = data.get("views")
    if views is not None and not (isinstance(views, Mapping) and set(views) <= set(SPLITS) and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in views.values())):
        raise ManifestError(f"{source}: views must map splits (train, query, gallery) to the number of distinct "
                            f"view ids (an integer >= 0, or null: not checked), got {views!r}")
    options = data.get("loader_kwargs") or {}
    if not isinstance(options, Mapping):
        raise ManifestError(f"{source}: loader_kwargs must map the loader's options to values, got {options!r}")
    check_loader_options(str(data["loader"]), options, f"{source}: loader_kwargs", takes="loader_kwargs holds only",
                         error=ManifestError)


def dump_manifest(manifest: Mapping, path: Union[str, Path]) -> None:
    """Write a manifest as YAML (keys in schema order, as the committed files have them)."""
    Path(path).write_text(yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=None, width=100))


# --------------------------------------------------------------------------------------------
# verification


@dataclass
class VerificationReport:
    """What ``verify_dataset`` found: ``ok`` is False when any problem was recorded."""

    manifest: str
    root: Path
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    view_coverage: dict = field(default_factory=dict)
    """Per split: ``(images with a view id, images)`` as the loader returned them."""
    images_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """A human-readable report: checks passed, a count table, then each problem."""
        lines = [f"verify {self.manifest} at {self.root}"]
        lines += [f"  ok    {c}" for c in self.checks]
        if self.counts:
            lines.append(f"  {'split':<8} {'ids':>14} {'images':>16} {'cams':>10}   (found / expected)")
            for split, c in self.counts.items():
                lines.append(
                    f"  {split:<8} {c['ids'][0]:>6} / {_s(c['ids'][1]):<6} {c['images'][0]:>7} / {_s(c['images'][1]):<7}"
                    f" {c['cameras'][0]:>4} / {_s(c['cameras'][1]):<4}"
                )
        if self.view_coverage:
            lines.append(f"  views   {view_coverage_text(self.view_coverage)}")
        lines += [f"  FAIL  {p}" for p in self.problems]
        lines.append("result: OK" if self.ok else f"result: {len(self.problems)} problem(s) found")
        return "\n".join(lines)


def view_coverage_text(coverage: Mapping[str, tuple[int, int]]) -> str:
    """``train 100% (120/120), query ...``: the share of each split's images that have a view id."""
    return ", ".join(f"{split} {100 * n / max(1, total):.0f}% ({n}/{total})" for split, (n, total) in coverage.items())


def _s(x: Any) -> str:
    return "?" if x is None else str(x)


def verify_dataset(
    manifest: Union[str, Path, Mapping],
    root: Union[str, Path],
    *,
    check_images: Union[str, int] = "all",
    progress: bool = True,
    seed: int = 0,
) -> VerificationReport:
    """Check a dataset copy against its manifest.

    Checks, in order: the dataset folder and every layout entry exist; the loader accepts the copy;
    per split the numbers of identities, images and cameras equal the manifest's (a null count in
    the manifest is not checked), and so do the distinct view ids where the manifest has ``views``
    (the view coverage is reported either way); raw file counts per folder where the manifest lists them; every
    image decodes.

    Args:
        manifest: a manifest name, a path to a manifest YAML file, or a manifest dict.
        root: the dataset folder or its parent.
        check_images: ``"all"``, ``"none"`` or a number of images to decode, drawn at random
            (with ``seed``) from every image file of the layout folders.
        progress: show a progress bar while decoding images.

    Raises:
        InvalidInputError: ``check_images`` is none of those (:func:`images_to_check`).
    """
    check_images = images_to_check(check_images)
    m = load_manifest(manifest)
    source = str(manifest) if isinstance(manifest, (str, Path)) else f"manifest {m['name']!r}"
    root = Path(root).expanduser()
    report = VerificationReport(m["name"], root)
    refuse_link_loop(root, f"the root given for {m['name']}", DatasetRootError)  # else it reads as "not found"

    base = _find_base(m, root)
    if base is None:
        report.problems.append(
            f"dataset folder not found: neither {root} nor {root / m['folder']} holds any of "
            f"{', '.join(m['layout'])}; pass the dataset folder (or its parent) as ROOT. Expected layout:\n"
            f"{expected_layout(m['loader'])}"
        )
        return report
    report.root = base
    guard = RootGuard(base)
    # A layout folder that is a link out of the copy would be counted and decoded as if it were data.
    for kind, entries in (("layout", m["layout"]), ("files", m.get("files") or {})):
        for e in entries:
            guard.check(base / str(e), f"{source}: {kind} entry {str(e)!r} ({base / str(e)})")
    missing = [e for e in m["layout"] if not (base / e).exists()]
    for e in missing:
        report.problems.append(f"missing folder or file: {base / e} (expected by the {m['title']} layout)")
    if not missing:
        report.checks.append(f"layout: {', '.join(m['layout'])}")

    if not missing:
        try:
            ds = build_dataset(m["loader"], base, **(m.get("loader_kwargs") or {}))
        except DatasetRootError as e:
            report.problems.append(f"the {m['loader']} loader rejects the copy: {e}")
        else:
            _check_counts(m, ds.stats(), ds.has_cameras, report)
            _check_views(m, ds.view_stats(), ds.stats(), report)

    for folder, expected in (m.get("files") or {}).items():
        if expected is None or not (base / folder).is_dir():
            continue
        n = len(_image_files(base / folder, guard))
        if n != expected:
            report.problems.append(f"{folder}/: {n} image files, manifest says {expected} ({_diff(n, expected)})")
        else:
            report.checks.append(f"{folder}/: {n} image files")

    if check_images != "none":
        _check_images(m, base, check_images, progress, seed, report, guard)
    return report


def images_to_check(how: Union[str, int], name: str = "check_images") -> Union[str, int]:
    """``how`` as :func:`verify_dataset` takes it: ``"all"``, ``"none"``, or a positive number of
    images (an int, or its digits as text: ``"200"``).

    Raises:
        InvalidInputError: anything else (``-5``, ``0``, which would report OK having decoded nothing,
            ``"some"``), naming ``name`` (``--images`` on the command line) and the valid values.
    """
    if how in ("all", "none"):
        return how
    text = str(how).strip()
    if not isinstance(how, bool) and text.isascii() and text.isdigit() and len(text) < 19 and int(text) > 0:
        return int(text)
    raise InvalidInputError(f"{name} must be 'all', 'none' or a positive number of images to decode (drawn at "
                            f"random, e.g. 200), got {how!r}")


def _image_files(folder: Path, guard: RootGuard) -> list[Path]:
    """Image files under ``folder`` (recursively); a linked one resolving outside the root is refused."""
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    for p in files:
        if p.is_symlink():
            guard.check(p, f"{p} (a symbolic link in {folder})")
    return files


def _find_base(m: Mapping, root: Path) -> Optional[Path]:
    """The dataset folder: ``root`` or ``root/<folder>``, whichever holds more layout entries.

    When neither holds any, the loader gets a chance (it knows alternative folder names, e.g.
    ``cuhk03np/detected`` besides ``cuhk03-np/detected``).
    """
    scored = [(sum((c / e).exists() for e in m["layout"]), i, c) for i, c in enumerate((root, root / m["folder"]))]
    best = max(scored, key=lambda t: (t[0], -t[1]))
    if best[0] > 0:
        return best[2]
    try:
        return build_dataset(m["loader"], root, **(m.get("loader_kwargs") or {})).root
    except DatasetRootError:
        return None


def _diff(found: int, expected: int) -> str:
    return f"{expected - found} missing" if found < expected else f"{found - expected} unexpected"


def _check_counts(m: Mapping, stats: Mapping, has_cameras: bool, report: VerificationReport) -> None:
    bad = False
    for split in SPLITS:
        exp = m["splits"][split] or {}
        got = stats[split]
        report.counts[split] = {k: (got[k], exp.get(k)) for k in ("ids", "images", "cameras")}
        for key in ("images", "ids", "cameras"):
            want = exp.get(key)
            if key == "cameras" and not has_cameras:
                continue
            if want is not None and got[key] != want:
                bad = True
                report.problems.append(f"{split}: {got[key]} {key}, manifest says {want} ({_diff(got[key], want)})")
    if not bad:
        report.checks.append("split counts (ids, images, cameras) match the manifest")


def _check_views(m: Mapping, view_stats: Mapping, stats: Mapping, report: VerificationReport) -> None:
    report.view_coverage = {split: (view_stats[split]["with_view"], stats[split]["images"]) for split in SPLITS}
    expected = m.get("views") or {}
    bad = False
    for split in SPLITS:
        want, got = expected.get(split), view_stats[split]["views"]
        if want is not None and got != want:
            bad = True
            why = (" (no image has a view id: the view files, e.g. keypoint_train.txt / keypoint_test.txt, are missing "
                   "or list other images)" if view_stats[split]["with_view"] == 0 else "")
            report.problems.append(f"{split}: {got} view ids, manifest says {want}{why}")
    if expected and not bad:
        report.checks.append("view ids per split match the manifest")


def _check_images(m: Mapping, base: Path, how: Union[str, int], progress: bool, seed: int,
                  report: VerificationReport, guard: RootGuard) -> None:
    files = sorted(p for e in m["layout"] if (base / e).is_dir() for p in _image_files(base / e, guard))
    if how != "all":  # a positive number (images_to_check)
        files = random.Random(seed).sample(files, min(how, len(files)))
    bad = []
    for p in tqdm(files, desc=f"decode {m['name']}", unit="img", disable=not progress, mininterval=0.5):
        try:
            with open_image(p) as img:  # a decompression bomb is refused from its header, never decoded
                img.load()  # a full decode: truncated JPEGs only fail here, not in open()
        except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
            bad.append(f"unreadable image: {p} ({type(e).__name__}: {e})")
    report.images_checked = len(files)
    if bad:
        report.problems += bad[:20]
        if len(bad) > 20:
            report.problems.append(f"... and {len(bad) - 20} more unreadable images")
    else:
        report.checks.append(f"{len(files)} images decode")
