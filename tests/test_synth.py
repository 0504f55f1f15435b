"""The procedural scene generator and the synthetic dataset writer."""
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from drseg.data.catalog import IGNORE, SYNTH
from drseg.data.synth import (CONCEPT_ID, CONCEPTS, DOMAINS, concept_lut, concepts_present,
                              generate_dataset, render_scene, sample_domain)

SIZE = 64


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_same_seed_same_bytes_different_seed_different(name):
    d = DOMAINS[name]
    a_img, a_mask = render_scene(np.random.default_rng(7), SIZE, d)
    b_img, b_mask = render_scene(np.random.default_rng(7), SIZE, d)
    c_img, c_mask = render_scene(np.random.default_rng(8), SIZE, d)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    assert a_img.tobytes() != c_img.tobytes()
    assert a_img.shape == (SIZE, SIZE, 3) and a_img.dtype == np.uint8
    assert a_mask.shape == (SIZE, SIZE) and a_mask.dtype == np.uint8
    assert int(a_mask.max()) < len(CONCEPTS)


def test_every_concept_is_drawn_somewhere():
    seen = set()
    for name in sorted(DOMAINS):
        for s in range(12):
            _img, mask = render_scene(np.random.default_rng(s), 96, DOMAINS[name])
            seen.update(concepts_present(mask))
    assert seen == set(CONCEPTS)


def test_source_domain_never_draws_unseen_concepts():
    for s in range(30):
        _img, mask = render_scene(np.random.default_rng(s), SIZE, DOMAINS["source"])
        assert CONCEPT_ID["ship"] not in mask and CONCEPT_ID["court"] not in mask


def test_shadows_change_the_image_not_the_mask():
    lit = replace(DOMAINS["urban"], shadow_strength=0.0)
    img0, mask0 = render_scene(np.random.default_rng(3), SIZE, lit)
    img1, mask1 = render_scene(np.random.default_rng(3), SIZE, DOMAINS["urban"])
    np.testing.assert_array_equal(mask0, mask1)
    assert (img1.astype(int).sum(axis=2) < img0.astype(int).sum(axis=2) - 30).mean() > 0.02


def test_domains_differ_in_look():
    means = {n: np.mean([render_scene(np.random.default_rng(s), SIZE, DOMAINS[n])[0].mean(axis=(0, 1))
                         for s in range(6)], axis=0) for n in ("source", "urban", "rural", "harbor")}
    names = sorted(means)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(means[a] - means[b]).max() > 2.0, (a, b)


def test_sample_domain_is_seeded_and_valid():
    a = sample_domain(np.random.default_rng(0), "x")
    b = sample_domain(np.random.default_rng(0), "x")
    c = sample_domain(np.random.default_rng(1), "x")
    assert a == b and a != c
    img, mask = render_scene(np.random.default_rng(0), SIZE, a)
    assert img.shape == (SIZE, SIZE, 3) and int(mask.max()) < len(CONCEPTS)


def test_domain_rejects_unknown_concepts():
    with pytest.raises(ValueError, match="unknown concept"):
        replace(DOMAINS["source"], weights=(("spaceship", 1.0),))


def test_concept_lut_maps_unmapped_to_ignore():
    lut = concept_lut({"road": 0, "building": 1})
    assert lut[CONCEPT_ID["road"]] == 0 and lut[CONCEPT_ID["building"]] == 1
    assert lut[CONCEPT_ID["ship"]] == IGNORE


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_dataset_is_byte_identical_and_well_formed(tmp_path):
    for run in ("a", "b"):
        generate_dataset(tmp_path / run, "synth_source", seed=1, image_size=48,
                         counts={"train": 3, "val": 2}, progress=False)
        generate_dataset(tmp_path / run, "synth_harbor", seed=1, image_size=48,
                         counts={"all": 2}, progress=False)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb and len(fa) == 2 * (3 + 2) * 2 + 2 * 2
    spec = SYNTH["synth_source"]
    split = {s: sorted(p for p in fa if p.startswith(spec.split(s).image_dir)) for s in ("train", "val", "all")}
    stem = lambda p: p.rsplit("/", 1)[1].rsplit(".", 1)[0]  # noqa: E731
    assert {stem(p) for p in split["all"]} == {stem(p) for p in split["train"] + split["val"]}
    for name, n_cls in (("synth_source", 10), ("synth_harbor", 8)):
        dirs = SYNTH[name].split("all")
        for p in sorted((tmp_path / "a" / dirs.mask_dir).iterdir()):
            with Image.open(p) as im:
                assert im.mode == "L"
                ids = set(np.unique(np.asarray(im)).tolist())
            assert ids <= set(range(n_cls)) | {IGNORE}, (p, ids)
    assert any(p.endswith(".JPG") for p in fa)  # harbor images use the UDD5/VDD extension
    # another seed gives other images
    generate_dataset(tmp_path / "c", "synth_harbor", seed=2, image_size=48, counts={"all": 2},
                     progress=False)
    fc = _files(tmp_path / "c")
    assert all(fc[k] != fa[k] for k in fc if k.endswith(".JPG"))
