"""Tests of the caption corpus (drseg.data.captions) at tiny size."""
import numpy as np
import pytest

from drseg.data import captions as C
from drseg.data import catalog, synth
from drseg.errors import DrsegInputError

SMALL = dict(image_size=32, scene_size=64, views_per_scene=4, progress=False)


@pytest.fixture(scope="module")
def corpus():
    return C.make_corpus(24, seed=5, **SMALL)


def _name_to_concept() -> dict[str, str]:
    return {n: c for c, names in C.concept_names().items() for n in names}


def parse_caption(caption: str) -> list[str]:
    """Recover the names a caption lists (inverse of TEMPLATES.format(join_names(...)))."""
    for t in C.TEMPLATES:
        pre, post = t.split("{}")
        if caption.startswith(pre) and caption.endswith(post):
            body = caption[len(pre):len(caption) - len(post)]
            head, _, last = body.rpartition(" and ")
            names = (head.split(", ") if head else []) + [last]
            if all(n in _name_to_concept() for n in names):
                return names
    raise AssertionError(f"caption matches no template: {caption!r}")


def test_every_concept_has_names_and_names_are_unambiguous():
    table = C.concept_names()
    assert list(table) == list(synth.CONCEPTS)
    all_names = [n for names in table.values() for n in names]
    assert len(all_names) == len(set(all_names)), "a name belongs to two concepts"
    for names in table.values():
        assert len(names) >= 3
        assert not any(" and " in n or ", " in n for n in names)


def test_vocabulary_covers_every_synthetic_dataset_and_variant():
    for spec in catalog.SYNTH.values():
        for variant in catalog.VARIANTS:
            C.check_vocabulary_covers(spec.classes(variant))
    with pytest.raises(DrsegInputError, match="spaceship"):
        C.check_vocabulary_covers(["road", "spaceship, rocket"])


def test_protocol_prompt_template_is_in_the_corpus():
    from drseg.models.clip import DEFAULT_TEMPLATES

    assert DEFAULT_TEMPLATES[0].lower() == C.PROMPT_TEMPLATE


def test_join_and_make_caption():
    assert C.join_names(["a"]) == "a"
    assert C.join_names(["a", "b"]) == "a and b"
    assert C.join_names(["a", "b", "c"]) == "a, b and c"
    rng = np.random.default_rng(0)
    cap = C.make_caption(["water", "ship"], rng)
    names = parse_caption(cap)
    assert [_name_to_concept()[n] for n in names] == ["water", "ship"]
    with pytest.raises(DrsegInputError):
        C.join_names([])


def test_concept_fractions_and_named_concepts():
    mask = np.array([[0, 0, 1, 255], [0, 2, 1, 255]], np.uint8)
    f = C.concept_fractions(mask, 4)
    np.testing.assert_allclose(f, [3 / 6, 2 / 6, 1 / 6, 0])
    assert C.named_concepts(f, 0.2, 5) == [0, 1]
    assert C.named_concepts(f, 0.0, 2) == [0, 1]
    with pytest.raises(DrsegInputError, match="id 7"):
        C.concept_fractions(np.array([[7]], np.uint8), 4)


def test_corpus_is_deterministic_and_seeded(corpus):
    again = C.make_corpus(24, seed=5, **SMALL)
    assert again.images.tobytes() == corpus.images.tobytes()
    assert again.captions == corpus.captions
    np.testing.assert_array_equal(again.named, corpus.named)
    other = C.make_corpus(24, seed=6, **SMALL)
    assert other.images.tobytes() != corpus.images.tobytes()
    # sample i does not depend on the corpus size
    prefix = C.make_corpus(10, seed=5, **SMALL)
    assert prefix.images.tobytes() == corpus.images[:10].tobytes()
    assert prefix.captions == corpus.captions[:10]


def test_captions_name_only_present_concepts(corpus):
    assert corpus.images.shape == (24, 32, 32, 3) and corpus.images.dtype == np.uint8
    assert corpus.is_crop.any() and (~corpus.is_crop).any()
    to_concept = _name_to_concept()
    for i, cap in enumerate(corpus.captions):
        named = {to_concept[n] for n in parse_caption(cap)}
        expected = {corpus.concepts[k] for k in np.flatnonzero(corpus.named[i])}
        assert named == expected, cap
        thr = 0.08 if corpus.is_crop[i] else 0.01  # make_corpus defaults
        for k in np.flatnonzero(corpus.named[i]):
            assert corpus.fractions[i, k] > 0
            # named = above the threshold, unless nothing was (then the largest concept)
            assert corpus.fractions[i, k] >= thr or corpus.named[i].sum() == 1
        assert corpus.named[i].sum() <= 5
    np.testing.assert_allclose(corpus.fractions.sum(1), 1.0, atol=1e-5)


def test_groups_are_content_sets(corpus):
    g = corpus.groups()
    for i in range(len(corpus)):
        for j in range(len(corpus)):
            assert (g[i] == g[j]) == bool((corpus.named[i] == corpus.named[j]).all())


@pytest.mark.parametrize("kw", [dict(crop_fraction=1.5), dict(crop_min=0.0),
                                dict(crop_min=0.7, crop_max=0.5), dict(max_names=0),
                                dict(views_per_scene=0), dict(domains=[])])
def test_bad_parameters_raise(kw):
    with pytest.raises(DrsegInputError):
        C.make_corpus(4, seed=0, **{**SMALL, **kw})
