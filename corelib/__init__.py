"""corelib: the CORE-ReID V2 workbench library.

This module is the public API: notebooks import only the names listed in ``__all__`` (a test
checks it), so anything a chapter needs is exported here explicitly, timm style.

The names are resolved lazily (PEP 562): ``import corelib.evaluation`` or ``import corelib.cluster``
loads that subpackage and what it needs, not the plotting, notebook and training stacks
(matplotlib, pandas, papermill, torchvision); ``from corelib import viz`` or ``corelib.finetune``
imports the module that defines the name on first use. A test keeps it so.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS_BY_MODULE: dict[str, tuple[str, ...]] = {
    ".cluster": ("KMeansResult", "PseudoLabels", "cluster_pseudo_labels", "compare_inits", "kmeans",
        "label_agreement", "list_labelers", "minibatch_kmeans", "pseudo_label_quality", "register_labeler",
        "summarize_inits",),
    ".config": ("EMBEDDED_PAIRS", "EMBEDDED_STYLE_MODES", "AdaptLossCfg", "AugmentCfg", "ClusterCfg", "DataCfg",
        "FinetuneCfg", "KMeansCfg", "MeanTeacherCfg", "OrientationCfg", "PretrainCfg", "RuntimeCfg", "SourceLossCfg",
        "SourceModelCfg", "StyleCfg", "embedded_manifest", "load_config", "save_config",),
    ".data": ("CameraAwareIdentitySampler", "ImageDataset", "LocalGrayscalePatchReplacement", "ReIDDataset",
        "Sample", "SyntheticPreset", "VerificationReport", "build_dataset", "build_loader", "build_transforms",
        "denormalize", "expected_layout", "generate_synthetic", "get_preset", "list_datasets", "list_manifests",
        "list_presets", "load_manifest", "load_synthetic", "open_dataset", "pids_per_batch", "preset_manifest",
        "read_image", "register_dataset", "render_example", "verify_dataset", "build_sampler", "list_samplers",
        "register_sampler",),
    ".errors": ("CheckpointError", "ConfigError", "CorelibError", "CorruptImageError", "DatasetRootError",
        "DeviceError", "InvalidInputError", "InvalidTypeError", "ManifestError", "MissingFileError",
        "MissingStageError", "NotOwnedError", "RunDirBusyError", "RunExistsError", "StyleError", "UnknownNameError",
        "UnsafePathError",),
    ".export": ("export_onnx",),
    ".evaluation": ("RankingResult", "evaluate_ranking", "evaluate_vehicleid", "rerank",),
    ".losses": ("list_losses", "register_loss",),
    ".models": ("MeanTeacher", "bmfn", "build_backbone", "build_model", "convert_checkpoint", "count_parameters",
        "list_backbones", "list_formats", "list_models", "paper_parameter_count", "register_backbone",
        "register_format", "register_model",),
    ".notebooks": ("list_chapters", "run_notebooks",),
    ".outputs": ("chapter_metrics", "current_run", "read_metrics", "record_metric", "save_figure", "save_table",
                 "show_table", "start_run",),
    ".pairs": ("PAPER_CLUSTERS", "DatasetRef", "ExperimentPair", "experiment_pairs",),
    ".paths": ("data_root", "figures_dir", "runs_root", "synthetic_root",),
    ".recipes": ("list_recipes", "register_recipe", "resolve_recipe",),
    ".repro": ("env_report", "resolve_device", "seed_everything",),
    ".training": ("FinetuneResult", "PretrainResult", "TrainedModel", "analysis_features", "analysis_model",
        "analysis_models", "evaluate_checkpoint", "evaluate_model", "finetune", "load_trained_model", "pretrain",),
}
# submodules exported as names (``corelib.viz``, ``from corelib import style``)
_SUBMODULES = (
    "baselines", "budget_study", "explain", "feature_space", "filtering", "launch", "orientation", "pairs", "published", "recipes",
        "report", "results", "style",
        "sweeps", "viz", "widgets",
)
_EXPORTS = {name: module for module, names in _EXPORTS_BY_MODULE.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # resolved once; later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AdaptLossCfg",
    "AugmentCfg",
    "ClusterCfg",
    "KMeansCfg",
    "MeanTeacherCfg",
    "OrientationCfg",
    "RuntimeCfg",
    "SourceLossCfg",
    "SourceModelCfg",
    "PseudoLabels",
    "build_backbone",
    "cluster_pseudo_labels",
    "convert_checkpoint",
    "export_onnx",
    "list_backbones",
    "list_labelers",
    "list_formats",
    "list_losses",
    "list_recipes",
    "recipes",
    "register_backbone",
    "register_labeler",
    "register_loss",
    "register_model",
    "register_recipe",
    "resolve_recipe",
    "EMBEDDED_PAIRS",
    "EMBEDDED_STYLE_MODES",
    "StyleCfg",
    "style",
    "baselines",
    "explain",
    "feature_space",
    "filtering",
    "orientation",
    "pairs",
    "experiment_pairs",
    "ExperimentPair",
    "DatasetRef",
    "PAPER_CLUSTERS",
    "published",
    "results",
    "budget_study",
    "sweeps",
    "launch",
    "widgets",
    "FinetuneCfg",
    "PretrainCfg",
    "load_config",
    "save_config",
    "open_dataset",
    "FinetuneResult",
    "PretrainResult",
    "TrainedModel",
    "analysis_features",
    "analysis_model",
    "analysis_models",
    "evaluate_checkpoint",
    "evaluate_model",
    "finetune",
    "load_trained_model",
    "pretrain",
    "__version__",
    "bmfn",
    "build_dataset",
    "build_loader",
    "build_model",
    "build_transforms",
    "CameraAwareIdentitySampler",
    "build_sampler",
    "list_samplers",
    "register_sampler",
    "CheckpointError",
    "ConfigError",
    "CorelibError",
    "CorruptImageError",
    "DeviceError",
    "InvalidInputError",
    "InvalidTypeError",
    "MissingFileError",
    "NotOwnedError",
    "RunDirBusyError",
    "RunExistsError",
    "UnsafePathError",
    "chapter_metrics",
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
    "compare_inits",
    "summarize_inits",
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
    "MissingStageError",
    "StyleError",
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
    "show_table",
    "seed_everything",
    "start_run",
    "synthetic_root",
    "SyntheticPreset",
    "UnknownNameError",
    "VerificationReport",
    "verify_dataset",
    "viz",
]
