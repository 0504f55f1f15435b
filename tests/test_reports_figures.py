"""Report figures from arrays: files written, byte-identical reruns, bad input refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drseg.errors import DrsegInputError
from drseg.reports import figures as F

FIX = Path(__file__).parent / "fixtures" / "reports"


def _twice(tmp_path: Path, fn, name: str):
    """Run a figure function into two folders; return the two (png, pdf) pairs."""
    return fn(tmp_path / "a" / name), fn(tmp_path / "b" / name)


def _assert_identical(pair_a, pair_b):
    for a, b in zip(pair_a, pair_b):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert pair_a[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pair_a[1].read_bytes()[:5] == b"%PDF-"


def test_training_curves(tmp_path):
    curves = {"full": ([0, 10, 20, 30], [1.0, 0.7, 0.5, 0.45]),
              "k20": ([0, 10, 20, 30], [1.1, 0.8, 0.6, 0.55])}
    a, b = _twice(tmp_path, lambda s: F.plot_training_curves(curves, s, highlight="full"), "curves")
    _assert_identical(a, b)


def test_read_loss_curve(tmp_path):
    p = tmp_path / "loss.csv"
    p.write_text("iteration,loss,lr\n1,0.5,0.0002\n2,0.25,0.0001\n")
    assert F.read_loss_curve(p) == ([1, 2], [0.5, 0.25])
    p.write_text("step,value\n1,0.5\n")
    with pytest.raises(DrsegInputError, match="loss.csv: expected columns iteration,loss"):
        F.read_loss_curve(p)
    with pytest.raises(DrsegInputError, match="missing.csv: loss curve not found"):
        F.read_loss_curve(tmp_path / "missing.csv")


def test_class_iou_from_metrics_files(tmp_path):
    per = F.read_class_iou(FIX / "metrics", "full", ["source", "urban"])
    assert per["urban"][0] == ["Building", "Road", "Tree", "Car"]
    assert per["urban"][1][3] is None  # no ground truth: drawn as n/a, not as 0
    a, b = _twice(tmp_path, lambda s: F.plot_class_iou(per, s, title="t"), "iou")
    _assert_identical(a, b)
    with pytest.raises(DrsegInputError, match="nope.json: per-dataset metrics not found"):
        F.read_class_iou(FIX / "metrics", "full", ["nope"])


def test_colorize():
    colors = F.palette(3)
    mask = np.array([[0, 1], [2, 255]])
    rgb = F.colorize(mask, colors)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 1] == colors[1]).all() and (rgb[1, 1] == 0).all()
    with pytest.raises(DrsegInputError, match=r"mask ids \[3\] outside 0..2"):
        F.colorize(np.array([[3]]), colors)


def test_qualitative(tmp_path):
    rng = np.random.default_rng(0)
    names = ["building", "road", "tree"]
    samples = []
    for i in range(2):
        gt = rng.integers(0, 3, (16, 16))
        samples.append({"name": f"s{i}", "image": rng.uniform(0, 255, (3, 16, 16)), "gt": gt,
                        "preds": {m: rng.integers(0, 3, (16, 16)) for m in ("CAT-Seg", "Holistic", "DR-Seg")}})
    cols = ["CAT-Seg", "Holistic", "DR-Seg"]
    a, b = _twice(tmp_path, lambda s: F.plot_qualitative(samples, names, s, columns=cols), "q")
    _assert_identical(a, b)
    w, h = Image.open(a[0]).size
    assert w > h  # five panels across, two rows
    with pytest.raises(DrsegInputError, match=r"lacks \['Other'\]"):
        F.plot_qualitative(samples, names, tmp_path / "x", columns=cols + ["Other"])


def test_correlation_maps(tmp_path):
    rng = np.random.default_rng(1)
    ori, ref = rng.normal(size=(3, 8, 8)), rng.normal(size=(3, 8, 8))
    img = rng.uniform(0, 255, (32, 32, 3))
    a, b = _twice(tmp_path, lambda s: F.plot_correlation_maps(img, ori, ref, ["a", "b", "c"], s), "c")
    _assert_identical(a, b)
    with pytest.raises(DrsegInputError, match=r"must both be \(K=3, h, w\)"):
        F.plot_correlation_maps(img, ori, ref[:2], ["a", "b", "c"], tmp_path / "y")
    with pytest.raises(DrsegInputError, match=r"image: expected \(H, W, 3\)"):
        F.plot_correlation_maps(img[..., :2], ori, ref, ["a", "b", "c"], tmp_path / "z")
