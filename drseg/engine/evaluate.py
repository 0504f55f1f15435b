"""Evaluation of a trained model on every dataset of a suite, in one process.

Two test-time modes (PROTOCOL.md section 1), each number labelled with the one that made it:

- ``noslide`` (RSKT-Seg default): resize so that the short side is ``short_side`` (long side
  at most ``max_long``), squash the whole image to the model input ``input_size`` x
  ``input_size`` regardless of aspect ratio, score, upsample the class scores to the label size,
  argmax.
- ``slide`` (CAT-Seg / OVRS default): resize to ``slide_size`` x ``slide_size``, score
  ``input_size`` windows with stride ``slide_stride`` plus one global view of the whole image,
  average the window scores where they overlap, average that with the upsampled global scores,
  upsample to the label size, argmax.

Scores are per-class sigmoids of the model's logits (CAT-Seg). The vocabulary switches per
dataset (``model(images, vocab)``). Each process scores its share of the images
(``rank::world_size``) and adds them to one ``(N, N)`` confusion matrix on its device; the
matrices are summed over processes at the end of each dataset; no prediction is kept.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from drseg.atomic import atomic_write_text
from drseg.data.dataset import SegDataset
from drseg.data.labels import check_label_ids
from drseg.data.transforms import IGNORE, resize_image, resize_short_side
from drseg.engine.distributed import DistInfo, all_reduce_sum, cuda_math
from drseg.engine.metrics import confusion_matrix_unchecked, mean_over_datasets, summarize
from drseg.errors import DrsegInputError

__all__ = ["EvalConfig", "EvalItem", "window_starts", "evaluate_dataset", "evaluate_suite",
           "write_json", "metrics_record"]

MODES = ("noslide", "slide")


@dataclasses.dataclass
class EvalConfig:
    """Evaluation params (the ``evaluate:`` block of params.yaml).

    Paper profile: input_size 384 (ViT-B/16) / 336 (ViT-L/14), short_side 640, max_long 2560,
    slide_size 640, slide_stride 256.
    """

    mode: str = "noslide"
    input_size: int = 64
    short_side: int = 640
    max_long: int = 2560
    slide_size: int = 640
    slide_stride: int = 256
    batch_size: int = 16
    num_workers: int = 0
    device: str = "cpu"
    amp: str = "auto"            # auto (bf16 on CUDA) | bf16 | off
    channels_last: bool = False  # CUDA only; measured 29% slower on H100 (reports/bench)
    compile: bool = False        # torch.compile the model (CUDA only; the stage applies it)
    tf32: bool = True            # TF32 for float32 matmuls / convolutions (CUDA only)
    cudnn_benchmark: bool = True  # cuDNN algorithm search (CUDA only)

    @classmethod
    def from_params(cls, block: Mapping[str, Any], **overrides: Any) -> "EvalConfig":
        """Build from params (unknown keys are an error naming them)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        merged = {**block, **overrides}
        bad = sorted(set(merged) - fields)
        if bad:
            raise DrsegInputError(f"evaluate: unknown params {bad} (known: {sorted(fields)})")
        cfg = cls(**merged)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.mode not in MODES:
            raise DrsegInputError(f"evaluate.mode: expected one of {MODES}, got {self.mode!r}")
        for name in ("input_size", "short_side", "max_long", "slide_size", "slide_stride", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise DrsegInputError(f"evaluate.{name}: must be a positive integer, got {v!r}")
        if self.mode == "slide" and self.slide_size < self.input_size:
            raise DrsegInputError(f"evaluate.slide_size: {self.slide_size} is smaller than the "
                                  f"window (input_size {self.input_size})")
        if self.amp not in ("auto", "bf16", "off"):
            raise DrsegInputError(f"evaluate.amp: expected auto, bf16 or off, got {self.amp!r}")
        for name in ("channels_last", "compile", "tf32", "cudnn_benchmark"):
            if not isinstance(getattr(self, name), bool):
                raise DrsegInputError(f"evaluate.{name}: expected true/false, got "
                                      f"{getattr(self, name)!r}")
        if not isinstance(self.num_workers, int) or isinstance(self.num_workers, bool) \
                or self.num_workers < 0:
            raise DrsegInputError(f"evaluate.num_workers: must be an integer >= 0, got "
                                  f"{self.num_workers!r}")


@dataclasses.dataclass
class EvalItem:
    """One dataset (one split) to evaluate.

    Args:
        name: output name, e.g. ``synth_dlrsd`` or ``synth_dlrsd_val``.
        dataset: items ``{"image": (3, H, W) float 0..255, "mask": (H, W) int64, "path"}``.
        vocab: class names in mask-id order.
        dataset_name: the dataset's catalog name.
        split: ``all``, ``val``, ...
        class_list_variant: which class list (``rskt-v1``, ...).
        in_suite_mean: counts towards the suite means (False for the source val split).
    """

    name: str
    dataset: Dataset
    vocab: Sequence[str]
    dataset_name: str
    split: str = "all"
    class_list_variant: str = "rskt-v1"
    in_suite_mean: bool = True


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``[0, size)``: ``0, stride, ...`` plus one flush with the end
    when the stride does not land there (for 640/384/256 this is CAT-Seg's 0, 256)."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


class _EvalInputs(Dataset):
    """Decodes one sample in the loader's workers and checks its labels there.

    The image goes out as uint8 (4x fewer bytes to pin and copy) and is resized on the device
    (:func:`_prepare_images`); the mask as uint8 class ids (8x fewer bytes than int64). A
    :class:`~drseg.data.dataset.SegDataset` is read through its ``load`` (uint8 arrays straight
    from the decoder, no float round trip). Label ids outside ``0..K-1`` that are not the
    ignore id raise here, naming the file, so the evaluation loop needs no host sync for them.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], num_classes: int):
        self.base, self.indices, self.num_classes = base, list(indices), num_classes

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = self.indices[i]
        if isinstance(self.base, SegDataset) and self.base.transform is None:
            image, mask = self.base.load(j)  # uint8 (H, W, 3), uint8 (H, W)
            if not image.flags.writeable:  # a read-only decoder buffer: torch wants writable
                image = image.copy()
            img = torch.from_numpy(image).permute(2, 0, 1)
            mask = torch.from_numpy(mask)
            path = str(self.base.pairs[j][0])
        else:
            s = self.base[j]
            img, mask, path = s["image"], torch.as_tensor(s["mask"]), str(s.get("path", j))
            if img.ndim != 3 or img.shape[0] != 3:
                raise DrsegInputError(f"{path}: expected a (3, H, W) image, got {tuple(img.shape)}")
            if img.dtype != torch.uint8:
                img = img.clamp(0, 255).round().to(torch.uint8)  # readers give integral 0..255 values
        check_label_ids(mask, self.num_classes, IGNORE, source=path)
        return {"image": img, "mask": mask.to(torch.uint8), "path": path}


def _collate(samples):
    sizes = {tuple(s["image"].shape) for s in samples}
    images = [s["image"] for s in samples]
    return {"image": torch.stack(images) if len(sizes) == 1 else images,
            "mask": [s["mask"] for s in samples], "path": [s["path"] for s in samples]}


#: Loader batches per model batch when workers decode: a worker hands over a quarter of a
#: batch, so the first batch is ready ~4x sooner. bench/eval_loop_probe.py (H200 host, 12
#: workers, batch 32): a 1024-image pass waited 0.59 s for its first batch, 10% of the pass.
LOADER_SPLIT = 4


def _loader_batch_size(batch_size: int, num_workers: int) -> int:
    """The loader's batch: ``batch_size`` split in up to :data:`LOADER_SPLIT` equal parts when
    workers decode (so model batches keep exactly ``batch_size`` images), else ``batch_size``."""
    if num_workers > 0:
        for parts in range(LOADER_SPLIT, 1, -1):
            if batch_size % parts == 0:
                return batch_size // parts
    return batch_size


def _model_batches(loader, size: int):
    """Consecutive loader batches merged into batches of ``size`` images (the last may be
    smaller), in order. The images stay in their loader groups (a list of ``(b, 3, H, W)``
    tensors / ``(3, H, W)`` images): :func:`_prepare_images` moves them group by group from
    pinned memory and concatenates on the device."""
    pending: list[dict] = []
    n = 0
    for b in loader:
        pending.append(b)
        n += len(b["mask"])
        if n >= size:
            yield _merge(pending)
            pending, n = [], 0
    if pending:
        yield _merge(pending)


def _merge(batches: list[dict]) -> dict:
    if len(batches) == 1:
        return batches[0]
    groups: list[torch.Tensor] = []
    for b in batches:
        groups.extend([b["image"]] if isinstance(b["image"], torch.Tensor) else b["image"])
    return {"image": groups, "mask": [m for b in batches for m in b["mask"]],
            "path": [q for b in batches for q in b["path"]]}


def _prepare_images(images: torch.Tensor | list[torch.Tensor], cfg: EvalConfig,
                    device: torch.device) -> torch.Tensor:
    """Images of a batch -> ``(B, 3, S, S)`` float on ``device``: noslide: short side to
    ``short_side`` (long side capped), then squashed to the input; slide: resized to
    ``slide_size`` squared. ``images``: one stacked ``(B, 3, H, W)`` tensor, or a list of
    ``(3, H, W)`` images and ``(b, 3, H, W)`` groups (sizes may differ between entries)."""
    groups = [images] if isinstance(images, torch.Tensor) else [im if im.ndim == 4 else im[None]
                                                                for im in images]
    out = []
    for x in groups:
        x = x.to(device, non_blocking=True).float()  # (b, 3, H, W)
        h, w = x.shape[-2:]
        if cfg.mode == "noslide":
            x = resize_image(x, resize_short_side(h, w, cfg.short_side, cfg.max_long))
            x = resize_image(x, (cfg.input_size, cfg.input_size))
        else:
            x = resize_image(x, (cfg.slide_size, cfg.slide_size))
        out.append(x)
    return out[0] if len(out) == 1 else torch.cat(out)


def _worker_init(_: int) -> None:
    """One intra-op thread per loader worker (the workers are the parallelism)."""
    torch.set_num_threads(1)


def _scores_to_labels(scores: torch.Tensor, masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Upsample ``(B, K, h, w)`` scores to each label's size and take the argmax."""
    out = []
    sizes = {tuple(m.shape) for m in masks}
    if len(sizes) == 1:  # one interpolate for the batch
        up = F.interpolate(scores, size=next(iter(sizes)), mode="bilinear", align_corners=False)
        return list(up.argmax(1))
    for s, m in zip(scores, masks):
        up = F.interpolate(s[None], size=tuple(m.shape), mode="bilinear", align_corners=False)
        out.append(up[0].argmax(0))
    return out


def _forward(model, x: torch.Tensor, vocab: list[str], cfg: EvalConfig, device: torch.device) -> torch.Tensor:
    """Sigmoid class scores ``(B, K, input, input)`` of images already at the input size."""
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    if device.type == "cuda" and cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x, vocab)
    if logits.ndim != 4 or logits.shape[0] != x.shape[0] or logits.shape[1] != len(vocab):
        raise DrsegInputError(f"model output {tuple(logits.shape)} does not match "
                              f"batch {x.shape[0]} x {len(vocab)} classes")
    logits = logits.float()
    if tuple(logits.shape[-2:]) != (cfg.input_size, cfg.input_size):
        logits = F.interpolate(logits, size=(cfg.input_size, cfg.input_size), mode="bilinear",
                               align_corners=False)
    return logits.sigmoid()


def _slide_scores(model, images: torch.Tensor, vocab, cfg: EvalConfig, device) -> torch.Tensor:
    """Slide-mode scores ``(B, K, S, S)`` of ``(B, 3, S, S)`` images (CAT-Seg's inference)."""
    b, _, s, _ = images.shape
    k = cfg.input_size
    starts = window_starts(s, k, cfg.slide_stride)
    wins = [images[:, :, y:y + k, x:x + k] for y in starts for x in starts]  # each (B, 3, k, k)
    glob = resize_image(images, (k, k))
    batch = torch.cat([torch.stack(wins, 1).flatten(0, 1), glob], 0)  # (B*W + B, 3, k, k)
    scores = _forward(model, batch, vocab, cfg, device)
    nw = len(wins)
    win_scores = scores[: b * nw].unflatten(0, (b, nw))  # (B, W, K, k, k)
    acc = torch.zeros(b, len(vocab), s, s, device=device)
    cnt = torch.zeros(1, 1, s, s, device=device)
    i = 0
    for y in starts:
        for x in starts:
            acc[:, :, y:y + k, x:x + k] += win_scores[:, i]
            cnt[:, :, y:y + k, x:x + k] += 1
            i += 1
    glob_scores = F.interpolate(scores[b * nw:], size=(s, s), mode="bilinear", align_corners=False)
    return (acc / cnt + glob_scores) / 2


@torch.inference_mode()
def evaluate_dataset(model: torch.nn.Module, dataset: Dataset, vocab: Sequence[str], cfg: EvalConfig,
                     dist_info: DistInfo | None = None, progress: bool = True, desc: str = "eval"
                     ) -> tuple[torch.Tensor, dict]:
    """Confusion matrix of ``model`` on ``dataset`` (summed over processes).

    Args:
        model: ``model(images, vocab) -> (B, K, h, w)`` logits, in eval mode on the device.
        dataset: the samples; process ``r`` of ``W`` takes indices ``r, r + W, ...``.
        vocab: the dataset's class names (``K = len(vocab)``).
        cfg: evaluation params.
        dist_info: process placement.
        progress: tqdm bar on the main process.
        desc: bar label.

    Returns:
        ``(conf, stats)``: the ``(K, K)`` int64 matrix on the device and
        ``{"images": n, "seconds": t, "images_per_s": r}`` of this process.
    """
    from tqdm.auto import tqdm

    info = dist_info or DistInfo()
    device = info.device
    vocab = list(vocab)
    if len(vocab) < 2:
        raise DrsegInputError(f"{desc}: a vocabulary of {len(vocab)} class(es) ({vocab}) cannot be "
                              "evaluated: argmax over one class is always that class; give at least 2")
    if len(dataset) == 0:
        raise DrsegInputError(f"{desc}: the dataset is empty")
    indices = range(info.rank, len(dataset), info.world_size)
    kw: dict[str, Any] = {}
    if cfg.num_workers > 0:
        kw.update(prefetch_factor=4, persistent_workers=False)
    loader = DataLoader(_EvalInputs(dataset, indices, len(vocab)),
                        batch_size=_loader_batch_size(cfg.batch_size, cfg.num_workers),
                        shuffle=False, num_workers=cfg.num_workers, collate_fn=_collate,
                        worker_init_fn=_worker_init if cfg.num_workers > 0 else None,
                        pin_memory=device.type == "cuda", **kw)
    conf = torch.zeros(len(vocab), len(vocab), dtype=torch.int64, device=device)
    model.eval()
    n = 0
    t0 = time.perf_counter()
    with cuda_math(device, cfg.tf32, cfg.cudnn_benchmark):
        for batch in tqdm(_model_batches(loader, cfg.batch_size), desc=desc, unit="batch",
                          total=math.ceil(len(indices) / cfg.batch_size),
                          disable=not (progress and info.is_main),
                          dynamic_ncols=True, leave=False):
            images = _prepare_images(batch["image"], cfg, device)
            masks = [m.to(device, non_blocking=True) for m in batch["mask"]]
            if cfg.mode == "noslide":
                scores = _forward(model, images, vocab, cfg, device)
            else:
                scores = _slide_scores(model, images, vocab, cfg, device)
            for pred, gt in zip(_scores_to_labels(scores, masks), masks):
                conf += confusion_matrix_unchecked(pred, gt, len(vocab))  # no host sync
            n += len(masks)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    secs = time.perf_counter() - t0
    all_reduce_sum(conf, info)
    return conf, {"images": n, "seconds": secs, "images_per_s": n / secs if secs > 0 else math.nan}


def metrics_record(item: EvalItem, mode: str, conf: torch.Tensor) -> dict:
    """The per-dataset metrics JSON of DESIGN.md."""
    m = summarize(conf)
    return {"dataset": item.dataset_name, "split": item.split,
            "class_list_variant": item.class_list_variant, "mode": mode,
            "classes": list(item.vocab), **m}


def _nan_to_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON (NaN as null, sorted keys off, 2-space indent), atomically."""
    return atomic_write_text(path, json.dumps(_nan_to_none(obj), indent=2, allow_nan=False) + "\n")


def evaluate_suite(model: torch.nn.Module, items: Sequence[EvalItem], cfg: EvalConfig, out_dir: str | Path,
                   *, variant: str, dist_info: DistInfo | None = None, progress: bool = True,
                   extra: Mapping[str, Any] | None = None) -> dict:
    """Evaluate every item in one process (the vocabulary switches per dataset) and write
    ``<out_dir>/<item.name>.json`` per item and ``<out_dir>/summary.json``.

    The suite means (``m-mIoU``, ``m-mACC``, ``m-fwIoU``) average the items with
    ``in_suite_mean`` (every dataset's "all" set, the source's included, as in the paper);
    the source val split goes under ``source_val``.

    Args:
        model: the model in eval mode on the device.
        items: datasets (and splits) to score.
        cfg: evaluation params.
        out_dir: metrics folder.
        variant: variant name written in the summary.
        dist_info: process placement.
        progress: tqdm bars.
        extra: more summary fields (e.g. ``train_dataset``).

    Returns:
        The summary dict (also written, on the main process only), with an unwritten
        ``_speed`` entry holding each item's images/s.
    """
    info = dist_info or DistInfo()
    out_dir = Path(out_dir)
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise DrsegInputError(f"evaluate: duplicate output names {names}")
    per, source_val, speed = {}, {}, {}
    variants = sorted({it.class_list_variant for it in items})
    for item in items:
        conf, stats = evaluate_dataset(model, item.dataset, item.vocab, cfg, info, progress, desc=item.name)
        rec = metrics_record(item, cfg.mode, conf)
        if info.is_main:
            write_json(out_dir / f"{item.name}.json", rec)
        short = {k: rec[k] for k in ("mIoU", "mACC", "fwIoU", "pACC")}
        if item.in_suite_mean:
            per[item.dataset_name] = short
        else:
            if source_val:
                raise DrsegInputError(f"evaluate: more than one split outside the suite mean "
                                      f"({next(iter(source_val.values()))['name']}, {item.name})")
            source_val = {"name": item.name, "dataset": item.dataset_name, "split": item.split, **short}
        speed[item.name] = stats
    summary = {"variant": variant, "mode": cfg.mode,
               "class_list_variant": variants[0] if len(variants) == 1 else variants,
               **dict(extra or {}), "datasets": per, **mean_over_datasets(per), "source_val": source_val}
    if info.is_main:
        write_json(out_dir / "summary.json", summary)
    summary["_speed"] = speed  # not written: timings are not reproducible
    return summary
