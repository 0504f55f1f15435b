"""Reading datasets in the benchmark archive format, validating them and writing dataset cards.

Format (PROTOCOL.md section 1): per split an image folder and a mask folder; images are
jpg/png/JPG, masks single-channel png with ids 0..N-1 and 255 = ignore; an image and its mask
share the file stem. Folders and class lists come from :mod:`drseg.data.catalog`.

Every problem with the files raises :class:`drseg.errors.DrsegInputError` naming the file:
a mask without an image or the reverse, image/mask size mismatch, label ids >= N other than
255, an unreadable or truncated image, an empty or missing split.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm import tqdm

from drseg.atomic import atomic_write_text
from drseg.data.catalog import DEFAULT_VARIANT, IGNORE, DatasetSpec, check_variant, get_dataset
from drseg.errors import DrsegInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
MASK_SUFFIX = ".png"
CARD_FORMAT = "drseg-dataset-card/1"

Pair = tuple[Path, Path]


# --------------------------------------------------------------------------- pairing
def _list_files(folder: Path, what: str) -> dict[str, Path]:
    """Image-like files of ``folder`` by stem (hidden files and non-image files skipped)."""
    if not folder.is_dir():
        raise DrsegInputError(f"{folder}: {what} folder not found")
    out: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        p = Path(entry.path)
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem in out:
            raise DrsegInputError(f"{p}: two {what} files share the stem {p.stem!r} "
                                  f"(the other is {out[p.stem].name})")
        out[p.stem] = p
    return out


def list_pairs(image_dir: str | Path, mask_dir: str | Path) -> list[Pair]:
    """Sorted (image, mask) pairs of a split, matched by file stem.

    Args:
        image_dir: folder of images (jpg/png/JPG/...).
        mask_dir: folder of single-channel png masks.

    Raises:
        DrsegInputError: missing folder, a mask that is not png, a mask without image or an
            image without mask (naming the file), or no pairs at all.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    images = _list_files(image_dir, "image")
    masks = _list_files(mask_dir, "mask")
    for stem, m in masks.items():
        if m.suffix.lower() != MASK_SUFFIX:
            raise DrsegInputError(f"{m}: masks must be png files")
        if stem not in images:
            raise DrsegInputError(f"{m}: mask without image (no {stem}.* in {image_dir})")
    for stem, im in images.items():
        if stem not in masks:
            raise DrsegInputError(f"{im}: image without mask (no {stem}.png in {mask_dir})")
    if not images:
        raise DrsegInputError(f"{image_dir}: empty split (no images)")
    return [(images[s], masks[s]) for s in sorted(images)]


def split_pairs(root: str | Path, dataset: str | DatasetSpec, split: str = "all") -> list[Pair]:
    """(image, mask) pairs of ``split`` of ``dataset`` under archive ``root``."""
    spec = get_dataset(dataset) if isinstance(dataset, str) else dataset
    dirs = spec.split(split)
    root = Path(root)
    return list_pairs(root / dirs.image_dir, root / dirs.mask_dir)


# --------------------------------------------------------------------------- reading
def read_image(path: str | Path) -> np.ndarray:
    """RGB image as uint8 (H, W, 3); DrsegInputError naming the file if unreadable/truncated."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DrsegInputError(f"{path}: unreadable or truncated image ({e})") from e


def read_mask(path: str | Path) -> np.ndarray:
    """Single-channel mask as uint8 (H, W); DrsegInputError if unreadable or multi-channel."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DrsegInputError(f"{path}: unreadable or truncated mask ({e})") from e
    if mode not in ("L", "P", "I", "I;16", "1") or arr.ndim != 2:
        raise DrsegInputError(f"{path}: mask has mode {mode}, expected a single-channel png "
                              f"(mode L) of class ids")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DrsegInputError(f"{path}: mask values outside 0..255 "
                                  f"(min {arr.min()}, max {arr.max()})")
        arr = arr.astype(np.uint8)
    return arr


def check_pair(image: np.ndarray, mask: np.ndarray, num_classes: int, image_path: Path | str,
               mask_path: Path | str) -> None:
    """Raise DrsegInputError on size mismatch or ids >= ``num_classes`` other than 255."""
    if image.shape[:2] != mask.shape:
        raise DrsegInputError(
            f"{mask_path}: size {mask.shape[1]}x{mask.shape[0]} does not match its image "
            f"{image_path} ({image.shape[1]}x{image.shape[0]})")
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    bad = [int(i) for i in present if i >= num_classes and i != IGNORE]
    if bad:
        raise DrsegInputError(
            f"{mask_path}: label ids {bad} >= number of classes {num_classes} "
            f"(valid: 0..{num_classes - 1} and 255 = ignore)")


class SegDataset(Dataset):
    """Image/mask pairs of one split, checked on read.

    Items are ``dict(image=float32 (3, H, W) RGB 0..255, mask=int64 (H, W) with 255 =
    ignore, path=str)``, passed through ``transform`` when given.

    Args:
        pairs: sorted (image path, mask path).
        num_stored_classes: number of ids the stored masks may hold (besides 255).
        lut: (256,) uint8 map from stored id to the class id of the chosen variant.
        classes: class names of the chosen variant, in id order.
        name: dataset name.
        split: split name.
        variant: class-list variant.
        transform: optional callable applied to each item dict.
    """

    def __init__(self, pairs: Sequence[Pair], num_stored_classes: int, lut: np.ndarray,
                 classes: Sequence[str], name: str = "", split: str = "", variant: str = "",
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if len(pairs) == 0:
            raise DrsegInputError(f"dataset {name!r} split {split!r}: empty split")
        self.pairs = list(pairs)
        self.num_stored_classes = num_stored_classes
        self.lut = np.asarray(lut, np.uint8)
        self.classes = list(classes)
        self.name, self.split, self.variant = name, split, variant
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image uint8 (H, W, 3) and re-mapped mask uint8 (H, W) of item ``i``, checked."""
        ip, mp = self.pairs[i]
        image = read_image(ip)
        mask = read_mask(mp)
        check_pair(image, mask, self.num_stored_classes, ip, mp)
        return image, self.lut[mask]

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, mask = self.load(i)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),  # (3, H, W)
            "mask": torch.from_numpy(mask.astype(np.int64)),  # (H, W)
            "path": str(self.pairs[i][0]),
        }
        return self.transform(item) if self.transform is not None else item


def open_split(root: str | Path, dataset: str, split: str = "all", variant: str = DEFAULT_VARIANT,
               transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> SegDataset:
    """Open ``split`` of catalog dataset ``dataset`` under archive ``root``.

    Args:
        root: archive root (e.g. ``data/synth`` or the real benchmark archive).
        dataset: catalog name (e.g. ``"synth_source"``, ``"Potsdam"``).
        split: ``"train"``, ``"val"`` or ``"all"``.
        variant: class-list variant (``catalog.VARIANTS``).
        transform: optional callable applied to each item dict.
    """
    spec = get_dataset(dataset)
    check_variant(variant)
    cl = spec.class_list(variant)
    pairs = split_pairs(root, spec, split)
    return SegDataset(pairs, spec.num_classes(DEFAULT_VARIANT), cl.lut(), cl.names, name=spec.name,
                      split=split, variant=variant, transform=transform)


def _quiet(progress: bool) -> dict:
    """tqdm kwargs: no bar when ``progress`` is False; otherwise tqdm's defaults, so that
    ``TQDM_DISABLE`` and non-tty detection still apply."""
    return {"leave": False} if progress else {"disable": True}


# --------------------------------------------------------------------------- cards
def file_list_sha256(pairs: Sequence[Pair], root: str | Path) -> str:
    """sha256 of the split's file list: one ``image<TAB>mask`` line per pair, paths relative
    to ``root`` with forward slashes."""
    root = Path(root)
    lines = [f"{Path(os.path.relpath(i, root)).as_posix()}\t{Path(os.path.relpath(m, root)).as_posix()}"
             for i, m in pairs]
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def split_card(root: str | Path, spec: DatasetSpec, split: str, variants: Sequence[str],
               progress: bool = True) -> dict[str, Any]:
    """Card entry of one split: counts, sizes, per-class pixel counts/frequencies per variant,
    sha256 of the file list and of the file contents. Reads (and so validates) every file."""
    pairs = split_pairs(root, spec, split)
    n_stored = spec.num_classes(DEFAULT_VARIANT)
    counts = np.zeros(256, np.int64)
    sizes: dict[str, int] = {}
    content = hashlib.sha256()
    for ip, mp in tqdm(pairs, desc=f"{spec.name}/{split}", **_quiet(progress)):
        for p in (ip, mp):
            content.update(Path(p).read_bytes())
        image, mask = read_image(ip), read_mask(mp)
        check_pair(image, mask, n_stored, ip, mp)
        counts += np.bincount(mask.ravel(), minlength=256)
        key = f"{image.shape[1]}x{image.shape[0]}"
        sizes[key] = sizes.get(key, 0) + 1
    dirs = spec.split(split)
    per_variant = {}
    for v in variants:
        cl = spec.class_list(v)
        lut = cl.lut()
        vc = np.zeros(256, np.int64)
        np.add.at(vc, lut, counts)  # stored-id counts -> variant-id counts
        k = len(cl.names)
        labelled = int(vc[:k].sum())
        per_variant[v] = {
            "classes": list(cl.names),
            "pixels": [int(x) for x in vc[:k]],
            "frequency": [round(float(x) / labelled, 6) if labelled else 0.0 for x in vc[:k]],
            "ignore_pixels": int(vc[IGNORE]),
        }
    return {
        "images": len(pairs),
        "image_dir": dirs.image_dir,
        "mask_dir": dirs.mask_dir,
        "image_sizes": dict(sorted(sizes.items())),
        "stored_ids": {str(i): int(c) for i, c in enumerate(counts) if c},
        "class_pixels": per_variant,
        "file_list_sha256": file_list_sha256(pairs, root),
        "content_sha256": content.hexdigest(),
    }


def dataset_card(root: str | Path, dataset: str, variants: Sequence[str] | None = None,
                 progress: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dataset card of ``dataset`` under ``root``: every split read and validated.

    Args:
        root: archive root.
        dataset: catalog name.
        variants: class-list variants to report pixel frequencies for (default: all).
        progress: show a tqdm bar per split.
        extra: more keys to record (e.g. generator params of a synthetic dataset).
    """
    from drseg.data.catalog import VARIANTS

    spec = get_dataset(dataset)
    variants = list(variants or VARIANTS)
    for v in variants:
        check_variant(v)
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "dataset": spec.name,
        "suite": spec.suite,
        "description": spec.description,
        "image_ext": spec.image_ext,
        "default_variant": DEFAULT_VARIANT,
        "classes": spec.classes(DEFAULT_VARIANT),
        "splits": {s: split_card(root, spec, s, variants, progress) for s in spec.splits},
    }
    if spec.is_source:
        stems = {s: {Path(i).stem for i, _m in split_pairs(root, spec, s)} for s in ("train", "val", "all")}
        card["all_is_train_plus_val"] = stems["all"] == stems["train"] | stems["val"]
        card["train_val_overlap"] = len(stems["train"] & stems["val"])
    if spec.domain is not None:
        card["domain"] = spec.domain
        card["concept_ids"] = dict(sorted(spec.concept_ids.items()))
    if extra:
        card.update(extra)
    return card


def write_card(card: dict[str, Any], path: str | Path) -> Path:
    """Write a card as stable, sorted-key-free JSON (atomic replace)."""
    return atomic_write_text(path, json.dumps(card, indent=2) + "\n")


# --------------------------------------------------------------------------- figure
def class_colors(spec: DatasetSpec, variant: str = DEFAULT_VARIANT) -> np.ndarray:
    """(N, 3) uint8 display colours of a dataset's classes: for synthetic datasets the colour
    of the class's first generator concept, for real ones matplotlib's tab20."""
    from drseg.data.synth import DISPLAY_COLORS

    n = spec.num_classes(variant)
    if spec.concept_ids and variant == DEFAULT_VARIANT:
        cols = np.zeros((n, 3), np.uint8)
        done = set()
        for c, k in spec.concept_ids.items():  # insertion order: first concept of each class
            if k not in done:
                cols[k] = DISPLAY_COLORS[c]
                done.add(k)
        return cols
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return np.array([[int(255 * x) for x in cmap(i % 20)[:3]] for i in range(n)], np.uint8)


def sample_figure(root: str | Path, datasets: Sequence[str], path: str | Path, samples: int = 4,
                  variant: str = DEFAULT_VARIANT, split: str = "all") -> list[Path]:
    """Figure of ``samples`` evenly spaced images of each dataset with their colourised masks
    and a class legend (ignore = black). Writes ``path`` (png) and the same name with .pdf,
    both byte-stable across reruns.

    Args:
        root: archive root.
        datasets: catalog names, one row pair each.
        path: output png path.
        samples: images per dataset.
        variant: class-list variant for the legend.
        split: split to draw from.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(datasets)
    fig, axes = plt.subplots(2 * n, samples, figsize=(1.5 * samples, 3.05 * n), squeeze=False,
                             gridspec_kw={"wspace": 0.04, "hspace": 0.05})
    for r, name in enumerate(datasets):
        ds = open_split(root, name, split, variant)
        spec = get_dataset(name)
        colors = class_colors(spec, variant)
        lut = np.zeros((256, 3), np.uint8)
        lut[: len(colors)] = colors
        idx = np.linspace(0, len(ds) - 1, samples).round().astype(int)
        for c, i in enumerate(idx):
            image, mask = ds.load(int(i))
            axes[2 * r, c].imshow(image, interpolation="nearest")
            axes[2 * r + 1, c].imshow(lut[mask], interpolation="nearest")
        for ax in axes[2 * r: 2 * r + 2].ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        h, w = ds.load(0)[0].shape[:2]
        axes[2 * r, 0].set_ylabel(f"{name}\n{len(ds)} imgs {w}x{h}", fontsize=8)
        axes[2 * r + 1, 0].set_ylabel("mask", fontsize=8)
        handles = [Patch(facecolor=colors[k] / 255.0, edgecolor="k", linewidth=0.3, label=cname)
                   for k, cname in enumerate(ds.classes)]
        handles.append(Patch(facecolor="black", label="ignore (255)"))
        axes[2 * r, samples - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.04, 1.0),
                                        fontsize=7, frameon=False, title=f"{name} ({variant})",
                                        title_fontsize=7)
    spec0 = get_dataset(datasets[0])
    axes[0, 0].set_title("Synthetic suite (procedurally generated, not real imagery)"
                         if spec0.suite == "synth" else "Benchmark archive samples",
                         loc="left", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    pdf = path.with_suffix(".pdf")
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return [path, pdf]
