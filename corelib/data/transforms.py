"""Image augmentation pipelines ("data adapter") for CORE-ReID V2 training and testing.

Three stages, following docs/method.md §2.6 and the §9-Q7 resolution:

- ``pretrain`` (source pre-training): Resize (bicubic) -> horizontal flip -> edge pad -> random crop
  -> Local Grayscale Patch Replacement (LGPR) -> global RandomGrayscale -> ToTensor -> Normalize;
- ``finetune`` (target fine-tuning): the same, then RandomErasing on the normalised tensor (the
  paper erases in fine-tuning only; ``erase_p > 0`` adds it to pre-training too, as an ablation);
- ``test``: Resize (bicubic) -> ToTensor -> Normalize, deterministic.

``gray_p=0.0`` drops the global RandomGrayscale and reproduces the authors' pre-training code; the
default 0.05 follows the paper figure, which shows global grayscale in both stages.

Every random draw goes through torch's global RNG (as torchvision's own transforms do), so
``torch.manual_seed`` in the main process and the per-worker seeds of a seeded DataLoader make
augmentation repeatable.

Example::

    tf = build_transforms("finetune", 256, 128)
    x = tf(read_image(path))                      # float tensor (3, 256, 128), normalised
    plt.imshow(denormalize(x).permute(1, 2, 0))   # back to 0..1 for plotting
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..errors import InvalidInputError, InvalidTypeError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

STAGES = ("pretrain", "finetune", "test")


def _uniform(low: float, high: float) -> float:
    """One draw from U(low, high) on torch's global RNG."""
    return low + (high - low) * torch.rand(1).item()


class LocalGrayscalePatchReplacement:
    """Replace one random rectangle of an RGB image by its luminance (LGPR).

    With probability ``p``, up to ``attempts`` rectangles are proposed: area ratio ``s ~ U(area)``
    of the image area ``A = H * W``, aspect ``r ~ U(aspect)``, height ``round(sqrt(s*A*r))``, width
    ``round(sqrt(s*A/r))``. The first one that fits (height < H and width < W) is placed at a random
    top-left corner and its pixels are replaced by the PIL ``"L"`` luminance, replicated to three
    channels. When no proposal fits the image comes back unchanged.

    Unlike the authors' code, the height is bounded by the image height and the width by the image
    width (theirs swaps them, which only matters for non-square images but then matters a lot).

    Args:
        p: probability of applying the replacement at all.
        area: range of the patch area as a fraction of the image area.
        aspect: range of the patch aspect ratio height / width.
        attempts: how many proposals to try before giving up.
    """

    def __init__(
        self,
        p: float = 0.4,
        area: tuple[float, float] = (0.02, 0.4),
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        attempts: int = 100,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise InvalidInputError(f"LGPR probability p must be in [0, 1], got {p}")
        if not 0.0 < area[0] <= area[1] <= 1.0:
            raise InvalidInputError(f"LGPR area must satisfy 0 < low <= high <= 1, got {area}")
        if not 0.0 < aspect[0] <= aspect[1]:
            raise InvalidInputError(f"LGPR aspect must satisfy 0 < low <= high, got {aspect}")
        if attempts < 1:
            raise InvalidInputError(f"LGPR attempts must be >= 1, got {attempts}")
        self.p = float(p)
        self.area = (float(area[0]), float(area[1]))
        self.aspect = (float(aspect[0]), float(aspect[1]))
        self.attempts = int(attempts)

    def __call__(self, img: Image.Image) -> Image.Image:
        """Apply LGPR to ``img``; the input is never modified, a new image is returned."""
        if not isinstance(img, Image.Image):
            raise InvalidTypeError(
                f"LocalGrayscalePatchReplacement expects a PIL image, got {type(img).__name__}; "
                f"put it before ToTensor in the pipeline"
            )
        out = img.convert("RGB") if img.mode != "RGB" else img.copy()
        # Draw the coin even when p is 0 or 1 so the RNG stream does not depend on p's value.
        if torch.rand(1).item() >= self.p:
            return out
        width, height = out.size
        image_area = width * height
        for _ in range(self.attempts):
            target = _uniform(*self.area) * image_area
            ratio = _uniform(*self.aspect)
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            # Strict bounds as in the reference algorithm; a zero-size patch would be a no-op.
            if not (0 < h < height and 0 < w < width):
                continue
            top = int(torch.randint(0, height - h + 1, (1,)).item())
            left = int(torch.randint(0, width - w + 1, (1,)).item())
            box = (left, top, left + w, top + h)
            patch = out.crop(box).convert("L").convert("RGB")
            out.paste(patch, box)
            return out
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(p={self.p}, area={self.area}, "
            f"aspect=({self.aspect[0]:.4g}, {self.aspect[1]:.4g}), attempts={self.attempts})"
        )


def build_transforms(
    stage: str,
    height: int = 256,
    width: int = 128,
    *,
    lgpr_p: float = 0.4,
    gray_p: float = 0.05,
    erase_p: Optional[float] = None,
    flip_p: float = 0.5,
    pad: int = 10,
    erase_mode: str = "mean",
) -> T.Compose:
    """Build the augmentation pipeline of one training stage, or the test pipeline.

    Random steps whose probability is 0 are left out (they would be no-ops), as are Pad and
    RandomCrop when ``pad`` is 0; ``gray_p=0.0`` therefore gives the authors' pre-training pipeline.

    Args:
        stage: ``"pretrain"``, ``"finetune"`` or ``"test"``.
        height: output image height in pixels.
        width: output image width in pixels.
        lgpr_p: probability of Local Grayscale Patch Replacement (training stages).
        gray_p: probability of whole-image grayscale (training stages).
        erase_p: probability of RandomErasing; None is the stage's default (0.5 in fine-tuning,
            0 in pre-training, as the paper has it).
        flip_p: probability of a horizontal flip (training stages).
        pad: edge padding before the random crop, in pixels (training stages).
        erase_mode: what RandomErasing writes: ``"mean"`` (the ImageNet mean, the CORE-ReID authors'
            code) or ``"random"`` (standard-normal values per pixel: timm's ``mode='pixel'``, TransReID's).

    Returns:
        A ``torchvision.transforms.Compose`` mapping a PIL RGB image to a normalised float tensor
        of shape ``(3, height, width)``.

    Raises:
        ValueError: unknown stage or invalid size / padding.
    """
    if stage not in STAGES:
        raise InvalidInputError(f"unknown transform stage {stage!r}; valid stages: {', '.join(STAGES)}")
    if height < 1 or width < 1:
        raise InvalidInputError(f"image size must be positive, got height={height}, width={width}")
    if pad < 0:
        raise InvalidInputError(f"pad must be >= 0, got {pad}")
    if erase_mode not in ("mean", "random"):
        raise InvalidInputError(f"erase_mode must be 'mean' or 'random', got {erase_mode!r}")
    size = (height, width)
    resize = T.Resize(size, interpolation=InterpolationMode.BICUBIC)
    to_tensor = [T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    if stage == "test":
        return T.Compose([resize, *to_tensor])

    steps: list = [resize]
    if flip_p > 0:
        steps.append(T.RandomHorizontalFlip(p=flip_p))
    if pad > 0:
        steps += [T.Pad(pad, padding_mode="edge"), T.RandomCrop(size)]
    if lgpr_p > 0:
        steps.append(LocalGrayscalePatchReplacement(p=lgpr_p))
    if gray_p > 0:
        steps.append(T.RandomGrayscale(p=gray_p))
    steps += to_tensor
    if erase_p is None:
        erase_p = 0.5 if stage == "finetune" else 0.0
    if erase_p > 0:
        # The authors write the ImageNet *mean* into the already-normalised tensor, so the erased
        # area is not mean-coloured after denormalisation; kept as-is to match their recipe.
        value = list(IMAGENET_MEAN) if erase_mode == "mean" else "random"
        steps.append(T.RandomErasing(p=erase_p, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=value))
    return T.Compose(steps)


def denormalize(tensor: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a ``(3, H, W)`` or ``(N, 3, H, W)`` tensor.

    Returns a new tensor clamped to 0..1, ready for plotting; the input is left untouched.
    """
    if tensor.dim() not in (3, 4) or tensor.shape[-3] != 3:
        raise InvalidInputError(f"expected a (3, H, W) or (N, 3, H, W) tensor, got {tuple(tensor.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std + mean).clamp(0.0, 1.0)
