"""SPSD with a (randomly initialised) tiny frozen CLIP: prototypes and zero-shot studies."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from drseg.engine import spsd as espsd
from drseg.engine.metrics import confusion_matrix, summarize
from drseg.errors import DrsegInputError
from drseg.models import clip as dclip


class ToySet(torch.utils.data.Dataset):
    """Images with block masks: class 0 left half, class 1 right half, class 2 a corner
    (only in even images), class 3 never present."""

    def __init__(self, n=6, size=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g) * 255
        self.masks = torch.zeros(n, size, size, dtype=torch.long)
        self.masks[:, :, size // 2:] = 1
        self.masks[::2, :16, :16] = 2
        self.masks[:, -4:, :] = 255  # an ignore strip

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "mask": self.masks[i], "path": f"img{i}.png"}


@pytest.fixture(scope="module")
def tiny_clip():
    model, tok = dclip.load_open_clip("drseg-tiny-clip", None, seed=0)
    return model, tok


def test_patch_labels_purity_and_ignore():
    m = torch.zeros(1, 4, 8, dtype=torch.long)  # two 4x4 patches
    m[0, :, 4:] = 1
    m[0, 0, :3] = 1  # left patch: 13/16 class 0, 3/16 class 1
    m[0, :2, 4:] = 255  # right patch: half ignore, half class 1
    lab = espsd.patch_labels(m, (1, 2), num_classes=2, purity=0.75)
    assert lab.tolist() == [[[0, -1]]]  # right patch: class 1 covers only 8/16
    lab = espsd.patch_labels(m, (1, 2), num_classes=2, purity=0.5 + 1e-3)
    assert lab.tolist() == [[[0, -1]]]
    m[0, :2, 4:] = 1
    assert espsd.patch_labels(m, (1, 2), 2, 1.0).tolist() == [[[-1, 1]]]
    with pytest.raises(DrsegInputError, match="purity"):
        espsd.patch_labels(m, (1, 2), 2, 0.5)
    m[0, 0, 0] = 7
    with pytest.raises(DrsegInputError, match="ids"):
        espsd.patch_labels(m, (1, 2), 2, 0.75)


def _class_features(model, ds, k, purity=0.75):
    """All unit features of patches labelled k, computed directly (one image at a time)."""
    rows = []
    for i in range(len(ds)):
        s = ds[i]
        f = F.normalize(espsd.clip_view(model, s["image"][None], None), dim=1)  # (1, C, h, w)
        lab = espsd.patch_labels(s["mask"][None], tuple(f.shape[-2:]), 4, purity)
        rows.append(f.permute(0, 2, 3, 1)[lab == k])  # (n, C)
    return torch.cat(rows)


def test_extract_prototypes_samples_real_class_features(tiny_clip):
    model, _ = tiny_clip
    ds = ToySet()
    ps = espsd.extract_prototypes(model, ds, num_classes=4, num_prototypes=5, seed=0,
                                  batch_size=4, progress=False)
    C = model.visual.output_dim
    assert ps.prototypes.shape == (3, 5, C) and ps.class_ids == [0, 1, 2]
    assert ps.absent == [3] and ps.patches[3] == 0 and ps.pixels[3] == 0
    assert ps.grid == (8, 8) and ps.images == 6
    assert_close(ps.prototypes.norm(dim=-1), torch.ones(3, 5))
    for row, k in enumerate(ps.class_ids):
        pool = _class_features(model, ds, k)
        assert ps.patches[k] == pool.shape[0]
        # every prototype is one of class k's patch features; without replacement when possible
        dist = torch.cdist(ps.prototypes[row].double(), pool.double())  # (N_p, n)
        nearest = dist.min(dim=1)
        assert (nearest.values < 1e-4).all()
        if pool.shape[0] >= 5:
            assert len(set(nearest.indices.tolist())) == 5


def test_extract_prototypes_deterministic_and_batch_independent(tiny_clip):
    model, _ = tiny_clip
    ds = ToySet()
    a = espsd.extract_prototypes(model, ds, 4, 5, seed=1, batch_size=4, progress=False)
    b = espsd.extract_prototypes(model, ds, 4, 5, seed=1, batch_size=4, progress=False)
    assert torch.equal(a.prototypes, b.prototypes)
    c = espsd.extract_prototypes(model, ds, 4, 5, seed=1, batch_size=1, progress=False)
    assert_close(a.prototypes, c.prototypes, rtol=1e-4, atol=1e-5)
    d = espsd.extract_prototypes(model, ds, 4, 5, seed=2, batch_size=4, progress=False)
    assert not torch.allclose(a.prototypes, d.prototypes)


def test_extract_prototypes_fills_short_classes(tiny_clip):
    model, _ = tiny_clip
    ds = ToySet(n=2)  # class 2: 2x2 patches in image 0 only = 4 cells
    ps = espsd.extract_prototypes(model, ds, 4, 10, seed=0, batch_size=2, progress=False)
    assert ps.patches[2] == 4 and ps.filled == [2]
    row = ps.class_ids.index(2)
    assert ps.prototypes.shape[1] == 10
    assert len({tuple(v.tolist()) for v in ps.prototypes[row]}) == 4


def test_extract_prototypes_needs_two_classes(tiny_clip):
    model, _ = tiny_clip
    ds = ToySet(n=2)
    ds.masks[:] = 0
    with pytest.raises(DrsegInputError, match="at least 2"):
        espsd.extract_prototypes(model, ds, 4, 3, seed=0, progress=False)


def _toy_study():
    """K=2 classes, C=4 channels: only channel 0 separates them."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, 8, 8, dtype=torch.long)
    masks[:, :, 4:] = 1
    sign = torch.where(masks == 0, 1.0, -1.0)[:, ::2, ::2]  # (3, 4, 4) feature grid
    feats = 0.3 * torch.randn(3, 4, 4, 4, generator=g)  # (B, C, h, w)
    feats[:, 0] = 2 * sign
    feats[:, 1:] += 1.0  # shared offset on the other channels
    text = torch.tensor([[1.0, 1, 1, 1], [-1.0, 1, 1, 1]])
    return espsd.StudyFeatures([feats[:2], feats[2:]], [masks[:2], masks[2:]], text,
                               torch.tensor([0, 1]), 2, ["a", "b", "c"])


def test_zero_shot_matches_direct_computation():
    st = _toy_study()
    keep = [0, 2]
    feats = torch.cat(st.features)[:, keep]
    text = st.text[:, keep]
    corr = torch.einsum("bchw,tc->bthw", F.normalize(feats, dim=1), F.normalize(text, dim=1))
    pred = F.interpolate(corr, size=(8, 8), mode="bilinear", align_corners=False).argmax(1)
    want = summarize(confusion_matrix(pred, torch.cat(st.masks), 2))["mIoU"]
    assert espsd.zero_shot_miou(st, keep) == pytest.approx(want)
    assert espsd.zero_shot_miou(st) == pytest.approx(100.0)


def test_masking_study_finds_the_informative_channel():
    st = _toy_study()
    full, drops = espsd.masking_study(st, progress=False)
    assert full == pytest.approx(100.0)
    assert int(drops.argmax()) == 0 and drops[0] > 30
    assert drops[1:].abs().max() < drops[0]
    for c in range(4):
        keep = [j for j in range(4) if j != c]
        assert drops[c].item() == pytest.approx(full - espsd.zero_shot_miou(st, keep))


def test_retention_study_top_vs_bottom():
    st = _toy_study()
    rows = espsd.retention_study(st, order=[0, 1, 2, 3], ratios=[0.25, 0.5, 1.0],
                                 random_draws=2, seed=0, progress=False)
    assert [r["channels"] for r in rows] == [1, 2, 4]
    assert rows[0]["top"] == pytest.approx(100.0) and rows[0]["bottom"] < 60
    assert rows[-1]["top"] == rows[-1]["bottom"] == pytest.approx(100.0)
    assert "random" in rows[0]
    assert espsd.retained_channels([3, 1, 0, 2], 0.5, "bottom") == [0, 2]
    with pytest.raises(DrsegInputError, match="permutation"):
        espsd.retention_study(st, order=[0, 1, 2], ratios=[0.5], progress=False)


def test_study_features_are_computed_once(tiny_clip, monkeypatch):
    model, tok = tiny_clip
    calls = []
    real = dclip.dense_features
    monkeypatch.setattr(dclip, "dense_features",
                        lambda m, x: calls.append(x.shape[0]) or real(m, x))
    st = espsd.compute_study_features(model, tok, ToySet(n=3), ["a", "b", "c", "d"],
                                      batch_size=2, progress=False)
    assert sum(calls) == 3 and st.paths == ["img0.png", "img1.png", "img2.png"]
    n = len(calls)
    espsd.masking_study(st, progress=False)
    espsd.retention_study(st, list(range(st.channels)), [0.5, 1.0], progress=False)
    assert len(calls) == n  # the studies never ran the encoder again


def test_sample_indices():
    assert espsd.sample_indices(5, 0, 0) == [0, 1, 2, 3, 4]
    a = espsd.sample_indices(100, 10, 3)
    assert a == espsd.sample_indices(100, 10, 3) and len(set(a)) == 10 and a == sorted(a)
    assert a != espsd.sample_indices(100, 10, 4)


def test_masking_downdate_equals_direct_subsets():
    g = torch.Generator().manual_seed(7)
    feats = torch.randn(4, 6, 5, 5, generator=g)  # (B, C, h, w)
    masks = torch.randint(0, 3, (4, 10, 10), generator=g)
    masks[0, :2] = 255
    text = torch.randn(4, 6, generator=g)  # 4 entries: class 2 has two synonyms
    st = espsd.StudyFeatures([feats[:3], feats[3:]], [masks[:3], masks[3:]], text,
                             torch.tensor([0, 1, 2, 2]), 3, list("abcd"))
    full, drops = espsd.masking_study(st, progress=False)
    for c in range(6):
        keep = [j for j in range(6) if j != c]
        assert drops[c].item() == pytest.approx(full - espsd.zero_shot_miou(st, keep), abs=1e-9)


def test_clip_view_tiles_are_separate_native_crops(tiny_clip):
    model, _ = tiny_clip
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255
    f = espsd.clip_view(model, x, 64, "tiles")
    assert f.shape == (2, model.visual.output_dim, 16, 16)
    crop = x[:, :, 64:, :64]  # bottom-left tile
    want = dclip.dense_features(model, dclip.normalize_images(crop))  # (2, C, 8, 8)
    assert_close(f[:, :, 8:, :8], want, rtol=1e-4, atol=1e-5)
    g = espsd.clip_view(model, x, 64, "resize")
    assert g.shape == (2, model.visual.output_dim, 8, 8)
    with pytest.raises(DrsegInputError, match="spsd.view"):
        espsd.clip_view(model, x, 64, "bogus")
