"""What a re-identification dataset is, the registry of its loaders, and reading one of its images.

Every loader turns a dataset copy into three lists of ``Sample(path, pid, camid, viewid)``:

- ``train``: pids relabelled to ``0..N-1`` (classification targets), camids 0-based;
- ``query`` and ``gallery``: original pids kept (distractors such as Market's ``0000`` stay in the
  gallery as negatives), camids 0-based;
- junk images (pid ``-1``) are dropped at load time;
- every split is in a deterministic, sorted order;
- a wrong root raises ``DatasetRootError`` with the expected layout, and a malformed list file one
  naming the file and the line. Loaders read only what lies on disk; they never download anything.

Datasets without camera information (VehicleID) say so with ``has_cameras=False`` and camid
``None`` on every sample; the evaluator never relies on a fake camera id to switch junk filtering off.

``viewid`` is the image's 0-based orientation (view) id, ``None`` where unknown; it defaults to ``None``,
so a loader (or a registered one of your own) that builds ``Sample(path, pid, camid)`` keeps working.
VeRi-776 reads it from its keypoint files (``keypoint_train.txt`` / ``keypoint_test.txt``, the view id
last on each line, see :mod:`corelib.data.veri`), the Market-layout loaders from the same files when a
copy holds them (the embedded presets do), ``custom`` from an optional ``viewid`` column; every other
loader leaves it ``None``. ``ReIDDataset.has_views`` is True when every sample of every split has one;
``view_stats()`` counts them. The embedded generator numbers views 0 front, 1 back (vehicles: rear),
2 side.

The loaders live one module per dataset family (:mod:`corelib.data.market`, ``msmt17``, ``veri``,
``vehicleid``, ``custom``) and register themselves with :func:`register_dataset` when
:mod:`corelib.data` imports them; they read the copy with the helpers of :mod:`corelib.data.layout`,
which keep every image path inside the dataset root. An empty train, query or gallery split raises
``DatasetRootError`` at load time rather than an epoch into training.

Example::

    ds = build_dataset("market1501", "~/datasets")   # the folder or its parent
    print(ds.summary())
    path, pid, camid, viewid = ds.train[0]   # viewid None where the copy has no views
"""

from __future__ import annotations

import inspect
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, CorruptImageError, DatasetRootError, InvalidInputError
from ..registry import Registry, did_you_mean

SPLIT_NAMES = ("train", "query", "gallery")


class Sample(NamedTuple):
    """One image of a dataset: torchreid's ``(path, pid, camid)`` contract plus TransReID's view id
    (``viewid``: 0-based orientation, ``None`` where unknown; three-field construction still works)."""

    path: str
    pid: int
    camid: Optional[int]
    viewid: Optional[int] = None


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

    @property
    def has_views(self) -> bool:
        """True when every sample of train, query and gallery has a view id."""
        return all(s.viewid is not None for split in SPLIT_NAMES for s in self.split(split))

    def split(self, name: str) -> list[Sample]:
        """The list of one split by name (``train``, ``query`` or ``gallery``)."""
        if name not in SPLIT_NAMES:
            raise InvalidInputError(f"unknown split {name!r}: use 'train', 'query' or 'gallery'")
        return getattr(self, name)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per split: number of images, identities and cameras."""
        out = {}
        for split in SPLIT_NAMES:
            items = self.split(split)
            out[split] = {
                "images": len(items),
                "ids": len({s.pid for s in items}),
                "cameras": len({s.camid for s in items}) if self.has_cameras else 0,
            }
        return out

    def view_stats(self) -> dict[str, dict[str, int]]:
        """Per split: distinct view ids (``views``) and images that have one (``with_view``).

        Kept apart from :meth:`stats`, whose keys chapter 00's split-count table writes out as columns.
        """
        out = {}
        for split in SPLIT_NAMES:
            views = [s.viewid for s in self.split(split) if s.viewid is not None]
            out[split] = {"views": len(set(views)), "with_view": len(views)}
        return out

    def summary(self) -> str:
        """A small table of the split counts, as torchreid prints it (a views column when the
        dataset has views)."""
        views = self.view_stats() if self.has_views else None
        head = f"  {'split':<8} {'ids':>7} {'images':>8} {'cams':>5}" + (f" {'views':>6}" if views else "")
        lines = [f"{self.name} ({self.root})", head]
        for split, st in self.stats().items():
            cams = st["cameras"] if self.has_cameras else "-"
            lines.append(f"  {split:<8} {st['ids']:>7} {st['images']:>8} {cams:>5}"
                         + (f" {views[split]['views']:>6}" if views else ""))
        if not self.has_cameras:
            lines.append("  (no camera information: evaluation uses no same-camera filtering)")
        return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class DatasetLoader:
    """A registered loader and the folder tree it expects."""

    load: Callable[..., ReIDDataset]
    """``load(root, **options) -> ReIDDataset``."""
    layout: str
    """The expected folder tree, printed when a root does not match."""


DATASETS: Registry[DatasetLoader] = Registry("dataset", "Register your own with corelib.data.register_dataset.")


def register_dataset(name: str, layout: str) -> Callable:
    """Register a loader ``fn(root, **kw) -> ReIDDataset`` under ``name``.

    ``layout`` is the expected folder tree, printed when a root does not match.
    """

    def deco(fn: Callable[..., ReIDDataset]) -> Callable[..., ReIDDataset]:
        DATASETS.register(name)(DatasetLoader(fn, layout.strip("\n")))
        return fn

    return deco


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return DATASETS.names()


def loader_options(name: str) -> dict:
    """The options loader ``name`` takes (its keyword parameters besides ``root``) with their
    defaults; ``{}`` for an unknown name."""
    if name not in DATASETS:
        return {}
    return {p.name: p.default for p in inspect.signature(DATASETS.get(name).load).parameters.values()
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
    if name not in DATASETS or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                   for p in inspect.signature(DATASETS.get(name).load).parameters.values()):
        return
    known = loader_options(name)
    unknown = [k for k in options if k not in known]
    if unknown:
        raise error(f"{where + ': ' if where else ''}the {name} loader has no option {unknown[0]!r}; {takes} the "
                    f"loader's options ({', '.join(known) or 'none for ' + name}){did_you_mean(unknown[0], known)}")


def expected_layout(name: str) -> str:
    """The folder tree a loader expects, as printed in its errors.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
    """
    return DATASETS.get(name).layout


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
    loader = DATASETS.get(name)
    check_loader_options(name, kwargs)
    ds = loader.load(Path(root).expanduser(), **kwargs)
    # The built-in loaders name the empty folder or list themselves; this catches registered ones.
    for split in SPLIT_NAMES:
        require_split(split, ds.split(split), ds.root, "images")
    return ds


# --------------------------------------------------------------------------------------------
# images

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
