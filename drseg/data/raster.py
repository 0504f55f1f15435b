"""Raster I/O for ``drseg predict``: windowed reading of png / jpg / (Geo)TIFF images as RGB
0..255 tiles, and windowed, atomic writing of masks and score maps that keep the input's
georeference (CRS and affine transform).

All reading goes through rasterio (GDAL), so a GeoTIFF far larger than memory is read one
window at a time. Band rules (documented in ``docs/predict.md``):

- ``bands`` given (1-based, GDAL order): exactly 1 or 3 indexes; one band is replicated to RGB.
- otherwise alpha bands are dropped (they still mark invalid pixels), then
  1 band: a palette is expanded through its colour table, a grey band replicated to RGB;
  2 bands: refused (ambiguous; pass ``bands``);
  3 bands: RGB; 4+ bands: the first three are taken as RGB.
- ``uint8`` values are used as they are; any other data type is stretched linearly per band
  from its 2nd..98th percentile (estimated on a decimated read of at most 1024 px a side) to
  0..255.

Pixels that GDAL marks invalid (nodata value, alpha 0, internal mask) are reported by
:meth:`RasterReader.read_valid` so the caller can set them to the ignore id.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drseg.atomic import AtomicTarget, atomic_path
from drseg.errors import DrsegInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
BLOCK = 256  # tile size of every GeoTIFF we write; writes are aligned to it where possible
STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE = 1024
GDAL_CACHE_MB = 128  # block cache while predicting (see bounded_cache)


def _rasterio():
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    return rasterio


def bounded_cache(megabytes: int = GDAL_CACHE_MB):
    """A ``rasterio.Env`` whose GDAL block cache is at most ``megabytes``. GDAL's default (5 %
    of the RAM) keeps every block read, so reading a large raster end to end would grow the
    process by up to that much; the tiler only ever needs one or two block rows."""
    rasterio = _rasterio()
    return rasterio.Env(GDAL_CACHEMAX=int(megabytes))


def is_image_path(path: str | Path) -> bool:
    """True when the suffix is one ``drseg predict`` reads (png, jpg, jpeg, tif, tiff)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


class RasterReader:
    """An image opened for windowed reading as RGB float32 in 0..255.

    Args:
        path: png / jpg / tif file.
        bands: optional 1-based band indexes (1 or 3 of them); see the module docstring.

    Raises:
        DrsegInputError: unreadable or non-image file, bad ``bands``, unsupported band count.
    """

    def __init__(self, path: str | Path, bands: Sequence[int] | None = None) -> None:
        rasterio = _rasterio()
        from rasterio.enums import ColorInterp, MaskFlags

        self.path = Path(path)
        if not self.path.is_file():
            raise DrsegInputError(f"{self.path}: no such file")
        try:
            self._src = rasterio.open(self.path)
        except Exception as e:  # rasterio.errors.RasterioIOError and friends
            raise DrsegInputError(f"{self.path}: not a readable image ({e})") from None
        src = self._src
        try:
            self.height, self.width, self.count = src.height, src.width, src.count
            if self.height < 1 or self.width < 1 or self.count < 1:
                raise DrsegInputError(f"{self.path}: empty raster ({self.count} bands, "
                                      f"{self.width}x{self.height})")
            self.crs = src.crs
            self.transform = src.transform
            self.is_georeferenced = src.crs is not None or not src.transform.is_identity
            self._lut: np.ndarray | None = None
            self.band_rule = self._choose_bands(bands, src.colorinterp, ColorInterp)
            self._check_masks = not all(MaskFlags.all_valid in f for f in src.mask_flag_enums)
            dtypes = {src.dtypes[i - 1] for i in self.bands}
            self.dtype = src.dtypes[self.bands[0] - 1]
            if len(dtypes) > 1:
                raise DrsegInputError(f"{self.path}: bands {self.bands} have mixed data types "
                                      f"{sorted(dtypes)}")
            self._stretch = None if self.dtype == "uint8" else self._stretch_params()
        except Exception:
            src.close()
            raise

    # -- band selection --------------------------------------------------------------------
    def _choose_bands(self, bands, colorinterp, ColorInterp) -> str:
        n = self.count
        if bands is not None:
            bands = [int(b) for b in bands]
            if len(bands) not in (1, 3) or any(b < 1 or b > n for b in bands):
                raise DrsegInputError(
                    f"{self.path}: bands={bands} must be 1 or 3 indexes in 1..{n} (the file "
                    f"has {n} band(s))")
            self.bands = tuple(bands) * (3 if len(bands) == 1 else 1)
            return f"bands {bands} (as asked)" + (" replicated to RGB" if len(bands) == 1 else "")
        keep = [i + 1 for i, ci in enumerate(colorinterp) if ci != ColorInterp.alpha]
        if not keep:
            raise DrsegInputError(f"{self.path}: only alpha bands, no image data")
        if len(keep) == 1:
            b = keep[0]
            if colorinterp[b - 1] == ColorInterp.palette:
                cmap = self._src.colormap(b)
                lut = np.zeros((256, 3), np.float32)
                for k, rgba in cmap.items():
                    if 0 <= k < 256:
                        lut[k] = rgba[:3]
                self._lut = lut
                self.bands = (b, b, b)
                return f"band {b}: palette expanded to RGB"
            self.bands = (b, b, b)
            return f"band {b}: grey replicated to RGB"
        if len(keep) == 2:
            raise DrsegInputError(
                f"{self.path}: 2 image bands are ambiguous; pass bands (e.g. --bands 1 for one "
                f"band replicated to RGB)")
        self.bands = tuple(keep[:3])
        if len(keep) == 3:
            return f"bands {list(self.bands)}: RGB"
        return f"bands {list(self.bands)} of {len(keep)}: first three taken as RGB"

    def _stretch_params(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band (low, high) of the 2..98 percentile stretch, from a decimated read."""
        from rasterio.enums import Resampling

        s = min(1.0, STRETCH_SAMPLE / max(self.height, self.width))
        shape = (3, max(1, round(self.height * s)), max(1, round(self.width * s)))
        a = self._src.read(list(self.bands), out_shape=shape, resampling=Resampling.nearest,
                           masked=True).astype(np.float64)
        lo, hi = np.zeros(3), np.ones(3)
        for c in range(3):
            v = a[c].compressed()
            v = v[np.isfinite(v)]
            if v.size:
                lo[c], hi[c] = np.percentile(v, STRETCH_PERCENTILES)
            if hi[c] <= lo[c]:
                hi[c] = lo[c] + 1.0
        return lo.reshape(3, 1, 1), hi.reshape(3, 1, 1)

    # -- reading ---------------------------------------------------------------------------
    def _window(self, row: int, col: int, h: int, w: int):
        from rasterio.windows import Window

        if row < 0 or col < 0 or h < 1 or w < 1 or row + h > self.height or col + w > self.width:
            raise ValueError(f"window rows {row}+{h}, cols {col}+{w} outside "
                             f"{self.height}x{self.width}")
        return Window(col, row, w, h)

    def _to_rgb(self, a: np.ndarray) -> np.ndarray:
        """(3, h, w) raw band values -> (3, h, w) float32 RGB in 0..255."""
        if self._lut is not None:
            return np.ascontiguousarray(self._lut[a[0].astype(np.intp)].transpose(2, 0, 1))
        if self._stretch is None:
            return a.astype(np.float32)
        lo, hi = self._stretch
        a = np.nan_to_num(a.astype(np.float64), nan=0.0)
        return (np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.float32)

    def read_rgb(self, row: int, col: int, h: int, w: int) -> np.ndarray:
        """The window ``[row, row+h) x [col, col+w)`` as float32 ``(3, h, w)`` RGB 0..255."""
        a = self._src.read(list(self.bands), window=self._window(row, col, h, w))
        return self._to_rgb(a)  # (3, h, w)

    def read_valid(self, row: int, col: int, h: int, w: int) -> np.ndarray | None:
        """Boolean ``(h, w)`` validity of the window (nodata / alpha / mask), or ``None`` when
        the file marks every pixel valid."""
        if not self._check_masks:
            return None
        m = self._src.dataset_mask(window=self._window(row, col, h, w))
        return m > 0

    def read_preview(self, max_size: int) -> np.ndarray:
        """The whole image decimated so its long side is at most ``max_size``: ``uint8
        (h', w', 3)``; bounded memory whatever the raster size."""
        from rasterio.enums import Resampling

        s = min(1.0, max_size / max(self.height, self.width))
        shape = (3, max(1, round(self.height * s)), max(1, round(self.width * s)))
        rs = Resampling.nearest if (self._lut is not None or s == 1.0) else Resampling.average
        a = self._src.read(list(self.bands), out_shape=shape, resampling=rs)
        return np.clip(self._to_rgb(a), 0, 255).round().astype(np.uint8).transpose(1, 2, 0)

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_raster(path: str | Path, bands: Sequence[int] | None = None) -> RasterReader:
    """Open ``path`` for windowed RGB reading; see :class:`RasterReader`."""
    return RasterReader(path, bands=bands)


class GeoTiffWriter:
    """A tiled, deflate-compressed GeoTIFF written window by window to a temporary sibling
    (:class:`drseg.atomic.AtomicTarget`) and moved onto ``path`` only by :meth:`commit`, so a
    failed run never clobbers an earlier output.

    Args:
        path: output ``.tif``.
        height, width, count: raster size and band count.
        dtype: numpy dtype name (``"uint8"``, ``"float32"``).
        crs, transform: georeference copied from the input (``None`` / identity when it has none).
        nodata: nodata value written in the header, or ``None``.
        descriptions: optional per-band descriptions (class names for score maps).
        colormap: optional ``{value: (r, g, b)}`` colour table of band 1 (uint8 only), so GIS
            software shows a class mask in colour.
        tags: optional dataset metadata (GDAL tags), e.g. ``{"CLASS_0": "building"}``.
    """

    def __init__(self, path: str | Path, height: int, width: int, count: int, dtype: str,
                 crs: Any = None, transform: Any = None, nodata: float | None = None,
                 descriptions: Sequence[str] | None = None,
                 colormap: dict[int, Sequence[int]] | None = None,
                 tags: dict[str, str] | None = None) -> None:
        rasterio = _rasterio()
        from rasterio.transform import Affine

        self.path = Path(path)
        profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=dtype,
                       crs=crs, transform=transform if transform is not None else Affine.identity(),
                       nodata=nodata, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                       compress="deflate", predictor=3 if dtype.startswith("float") else 2,
                       BIGTIFF="IF_SAFER", interleave="band")
        self._target = AtomicTarget(self.path)  # creates the directory and the temporary
        self.tmp = self._target.tmp
        self._dst = None
        try:
            self._dst = rasterio.open(self.tmp, "w", **profile)
            if descriptions is not None:
                for i, d in enumerate(descriptions, start=1):
                    self._dst.set_band_description(i, d)
            if colormap is not None:
                self._dst.write_colormap(1, {int(k): tuple(int(c) for c in v[:3]) + (255,)
                                             for k, v in colormap.items()})
            if tags:
                self._dst.update_tags(**tags)
        except BaseException:
            self.abort()
            raise

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        """Write ``array`` ``(count, h, w)`` at ``(row, col)``."""
        from rasterio.windows import Window

        c, h, w = array.shape
        self._dst.write(array, window=Window(col, row, w, h))

    def commit(self) -> Path:
        """Close and move the file into place."""
        self._dst.close()
        return self._target.commit()

    def abort(self) -> None:
        """Close and delete the partial file; an earlier output at ``path`` is left untouched."""
        try:
            if self._dst is not None:
                self._dst.close()
        finally:
            self._target.abort()


class ArrayWriter:
    """Collects a single-band ``uint8`` mask in memory and writes it as a PNG (mode "L") on
    :meth:`commit` (atomically). For png / jpg inputs, which GDAL cannot write window-wise;
    memory is one byte per pixel."""

    def __init__(self, path: str | Path, height: int, width: int) -> None:
        self.path = Path(path)
        self.array = np.zeros((height, width), np.uint8)

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        _, h, w = array.shape
        self.array[row:row + h, col:col + w] = array[0]

    def commit(self) -> Path:
        from PIL import Image

        with atomic_path(self.path) as tmp:
            Image.fromarray(self.array, mode="L").save(tmp, format="PNG")
        return self.path

    def abort(self) -> None:
        pass


def read_mask_preview(path: str | Path, max_size: int) -> np.ndarray:
    """A written id mask (png or GeoTIFF) decimated by nearest neighbour so its long side is at
    most ``max_size``: ``uint8 (h', w')``."""
    rasterio = _rasterio()
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        s = min(1.0, max_size / max(src.height, src.width))
        shape = (1, max(1, round(src.height * s)), max(1, round(src.width * s)))
        return src.read(1, out_shape=shape, resampling=Resampling.nearest)


def georeference(path: str | Path) -> tuple[Any, Any]:
    """``(crs, transform)`` of a raster file."""
    rasterio = _rasterio()
    with rasterio.open(path) as src:
        return src.crs, src.transform
