"""``drseg predict``: open-vocabulary segmentation of a user's own images with a trained
checkpoint and any class names.

The user names the classes at prediction time (comma synonyms: ``"facade, wall"`` is one class
scored as the max over its synonyms, done by the model); the prompt template is the paper's
``"A photo of a {} in the scene"`` unless others are given (several are averaged per synonym by
the model's text encoder). Images of any size are segmented with sliding windows at native
resolution; overlapping window scores (sigmoids, as CAT-Seg's sliding inference) are averaged.
The raster is streamed: windows are visited row by row inside column strips, and each block of
output rows is written as soon as no later window can touch it, so memory is bounded by
``K x (tile + stride) x strip width`` whatever the raster height and width.

Outputs per input ``<stem>`` in ``--out``: ``<stem>_mask.tif`` (GeoTIFF inputs; CRS and
transform kept) or ``<stem>_mask.png`` (png / jpg inputs) holding class ids 0..K-1 and 255 for
invalid pixels; ``<stem>_overlay.png`` (the image with the classes in colour and a legend);
with ``--scores``, ``<stem>_scores.tif`` (float32, one band per class, band descriptions = class
names). ``predictions.json`` lists every input with its outputs or its error.

Usage: ``python -m drseg predict IMAGES... --checkpoint CKPT_OR_RUN_ID --classes NAME ...``
(or ``python -m drseg.predict ...``); ``docs/predict.md`` has the details.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from drseg.atomic import atomic_path, atomic_write_text
from drseg.data import raster
from drseg.engine.evaluate import window_starts  # offsets as in the evaluation's slide mode
from drseg.errors import DrsegInputError

log = logging.getLogger("drseg.predict")

#: The paper's prompt (section 4.1) -- the same constant as ``drseg.models.clip``.
PAPER_TEMPLATE = "A photo of a {} in the scene"
IGNORE = 255
MAX_CLASSES = 255  # ids 0..254 fit a uint8 mask next to the ignore id 255
WHOLE_MAX = 4096  # --whole holds K x H x W scores in memory: only for ordinary images

ModelFn = Callable[[torch.Tensor, list[str]], torch.Tensor]


# --------------------------------------------------------------------------- vocabulary

def _norm_name(name: str) -> str:
    return " ".join(name.lower().split())


def validate_vocab(vocab: Sequence[str], source: str = "classes") -> list[str]:
    """Check a class list: at least one class, no empty entry or synonym, no name twice.

    Args:
        vocab: one entry per class; synonyms separated by commas.
        source: what to name in errors (the option or the file).

    Returns:
        The entries with whitespace normalised (``"facade ,wall"`` -> ``"facade, wall"``).

    Raises:
        DrsegInputError: empty list, empty entry/synonym, a name (case-insensitive) in two
            places, more than 255 classes.
    """
    if not vocab:
        raise DrsegInputError(f"{source}: empty class list")
    if len(vocab) > MAX_CLASSES:
        raise DrsegInputError(f"{source}: {len(vocab)} classes; at most {MAX_CLASSES} fit a "
                              f"uint8 mask")
    seen: dict[str, int] = {}
    out = []
    for k, entry in enumerate(vocab):
        parts = [" ".join(p.split()) for p in str(entry).split(",")]
        if not any(parts):
            raise DrsegInputError(f"{source}: class {k} is empty")
        if not all(parts):
            raise DrsegInputError(f"{source}: class {k} ({entry!r}) has an empty synonym")
        for p in parts:
            key = _norm_name(p)
            if key in seen:
                where = "twice in class" if seen[key] == k else f"in classes {seen[key]} and"
                raise DrsegInputError(f"{source}: duplicate class name {p!r} ({where} {k})")
            seen[key] = k
        out.append(", ".join(parts))
    return out


def read_class_file(path: str | Path) -> list[str]:
    """Class names from a file.

    ``.json``: a list whose items are a string (commas = synonyms) or a list of synonyms.
    Anything else: text, one class per line, commas = synonyms; blank lines and lines starting
    with ``#`` are skipped.

    Raises:
        DrsegInputError: missing / unreadable file, JSON of another shape.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DrsegInputError(f"{path}: cannot read class file ({e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DrsegInputError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, list):
            raise DrsegInputError(f"{path}: expected a JSON list of class names")
        out = []
        for k, item in enumerate(data):
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list) and all(isinstance(s, str) for s in item):
                out.append(", ".join(item))
            else:
                raise DrsegInputError(f"{path}: item {k} is neither a name nor a list of names")
        return out
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def resolve_vocab(classes: Sequence[str] | None, classes_file: str | Path | None,
                  classes_of: str | None = None) -> list[str]:
    """The class list from ``--classes-of`` (a catalog dataset, ``NAME[:VARIANT]``),
    ``--classes-file`` and ``--classes``, in that order, validated."""
    vocab: list[str] = []
    source = []
    if classes_of:
        from drseg.data import catalog

        name, _, variant = classes_of.partition(":")
        vocab += catalog.class_names(name, catalog.check_variant(variant or
                                                                 catalog.DEFAULT_VARIANT))
        source.append(f"--classes-of {classes_of}")
    if classes_file is not None:
        vocab += read_class_file(classes_file)
        source.append(str(classes_file))
    if classes:
        vocab += list(classes)
        source.append("--classes")
    return validate_vocab(vocab, " + ".join(source) or "--classes")


def resolve_templates(templates: Sequence[str] | None, templates_file: str | Path | None
                      ) -> tuple[str, ...] | None:
    """Prompt templates from the options, or ``None`` for the checkpoint's own (the paper's
    single template unless it was trained with others).

    Raises:
        DrsegInputError: a template without exactly one ``{}``, or an empty list from a file.
    """
    out = list(templates or [])
    if templates_file is not None:
        out += read_class_file(templates_file) if Path(templates_file).suffix == ".json" else [
            ln.strip() for ln in _read_lines(templates_file)]
        if not out:
            raise DrsegInputError(f"{templates_file}: no templates in the file")
    if not out:
        return None
    for t in out:
        if t.count("{}") != 1:
            raise DrsegInputError(f"templates: {t!r} must hold exactly one '{{}}' for the name")
    if len(set(out)) != len(out):
        raise DrsegInputError("templates: the same template is given twice")
    return tuple(out)


def _read_lines(path: str | Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DrsegInputError(f"{path}: cannot read ({e})") from None
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


# --------------------------------------------------------------------------- checkpoint

_RUN_ID = re.compile(r"^(runs:/)?([0-9a-f]{32})/?$")
CHECKPOINT_KEYS = ("checkpoint", "model_checkpoint", "checkpoint_path", "train.checkpoint")


def resolve_checkpoint(ref: str | Path, tracking_uri: str | None = None) -> Path:
    """A checkpoint path from a path or an MLflow run id (``<32 hex>`` or ``runs:/<id>``).

    A run is searched for a tag or param named one of ``CHECKPOINT_KEYS`` (``stages/train.py``
    tags ``checkpoint`` with the path of ``model_final.pt`` and ``checkpoint_sha256`` with its
    hash, which must still match), then for a ``.pt`` artifact. A relative path is taken
    from the project root.

    Raises:
        DrsegInputError: neither an existing file nor a known run with a checkpoint.
    """
    p = Path(ref)
    if p.is_file():
        return p
    m = _RUN_ID.match(str(ref).strip().lower())
    if not m:
        raise DrsegInputError(f"--checkpoint {ref}: no such file, and not an MLflow run id")
    run_id = m.group(2)
    import mlflow

    from drseg import tracking

    client = mlflow.MlflowClient(tracking_uri=tracking_uri or tracking.tracking_uri())
    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise DrsegInputError(f"--checkpoint {ref}: no MLflow run with this id in "
                              f"{tracking_uri or tracking.tracking_uri()} ({e})") from None
    data = {**run.data.params, **run.data.tags}
    for key in CHECKPOINT_KEYS:
        if key in data:
            cand = Path(data[key])
            if not cand.is_absolute():
                cand = tracking.project_root() / cand
            if cand.is_file():
                _check_sha(cand, data.get("checkpoint_sha256"), run_id)
                return cand
            raise DrsegInputError(f"--checkpoint {ref}: run logs checkpoint {cand}, which does "
                                  f"not exist (moved, or not pulled with dvc?)")
    try:
        arts = [a.path for a in client.list_artifacts(run_id) if a.path.endswith(".pt")]
    except Exception:
        arts = []
    if arts:
        return Path(client.download_artifacts(run_id, sorted(arts)[-1]))
    raise DrsegInputError(f"--checkpoint {ref}: run {run_id} logs no checkpoint "
                          f"(tags/params {list(CHECKPOINT_KEYS)} or a .pt artifact)")


def _check_sha(path: Path, expected: str | None, run_id: str) -> None:
    """The file a run logged must still be the one it wrote (the train stage logs
    ``checkpoint_sha256``); a retrained file at the same path is another model."""
    if not expected:
        return
    import hashlib

    with open(path, "rb") as f:
        got = hashlib.file_digest(f, "sha256").hexdigest()
    if got != expected:
        raise DrsegInputError(f"--checkpoint {run_id}: {path} changed since that run wrote it "
                              f"(sha256 {got[:12]}... != logged {expected[:12]}...); pass the "
                              f"file itself to use it anyway")


@dataclass
class Predictor:
    """A model ready for prediction and what describes it.

    Attributes:
        model: callable ``(images (B, 3, S, S) float 0..255, vocab) -> logits (B, K, h, w)``.
        input_size: the model's square input size S.
        device: where it runs.
        info: checkpoint facts for ``predictions.json`` (path, preset, iteration, dataset).
        amp: bf16 autocast (on by default on CUDA, off on the CPU).
    """

    model: ModelFn
    input_size: int
    device: torch.device
    info: dict[str, Any] = field(default_factory=dict)
    amp: bool = False


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise DrsegInputError(f"--device {device}: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise DrsegInputError(f"--device {device}: no CUDA device on this machine")
    return d


def infer_preset(model_cfg: dict) -> str | None:
    """The model preset a checkpoint's config was made from: the first of
    :data:`drseg.models.drseg.PRESETS` whose every key it matches, else ``None``."""
    from drseg.models.drseg import PRESETS

    def _norm(v: Any) -> Any:  # tuples from presets vs lists from a saved dict
        if isinstance(v, (list, tuple)):
            return [_norm(x) for x in v]
        if isinstance(v, dict):
            return {k: _norm(x) for k, x in v.items()}
        return v

    for name, keys in PRESETS.items():
        if all(k in model_cfg and _norm(model_cfg[k]) == _norm(v) for k, v in keys.items()):
            return name
    return None


def load_predictor(checkpoint: str | Path, device: str = "auto", preset: str | None = None,
                   templates: Sequence[str] | None = None,
                   tracking_uri: str | None = None, amp: bool | None = None) -> Predictor:
    """Load a trained ``drseg-model/1`` checkpoint for prediction. The model is rebuilt from
    the checkpoint alone (its ``model_cfg`` with the CLIP / prior weight paths dropped, then
    its ``state_dict`` loaded strictly), so no other file is needed.

    Args:
        checkpoint: a path, or an MLflow run id of a training run.
        device: ``auto`` | ``cpu`` | ``cuda[:i]``.
        preset: when given, the checkpoint must come from this model preset (every key of
            ``PRESETS[preset]`` must match its config).
        templates: prompt templates replacing the checkpoint's (averaged per synonym).
        tracking_uri: MLflow store for run ids (default: the project's).
        amp: bf16 autocast; ``None``: on for CUDA, off for the CPU.

    Raises:
        DrsegInputError: unreadable / foreign checkpoint, another preset, weights that do not
            fit the model its config describes.
    """
    from drseg.engine import checkpoint as ckpt_mod
    from drseg.models.drseg import PRESETS

    path = resolve_checkpoint(checkpoint, tracking_uri)
    dev = pick_device(device)
    ckpt = ckpt_mod.load_model_checkpoint(path, map_location="cpu")
    cfg_dict = dict(ckpt["model_cfg"])
    got = infer_preset(cfg_dict)
    if preset is not None:
        if preset not in PRESETS:
            raise DrsegInputError(f"--preset {preset}: not one of {sorted(PRESETS)}")
        if got != preset:
            raise DrsegInputError(
                f"{path}: checkpoint of model preset {got or 'custom'!r}, not {preset!r} "
                f"(--preset); e.g. clip_model {cfg_dict.get('clip_model')!r}, image_size "
                f"{cfg_dict.get('image_size')!r}")
    if templates is not None:
        cfg_dict["templates"] = list(templates)
    model = _build_model(cfg_dict, ckpt, path)
    model.eval().to(dev)
    info = {"checkpoint": str(path), "preset": got, "iteration": ckpt.get("iteration"),
            "train_dataset": ckpt.get("train_dataset"),
            "templates": list(model.cfg.templates)}
    return Predictor(model=model, input_size=int(model.cfg.image_size), device=dev, info=info,
                     amp=(dev.type == "cuda") if amp is None else bool(amp))


def _build_model(cfg_dict: dict, ckpt: dict, path: Path) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (strict). Weight files
    named in the config are not read: the state dict holds every weight."""
    from drseg.engine.checkpoint import load_state_dict_checked
    from drseg.models.drseg import ModelConfig, build_model

    cfg_dict = {**cfg_dict, "clip_checkpoint": None, "prior_checkpoint": None}
    try:
        cfg = ModelConfig.from_dict(cfg_dict)
    except (TypeError, DrsegInputError) as e:
        raise DrsegInputError(f"{path}: model_cfg does not fit this drseg version ({e})") from None
    with torch.random.fork_rng(devices=[]):  # random init, overwritten by the state dict
        model = build_model(cfg, channel_index=ckpt.get("channel_index"))
    load_state_dict_checked(model, ckpt["state_dict"], path)
    return model


# --------------------------------------------------------------------------- tiling

def _check_tiles(tile: int, stride: int) -> None:
    if tile < 1 or stride < 1 or stride > tile:
        raise DrsegInputError(f"tile {tile} / stride {stride}: need 1 <= stride <= tile "
                              f"(a larger stride leaves gaps)")


def column_strips(width: int, xs: Sequence[int], tile_w: int, max_width: int
                  ) -> list[tuple[int, int, list[int]]]:
    """Split the output columns into strips ``[c0, c1)`` of at most ``max_width`` (a multiple
    of the GeoTIFF block), each with the window starts that touch it. Windows straddling a
    border are run in both strips; the result is the same as without strips."""
    if width <= max_width:
        return [(0, width, list(xs))]
    step = max(raster.BLOCK, (max_width // raster.BLOCK) * raster.BLOCK)
    out = []
    for c0 in range(0, width, step):
        c1 = min(width, c0 + step)
        out.append((c0, c1, [x for x in xs if x < c1 and x + tile_w > c0]))
    return out


class Source(Protocol):
    """What the tiler reads: :class:`drseg.data.raster.RasterReader` or :class:`ArraySource`."""

    height: int
    width: int

    def read_rgb(self, row: int, col: int, h: int, w: int) -> np.ndarray: ...

    def read_valid(self, row: int, col: int, h: int, w: int) -> np.ndarray | None: ...


class ArraySource:
    """An in-memory ``(3, H, W)`` 0..255 image as a tiler source."""

    def __init__(self, image: np.ndarray | torch.Tensor) -> None:
        a = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if a.ndim != 3 or a.shape[0] != 3:
            raise DrsegInputError(f"image: expected (3, H, W), got {tuple(a.shape)}")
        self.image = a.astype(np.float32)
        self.height, self.width = a.shape[1:]

    def read_rgb(self, row: int, col: int, h: int, w: int) -> np.ndarray:
        return self.image[:, row:row + h, col:col + w]

    def read_valid(self, row: int, col: int, h: int, w: int) -> None:
        return None


class _RowBuffer:
    """Collects finished rows of one strip and writes them to a sink in whole GeoTIFF block
    rows (so compressed blocks are written once)."""

    def __init__(self, sink: Any, col: int) -> None:
        self.sink, self.col = sink, col
        self.parts: list[np.ndarray] = []
        self.row = 0  # first row not yet written
        self.rows = 0

    def add(self, array: np.ndarray) -> None:  # (C, h, w)
        self.parts.append(array)
        self.rows += array.shape[1]
        if self.rows >= raster.BLOCK:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.parts:
            return
        a = np.concatenate(self.parts, axis=1)  # (C, rows, w)
        n = a.shape[1] if final else (a.shape[1] // raster.BLOCK) * raster.BLOCK
        if n:
            self.sink.write(a[:, :n], self.row, self.col)
        self.row += n
        self.parts = [a[:, n:]] if n < a.shape[1] else []
        self.rows = a.shape[1] - n

    def close(self) -> None:
        self._flush(final=True)


@dataclass
class TileSettings:
    """Sliding-window settings.

    Attributes:
        tile: window side in input pixels (default: the model input size).
        stride: step between windows (default: 2/3 of the tile, CAT-Seg's 256 for 384).
        batch_size: windows per forward pass.
        max_strip_width: widest column strip held in memory (rounded down to 256 px).
    """

    tile: int
    stride: int
    batch_size: int = 4
    max_strip_width: int = 8192


def default_stride(tile: int) -> int:
    """2/3 of the tile (an overlap of 1/3), as CAT-Seg's 384 / 256 windows."""
    return max(1, int(round(tile * 2 / 3)))


@torch.no_grad()
def window_scores(predictor: Predictor, crops: torch.Tensor, vocab: list[str],
                  to_cpu: bool = True) -> torch.Tensor:
    """Class scores of a batch of windows at window resolution.

    Each ``(th, tw)`` window is resized (bilinear) to the model input ``S x S`` when it differs,
    the logits go through a sigmoid and are resized back to ``(th, tw)``.

    Args:
        predictor: the model.
        crops: ``(B, 3, th, tw)`` 0..255 (float or uint8), on the CPU or the model's device.
        vocab: the class entries.
        to_cpu: return the scores on the CPU (else on the model's device).

    Returns:
        ``(B, K, th, tw)`` float32 scores in 0..1.
    """
    b, _, th, tw = crops.shape
    s = predictor.input_size
    x = crops.to(predictor.device).float()
    if (th, tw) != (s, s):
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)  # (B, 3, S, S)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=predictor.amp):
        logits = predictor.model(x, vocab)  # (B, K, h, w)
    if logits.dim() != 4 or logits.shape[0] != b or logits.shape[1] != len(vocab):
        raise RuntimeError(f"model returned {tuple(logits.shape)} for {b} windows and "
                           f"{len(vocab)} classes")
    probs = logits.float().sigmoid()
    if probs.shape[-2:] != (th, tw):
        probs = F.interpolate(probs, size=(th, tw), mode="bilinear", align_corners=False)
    return probs.cpu() if to_cpu else probs  # (B, K, th, tw)


def count_windows(height: int, width: int, tiles: TileSettings) -> int:
    """Number of forward windows :func:`predict_source` runs (strip duplicates included)."""
    th, tw = min(tiles.tile, height), min(tiles.tile, width)
    ys = window_starts(height, th, tiles.stride)
    xs = window_starts(width, tw, tiles.stride)
    return len(ys) * sum(len(s[2]) for s in column_strips(width, xs, tw, tiles.max_strip_width))


def predict_source(predictor: Predictor, source: Source, vocab: list[str], tiles: TileSettings,
                   mask_sink: Any, score_sink: Any | None = None,
                   progress: Any | None = None) -> np.ndarray:
    """Streamed sliding-window prediction of a whole source into sinks.

    Windows of ``min(tile, H) x min(tile, W)`` start every ``stride`` pixels (the last one
    flush with the border); their sigmoid scores are summed into an accumulator that holds
    only the rows the current window row touches, of one column strip; rows that no later
    window reaches are divided by their window count, argmaxed (ties: lowest id) and written.
    The accumulator, the window crops and the argmax live on the model's device (a GPU does
    the per-window work; only finished rows come back to the host).

    Args:
        predictor: the model.
        source: the image (:class:`~drseg.data.raster.RasterReader` or :class:`ArraySource`).
        vocab: class entries (K of them).
        tiles: window settings.
        mask_sink: ``write(array (1, h, w) uint8, row, col)``; ids 0..K-1, 255 = invalid pixel.
        score_sink: optional ``write(array (K, h, w) float32, row, col)``.
        progress: optional tqdm-like object, ``update(n)`` per window.

    Returns:
        ``int64 (K + 1,)`` pixel counts per class id, the last entry for invalid pixels.
    """
    H, W = source.height, source.width
    K = len(vocab)
    _check_tiles(tiles.tile, tiles.stride)
    th, tw = min(tiles.tile, H), min(tiles.tile, W)
    ys = window_starts(H, th, tiles.stride)
    xs = window_starts(W, tw, tiles.stride)
    hist = np.zeros(K + 1, np.int64)
    dev = predictor.device
    for c0, c1, sx in column_strips(W, xs, tw, tiles.max_strip_width):
        a0, a1 = sx[0], sx[-1] + tw  # accumulator columns [a0, a1) contain [c0, c1)
        acc = torch.zeros(K, 0, a1 - a0, device=dev)  # (K, rows, cols): rows [top, top + rows)
        cnt = torch.zeros(0, a1 - a0, device=dev)
        top = 0
        mask_buf = _RowBuffer(mask_sink, c0)
        score_buf = _RowBuffer(score_sink, c0) if score_sink is not None else None

        def finish(n: int) -> None:
            """Write the first ``n`` accumulator rows (final) and drop them."""
            nonlocal acc, cnt, top
            s = acc[:, :n, c0 - a0:c1 - a0] / cnt[:n, c0 - a0:c1 - a0]  # (K, n, c1 - c0)
            ids = s.argmax(0).to(torch.uint8).cpu().numpy()  # (n, c1 - c0)
            valid = source.read_valid(top, c0, n, c1 - c0)
            if valid is not None:
                ids[~valid] = IGNORE
            hist[:K] += np.bincount(ids[ids != IGNORE].ravel(), minlength=K)[:K]
            hist[K] += int((ids == IGNORE).sum())
            mask_buf.add(ids[None])
            if score_buf is not None:
                sc = s.float().cpu().numpy()
                if valid is not None:
                    sc[:, ~valid] = np.nan
                score_buf.add(sc)
            acc, cnt, top = acc[:, n:], cnt[n:], top + n

        for y in ys:
            if y > top:
                finish(y - top)
            grow = y + th - top - acc.shape[1]
            if grow > 0:
                acc = torch.cat([acc, torch.zeros(K, grow, a1 - a0, device=dev)], 1)
                cnt = torch.cat([cnt, torch.zeros(grow, a1 - a0, device=dev)], 0)
            band = torch.from_numpy(np.ascontiguousarray(
                source.read_rgb(y, a0, th, a1 - a0))).to(dev)  # (3, th, a1 - a0)
            r = y - top
            for i in range(0, len(sx), tiles.batch_size):
                xb = sx[i:i + tiles.batch_size]
                crops = torch.stack([band[:, :, x - a0:x - a0 + tw] for x in xb])  # (B,3,th,tw)
                probs = window_scores(predictor, crops, vocab, to_cpu=False)  # (B, K, th, tw)
                for x, p in zip(xb, probs):
                    acc[:, r:r + th, x - a0:x - a0 + tw] += p
                    cnt[r:r + th, x - a0:x - a0 + tw] += 1
                if progress is not None:
                    progress.update(len(xb))
        finish(H - top)
        mask_buf.close()
        if score_buf is not None:
            score_buf.close()
    return hist


class _ArraySink:
    def __init__(self, count: int, height: int, width: int, dtype: Any) -> None:
        self.array = np.zeros((count, height, width), dtype)

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        c, h, w = array.shape
        self.array[:, row:row + h, col:col + w] = array


def predict_array(predictor: Predictor, image: np.ndarray | torch.Tensor, vocab: list[str],
                  tiles: TileSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """In-memory prediction of one ``(3, H, W)`` 0..255 image (same code path as files).

    Args:
        predictor: the model.
        image: ``(3, H, W)`` RGB 0..255.
        vocab: class entries.
        tiles: window settings; default one window per model input with 1/3 overlap.

    Returns:
        ``(ids (H, W) uint8, scores (K, H, W) float32)``.
    """
    src = ArraySource(image)
    if tiles is None:
        tiles = TileSettings(predictor.input_size, default_stride(predictor.input_size))
    mask = _ArraySink(1, src.height, src.width, np.uint8)
    scores = _ArraySink(len(vocab), src.height, src.width, np.float32)
    predict_source(predictor, src, vocab, tiles, mask, scores)
    return mask.array[0], scores.array


# --------------------------------------------------------------------------- overlay

def palette(k: int) -> np.ndarray:
    """``uint8 (k, 3)`` distinct colours: matplotlib's tab20, then golden-ratio hues."""
    import colorsys

    import matplotlib

    base = [tuple(int(round(255 * c)) for c in matplotlib.colormaps["tab20"](i)[:3])
            for i in range(20)]
    base = base[0::2] + base[1::2]  # the saturated ten first
    out = base[:k]
    for i in range(len(out), k):
        h = (i * 0.618033988749895) % 1.0
        out.append(tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, 0.75, 0.9)))
    return np.array(out, np.uint8).reshape(k, 3)


def write_overlay(path: str | Path, image: np.ndarray, ids: np.ndarray, vocab: Sequence[str],
                  fractions: Sequence[float], alpha: float = 0.5, title: str | None = None
                  ) -> Path:
    """The image with each class blended in its colour, and a legend of the class names with
    their share of the valid pixels; invalid pixels (id 255) are left uncoloured.

    Args:
        path: output png (written atomically, byte-identical across reruns).
        image: ``uint8 (h, w, 3)`` preview of the image.
        ids: ``uint8 (h, w)`` mask at the preview size.
        vocab: class entries (legend labels).
        fractions: per-class share of the valid pixels, 0..1.
        alpha: colour opacity.
        title: optional title above the image.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = palette(len(vocab))
    lut = np.zeros((256, 3), np.float32)
    lut[:len(vocab)] = colours
    valid = ids != IGNORE
    blend = image.astype(np.float32)
    blend[valid] = (1 - alpha) * blend[valid] + alpha * lut[ids[valid]]
    blend = blend.round().clip(0, 255).astype(np.uint8)
    h, w = ids.shape
    scale = max(1.0, 512 / max(h, w))  # small images are shown at least 512 px
    dpi = 100
    fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(blend, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(facecolor=colours[k] / 255, edgecolor="black", linewidth=0.5,
                     label=f"{k}: {name} ({100 * fractions[k]:.1f}%)")
               for k, name in enumerate(vocab)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize=10, ncol=max(1, math.ceil(len(vocab) / 40)), borderaxespad=0.0)
    if title:
        ax.set_title(title, fontsize=10)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1,
                        metadata={"Software": None}, facecolor="white")
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- files

def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Inputs in the order given; a folder contributes its image files (png, jpg, jpeg, tif,
    tiff; not recursive), sorted by name. A path that does not exist is kept so that its
    error is reported with the others."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and raster.is_image_path(q))
        else:
            out.append(p)
    return out


def output_paths(src: Path, out_dir: Path, scores: bool) -> dict[str, Path]:
    """Output files of one input: mask (``.tif`` for GeoTIFF inputs, else ``.png``),
    overlay and, with ``scores``, the score maps."""
    ext = ".tif" if src.suffix.lower() in raster.GEOTIFF_SUFFIXES else ".png"
    out = {"mask": out_dir / f"{src.stem}_mask{ext}", "overlay": out_dir / f"{src.stem}_overlay.png"}
    if scores:
        out["scores"] = out_dir / f"{src.stem}_scores.tif"
    return out


def predict_file(predictor: Predictor, path: str | Path, vocab: list[str], out_dir: str | Path,
                 tiles: TileSettings | None = None, scores: bool = False,
                 bands: Sequence[int] | None = None, whole: bool = False,
                 overlay_max_size: int = 2048, progress_bar: bool = True) -> dict[str, Any]:
    """Predict one image file and write its outputs (see the module docstring).

    Args:
        predictor: the model.
        path: png / jpg / tif image.
        vocab: class entries.
        out_dir: output folder.
        tiles: window settings (default: model input size, 1/3 overlap).
        scores: also write the per-class score maps.
        bands: 1-based band indexes (1 or 3), see :mod:`drseg.data.raster`.
        whole: one window over the whole image, resized to the model input ("noslide").
        overlay_max_size: long side of the overlay preview.
        progress_bar: show a tqdm bar over the windows.

    Returns:
        A record for ``predictions.json``: input, size, band rule, outputs, class fractions.

    Raises:
        DrsegInputError: unreadable / non-image file, unsupported bands. Outputs already at
            the target paths are kept unless the new ones are complete.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not raster.is_image_path(path):
        raise DrsegInputError(f"{path}: not an image file (expected one of "
                              f"{', '.join(raster.IMAGE_SUFFIXES)})")
    tiles = tiles or TileSettings(predictor.input_size, default_stride(predictor.input_size))
    outs = output_paths(path, out_dir, scores)
    with raster.bounded_cache(), raster.open_raster(path, bands=bands) as src:
        H, W = src.height, src.width
        if whole:
            if max(H, W) > WHOLE_MAX:
                raise DrsegInputError(f"{path}: {W}x{H} is too large for --whole (one window "
                                      f"of at most {WHOLE_MAX} px a side); use windows")
            tiles = TileSettings(max(H, W), max(H, W), tiles.batch_size, max(H, W) + raster.BLOCK)
        geo = outs["mask"].suffix == ".tif"
        if geo:
            colours = palette(len(vocab))
            mask_sink = raster.GeoTiffWriter(
                outs["mask"], H, W, 1, "uint8", src.crs, src.transform, nodata=IGNORE,
                descriptions=["class id"],
                colormap={k: colours[k] for k in range(len(vocab))} | {IGNORE: (0, 0, 0)},
                tags={f"CLASS_{k}": name for k, name in enumerate(vocab)})
        else:
            mask_sink = raster.ArrayWriter(outs["mask"], H, W)
        score_sink = None
        sinks = [mask_sink]
        try:
            if scores:
                score_sink = raster.GeoTiffWriter(outs["scores"], H, W, len(vocab), "float32",
                                                  src.crs, src.transform, nodata=float("nan"),
                                                  descriptions=vocab)
                sinks.append(score_sink)
            n = count_windows(H, W, tiles)
            with tqdm(total=n, unit="tile", desc=path.name, disable=not progress_bar or None,
                      leave=False) as bar:
                hist = predict_source(predictor, src, vocab, tiles, mask_sink, score_sink, bar)
        except BaseException:
            for s in sinks:
                s.abort()
            raise
        for s in sinks:
            s.commit()
        preview = src.read_preview(overlay_max_size)
        band_rule = src.band_rule
        georef = {"crs": src.crs.to_string() if src.crs else None,
                  "transform": list(src.transform)[:6]} if src.is_georeferenced else None
    with raster.bounded_cache():
        ids = raster.read_mask_preview(outs["mask"], overlay_max_size)
    valid = max(1, int(hist[:-1].sum()))
    fractions = [float(c) / valid for c in hist[:-1]]
    write_overlay(outs["overlay"], preview, ids, vocab, fractions, title=path.name)
    return {
        "input": str(path), "status": "ok", "height": H, "width": W, "bands": band_rule,
        "georeference": georef, "windows": n, "tile": tiles.tile, "stride": tiles.stride,
        "outputs": {k: str(v) for k, v in outs.items()},
        "class_fraction": {name: round(f, 6) for name, f in zip(vocab, fractions)},
        "invalid_pixels": int(hist[-1]),
    }


def predict_paths(predictor: Predictor, inputs: Sequence[str | Path], vocab: list[str],
                  out_dir: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`predict_file` over many inputs; an input that fails is recorded with its error
    (and logged) and the others still run. Two inputs with the same stem would overwrite each
    other's outputs: the later ones fail."""
    records = []
    stems: dict[str, Path] = {}
    for p in collect_inputs(inputs):
        try:
            if p.stem in stems:
                raise DrsegInputError(f"{p}: same file name stem as {stems[p.stem]}; its "
                                      f"outputs would overwrite the other's")
            stems[p.stem] = p
            rec = predict_file(predictor, p, vocab, out_dir, **kwargs)
            log.info("%s: done (%s)", p, ", ".join(rec["outputs"].values()))
        except DrsegInputError as e:
            log.error("%s", e)
            rec = {"input": str(p), "status": "error", "error": str(e)}
        except Exception as e:  # e.g. a file whose header reads but whose pixels do not
            log.exception("%s: failed", p)
            rec = {"input": str(p), "status": "error", "error": f"{p}: {type(e).__name__}: {e}"}
        records.append(rec)
    return records


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``predict`` options (shared by ``python -m drseg predict`` and
    ``python -m drseg.predict``)."""
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="png / jpg / tif files, or folders of them")
    parser.add_argument("-c", "--checkpoint", required=True,
                        help="trained model (model_final.pt) or the MLflow run id of its training run")
    parser.add_argument("--classes", nargs="+", metavar="NAME",
                        help='class names, one argument per class; commas give synonyms '
                             '("tree, forest")')
    parser.add_argument("--classes-file", metavar="FILE",
                        help="class names: .txt one per line, or .json list (commas = synonyms)")
    parser.add_argument("--classes-of", metavar="DATASET[:VARIANT]",
                        help="the class list of a catalog dataset (e.g. Potsdam, "
                             "LoveDA:segearth-ov)")
    parser.add_argument("-o", "--out", default="predictions", help="output folder [%(default)s]")
    parser.add_argument("--templates", nargs="+", metavar="TEMPLATE",
                        help="prompt templates with '{}' for the name, averaged "
                             f"[the checkpoint's; the paper's: '{PAPER_TEMPLATE}']")
    parser.add_argument("--templates-file", metavar="FILE", help="templates, one per line")
    parser.add_argument("--tile", type=int, help="window side in pixels [model input size]")
    parser.add_argument("--stride", type=int, help="window step [2/3 of the tile]")
    parser.add_argument("--whole", action="store_true",
                        help="one window: the whole image resized to the model input "
                             "(the evaluation's 'noslide'); for ordinary-sized images")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward [%(default)s]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] [%(default)s]")
    parser.add_argument("--fp32", action="store_true",
                        help="no bf16 autocast on the GPU (the CPU always runs fp32)")
    parser.add_argument("--scores", action="store_true",
                        help="also write <stem>_scores.tif, one float32 band per class")
    parser.add_argument("--bands", type=int, nargs="+", metavar="B",
                        help="1-based bands to use as RGB (3) or as grey (1) [see docs]")
    parser.add_argument("--preset", help="refuse a checkpoint of another model preset")
    parser.add_argument("--overlay-max-size", type=int, default=2048,
                        help="long side of the overlay png [%(default)s]")
    parser.add_argument("--max-strip-width", type=int, default=8192,
                        help="widest column strip held in memory [%(default)s]")
    parser.add_argument("--tracking-uri", help="MLflow store for run ids [the project's mlflow.db]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``predict`` from parsed options; returns the exit code (0 all ok, 1 some input
    failed, 2 bad options / checkpoint / class list)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        vocab = resolve_vocab(args.classes, args.classes_file, args.classes_of)
        templates = resolve_templates(args.templates, args.templates_file)
        for name in ("tile", "stride", "batch_size", "overlay_max_size", "max_strip_width"):
            v = getattr(args, name)
            if v is not None and v < 1:
                raise DrsegInputError(f"--{name.replace('_', '-')} {v}: must be >= 1")
        predictor = load_predictor(args.checkpoint, args.device, args.preset, templates,
                                   args.tracking_uri, amp=False if args.fp32 else None)
    except DrsegInputError as e:
        log.error("%s", e)
        return 2
    tile = args.tile or predictor.input_size
    tiles = TileSettings(tile, args.stride or default_stride(tile), args.batch_size,
                         args.max_strip_width)
    if tiles.stride > tiles.tile:
        log.error("--stride %d > --tile %d would leave gaps", tiles.stride, tiles.tile)
        return 2
    log.info("model %s on %s; %d classes; windows %d px every %d px",
             predictor.info.get("checkpoint"), predictor.device, len(vocab), tiles.tile, tiles.stride)
    records = predict_paths(predictor, args.inputs, vocab, args.out, tiles=tiles,
                            scores=args.scores, bands=args.bands, whole=args.whole,
                            overlay_max_size=args.overlay_max_size,
                            progress_bar=not args.no_progress)
    summary = {"model": predictor.info, "classes": vocab, "device": str(predictor.device),
               "images": records}
    atomic_write_text(Path(args.out) / "predictions.json", json.dumps(summary, indent=2) + "\n")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        log.error("%d of %d inputs failed: %s", len(failed), len(records),
                  ", ".join(r["input"] for r in failed))
        return 1
    if not records:
        log.error("no image found in %s", " ".join(map(str, args.inputs)))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drseg.predict``."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="drseg predict", description=__doc__.split("\n\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
