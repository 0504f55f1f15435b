"""Caption corpus for pretraining the embedded tiny CLIP (issue 9).

CLIP is pretrained on captioned images with a global image-text contrastive loss and no masks.
This module builds the miniature of that corpus from the same procedural scene generator as the
segmentation benchmark (:mod:`drseg.data.synth`), but with its own seed and every domain of the
generator, so that it is separate from the benchmark images:

- every sample is either a whole scene or a crop of one (resized to the model input); its
  caption names the concepts that cover at least ``min_fraction`` of the view, largest first,
  each under one of several names ("buildings", "houses", "roofs"; "road", "street"; ...), in
  one of several phrasings;
- crops are what teaches *local* alignment: measured in issue 9, whole-scene captions alone give
  a model that knows synonyms but whose dense zero-shot segmentation stays at chance;
- the names cover the class names of every synthetic target dataset
  (:func:`check_vocabulary_covers`), including classes the segmentation source never labels:
  at segmentation time those are unseen classes that CLIP already knows.

The corpus is a pure function of its arguments: sample ``i`` is drawn from its own
``numpy.random.SeedSequence([seed, i])``, so the first ``n`` samples do not depend on how many
are drawn in total.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from drseg.data import synth
from drseg.errors import DrsegInputError

# Names a caption may use for each concept of drseg.data.synth.CONCEPTS. Each tuple covers the
# class names the synthetic catalog uses for that concept (check_vocabulary_covers tests it), plus
# everyday synonyms. The first name is the canonical one.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "building": ("buildings", "building", "houses", "house", "roofs", "roof", "rooftops"),
    "road": ("road", "roads", "street", "streets", "roadway"),
    "tree": ("trees", "tree", "forest", "woods", "tree canopy"),
    "low_vegetation": ("low vegetation", "grass", "meadow", "lawn", "vegetation"),
    "bare_soil": ("bare soil", "barren land", "soil", "dirt", "barren"),
    "water": ("water", "lake", "river", "pond", "sea"),
    "car": ("cars", "car", "vehicles", "vehicle"),
    "ship": ("ships", "ship", "boats", "boat"),
    "court": ("court", "sport court", "tennis court", "courts", "sports field"),
    "pavement": ("pavement", "parking lot", "impervious surfaces", "paved area", "parking"),
    "clutter": ("clutter", "background", "clutter/background", "other", "debris"),
    "sand": ("sand", "beach", "sandy ground", "dunes", "sandy area"),
    "field": ("field", "fields", "farmland", "agriculture", "agricultural", "cropland"),
}

# Phrasings. The first is the prompt template of the segmentation protocol (PROTOCOL.md,
# "A photo of a {} in the scene"; the tokenizer lower-cases); keeping it in the corpus keeps the
# prompts the later stages embed inside the distribution the tiny text tower was trained on.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {} in the scene",
    "an aerial photo of {}.",
    "a satellite image of {}.",
    "an aerial view showing {}.",
    "{} seen from above.",
    "a top-down image with {}.",
    "a remote sensing image of {}.",
    "an overhead photo of {}.",
)

PROMPT_TEMPLATE = TEMPLATES[0]


def concept_names(concepts: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """The caption names of each concept, in ``concepts`` order (default ``synth.CONCEPTS``).

    Args:
        concepts: concept identifiers; each must have an entry in :data:`SYNONYMS`.

    Raises:
        DrsegInputError: a concept has no names.
    """
    concepts = list(synth.CONCEPTS if concepts is None else concepts)
    missing = [c for c in concepts if c not in SYNONYMS]
    if missing:
        raise DrsegInputError(f"drseg.data.captions.SYNONYMS: no caption names for concepts {missing}")
    return {c: SYNONYMS[c] for c in concepts}


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def check_vocabulary_covers(class_names: Iterable[str], concepts: Sequence[str] | None = None) -> None:
    """Check that every class name (each synonym of a ``"a, b"`` entry) is a caption name.

    Args:
        class_names: a dataset's vocabulary (one entry per class, commas separate synonyms).
        concepts: concepts whose names count (default ``synth.CONCEPTS``).

    Raises:
        DrsegInputError: names that no caption uses, listed.
    """
    known = {_norm(n) for names in concept_names(concepts).values() for n in names}
    missing = sorted({_norm(s) for entry in class_names for s in entry.split(",")
                      if s.strip() and _norm(s) not in known})
    if missing:
        raise DrsegInputError(f"caption corpus: class names {missing} appear in no caption "
                              f"(add them to drseg.data.captions.SYNONYMS)")


def join_names(names: Sequence[str]) -> str:
    """``["a"]`` -> ``"a"``; ``["a", "b"]`` -> ``"a and b"``; ``["a", "b", "c"]`` -> ``"a, b and c"``."""
    if not names:
        raise DrsegInputError("join_names: no names to join")
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def make_caption(concepts: Sequence[str], rng: np.random.Generator,
                 templates: Sequence[str] = TEMPLATES) -> str:
    """A caption naming exactly ``concepts`` (in that order), each under a random name.

    Args:
        concepts: concept identifiers, at least one.
        rng: the random source for names and phrasing.
        templates: phrasings with one ``{}`` for the joined names.
    """
    table = concept_names(concepts)
    names = [table[c][rng.integers(len(table[c]))] for c in concepts]
    return templates[rng.integers(len(templates))].format(join_names(names))


def concept_fractions(mask: np.ndarray, num_concepts: int) -> np.ndarray:
    """Fraction of the labelled pixels of ``mask`` (ids 0..C-1, 255 ignored) per concept.

    Args:
        mask: uint8 (H, W) concept ids.
        num_concepts: C.

    Returns:
        float64 (C,), sums to 1 unless the mask is all ignore (then all 0).
    """
    ids = mask.reshape(-1)
    ids = ids[ids != 255]
    if ids.size and int(ids.max()) >= num_concepts:
        raise DrsegInputError(f"concept mask holds id {int(ids.max())} >= {num_concepts} concepts")
    counts = np.bincount(ids, minlength=num_concepts).astype(np.float64)
    return counts / max(ids.size, 1)


def named_concepts(fractions: np.ndarray, min_fraction: float, max_names: int) -> list[int]:
    """Indices of the concepts a caption names: covering >= ``min_fraction``, largest first,
    at most ``max_names`` (ties broken by concept index)."""
    order = np.lexsort((np.arange(len(fractions)), -fractions))  # by -fraction, then index
    keep = [int(i) for i in order if fractions[i] >= min_fraction and fractions[i] > 0]
    return keep[:max_names]


@dataclass
class CaptionCorpus:
    """Captioned images.

    Attributes:
        images: uint8 (N, S, S, 3) RGB.
        captions: N strings.
        named: bool (N, C): the concepts each caption names.
        fractions: float32 (N, C): the pixel fraction of each concept in each image.
        is_crop: bool (N,): crop of a scene (True) or the whole scene.
        concepts: the C concept identifiers (column order).
    """

    images: np.ndarray
    captions: list[str]
    named: np.ndarray
    fractions: np.ndarray
    is_crop: np.ndarray
    concepts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.captions)

    def groups(self) -> np.ndarray:
        """int64 (N,): one id per distinct set of named concepts; captions of one group say the
        same thing in other words, so they are all correct for each other's images."""
        _, inv = np.unique(self.named, axis=0, return_inverse=True)
        return inv.reshape(-1).astype(np.int64)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def make_corpus(
    n: int,
    seed: int,
    image_size: int = 64,
    scene_size: int = 128,
    crop_fraction: float = 0.7,
    crop_min: float = 0.2,
    crop_max: float = 0.6,
    min_fraction_scene: float = 0.01,
    min_fraction_crop: float = 0.08,
    max_names: int = 5,
    views_per_scene: int = 4,
    domains: Sequence[synth.Domain] | None = None,
    jitter_domains: bool = True,
    progress: bool = True,
) -> CaptionCorpus:
    """Render scenes and caption whole scenes and crops of them.

    Args:
        n: number of samples.
        seed: corpus seed (use one different from the benchmark's).
        image_size: side of the returned images (the CLIP input).
        scene_size: side at which scenes are rendered.
        crop_fraction: probability that a view is a crop rather than the whole scene.
        crop_min: smallest crop side, as a fraction of ``scene_size``.
        crop_max: largest crop side, as a fraction of ``scene_size``.
        min_fraction_scene: a whole scene's caption names concepts covering at least this.
        min_fraction_crop: a crop's caption names concepts covering at least this.
        max_names: at most this many concepts per caption (the largest).
        views_per_scene: views (whole or crops) taken of each rendered scene.
        domains: domains to draw scenes from, uniformly (default: all of ``synth.DOMAINS``,
            the suite's and the extra pretraining ones).
        jitter_domains: jitter each scene's domain in scale, light, palette and concept
            weights (``synth.sample_domain``), for a broader variety than the benchmark.
        progress: show a progress bar.

    Returns:
        The corpus; sample ``i`` depends only on ``(seed, i // views_per_scene)`` and its view index.

    Raises:
        DrsegInputError: a parameter out of range (named in the message).
    """
    checks = {
        "n": n >= 1, "image_size": image_size >= 8, "scene_size": scene_size >= image_size // 4,
        "crop_fraction": 0.0 <= crop_fraction <= 1.0,
        "crop_min": 0.0 < crop_min <= crop_max, "crop_max": crop_min <= crop_max <= 1.0,
        "min_fraction_scene": 0.0 <= min_fraction_scene < 1.0,
        "min_fraction_crop": 0.0 <= min_fraction_crop < 1.0,
        "max_names": max_names >= 1, "views_per_scene": views_per_scene >= 1,
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise DrsegInputError(f"caption corpus: parameter(s) out of range: {bad}")
    concepts = tuple(synth.CONCEPTS)
    concept_names(concepts)  # every concept has names
    domains = list(synth.DOMAINS.values() if domains is None else domains)
    if not domains:
        raise DrsegInputError("caption corpus: parameter 'domains' is empty")
    C = len(concepts)
    images = np.zeros((n, image_size, image_size, 3), np.uint8)
    named = np.zeros((n, C), bool)
    fractions = np.zeros((n, C), np.float32)
    is_crop = np.zeros(n, bool)
    captions: list[str] = []
    n_scenes = -(-n // views_per_scene)
    bar = tqdm(total=n, desc="caption corpus", disable=not progress)
    i = 0
    for s in range(n_scenes):
        rng = np.random.default_rng(np.random.SeedSequence([seed, s]))
        domain = domains[int(rng.integers(len(domains)))]
        if jitter_domains:
            domain = synth.sample_domain(rng, name=f"{domain.name}~", base=domain)
        scene, mask = synth.render_scene(rng, scene_size, domain)  # (S, S, 3), (S, S)
        for _ in range(views_per_scene):
            if i >= n:
                break
            crop = bool(rng.random() < crop_fraction)
            if crop:
                side = int(round(scene_size * rng.uniform(crop_min, crop_max)))
                side = max(2, min(side, scene_size))
                y, x = (int(v) for v in rng.integers(0, scene_size - side + 1, size=2))
                view, vmask = scene[y:y + side, x:x + side], mask[y:y + side, x:x + side]
            else:
                view, vmask = scene, mask
            frac = concept_fractions(vmask, C)
            keep = named_concepts(frac, min_fraction_crop if crop else min_fraction_scene, max_names)
            if not keep:  # nothing reaches the threshold: name the largest concept present
                keep = named_concepts(frac, 0.0, 1)
            if not keep:
                raise DrsegInputError(f"caption corpus: scene {s} (domain {domain.name!r}) rendered "
                                      f"a view with no labelled pixels")
            images[i] = _resize(view, image_size)
            fractions[i] = frac
            named[i, keep] = True
            is_crop[i] = crop
            captions.append(make_caption([concepts[k] for k in keep], rng))
            i += 1
            bar.update(1)
    bar.close()
    return CaptionCorpus(images=images, captions=captions, named=named, fractions=fractions,
                         is_crop=is_crop, concepts=concepts)
