"""Tests of the tiny-CLIP contrastive pretraining and its evaluation (drseg.engine.pretrain).

A smaller open_clip config than drseg-tiny-clip (same code path) keeps these fast.
"""
import json
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from drseg.data import captions
from drseg.engine import pretrain as P
from drseg.errors import DrsegInputError
from drseg.models import clip as dclip

TEST_MODEL = "drseg-test-clip"
TEST_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def test_model_name(tmp_path_factory):
    d = tmp_path_factory.mktemp("configs")
    (d / f"{TEST_MODEL}.json").write_text(json.dumps(TEST_CFG))
    if TEST_MODEL not in open_clip.list_models():
        open_clip.add_model_config(d)
    return TEST_MODEL


@pytest.fixture(scope="module")
def corpus():
    return captions.make_corpus(64, seed=3, image_size=32, scene_size=64, views_per_scene=4,
                                progress=False)


@pytest.fixture(autouse=True)
def _restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(before)
    torch.set_num_threads(threads)


def train(corpus, name, steps, **kw):
    return P.train_clip(corpus, model_name=name, steps=steps, batch_size=16, lr=2e-3, warmup=1,
                        seed=0, threads=1, progress=False, log_every=1, **kw)


# --------------------------------------------------------------------------- loss

def test_infonce_equals_clip_loss_without_groups():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(6, 8), dim=-1)
    b = F.normalize(torch.randn(6, 8), dim=-1)
    s = torch.tensor(7.0)
    torch.testing.assert_close(P.multi_positive_infonce(a, b, s),
                               open_clip.ClipLoss()(a, b, s))
    torch.testing.assert_close(P.multi_positive_infonce(a, b, s, torch.arange(6)),
                               open_clip.ClipLoss()(a, b, s))


def test_multi_positive_infonce_matches_direct_computation():
    torch.manual_seed(1)
    a = F.normalize(torch.randn(5, 4), dim=-1)
    b = F.normalize(torch.randn(5, 4), dim=-1)
    g = torch.tensor([0, 1, 0, 2, 1])
    s = 3.0
    total = 0.0
    for logits in (s * a @ b.T, s * b @ a.T):
        for i in range(5):
            pos = [j for j in range(5) if g[j] == g[i]]
            logz = math.log(sum(math.exp(float(logits[i, k])) for k in range(5)))
            total += -sum(float(logits[i, j]) - logz for j in pos) / len(pos) / 5
    torch.testing.assert_close(P.multi_positive_infonce(a, b, torch.tensor(s), g),
                               torch.tensor(total / 2), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- training

def test_a_few_steps_reduce_the_contrastive_loss(corpus, test_model_name):
    torch.manual_seed(0)
    groups = torch.from_numpy(corpus.groups())

    def loss_of(model, tok):
        with torch.no_grad():
            img = P.encode_images(model, corpus.images)
            txt = P.encode_texts(model, tok, corpus.captions)
            return float(P.multi_positive_infonce(img, txt, model.logit_scale.exp(), groups))

    init, tok = dclip.load_open_clip(test_model_name, seed=0)
    P.set_pool_type(init, "avg")
    model, tok, hist = train(corpus, test_model_name, steps=12, pool_type="avg")
    assert len(hist) == 12 and all(np.isfinite(h["loss"]) for h in hist)
    before, after = loss_of(init, tok), loss_of(model, tok)
    assert after < before - 0.1, (before, after)


def test_training_is_deterministic(corpus, test_model_name):
    m1, _, h1 = train(corpus, test_model_name, steps=3)
    m2, _, h2 = train(corpus, test_model_name, steps=3)
    assert h1 == h2
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_checkpoint_round_trip_is_exact(corpus, test_model_name, tmp_path):
    model, tok, _ = train(corpus, test_model_name, steps=2, pool_type="avg")
    path = P.save_clip_checkpoint(model, tmp_path / "clip" / "tiny.pt")
    loaded, tok2 = P.load_pretrained(path, test_model_name, pool_type="avg")
    x = P.to_tensor_images(corpus.images[:4])
    tokens = tok(corpus.captions[:4])
    with torch.no_grad():
        assert torch.equal(model.encode_image(dclip.normalize_images(x)),
                           loaded.encode_image(dclip.normalize_images(x)))
        assert torch.equal(model.encode_text(tokens), loaded.encode_text(tok2(corpus.captions[:4])))
        assert torch.equal(dclip.dense_features(model, dclip.normalize_images(x)),
                           dclip.dense_features(loaded, dclip.normalize_images(x)))
    # an ordinary open_clip checkpoint: open_clip itself loads it by path
    plain = open_clip.create_model(test_model_name, pretrained=str(path))
    sd = model.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in plain.state_dict().items())
    # saving again gives the same bytes
    again = P.save_clip_checkpoint(model, tmp_path / "again.pt")
    assert again.read_bytes() == path.read_bytes()


def test_train_rejects_bad_params(corpus, test_model_name):
    with pytest.raises(DrsegInputError, match="batch_size"):
        P.train_clip(corpus, model_name=test_model_name, steps=1, batch_size=1000, progress=False)
    with pytest.raises(DrsegInputError, match="pool_type"):
        train(corpus, test_model_name, steps=1, pool_type="max")


# --------------------------------------------------------------------------- evaluation

def test_retrieval_recall_matches_direct_computation():
    torch.manual_seed(2)
    img = F.normalize(torch.randn(12, 6), dim=-1)
    txt = F.normalize(img + 0.8 * torch.randn(12, 6), dim=-1)
    groups = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 4, 5, 6, 7])
    r = P.retrieval_recall(img, txt, groups, ks=(1, 5))
    sim = (img @ txt.T).numpy()
    for name, s in (("i2t", sim), ("t2i", sim.T)):
        for k in (1, 5):
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            pair = np.mean([i in order[i] for i in range(12)]) * 100
            content = np.mean([any(groups[j] == groups[i] for j in order[i])
                               for i in range(12)]) * 100
            assert r[f"{name}_R@{k}"] == pytest.approx(pair)
            assert r[f"{name}_content_R@{k}"] == pytest.approx(content)


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=40).round(1)  # with ties
    pos = rng.random(40) < 0.4
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0)
             for a in scores[pos] for b in scores[~pos]]
    assert P.roc_auc(scores, pos) == pytest.approx(np.mean(pairs))
    assert math.isnan(P.roc_auc(scores, np.zeros(40, bool)))


def test_constant_miou_matches_the_constant_prediction():
    from drseg.engine.metrics import confusion_matrix, summarize

    gt = torch.tensor([0, 0, 0, 1, 1, 2, 255, 2, 0, 0])
    best = max(summarize(confusion_matrix(torch.full_like(gt, c), gt, 4))["mIoU"]
               for c in range(4))
    conf = confusion_matrix(torch.zeros_like(gt), gt, 4)
    assert P.constant_miou(conf) == pytest.approx(best)


def test_dense_zero_shot_and_synonyms_run_on_a_model(test_model_name):
    model, tok = dclip.load_open_clip(test_model_name, seed=0)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 48, 48, generator=g) * 255
    masks = torch.randint(0, 3, (3, 48, 48), generator=g)
    r = P.dense_zero_shot(model, tok, images, masks, ["water", "road, street", "trees"],
                          input_size=32)
    assert 0 <= r["mIoU"] <= 100 and len(r["IoU"]) == 3
    assert r["constant_mIoU"] == pytest.approx(P.constant_miou(torch.tensor(r["confusion"])))
    pred = P.dense_predict(model, tok, images, ["water", "road, street", "trees"], input_size=32)
    assert pred.shape == (3, 48, 48) and int(pred.max()) < 3
    syn = P.synonym_similarity(model, tok, {"water": ("water", "lake"), "road": ("road", "street"),
                                            "tree": ("trees", "forest")})
    assert set(syn["per_concept"]) == {"water", "road", "tree"}
    assert -1 <= syn["across"] <= 1 and 0 <= syn["nn_accuracy"] <= 100


def test_presence_auc_uses_named_and_absent_only():
    emb = torch.eye(3)[[0, 0, 1, 2]]  # images 0, 1 point at concept 0
    name_emb = torch.eye(3)
    name_group = torch.arange(3)
    named = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    frac = named.astype(np.float32)
    frac[2, 0] = 0.001  # a trace of concept 0 in image 2: neither positive nor negative
    r = P.presence_auc(emb, name_emb, name_group, named, frac, ["a", "b", "c"])
    assert r["auc"]["a"] == pytest.approx(100.0)
    assert r["positives"] == {"a": 2, "b": 1, "c": 1}


# --------------------------------------------------------------------------- params

def test_config_from_params_block():
    import yaml

    from pathlib import Path

    block = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["pretrain"]
    cfg = P.PretrainConfig.from_params(block)
    assert cfg.model_name == "drseg-tiny-clip" and cfg.steps == block["steps"]
    with pytest.raises(DrsegInputError, match="pretrain.stepz"):
        P.PretrainConfig.from_params({"stepz": 3})
    with pytest.raises(DrsegInputError, match="pretrain.steps"):
        P.PretrainConfig.from_params({"steps": "many"})
    with pytest.raises(DrsegInputError, match="pretrain.zeroshot"):
        P.PretrainConfig.from_params({"zeroshot": {"datasett": "x"}})


# --------------------------------------------------------------------------- stage

def test_stage_train_and_zeroshot_write_their_outputs(test_model_name, tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "stages"))
    import pretrain as stage

    block = {"model_name": test_model_name, "corpus_size": 48, "heldout_size": 24,
             "scene_size": 64, "views_per_scene": 4, "steps": 2, "batch_size": 16, "warmup": 1,
             "threads": 1, "figure_samples": 2, "log_every": 1}
    ck = tmp_path / "clip.pt"
    m = stage.run_train(ck, tmp_path / "m", tmp_path / "fig" / "pretrain_retrieval.png", block,
                        progress=False)
    assert ck.is_file() and (tmp_path / "m" / "metrics.json").is_file()
    assert (tmp_path / "fig" / "pretrain_retrieval.pdf").is_file()
    written = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert written["steps"] == 2 and "i2t_R@1" in written["retrieval"] and "timings" not in written
    assert m["timings"]["train_s"] > 0
    first = (tmp_path / "m" / "metrics.json").read_bytes()
    png = (tmp_path / "fig" / "pretrain_retrieval.png").read_bytes()
    stage.run_train(ck, tmp_path / "m", tmp_path / "fig" / "pretrain_retrieval.png", block,
                    progress=False)
    assert (tmp_path / "m" / "metrics.json").read_bytes() == first
    assert (tmp_path / "fig" / "pretrain_retrieval.png").read_bytes() == png
    # zero-shot dense mIoU on a tiny prepared suite's source val split
    from drseg.data.archive import prepare_synth_suite

    suite = tmp_path / "synth"
    prepare_synth_suite(suite, seed=0, image_size=64, train_images=1, val_images=2,
                        target_images=1, cards_dir=tmp_path / "cards",
                        figure=tmp_path / "cards" / "fig.png", figure_samples=1)
    block["zeroshot"] = {"input_sizes": [32, 64]}
    z = stage.run_zeroshot(suite, ck, tmp_path / "m", tmp_path / "fig" / "pretrain_zeroshot.png",
                           block, progress=False)
    written = json.loads((tmp_path / "m" / "zeroshot.json").read_text())
    assert written["split"] == "val" and written["images"] == 2
    assert set(written["per_input_size"]) == {"32", "64"}
    assert z["mIoU"] == z["per_input_size"]["32"]["mIoU"]
    assert z["ratio_to_constant"] == pytest.approx(z["mIoU"] / z["constant_mIoU"])
    assert (tmp_path / "fig" / "pretrain_zeroshot.pdf").is_file()


def test_caption_match_levels():
    a = np.array([1, 1, 0, 0], bool)
    assert P.caption_match(a, a.copy()) == "same"
    assert P.caption_match(a, np.array([1, 1, 1, 0], bool)) == "overlap"  # 2/3
    assert P.caption_match(a, np.array([1, 0, 1, 1], bool)) == "other"  # 1/4
