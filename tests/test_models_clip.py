"""Tests of the dense open_clip wrapper (drseg.models.clip) at tiny size."""
import pytest
import torch
import torch.nn.functional as F

from drseg.errors import DrsegInputError
from drseg.models import clip as C


@pytest.fixture(scope="module")
def tiny():
    return C.load_open_clip("drseg-tiny-clip", seed=0)


def test_normalize_images_matches_clip_stats():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 122.771
    x[:, 1] = 116.746 + 66.632
    y = C.normalize_images(x)
    torch.testing.assert_close(y[0, 0], torch.zeros(2, 2))
    torch.testing.assert_close(y[0, 1], torch.ones(2, 2))
    torch.testing.assert_close(y[0, 2], torch.full((2, 2), -104.094 / 70.323))
    with pytest.raises(DrsegInputError):
        C.normalize_images(torch.zeros(3, 4, 4))


def test_dense_features_value_only_last_block(tiny):
    model, _ = tiny
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    dense, guide = C.dense_features_with_guidance(model, x, (0, 2))
    assert dense.shape == (2, 128, 8, 8)
    assert [g.shape for g in guide] == [(2, 128, 8, 8)] * 2
    # direct computation: open_clip's own forward up to block L-2, then value-only by hand
    v = model.visual
    with torch.no_grad():
        t = v._embeds(x)  # 64 px = the config size: no interpolation
        for blk in v.transformer.resblocks[:-1]:
            t = blk(t)
        blk = v.transformer.resblocks[-1]
        d = t.shape[-1]
        w_v = blk.attn.in_proj_weight[2 * d:]
        b_v = blk.attn.in_proj_bias[2 * d:]
        t = t + blk.attn.out_proj(blk.ln_1(t) @ w_v.T + b_v)
        t = t + blk.mlp(blk.ln_2(t))
        ref = (v.ln_post(t[:, 1:]) @ v.proj).transpose(1, 2).reshape(2, -1, 8, 8)
    torch.testing.assert_close(dense, ref)


def test_dense_features_interpolates_pos_embed(tiny):
    model, _ = tiny
    x = torch.randn(1, 3, 96, 80)
    assert C.dense_features(model, x).shape == (1, 128, 12, 10)
    pe = C.interpolate_pos_embed(model.visual.positional_embedding, (12, 12))
    assert pe.shape == (145, 128)
    torch.testing.assert_close(pe[0], model.visual.positional_embedding[0])
    with pytest.raises(DrsegInputError, match="multiple of the patch"):
        C.dense_features(model, torch.randn(1, 3, 60, 64))
    with pytest.raises(DrsegInputError, match="guidance_layers"):
        C.dense_features_with_guidance(model, x, (4,))


def test_encode_vocab_synonyms_and_templates(tiny):
    model, tok = tiny
    templates = ("a {}", "a photo of a {}")
    with torch.no_grad():
        emb, group = C.encode_vocab(model, tok, ["road", "facade, wall"], templates)
        ref = F.normalize(model.encode_text(tok(["a wall", "a photo of a wall"])), dim=-1)
    assert emb.shape == (3, 128)
    assert group.tolist() == [0, 1, 1]
    torch.testing.assert_close(emb[2], F.normalize(ref.mean(0), dim=0))
    with pytest.raises(DrsegInputError, match="vocab"):
        C.encode_vocab(model, tok, ["road", " , "])


def test_correlation_is_cosine_and_channel_subset():
    torch.manual_seed(0)
    feats = torch.randn(2, 6, 3, 4)
    text = torch.randn(5, 6)
    corr = C.correlation(feats, text)
    i, t, y, x = 1, 3, 2, 1
    f = feats[i, :, y, x]
    assert corr.shape == (2, 5, 3, 4)
    torch.testing.assert_close(corr[i, t, y, x], f @ text[t] / (f.norm() * text[t].norm()))
    idx = [0, 2, 5]
    sub = C.correlation(feats, text, idx)
    torch.testing.assert_close(sub, C.correlation(feats[:, idx], text[:, idx]))
    mask = torch.zeros(6, dtype=torch.bool)
    mask[idx] = True
    torch.testing.assert_close(C.correlation(feats, text, mask), sub)
    with pytest.raises(DrsegInputError):
        C.correlation(feats, text, torch.zeros(6, dtype=torch.bool))


def test_reduce_synonyms_is_max():
    corr = torch.tensor([[1.0, -2.0, 3.0, 0.5]]).view(1, 4, 1, 1)
    out = C.reduce_synonyms(corr, torch.tensor([0, 1, 1, 0]), 2)
    assert out.flatten().tolist() == [1.0, 3.0]


def test_checkpoint_roundtrip_state_dict_and_jit(tiny, tmp_path):
    model, tok = tiny
    x = torch.randn(1, 3, 64, 64)
    ref = C.dense_features(model, x)
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}},
               tmp_path / "ddp.pt")
    torch.jit.script(model).save(str(tmp_path / "jit.pt"))
    for name in ("ddp.pt", "jit.pt"):
        other, _ = C.load_open_clip("drseg-tiny-clip", tmp_path / name, seed=1)
        torch.testing.assert_close(C.dense_features(other, x), ref, rtol=0, atol=0)


def test_checkpoint_errors(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(DrsegInputError, match="not found"):
        C.load_open_clip("drseg-tiny-clip", tmp_path / "missing.pt")
    state = model.state_dict()
    state.pop("visual.proj")
    state["extra.weight"] = torch.zeros(1)
    state["text_projection"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(DrsegInputError) as err:
        C.load_open_clip("drseg-tiny-clip", tmp_path / "bad.pt")
    msg = str(err.value)
    assert "bad.pt" in msg and "visual.proj" in msg and "extra.weight" in msg
    assert "text_projection" in msg
    with pytest.raises(DrsegInputError, match="unknown open_clip config"):
        C.load_open_clip("no-such-clip")


def test_split_qkv_keeps_numerics_and_trains_only_q_v():
    model, tok = C.load_open_clip("drseg-tiny-clip", seed=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref_img = C.dense_features(model, x)
        ref_txt = model.encode_text(tok(["a road"]))
    names = C.set_qv_trainable(model)
    n_attn = 4 + 3  # vision + text blocks of drseg-tiny-clip
    assert len(names) == 2 * n_attn
    assert all(n.endswith(("q_proj_weight", "v_proj_weight")) for n in names)
    with torch.no_grad():
        torch.testing.assert_close(C.dense_features(model, x), ref_img)
        torch.testing.assert_close(model.encode_text(tok(["a road"])), ref_txt)


def test_class_text_embeddings_mean_of_synonyms():
    emb = F.normalize(torch.randn(3, 4), dim=-1)
    out = C.class_text_embeddings(emb, torch.tensor([0, 1, 1]), 2)
    torch.testing.assert_close(out[0], emb[0])
    torch.testing.assert_close(out[1], F.normalize(emb[1] + emb[2], dim=0))
