"""drseg predict with a real checkpoint: a randomly initialised tiny-preset DR-Seg saved in the
``drseg-model/1`` format (no weight files needed), loaded back through the command's path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from drseg import predict as P
from drseg.engine.checkpoint import save_model_checkpoint
from drseg.errors import DrsegInputError
from drseg.models.drseg import build_model, make_config

VOCAB = ["road", "tree, forest", "water"]
REPO = Path(__file__).resolve().parents[1]


def save_tiny(path: Path, seed: int = 0, **overrides) -> Path:
    cfg = make_config("tiny", {"seed": seed, **overrides})
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg)
    return save_model_checkpoint(path, model=model, model_cfg=cfg.to_dict(), iteration=0,
                                 train_dataset="random-init (test)")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "model_final.pt")


@pytest.fixture(scope="module")
def pred(ckpt) -> P.Predictor:
    return P.load_predictor(ckpt, device="cpu")


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2, yy * 2, (xx + yy)]) % 256
    return (base + r.integers(0, 40, (3, h, w))).clip(0, 255).astype(np.uint8)


def test_loads_tiny_checkpoint(pred, ckpt):
    assert pred.input_size == 64 and pred.device.type == "cpu" and not pred.amp
    assert pred.info["preset"] == "tiny" and pred.info["checkpoint"] == str(ckpt)
    assert pred.info["templates"] == ["A photo of a {} in the scene"]  # the paper's
    assert not pred.model.training


def test_predictions_deterministic(pred, ckpt, tmp_path):
    img = image(80, 96)
    Image.fromarray(img.transpose(1, 2, 0)).save(tmp_path / "a.png")
    r1 = P.predict_file(pred, tmp_path / "a.png", VOCAB, tmp_path / "o1", progress_bar=False)
    again = P.load_predictor(ckpt, device="cpu")  # a fresh load of the same file
    r2 = P.predict_file(again, tmp_path / "a.png", VOCAB, tmp_path / "o2", progress_bar=False)
    for key in ("mask", "overlay"):
        assert Path(r1["outputs"][key]).read_bytes() == Path(r2["outputs"][key]).read_bytes()
    ids1, s1 = P.predict_array(pred, img, VOCAB)
    ids2, s2 = P.predict_array(again, img, VOCAB)
    np.testing.assert_array_equal(s1, s2)
    assert len(np.unique(ids1)) > 1  # a random model still separates something


def test_whole_and_windows_agree_where_one_window_covers(pred):
    """A 64 x 64 image predicted whole equals the windowed prediction of a wider image that
    contains it, wherever only the window at that place covers the wider image."""
    wide = image(64, 112, seed=3)
    tiles = P.TileSettings(64, 40)
    assert P.window_starts(112, 64, 40) == [0, 40, 48]
    _, s_wide = P.predict_array(pred, wide, VOCAB, tiles)
    _, s_left = P.predict_array(pred, wide[:, :, :64], VOCAB, tiles)  # whole: one window
    _, s_right = P.predict_array(pred, wide[:, :, 48:], VOCAB, tiles)
    torch.testing.assert_close(s_wide[:, :, :40], s_left[:, :, :40], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s_wide[:, :, 104:], s_right[:, :, 56:], rtol=1e-5, atol=1e-6)
    # and in the overlaps the mean of the windows that cover
    _, s_mid = P.predict_array(pred, wide[:, :, 40:104], VOCAB, tiles)
    expect = (s_left[:, :, 48:64] + s_mid[:, :, 8:24] + s_right[:, :, 0:16]) / 3
    torch.testing.assert_close(s_wide[:, :, 48:64], expect, rtol=1e-5, atol=1e-6)


def test_templates_reach_the_model(ckpt):
    img = image(64, 64, seed=5)
    base = P.load_predictor(ckpt, device="cpu")
    other = P.load_predictor(ckpt, device="cpu",
                             templates=["a satellite image of {}", "{} seen from above"])
    assert other.info["templates"] == ["a satellite image of {}", "{} seen from above"]
    _, s0 = P.predict_array(base, img, VOCAB)
    _, s1 = P.predict_array(other, img, VOCAB)
    assert not np.allclose(s0, s1)


def test_geotiff_with_real_model_keeps_georeference(pred, tmp_path):
    crs, tr = CRS.from_epsg(3857), from_origin(1.0e6, 6.0e6, 0.3, 0.3)
    img = image(150, 130, seed=7)
    with rasterio.open(tmp_path / "t.tif", "w", driver="GTiff", height=150, width=130, count=3,
                       dtype="uint8", crs=crs, transform=tr) as dst:
        dst.write(img)
    rec = P.predict_file(pred, tmp_path / "t.tif", VOCAB, tmp_path / "o", scores=True,
                         tiles=P.TileSettings(64, 48, batch_size=8), progress_bar=False)
    for key in ("mask", "scores"):
        with rasterio.open(rec["outputs"][key]) as src:
            assert src.crs == crs and src.transform == tr and (src.height, src.width) == (150, 130)
    ids, _ = P.predict_array(pred, img, VOCAB, P.TileSettings(64, 48, batch_size=8))
    with rasterio.open(rec["outputs"]["mask"]) as src:
        np.testing.assert_array_equal(src.read(1), ids)


def test_checkpoint_of_another_preset_or_shape(ckpt, tmp_path):
    with pytest.raises(DrsegInputError, match="checkpoint of model preset 'tiny', not 'vitb16-384'"):
        P.load_predictor(ckpt, device="cpu", preset="vitb16-384")
    with pytest.raises(DrsegInputError, match="--preset huge: not one of"):
        P.load_predictor(ckpt, device="cpu", preset="huge")
    # a checkpoint whose config says one shape and whose weights are of another
    obj = torch.load(ckpt, weights_only=False)
    obj["model_cfg"]["hidden_dim"] = 48
    torch.save(obj, tmp_path / "mixed.pt")
    with pytest.raises(DrsegInputError, match="mixed.pt: weights do not fit the model"):
        P.load_predictor(tmp_path / "mixed.pt", device="cpu")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(DrsegInputError, match="foreign.pt: not a drseg model checkpoint"):
        P.load_predictor(tmp_path / "foreign.pt", device="cpu")
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(DrsegInputError, match="junk.pt: not a readable model checkpoint"):
        P.load_predictor(tmp_path / "junk.pt", device="cpu")


def test_cli_end_to_end(ckpt, tmp_path):
    Image.fromarray(image(70, 90).transpose(1, 2, 0)).save(tmp_path / "scene.jpg")
    (tmp_path / "classes.txt").write_text("road\ntree, forest\nwater\n")
    cmd = [sys.executable, "-m", "drseg", "predict", str(tmp_path / "scene.jpg"),
           str(tmp_path / "missing.png"), "-c", str(ckpt), "--classes-file",
           str(tmp_path / "classes.txt"), "-o", str(tmp_path / "out"), "--preset", "tiny"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr  # one input missing: the other done, exit 1
    assert "missing.png: no such file" in r.stderr
    assert (tmp_path / "out" / "scene_mask.png").is_file()
    assert (tmp_path / "out" / "scene_overlay.png").is_file()
    r = subprocess.run([sys.executable, "-m", "drseg.predict", str(tmp_path / "scene.jpg"),
                        "-c", str(ckpt), "-o", str(tmp_path / "out2"), "--classes", "a", "A"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "duplicate class name 'A'" in r.stderr
