"""Datasets (real loaders and the embedded synthetic data), manifests, transforms and samplers.

The modules, lowest first: :mod:`.dataset` (Sample, ReIDDataset, the registry of loaders, reading an
image), :mod:`.layout` (reading a copy's folders and list files safely), one module per dataset family
(:mod:`.market`, :mod:`.msmt17`, :mod:`.veri`, :mod:`.vehicleid`, :mod:`.custom`), :mod:`.manifests`,
:mod:`.synthetic`, :mod:`.opening` (a loader or a preset by name), and the torch side:
:mod:`.batches` (Dataset and DataLoader), :mod:`.samplers`, :mod:`.transforms`.
"""

# Importing a family module registers its loaders.
from . import custom, market, msmt17, vehicleid, veri  # noqa: F401
from .batches import ImageDataset, build_loader, seed_worker
from .dataset import (
    ReIDDataset,
    Sample,
    build_dataset,
    expected_layout,
    list_datasets,
    read_image,
    register_dataset,
)
from .manifests import VerificationReport, list_manifests, load_manifest, verify_dataset
from .opening import open_dataset
from .samplers import (
    SAMPLERS,
    CameraAwareIdentitySampler,
    OrientationAwareIdentitySampler,
    build_sampler,
    list_samplers,
    pids_per_batch,
    register_sampler,
)
from .synthetic import (
    SyntheticPreset,
    generate_synthetic,
    get_preset,
    list_presets,
    load_synthetic,
    preset_manifest,
    render_example,
)
from .transforms import LocalGrayscalePatchReplacement, build_transforms, denormalize

__all__ = [
    "SAMPLERS",
    "CameraAwareIdentitySampler",
    "OrientationAwareIdentitySampler",
    "build_sampler",
    "list_samplers",
    "register_sampler",
    "ImageDataset",
    "LocalGrayscalePatchReplacement",
    "ReIDDataset",
    "Sample",
    "SyntheticPreset",
    "VerificationReport",
    "build_dataset",
    "build_loader",
    "build_transforms",
    "denormalize",
    "expected_layout",
    "generate_synthetic",
    "get_preset",
    "list_datasets",
    "list_manifests",
    "list_presets",
    "load_synthetic",
    "open_dataset",
    "load_manifest",
    "pids_per_batch",
    "preset_manifest",
    "read_image",
    "register_dataset",
    "render_example",
    "seed_worker",
    "verify_dataset",
]
