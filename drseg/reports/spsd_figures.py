"""SPSD figures: paper Fig. 2 (per-channel masking), Fig. 6 (top / bottom channel retention) and
the score-vs-drop scatter (beyond the paper).

Reads the metrics / plots files the ``spsd_study`` stage writes (never a model); writes PNG and
PDF with the metadata that makes reruns byte-identical (DESIGN.md "Conventions").
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from drseg.errors import DrsegInputError  # noqa: E402

POS_COLOR = "#c0392b"
NEG_COLOR = "#2471a3"
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
         "svg.hashsalt": "drseg", "pdf.fonttype": 42}


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with a clear error naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError as e:
        raise DrsegInputError(f"{p}: file not found") from e
    except (OSError, json.JSONDecodeError) as e:
        raise DrsegInputError(f"{p}: not readable JSON ({e})") from e


def save_figure(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (byte-stable metadata) and close it."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=150, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return [png, pdf]


def plot_retention(rows: Sequence[Mapping[str, float]], stem: str | Path,
                   title: str = "") -> list[Path]:
    """Fig. 6: zero-shot mIoU of the top- and bottom-ranked channel groups vs retention ratio.

    Args:
        rows: ``retention.json`` rows (``ratio``, ``top``, ``bottom``, optional ``random``,
            ``random_std``).
        stem: output path without suffix.
        title: figure title.
    """
    if not rows:
        raise DrsegInputError("spsd retention: no rows to plot")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 3.0), layout="constrained")
        x = np.array([100 * r["ratio"] for r in rows])
        ax.plot(x, [r["top"] for r in rows], "o-", color=POS_COLOR, label="top-ranked channels")
        ax.plot(x, [r["bottom"] for r in rows], "s-", color=NEG_COLOR,
                label="bottom-ranked channels")
        if all("random" in r for r in rows):
            mean = np.array([r["random"] for r in rows])
            std = np.array([r.get("random_std", 0.0) for r in rows])
            ax.plot(x, mean, "^--", color="0.45", label="random channels (mean)")
            ax.fill_between(x, mean - std, mean + std, color="0.8", alpha=0.6, linewidth=0)
        ax.set_xlabel("retained channels (%)")
        ax.set_ylabel("zero-shot mIoU (%)")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        if title:
            ax.set_title(title)
        return save_figure(fig, stem)


def plot_masking(channels: Sequence[Mapping[str, float]], stem: str | Path, full_miou: float,
                 maps: Mapping[str, Any] | None = None, title: str = "") -> list[Path]:
    """Fig. 2: mIoU drop per masked channel, in channel order and ranked (positive / negative
    split marked), and optionally class activation maps with channel groups removed.

    Args:
        channels: ``masking.json`` rows (``channel``, ``drop``), one per channel.
        stem: output path without suffix.
        full_miou: zero-shot mIoU with all channels (for the caption).
        maps: ``activation_maps.json`` content (``examples``: image, mask, class name and the
            maps ``drop_negative``, ``all``, ``drop_positive``), or None.
        title: figure title.
    """
    drops = np.array([r["drop"] for r in sorted(channels, key=lambda r: r["channel"])])
    if drops.size == 0:
        raise DrsegInputError("spsd masking: no channels to plot")
    order = np.lexsort((np.arange(drops.size), -drops))  # descending drop, ties by channel
    ranked = drops[order]
    n_pos = int((ranked > 0).sum())
    examples = list((maps or {}).get("examples", []))
    n_rows = 2 + len(examples)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.0, 2.2 * 2 + 1.5 * len(examples)), layout="constrained")
        grid = fig.add_gridspec(n_rows, 5, height_ratios=[1.4, 1.4] + [1.1] * len(examples))
        ax = fig.add_subplot(grid[0, :])
        colors = np.where(drops > 0, POS_COLOR, NEG_COLOR)
        ax.bar(np.arange(drops.size), drops, width=1.0, color=colors, linewidth=0)
        ax.axhline(0, color="k", linewidth=0.5)
        ax.set_xlim(-0.5, drops.size - 0.5)
        ax.set_xlabel("channel")
        ax.set_ylabel("mIoU drop (pts)")
        ax.set_title(title or f"masking one channel (visual + text); all channels: "
                              f"{full_miou:.2f} mIoU")
        ax = fig.add_subplot(grid[1, :])
        ax.bar(np.arange(drops.size), ranked, width=1.0,
               color=np.where(ranked > 0, POS_COLOR, NEG_COLOR), linewidth=0)
        ax.axvline(n_pos - 0.5, color="k", linestyle="--", linewidth=0.8)
        ax.axhline(0, color="k", linewidth=0.5)
        ax.set_xlim(-0.5, drops.size - 0.5)
        ax.set_xlabel("rank by drop")
        ax.set_ylabel("mIoU drop (pts)")
        ax.text(0.01, 0.95, f"positive channels: {n_pos}", transform=ax.transAxes,
                color=POS_COLOR, va="top")
        ax.text(0.99, 0.95, f"negative channels: {drops.size - n_pos}", transform=ax.transAxes,
                color=NEG_COLOR, va="top", ha="right")
        frac = (maps or {}).get("fraction", 0.2)
        heads = [f"drop top {frac:.0%} neg.", "all channels", f"drop top {frac:.0%} pos.",
                 "ground truth", "input"]
        for i, ex in enumerate(examples):
            panels = [np.array(ex["drop_negative"]), np.array(ex["all"]),
                      np.array(ex["drop_positive"])]
            lo = min(float(p.min()) for p in panels)
            hi = max(float(p.max()) for p in panels)
            for j, p in enumerate(panels):
                a = fig.add_subplot(grid[2 + i, j])
                a.imshow(p, cmap="jet", vmin=lo, vmax=hi, interpolation="nearest")
                a.set_xticks([])
                a.set_yticks([])
                if i == 0:
                    a.set_title(heads[j])
                if j == 0:
                    a.set_ylabel(str(ex.get("class_name", "")))
            for j, img, cmap in ((3, np.array(ex["mask"]) == ex["class_id"], "gray"),
                                 (4, np.array(ex["image"], dtype=np.uint8), None)):
                a = fig.add_subplot(grid[2 + i, j])
                a.imshow(img, cmap=cmap, interpolation="nearest")
                a.set_xticks([])
                a.set_yticks([])
                if i == 0:
                    a.set_title(heads[j])
        return save_figure(fig, stem)


def plot_score_vs_drop(channels: Sequence[Mapping[str, float]], stem: str | Path,
                       spearman: float, p_value: float, title: str = "") -> list[Path]:
    """Beyond the paper: SPSD score (Eq. 4) against the masking drop of each channel.

    Args:
        channels: ``masking.json`` rows (``score``, ``drop``, ``semantic`` bool).
        stem: output path without suffix.
        spearman, p_value: Spearman correlation of score and drop and its p-value.
        title: figure title.
    """
    score = np.array([r["score"] for r in channels])
    drop = np.array([r["drop"] for r in channels])
    sem = np.array([bool(r.get("semantic", False)) for r in channels])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 3.0), layout="constrained")
        ax.scatter(score[sem], drop[sem], s=9, color=POS_COLOR, label="semantic subset (I_sem)")
        ax.scatter(score[~sem], drop[~sem], s=9, color=NEG_COLOR, marker="x", linewidths=0.8,
                   label="structural subset (I_str)")
        ax.axhline(0, color="k", linewidth=0.5)
        ax.set_xlabel("SPSD score (Eq. 4)")
        ax.set_ylabel("mIoU drop when masked (pts)")
        ax.set_title(title or f"Spearman rho = {spearman:.3f} (p = {p_value:.2g}, "
                              f"{score.size} channels)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        return save_figure(fig, stem)
