"""Report figures from plain arrays: training curves, per-class IoU, the paper's Fig. 7
(class-wise correlation maps, original CLIP branch vs refined branch) and Fig. 5 (qualitative
comparison: image, ground truth, CAT-Seg-style baseline, holistic-fusion baseline, DR-Seg).

Every function takes numbers or arrays (never a model) and writes ``<stem>.png`` and
``<stem>.pdf`` with matplotlib's Agg backend, metadata stripped so reruns are byte-identical
(DESIGN.md "Figures").
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from drseg.errors import DrsegInputError  # noqa: E402

IGNORE = 255


def save_figure(fig: "plt.Figure", stem: str | Path, dpi: int = 120) -> tuple[Path, Path]:
    """Save ``<stem>.png`` and ``<stem>.pdf`` byte-reproducibly and close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    with plt.rc_context({"svg.hashsalt": "drseg", "pdf.compression": 6}):
        fig.savefig(png, dpi=dpi, metadata={"Software": None})
        fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return png, pdf


def read_loss_curve(path: str | Path) -> tuple[list[int], list[float]]:
    """Read the train stage's ``iteration,loss,lr`` CSV.

    Raises:
        DrsegInputError: the file is missing or lacks the columns.
    """
    p = Path(path)
    if not p.is_file():
        raise DrsegInputError(f"{p}: loss curve not found")
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"iteration", "loss"} <= set(rows[0]):
        raise DrsegInputError(f"{p}: expected columns iteration,loss (got {list(rows[0])})")
    try:
        return [int(r["iteration"]) for r in rows], [float(r["loss"]) for r in rows]
    except ValueError as e:
        raise DrsegInputError(f"{p}: bad number in loss curve ({e})") from e


def plot_training_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
                         stem: str | Path, *, title: str = "Training loss",
                         highlight: str | None = None, smooth: int = 1) -> tuple[Path, Path]:
    """Training-loss curves of several variants on one axis.

    Args:
        curves: ``{variant: (iterations, losses)}``.
        stem: output path without suffix.
        title: axis title.
        highlight: a variant drawn thicker (the full model).
        smooth: moving-average window in points (1 = raw).
    """
    if not curves:
        raise DrsegInputError("plot_training_curves: no curves given")
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("tab20")
    for i, (name, (it, loss)) in enumerate(sorted(curves.items())):
        y = np.asarray(loss, dtype=np.float64)
        x = np.asarray(it)
        if smooth > 1 and len(y) >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")  # (n - smooth + 1,)
            x = x[smooth - 1:]
        hl = name == highlight
        ax.plot(x, y, label=name, color="black" if hl else cmap(i % 20),
                lw=2.2 if hl else 1.0, ls="--" if hl else "-", zorder=3 if hl else 2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(curves) > 8 else 1, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, stem)


def read_class_iou(metrics_dir: str | Path, variant: str,
                   datasets: Sequence[str]) -> dict[str, tuple[list[str], list[float | None]]]:
    """Per-class IoU of one variant from ``<metrics_dir>/<variant>/<dataset>.json``."""
    out = {}
    for d in datasets:
        p = Path(metrics_dir) / variant / f"{d}.json"
        if not p.is_file():
            raise DrsegInputError(f"{p}: per-dataset metrics not found")
        m = json.loads(p.read_text())
        for k in ("classes", "IoU"):
            if not isinstance(m.get(k), list):
                raise DrsegInputError(f"{p}: missing list '{k}'")
        if len(m["classes"]) != len(m["IoU"]):
            raise DrsegInputError(f"{p}: {len(m['classes'])} classes but {len(m['IoU'])} IoU values")
        out[d] = (list(m["classes"]), list(m["IoU"]))
    return out


def write_class_iou_csv(per_dataset: Mapping[str, tuple[Sequence[str], Sequence[float | None]]],
                        path: str | Path) -> Path:
    """Per-class IoU as a ``dvc plots`` source: ``class,IoU,dataset`` rows, ``class`` being
    ``<dataset>/<class name>``; classes without ground truth are left out.

    Args:
        per_dataset: ``{dataset: (class names, IoU or None)}``.
        path: the CSV to write.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = ["class,IoU,dataset"]
    for d, (classes, iou) in per_dataset.items():
        for c, v in zip(classes, iou):
            if v is not None:
                name = f"{d}/{c}".replace('"', "'")
                rows.append(f'"{name}",{float(v):.4f},{d}')
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


def plot_class_iou(per_dataset: Mapping[str, tuple[Sequence[str], Sequence[float | None]]],
                   stem: str | Path, *, title: str) -> tuple[Path, Path]:
    """Per-class IoU bars, one panel per dataset (classes without ground truth marked n/a).

    Args:
        per_dataset: ``{dataset: (class names, IoU or None)}``.
        stem: output path without suffix.
        title: figure title.
    """
    n = len(per_dataset)
    if not n:
        raise DrsegInputError("plot_class_iou: no datasets given")
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.9 * n + 0.6), squeeze=False)
    for ax, (name, (classes, iou)) in zip(axes[:, 0], per_dataset.items()):
        vals = [0.0 if v is None else float(v) for v in iou]
        bars = ax.bar(range(len(classes)), vals, color="#4c72b0")
        for b, v in zip(bars, iou):
            if v is None:
                ax.text(b.get_x() + b.get_width() / 2, 2, "n/a", ha="center", fontsize=7)
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(classes, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("IoU (%)", fontsize=8)
        ax.set_title(name, fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class id (uint8 ``(num_classes, 3)``); ignore is drawn black."""
    cmap = plt.get_cmap("tab20")
    return (np.array([cmap(i % 20)[:3] for i in range(num_classes)]) * 255).round().astype(np.uint8)


def colorize(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """``(H, W)`` ids -> ``(H, W, 3)`` uint8; 255 (ignore) black.

    Raises:
        DrsegInputError: an id outside the palette that is not ignore.
    """
    mask = np.asarray(mask)
    bad = (mask != IGNORE) & ((mask < 0) | (mask >= len(colors)))
    if bad.any():
        raise DrsegInputError(f"colorize: mask ids {sorted(set(mask[bad].tolist()))[:5]} outside "
                              f"0..{len(colors) - 1} and not {IGNORE}")
    out = np.zeros((*mask.shape, 3), np.uint8)  # (H, W, 3)
    valid = mask != IGNORE
    out[valid] = colors[mask[valid]]
    return out


def _image_u8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` or ``(3, H, W)`` float 0..255 / uint8 -> ``(H, W, 3)`` uint8."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise DrsegInputError(f"image: expected (H, W, 3) or (3, H, W), got {a.shape}")
    return np.clip(a, 0, 255).astype(np.uint8)


def plot_qualitative(samples: Sequence[Mapping[str, object]], class_names: Sequence[str],
                     stem: str | Path, *, columns: Sequence[str],
                     title: str = "") -> tuple[Path, Path]:
    """Fig. 5-style qualitative comparison: one row per sample, columns image, ground truth and
    one prediction per method.

    Args:
        samples: ``{"image": (H, W, 3), "gt": (H, W), "preds": {method: (H, W)}, "name": str}``.
        class_names: names of the ids (legend).
        stem: output path without suffix.
        columns: the methods in column order (keys of ``preds``).
        title: figure title (say where the numbers come from).
    """
    if not samples:
        raise DrsegInputError("plot_qualitative: no samples given")
    colors = palette(len(class_names))
    ncol = 2 + len(columns)
    fig, axes = plt.subplots(len(samples), ncol, figsize=(1.9 * ncol, 1.9 * len(samples) + 0.9),
                             squeeze=False)
    for r, s in enumerate(samples):
        preds = s["preds"]
        missing = [c for c in columns if c not in preds]
        if missing:
            raise DrsegInputError(f"plot_qualitative: sample {s.get('name', r)} lacks {missing}")
        panels = [_image_u8(s["image"]), colorize(s["gt"], colors)] + [
            colorize(preds[c], colors) for c in columns]
        for c, (ax, img) in enumerate(zip(axes[r], panels)):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title((["Image", "Ground truth"] + list(columns))[c], fontsize=8)
        axes[r, 0].set_ylabel(str(s.get("name", r)), fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i] / 255) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="lower center", ncol=min(len(class_names), 6), fontsize=7,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.09 if len(class_names) <= 6 else 0.14, 1, 0.95 if title else 1))
    return save_figure(fig, stem)


def plot_correlation_maps(image: np.ndarray, original: np.ndarray, refined: np.ndarray,
                          class_names: Sequence[str], stem: str | Path, *,
                          classes: Sequence[int] | None = None,
                          title: str = "") -> tuple[Path, Path]:
    """Fig. 7-style class-wise correlation maps: the original CLIP branch (Eq. 10) above the
    refined branch (Eq. 11), one column per class, beside the image.

    Each map is min-max normalised on its own (the two branches have different value ranges),
    so the figure compares where each branch responds, not how strongly.

    Args:
        image: ``(H, W, 3)`` or ``(3, H, W)``.
        original: ``(K, h, w)`` correlation of the original branch.
        refined: ``(K, h, w)`` correlation of the refined branch.
        class_names: K names.
        stem: output path without suffix.
        classes: which class ids to show (default: all).
        title: figure title.
    """
    ori, ref = np.asarray(original, np.float64), np.asarray(refined, np.float64)
    if ori.shape != ref.shape or ori.ndim != 3 or ori.shape[0] != len(class_names):
        raise DrsegInputError(f"plot_correlation_maps: original {ori.shape} and refined "
                              f"{ref.shape} must both be (K={len(class_names)}, h, w)")
    ids = list(range(len(class_names))) if classes is None else list(classes)
    img = _image_u8(image)
    fig, axes = plt.subplots(2, len(ids) + 1, figsize=(1.8 * (len(ids) + 1), 4.0), squeeze=False)
    for r in range(2):
        axes[r, 0].imshow(img)
    axes[0, 0].set_title("Image", fontsize=8)
    axes[0, 0].set_ylabel("original (CLIP)", fontsize=8)
    axes[1, 0].set_ylabel("refined", fontsize=8)
    for c, k in enumerate(ids, start=1):
        for r, m in enumerate((ori[k], ref[k])):
            lo, hi = float(m.min()), float(m.max())
            span = hi - lo if math.isfinite(hi - lo) and hi > lo else 1.0
            axes[r, c].imshow((m - lo) / span, cmap="jet", vmin=0, vmax=1,
                              extent=(0, img.shape[1], img.shape[0], 0), interpolation="bilinear")
        axes[0, c].set_title(class_names[k], fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, stem)
