"""Upsampling decoder and loss of the CAT-Seg / RSKT-Seg code path (PROTOCOL.md section 3).

"CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation" (arXiv:2303.11797).
Two upsampling stages (128 -> 64 -> 32 channels at the reference size), each concatenating
projected CLIP guidance (32 and 16 channels) from intermediate CLIP blocks, GroupNorm double
convs, and a 1-channel head per class: logits at 4x the CLIP grid (96x96 for 384 px).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from drseg.data.labels import check_label_ids
from drseg.errors import DrsegInputError
from drseg.models.layers import run_layers


def _groups(ch: int) -> int:
    return max(1, ch // 16)


class DoubleConv(nn.Module):
    """(conv3x3 - GroupNorm - ReLU) x 2, as CAT-Seg's decoder.

    Args:
        cin: input channels. cout: output channels.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(_groups(cout), cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(_groups(cout), cout),
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, cin, H, W) -> (N, cout, H, W); channels-last stays channels-last."""
        return run_layers(self.net, x)


class Up(nn.Module):
    """2x transposed-conv upsampling, concatenation of guidance, double conv.

    The first conv of the double conv acts on ``[x || g]``; it is computed as
    ``conv(x, W_x) + conv(g, W_g)`` (the same convolution split by input channels, zero
    padding on both), so the guidance half runs once per image and is broadcast over the K
    class maps instead of concatenating a copy of the guidance to every class map.

    Args:
        cin: input channels. cout: output channels. guidance: guidance channels.
    """

    def __init__(self, cin: int, cout: int, guidance: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin - guidance, 2, stride=2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """x (B*K, cin, H, W), guidance (B, G, 2H, 2W) -> (B*K, cout, 2H, 2W)."""
        x = self.up(x)  # (B*K, cin - G, 2H, 2W), class-major per image (map b * K + k)
        if x.shape[0] % guidance.shape[0]:
            raise DrsegInputError(f"decoder: {x.shape[0]} class maps for {guidance.shape[0]} "
                                  "guidance images")
        first = self.conv.net[0]
        cx = x.shape[1]
        y = F.conv2d(x, first.weight[:, :cx], None, padding=first.padding)  # (B*K, cout, ...)
        yg = F.conv2d(guidance, first.weight[:, cx:], None, padding=first.padding)  # (B, ...)
        B = guidance.shape[0]
        y = (y.view(B, -1, *y.shape[1:]) + yg.unsqueeze(1)).view(y.shape)
        return run_layers(self.conv.net[1:], y)  # channels-last maps stay channels-last


class GuidanceUpsampler(nn.Module):
    """Intermediate CLIP block features to decoder guidance.

    Block ``guidance_layers[0]`` -> transposed conv x2 (256 ch at the reference size), block
    ``guidance_layers[1]`` -> transposed conv x4 (128 ch); each then 3x3 conv + ReLU to the
    decoder guidance widths (32, 16).

    Args:
        width: CLIP vision width (768 for B/16, 1024 for L/14).
        up_dims: channels after the transposed convs (256, 128).
        proj_dims: decoder guidance widths (32, 16).
    """

    def __init__(self, width: int, up_dims: Sequence[int] = (256, 128),
                 proj_dims: Sequence[int] = (32, 16)):
        super().__init__()
        self.up = nn.ModuleList([nn.ConvTranspose2d(width, up_dims[0], 2, stride=2),
                                 nn.ConvTranspose2d(width, up_dims[1], 4, stride=4)])
        self.proj = nn.ModuleList(nn.Sequential(nn.Conv2d(u, p, 3, padding=1), nn.ReLU())
                                  for u, p in zip(up_dims, proj_dims))
        #: memory format of the feature maps: None = channels-last on CUDA (as
        #: :attr:`Decoder.channels_last`), contiguous elsewhere; the same values either way.
        self.channels_last: bool | None = None

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Two (B, width, h, w) maps -> [(B, 32, 2h, 2w), (B, 16, 4h, 4w)]."""
        if len(feats) != 2:
            raise DrsegInputError(f"model.guidance_layers: the decoder needs 2 layers, "
                                  f"got {len(feats)}")
        if self.channels_last if self.channels_last is not None else feats[0].is_cuda:
            feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        return [p(u(f)) for f, u, p in zip(feats, self.up, self.proj)]


class Decoder(nn.Module):
    """Two upsampling stages with CLIP guidance and a 1-channel head per class.

    Args:
        dim: aggregator hidden width (128).
        dims: stage output widths (64, 32).
        guidance_dims: guidance widths (32, 16).
    """

    def __init__(self, dim: int = 128, dims: Sequence[int] = (64, 32),
                 guidance_dims: Sequence[int] = (32, 16)):
        super().__init__()
        self.up1 = Up(dim, dims[0], guidance_dims[0])
        self.up2 = Up(dims[0], dims[1], guidance_dims[1])
        self.head = nn.Conv2d(dims[1], 1, 3, padding=1)
        #: memory format of the class maps: None = channels-last on CUDA (cuDNN's bf16
        #: convolutions are NHWC; NCHW maps cost a layout conversion around every conv),
        #: contiguous elsewhere. The values are the same either way (up to float rounding).
        self.channels_last: bool | None = None
        #: output channels the 1-channel head convolution is zero-padded to: None = 8 on CUDA
        #: (cuDNN has no tensor-core kernel for one output channel and falls back to a slow
        #: generic one), 1 (no padding) elsewhere. Only channel 0 is kept, so the logits and
        #: the gradients of ``head`` are those of the unpadded convolution.
        self.head_pad: int | None = None

    def forward(self, x: torch.Tensor, guidance: Sequence[torch.Tensor]) -> torch.Tensor:
        """x (B, E, K, h, w), guidance from :class:`GuidanceUpsampler` -> (B, K, 4h, 4w)."""
        B, E, K, h, w = x.shape
        t = x.transpose(1, 2).reshape(B * K, E, h, w)  # (B*K, E, h, w), class-major per image
        if self.channels_last if self.channels_last is not None else x.is_cuda:
            t = t.contiguous(memory_format=torch.channels_last)
            guidance = [g.contiguous(memory_format=torch.channels_last) for g in guidance]
        t = self.up1(t, guidance[0])
        t = self.up2(t, guidance[1])
        return self._head(t).reshape(B, K, 4 * h, 4 * w)

    def _head(self, t: torch.Tensor) -> torch.Tensor:
        """The 1-channel head, its output channels zero-padded to :attr:`head_pad`."""
        pad = self.head_pad if self.head_pad is not None else (8 if t.is_cuda else 1)
        if pad <= 1:
            return self.head(t)
        w = F.pad(self.head.weight, (0, 0, 0, 0, 0, 0, 0, pad - 1))  # (pad, cin, 3, 3)
        b = F.pad(self.head.bias, (0, pad - 1)) if self.head.bias is not None else None
        return F.conv2d(t, w, b, padding=self.head.padding)[:, :1]


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255,
                      ignore_mode: str = "mask", check: bool = True) -> torch.Tensor:
    """Per-class sigmoid binary cross-entropy on one-hot targets at label resolution.

    Args:
        logits: (B, K, h, w); bilinearly upsampled to the mask size.
        masks: (B, H, W) int64 class ids, ``ignore_index`` = ignore.
        ignore_index: the ignore id (255).
        ignore_mode: ``"mask"`` (default): ignore pixels are left out of the mean;
            ``"zero"``: the reference CAT-Seg/RSKT behaviour, ignore pixels get an all-zero
            target (negatives for every class) and count in the mean.
        check: validate the label ids (:func:`drseg.data.labels.check_label_ids`, one host
            sync); off for callers that checked them already (the training loader).

    Returns:
        scalar loss.
    """
    if ignore_mode not in ("mask", "zero"):
        raise DrsegInputError(f"model.loss_ignore: {ignore_mode!r} is not 'mask' or 'zero'")
    if masks.dim() != 3 or masks.shape[0] != logits.shape[0]:
        raise DrsegInputError(f"masks: expected (B, H, W) for {logits.shape[0]} images, got "
                              f"{tuple(masks.shape)}")
    K = logits.shape[1]
    logits = F.interpolate(logits.float(), size=masks.shape[-2:], mode="bilinear",
                           align_corners=False)
    if check:
        check_label_ids(masks, K, ignore_index, source="masks")
    valid = masks != ignore_index
    target = F.one_hot(masks.clamp(0, K - 1), K).permute(0, 3, 1, 2).float()  # (B, K, H, W)
    target = target * valid.unsqueeze(1)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if ignore_mode == "zero":
        return loss.mean()
    weight = valid.unsqueeze(1).expand_as(loss)
    return (loss * weight).sum() / (weight.sum().clamp(min=1))
