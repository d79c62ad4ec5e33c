"""Reading a dataset copy's folders and list files safely: the helpers every loader uses.

- :func:`resolve_root` finds the dataset folder (the root itself or a known folder inside it) and
  prints the expected layout when it is not there;
- every image path a loader returns lies inside the dataset root once symbolic links are followed
  (:class:`RootGuard`): a list file or CSV naming ``../../x.jpg``, an absolute path elsewhere, or a
  link that leaves the root raises ``UnsafePathError``;
- a symbolic link loop (``a -> b``, ``b -> a``) among the entries a loader reads is refused by name,
  and a root that is one too; scans are flat (or, in ``corelib verify``, do not descend into linked
  folders), so a link back to a parent folder is never followed round;
- :func:`parse_folder` reads a folder of Market-style file names, :func:`list_lines` a list file,
  and :func:`bad_line` names the file and line that does not parse;
- :func:`read_view_file` reads an orientation annotation file in VeRi-776's keypoint format,
  :func:`write_view_file` writes one, and :func:`attach_views` gives each split's samples their view
  ids from such files.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

from ..errors import DatasetRootError, InvalidInputError, UnsafePathError
from .dataset import DATASETS, Sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


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
        f"{DATASETS.get(name).layout if name in DATASETS else ''}\n"
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


def relabel(samples: Iterable[Sample]) -> list[Sample]:
    """Map pids to ``0..N-1`` in sorted order of the original pids (train split)."""
    samples = list(samples)
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [s._replace(pid=mapping[s.pid]) for s in samples]  # camid and viewid kept


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


# --------------------------------------------------------------------------------------------
# list files


def list_lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """Yield ``(line number, stripped line, whitespace fields)`` for non-empty lines of a list."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if line:
                yield lineno, line, line.split()


def bad_line(path: Path, lineno: int, line: str, expected: str) -> DatasetRootError:
    """The error for a line of a list file that does not parse, naming the file and the line."""
    return DatasetRootError(
        f"{path}, line {lineno}: cannot parse {line!r} (expected {expected}); the list file is "
        f"truncated or from another release, re-extract the dataset"
    )


def parse_int(text: str, path: Path, lineno: int, line: str, expected: str) -> int:
    """``int(text)``, or :func:`bad_line`'s error for the line it came from."""
    try:
        return int(text)
    except ValueError:
        raise bad_line(path, lineno, line, expected) from None


def zero_based_camid(camera: int, base: int, where: str) -> int:
    """Shift a camera number from ``base`` to 0; a number below ``base`` is a format error."""
    if camera < base:
        raise DatasetRootError(
            f"{where}: camera {camera} is below {base}, but cameras are numbered from {base} in "
            f"this format; check that the file belongs to this dataset"
        )
    return camera - base


def sorted_samples(samples: list[Sample]) -> list[Sample]:
    """``samples`` sorted by path (then pid): list files come in release order, and sorting makes every
    copy load identically."""
    return sorted(samples, key=lambda s: (s.path, s.pid))


def check_first_image(samples: Sequence[Sample], source: Path) -> None:
    """Check that the first listed image exists: one stat catches a wrong image folder cheaply."""
    if samples and not Path(samples[0].path).is_file():
        raise DatasetRootError(
            f"{source} lists {samples[0].path}, which does not exist; the images are missing or "
            f"lie in another folder than the list expects"
        )


# --------------------------------------------------------------------------------------------
# orientation (view) annotations

VIEW_FILES = ("keypoint_train.txt", "keypoint_test.txt")
"""VeRi-776's orientation annotation files: the first for the train split, the second for query and
gallery (VeRi's query images are gallery-folder images, so one test file covers both)."""

KEYPOINT_COORDINATES = 40
"""Coordinates between the image name and the view id on a keypoint line (20 keypoints, x and y)."""

VIEW_LINE = f"'IMAGE_NAME x1 y1 ... x20 y20 VIEW' (the image path or name, {KEYPOINT_COORDINATES} coordinates, a view id >= 0 last)"


def read_view_file(path: Path) -> dict[str, int]:
    """``{image file name: view id}`` from an orientation annotation file in VeRi's keypoint format.

    One line per image, whitespace-separated: the image path or name first, then the keypoint
    coordinates, the view id last (what the official TransReID loader reads: the name's basename and
    ``int(last field)``; the coordinates are not used, so their count is not checked).

    Raises:
        DatasetRootError: a line with fewer than two fields or whose last field is not an integer
            >= 0, naming the file and the line.
    """
    views: dict[str, int] = {}
    for lineno, line, fields in list_lines(path):
        if len(fields) < 2:
            raise bad_line(path, lineno, line, VIEW_LINE)
        view = parse_int(fields[-1], path, lineno, line, VIEW_LINE)
        if view < 0:
            raise bad_line(path, lineno, line, VIEW_LINE)
        views[fields[0].replace("\\", "/").rsplit("/", 1)[-1]] = view
    return views


def write_view_file(path: Path, views: Mapping[str, int]) -> None:
    """Write ``{image file name: view id}`` in VeRi's keypoint format, one line per image in name order:
    the name, :data:`KEYPOINT_COORDINATES` coordinates, all ``0`` (no keypoints are known), the view id
    last; :func:`read_view_file` reads it back."""
    zeros = " ".join(["0"] * KEYPOINT_COORDINATES)
    Path(path).write_text("".join(f"{name} {zeros} {int(views[name])}\n" for name in sorted(views)))


def attach_views(
    base: Path,
    view_files: Optional[Sequence[str]],
    splits: Sequence[list[Sample]],
    *,
    dataset: str,
    say_missing: bool = True,
) -> list[list[Sample]]:
    """``splits`` (train, query, gallery) with each sample's view id from the annotation files in ``base``.

    ``view_files`` is ``(train file, test file)`` relative to ``base`` (the test file serves query and
    gallery), or None to read no views. An image the file does not list keeps ``viewid`` None. A file
    that is absent leaves its splits without views; with ``say_missing`` that is said once, in one
    warning naming the files (a copy may simply not have them: VeRi's keypoint files are a separate
    download).

    Raises:
        InvalidInputError: ``view_files`` is not a pair of file names.
        UnsafePathError: a file name leads out of ``base``.
        DatasetRootError: a malformed line (:func:`read_view_file`).
    """
    if view_files is None:
        return [list(s) for s in splits]
    if isinstance(view_files, (str, bytes)) or len(view_files) != 2 or not all(isinstance(f, str) and f
                                                                                for f in view_files):
        raise InvalidInputError(
            f"{dataset}: view_files must be two file names (train, query and gallery), e.g. {VIEW_FILES}, or None "
            f"to read no views; got {view_files!r}"
        )
    guard = RootGuard(base)
    read: dict[str, Optional[dict[str, int]]] = {}
    out = []
    for name, samples in zip((view_files[0], view_files[1], view_files[1]), splits):
        if name not in read:
            path = base / name
            guard.check(path, f"{dataset}: view file {name!r}")
            read[name] = read_view_file(path) if path.is_file() else None
        views = read[name]
        out.append(list(samples) if views is None else
                   [s._replace(viewid=views.get(Path(s.path).name)) for s in samples])
    missing = [name for name, views in read.items() if views is None]
    if missing and say_missing:
        warnings.warn(
            f"{dataset}: no orientation file {' or '.join(missing)} in {base}, so the splits it covers have no view "
            f"ids (viewid None). Fix: put the keypoint files beside the image folders, or pass view_files=None to "
            f"skip views without this note", stacklevel=3,
        )
    return out
