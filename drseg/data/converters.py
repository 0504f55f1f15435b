"""Converters from the official dataset releases to the benchmark archive layout.

For users without the RSKT-Seg archive: each converter reads an official release and writes
``<out_root>/<archive folders of the catalog>`` with images and single-channel png masks
(PIL mode "L": ids 0..N-1, 255 = ignore). Writing palette mode "P" is what zeroed every label
in a converter elsewhere; :func:`save_mask` writes "L" and checks it on re-read.

Labels may be colour-coded RGB (ISPRS, UAVid, iSAID, and the colour visualisations of UDD5 and
VDD) or already single-channel ids (LoveDA, the id pngs of UDD5 and VDD). An unknown colour or
id is an error naming the file, the colour and a pixel, unless ``unknown_to_ignore`` maps it to
255.

| converter | input | output (catalog folders) |
|---|---|---|
| :func:`convert_isprs` | ISPRS Potsdam / Vaihingen tiles + colour labels, cut into crops | ``Potsdam/{imgs,D2masks}``, ``Vaihingen/{imgs,D2masks}`` |
| :func:`convert_uavid` | ``<seq>/Images/*.png`` + ``<seq>/Labels/*.png`` colour labels | ``uavid/{Images,Labels}`` |
| :func:`convert_udd5` | ``*/src/*.JPG`` + ``*/gt/*.png`` | ``UDD5/all/{src,gt}`` |
| :func:`convert_vdd` | ``*/src/*.JPG`` + ``*/gt/*.png`` | ``VDD/{src,gt}`` |
| :func:`convert_loveda` | ``*/images_png`` + ``*/masks_png`` (ids 0..7 as released) | ``LoveDA/{images_png,masks_png}`` |
| :func:`convert_isaid` | ``P*.png`` + ``P*_instance_color_RGB.png``, cut into patches | ``iSAID_split/<split>/...`` and ``iSAID/...`` (all) |

Colour tables: ISPRS and UAVid from PROTOCOL.md; iSAID from the iSAID devkit palette
(background black -> ignore, as in the archive); UDD5 and VDD visualisation colours from
published MMSegmentation / detectron2 registrations of those datasets. If a release uses other
colours, the unknown-colour error says which.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from drseg.data.catalog import IGNORE, get_dataset
from drseg.data.dataset import read_image
from drseg.errors import DrsegInputError

log = logging.getLogger(__name__)

Image.MAX_IMAGE_PIXELS = None  # ISPRS / iSAID tiles exceed PIL's decompression-bomb default

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class LabelCoding:
    """How a release encodes its labels.

    Args:
        name: dataset name (catalog).
        colors: ``(rgb, id)`` pairs of colour-coded labels (id 255 = ignore).
        num_classes: ids a single-channel label may hold (besides 255).
    """

    name: str
    colors: tuple[tuple[RGB, int], ...]
    num_classes: int


_ISPRS = (((255, 255, 255), 0), ((0, 0, 255), 1), ((0, 255, 255), 2), ((0, 255, 0), 3),
          ((255, 255, 0), 4), ((255, 0, 0), 5),
          ((0, 0, 0), IGNORE))  # black = eroded boundary in the *_label eroded release
CODINGS: dict[str, LabelCoding] = {
    "Potsdam": LabelCoding("Potsdam", _ISPRS, 6),
    "Vaihingen": LabelCoding("Vaihingen", _ISPRS, 6),
    "UAVid": LabelCoding("UAVid", (
        ((0, 0, 0), 0), ((128, 0, 0), 1), ((128, 64, 128), 2), ((0, 128, 0), 3),
        ((128, 128, 0), 4), ((64, 0, 128), 5), ((192, 0, 192), 6), ((64, 64, 0), 7)), 8),
    "UDD5": LabelCoding("UDD5", (
        ((107, 142, 35), 0), ((102, 102, 156), 1), ((128, 64, 128), 2), ((0, 0, 142), 3),
        ((0, 0, 0), 4)), 5),
    "VDD": LabelCoding("VDD", (
        ((0, 0, 0), 0), ((128, 0, 0), 1), ((128, 64, 128), 2), ((0, 128, 0), 3),
        ((64, 0, 128), 4), ((192, 192, 128), 5), ((0, 0, 128), 6)), 7),
    "LoveDA": LabelCoding("LoveDA", (), 8),
    "iSAID": LabelCoding("iSAID", (
        ((0, 0, 0), IGNORE), ((0, 0, 63), 0), ((0, 63, 63), 1), ((0, 63, 0), 2),
        ((0, 63, 127), 3), ((0, 63, 191), 4), ((0, 63, 255), 5), ((0, 127, 63), 6),
        ((0, 127, 127), 7), ((0, 0, 127), 8), ((0, 0, 191), 9), ((0, 0, 255), 10),
        ((0, 191, 127), 11), ((0, 127, 191), 12), ((0, 127, 255), 13), ((0, 100, 155), 14)), 15),
}


# --------------------------------------------------------------------------- label decoding
def colors_to_ids(rgb: np.ndarray, colors: Sequence[tuple[RGB, int]], path: str | Path,
                  unknown_to_ignore: bool = False) -> np.ndarray:
    """Map a colour-coded label (H, W, 3) uint8 to ids (H, W) uint8.

    Args:
        rgb: colour label.
        colors: ``(rgb, id)`` table.
        path: file name for error messages.
        unknown_to_ignore: map colours not in the table to 255 instead of raising.
    """
    key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    uniq, inverse = np.unique(key.ravel(), return_inverse=True)
    table = {(r << 16) | (g << 8) | b: k for (r, g, b), k in colors}
    out = np.empty(len(uniq), np.uint8)
    for j, u in enumerate(uniq.tolist()):
        if u in table:
            out[j] = table[u]
        elif unknown_to_ignore:
            out[j] = IGNORE
        else:
            colour = ((u >> 16) & 255, (u >> 8) & 255, u & 255)
            y, x = np.unravel_index(int(np.flatnonzero(key.ravel() == u)[0]), key.shape)
            n = int((key == u).sum())
            raise DrsegInputError(
                f"{path}: unknown label colour {colour} ({n} pixels, first at row {y}, col {x}); "
                f"known colours: {[c for c, _ in colors]}; pass unknown_to_ignore "
                f"(--unknown-to-ignore) to map it to 255")
    return out[inverse].reshape(key.shape)


def read_label(path: str | Path, coding: LabelCoding, unknown_to_ignore: bool = False) -> np.ndarray:
    """Read a release label as ids (H, W) uint8: colour labels through ``coding.colors``,
    single-channel labels checked against ``coding.num_classes`` (255 allowed)."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA"):
                arr = np.asarray(im.convert("RGB"))
            else:
                arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DrsegInputError(f"{path}: unreadable or truncated label ({e})") from e
    if arr.ndim == 3:
        if not coding.colors:
            raise DrsegInputError(f"{path}: {coding.name} labels must be single-channel ids, got {mode}")
        return colors_to_ids(arr, coding.colors, path, unknown_to_ignore)
    ids = arr.astype(np.int64)
    bad = sorted(int(v) for v in np.unique(ids) if not (0 <= v < coding.num_classes or v == IGNORE))
    if bad:
        if not unknown_to_ignore:
            raise DrsegInputError(f"{path}: unknown label ids {bad} (valid 0..{coding.num_classes - 1} "
                                  f"and 255); pass unknown_to_ignore to map them to 255")
        ids[np.isin(ids, bad)] = IGNORE
    return ids.astype(np.uint8)


def save_mask(ids: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write ids (H, W) uint8 as a mode-"L" png and check the re-read values."""
    path = Path(path)
    _check_target(path, overwrite)
    if ids.dtype != np.uint8 or ids.ndim != 2:
        raise ValueError(f"save_mask: expected uint8 (H, W), got {ids.dtype} {ids.shape}")
    Image.fromarray(ids, mode="L").save(path, format="PNG")
    with Image.open(path) as im:
        if im.mode != "L" or not np.array_equal(np.asarray(im), ids):
            raise RuntimeError(f"{path}: mask did not round-trip as mode L")
    return path


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise DrsegInputError(f"{path}: exists; refusing to overwrite (pass overwrite=True / --overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)


def crop_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of crops of size ``crop`` every ``stride`` pixels covering ``length``; the
    last crop is aligned to the end. One crop at 0 when ``length <= crop``."""
    if crop <= 0 or stride <= 0:
        raise DrsegInputError(f"crop size and stride must be > 0 (got crop={crop}, stride={stride})")
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    starts.append(length - crop)
    return sorted(set(starts))


# --------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class _Job:
    image: Path
    label: Path
    stem: str


def _write(jobs: Sequence[_Job], targets: Sequence[tuple[Path, Path]], coding: LabelCoding,
           image_ext: str, crop: int | None = None, stride: int | None = None,
           unknown_to_ignore: bool = False, overwrite: bool = False, desc: str = "") -> int:
    """Convert ``jobs`` into every (image dir, mask dir) of ``targets``; returns items written
    per target. Without crops, images with the target extension are copied byte for byte."""
    stems = {}
    for j in jobs:
        if j.stem in stems:
            raise DrsegInputError(f"{j.image}: output name {j.stem!r} also produced by {stems[j.stem]}")
        stems[j.stem] = j.image
    n = 0
    for job in tqdm(jobs, desc=desc or coding.name, leave=False):
        ids = read_label(job.label, coding, unknown_to_ignore)
        if crop is None:
            size = _image_size(job.image)
            if size != (ids.shape[1], ids.shape[0]):
                raise DrsegInputError(f"{job.label}: size {ids.shape[1]}x{ids.shape[0]} does not match "
                                      f"its image {job.image} ({size[0]}x{size[1]})")
            for img_dir, mask_dir in targets:
                dst = img_dir / f"{job.stem}{image_ext}"
                _check_target(dst, overwrite)
                if job.image.suffix == image_ext:
                    shutil.copyfile(job.image, dst)
                else:
                    Image.fromarray(read_image(job.image)).save(dst)
                save_mask(ids, mask_dir / f"{job.stem}.png", overwrite)
            n += 1
            continue
        image = read_image(job.image)
        if image.shape[:2] != ids.shape:
            raise DrsegInputError(f"{job.label}: size {ids.shape[1]}x{ids.shape[0]} does not match "
                                  f"its image {job.image} ({image.shape[1]}x{image.shape[0]})")
        h, w = ids.shape
        for y in crop_starts(h, crop, stride or crop):
            for x in crop_starts(w, crop, stride or crop):
                stem = f"{job.stem}_{y}_{x}"
                for img_dir, mask_dir in targets:
                    dst = img_dir / f"{stem}{image_ext}"
                    _check_target(dst, overwrite)
                    Image.fromarray(image[y:y + crop, x:x + crop]).save(dst)
                    save_mask(np.ascontiguousarray(ids[y:y + crop, x:x + crop]),
                              mask_dir / f"{stem}.png", overwrite)
                n += 1
    return n


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DrsegInputError(f"{path}: unreadable image ({e})") from e


def _targets(out_root: Path, dataset: str, splits: Iterable[str]) -> list[tuple[Path, Path]]:
    spec = get_dataset(dataset)
    return [(out_root / spec.split(s).image_dir, out_root / spec.split(s).mask_dir) for s in splits]


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        raise DrsegInputError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _pair_by_key(images: list[Path], labels: list[Path], key, what: str) -> list[tuple[Path, Path, str]]:
    """Pair files whose ``key(path)`` agree; DrsegInputError naming any file left alone."""
    li = {}
    for p in labels:
        li.setdefault(key(p), p)
    ii = {key(p): p for p in images}
    for k, p in li.items():
        if k not in ii:
            raise DrsegInputError(f"{p}: {what} label without image")
    for k, p in ii.items():
        if k not in li:
            raise DrsegInputError(f"{p}: {what} image without label")
    if not ii:
        raise DrsegInputError(f"{what}: no images found")
    return [(ii[k], li[k], k) for k in sorted(ii)]


# --------------------------------------------------------------------------- converters
_ISPRS_SUFFIXES = ("_label_noBoundary", "_noBoundary", "_label", "_RGBIR", "_RGB", "_IRRG")


def _isprs_key(p: Path) -> str:
    stem = p.stem
    for s in _ISPRS_SUFFIXES:
        if stem.endswith(s):
            stem = stem[: -len(s)]
    return stem


def convert_isprs(image_dir: str | Path, label_dir: str | Path, out_root: str | Path,
                  dataset: str = "Potsdam", crop: int = 512, stride: int = 512,
                  unknown_to_ignore: bool = False, overwrite: bool = False) -> int:
    """ISPRS Potsdam / Vaihingen: colour-coded tiles cut into ``crop`` crops every ``stride``.

    Tiles pair by name without the release suffixes (``top_potsdam_2_10_RGB.tif`` with
    ``top_potsdam_2_10_label.tif``; Vaihingen ``top_mosaic_09cm_area1.tif`` in both folders or
    with ``_noBoundary``). Crops are named ``<tile>_<row>_<col>.png``.

    Args:
        image_dir: folder of image tiles (tif/png).
        label_dir: folder of colour label tiles.
        out_root: archive root to write ``<dataset>/imgs`` and ``<dataset>/D2masks`` into.
        dataset: "Potsdam" or "Vaihingen".
        crop: crop side in pixels.
        stride: step between crops (last crop aligned to the tile border).
        unknown_to_ignore: map unknown colours to 255 instead of failing.
        overwrite: replace existing output files.

    Returns:
        number of crops written.
    """
    if dataset not in ("Potsdam", "Vaihingen"):
        raise DrsegInputError(f"convert_isprs: dataset must be Potsdam or Vaihingen, got {dataset!r}")
    sfx = (".tif", ".tiff", ".png")
    pairs = _pair_by_key(_files(Path(image_dir), sfx), _files(Path(label_dir), sfx), _isprs_key, dataset)
    jobs = [_Job(i, lab, k) for i, lab, k in pairs]
    return _write(jobs, _targets(Path(out_root), dataset, ["all"]), CODINGS[dataset], ".png",
                  crop=crop, stride=stride, unknown_to_ignore=unknown_to_ignore, overwrite=overwrite,
                  desc=dataset)


def _sibling_jobs(src_root: Path, image_folder: str, label_folder: str, image_sfx: tuple[str, ...],
                  prefix_parent: bool) -> list[_Job]:
    """Jobs for every ``<...>/<image_folder>/*`` with labels in the sibling ``label_folder``."""
    if not src_root.is_dir():
        raise DrsegInputError(f"{src_root}: folder not found")
    jobs: list[_Job] = []
    img_dirs = sorted(p for p in src_root.rglob(image_folder) if p.is_dir())
    if not img_dirs:
        raise DrsegInputError(f"{src_root}: no '{image_folder}' folders found")
    for img_dir in img_dirs:
        lab_dir = img_dir.parent / label_folder
        if not lab_dir.is_dir():
            raise DrsegInputError(f"{lab_dir}: label folder missing beside {img_dir}")
        rel = img_dir.parent.relative_to(src_root).as_posix().replace("/", "_")
        for im, lab, k in _pair_by_key(_files(img_dir, image_sfx), _files(lab_dir, (".png",)),
                                       lambda p: p.stem, str(img_dir.parent)):
            stem = f"{rel}_{k}" if prefix_parent and rel not in ("", ".") else k
            jobs.append(_Job(im, lab, stem))
    return jobs


def convert_uavid(src_root: str | Path, out_root: str | Path, unknown_to_ignore: bool = False,
                  overwrite: bool = False) -> int:
    """UAVid: every ``<seq>/Images/*.png`` with its colour label ``<seq>/Labels/*.png`` (train
    and val sequences alike) to ``uavid/{Images,Labels}``, named ``<seq>_<frame>``."""
    jobs = _sibling_jobs(Path(src_root), "Images", "Labels", (".png",), prefix_parent=True)
    return _write(jobs, _targets(Path(out_root), "UAVid", ["all"]), CODINGS["UAVid"], ".png",
                  unknown_to_ignore=unknown_to_ignore, overwrite=overwrite, desc="UAVid")


def convert_udd5(src_root: str | Path, out_root: str | Path, unknown_to_ignore: bool = False,
                 overwrite: bool = False) -> int:
    """UDD5: every ``*/src/*.JPG`` with ``*/gt/*.png`` (train and val) to ``UDD5/all/{src,gt}``;
    labels as ids 0..4 or the colour visualisation."""
    jobs = _sibling_jobs(Path(src_root), "src", "gt", (".jpg", ".jpeg", ".png"), prefix_parent=False)
    return _write(jobs, _targets(Path(out_root), "UDD5", ["all"]), CODINGS["UDD5"], ".JPG",
                  unknown_to_ignore=unknown_to_ignore, overwrite=overwrite, desc="UDD5")


def convert_vdd(src_root: str | Path, out_root: str | Path, unknown_to_ignore: bool = False,
                overwrite: bool = False) -> int:
    """VDD: every ``*/src/*.JPG`` with ``*/gt/*.png`` (train, val, test) to ``VDD/{src,gt}``;
    labels as ids 0..6 or the colour visualisation."""
    jobs = _sibling_jobs(Path(src_root), "src", "gt", (".jpg", ".jpeg", ".png"), prefix_parent=False)
    return _write(jobs, _targets(Path(out_root), "VDD", ["all"]), CODINGS["VDD"], ".JPG",
                  unknown_to_ignore=unknown_to_ignore, overwrite=overwrite, desc="VDD")


def convert_loveda(src_root: str | Path, out_root: str | Path, unknown_to_ignore: bool = False,
                   overwrite: bool = False) -> int:
    """LoveDA: every ``*/images_png`` with its ``masks_png`` (Train/Val, Urban/Rural) to
    ``LoveDA/{images_png,masks_png}``; masks keep the released ids 0..7 (0 = no-data), as the
    archive does. File names are unique across the release; a clash is an error."""
    jobs = _sibling_jobs(Path(src_root), "images_png", "masks_png", (".png",), prefix_parent=False)
    return _write(jobs, _targets(Path(out_root), "LoveDA", ["all"]), CODINGS["LoveDA"], ".png",
                  unknown_to_ignore=unknown_to_ignore, overwrite=overwrite, desc="LoveDA")


def convert_isaid(image_dir: str | Path, label_dir: str | Path, out_root: str | Path, split: str,
                  crop: int = 800, stride: int = 600, unknown_to_ignore: bool = False,
                  overwrite: bool = False) -> int:
    """iSAID: images ``P0000.png`` with semantic colour labels
    ``P0000_instance_color_RGB.png`` cut into patches, written to ``iSAID_split/<split>`` and to
    ``iSAID`` ("all" = train + val, as in the archive). Background becomes 255.

    Args:
        image_dir: folder of iSAID images.
        label_dir: folder of ``*_instance_color_RGB.png`` labels.
        out_root: archive root.
        split: "train" or "val".
        crop: patch side.
        stride: step between patches.
        unknown_to_ignore: map unknown colours to 255 instead of failing.
        overwrite: replace existing output files.
    """
    if split not in ("train", "val"):
        raise DrsegInputError(f"convert_isaid: split must be train or val, got {split!r}")
    key = lambda p: p.stem.removesuffix("_instance_color_RGB")  # noqa: E731
    labels = [p for p in _files(Path(label_dir), (".png",)) if p.stem.endswith("_instance_color_RGB")]
    images = [p for p in _files(Path(image_dir), (".png",)) if "_instance_" not in p.stem]
    pairs = _pair_by_key(images, labels, key, "iSAID")
    jobs = [_Job(i, lab, k) for i, lab, k in pairs]
    return _write(jobs, _targets(Path(out_root), "iSAID", [split, "all"]), CODINGS["iSAID"], ".png",
                  crop=crop, stride=stride, unknown_to_ignore=unknown_to_ignore, overwrite=overwrite,
                  desc=f"iSAID/{split}")
