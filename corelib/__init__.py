"""corelib: the CORE-ReID V2 workbench library.

This module is the public API: notebooks import only the names listed in ``__all__`` (a test
checks it), so anything a chapter needs is exported here explicitly, timm style.
"""

from . import viz
from .cluster import KMeansResult, kmeans, label_agreement, minibatch_kmeans, pseudo_label_quality
from .config import DataCfg, embedded_manifest
from .data import (
    CameraAwareIdentitySampler,
    ImageDataset,
    LocalGrayscalePatchReplacement,
    ReIDDataset,
    Sample,
    SyntheticPreset,
    VerificationReport,
    build_dataset,
    build_loader,
    build_transforms,
    denormalize,
    expected_layout,
    generate_synthetic,
    get_preset,
    list_datasets,
    list_manifests,
    list_presets,
    load_synthetic,
    load_manifest,
    pids_per_batch,
    preset_manifest,
    read_image,
    register_dataset,
    render_example,
    verify_dataset,
)
from .evaluation import RankingResult, evaluate_ranking, evaluate_vehicleid, rerank
from .errors import CorelibError, CorruptImageError, DatasetRootError, ManifestError, UnknownNameError
from .models import MeanTeacher, bmfn, build_model, count_parameters, list_models, paper_parameter_count
from .notebooks import list_chapters, run_notebooks
from .outputs import current_run, read_metrics, record_metric, save_figure, save_table, start_run
from .paths import data_root, figures_dir, runs_root, synthetic_root
from .repro import env_report, resolve_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "bmfn",
    "build_dataset",
    "build_loader",
    "build_model",
    "build_transforms",
    "CameraAwareIdentitySampler",
    "CorelibError",
    "CorruptImageError",
    "count_parameters",
    "current_run",
    "data_root",
    "DataCfg",
    "DatasetRootError",
    "denormalize",
    "embedded_manifest",
    "env_report",
    "evaluate_ranking",
    "evaluate_vehicleid",
    "expected_layout",
    "figures_dir",
    "generate_synthetic",
    "get_preset",
    "ImageDataset",
    "kmeans",
    "KMeansResult",
    "label_agreement",
    "list_chapters",
    "list_datasets",
    "list_manifests",
    "list_models",
    "list_presets",
    "load_manifest",
    "load_synthetic",
    "LocalGrayscalePatchReplacement",
    "ManifestError",
    "MeanTeacher",
    "minibatch_kmeans",
    "paper_parameter_count",
    "pids_per_batch",
    "preset_manifest",
    "pseudo_label_quality",
    "RankingResult",
    "read_image",
    "read_metrics",
    "record_metric",
    "register_dataset",
    "ReIDDataset",
    "render_example",
    "rerank",
    "resolve_device",
    "run_notebooks",
    "runs_root",
    "Sample",
    "save_figure",
    "save_table",
    "seed_everything",
    "start_run",
    "synthetic_root",
    "SyntheticPreset",
    "UnknownNameError",
    "VerificationReport",
    "verify_dataset",
    "viz",
]
