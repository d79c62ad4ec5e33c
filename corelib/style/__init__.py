"""Style transfer with CycleGAN: camera-aware (CamStyle) and domain-aware copies of a source set."""

from .cyclegan import (
    CycleGAN,
    CycleGANResult,
    ImagePool,
    PatchDiscriminator,
    ResnetGenerator,
    StyleJob,
    load_cyclegan,
    stack_states,
    style_transforms,
    train_cyclegan,
    train_cyclegans,
    unstack_state,
)
from .enlarge import (
    StyleModels,
    StylePair,
    StyleRunPaths,
    camera_pairs,
    camera_style_rows,
    colour_statistics,
    domain_style_rows,
    frechet_distance,
    load_style_models,
    load_style_set,
    style_gap,
    style_run_paths,
    summarize_gap,
    train_style_models,
    translate,
    translate_images,
    write_style_set,
)

__all__ = [
    "CycleGAN", "CycleGANResult", "ImagePool", "PatchDiscriminator", "ResnetGenerator", "StyleModels", "StylePair", "StyleRunPaths", "camera_style_rows", "domain_style_rows", "style_run_paths",
    "summarize_gap",
    "camera_pairs", "colour_statistics", "frechet_distance", "load_cyclegan", "load_style_models", "load_style_set",
    "stack_states", "StyleJob", "style_gap", "style_transforms", "train_cyclegan", "train_cyclegans", "train_style_models",
    "unstack_state", "translate", "translate_images",
    "write_style_set",
]
