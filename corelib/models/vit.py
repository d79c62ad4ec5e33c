"""TransReID's Vision Transformer trunk (He et al., ICCV 2021; docs/baselines.md §1.1-1.2, §1b.1) as
registered backbones, built from timm's ViT blocks.

Registered: ``transreid_vit_base`` (ViT-B/16: dim 768, depth 12, 12 heads), ``transreid_vit_small``
(TransReID-SSL's ViT-S, the DINO one: dim 384, depth 12, 6 heads; not TransReID's own 768-wide
"vit_small") and ``transreid_vit_tiny`` (dim 96, depth 4, 4 heads, patch 8, stride 6: the CPU recipe
of the embedded pairs, 64x32 inputs give 10 x 5 patches).

- **Overlapping patch embedding**: a Conv2d with kernel P (16) and stride S (12 by default), grid
  ``N_y = (H - P) // S + 1`` by ``N_x = (W - P) // S + 1``: 21 x 10 = 210 patches at 256 x 128.
- Tokens ``[cls; patches] + pos_embed (+ lambda * SIE[cam * V + view])`` pass through the timm
  ``Block`` stack (qkv bias, LayerNorm eps 1e-6, GELU, stochastic depth as a linspace up to
  ``drop_path``), then the final LayerNorm.
- **SIE** (Side Information Embedding): one learnable table, trunc-normal std 0.02, of ``C * V``
  rows (cameras x views, looked up at ``cam * V + view``), ``C`` rows (cameras) or ``V`` rows (views),
  as the official code builds it: an axis takes part when its count is > 1 (the network's switches,
  the official ``SIE_CAMERA`` / ``SIE_VIEW``, set a count to 0). The row is added with weight lambda
  (``sie_coe``, 3.0 as every released config; the official factory's 1.5 and class's 1.0 are not
  used) to every token, [cls] included, before the first block. Camera and view ids (``camids``,
  ``viewids``: ``(B,)``, -1 unknown) are passed in training *and* in evaluation (the features depend
  on them). An unknown id takes the mean of the rows it could be (:meth:`TransReIDViT.side_information`):
  an image without a view the mean of its camera's view rows, one without a camera (or no ids at
  all) the mean over cameras, i.e. the whole table's mean for a camera table: the camera-blind
  embedding the direct transfer to another domain uses, since a source table knows nothing of the
  target's cameras. For UDA the target therefore gets its own table, sized by its camera and view
  counts (built by the fine-tuning loop, its rows starting from the source table's means).
- **Input normalisation**: the workbench's pipelines hand every network ImageNet-normalised
  tensors; TransReID normalises with mean = std = 0.5. With ``input_norm="half"`` (the default)
  the trunk maps one to the other exactly, ``x_half = (x * std_in + mean_in - 0.5) / 0.5``, so
  evaluation, Grad-CAM and the widgets feed it what they feed the ResNets. ``"imagenet"`` keeps
  the ImageNet statistics (DINO's pre-training).

Backbone contract (:class:`~corelib.models.registry.Backbone`): ``forward(x, camids, viewids)`` returns the
patch tokens of the last block, after the final norm, reshaped to their grid ``(B, D, N_y, N_x)``,
so a ViT can also be the trunk of CORE-ReID's own heads. :meth:`TransReIDViT.forward_tokens`
returns all ``N + 1`` tokens (what :class:`~corelib.models.transreid.TransReIDNet` reads).
``cam_layers()`` names the output of every block as a grid ``(B, D, N_y, N_x)`` (a pass-through
module the tokens are reshaped into and out of), so pytorch-grad-cam and the activation maps need
no reshape hook.

Weights: None / "none" is random (what every offline run uses); a path loads a local file in the
timm ``vit_*_patch16_224`` layout (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.*``, ``norm``; ``head.*`` and distillation keys are dropped, a ``model`` / ``state_dict``
wrapper and ``module.`` prefixes are accepted). The position embedding is resampled from the
file's grid (14 x 14 at 224) to this one with timm's ``resample_abs_pos_embed`` (bilinear, no
antialiasing: TransReID's ``resize_pos_embed``), the [cls] position kept. ``"imagenet"``: no ViT
weights ship with torchvision and nothing can be downloaded here, so the trunk stays random and one
warning names the file to pass (timm's ``vit_base_patch16_224.orig_in21k_ft_in1k``, the
ImageNet-21k weights TransReID needs: from scratch it reaches a fraction of the published mAP,
docs/baselines.md §1.9 item 11).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..errors import InvalidInputError, MissingFileError
from ..runtime.checkpoint import load_checkpoint
from .registry import Backbone, register_backbone

# name -> (embed_dim, depth, heads, patch, stride): what the registered builders default to
VARIANTS: dict[str, dict] = {
    "transreid_vit_base": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16, stride=12),
    "transreid_vit_small": dict(embed_dim=384, depth=12, num_heads=6, patch_size=16, stride=12),
    "transreid_vit_tiny": dict(embed_dim=96, depth=4, num_heads=4, patch_size=8, stride=6),
}

WEIGHT_FILES = {
    "transreid_vit_base": "timm vit_base_patch16_224.orig_in21k_ft_in1k (TransReID's jx_vit_base_p16_224-80ecf9dd.pth)",
    "transreid_vit_small": "TransReID-SSL's LUPerson DINO ViT-S/16 (vit_small_300ep.pth)",
    "transreid_vit_tiny": "none exists: the tiny ViT is the CPU recipe's, trained from random weights",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WARNED: set[str] = set()


def patch_grid(height: int, width: int, patch_size: int = 16, stride: int = 12) -> tuple[int, int]:
    """``(N_y, N_x)`` of the overlapping patch embedding: ``(H - P) // S + 1`` per axis
    (21 x 10 at 256 x 128 with P = 16, S = 12)."""
    if height < patch_size or width < patch_size:
        raise InvalidInputError(f"an input of {height} x {width} is smaller than the {patch_size}-pixel patches; "
                                f"use larger images or a smaller patch_size")
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


class GridTap(nn.Identity):
    """A pass-through whose output is a block's patch tokens as a grid ``(B, D, N_y, N_x)``: the
    module Grad-CAM hooks (its forward hook sees a map, its gradient is the map's)."""


class PatchEmbedOverlap(nn.Module):
    """Conv2d with kernel ``patch_size`` and stride ``stride`` -> ``(B, N, D)`` tokens."""

    def __init__(self, patch_size: int, stride: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        if not 0 < stride <= patch_size:
            raise InvalidInputError(f"stride must be in 1..patch_size={patch_size}, got {stride}")
        self.patch_size, self.stride = patch_size, stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, N_y, N_x) -> (B, N, D)


class TransReIDViT(Backbone):
    """ViT trunk with overlapping patches and SIE (the module docstring).

    Args:
        img_size: ``(H, W)`` the position embedding is laid out for (the training input size);
            another size at run time raises an error naming the one built for.
        patch_size, stride: the patch embedding (16 / 12 in TransReID*, 16 / 16 without overlap).
        embed_dim, depth, num_heads, mlp_ratio: the transformer.
        drop_path: stochastic depth of the last block (a linspace from 0 over the blocks; 0.1).
        num_cameras, num_views: the SIE table's size (C x V rows; none when both are <= 1).
        sie_coe: lambda, the weight of the SIE term.
        input_norm: ``"half"`` (TransReID's mean = std = 0.5, from ImageNet-normalised inputs) or
            ``"imagenet"``.
        weights: None / "none", "imagenet" (random, one warning), or a timm-layout file.
    """

    def __init__(self, img_size: tuple[int, int] = (256, 128), *, patch_size: int = 16, stride: int = 12,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path: float = 0.1, num_cameras: int = 0, num_views: int = 0, sie_coe: float = 3.0,
                 input_norm: str = "half", weights: Union[str, Path, None] = None, name: str = "vit") -> None:
        super().__init__()
        from timm.layers import trunc_normal_  # lazy: timm is needed by the ViT backbones only
        from timm.models.vision_transformer import Block  # lazy: timm is needed by the ViT backbones only

        if input_norm not in ("half", "imagenet"):
            raise InvalidInputError(f"input_norm must be 'half' (TransReID's 0.5 / 0.5) or 'imagenet', got {input_norm!r}")
        if embed_dim % num_heads:
            raise InvalidInputError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.grid = patch_grid(*self.img_size, patch_size, stride)
        self.out_channels = self.embed_dim = embed_dim
        self.num_cameras, self.num_views, self.sie_coe = int(num_cameras), int(num_views), float(sie_coe)
        self.input_norm = input_norm
        self.patch_embed = PatchEmbedOverlap(patch_size, stride, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, embed_dim))
        rows = self.sie_rows(self.num_cameras, self.num_views)
        self.sie_embed = nn.Parameter(torch.zeros(rows, 1, embed_dim)) if rows else None
        rates = torch.linspace(0, drop_path, depth).tolist()  # stochastic depth per block
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r, norm_layer=norm)
                                    for r in rates)
        self.taps = nn.ModuleList(GridTap() for _ in rates)
        self.norm: nn.Module = norm(embed_dim)
        # x_half = x * (2 std) + (2 mean - 1): ImageNet-normalised -> TransReID's 0.5 / 0.5
        scale = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 2
        shift = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 2 - 1
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)
        if self.sie_embed is not None:
            trunc_normal_(self.sie_embed, std=0.02)
        self.apply(_init_vit_weights)
        self.load_weights(weights, name)

    @staticmethod
    def sie_rows(num_cameras: int, num_views: int) -> int:
        """Rows of the SIE table: C x V, C or V (camera-major), 0 without side information."""
        if num_cameras > 1 and num_views > 1:
            return num_cameras * num_views
        if num_cameras > 1:
            return num_cameras
        if num_views > 1:
            return num_views
        return 0

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    # ------------------------------------------------------------------ weights

    def load_weights(self, weights: Union[str, Path, None], name: str = "vit") -> None:
        """Random (None / "none"), "imagenet" (random and one warning: nothing to download here), or a
        timm-layout file, its position embedding resampled to this grid."""
        if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
            return
        if isinstance(weights, str) and weights.lower() == "imagenet":
            if name not in _WARNED:
                _WARNED.add(name)
                warnings.warn(f"{name}: no ImageNet ViT weights can be downloaded here; the trunk is random. Pass a "
                              f"local file as weights=PATH: {WEIGHT_FILES.get(name, 'a timm vit_*_patch16_224 file')}",
                              stacklevel=3)
            return
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingFileError(f"ViT weights file {path} does not exist; pass weights=None, 'imagenet' or an existing "
                                   f"timm-layout file")

        state = load_checkpoint(path)
        self.load_timm_state(state, source=str(path))

    def load_timm_state(self, state: dict, *, source: str = "the weights file") -> None:
        """Load a timm ``vit_*_patch16_224`` state dict (see the module docstring).

        Raises:
            InvalidInputError: a key is missing or has another shape (the message names it and what
                this trunk expects: another width, depth or patch size).
        """
        from timm.layers import resample_abs_pos_embed  # lazy: timm is needed by the ViT backbones only

        for wrapper in ("model", "state_dict"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        if "dist_token" in state and "pos_embed" in state:  # a distilled DeiT: drop the distillation position
            state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], state["pos_embed"][:, 2:]], dim=1)
        state = {k: v for k, v in state.items() if not k.startswith(("head", "dist", "fc.", "pre_logits"))}
        pos = state.get("pos_embed")
        if pos is not None and pos.shape[1] != self.pos_embed.shape[1]:
            n_old = pos.shape[1] - 1
            side = int(math.isqrt(n_old))
            old = [side, side] if side * side == n_old else None
            if old is None:
                raise InvalidInputError(f"{source}: pos_embed has {n_old} patch positions, not a square grid; cannot resample")
            state["pos_embed"] = resample_abs_pos_embed(pos, list(self.grid), old, num_prefix_tokens=1,
                                                        interpolation="bilinear", antialias=False)
        own = self.state_dict()
        wanted = {k for k in own if not k.startswith("sie_embed")}
        depth = len(self.blocks)
        deeper = sorted(k for k in state if k.startswith("blocks.") and int(k.split(".")[1]) >= depth)
        if deeper:
            raise InvalidInputError(f"{source} holds a deeper ViT than this one (depth {depth}): {deeper[0]} has no "
                                    f"place here; build the backbone with its depth (backbone_args depth=...)")
        missing = sorted(k for k in wanted if k not in state)
        wrong = sorted(k for k in wanted if k in state and state[k].shape != own[k].shape)
        if missing or wrong:
            k = (wrong or missing)[0]
            got = tuple(state[k].shape) if k in state else "missing"
            raise InvalidInputError(f"{source} does not fit this ViT (dim {self.embed_dim}, depth {len(self.blocks)}, "
                                    f"patch {self.patch_embed.patch_size}): {k} is {got}, expected {tuple(own[k].shape)}"
                                    f" ({len(missing)} key(s) missing, {len(wrong)} of another shape)")
        self.load_state_dict({k: state[k] for k in wanted}, strict=False)

    # ------------------------------------------------------------------ forward

    def side_information(self, camids: Optional[torch.Tensor], batch: int, viewids: Optional[torch.Tensor] = None
                         ) -> Optional[torch.Tensor]:
        """``lambda * SIE[row]`` as ``(B, 1, D)``, None without a table.

        The row is the official code's: ``cam * V + view`` in a camera x view table, ``cam`` in a
        camera table, ``view`` in a view table. An unknown id (-1, or None for the whole batch) takes
        the mean of the rows it could be: an unknown view the mean of its camera's V rows, an unknown
        camera the mean of its view's C rows, both unknown (or an unknown id of a one-axis table) the
        mean of the whole table, the camera-blind embedding of the direct transfer."""
        if self.sie_embed is None:
            return None
        table = self.sie_embed
        dev = table.device
        unknown_ids = torch.full((batch,), -1, dtype=torch.long, device=dev)
        cams = unknown_ids if camids is None else camids.to(dev).long()
        views = unknown_ids if viewids is None else viewids.to(dev).long()
        cameras, num_views = self.num_cameras, self.num_views
        if cameras > 1 and num_views > 1:
            grid = table.view(cameras, num_views, *table.shape[1:])  # (C, V, 1, D), camera-major
            self._check_ids(cams, cameras, "camera")
            self._check_ids(views, num_views, "view")
            c, v = cams.clamp_min(0), views.clamp_min(0)
            picked = torch.where((views < 0)[:, None, None], grid.mean(dim=1)[c], grid[c, v])
            picked = torch.where((cams < 0)[:, None, None], grid.mean(dim=0)[v], picked)
            picked = torch.where(((cams < 0) & (views < 0))[:, None, None], table.mean(dim=0, keepdim=True), picked)
        else:
            ids, count, axis = (cams, cameras, "camera") if cameras > 1 else (views, num_views, "view")
            self._check_ids(ids, count, axis)
            picked = torch.where((ids < 0)[:, None, None], table.mean(dim=0, keepdim=True), table[ids.clamp_min(0)])
        return self.sie_coe * picked

    def _check_ids(self, ids: torch.Tensor, count: int, axis: str) -> None:
        if ids.numel() and bool((ids >= count).any()):
            raise InvalidInputError(f"{axis} index {int(ids.max())} is outside this SIE table of "
                                    f"{self.sie_embed.shape[0]} rows ({self.num_cameras or 1} camera(s) x "
                                    f"{self.num_views or 1} view(s)): a network trained on other {axis}s; "
                                    f"evaluate it camera-blind (evaluate_model(cameras=False)) or fine-tune it on "
                                    f"this domain")

    def _check_size(self, x: torch.Tensor) -> None:
        if tuple(x.shape[2:]) != self.img_size:
            raise InvalidInputError(f"this ViT's position embedding is laid out for {self.img_size[0]} x {self.img_size[1]} "
                                    f"inputs, got {x.shape[2]} x {x.shape[3]}; build it with img_size=(H, W) of your "
                                    f"images (backbone_args)")

    def _tap(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Tokens -> grid through tap ``i`` -> tokens (a no-op that Grad-CAM can hook)."""
        cls, patches = x[:, :1], x[:, 1:]
        b, n, d = patches.shape
        grid = self.taps[i](patches.transpose(1, 2).reshape(b, d, *self.grid))
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)

    def embed(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None, viewids: Optional[torch.Tensor] = None
              ) -> torch.Tensor:
        """``[cls; patches] + pos (+ SIE)``: the ``(B, N + 1, D)`` input of the first block (the rows of
        the camera and view ids, :meth:`side_information`)."""
        self._check_size(x)
        if self.input_norm == "half":
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        side = self.side_information(camids, tokens.shape[0], viewids)
        return tokens if side is None else tokens + side.to(tokens.dtype)

    def forward_tokens(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                       viewids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """All ``(B, N + 1, D)`` tokens after this trunk's blocks and its final norm."""
        t = self.embed(x, camids, viewids)
        for i, block in enumerate(self.blocks):
            t = self._tap(i, block(t))
        return self.norm(t)

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> torch.Tensor:
        t = self.forward_tokens(x, camids, viewids)[:, 1:]
        return t.transpose(1, 2).reshape(t.shape[0], self.embed_dim, *self.grid)

    def cam_layers(self) -> dict[str, nn.Module]:
        return {f"block{i + 1}": tap for i, tap in enumerate(self.taps)}

    def detach_last_block(self) -> tuple[nn.Module, nn.Module]:
        """Remove the last block and the final norm from the trunk and return them (JPM builds its
        two branches from them; the trunk then ends one block earlier, un-normalised)."""
        if len(self.blocks) < 2:
            raise InvalidInputError("JPM needs a ViT of depth >= 2 (it takes the last block away from the trunk)")
        block, norm = self.blocks[-1], self.norm
        self.blocks = nn.ModuleList(list(self.blocks)[:-1])
        self.taps = nn.ModuleList(list(self.taps)[:-1])
        self.norm = nn.Identity()
        return block, norm


def _init_vit_weights(m: nn.Module) -> None:
    """TransReID's init: trunc-normal 0.02 for the linear layers, zero biases, unit LayerNorm."""
    from timm.layers import trunc_normal_  # lazy: timm is needed by the ViT backbones only

    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _builder(name: str):
    defaults = VARIANTS[name]

    def build(weights=None, img_size=(256, 128), **kwargs) -> TransReIDViT:
        return TransReIDViT(tuple(img_size), **{**defaults, **kwargs}, weights=weights, name=name)

    build.__doc__ = (f"{name}: dim {defaults['embed_dim']}, depth {defaults['depth']}, {defaults['num_heads']} heads, "
                     f"patch {defaults['patch_size']}, stride {defaults['stride']} (see :class:`TransReIDViT`).")
    return build


# the complexity table's ViT rows, in this order: TransReID-SSL's ViT-S, TransReID's ViT-B
for _name, _table in (("transreid_vit_small", "transreid_net"), ("transreid_vit_base", "transreid_net"),
                      ("transreid_vit_tiny", None)):
    register_backbone(_name, needs=("img_size",), complexity=_table)(_builder(_name))
