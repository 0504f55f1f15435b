"""The assembled DR-Seg model at tiny size: every ablation switch, gradients, text cache."""
import pytest
import torch

from drseg.errors import DrsegInputError
from drseg.models import spsd
from drseg.models.drseg import PRESETS, ModelConfig, build_model, make_config

VOCAB = ["road", "building, roof", "tree", "car"]


def images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 255


def channel_index(path, channels=128, rho=0.5):
    score = torch.linspace(0, 1, channels).flip(0)[torch.randperm(channels,
                                                    generator=torch.Generator().manual_seed(0))]
    return spsd.save_channel_index(path, score, rho=rho, lam=0.3, backbone="drseg-tiny-clip",
                                   clip_checkpoint_sha256="0" * 64, dataset="synthetic")


# every switch combination the paper's tables use (Tables 2-6) and the two baselines
SWITCHES = {
    "full": {},
    "no_pdgr": {"pdgr": False},  # Table 2 baseline
    "pdgr_only": {"spsd": False, "ugaf": False},
    "pdgr_spsd": {"ugaf": False},
    "pdgr_ugaf": {"spsd": False},
    "mean": {"fusion": "mean"},
    "concat": {"fusion": "concat"},
    "separate": {"fusion": "separate"},
    "no_rotations": {"rotations": False},
    "k4_layers1": {"k": 4, "graph_layers": 1, "sigma_f": 1.0, "sigma_s": 0.5},
    "graph3_agg2": {"graph_layers": 3, "aggregator_layers": 2},
    "prior_patch4": {"prior_kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 1,
                                      "num_heads": 2}},  # 16x16 prior grid -> learned 2x2 conv
    "catseg": {"variant": "catseg"},
    "holistic": {"variant": "holistic"},
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_shapes_every_switch(name, tmp_path):
    cfg = make_config("tiny", SWITCHES[name])
    index = channel_index(tmp_path / "ci.json")
    model = build_model(cfg, channel_index=index)
    logits = model(images(2, 96), VOCAB)  # resized to the 64 px input
    assert logits.shape == (2, 4, 32, 32)
    assert torch.isfinite(logits).all()
    uses_index = cfg.variant == "drseg" and cfg.pdgr and cfg.spsd
    assert (model.channel_index is not None) == uses_index
    if model.pdgr is not None:
        c_str = model.pdgr.rectifier.weights[0].in_features
        assert c_str == (64 if uses_index else 128)
    assert (model.prior is None) == (not cfg.uses_prior)


def test_gradients_reach_exactly_the_trainable_parameters():
    model = build_model(make_config("tiny"))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    clip_train = {n for n in names if n.startswith("clip.")}
    n_vis, n_txt = 4, 3
    assert len(clip_train) == 2 * (n_vis + n_txt) - 1  # last vision q unused (value-only)
    assert all(n.endswith(("attn.q_proj_weight", "attn.v_proj_weight")) for n in clip_train)
    assert not any(n.startswith("prior.") for n in names)
    loss = model.loss(model(images(2), VOCAB), torch.randint(0, 4, (2, 64, 64)))
    loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_parameter_groups_split_clip_lr():
    model = build_model(make_config("tiny"))
    groups = model.parameter_groups(2e-4, 0.01)
    assert groups[0]["lr"] == pytest.approx(2e-6) and groups[1]["lr"] == 2e-4
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.trainable_parameters())
    counts = model.parameter_counts()
    assert counts["trainable"] == sum(p.numel() for p in model.trainable_parameters())
    assert counts["clip_trainable"] == sum(p.numel() for p in groups[0]["params"])


def test_eval_caches_text_per_vocabulary():
    model = build_model(make_config("tiny")).eval()
    x = images(1)
    other = ["water", "field", "bridge"]
    with torch.no_grad():
        a1 = model(x, VOCAB)
        b = model(x, other)
        a2 = model(x, VOCAB)
    assert a1.shape[1] == 4 and b.shape[1] == 3
    torch.testing.assert_close(a1, a2)
    assert len(model._text_cache) == 2
    emb_a, grp_a = model.text_embeddings(VOCAB)
    emb_b, _ = model.text_embeddings(other)
    assert emb_a.shape[0] == 5 and grp_a.tolist() == [0, 1, 1, 2, 3]  # synonyms expanded
    assert emb_b.shape[0] == 3 and not torch.allclose(emb_a[:3], emb_b)
    assert model.text_embeddings(VOCAB)[0] is emb_a  # cached, not recomputed
    model.train()
    assert model._text_cache == {}
    assert model.text_embeddings(VOCAB)[0].requires_grad  # recomputed in training


def test_state_dict_roundtrip_and_determinism(tmp_path):
    cfg = make_config("tiny", {"seed": 3})
    a, b = build_model(cfg).eval(), build_model(cfg).eval()
    x = images(1)
    with torch.no_grad():
        torch.testing.assert_close(a(x, VOCAB), b(x, VOCAB), rtol=0, atol=0)  # seeded
    c = build_model(make_config("tiny", {"seed": 4})).eval()
    torch.save(a.state_dict(), tmp_path / "m.pt")
    c.load_state_dict(torch.load(tmp_path / "m.pt"))
    with torch.no_grad():
        torch.testing.assert_close(c(x, VOCAB), a(x, VOCAB), rtol=0, atol=0)


def test_clip_checkpoint_through_the_config(tmp_path):
    src = build_model(make_config("tiny"))
    from drseg.models.clip import load_open_clip
    clip_model, _ = load_open_clip("drseg-tiny-clip", seed=7)
    torch.save(clip_model.state_dict(), tmp_path / "clip.pt")
    model = build_model(make_config("tiny", {"clip_checkpoint": str(tmp_path / "clip.pt")}))
    w = model.clip.visual.transformer.resblocks[0].attn.q_proj_weight
    torch.testing.assert_close(w, clip_model.visual.transformer.resblocks[0].attn.in_proj_weight[:128])
    assert not torch.equal(w, src.clip.visual.transformer.resblocks[0].attn.q_proj_weight)


def test_channel_index_rho_resplit_and_checks(tmp_path):
    path = tmp_path / "ci.json"
    channel_index(path)
    model = build_model(make_config("tiny", {"rho": 0.25}), channel_index=path)
    assert len(model.channel_index["semantic"]) == 32
    assert model.pdgr.rectifier.weights[0].in_features == 96
    record = spsd.load_channel_index(path)
    model = build_model(make_config("tiny"), spsd_index=record)
    assert model.pdgr.sem_idx.tolist() == record["semantic"]
    off = build_model(make_config("tiny", {"spsd": False}), channel_index=path)
    assert off.channel_index is None and off.pdgr.sem_idx is None
    with pytest.raises(DrsegInputError):
        build_model(make_config("tiny"), channel_index=tmp_path / "missing.json")
    bad = dict(record, channels=64)
    with pytest.raises(DrsegInputError):
        build_model(make_config("tiny"), channel_index=bad)


def test_config_errors():
    with pytest.raises(DrsegInputError, match="preset"):
        make_config("huge")
    with pytest.raises(DrsegInputError, match="unknown params"):
        make_config("tiny", {"sigma": 1.0})
    with pytest.raises(DrsegInputError, match="fusion"):
        make_config("tiny", {"fusion": "max"})
    with pytest.raises(DrsegInputError, match="variant"):
        make_config("tiny", {"variant": "gsnet"})
    with pytest.raises(DrsegInputError, match="swin_window"):
        build_model(make_config("tiny", {"swin_window": 3}))(images(1), VOCAB)
    cfg = make_config("tiny", {"ugaf": False})
    assert cfg.effective_fusion == "concat"
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert set(PRESETS) == {"tiny", "vitb16-384", "vitl14-336"}


@pytest.mark.gpu
def test_tiny_forward_backward_on_gpu_bf16():
    model = build_model(make_config("tiny")).cuda()
    x = images(2).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x, VOCAB)
    loss = model.loss(logits, torch.randint(0, 4, (2, 64, 64), device="cuda"))
    loss.backward()
    assert torch.isfinite(loss)
