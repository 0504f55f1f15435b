"""SPSD with the frozen CLIP: prototype extraction and the zero-shot channel studies.

DR-Seg section 3.2 (prototypes, scores: :mod:`drseg.models.spsd`), Fig. 2 (per-channel masking
study), Fig. 6 and section 4.3 "Verification of SPSD" (retention of top- / bottom-ranked
channels), plus a study beyond the paper: does the SPSD score predict the masking drop?

Prototypes (section 3.2, "for each class k we collect normalized pixel features from the
corresponding ground-truth regions and sample N_p prototypes"):

- pixel features: the dense CLIP map of :func:`drseg.models.clip.dense_features` (value-only last
  block, the channels SPSD scores and slices), L2-normalised over channels, one per feature-grid
  cell; the CLIP sees the images as the model does (:func:`clip_view`: native-resolution tiles of
  the model's input size, as the training crops, or the whole image resized to it);
- ground truth to the grid: the one-hot mask is area-downsampled to (h, w)
  (``adaptive_avg_pool2d``: the fraction of each patch covered by each class, ignore pixels
  counting for no class); a patch takes the label k when k covers at least ``purity`` (> 0.5,
  so the label is the strict majority) of it, else it is left out;
- sampling: a uniform random sample of N_p of a class's labelled patch features, without
  replacement, drawn by seeded priority sampling while streaming over the split (every labelled
  feature gets a uniform key from one seeded generator in data order; a class keeps the N_p
  smallest keys). A class with fewer than N_p labelled patches keeps all of them and fills up with
  draws with replacement (reported); a class with none is reported and left out.

Zero-shot studies (no training): class scores are cosine correlations of the dense features with
the class-name prompt embeddings (Eq. 10, max over synonyms), bilinearly upsampled to the label
size, argmax; mIoU per :mod:`drseg.engine.metrics`. Restricting to a channel subset slices the
visual features and the text embeddings alike before normalising
(:func:`drseg.models.clip.correlation`). The features of the study images are computed once and
reused for every subset (the encoder never runs per channel).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from drseg.atomic import atomic_write_bytes
from drseg.data.labels import check_label_ids
from drseg.engine.metrics import confusion_matrix, summarize
from drseg.errors import DrsegInputError
from drseg.models import clip as dclip

IGNORE = 255
VIEWS = ("tiles", "resize")


# --------------------------------------------------------------------------- settings


@dataclass
class SpsdConfig:
    """The ``spsd:`` params block (prototype extraction and the studies).

    Paper profile: lambda 0.3, rho 0.5, the training split of DLRSD or iSAID, the model's CLIP
    (ViT-B/16 at 384 or ViT-L/14 at 336, from the model preset); Fig. 2 on 200 sampled images.
    """

    lam: float = 0.3              # Eq. 4 lambda (params key ``lambda``)
    rho: float = 0.5              # Eq. 5 rho of the reference split in the index file
    num_prototypes: int = 32      # N_p per class
    seed: int = 0                 # prototype sampling
    dataset: str | None = None    # training dataset; None = the suite's first source
    split: str = "train"
    class_list_variant: str = "rskt-v1"
    clip_model: str | None = None  # open_clip config; None = the model preset's backbone
    input_size: int | None = None  # square CLIP input; None = the model's image_size
    view: str = "tiles"           # tiles (native-resolution input_size tiles, as the training
                                  # crops) | resize (whole image resized, as model.forward)
    purity: float = 0.75          # patch label = class covering >= purity of the patch
    batch_size: int = 16
    num_workers: int = 0
    device: str = "cpu"           # cpu | cuda | auto
    eps: float = 1e-8             # Eq. 1-2 epsilon
    study: dict = field(default_factory=dict)  # see StudyConfig

    @classmethod
    def from_params(cls, block: dict[str, Any]) -> "SpsdConfig":
        """Build from the ``spsd:`` block, naming unknown or ill-typed keys."""
        block = dict(block)
        if "lambda" in block:
            block["lam"] = block.pop("lambda")
        cfg = cls(**_typed(cls, block, "spsd"))
        if not 0 <= cfg.lam <= 1:
            raise DrsegInputError(f"spsd.lambda: must be in [0, 1], got {cfg.lam}")
        if not 0 <= cfg.rho <= 1:
            raise DrsegInputError(f"spsd.rho: must be in [0, 1], got {cfg.rho}")
        for name in ("num_prototypes", "batch_size"):
            if getattr(cfg, name) < 1:
                raise DrsegInputError(f"spsd.{name}: must be >= 1, got {getattr(cfg, name)}")
        if cfg.input_size is not None and cfg.input_size < 1:
            raise DrsegInputError(f"spsd.input_size: must be >= 1 or null, got {cfg.input_size}")
        if not 0.5 < cfg.purity <= 1:
            raise DrsegInputError(f"spsd.purity: must be in (0.5, 1], got {cfg.purity}")
        if cfg.view not in VIEWS:
            raise DrsegInputError(f"spsd.view: expected one of {VIEWS}, got {cfg.view!r}")
        if cfg.device not in ("cpu", "cuda", "auto"):
            raise DrsegInputError(f"spsd.device: expected cpu, cuda or auto, got {cfg.device!r}")
        return cfg

    def resolve_backbone(self, model_block: dict[str, Any] | None) -> "SpsdConfig":
        """Fill ``clip_model`` / ``input_size`` left at None from the model config (the
        ``model:`` params block: ``preset`` and any ``clip_model`` / ``image_size`` override),
        so that SPSD scores the channels of the CLIP the model uses, at the input size the
        model feeds it (the model resizes every image to ``image_size``)."""
        if self.clip_model is None or self.input_size is None:
            from drseg.models.drseg import make_config

            block = dict(model_block or {})
            mcfg = make_config(block.get("preset", "tiny"),
                               {k: block[k] for k in ("clip_model", "image_size") if k in block})
            self.clip_model = self.clip_model or mcfg.clip_model
            self.input_size = self.input_size or mcfg.image_size
        return self

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise DrsegInputError("spsd.device: cuda requested but no CUDA device is available")
        return torch.device(self.device)


@dataclass
class StudyConfig:
    """The ``spsd.study:`` params block (Fig. 2, Fig. 6, score vs drop)."""

    split: str = "val"            # source split the zero-shot studies run on
    masking_images: int = 200     # Fig. 2 sample size (paper: 200); <= 0 = the whole split
    seed: int = 0                 # image sample and random channel subsets
    ratios: list = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])
    random_draws: int = 3         # random-subset reference curve in Fig. 6 (0 = off)
    map_examples: int = 2         # Fig. 2 activation-map rows
    map_fraction: float = 0.2     # channels dropped for the maps (paper: top 20%)

    @classmethod
    def from_params(cls, block: dict[str, Any]) -> "StudyConfig":
        """Build from the ``spsd.study:`` block, naming unknown or ill-typed keys."""
        cfg = cls(**_typed(cls, dict(block or {}), "spsd.study"))
        if not cfg.ratios or not all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                     and 0 < r <= 1 for r in cfg.ratios):
            raise DrsegInputError(f"spsd.study.ratios: expected numbers in (0, 1], "
                                  f"got {cfg.ratios!r}")
        if not 0 < cfg.map_fraction < 1:
            raise DrsegInputError(f"spsd.study.map_fraction: must be in (0, 1), got "
                                  f"{cfg.map_fraction}")
        for name in ("random_draws", "map_examples"):
            if getattr(cfg, name) < 0:
                raise DrsegInputError(f"spsd.study.{name}: must be >= 0")
        return cfg


def resolve_source(suite_dir: str | Path, dataset: str | None) -> tuple[Path, str]:
    """Archive root and training dataset of a prepared suite folder (``data/synth``).

    Args:
        suite_dir: the ``prepare`` stage's output (holds ``suite.json``).
        dataset: ``spsd.dataset``; None = the suite's first source (``suite.json`` "sources").

    Returns:
        (archive root, dataset name).
    """
    from drseg.data.archive import load_suite, resolve_root

    root = resolve_root(suite_dir)
    if dataset is None:
        sources = load_suite(suite_dir).get("sources") or []
        if not sources:
            raise DrsegInputError(f"{suite_dir}: suite.json lists no source dataset; set "
                                  f"spsd.dataset")
        dataset = sources[0]
    return root, dataset


def _typed(cls: type, block: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Check keys and scalar types of a params block against a dataclass's defaults."""
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for k, v in block.items():
        if k not in fields_:
            known = sorted("lambda" if n == "lam" else n for n in fields_)
            raise DrsegInputError(f"{prefix}.{k}: unknown param (known: {known})")
        f = fields_[k]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        name = f"{prefix}.{'lambda' if k == 'lam' else k}"
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif default is None and k in ("dataset", "clip_model"):
            ok = v is None or isinstance(v, str)
        elif isinstance(default, int) or (default is None and k == "input_size"):
            ok = (v is None and default is None) or (isinstance(v, int) and not isinstance(v, bool))
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            v = float(v) if ok else v
        elif isinstance(default, str):
            ok = isinstance(v, str)
        elif isinstance(default, list):
            ok = isinstance(v, list)
        elif isinstance(default, dict):
            ok = isinstance(v, dict) or v is None
            v = v or {}
        else:
            ok = True
        if not ok:
            want = type(default).__name__ if default is not None else "value or null"
            raise DrsegInputError(f"{name}: expected a {want}, got {v!r}")
        out[k] = v
    return out


# --------------------------------------------------------------------------- ground truth


def patch_labels(masks: torch.Tensor, grid: tuple[int, int], num_classes: int, purity: float,
                 ignore_index: int = IGNORE) -> torch.Tensor:
    """Bring masks to the feature grid: area-downsampled one-hot with a purity threshold.

    Args:
        masks: (B, H, W) int64, ids 0..K-1 or ``ignore_index``.
        grid: (h, w) feature grid.
        num_classes: K.
        purity: a patch is labelled k when class k covers >= ``purity`` of its area
            (0.5 < purity <= 1).
        ignore_index: label of ignored pixels (they count for no class).

    Returns:
        (B, h, w) int64, the patch label or -1 (no class pure enough).
    """
    if not 0.5 < purity <= 1:
        raise DrsegInputError(f"spsd.purity: must be in (0.5, 1], got {purity!r}")
    m = masks.long()
    check_label_ids(m, num_classes, ignore_index, source="masks")
    m = torch.where(m == ignore_index, num_classes, m)  # ignore -> extra plane K
    onehot = F.one_hot(m, num_classes + 1).permute(0, 3, 1, 2).float()  # (B, K+1, H, W)
    frac = F.adaptive_avg_pool2d(onehot, grid)[:, :num_classes]  # (B, K, h, w)
    best, label = frac.max(dim=1)  # (B, h, w)
    # a fraction of exactly `purity` may come out a hair below it in float32
    return torch.where(best >= purity - 1e-6, label, torch.full_like(label, -1))


# --------------------------------------------------------------------------- prototypes


@dataclass
class PrototypeSet:
    """Class-wise prototypes of the frozen CLIP and where they came from.

    Attributes:
        prototypes: (K_present, N_p, C) float32 L2-normalised pixel features.
        class_ids: vocabulary ids of the K_present classes (mask-id order), one per row.
        patches: (K,) labelled feature-grid cells found per vocabulary class.
        pixels: (K,) ground-truth pixels per vocabulary class (at mask resolution).
        absent: vocabulary ids with no labelled cell (left out of ``prototypes``).
        filled: vocabulary ids with fewer than N_p cells (filled with draws with replacement).
        images: number of images streamed.
        grid: (h, w) feature grid.
    """

    prototypes: torch.Tensor
    class_ids: list[int]
    patches: list[int]
    pixels: list[int]
    absent: list[int]
    filled: list[int]
    images: int
    grid: tuple[int, int]
    extra: dict = field(default_factory=dict)


def _collate(samples: Sequence[dict]) -> dict:
    """Stack images and masks of equal size; keep paths."""
    sizes = {tuple(s["mask"].shape) for s in samples}
    if len(sizes) == 1:
        return {"image": torch.stack([s["image"] for s in samples]),
                "mask": torch.stack([s["mask"] for s in samples]),
                "path": [str(s.get("path", "")) for s in samples]}
    return {"list": list(samples)}


def _iter_batches(dataset: Dataset, batch_size: int, num_workers: int):
    """Yield (images (B, 3, H, W), masks (B, H, W)) groups of equal-size samples."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate)
    for batch in loader:
        if "list" in batch:  # mixed sizes in one batch: one image at a time
            for s in batch["list"]:
                yield s["image"][None], s["mask"][None]
        else:
            yield batch["image"], batch["mask"]


def clip_view(clip_model: nn.Module, images: torch.Tensor, input_size: int | None,
              view: str = "resize") -> torch.Tensor:
    """Dense CLIP features (B, C, h, w) of 0..255 images, as the model would see them.

    Args:
        clip_model: open_clip CLIP.
        images: (B, 3, H, W) float 0..255.
        input_size: the CLIP input side S; ``None`` = the images as given.
        view: ``"resize"``: the whole image resized (bilinear) to S x S, as ``model.forward``
            does; ``"tiles"``: the image cut into non-overlapping S x S tiles at its own
            resolution (first resized up to the next multiple of S when it is not one), each a
            separate CLIP input, the tiles' grids put back together -- the view of the training
            crops, with no position-embedding interpolation.

    Returns:
        (B, C, h, w) features, not normalised; h = (S / patch) x tiles per column.
    """
    x = images.float()
    if input_size is None:
        return dclip.dense_features(clip_model, dclip.normalize_images(x))
    S = int(input_size)
    if view == "resize":
        if tuple(x.shape[-2:]) != (S, S):
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False)
        return dclip.dense_features(clip_model, dclip.normalize_images(x))
    if view != "tiles":
        raise DrsegInputError(f"spsd.view: expected one of {VIEWS}, got {view!r}")
    B, _, H, W = x.shape
    nh, nw = max(1, math.ceil(H / S - 1e-9)), max(1, math.ceil(W / S - 1e-9))
    if (H, W) != (nh * S, nw * S):
        x = F.interpolate(x, size=(nh * S, nw * S), mode="bilinear", align_corners=False)
    tiles = x.reshape(B, 3, nh, S, nw, S).permute(0, 2, 4, 1, 3, 5)  # (B, nh, nw, 3, S, S)
    tiles = tiles.reshape(B * nh * nw, 3, S, S)
    f = dclip.dense_features(clip_model, dclip.normalize_images(tiles))  # (B*nh*nw, C, g, g)
    C, g1, g2 = f.shape[1:]
    f = f.reshape(B, nh, nw, C, g1, g2).permute(0, 3, 1, 4, 2, 5)  # (B, C, nh, g1, nw, g2)
    return f.reshape(B, C, nh * g1, nw * g2)


@torch.no_grad()
def extract_prototypes(clip_model: nn.Module, dataset: Dataset, num_classes: int,
                       num_prototypes: int, seed: int, input_size: int | None = None,
                       view: str = "resize", purity: float = 0.75, batch_size: int = 16,
                       num_workers: int = 0,
                       device: str | torch.device = "cpu", progress: bool = True
                       ) -> PrototypeSet:
    """Stream the training split through the frozen CLIP and sample N_p prototypes per class.

    Args:
        clip_model: open_clip CLIP (frozen; put in eval mode here).
        dataset: yields dicts with ``image`` float (3, H, W) 0..255 and ``mask`` int64 (H, W).
        num_classes: K, size of the dataset's vocabulary.
        num_prototypes: N_p.
        seed: seed of the sampling generator.
        input_size: CLIP input size; ``None`` = as given.
        view: ``"resize"`` or ``"tiles"`` (see :func:`clip_view`).
        purity: see :func:`patch_labels`.
        batch_size: images per forward.
        num_workers: DataLoader workers (order is kept, so the result does not depend on it).
        device: where the encoder runs.
        progress: show a tqdm bar.

    Returns:
        :class:`PrototypeSet`.
    """
    if num_prototypes < 1:
        raise DrsegInputError(f"spsd.num_prototypes: must be >= 1, got {num_prototypes}")
    if len(dataset) == 0:
        raise DrsegInputError("spsd: the training split is empty")
    clip_model = clip_model.eval().to(device)
    g = torch.Generator().manual_seed(int(seed))
    keep_feat: list[torch.Tensor | None] = [None] * num_classes  # (<= N_p, C) per class
    keep_key: list[torch.Tensor | None] = [None] * num_classes  # (<= N_p,)
    patches = torch.zeros(num_classes, dtype=torch.long)
    pixels = torch.zeros(num_classes, dtype=torch.long)
    grid = None
    n_images = 0
    bar = tqdm(total=len(dataset), desc="spsd prototypes", unit="img", disable=not progress)
    for images, masks in _iter_batches(dataset, batch_size, num_workers):
        feats = clip_view(clip_model, images.to(device), input_size, view)  # (B, C, h, w)
        feats = F.normalize(feats.float(), dim=1).cpu()  # unit pixel features
        grid = tuple(feats.shape[-2:])
        labels = patch_labels(masks, grid, num_classes, purity)  # (B, h, w)
        valid_m = masks[masks != IGNORE]
        pixels += torch.bincount(valid_m.reshape(-1), minlength=num_classes)[:num_classes]
        flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])  # (B*h*w, C)
        lab = labels.reshape(-1)  # (B*h*w,)
        sel = lab >= 0
        flat, lab = flat[sel], lab[sel]
        keys = torch.rand(lab.numel(), generator=g, dtype=torch.float64)  # data order
        for k in torch.unique(lab).tolist():
            fk, kk = flat[lab == k], keys[lab == k]
            patches[k] += fk.shape[0]
            if keep_feat[k] is not None:
                fk = torch.cat([keep_feat[k], fk])
                kk = torch.cat([keep_key[k], kk])
            order = torch.sort(kk, stable=True).indices[:num_prototypes]
            keep_feat[k], keep_key[k] = fk[order], kk[order]
        n_images += images.shape[0]
        bar.update(images.shape[0])
    bar.close()

    rows, class_ids, absent, filled = [], [], [], []
    for k in range(num_classes):
        if keep_feat[k] is None:
            absent.append(k)
            continue
        fk = keep_feat[k]
        if fk.shape[0] < num_prototypes:
            extra = torch.randint(fk.shape[0], (num_prototypes - fk.shape[0],), generator=g)
            fk = torch.cat([fk, fk[extra]])
            filled.append(k)
        rows.append(fk)
        class_ids.append(k)
    if len(rows) < 2:
        raise DrsegInputError(f"spsd: only {len(rows)} class(es) have labelled patches at "
                              f"purity {purity}; Eq. 3 needs at least 2")
    return PrototypeSet(prototypes=torch.stack(rows).contiguous(),  # (K_present, N_p, C)
                        class_ids=class_ids, patches=patches.tolist(), pixels=pixels.tolist(),
                        absent=absent, filled=filled, images=n_images, grid=grid)


# --------------------------------------------------------------------------- zero-shot studies


@dataclass
class StudyFeatures:
    """Dense features of the study images, computed once.

    Attributes:
        features: list of (B_i, C, h, w) float32 batches (not normalised).
        masks: list of (B_i, H, W) int64 label batches (same grouping).
        text: (T, C) text embeddings of the vocabulary; group: (T,) class of each entry.
        num_classes: K.
        paths: image paths in order.
    """

    features: list[torch.Tensor]
    masks: list[torch.Tensor]
    text: torch.Tensor
    group: torch.Tensor
    num_classes: int
    paths: list[str]

    @property
    def channels(self) -> int:
        return int(self.text.shape[1])

    def to(self, device: str | torch.device) -> "StudyFeatures":
        """A copy with every tensor on ``device`` (the studies then run there)."""
        return StudyFeatures([f.to(device) for f in self.features],
                             [m.to(device) for m in self.masks], self.text.to(device),
                             self.group.to(device), self.num_classes, list(self.paths))


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """``min(k, n)`` distinct indices of ``range(n)``, seeded, in ascending order (``k <= 0``:
    all)."""
    if k <= 0 or k >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


@torch.no_grad()
def compute_study_features(clip_model: nn.Module, tokenizer, dataset: Dataset,
                           vocab: Sequence[str], input_size: int | None = None,
                           view: str = "resize",
                           batch_size: int = 16, num_workers: int = 0,
                           device: str | torch.device = "cpu", progress: bool = True,
                           desc: str = "spsd features") -> StudyFeatures:
    """Run the frozen encoder once over ``dataset`` and keep the dense features.

    Args:
        clip_model: open_clip CLIP; tokenizer: its tokenizer.
        dataset: yields ``image`` (3, H, W) 0..255, ``mask`` (H, W), ``path``.
        vocab: the dataset's class names in mask-id order (comma synonyms allowed).
        input_size: CLIP input size, ``None`` = as given.
        view: ``"resize"`` or ``"tiles"`` (see :func:`clip_view`).
        batch_size, num_workers, device, progress, desc: loader / run settings.

    Returns:
        :class:`StudyFeatures` on the CPU.
    """
    if len(dataset) == 0:
        raise DrsegInputError("spsd study: the evaluation split is empty")
    clip_model = clip_model.eval().to(device)
    text, group = dclip.encode_vocab(clip_model, tokenizer, vocab)
    feats, masks, paths = [], [], []
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate)
    for batch in loader:
        groups = ([(s["image"][None], s["mask"][None], [str(s.get("path", ""))])
                   for s in batch["list"]] if "list" in batch
                  else [(batch["image"], batch["mask"], batch["path"])])
        for images, m, p in groups:
            feats.append(clip_view(clip_model, images.to(device), input_size, view).float().cpu())
            masks.append(m.long())
            paths.extend(p)
            bar.update(images.shape[0])
    bar.close()
    return StudyFeatures(feats, masks, text.float().cpu(), group.cpu(), len(vocab), paths)


def zero_shot_confusion(study: StudyFeatures, channels: torch.Tensor | Sequence[int] | None = None
                        ) -> torch.Tensor:
    """Confusion matrix of zero-shot segmentation restricted to a channel subset.

    Args:
        study: features computed once (:func:`compute_study_features`).
        channels: channel indices kept in both the visual features and the text embeddings;
            ``None`` = all.

    Returns:
        (K, K) int64 confusion matrix (rows ground truth).
    """
    K = study.num_classes
    conf = torch.zeros(K, K, dtype=torch.long, device=study.text.device)
    for feats, masks in zip(study.features, study.masks):
        scores = dclip.class_correlation(feats, study.text, study.group, K, channels)  # (B,K,h,w)
        scores = F.interpolate(scores, size=masks.shape[-2:], mode="bilinear",
                               align_corners=False)  # (B, K, H, W)
        conf += confusion_matrix(scores.argmax(dim=1), masks, K)
    return conf


def zero_shot_miou(study: StudyFeatures, channels: torch.Tensor | Sequence[int] | None = None
                   ) -> float:
    """Zero-shot mIoU (percent) with a channel subset; see :func:`zero_shot_confusion`."""
    return float(summarize(zero_shot_confusion(study, channels))["mIoU"])


def retained_channels(order: Sequence[int], ratio: float, which: str) -> list[int]:
    """The channels kept at a retention ratio (Fig. 6): the first (``"top"``) or last
    (``"bottom"``) ``max(1, floor(ratio C))`` channels of ``order`` (descending score)."""
    C = len(order)
    n = max(1, min(C, int(math.floor(ratio * C + 1e-9))))
    if which == "top":
        return list(order[:n])
    if which == "bottom":
        return list(order[C - n:])
    raise ValueError(f"which must be 'top' or 'bottom', got {which!r}")


def retention_study(study: StudyFeatures, order: Sequence[int], ratios: Sequence[float],
                    random_draws: int = 0, seed: int = 0, progress: bool = True) -> list[dict]:
    """Fig. 6: zero-shot mIoU keeping only the top- or bottom-ranked channels.

    Args:
        study: features computed once.
        order: channel ids by descending SPSD score.
        ratios: retention ratios in (0, 1].
        random_draws: also evaluate this many random channel subsets of the same size per ratio
            (a reference curve beyond the paper; 0 = off).
        seed: seed of the random subsets.
        progress: show a tqdm bar.

    Returns:
        one dict per ratio: ``ratio``, ``channels`` (number kept), ``top``, ``bottom`` mIoU and,
        with ``random_draws``, ``random`` (mean) and ``random_std``.
    """
    C = len(order)
    if sorted(order) != list(range(C)) or C != study.channels:
        raise DrsegInputError(f"spsd order: expected a permutation of the {study.channels} "
                              f"channels, got {C} entries")
    g = torch.Generator().manual_seed(int(seed))
    rows = []
    for r in tqdm(list(ratios), desc="spsd retention", disable=not progress):
        if not 0 < r <= 1:
            raise DrsegInputError(f"spsd.study.ratios: {r} is not in (0, 1]")
        top = retained_channels(order, r, "top")
        row = {"ratio": float(r), "channels": len(top),
               "top": zero_shot_miou(study, top),
               "bottom": zero_shot_miou(study, retained_channels(order, r, "bottom"))}
        if random_draws > 0:
            vals = torch.tensor([zero_shot_miou(study, torch.randperm(C, generator=g)[:len(top)])
                                 for _ in range(random_draws)], dtype=torch.float64)
            row["random"] = float(vals.mean())
            row["random_std"] = float(vals.std(unbiased=False))
        rows.append(row)
    return rows


def masking_study(study: StudyFeatures, progress: bool = True) -> tuple[float, torch.Tensor]:
    """Fig. 2: mIoU drop when one channel (visual and text dimension) is masked.

    Masking channel c = removing it from both sides before the cosine, i.e. the correlation over
    the other C - 1 channels. Computed by downdating the full dot products and norms (float64):
    cos_{-c} = (f.t - f_c t_c) / sqrt((|f|^2 - f_c^2)(|t|^2 - t_c^2)), so each channel costs
    O(B T h w) instead of O(B T h w C); :func:`zero_shot_miou` with the C - 1 other channels
    is the direct (slower) computation of the same thing.

    Args:
        study: features computed once (never recomputed per channel).
        progress: show a tqdm bar.

    Returns:
        (full mIoU, (C,) float64 drops = full mIoU - mIoU without channel c; positive = the
        channel helps).
    """
    C, K = study.channels, study.num_classes
    full = zero_shot_miou(study)
    t = study.text.double()  # (T, C)
    t_sq = (t * t).sum(dim=1)  # (T,)
    cached = []
    for feats in study.features:
        f = feats.double()  # (B, C, h, w)
        cached.append((f, torch.einsum("bchw,tc->bthw", f, t), (f * f).sum(dim=1)))
    drops = torch.empty(C, dtype=torch.float64)
    for c in tqdm(range(C), desc="spsd masking", disable=not progress):
        conf = torch.zeros(K, K, dtype=torch.long, device=study.text.device)
        for (f, dot, f_sq), masks in zip(cached, study.masks):
            fc = f[:, c]  # (B, h, w)
            num = dot - fc[:, None] * t[:, c].view(1, -1, 1, 1)  # (B, T, h, w)
            f_norm = (f_sq - fc * fc).clamp_min(0).sqrt().clamp_min(1e-12)  # (B, h, w)
            t_norm = (t_sq - t[:, c] ** 2).clamp_min(0).sqrt().clamp_min(1e-12)  # (T,)
            corr = num / (f_norm[:, None] * t_norm.view(1, -1, 1, 1))  # (B, T, h, w)
            scores = dclip.reduce_synonyms(corr.float(), study.group, K)  # (B, K, h, w)
            scores = F.interpolate(scores, size=masks.shape[-2:], mode="bilinear",
                                   align_corners=False)
            conf += confusion_matrix(scores.argmax(dim=1), masks, K)
        drops[c] = full - float(summarize(conf)["mIoU"])
    return full, drops


def channel_mask_maps(study: StudyFeatures, image_index: int, class_id: int,
                      drop_sets: dict[str, Sequence[int]]) -> dict[str, list[list[float]]]:
    """Fig. 2 bottom: the correlation map of one class on one image with channel sets removed.

    Args:
        study: features computed once.
        image_index: position of the image in ``study.paths``.
        class_id: the class whose map is shown.
        drop_sets: name -> channels to remove (empty = all channels kept).

    Returns:
        name -> (h, w) map as nested lists (cosine, feature-grid resolution).
    """
    offset = image_index
    for batch in study.features:
        if offset < batch.shape[0]:
            feats = batch[offset:offset + 1]  # (1, C, h, w)
            break
        offset -= batch.shape[0]
    else:
        raise DrsegInputError(f"spsd study: image index {image_index} out of range")
    out = {}
    everything = torch.arange(study.channels)
    for name, drop in drop_sets.items():
        keep = everything[~torch.isin(everything, torch.as_tensor(list(drop), dtype=torch.long))]
        corr = dclip.class_correlation(feats, study.text, study.group, study.num_classes, keep)
        out[name] = corr[0, class_id].tolist()  # (h, w)
    return out


# --------------------------------------------------------------------------- outputs


def save_prototypes(path: str | Path, ps: PrototypeSet, meta: dict[str, Any]) -> Path:
    """Save the prototypes as a torch file (byte-identical for identical content).

    Holds ``{"format": "drseg-spsd-prototypes/1", "prototypes": (K_present, N_p, C) float32,
    "class_ids", "class_names", "patches", "pixels", "absent", "filled", "images", "grid",
    **meta}``. Serialised to memory first: ``torch.save`` names the archive after the file, so
    writing to a temp file would make the bytes depend on the temp name.
    """
    obj = {"format": "drseg-spsd-prototypes/1", "prototypes": ps.prototypes.contiguous(),
           "class_ids": list(ps.class_ids), "patches": list(ps.patches),
           "pixels": list(ps.pixels), "absent": list(ps.absent), "filled": list(ps.filled),
           "images": int(ps.images), "grid": list(ps.grid), **meta}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_prototypes(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_prototypes`, with a clear error naming it."""
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise DrsegInputError(f"{p}: prototypes file not found (run the spsd stage)") from e
    except Exception as e:  # noqa: BLE001 -- any unpickling failure is a bad file
        raise DrsegInputError(f"{p}: not a readable prototypes file ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != "drseg-spsd-prototypes/1":
        raise DrsegInputError(f"{p}: not a drseg-spsd-prototypes/1 file")
    return obj


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spearman(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor
             ) -> tuple[float, float]:
    """Spearman rank correlation and its two-sided p-value (``scipy.stats.spearmanr``)."""
    res = spearmanr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)


def map_examples(study: StudyFeatures, count: int, target_fraction: float = 0.25
                 ) -> list[tuple[int, int]]:
    """Pick ``count`` (image index, class id) pairs for the Fig. 2 activation maps: the first
    images of the study, each with the present class whose area is closest to
    ``target_fraction`` of the labelled pixels (an object class rather than the background).
    """
    out: list[tuple[int, int]] = []
    i = 0
    for masks in study.masks:
        for m in masks:
            if len(out) >= count:
                return out
            valid = m[m != IGNORE]
            if valid.numel():
                frac = torch.bincount(valid, minlength=study.num_classes).double() / valid.numel()
                present = (frac > 0).nonzero().flatten()
                k = present[(frac[present] - target_fraction).abs().argmin()]
                out.append((i, int(k)))
            i += 1
    return out


def study_mask(study: StudyFeatures, image_index: int) -> torch.Tensor:
    """The label mask (H, W) of study image ``image_index``."""
    offset = image_index
    for masks in study.masks:
        if offset < masks.shape[0]:
            return masks[offset]
        offset -= masks.shape[0]
    raise DrsegInputError(f"spsd study: image index {image_index} out of range")
