"""Registry of re-identification datasets in their real on-disk formats.

Every loader turns a dataset copy into three lists of ``Sample(path, pid, camid)``:

- ``train``: pids relabelled to ``0..N-1`` (classification targets), camids 0-based;
- ``query`` and ``gallery``: original pids kept (distractors such as Market's ``0000`` stay in the
  gallery as negatives), camids 0-based;
- junk images (pid ``-1``) are dropped at load time.

Datasets without camera information (VehicleID) say so with ``has_cameras=False`` and camid
``None`` on every sample; the evaluator never relies on a fake camera id to switch junk filtering off.

Every image path a loader returns lies inside the dataset root once symbolic links are followed
(:class:`RootGuard`): a list file or CSV naming ``../../x.jpg``, an absolute path elsewhere, or a link
that leaves the root raises ``UnsafePathError``, and an empty train, query or gallery split raises
``DatasetRootError`` at load time rather than an epoch into training. A symbolic link loop (``a -> b``,
``b -> a``) among the entries a loader reads is refused by name, and a root that is one too; scans are
flat (or, in ``corelib verify``, do not descend into linked folders), so a link back to a parent
folder is never followed round.

Example::

    ds = build_dataset("market1501", "~/datasets")   # the folder or its parent
    print(ds.summary())
    path, pid, camid = ds.train[0]
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

from PIL import Image, UnidentifiedImageError

from ..errors import (ConfigError, CorruptImageError, DatasetRootError, InvalidInputError, UnknownNameError,
                      UnsafePathError)
from ..registry import did_you_mean

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class Sample(NamedTuple):
    """One image of a dataset: the torchreid ``(path, pid, camid)`` contract."""

    path: str
    pid: int
    camid: Optional[int]


@dataclass
class ReIDDataset:
    """Train / query / gallery lists of one dataset copy, plus what is known about it."""

    name: str
    root: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    has_cameras: bool = True
    protocol: str = "market"
    """Evaluation protocol name (``market``, ``vehicleid``, ``veriwild``), see corelib.evaluation."""
    extras: dict = field(default_factory=dict)
    """Loader-specific extras, e.g. VehicleID's full test list for re-drawing the gallery."""

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({s.camid for s in self.train}) if self.has_cameras else 0

    def split(self, name: str) -> list[Sample]:
        """The list of one split by name (``train``, ``query`` or ``gallery``)."""
        if name not in ("train", "query", "gallery"):
            raise InvalidInputError(f"unknown split {name!r}: use 'train', 'query' or 'gallery'")
        return getattr(self, name)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per split: number of images, identities and cameras."""
        out = {}
        for split in ("train", "query", "gallery"):
            items = self.split(split)
            out[split] = {
                "images": len(items),
                "ids": len({s.pid for s in items}),
                "cameras": len({s.camid for s in items}) if self.has_cameras else 0,
            }
        return out

    def summary(self) -> str:
        """A small table of the split counts, as torchreid prints it."""
        lines = [f"{self.name} ({self.root})", f"  {'split':<8} {'ids':>7} {'images':>8} {'cams':>5}"]
        for split, st in self.stats().items():
            cams = st["cameras"] if self.has_cameras else "-"
            lines.append(f"  {split:<8} {st['ids']:>7} {st['images']:>8} {cams:>5}")
        if not self.has_cameras:
            lines.append("  (no camera information: evaluation uses no same-camera filtering)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# registry

_LOADERS: dict[str, Callable[..., ReIDDataset]] = {}
_LAYOUTS: dict[str, str] = {}


def register_dataset(name: str, layout: str) -> Callable:
    """Register a loader ``fn(root, **kw) -> ReIDDataset`` under ``name``.

    ``layout`` is the expected folder tree, printed when a root does not match.
    """

    def deco(fn: Callable[..., ReIDDataset]) -> Callable[..., ReIDDataset]:
        _LOADERS[name] = fn
        _LAYOUTS[name] = layout.strip("\n")
        return fn

    return deco


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return sorted(_LOADERS)


def loader_options(name: str) -> dict:
    """The options loader ``name`` takes (its keyword parameters besides ``root``) with their
    defaults; ``{}`` for an unknown name."""
    import inspect

    fn = _LOADERS.get(name)
    if fn is None:
        return {}
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD}


def check_loader_options(name: str, options: Iterable[str], where: str = "", *,
                         takes: str = "it takes the dataset root and", error: type = ConfigError) -> None:
    """Refuse an option loader ``name`` does not take: a misspelt one would otherwise be dropped without
    a word and the default loaded (a loader with ``**kwargs`` takes any). Every way in checks with this
    function (:func:`build_dataset`, a manifest's ``loader_kwargs``, a pair's side, the command line), so
    each gets the same line: the option, the loader's options, the closest one.

    Args:
        where: what gave the options, put first in the message (``"DATASETS['m2c']['target']"``).
        takes: what else the caller takes, before "the loader's options (...)".
        error: the CorelibError to raise (a ``ManifestError`` for a manifest).
    """
    import inspect

    fn = _LOADERS.get(name)
    if fn is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
        return
    known = loader_options(name)
    unknown = [k for k in options if k not in known]
    if unknown:
        raise error(f"{where + ': ' if where else ''}the {name} loader has no option {unknown[0]!r}; {takes} the "
                    f"loader's options ({', '.join(known) or 'none for ' + name}){did_you_mean(unknown[0], known)}")


def expected_layout(name: str) -> str:
    """The folder tree a loader expects, as printed in its errors."""
    _check_name(name)
    return _LAYOUTS[name]


def _check_name(name: str) -> None:
    if name not in _LOADERS:
        raise UnknownNameError(
            f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}"
        )


def build_dataset(name: str, root: str | Path, **kwargs) -> ReIDDataset:
    """Load dataset ``name`` from ``root`` (the dataset folder itself or its parent).

    Args:
        name: one of :func:`list_datasets`.
        root: where the copy lies; ``~`` is expanded.
        **kwargs: loader options (e.g. ``subset="labeled"`` for CUHK03-NP, ``test_size=1600`` for
            VehicleID).

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: an option the loader does not take (:func:`check_loader_options`).
        DatasetRootError: ``root`` does not hold the expected layout (the message prints it).
    """
    _check_name(name)
    check_loader_options(name, kwargs)
    ds = _LOADERS[name](Path(root).expanduser(), **kwargs)
    # The built-in loaders name the empty folder or list themselves; this catches registered ones.
    for split in ("train", "query", "gallery"):
        require_split(split, ds.split(split), ds.root, "images")
    return ds


# --------------------------------------------------------------------------------------------
# helpers shared by the loaders


def resolve_root(name: str, root: Path, folder_names: Sequence[str], required: Sequence[str]) -> Path:
    """Find the dataset folder: ``root`` itself, or ``root/<one of folder_names>``.

    ``required`` are relative paths that must exist inside it. Raises a ``DatasetRootError`` that
    prints the expected layout and what is missing.
    """
    candidates = [root] + [root / f for f in folder_names]
    for cand in candidates:
        if cand.is_dir() and all((cand / r).exists() for r in required):
            return cand
    # Not found: a root or a required entry that is a link loop reads as missing; name the link instead.
    refuse_link_loop(root, f"the {name} dataset root", DatasetRootError)
    for cand in candidates:
        for r in required:
            refuse_link_loop(cand / r, f"the {name} layout entry {r!r}")
    # Not found: say what is missing in the most plausible candidate.
    best = next((c for c in candidates[1:] if c.is_dir()), root)
    missing = [r for r in required if not (best / r).exists()] if best.is_dir() else list(required)
    where = f"{best} does not exist" if not best.exists() else f"missing in {best}: {', '.join(missing)}"
    raise DatasetRootError(
        f"{name}: no dataset found at {root} ({where}).\n"
        f"Expected layout (pass the dataset folder or its parent as root):\n"
        f"{_LAYOUTS.get(name, '')}\n"
        f"Fix: point root at the folder that holds these entries, then run "
        f"`corelib verify {name} ROOT` to check the copy."
    )


_TRUSTED_ROOTS: ContextVar[tuple[str, ...]] = ContextVar("corelib_trusted_roots", default=())

UNSAFE_PATH_FIX = (
    "keep every image path inside the dataset root (no '..', absolute path or symbolic link that leads "
    "out of it); a dataset that lives elsewhere is opened from its own root"
)


def link_loop(path: Union[str, Path]) -> Optional[Path]:
    """The symbolic link on the way to ``path`` that leads back to itself (``a -> b``, ``b -> a``, or a
    chain too long to follow), or None. One ``stat`` when there is no loop."""
    try:
        os.stat(path)
        return None
    except OSError as e:
        if e.errno != errno.ELOOP:
            return None
    path = Path(path)
    for step in (*reversed(path.parents), path):
        try:
            os.stat(step)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return step
    return path


def refuse_link_loop(path: Union[str, Path], where: str, error: type = UnsafePathError) -> None:
    """Raise ``error`` (a CorelibError) naming the symbolic link loop on the way to ``path``, if any;
    ``where`` says what the path is (``"the market1501 dataset root"``, a file and line ...)."""
    link = link_loop(path)
    if link is not None:
        raise error(f"{link} is a symbolic link loop ({where}): it leads back to itself, so it names no image or "
                    f"folder. Fix: remove the link (rm '{link}'), or point it at the real file or folder")


@contextmanager
def trusted_roots(*roots: Union[str, Path]) -> Iterator[None]:
    """Within the block, loaders also accept image paths that resolve inside ``roots``.

    Meant for :func:`corelib.style.load_style_set` only: an enlarged style set links to (or lists)
    the real images of the source it was written from, and its stamp records that source's root.
    Everywhere else a dataset's images must lie inside its own root.
    """
    token = _TRUSTED_ROOTS.set(_TRUSTED_ROOTS.get() + tuple(os.path.realpath(r) for r in roots))
    try:
        yield
    finally:
        _TRUSTED_ROOTS.reset(token)


class RootGuard:
    """Refuses image paths of one dataset copy that resolve outside its root.

    Paths are resolved as :meth:`pathlib.Path.resolve` does (symbolic links followed, ``..``
    applied after them), but each folder is resolved once and each file costs one ``lstat``, so a
    list of 100k images stays cheap to check.

    Args:
        root: the dataset root (the folder the loader found).
    """

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        self.allowed = (os.path.realpath(root),) + _TRUSTED_ROOTS.get()
        self._folders: dict[str, str] = {}

    def real(self, path: Union[str, Path], where: str = "") -> str:
        """``path`` with every symbolic link followed (the file need not exist).

        Raises:
            UnsafePathError: ``path`` or its folder is a symbolic link loop (``where`` says whence).
        """
        text = os.fspath(path)
        head, name = os.path.split(text)
        if name in ("", ".", "..") or os.path.islink(text):
            refuse_link_loop(text, where or text)
            return os.path.realpath(text)
        folder = self._folders.get(head)
        if folder is None:
            refuse_link_loop(head or ".", where or text)
            folder = self._folders[head] = os.path.realpath(head or ".")
        return os.path.join(folder, name)

    def inside(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.allowed)

    def check(self, path: Union[str, Path], where: str) -> None:
        """Raise ``UnsafePathError`` when ``path`` resolves outside the root; ``where`` says which
        file and line (or folder) it came from, e.g. ``"dataset.csv, line 4: path '../x.jpg'"``; a
        symbolic link loop on the way is refused too."""
        real = self.real(path, where)
        if not self.inside(real):
            raise UnsafePathError(
                f"{where} resolves to {real}, outside the dataset root {self.root}. Fix: {UNSAFE_PATH_FIX}"
            )


def list_images(folder: Path, guard: Optional[RootGuard] = None) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (deterministic order).

    With ``guard``, the folder and every image that is a symbolic link must resolve inside the
    guard's root (``UnsafePathError`` otherwise); a plain file in a folder inside the root is inside.
    An image name that is a symbolic link loop raises ``UnsafePathError`` naming it.
    """
    if guard is not None:
        guard.check(folder, f"folder {folder}")
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if entry.is_symlink():  # is_file() follows the link: a loop would raise a bare ELOOP
                refuse_link_loop(folder / entry.name, f"an image name in {folder}")
            if entry.is_file():
                path = folder / entry.name
                if guard is not None and entry.is_symlink():
                    guard.check(path, f"{path} (a symbolic link in {folder})")
                found.append(path)
    return sorted(found)


def require_split(split: str, samples: Sequence[Sample], source: Union[str, Path], expected: str) -> None:
    """Raise ``DatasetRootError`` when a split came out empty, naming where it was read from.

    An empty query or gallery would otherwise load as 0 images and fail only at the first
    evaluation, an epoch into training.
    """
    if not samples:
        raise DatasetRootError(
            f"the {split} split is empty: {source} holds no {expected}. Fix: add the missing {split} images "
            f"(or rows), or point root at a complete copy; every dataset needs train, query and gallery images"
        )


def relabel(samples: Iterable[Sample]) -> list[Sample]:
    """Map pids to ``0..N-1`` in sorted order of the original pids (train split)."""
    samples = list(samples)
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid) for s in samples]


def parse_folder(
    folder: Path,
    pattern: re.Pattern,
    *,
    camera_base: int = 1,
    drop_junk: bool = True,
    guard: Optional[RootGuard] = None,
) -> list[Sample]:
    """Parse every image in ``folder`` with a ``(pid)(camera)`` regex, Market-1501 style.

    Files whose name does not match are an error (a foreign file in a dataset folder usually means
    a wrong root); pid ``-1`` is junk and dropped; cameras are shifted from ``camera_base`` to 0.
    ``guard`` refuses a folder or linked image outside the dataset root (see :func:`list_images`).
    """
    out = []
    for path in list_images(folder, guard):
        m = pattern.search(path.name)
        if m is None:
            raise DatasetRootError(
                f"cannot parse pid/camera from {path} (expected a name like {pattern.pattern}); "
                f"remove foreign files from {folder} or check the dataset root"
            )
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1 and drop_junk:
            continue
        out.append(Sample(str(path), pid, cam - camera_base))
    return out


_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")
"""The pixel count in the message of PIL's ``DecompressionBombError``."""


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open`` (which reads the header, no pixels) refusing a decompression bomb before a pixel
    is decoded: an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL's limit, 89.5 million
    by default, a 9459 x 9459 square; a re-id crop has about 0.01 million) raises CorruptImageError
    naming the file, its size, the limit and the fix. PIL itself only warns up to twice its limit and
    then decodes the image at full size, and beyond that raises an error that does not name the file.
    :func:`read_image` and ``corelib verify`` open every image through this one check."""
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by name
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as e:
            found = _PIL_PIXELS.search(str(e))
            raise CorruptImageError(_too_many_pixels(path, f"{int(found[1]):,}" if found else f"over {2 * limit:,}",
                                                     limit)) from None
    with img:
        if limit is not None and img.width * img.height > limit:
            raise CorruptImageError(_too_many_pixels(path, f"{img.width} x {img.height} = {img.width * img.height:,}",
                                                     limit))
        yield img


def _too_many_pixels(path: str | Path, pixels: str, limit: int) -> str:
    return (f"image {path} has {pixels} pixels, more than the {limit:,} allowed (PIL.Image.MAX_IMAGE_PIXELS): "
            f"decoding it could exhaust memory (a decompression bomb), so it is not read. Fix: resize it (a re-id "
            f"crop is a few hundred pixels a side) or delete it; if it is genuine, raise PIL.Image.MAX_IMAGE_PIXELS")


def read_image(path: str | Path) -> Image.Image:
    """Open an image as RGB; a file that cannot be decoded, or one too large to decode safely
    (:func:`open_image`), raises an error that names it."""
    try:
        with open_image(path) as img:
            return img.convert("RGB")
    except CorruptImageError:
        raise
    except IsADirectoryError as e:
        raise DatasetRootError(f"expected an image file, got a folder: {path}") from e
    except FileNotFoundError as e:
        raise DatasetRootError(
            f"image not found: {path}; the dataset copy changed after loading, reload it"
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(
            f"cannot read image {path}: {e}. Re-extract the dataset or delete this file, "
            f"then run `corelib verify` on the dataset root."
        ) from e


# --------------------------------------------------------------------------------------------
# Market-1501 family (also the layout of the embedded person data)

MARKET_PATTERN = re.compile(r"([-\d]+)_c(\d+)")
MARKET_EXPECTED = "image of a kept identity (files named PID_cCAM..., e.g. 0002_c1s1_000451_03.jpg; pid -1 is junk)"


def load_market_style(name: str, root: Path, folder_names: Sequence[str], **_: object) -> ReIDDataset:
    """Market-1501 layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``."""
    splits = ("bounding_box_train", "query", "bounding_box_test")
    base = resolve_root(name, root, folder_names, splits)
    guard = RootGuard(base)
    train, query, gallery = (parse_folder(base / s, MARKET_PATTERN, guard=guard) for s in splits)
    for split, folder, samples in zip(("train", "query", "gallery"), splits, (train, query, gallery)):
        require_split(split, samples, base / folder, MARKET_EXPECTED)
    return ReIDDataset(name, base, relabel(train), query, gallery, has_cameras=True, protocol="market")


MARKET_LAYOUT = """
Market-1501-v15.09.15/
  bounding_box_train/   0002_c1s1_000451_03.jpg ...   (pid_cCAMsSEQ_FRAME_BOX.jpg)
  query/                0001_c1s1_001051_00.jpg ...
  bounding_box_test/    0000_c1s1_000151_01.jpg ...   (0000 distractors kept, -1 junk dropped)
"""


@register_dataset("market1501", MARKET_LAYOUT)
def market1501(root: Path) -> ReIDDataset:
    """Market-1501: 6 cameras, 751 train IDs / 12,936 images; 3,368 queries; 15,913 gallery."""
    return load_market_style("market1501", root, ("Market-1501-v15.09.15", "Market-1501", "market1501"))


# Importing the module registers the remaining real loaders and the embedded presets.
from . import loaders  # noqa: E402,F401
