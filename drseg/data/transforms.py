"""Training augmentations and evaluation resizing of the DR-Seg benchmark protocol.

PROTOCOL.md section 1 (CAT-Seg / RSKT-Seg training recipe): random crop to the model input
(384 for ViT-B/16, 336 for ViT-L/14), images smaller than the crop padded with 128 and their
labels with the ignore id, horizontal flip, and detectron2's SSD-style colour jitter
(``ColorAugSSDTransform``: brightness +-32, contrast x[0.5, 1.5], saturation x[0.5, 1.5] and hue
+-18 (of 180) in HSV, each applied with probability 1/2, contrast first or last at random).

Evaluation: "noslide" resizes the short side to 640 (long side at most 2560) and then squashes
the whole image to the model input; "slide" resizes to a square and cuts overlapping windows
(see ``drseg.engine.evaluate``).

Everything works on tensors: images ``float32 (3, H, W)`` in 0..255 RGB, masks ``int64 (H, W)``.
Random choices come from an explicit ``torch.Generator`` so that a sample's augmentation is a
function of (seed, iteration, position) and training is reproducible and resumable.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from drseg.errors import DrsegInputError

IGNORE = 255
PAD_VALUE = 128.0

__all__ = [
    "IGNORE", "PAD_VALUE", "pad_to", "random_crop", "hflip", "rgb_to_hsv", "hsv_to_rgb",
    "ssd_color_jitter", "TrainAugment", "resize_short_side", "resize_image",
]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _coin(g: torch.Generator) -> bool:
    return bool(torch.randint(0, 2, (), generator=g).item())


def pad_to(image: torch.Tensor, mask: torch.Tensor, size: int,
           pad_value: float = PAD_VALUE, ignore_index: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right so both sides are at least ``size`` (image with 128, mask with ignore).

    Args:
        image: ``(3, H, W)`` float.
        mask: ``(H, W)`` int64.
        size: the minimum side.
    """
    h, w = mask.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=pad_value)
        mask = F.pad(mask, (0, pw, 0, ph), value=ignore_index)
    return image, mask


def random_crop(image: torch.Tensor, mask: torch.Tensor, size: int, g: torch.Generator,
                pad_value: float = PAD_VALUE, ignore_index: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``size x size`` crop at a uniformly random position, padding small images first."""
    image, mask = pad_to(image, mask, size, pad_value, ignore_index)
    h, w = mask.shape
    y = int(torch.randint(0, h - size + 1, (), generator=g))
    x = int(torch.randint(0, w - size + 1, (), generator=g))
    return image[:, y:y + size, x:x + size], mask[y:y + size, x:x + size]


def hflip(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right."""
    return image.flip(-1), mask.flip(-1)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] ``(3, H, W)`` -> HSV with hue in [0, 1), saturation and value in [0, 1]."""
    r, g, b = rgb.unbind(0)
    maxc, _ = rgb.max(0)
    minc, _ = rgb.min(0)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v]).gather(0, i[None]).squeeze(0)
    g = torch.stack([t, v, v, q, p, p]).gather(0, i[None]).squeeze(0)
    b = torch.stack([p, p, t, v, v, q]).gather(0, i[None]).squeeze(0)
    return torch.stack([r, g, b])


def ssd_color_jitter(image: torch.Tensor, g: torch.Generator, brightness_delta: float = 32.0,
                     contrast: tuple[float, float] = (0.5, 1.5),
                     saturation: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> torch.Tensor:
    """detectron2 / CAT-Seg ``ColorAugSSDTransform`` on an RGB 0..255 image.

    Brightness (add a uniform ``+-brightness_delta``), then either contrast, saturation, hue or
    saturation, hue, contrast (coin flip); each step itself applied with probability 1/2.
    Contrast multiplies every value (no mean subtraction, as in SSD); saturation scales the
    HSV saturation; hue shifts by an integer in ``[-hue_delta, hue_delta]`` on OpenCV's 0..180
    scale. Values are clipped to 0..255 after each step.

    Args:
        image: ``(3, H, W)`` float32, 0..255.
        g: the generator that makes every random choice.
    """
    def convert(img, alpha=1.0, beta=0.0):
        return (img * alpha + beta).clamp(0.0, 255.0)

    def bright(img):
        return convert(img, beta=_uniform(g, -brightness_delta, brightness_delta)) if _coin(g) else img

    def contr(img):
        return convert(img, alpha=_uniform(g, *contrast)) if _coin(g) else img

    def satur(img):
        if not _coin(g):
            return img
        hsv = rgb_to_hsv(img / 255.0)
        hsv[1] = (hsv[1] * _uniform(g, *saturation)).clamp(0.0, 1.0)
        return (hsv_to_rgb(hsv) * 255.0).clamp(0.0, 255.0)

    def hue(img):
        if not _coin(g):
            return img
        shift = int(torch.randint(-hue_delta, hue_delta + 1, (), generator=g))
        hsv = rgb_to_hsv(img / 255.0)
        hsv[0] = (hsv[0] + shift / 180.0) % 1.0
        return (hsv_to_rgb(hsv) * 255.0).clamp(0.0, 255.0)

    image = bright(image)
    if _coin(g):
        return hue(satur(contr(image)))
    return contr(hue(satur(image)))


class TrainAugment:
    """The training pipeline of one sample: crop (pad 128 / ignore), flip, SSD colour jitter.

    Args:
        crop: side of the square crop (the model input size).
        flip: apply a random horizontal flip.
        color_jitter: apply :func:`ssd_color_jitter`.
        ignore_index: label id of ignored pixels (used for padding).
    """

    def __init__(self, crop: int, flip: bool = True, color_jitter: bool = True,
                 ignore_index: int = IGNORE) -> None:
        if crop < 1:
            raise DrsegInputError(f"train.crop: must be a positive integer, got {crop}")
        self.crop, self.flip, self.color_jitter, self.ignore_index = crop, flip, color_jitter, ignore_index

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one sample; the same ``seed`` gives the same output."""
        g = torch.Generator().manual_seed(int(seed))
        image, mask = random_crop(image, mask, self.crop, g, ignore_index=self.ignore_index)
        if self.flip and _coin(g):
            image, mask = hflip(image, mask)
        if self.color_jitter:
            image = ssd_color_jitter(image, g)
        return image.contiguous(), mask.contiguous()


def resize_short_side(h: int, w: int, short: int, max_long: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge`` output size: short side ``short``, long side at most
    ``max_long`` (the test-time resize of the protocol: 640 / 2560)."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_long:
        scale = max_long / max(h, w)
    return int(math.floor(h * scale + 0.5)), int(math.floor(w * scale + 0.5))


def resize_image(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, 3, H, W)`` float images (no-op when already that size)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
