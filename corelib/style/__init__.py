"""Style transfer with CycleGAN: camera-aware (CamStyle) and domain-aware copies of a source set.

- :mod:`~corelib.style.networks`: the generator, the discriminator, :class:`CycleGAN`;
- :mod:`~corelib.style.cyclegan_data`, :mod:`~corelib.style.gan_losses`, :mod:`~corelib.style.cyclegan`:
  its data, its losses and its training loop;
- :mod:`~corelib.style.model_index`: the style models of a source (one per camera pair or one per domain);
- :mod:`~corelib.style.translation`, :mod:`~corelib.style.enlarge`: translating images, the enlarged set;
- :mod:`~corelib.style.colour_gap`: how far translation closes the colour gap.
"""

from .colour_gap import colour_statistics, frechet_distance, style_gap, summarize_gap
from .cyclegan import CycleGANResult, train_cyclegan, train_cyclegans
from .cyclegan_data import ImagePool, StyleJob, style_transforms
from .enlarge import StyleRunPaths, load_style_set, style_run_paths, write_style_set
from .model_index import StyleModels, StylePair, camera_pairs, load_style_models, train_style_models
from .networks import CycleGAN, PatchDiscriminator, ResnetGenerator, load_cyclegan
from .translation import camera_style_rows, domain_style_rows, translate, translate_images

__all__ = [
    "CycleGAN", "CycleGANResult", "ImagePool", "PatchDiscriminator", "ResnetGenerator", "StyleModels", "StylePair", "StyleRunPaths", "camera_style_rows", "domain_style_rows", "style_run_paths",
    "summarize_gap",
    "camera_pairs", "colour_statistics", "frechet_distance", "load_cyclegan", "load_style_models", "load_style_set",
    "StyleJob", "style_gap", "style_transforms", "train_cyclegan", "train_cyclegans", "train_style_models",
    "translate", "translate_images",
    "write_style_set",
]
