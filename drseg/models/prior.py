"""The frozen structural prior (a DINO ViT on timm), DR-Seg section 3.1 / 3.3.

"DR-Seg: Decouple and Rectify ..." (2026) uses RS-DINOv3 ViT-L/16 by default
(timm ``vit_large_patch16_dinov3``; its satellite tag ``sat493m``) and RS-DINOv1 ViT-B/8 in
Table 3 (timm ``vit_base_patch8_224``, the RSIB checkpoint of GSNet / RSKT-Seg). Any timm ViT
works: the prior returns its last-block tokens (after the final norm) as an NCHW map via
timm's ``forward_intermediates``. :class:`GridAdapter` brings them to the CLIP grid.

Weights come only from a local file (:func:`drseg.models.checkpoints.load_prior_weights`);
without one the prior is a seeded random initialisation -- a structural stand-in for tests
and the tiny preset, *not* a DINO.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
import torch.nn.functional as F
from torch import nn

from drseg.errors import DrsegInputError
from drseg.models.checkpoints import load_prior_weights
from drseg.models.clip import CLIP_MEAN, CLIP_STD
from drseg.models.layers import use_patch_gemm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class StructuralPrior(nn.Module):
    """A frozen timm ViT returning a (B, D, gh, gw) token map.

    Args:
        backbone: timm model name (``vit_large_patch16_dinov3``, ``vit_base_patch8_224``, ...).
        checkpoint: local weights file, or None for a seeded random init (stand-in).
        image_size: the prior's input side; inputs are resized (bilinear) to it.
        model_kwargs: extra timm constructor arguments (e.g. a tiny ``embed_dim``/``depth``).
        normalize: ``"clip"`` feeds the CLIP-normalised image as RSKT-Seg does;
            ``"imagenet"`` re-normalises with the ImageNet mean/std DINO was trained with.
        seed: seed of the random initialisation.
    """

    def __init__(self, backbone: str, checkpoint: Optional[Union[str, Path]] = None,
                 image_size: int = 384, model_kwargs: Optional[dict[str, Any]] = None,
                 normalize: str = "clip", seed: int = 0):
        super().__init__()
        if normalize not in ("clip", "imagenet"):
            raise DrsegInputError(f"model.prior_normalize: {normalize!r} is not clip|imagenet")
        if not timm.is_model(backbone):
            raise DrsegInputError(f"model.prior: unknown timm model {backbone!r}")
        kwargs = dict(model_kwargs or {})
        # The prior always sees ``image_size`` inputs (forward resizes to it), so its token grid
        # is fixed: timm then precomputes the DINOv3 RoPE table once (``pos_embed_cached``)
        # instead of rebuilding it every forward, which under torch.compile was fused into
        # every block's q / k kernel as sin / cos per element (~1 ms of a training step, H200).
        # The table is computed on the CPU at construction: on the CPU the prior's output is
        # bitwise what the per-forward path gives (tested); on a GPU sin / cos may differ from
        # the GPU's own in the last bit. ViTs without the option (timm's BEiT, ...) have a
        # fixed grid anyway and are built without it.
        fixed = {} if "dynamic_img_size" in kwargs else {"dynamic_img_size": False}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                try:
                    self.model = timm.create_model(backbone, pretrained=False, num_classes=0,
                                                   img_size=image_size, **kwargs, **fixed)
                except TypeError as err:
                    if not fixed or "dynamic_img_size" not in str(err):
                        raise
                    torch.manual_seed(seed)
                    self.model = timm.create_model(backbone, pretrained=False, num_classes=0,
                                                   img_size=image_size, **kwargs)
            except TypeError as err:
                raise DrsegInputError(f"model.prior_kwargs: {kwargs} rejected by timm "
                                      f"{backbone!r} ({err})") from err
        if checkpoint is not None:
            load_prior_weights(self.model, checkpoint)
        self.model.requires_grad_(False)
        self.model.eval()
        use_patch_gemm(self.model.patch_embed.proj)  # one GEMM on CUDA (drseg.models.layers)
        self.backbone, self.image_size, self.normalize = backbone, image_size, normalize
        self.random_init = checkpoint is None
        self.dim = self.model.num_features
        patch = self.model.patch_embed.patch_size
        self.patch = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
        self.grid = image_size // self.patch

    def train(self, mode: bool = True) -> "StructuralPrior":
        """The prior stays in eval mode (frozen: no dropout, no statistics updates)."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens of the last block.

        Args:
            images: (B, 3, H, W) CLIP-normalised.

        Returns:
            (B, D, grid, grid), no gradient.
        """
        x = images
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
        if self.normalize == "imagenet":
            cm = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
            cs = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
            im = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            ist = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
            x = ((x * cs + cm) / 255.0 - im) / ist
        feats = self.model.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW",
                                                 intermediates_only=True)
        return feats[-1]  # (B, D, grid, grid)


class GridAdapter(nn.Module):
    """Bring prior tokens to the CLIP grid.

    * same grid: identity;
    * an integer multiple s of the CLIP grid: a learned s x s conv with stride s (RSKT-Seg's
      2x2 stride-2 conv for DINO ViT-B/8 at 48x48 -> 24x24), width kept;
    * otherwise: bilinear resizing.

    Args:
        prior_grid: the prior's token grid side. clip_grid: the CLIP grid side. dim: D.
    """

    def __init__(self, prior_grid: int, clip_grid: int, dim: int):
        super().__init__()
        self.clip_grid = clip_grid
        if prior_grid != clip_grid and prior_grid % clip_grid == 0:
            s = prior_grid // clip_grid
            self.conv: nn.Module = nn.Conv2d(dim, dim, s, stride=s)
        else:
            self.conv = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, gp, gp) -> (B, D, clip_grid, clip_grid)."""
        x = self.conv(x)
        if x.shape[-1] != self.clip_grid or x.shape[-2] != self.clip_grid:
            x = F.interpolate(x, size=(self.clip_grid, self.clip_grid), mode="bilinear",
                              align_corners=False)
        return x
