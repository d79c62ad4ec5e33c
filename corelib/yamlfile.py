"""The one reader of the YAML the workbench takes in: manifests, ``--params`` and sweep files,
``--config`` files, saved ``config.yaml`` files, and YAML values on the command line.

PyYAML's safe loader runs no code, but it builds whatever the text describes. A 1 KB file of nested
aliases ("billion laughs": ``a: &a [x, x, ...]``, ``b: &b [*a, *a, ...]``, ten levels deep) describes
10^10 values and exhausts memory or runs for minutes once anything walks the result; a file nested
100,000 brackets deep crashes the C composer; a multi-gigabyte file is read whole before parsing
starts. So every read here:

- refuses a file larger than :data:`MAX_YAML_BYTES` before reading it (and reads no byte beyond);
- walks the parser's events first (the libyaml parser is a loop, not a recursion, and keeps no
  values), counting the values the document holds with every alias expanded (an anchor's size is
  remembered, so the count is linear in the text), and refuses more than :data:`MAX_YAML_VALUES`
  values, nesting deeper than :data:`MAX_YAML_DEPTH` levels, or an alias inside its own anchor;
- only then builds the Python values, with the safe loader (the C one when PyYAML has it);
- turns invalid YAML into one line naming the file (or the command-line value), the line and
  column, and what is wrong.

Each refusal is the caller's error class (``error=``: :class:`~corelib.errors.ConfigError` by
default, :class:`~corelib.errors.ManifestError` for manifests); a missing file is a
:class:`~corelib.errors.MissingFileError`. An empty document is ``None``, as ``yaml.safe_load`` gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError, CorelibError, MissingFileError

try:  # the C loader is many times faster; the pure-Python one gives the same values
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

MAX_YAML_BYTES = 2**20
"""Largest YAML file read (1 MiB): the committed manifests, sweeps and task files are under 3 KB and
a saved ``config.yaml`` about 2 KB, so this leaves several hundred times their size."""

MAX_YAML_VALUES = 100_000
"""Most values (scalars, lists and mappings, every alias expanded) one YAML document may hold: the
workbench's files hold a few hundred."""

MAX_YAML_DEPTH = 100
"""Deepest nesting of lists and mappings in one YAML document: the workbench's files nest four deep."""


def read_yaml(path: Union[str, Path], *, what: str, error: type[CorelibError] = ConfigError) -> Any:
    """The value of the YAML file ``path`` (see the module docstring for what is refused).

    Args:
        path: the file.
        what: what the file is, for messages (``"sweep file"``, ``"--params file"``, ``"manifest"``).
        error: the error class of a refusal (default :class:`~corelib.errors.ConfigError`).

    Raises:
        MissingFileError: no such file.
        ConfigError (or ``error``): not a regular file, larger than :data:`MAX_YAML_BYTES`, invalid
            YAML, or more values / deeper nesting than the bounds allow.
    """
    path = Path(path).expanduser()
    source = f"{what} {path}"
    if not path.exists():
        relative = "" if path.is_absolute() else f" (a relative path is read from {Path.cwd()})"
        raise MissingFileError(f"{source} does not exist; check the path{relative}")
    if not path.is_file():
        raise error(f"{source} is not a regular file; give the path of a YAML file")
    try:
        with path.open("rb") as f:
            # one byte beyond the bound, never the whole of a huge file (its size may change after a stat)
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:  # no permission to read it, a disk error
        raise error(f"{source} cannot be read ({e.strerror or e}); check its permissions") from None
    if len(data) > MAX_YAML_BYTES:
        raise error(f"{source} is larger than {MAX_YAML_BYTES:,} bytes (corelib.yamlfile.MAX_YAML_BYTES), far more "
                    f"than a workbench YAML file holds; check that it is the right file")
    return _load(data, source, error)


def parse_yaml(text: str, *, source: str, error: type[CorelibError] = ConfigError) -> Any:
    """The value of YAML ``text`` (a command-line value such as ``-p PAIRS '[person]'``), refused as
    :func:`read_yaml` refuses a file; ``source`` names the text in messages (``"-p PAIRS"``)."""
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{source}: {len(text):,} characters of YAML, more than {MAX_YAML_BYTES:,} "
                    f"(corelib.yamlfile.MAX_YAML_BYTES); give a shorter value")
    return _load(text, source, error)


def _load(stream: Union[str, bytes], source: str, error: type[CorelibError]) -> Any:
    try:
        _check_size(stream, source, error)
        return yaml.load(stream, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except CorelibError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(e.problem or e.context or "unreadable").split())
        context = f" ({' '.join(e.context.split())})" if e.context and e.problem else ""
        raise error(f"{source}{where}: not valid YAML: {problem}{context}; correct the YAML there") from None
    except yaml.YAMLError as e:  # a byte that is not UTF-8, a control character: no line and column
        raise error(f"{source}: not valid YAML: {' '.join(str(e).split())}; a YAML file is UTF-8 text without "
                    f"control characters") from None
    except (ValueError, OverflowError) as e:  # a value the safe constructors reject, e.g. the date 2024-13-45
        raise error(f"{source}: a value cannot be read ({' '.join(str(e).split())}); correct it") from None


def _check_size(stream: Union[str, bytes], source: str, error: type[CorelibError]) -> None:
    """Refuse a document of more than :data:`MAX_YAML_VALUES` values (aliases expanded), nested
    deeper than :data:`MAX_YAML_DEPTH`, or with an alias inside its own anchor, from the parser's
    events alone: nothing is built, and an alias adds the remembered size of its anchor."""
    sizes: dict[str, int] = {}  # anchor -> values in it, aliases expanded
    open_items: list[list] = []  # [values so far, anchor] of each list / mapping being read
    distinct = 0  # values written out in the text (an alias counts once)
    for event in yaml.parse(stream, Loader=_SafeLoader):
        if isinstance(event, yaml.DocumentStartEvent):
            sizes.clear()
            continue
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(open_items) >= MAX_YAML_DEPTH:
                raise error(f"{source} nests lists or mappings more than {MAX_YAML_DEPTH} levels deep "
                            f"(corelib.yamlfile.MAX_YAML_DEPTH); a workbench YAML file nests a few levels")
            distinct += 1
            open_items.append([1, event.anchor])
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = open_items.pop()
        elif isinstance(event, yaml.ScalarEvent):
            size, anchor = 1, event.anchor
            distinct += 1
        elif isinstance(event, yaml.AliasEvent):
            if any(item[1] == event.anchor for item in open_items):
                raise error(f"{source} uses a YAML alias *{event.anchor} inside its own anchor &{event.anchor} "
                            f"(a value that contains itself); write the value out")
            size, anchor = sizes.get(event.anchor, 1), None  # an unknown alias: the loader names it below
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        if open_items:
            open_items[-1][0] += size
            size = open_items[-1][0]
        if size > MAX_YAML_VALUES:
            if distinct > MAX_YAML_VALUES:
                raise error(f"{source} holds more than {MAX_YAML_VALUES:,} values (corelib.yamlfile.MAX_YAML_VALUES), "
                            f"far more than a workbench YAML file holds; check that it is the right file")
            raise error(f"{source} uses YAML aliases ('&'/'*') that expand to more than {MAX_YAML_VALUES:,} values "
                        f"(corelib.yamlfile.MAX_YAML_VALUES); write the values out without aliases")
