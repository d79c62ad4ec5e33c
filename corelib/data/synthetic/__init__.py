"""Procedural synthetic re-identification data: the workbench's embedded default dataset.

Real ReID datasets cannot be shipped or downloaded here, so the workbench draws its own people and
vehicles and writes them to disk in the *real* formats: persons in the Market-1501 layout and file
naming, vehicles in the VeRi-776 layout. Every loader, notebook and test therefore runs the same
code path it runs on the real data.

What makes it a domain-adaptation benchmark rather than a toy:

- an **identity** is a fixed set of attributes (persons: skin, hair, upper/lower clothing colour and
  pattern, shoes, bag, hat, build; vehicles: body type, colour, windows, wheels, roof item, decal,
  lights). Colours are drawn from a small palette with jitter, so many identities share most
  attributes and retrieval is not trivial;
- an **image** is one view of an identity (front / back / side) with scale and position jitter and,
  sometimes, a partial occluder; the view drawn for each image is written beside the folders in VeRi's
  keypoint-file format (``keypoint_train.txt``, ``keypoint_test.txt``), so the loaders return it as
  ``Sample.viewid``;
- a **domain** fixes the palette the identities are drawn from, the backgrounds and the illumination;
- a **camera** (several per domain) adds its own colour cast, brightness, blur, noise, background
  scene and viewpoint bias.

Generation is deterministic: each identity and each image draws from its own
``numpy.random.default_rng([seed, preset, pid, ...])`` stream, so a seed gives byte-identical files
regardless of the number of worker processes.

The package: :mod:`~.presets` (the domains and presets, as data), :mod:`~.canvas` (what both renderers
share), :mod:`~.person` and :mod:`~.vehicle` (the renderers), :mod:`~.writer` (the plan, the files,
the manifest, reading a copy back).

Example::

    from corelib.data.synthetic import generate_synthetic
    root = generate_synthetic("market_like", "data/synthetic")   # writes the Market-1501 layout
"""

from .presets import PRESETS, DomainStyle, SyntheticPreset, get_preset, list_presets
from .writer import (GENERATOR_VERSION, STAMP_FILE, dataset_folder, generate_synthetic, load_synthetic, plan_jobs,
                     preset_fingerprint, preset_manifest, render_example)

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "STAMP_FILE",
    "DomainStyle",
    "SyntheticPreset",
    "dataset_folder",
    "generate_synthetic",
    "get_preset",
    "list_presets",
    "load_synthetic",
    "plan_jobs",
    "preset_fingerprint",
    "preset_manifest",
    "render_example",
]
