"""SPSD scoring (Eq. 1-4), split (Eq. 5), slicing (Eq. 6) and the channel index file."""
import itertools
import json
import math

import pytest
import torch
from torch.testing import assert_close

from drseg.atomic import umask
from drseg.errors import DrsegInputError
from drseg.models import spsd

EPS = 1e-8


# --------------------------------------------------------------- direct (slow) references


def direct_scores(prototypes: torch.Tensor, lam: float, eps: float = EPS):
    """Eq. 1-4 written out with loops: pairs enumerated, ranks counted."""
    P = prototypes.to(torch.float64)
    K, n_p, C = P.shape
    H, S = [], []
    for c in range(C):
        u = [sum(max(P[k, n, c].item(), 0.0) for n in range(n_p)) / n_p for k in range(K)]
        total = sum(u)
        p = [uk / (total + eps) for uk in u]
        H.append(-sum(pk * math.log2(pk + eps) for pk in p))
        acc, count = 0.0, 0
        for (ka, na), (kb, nb) in itertools.product(
                itertools.product(range(K), range(n_p)), repeat=2):
            if ka != kb:  # ordered pairs of prototypes from different classes
                acc += P[ka, na, c].item() * P[kb, nb, c].item()
                count += 1
        S.append(acc / count)

    def rank(vals):
        return [sum(1 for j in range(C) if vals[j] < vals[c] or (vals[j] == vals[c] and j < c))
                / (C - 1) for c in range(C)]

    rH, rS = rank(H), rank(S)
    score = [lam * (1 - rH[c]) + (1 - lam) * (1 - rS[c]) for c in range(C)]
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return t(H), t(S), t(score)


# --------------------------------------------------------------- Eq. 1-4


@pytest.mark.parametrize("K,n_p,C,seed", [(2, 1, 5, 0), (3, 4, 9, 1), (5, 3, 16, 2)])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_channel_scores_match_pair_enumeration(K, n_p, C, seed, lam):
    g = torch.Generator().manual_seed(seed)
    P = torch.nn.functional.normalize(torch.randn(K, n_p, C, generator=g), dim=-1)
    got = spsd.channel_scores(P, lam)
    H, S, score = direct_scores(P, lam)
    assert_close(got.H, H, rtol=1e-10, atol=1e-12)
    assert_close(got.S, S, rtol=1e-9, atol=1e-12)
    # the ranks are integers / (C - 1): compare exactly unless two values nearly tie
    assert_close(got.score, score, rtol=0, atol=1e-12)
    assert got.score.dtype == torch.float64 and got.score.shape == (C,)


def test_normalized_rank_ties_broken_by_channel_index():
    r = spsd.normalized_rank(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5]))
    assert r.tolist() == [3 / 4, 0.0, 4 / 4, 1 / 4, 2 / 4]
    assert spsd.normalized_rank(torch.tensor([7.0])).tolist() == [0.0]


def test_tied_channels_get_distinct_scores_by_index():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 3, 3, generator=g)
    # channels 3 and 5 are copies of channel 0 (identical H and S)
    P = torch.cat([base, base[..., :1], base[..., 1:2], base[..., :1]], dim=-1)  # (4, 3, 6)
    out = spsd.channel_scores(P, 0.3)
    assert out.H[0] == out.H[3] == out.H[5] and out.S[0] == out.S[3] == out.S[5]
    # ties -> lower index gets the lower (better for score) rank: score strictly decreasing
    assert out.score[0] > out.score[3] > out.score[5]
    H, S, score = direct_scores(P, 0.3)
    assert_close(out.score, score, rtol=0, atol=1e-12)


def test_one_class_channel_has_lowest_entropy():
    g = torch.Generator().manual_seed(4)
    K, n_p, C = 4, 5, 8
    P = torch.rand(K, n_p, C, generator=g) + 0.1  # every channel fires for every class
    P[:, :, 2] = -torch.rand(K, n_p, generator=g)  # channel 2: negative (ReLU -> 0) ...
    P[1, :, 2] = torch.rand(n_p, generator=g) + 0.1  # ... except for class 1
    out = spsd.channel_scores(P, 0.3)
    assert int(out.H.argmin()) == 2
    assert out.H[2].item() == pytest.approx(0.0, abs=1e-6)
    assert (out.H[torch.arange(C) != 2] > 1.0).all()
    assert spsd.normalized_rank(out.H)[2] == 0.0


def test_channel_that_never_fires_has_zero_entropy_not_nan():
    P = torch.rand(3, 2, 4) + 0.1
    P[..., 1] = -1.0
    out = spsd.channel_scores(P, 0.5)
    assert torch.isfinite(out.H).all() and out.H[1] == 0.0


def test_lambda_extremes_use_one_criterion():
    g = torch.Generator().manual_seed(5)
    P = torch.randn(3, 4, 10, generator=g)
    only_h = spsd.channel_scores(P, 1.0)
    only_s = spsd.channel_scores(P, 0.0)
    assert_close(only_h.score, 1 - spsd.normalized_rank(only_h.H))
    assert_close(only_s.score, 1 - spsd.normalized_rank(only_s.S))


@pytest.mark.parametrize("bad", [torch.randn(1, 4, 5), torch.randn(4, 5),
                                 torch.full((2, 2, 3), float("nan"))])
def test_channel_scores_rejects_bad_prototypes(bad):
    with pytest.raises(DrsegInputError, match="prototypes"):
        spsd.channel_scores(bad, 0.3)


@pytest.mark.parametrize("lam", [-0.1, 1.5, "0.3"])
def test_channel_scores_rejects_bad_lambda(lam):
    with pytest.raises(DrsegInputError, match="spsd.lambda"):
        spsd.channel_scores(torch.randn(2, 2, 3), lam)


# --------------------------------------------------------------- Eq. 5-6


@pytest.mark.parametrize("C", [7, 8])
@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
def test_split_sizes(C, rho):
    score = torch.rand(C, generator=torch.Generator().manual_seed(C))
    sem, struct = spsd.split_channels(score, rho)
    assert len(sem) == math.floor(rho * C) and len(struct) == C - math.floor(rho * C)
    assert sorted(sem.tolist() + struct.tolist()) == list(range(C))
    # semantic = highest scores, in descending order
    order = sorted(range(C), key=lambda c: -score[c].item())
    assert sem.tolist() == order[:len(sem)] and struct.tolist() == order[len(sem):]


def test_split_ties_lower_index_first_and_float_floor():
    sem, struct = spsd.split_channels(torch.tensor([0.5, 1.0, 0.5, 0.5]), 0.5)
    assert sem.tolist() == [1, 0] and struct.tolist() == [2, 3]
    assert spsd.num_semantic(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996
    with pytest.raises(DrsegInputError, match="spsd.rho"):
        spsd.split_channels(torch.rand(4), 1.2)


def test_decouple_slices_and_recompose_inverts():
    x = torch.randn(2, 6, 3, 3)
    sem, struct = spsd.split_channels(torch.tensor([0.1, 0.9, 0.4, 0.8, 0.2, 0.6]), 0.5)
    f_sem, f_str = spsd.decouple(x, sem, struct, dim=1)
    assert f_sem.shape == (2, 3, 3, 3) and f_str.shape == (2, 3, 3, 3)
    assert_close(f_sem, x[:, [1, 3, 5]])
    assert_close(f_str, x[:, [2, 4, 0]])
    assert_close(spsd.recompose(f_sem, f_str, sem, struct, dim=1), x)
    t_sem, _ = spsd.decouple(torch.randn(4, 6), sem, struct, dim=-1)
    assert t_sem.shape == (4, 3)


# --------------------------------------------------------------- index file


def _save(path, C=8, rho=0.5, backbone="drseg-tiny-clip"):
    score = torch.rand(C, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return spsd.save_channel_index(path, score, rho=rho, lam=0.3, backbone=backbone,
                                   clip_checkpoint_sha256="ab" * 32, dataset="synth-a")


def test_index_roundtrip_and_byte_stable(tmp_path):
    p = tmp_path / "spsd" / "channel_index.json"
    written = _save(p)
    first = p.read_bytes()
    loaded = spsd.load_channel_index(p, channels=8, backbone="drseg-tiny-clip")
    assert loaded == written and loaded["format"] == "drseg-spsd-index/1"
    assert len(loaded["semantic"]) == 4 and loaded["channels"] == 8
    score = torch.tensor(loaded["score"], dtype=torch.float64)
    assert loaded["order"] == sorted(range(8), key=lambda c: -score[c].item())
    assert loaded["semantic"] == loaded["order"][:4]
    _save(p)
    assert p.read_bytes() == first
    assert list(tmp_path.joinpath("spsd").iterdir()) == [p]  # no temp file left behind
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask()  # not mkstemp's 0600


@pytest.mark.parametrize("rho,n_sem", [(0.0, 0), (0.25, 2), (1.0, 8)])
def test_index_resplit_at_training_rho(tmp_path, rho, n_sem):
    p = tmp_path / "channel_index.json"
    stored = _save(p, rho=0.5)
    got = spsd.load_channel_index(p, channels=8, rho=rho)
    assert got["rho"] == rho and len(got["semantic"]) == n_sem
    assert got["semantic"] + got["structural"] == stored["order"]
    assert json.loads(p.read_text())["rho"] == 0.5  # the file itself is untouched
    with pytest.raises(DrsegInputError, match=r"channel_index\.json.*spsd.rho"):
        spsd.load_channel_index(p, rho=1.5)


def test_index_wrong_width_names_file(tmp_path):
    p = tmp_path / "channel_index.json"
    _save(p, C=8)
    with pytest.raises(DrsegInputError, match=r"channel_index\.json.*8 CLIP channels.*512"):
        spsd.load_channel_index(p, channels=512)
    with pytest.raises(DrsegInputError, match=r"channel_index\.json.*ViT-B-16"):
        spsd.load_channel_index(p, backbone="ViT-B-16")


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(format="other/1"), "format"),
    (lambda d: d.pop("backbone"), "missing keys"),
    (lambda d: d.update(score=d["score"][:-1]), "'score'"),
    (lambda d: d.update(order=d["order"][::-1]), "'order'"),
    (lambda d: d.update(semantic=d["semantic"][:-1]), "floor"),
    (lambda d: d.update(structural=d["structural"] + [d["semantic"][0]]), "floor"),
    (lambda d: d.update(semantic=[float(i) for i in d["semantic"]]), "list of integers"),
    (lambda d: d.update(rho=0.25), "floor"),
    (lambda d: d.update(channels=0), "positive integer"),
])
def test_index_bad_content(tmp_path, mutate, match):
    p = tmp_path / "channel_index.json"
    d = _save(p)
    mutate(d)
    p.write_text(json.dumps(d))
    with pytest.raises(DrsegInputError, match=match) as e:
        spsd.load_channel_index(p)
    assert str(p) in str(e.value)


def test_index_unreadable_or_missing(tmp_path):
    p = tmp_path / "channel_index.json"
    with pytest.raises(DrsegInputError, match="not found"):
        spsd.load_channel_index(p)
    p.write_text("{not json")
    with pytest.raises(DrsegInputError, match=r"channel_index\.json.*JSON"):
        spsd.load_channel_index(p)
