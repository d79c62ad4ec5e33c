"""Datasets (real loaders and the embedded synthetic data), manifests, transforms and samplers."""

from .datasets import (
    ReIDDataset,
    Sample,
    build_dataset,
    expected_layout,
    list_datasets,
    read_image,
    register_dataset,
)
from .loading import ImageDataset, build_loader, seed_worker
from .manifests import VerificationReport, list_manifests, load_manifest, verify_dataset
from .samplers import CameraAwareIdentitySampler, pids_per_batch
from .synthetic import (
    SyntheticPreset,
    generate_synthetic,
    get_preset,
    list_presets,
    load_synthetic,
    open_dataset,
    preset_manifest,
    render_example,
)
from .transforms import LocalGrayscalePatchReplacement, build_transforms, denormalize

__all__ = [
    "CameraAwareIdentitySampler",
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
