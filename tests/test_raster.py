"""drseg.data.raster: windowed RGB reading, band rules, georeference kept by the writers."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from drseg.data import raster
from drseg.errors import DrsegInputError

CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = from_origin(500000.0, 4650000.0, 0.5, 0.5)  # 0.5 m pixels, north-up


def write_tif(path, data, crs=CRS_UTM, transform=TRANSFORM, nodata=None, **kw):
    c, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c,
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata,
                       **kw) as dst:
        dst.write(data)
    return path


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def test_geotiff_reader_reads_windows_and_georeference(tmp_path):
    data = rgb(70, 90)
    p = write_tif(tmp_path / "a.tif", data)
    with raster.open_raster(p) as src:
        assert (src.height, src.width) == (70, 90)
        assert src.crs == CRS_UTM and src.transform == TRANSFORM and src.is_georeferenced
        win = src.read_rgb(10, 20, 30, 40)
        assert win.dtype == np.float32 and win.shape == (3, 30, 40)
        np.testing.assert_array_equal(win, data[:, 10:40, 20:60].astype(np.float32))
        assert src.read_valid(0, 0, 5, 5) is None  # no nodata: every pixel valid


def test_geotiff_writer_round_trips_georeference(tmp_path):
    ids = np.random.default_rng(1).integers(0, 5, (1, 300, 520), dtype=np.uint8)
    w = raster.GeoTiffWriter(tmp_path / "m.tif", 300, 520, 1, "uint8", CRS_UTM, TRANSFORM,
                             nodata=255, descriptions=["class id"])
    # written in two uneven windows, as the tiler does
    w.write(ids[:, :256], 0, 0)
    w.write(ids[:, 256:], 256, 0)
    w.commit()
    assert not (tmp_path / "m.tif.part").exists()
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.crs == CRS_UTM
        assert src.transform == TRANSFORM
        assert src.nodata == 255 and src.descriptions == ("class id",)
        np.testing.assert_array_equal(src.read(), ids)
    assert raster.georeference(tmp_path / "m.tif") == (CRS_UTM, TRANSFORM)


def test_writer_abort_keeps_earlier_output(tmp_path):
    target = tmp_path / "m.tif"
    target.write_bytes(b"earlier result")
    w = raster.GeoTiffWriter(target, 10, 10, 1, "uint8")
    w.write(np.zeros((1, 10, 10), np.uint8), 0, 0)
    w.abort()
    assert target.read_bytes() == b"earlier result"
    assert not (tmp_path / "m.tif.part").exists()


def test_png_jpg_read_as_rgb(tmp_path):
    data = rgb(20, 30)
    Image.fromarray(data.transpose(1, 2, 0)).save(tmp_path / "a.png")
    with raster.open_raster(tmp_path / "a.png") as src:
        assert not src.is_georeferenced
        np.testing.assert_array_equal(src.read_rgb(0, 0, 20, 30), data.astype(np.float32))
    gx, gy = np.meshgrid(np.arange(30) * 8, np.arange(20) * 12)
    smooth = np.stack([gx, gy, np.full((20, 30), 128)]).astype(np.uint8)  # (3, 20, 30) gradients: jpeg keeps them
    Image.fromarray(smooth.transpose(1, 2, 0)).save(tmp_path / "a.jpg", quality=95)
    with raster.open_raster(tmp_path / "a.jpg") as src:
        a = src.read_rgb(0, 0, 20, 30)
        assert a.shape == (3, 20, 30) and np.abs(a - smooth).mean() < 4  # lossy, but the image


def test_one_band_replicated_and_palette_expanded(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(1, 6, 8)
    with raster.open_raster(write_tif(tmp_path / "g.tif", grey)) as src:
        a = src.read_rgb(0, 0, 6, 8)
        assert "replicated" in src.band_rule
        for c in range(3):
            np.testing.assert_array_equal(a[c], grey[0])
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "p.png")
    with raster.open_raster(tmp_path / "p.png") as src:
        a = src.read_rgb(0, 0, 2, 2)
        assert "palette" in src.band_rule
        np.testing.assert_array_equal(a[:, 0, 0], [10, 20, 30])
        np.testing.assert_array_equal(a[:, 0, 1], [200, 100, 50])


def test_two_bands_refused_unless_bands_given(tmp_path):
    p = write_tif(tmp_path / "two.tif", rgb(8, 8)[:2])
    with pytest.raises(DrsegInputError, match="two.tif.*2 image bands"):
        raster.open_raster(p)
    with raster.open_raster(p, bands=[2]) as src:
        a = src.read_rgb(0, 0, 8, 8)
        np.testing.assert_array_equal(a[0], a[2])


def test_four_plus_bands_first_three_or_bands_option(tmp_path):
    data = rgb(8, 8, seed=3)
    five = np.concatenate([data, data[:2] // 2])  # e.g. R, G, B, NIR, SWIR
    p = write_tif(tmp_path / "five.tif", five)
    with raster.open_raster(p) as src:
        assert src.bands == (1, 2, 3) and "first three" in src.band_rule
        np.testing.assert_array_equal(src.read_rgb(0, 0, 8, 8), data.astype(np.float32))
    with raster.open_raster(p, bands=[4, 3, 2]) as src:
        np.testing.assert_array_equal(src.read_rgb(0, 0, 8, 8),
                                      five[[3, 2, 1]].astype(np.float32))
    for bad in ([6, 1, 2], [0, 1, 2], [1, 2]):
        with pytest.raises(DrsegInputError, match="five.tif: bands="):
            raster.open_raster(p, bands=bad)


def test_rgba_alpha_dropped_and_marks_invalid(tmp_path):
    a = np.zeros((6, 6, 4), np.uint8)
    a[..., :3] = 100
    a[..., 3] = 255
    a[:2, :, 3] = 0  # top two rows transparent
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    with raster.open_raster(tmp_path / "rgba.png") as src:
        assert src.bands == (1, 2, 3)
        valid = src.read_valid(0, 0, 6, 6)
        assert valid is not None and not valid[:2].any() and valid[2:].all()


def test_nodata_marks_invalid(tmp_path):
    data = rgb(6, 6)
    data[:, 0, 0] = 0
    with raster.open_raster(write_tif(tmp_path / "nd.tif", data, nodata=0)) as src:
        valid = src.read_valid(0, 0, 6, 6)
        assert not valid[0, 0] and valid.sum() >= 30


def test_uint16_stretched_to_0_255(tmp_path):
    ramp = np.linspace(0, 4000, 100 * 100).reshape(1, 100, 100).astype(np.uint16)
    p = write_tif(tmp_path / "u16.tif", np.concatenate([ramp] * 3))
    with raster.open_raster(p) as src:
        a = src.read_rgb(0, 0, 100, 100)
        assert a.min() == 0.0 and a.max() == 255.0
        # the 2..98 percentile stretch: the middle value lands in the middle
        assert abs(float(a[0, 50, 0]) - 127.5) < 3


def test_unreadable_and_non_image_files(tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(DrsegInputError, match="notes.png: not a readable image"):
        raster.open_raster(tmp_path / "notes.png")
    with pytest.raises(DrsegInputError, match="missing.tif: no such file"):
        raster.open_raster(tmp_path / "missing.tif")


def test_preview_is_bounded(tmp_path):
    p = write_tif(tmp_path / "big.tif", rgb(300, 500))
    with raster.open_raster(p) as src:
        prev = src.read_preview(100)
    assert prev.shape == (60, 100, 3) and prev.dtype == np.uint8
