"""The benchmark archive: scanning the real one in place, preparing either suite.

``scan(root)`` finds the 8 datasets of the public RSKT-Seg archive under ``root`` with the
exact folder layout of PROTOCOL.md section 1 (``DLRSD_split/{train,val}/{imgs,D2masks}``,
``DLRSD/{imgs,D2masks}``, ``UDD5/all/{src,gt}``, ...; jpg, png and JPG images), returns each
split's sorted (image, mask) pairs and class list, and reports which datasets are missing.

``prepare_synth_suite`` / ``prepare_real_suite`` are the work of the ``prepare`` stage. Both
leave a ``suite.json`` in the output folder; later stages call :func:`resolve_root` on that
folder to find the archive root (the folder itself for the synthetic suite, the real archive
for ``rskt``, which is read in place and never copied).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from drseg.data.catalog import (DEFAULT_VARIANT, SOURCES, SUITES, SYNTH, VARIANTS, check_variant,
                                get_dataset)
from drseg.data.dataset import CARD_FORMAT, Pair, dataset_card, sample_figure, split_pairs, write_card
from drseg.errors import DrsegInputError

log = logging.getLogger(__name__)

SUITE_FILE = "suite.json"
SUITE_FORMAT = "drseg-suite/1"


@dataclass
class ScannedDataset:
    """One dataset found in the archive.

    Args:
        name: catalog name.
        classes: class names of the scanned variant, in id order.
        splits: split -> sorted (image path, mask path) pairs.
    """

    name: str
    classes: list[str]
    splits: dict[str, list[Pair]]


@dataclass
class ArchiveScan:
    """Result of :func:`scan`: datasets found (catalog order) and the names missing."""

    root: Path
    variant: str
    datasets: dict[str, ScannedDataset] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def scan(root: str | Path, variant: str = DEFAULT_VARIANT,
         datasets: Sequence[str] = SUITES["rskt"]) -> ArchiveScan:
    """Scan the benchmark archive at ``root`` in place.

    A dataset counts as missing when none of its split folders exist. A dataset that is partly
    present (some split folders missing) or malformed (unpaired files, empty split, wrong mask
    type) raises DrsegInputError naming the folder or file.

    Args:
        root: archive root holding e.g. ``DLRSD/``, ``DLRSD_split/``, ``Potsdam/``.
        variant: class-list variant of the reported class lists.
        datasets: catalog names to look for (default: the 8 of the RSKT protocol).
    """
    root = Path(root)
    if not root.is_dir():
        raise DrsegInputError(f"{root}: archive root not found (set prepare.archive_root)")
    check_variant(variant)
    out = ArchiveScan(root=root, variant=variant)
    for name in datasets:
        spec = get_dataset(name)
        present = {s: (root / d.image_dir).is_dir() or (root / d.mask_dir).is_dir()
                   for s, d in spec.splits.items()}
        if not any(present.values()):
            out.missing.append(name)
            continue
        absent = [s for s, ok in present.items() if not ok]
        if absent:
            d = spec.split(absent[0])
            raise DrsegInputError(
                f"{root / d.image_dir}: dataset {name} is partly present: split {absent[0]!r} "
                f"missing (expected {d.image_dir} and {d.mask_dir} under {root})")
        out.datasets[name] = ScannedDataset(
            name=name, classes=spec.classes(variant),
            splits={s: split_pairs(root, spec, s) for s in spec.splits})
    return out


# --------------------------------------------------------------------------- suite folder
def write_suite_file(out: Path, info: dict[str, Any]) -> Path:
    """Write ``out/suite.json`` (format drseg-suite/1)."""
    out.mkdir(parents=True, exist_ok=True)
    p = out / SUITE_FILE
    p.write_text(json.dumps({"format": SUITE_FORMAT, **info}, indent=2) + "\n")
    return p


def load_suite(out: str | Path) -> dict[str, Any]:
    """The ``suite.json`` written by ``prepare`` in folder ``out``."""
    p = Path(out) / SUITE_FILE
    if not p.is_file():
        raise DrsegInputError(f"{p}: not found; run the prepare stage first")
    info = json.loads(p.read_text())
    if info.get("format") != SUITE_FORMAT:
        raise DrsegInputError(f"{p}: format {info.get('format')!r}, expected {SUITE_FORMAT!r}")
    return info


def resolve_root(out: str | Path) -> Path:
    """Archive root of the suite prepared in ``out``: ``out`` itself for the synthetic suite,
    the real archive (read in place) for ``rskt``."""
    info = load_suite(out)
    root = Path(info["root"])
    return Path(out) if str(root) == "." else root


def _clean_cards(cards_dir: Path) -> None:
    """Remove card files a previous prepare wrote (only files whose format is ours)."""
    if not cards_dir.is_dir():
        return
    for p in sorted(cards_dir.glob("*.json")):
        try:
            if json.loads(p.read_text()).get("format") == CARD_FORMAT:
                p.unlink()
        except (OSError, ValueError, AttributeError):
            continue


def _cards_and_figure(root: Path, names: Sequence[str], cards_dir: Path, figure: Path,
                      variants: Sequence[str] | None, figure_samples: int,
                      extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    variants = list(variants or VARIANTS)
    _clean_cards(cards_dir)
    counts = {}
    for name in names:
        card = dataset_card(root, name, variants, extra=(extra or {}).get(name))
        write_card(card, cards_dir / f"{name}.json")
        counts[name] = {s: v["images"] for s, v in card["splits"].items()}
    sample_figure(root, names, figure, samples=figure_samples)
    return counts


def prepare_synth_suite(out: str | Path, seed: int, image_size: int, train_images: int,
                        val_images: int, target_images: int, cards_dir: str | Path,
                        figure: str | Path, variants: Sequence[str] | None = None,
                        figure_samples: int = 4) -> dict[str, Any]:
    """Render the synthetic suite into ``out`` (archive layout), write its cards and figure.

    Args:
        out: output folder (archive root of the synthetic suite).
        seed: base seed of every scene.
        image_size: image side in pixels.
        train_images: source train images.
        val_images: source val images (source ``all`` = train + val).
        target_images: images of each target dataset (its ``all`` split).
        cards_dir: folder for ``<dataset>.json`` cards.
        figure: png path of the sample figure (a pdf is written beside it).
        variants: class-list variants recorded in the cards (default: all).
        figure_samples: samples per dataset in the figure.

    Returns:
        image counts per dataset and split.
    """
    from drseg.data.synth import generate_dataset

    for k, v in (("train_images", train_images), ("val_images", val_images),
                 ("target_images", target_images), ("image_size", image_size)):
        if int(v) < 1:
            raise DrsegInputError(f"params.yaml: prepare.{k} must be >= 1, got {v}")
    if image_size < 32:
        raise DrsegInputError(f"params.yaml: prepare.image_size must be >= 32, got {image_size}")
    out = Path(out)
    names = list(SUITES["synth"])
    extra = {}
    for name in names:
        spec = SYNTH[name]
        counts = {"train": train_images, "val": val_images} if spec.is_source else {"all": target_images}
        generate_dataset(out, name, seed, image_size, counts)
        extra[name] = {"generator": {"seed": seed, "image_size": image_size, "domain": spec.domain,
                                     "counts": counts}}
    write_suite_file(out, {"suite": "synth", "root": ".", "datasets": names,
                           "sources": list(SOURCES["synth"]), "missing": []})
    return _cards_and_figure(out, names, Path(cards_dir), Path(figure), variants, figure_samples,
                             extra)


def prepare_real_suite(out: str | Path, archive_root: str | Path, cards_dir: str | Path,
                       figure: str | Path, variants: Sequence[str] | None = None,
                       figure_samples: int = 4) -> dict[str, Any]:
    """Scan the real archive in place, write its cards, figure and ``out/suite.json``.

    Args:
        out: folder for ``suite.json`` (points at ``archive_root``; nothing is copied).
        archive_root: root of the public benchmark archive.
        cards_dir: folder for ``<dataset>.json`` cards.
        figure: png path of the sample figure (a pdf is written beside it).
        variants: class-list variants recorded in the cards (default: all).
        figure_samples: samples per dataset in the figure.

    Returns:
        image counts per dataset and split.
    """
    archive_root = Path(archive_root).resolve()
    found = scan(archive_root)
    if not found.datasets:
        raise DrsegInputError(f"{archive_root}: none of the 8 datasets found "
                              f"(expected folders such as DLRSD/, Potsdam/, UDD5/all/)")
    for name in found.missing:
        log.warning("%s: dataset %s not found in the archive", archive_root, name)
    names = list(found.datasets)
    write_suite_file(Path(out), {"suite": "rskt", "root": str(archive_root), "datasets": names,
                                 "sources": [s for s in SOURCES["rskt"] if s in found.datasets],
                                 "missing": found.missing})
    return _cards_and_figure(archive_root, names, Path(cards_dir), Path(figure), variants,
                             figure_samples)
