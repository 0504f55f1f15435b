"""Evaluation: several vocabularies in one process, slide windows, outputs, bad input."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from drseg.engine.evaluate import (EvalConfig, EvalItem, _slide_scores, evaluate_dataset, evaluate_suite,
                                   window_starts)
from drseg.engine.metrics import confusion_matrix, summarize
from drseg.errors import DrsegInputError
from drseg.engine.train import TrainConfig, train
from test_train import ColourBlobs, TinySeg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The stand-in after a few iterations, so that its predictions differ between pixels."""
    torch.manual_seed(0)
    model = TinySeg()
    cfg = TrainConfig(iterations=30, batch_size=4, lr=3e-2, crop=16, checkpoint_every=100, grad_clip=0.0)
    train(model, ColourBlobs(n=12), ["red roof", "grass", "water", "sand"], cfg,
          tmp_path_factory.mktemp("run"), model_cfg={}, train_dataset="blobs", progress=False)
    return model.eval()


def _direct_noslide_conf(model, ds, vocab, size):
    """Straightforward reference: one image at a time, no batching."""
    conf = torch.zeros(len(vocab), len(vocab), dtype=torch.int64)
    with torch.no_grad():
        for s in ds:
            x = F.interpolate(s["image"][None], size=(size, size), mode="bilinear", align_corners=False)
            logits = F.interpolate(model(x, vocab), size=(size, size), mode="bilinear", align_corners=False)
            up = F.interpolate(logits.sigmoid(), size=s["mask"].shape, mode="bilinear", align_corners=False)
            conf += confusion_matrix(up[0].argmax(0), s["mask"], len(vocab))
    return conf


def test_two_datasets_with_different_vocabularies_in_one_process(tmp_path, trained):
    model = trained
    ds_a, ds_b = ColourBlobs(n=5, k=4, seed=1), ColourBlobs(n=7, k=3, seed=2, h=16, w=30)
    vocab_a, vocab_b = ["red roof", "grass", "water", "sand"], ["Building", "Low vegetation", "Water"]
    # short_side equal to the image's short side: the first resize is a no-op, as in the reference
    cfg = EvalConfig(mode="noslide", input_size=12, short_side=16, max_long=100, batch_size=3)
    items = [EvalItem("a", ds_a, vocab_a, "a", split="all"),
             EvalItem("b", ds_b, vocab_b, "b", split="all"),
             EvalItem("a_val", ColourBlobs(n=2, k=4, seed=3), vocab_a, "a", split="val", in_suite_mean=False)]
    cfg_a = EvalConfig(mode="noslide", input_size=12, short_side=20, max_long=100, batch_size=3)
    conf_a, _ = evaluate_dataset(model, ds_a, vocab_a, cfg_a, progress=False)
    assert (conf_a.diagonal() > 0).sum() >= 3  # a real test: several classes predicted right
    assert torch.equal(conf_a, _direct_noslide_conf(model, ds_a, vocab_a, 12))
    conf_b, _ = evaluate_dataset(model, ds_b, vocab_b, cfg, progress=False)
    assert torch.equal(conf_b, _direct_noslide_conf(model, ds_b, vocab_b, 12))
    assert conf_b.shape == (3, 3) and conf_b.sum() == sum(int((s["mask"] != 255).sum()) for s in ds_b)

    summary = evaluate_suite(model, items, cfg, tmp_path, variant="full", progress=False)
    rec_b = json.loads((tmp_path / "b.json").read_text())
    assert rec_b["classes"] == vocab_b and rec_b["mode"] == "noslide" and rec_b["split"] == "all"
    assert rec_b["mIoU"] == pytest.approx(summarize(conf_b)["mIoU"])
    written = json.loads((tmp_path / "summary.json").read_text())
    assert set(written["datasets"]) == {"a", "b"}
    assert written["m-mIoU"] == pytest.approx((written["datasets"]["a"]["mIoU"] + rec_b["mIoU"]) / 2)
    assert written["source_val"]["split"] == "val" and written["source_val"]["dataset"] == "a"
    assert summary["variant"] == "full"
    assert "_speed" not in written


def test_absent_class_written_as_null(tmp_path):
    model = TinySeg().eval()
    ds = ColourBlobs(n=2, k=2, seed=0)  # only ids 0, 1 of a 3-class vocabulary
    cfg = EvalConfig(input_size=12, short_side=20, batch_size=2)
    evaluate_suite(model, [EvalItem("x", ds, ["a", "b", "c"], "x")], cfg, tmp_path, variant="v", progress=False)
    text = (tmp_path / "x.json").read_text()
    rec = json.loads(text)
    assert rec["IoU"][2] is None and rec["ACC"][2] is None and "NaN" not in text


def test_slide_matches_unfold_fold_reference():
    """Our window loop against CAT-Seg's unfold/fold formulation (640/384/256 scaled by 1/16)."""
    torch.manual_seed(0)
    model = TinySeg().eval()
    vocab = ["a", "b", "c"]
    s, k, stride = 40, 24, 16
    cfg = EvalConfig(mode="slide", input_size=k, slide_size=s, slide_stride=stride)
    images = torch.rand(2, 3, s, s) * 255
    with torch.no_grad():
        ours = _slide_scores(model, images, vocab, cfg, torch.device("cpu"))
        for b in range(2):
            img = images[b:b + 1]
            unfold = torch.nn.Unfold(kernel_size=k, stride=stride)
            fold = torch.nn.Fold(output_size=(s, s), kernel_size=k, stride=stride)
            wins = unfold(img).transpose(1, 2).reshape(-1, 3, k, k)  # (L, 3, k, k)
            glob = F.interpolate(img, size=(k, k), mode="bilinear", align_corners=False)
            out = F.interpolate(model(torch.cat([wins, glob]), vocab), size=k, mode="bilinear",
                                align_corners=False).sigmoid()
            g = F.interpolate(out[-1:], size=(s, s), mode="bilinear", align_corners=False)
            w = out[:-1].flatten(1).T[None]  # (1, K*k*k, L)
            avg = fold(w) / fold(unfold(torch.ones(1, 1, s, s)))
            ref = (avg + g) / 2
            torch.testing.assert_close(ours[b:b + 1], ref, rtol=1e-5, atol=1e-6)


def test_window_starts_cover_the_image():
    assert window_starts(640, 384, 256) == [0, 256]
    assert window_starts(700, 384, 256) == [0, 256, 316]
    assert window_starts(300, 384, 256) == [0]


def test_slide_mode_end_to_end():
    model = TinySeg().eval()
    ds = ColourBlobs(n=3, k=4)
    conf, stats = evaluate_dataset(model, ds, ["a", "b", "c", "d"],
                                   EvalConfig(mode="slide", input_size=12, slide_size=20, slide_stride=8),
                                   progress=False)
    assert conf.sum() == sum(int((s["mask"] != 255).sum()) for s in ds) and stats["images"] == 3


def test_bad_eval_input():
    model = TinySeg().eval()
    with pytest.raises(DrsegInputError, match="vocabulary of 1 class"):
        evaluate_dataset(model, ColourBlobs(n=2), ["only"], EvalConfig(input_size=8), progress=False)
    with pytest.raises(DrsegInputError, match="evaluate.mode"):
        EvalConfig.from_params({"mode": "tiles"})
    with pytest.raises(DrsegInputError, match="unknown params"):
        EvalConfig.from_params({"mdoe": "slide"})
    with pytest.raises(DrsegInputError, match="ids must lie"):  # label id 3 with a 2-class vocab
        evaluate_dataset(model, ColourBlobs(n=4, k=4), ["a", "b"], EvalConfig(input_size=8), progress=False)


class _MixedSizes(torch.utils.data.Dataset):
    """Two image sizes in one dataset: batches are collated as lists and resized one by one."""

    def __init__(self):
        self.a, self.b = ColourBlobs(n=3, seed=4), ColourBlobs(n=3, seed=5, h=14, w=26)

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return self.a[i // 2] if i % 2 == 0 else self.b[i // 2]


def test_images_of_several_sizes_in_one_batch(trained):
    ds = _MixedSizes()
    vocab = ["red roof", "grass", "water", "sand"]
    cfg = EvalConfig(input_size=12, short_side=40, max_long=100, batch_size=4)
    conf, _ = evaluate_dataset(trained, ds, vocab, cfg, progress=False)
    ref = torch.zeros(4, 4, dtype=torch.int64)
    with torch.no_grad():
        for s in ds:
            x = s["image"][None]
            h, w = x.shape[-2:]
            sh = 40 / min(h, w)
            x = F.interpolate(x, size=(int(h * sh + 0.5), int(w * sh + 0.5)), mode="bilinear", align_corners=False)
            x = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)
            logits = F.interpolate(trained(x, vocab), size=(12, 12), mode="bilinear", align_corners=False)
            up = F.interpolate(logits.sigmoid(), size=s["mask"].shape, mode="bilinear", align_corners=False)
            ref += confusion_matrix(up[0].argmax(0), s["mask"], 4)
    assert torch.equal(conf, ref)


def test_bad_eval_flags_are_named():
    with pytest.raises(DrsegInputError, match="evaluate.compile: expected true/false"):
        EvalConfig.from_params({"compile": "yes"})
    with pytest.raises(DrsegInputError, match="evaluate.channels_last"):
        EvalConfig.from_params({"channels_last": 1})
    with pytest.raises(DrsegInputError, match="evaluate.num_workers"):
        EvalConfig.from_params({"num_workers": -1})


def test_loader_quarter_batches_merge_back_into_model_batches():
    from drseg.engine.evaluate import _loader_batch_size, _model_batches

    assert _loader_batch_size(32, 12) == 8 and _loader_batch_size(32, 0) == 32
    assert _loader_batch_size(6, 2) == 2 and _loader_batch_size(7, 2) == 7
    loader = [{"image": torch.full((2, 3, 4, 4), float(i)), "mask": [torch.zeros(4, 4)] * 2,
               "path": [f"{i}a", f"{i}b"]} for i in range(5)]  # 10 images in loader batches of 2
    merged = list(_model_batches(loader, 4))
    assert [len(b["mask"]) for b in merged] == [4, 4, 2]
    assert [p for b in merged for p in b["path"]] == [f"{i}{c}" for i in range(5) for c in "ab"]
    assert [g[0, 0, 0, 0].item() for g in merged[1]["image"]] == [2.0, 3.0]


@pytest.mark.parametrize("mixed", [False, True])
def test_worker_loader_gives_the_same_matrix_as_in_process(trained, mixed):
    """With workers the loader hands over quarter batches that are merged back: same model
    batches, same confusion matrix as without workers (one image size, and several)."""
    ds = _MixedSizes() if mixed else ColourBlobs(n=10, seed=6)
    vocab = ["red roof", "grass", "water", "sand"]
    confs = []
    for workers in (0, 2):
        cfg = EvalConfig(input_size=12, short_side=40, max_long=100, batch_size=4, num_workers=workers)
        confs.append(evaluate_dataset(trained, ds, vocab, cfg, progress=False)[0])
    assert confs[0].sum() > 0 and torch.equal(confs[0], confs[1])
