"""Training loop: determinism, resume equivalence, NaN stop, atomic checkpoints, bad params.

The loop is exercised with a tiny stand-in that has the DR-Seg model API
(``model(images, vocab) -> (B, K, h, w)``, ``model.loss``, ``model.parameter_groups``); the
real model is exercised by the stage test in test_train_stage.py.
"""
from __future__ import annotations

import errno
import hashlib
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from drseg.data.transforms import PAD_VALUE, TrainAugment, random_crop, ssd_color_jitter
from drseg.engine import checkpoint as ckpt
from drseg.engine.distributed import DistInfo
from drseg.engine.train import NonFiniteLossError, TrainConfig, sample_plan, train
from drseg.errors import DrsegInputError

PALETTE = torch.tensor([[200., 40, 40], [40, 180, 60], [40, 60, 200], [220, 220, 60]])


class TinySeg(nn.Module):
    """Stand-in with the model API: a stride-2 conv body and name-hashed class vectors."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(dim, dim, 3, stride=2, padding=1))
        self.text = nn.Linear(dim, dim)  # plays the CLIP part (lr x clip_lr_mult)
        self.dim = dim

    def class_vectors(self, vocab):
        vecs = []
        for name in vocab:
            seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
            vecs.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(vecs).to(self.text.weight.device)  # (K, D)

    def forward(self, images, vocab):
        f = self.body(images / 255.0)  # (B, D, h, w)
        t = self.text(self.class_vectors(vocab))  # (K, D)
        return torch.einsum("bdhw,kd->bkhw", f, t)

    def loss(self, logits, masks, check=True):
        k = logits.shape[1]
        up = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        valid = masks != 255
        target = F.one_hot(masks.masked_fill(~valid, 0), k).permute(0, 3, 1, 2).float()
        bce = F.binary_cross_entropy_with_logits(up, target, reduction="none")  # (B, K, H, W)
        return (bce * valid[:, None]).sum() / (valid.sum() * k).clamp_min(1)

    def parameter_groups(self, lr, clip_lr_mult):
        return [{"params": list(self.body.parameters()), "lr": lr},
                {"params": list(self.text.parameters()), "lr": lr * clip_lr_mult}]


class ColourBlobs(torch.utils.data.Dataset):
    """Images whose left and right halves take the colours of their two classes, some ignore."""

    def __init__(self, n: int = 12, h: int = 20, w: int = 24, seed: int = 0, k: int = 4, poison=None):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            a, b = torch.randint(0, k, (2,), generator=g).tolist()
            mask = torch.full((h, w), a, dtype=torch.int64)
            mask[:, w // 2:] = b
            mask[:2, :3] = 255
            img = PALETTE[mask.clamp(max=k - 1)].permute(2, 0, 1).clone()  # (3, H, W)
            img += 10 * torch.randn(img.shape, generator=g)
            if poison == i:
                img[:] = math.nan
            self.items.append({"image": img.clamp(0, 255).round() if poison != i else img, "mask": mask,
                               "path": f"blobs/img_{i:03d}.png"})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


VOCAB = ["red roof", "grass", "water", "sand"]


def _cfg(**kw):
    base = dict(iterations=12, batch_size=4, lr=1e-2, weight_decay=1e-4, clip_lr_mult=0.1, grad_clip=1.0,
                crop=16, checkpoint_every=4, seed=0, num_workers=0)
    base.update(kw)
    return TrainConfig(**base)


def _run(tmp, cfg, dataset=None, **kw):
    torch.manual_seed(123)
    model = TinySeg()
    res = train(model, dataset or ColourBlobs(), VOCAB, cfg, tmp, model_cfg={"preset": "standin"},
                train_dataset="blobs", fingerprint="fp", progress=False, **kw)
    return model, res


def test_same_params_give_identical_weights(tmp_path):
    m1, r1 = _run(tmp_path / "a", _cfg())
    m2, r2 = _run(tmp_path / "b", _cfg())
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert r1.losses == r2.losses
    assert (tmp_path / "a" / "model_final.pt").read_bytes() == (tmp_path / "b" / "model_final.pt").read_bytes()
    # and it learns: the loss falls
    assert r1.losses[-1][1] < r1.losses[0][1]


def test_different_seed_gives_different_weights(tmp_path):
    m1, _ = _run(tmp_path / "a", _cfg(seed=0))
    m2, _ = _run(tmp_path / "b", _cfg(seed=1))
    assert not torch.equal(m1.body[0].weight, m2.body[0].weight)


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    m_full, r_full = _run(tmp_path / "full", _cfg())

    def kill_at_7(metrics, it):
        if it == 7:  # after the checkpoint at 4, before the one at 8
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path / "killed", _cfg(), on_log=kill_at_7)
    state = ckpt.load_training_state(tmp_path / "killed" / "last.pt")
    assert state["iteration"] == 4
    assert not (tmp_path / "killed" / "model_final.pt").exists()
    m_res, r_res = _run(tmp_path / "killed", _cfg())  # a fresh process would do exactly this
    assert r_res.resumed_from == 4
    assert r_res.iterations == r_full.iterations == 12
    assert r_res.final_loss == r_full.final_loss
    assert r_res.losses == r_full.losses
    for (k, a), (_, b) in zip(m_full.state_dict().items(), m_res.state_dict().items()):
        assert torch.equal(a, b), k


def test_resume_state_of_other_params_is_not_used(tmp_path):
    _run(tmp_path, _cfg(iterations=4))
    torch.manual_seed(123)
    res = train(TinySeg(), ColourBlobs(), VOCAB, _cfg(iterations=4), tmp_path, model_cfg={},
                train_dataset="blobs", fingerprint="other", progress=False)
    assert res.resumed_from == 0


@pytest.mark.parametrize("what", ["drseg", "torch"])
def test_resume_state_of_other_code_is_not_used(tmp_path, monkeypatch, caplog, what):
    """``train()`` itself stores the drseg sources' digest and the torch version beside the
    state, so a library caller (not only the train stage) never continues another code's run."""
    import logging

    import drseg.engine.train as train_mod

    _run(tmp_path, _cfg(iterations=8), stop_after=4)
    assert ckpt.load_training_state(tmp_path / "last.pt")["extra"]["code"] == {
        "drseg": train_mod.code_digest(), "torch": torch.__version__}
    if what == "drseg":
        monkeypatch.setattr(train_mod, "code_digest", lambda root=None: "other sources")
    else:
        monkeypatch.setattr(train_mod.torch, "__version__", "0.0.0")
    with caplog.at_level(logging.WARNING, logger="drseg.engine.train"):
        _, res = _run(tmp_path, _cfg(iterations=8))
    assert res.resumed_from == 0 and "written by other code" in caplog.text


def test_resume_state_without_a_code_record_is_not_used(tmp_path):
    """A ``last.pt`` that records no code (written before the check existed) starts afresh."""
    _run(tmp_path, _cfg(iterations=8), stop_after=4)
    state = ckpt.load_training_state(tmp_path / "last.pt")
    del state["extra"]["code"]
    torch.save(state, tmp_path / "last.pt")
    _, res = _run(tmp_path, _cfg(iterations=8))
    assert res.resumed_from == 0


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (2, 3, 8, 8), generator=g).float(),  # exact sums
             "mask": torch.randint(0, 4, (2, 8, 8), generator=g), "path": [f"b{i}a", f"b{i}b"]}
            for i in range(n)]


def test_device_batches_hands_out_every_batch_in_order_on_cpu():
    from drseg.engine.train import device_batches

    src = _batches(3)
    got = list(device_batches(iter(src), torch.device("cpu")))  # the prefetch is CUDA only
    assert [b["path"] for b, _, _ in got] == [b["path"] for b in src]
    for (b, images, masks), ref in zip(got, src):  # the same tensors, not copies (as before)
        assert images is ref["image"] and masks is ref["mask"]
    assert list(device_batches(iter([]), torch.device("cpu"))) == []


@pytest.mark.gpu
@pytest.mark.parametrize("n", [1, 5])
def test_device_batches_prefetch_on_cuda_gives_the_batches_in_order(n):
    """The side-stream copy one batch ahead: each batch arrives whole on the compute stream
    (a reduction there sees its values), in order, and pinned sources are copied correctly."""
    from drseg.engine.train import device_batches

    dev = torch.device("cuda")
    src = [{**b, "image": b["image"].pin_memory(), "mask": b["mask"].pin_memory()} for b in _batches(n)]
    sums = []
    for (b, images, masks), ref in zip(device_batches(iter(src), dev, prefetch=True), src):
        assert images.device.type == "cuda" and b["path"] == ref["path"]
        sums.append((images.double().sum(), masks.sum()))
        torch.cuda._sleep(1_000_000)  # a long kernel on the compute stream while the next copies
    torch.cuda.synchronize()
    assert len(sums) == n
    for (si, sm), ref in zip(sums, src):
        assert si.item() == ref["image"].double().sum().item() and sm.item() == ref["mask"].sum().item()


@pytest.mark.gpu
def test_device_batches_compute_stream_waits_for_a_slow_copy():
    """The side stream is held up (a long sleep enqueued before each copy) while the compute
    stream is idle: without the wait on the copy's event, the reductions on the compute stream
    would read the batch's memory before the copy has filled it."""
    import time

    from drseg.engine.train import device_batches

    dev = torch.device("cuda")
    side = torch.cuda.Stream(dev)
    g = torch.Generator().manual_seed(time.time_ns() % 2**31)  # values differ between runs
    # integer values: the sums are exact in any order, so the GPU's must equal the CPU's
    src = [{"image": (torch.randint(0, 256, (4, 3, 128, 128), generator=g) + i).float().pin_memory(),
            "mask": torch.randint(0, 200, (4, 128, 128), generator=g).pin_memory(), "path": [str(i)]}
           for i in range(4)]

    def slow(batches):
        for b in batches:
            with torch.cuda.stream(side):
                torch.cuda._sleep(50_000_000)  # tens of ms on the side stream, before the copy
            yield b

    sums = [(images.double().sum(), masks.sum())
            for _, images, masks in device_batches(slow(src), dev, prefetch=True, stream=side)]
    torch.cuda.synchronize()
    for (si, sm), ref in zip(sums, src):
        assert si.item() == ref["image"].double().sum().item()
        assert sm.item() == ref["mask"].sum().item()


def test_cosine_schedule_without_warmup_and_clip_multiplier(tmp_path):
    seen = []
    _run(tmp_path, _cfg(iterations=8, checkpoint_every=100), on_log=lambda m, it: seen.append((it, m["lr"])))
    base = 1e-2
    for it, lr in seen:  # lr used at iteration `it` (1-based) = cosine at step it-1
        assert lr == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * (it - 1) / 8)), rel=1e-9)
    state = ckpt.load_training_state(tmp_path / "last.pt")
    groups = state["optimizer"]["param_groups"]
    assert groups[1]["initial_lr"] == pytest.approx(groups[0]["initial_lr"] * 0.1)


def test_nan_loss_stops_naming_iteration_and_files_and_keeps_last_good(tmp_path):
    n = 24  # one epoch = 6 iterations of 4; poison an image first drawn at iteration 6 (1-based)
    bad = sample_plan(n, 0, 5, 4)[0][0]
    ds = ColourBlobs(n=n, poison=bad)
    first_bad = min(it for it in range(12) if any(i == bad for i, _ in sample_plan(n, 0, it, 4)))
    assert first_bad == 5
    with pytest.raises(NonFiniteLossError) as e:
        _run(tmp_path, _cfg(), dataset=ds)
    msg = str(e.value)
    assert "at iteration 6 " in msg and f"blobs/img_{bad:03d}.png" in msg
    state = ckpt.load_training_state(tmp_path / "last.pt")  # the good state of iteration 4
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "model_final.pt").exists()


def test_label_id_out_of_range_is_named_with_its_file(tmp_path):
    """Labels are checked in the loader (not by a host sync in the step): an id >= K that is
    not the ignore id stops training with the file named."""
    ds = ColourBlobs(n=8)
    ds.items[3]["mask"][5, 5] = 7  # 4 classes
    with pytest.raises(DrsegInputError, match=r"blobs/img_003\.png: label id 7 outside 0\.\.3"):
        _run(tmp_path, _cfg(iterations=4, crop=24), dataset=ds)


def test_full_disk_while_checkpointing_keeps_previous(tmp_path, monkeypatch):
    _run(tmp_path, _cfg(iterations=4))
    last = tmp_path / "last.pt"
    before = last.read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")  # some bytes reach the temporary file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(ckpt.CheckpointWriteError, match="disk full.*previous checkpoint is intact"):
        _run(tmp_path, _cfg(iterations=8))
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert last.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries
    assert ckpt.load_training_state(last)["iteration"] == 4


def test_images_smaller_than_crop_are_padded(tmp_path):
    g = torch.Generator().manual_seed(0)
    img, mask = torch.full((3, 5, 7), 10.0), torch.zeros(5, 7, dtype=torch.int64)
    ci, cm = random_crop(img, mask, 9, g)
    assert ci.shape == (3, 9, 9) and cm.shape == (9, 9)
    assert (cm == 255).sum() == 81 - 35 and (ci == PAD_VALUE).sum() == 3 * (81 - 35)
    # and a whole training run on 10x12 images with a crop of 16 works
    _, res = _run(tmp_path, _cfg(iterations=2), dataset=ColourBlobs(h=10, w=12))
    assert math.isfinite(res.final_loss)


def test_augment_is_a_function_of_the_seed():
    s = ColourBlobs()[0]
    aug = TrainAugment(16)
    a1, m1 = aug(s["image"], s["mask"], 7)
    a2, m2 = aug(s["image"], s["mask"], 7)
    a3, _ = aug(s["image"], s["mask"], 8)
    assert torch.equal(a1, a2) and torch.equal(m1, m2) and not torch.equal(a1, a3)
    assert a1.min() >= 0 and a1.max() <= 255


def test_ssd_jitter_hue_and_saturation_keep_grey_grey():
    grey = torch.full((3, 4, 4), 100.0)
    for seed in range(10):
        out = ssd_color_jitter(grey, torch.Generator().manual_seed(seed))
        assert torch.allclose(out[0], out[1], atol=1e-3) and torch.allclose(out[1], out[2], atol=1e-3)


def test_sample_plan_splits_global_batch_over_ranks():
    one = sample_plan(10, 3, 5, 4)
    two = sample_plan(10, 3, 5, 4, 0, 2) + sample_plan(10, 3, 5, 4, 1, 2)
    assert one == two
    # every epoch visits every image once
    seen = [i for it in range(5) for i, _ in sample_plan(10, 3, it, 4)][:10]
    assert sorted(seen) == list(range(10))


@pytest.mark.parametrize("block, match", [
    ({"iterations": "10"}, "train.iterations"),
    ({"itreations": 10}, "train.itreations: unknown"),
    ({"lr": -1.0}, "train.lr"),
    ({"amp": "fp8"}, "train.amp"),
    ({"batch_size": 0}, "train.batch_size"),
    ({"flip": "yes"}, "train.flip"),
    ({"compile_mode": "fast"}, "train.compile_mode: expected one of default, reduce-overhead"),
])
def test_bad_train_params_are_named(block, match):
    with pytest.raises(DrsegInputError, match=match):
        TrainConfig.from_params(block)


def test_one_class_vocabulary_is_refused(tmp_path):
    with pytest.raises(DrsegInputError, match="vocabulary of 1 class"):
        train(TinySeg(), ColourBlobs(), ["only"], _cfg(), tmp_path, model_cfg={}, train_dataset="b",
              progress=False)


def test_model_checkpoint_roundtrip_and_mismatch(tmp_path):
    model = TinySeg()
    p = ckpt.save_model_checkpoint(tmp_path / "m.pt", model=model, model_cfg={"preset": "tiny", "rho": 0.5},
                                   iteration=3, train_dataset="blobs", channel_index={"format": "x"})
    c = ckpt.load_model_checkpoint(p, expected_cfg={"rho": 0.5})
    assert c["format"] == "drseg-model/1" and c["iteration"] == 3 and c["train_dataset"] == "blobs"
    other = TinySeg()
    ckpt.load_state_dict_checked(other, c["state_dict"], p)
    assert torch.equal(other.body[0].weight, model.body[0].weight)
    with pytest.raises(DrsegInputError, match=r"m\.pt: checkpoint does not match.*rho: checkpoint 0.5 != params 0.4"):
        ckpt.load_model_checkpoint(p, expected_cfg={"rho": 0.4})
    with pytest.raises(DrsegInputError, match="weights do not fit"):
        ckpt.load_state_dict_checked(TinySeg(dim=4), c["state_dict"], p)
    (tmp_path / "trunc.pt").write_bytes(p.read_bytes()[:100])
    with pytest.raises(DrsegInputError, match="trunc.pt: not a readable"):
        ckpt.load_model_checkpoint(tmp_path / "trunc.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(DrsegInputError, match="foreign.pt: not a drseg model checkpoint"):
        ckpt.load_model_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(DrsegInputError, match="not found"):
        ckpt.load_model_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("device,on", [("cpu", "always"),
                                       pytest.param("cuda", "cuda", marks=pytest.mark.gpu)])
def test_frozen_casts_in_the_loop_change_no_bit(tmp_path, monkeypatch, device, on):
    """train() under bfloat16 autocast (on the CPU; on CUDA the switch's default) with the
    frozen weights cast once (``drseg.models.layers.frozen_casts``): the same losses and final
    weights as with every step casting them, bit for bit on the CPU; on CUDA, where some
    backward kernels accumulate with atomics in no fixed order (two runs of the same code
    differ from the second loss on), the first loss bit for bit; the copies were used, and the
    model comes back with its own layer classes."""
    from drseg.models import layers
    from drseg.models.drseg import build_model, make_config

    calls = []  # multiplications by a copy
    with_copy = layers.linear_with_copy
    monkeypatch.setattr(layers, "linear_with_copy",
                        lambda x, w, b: calls.append(1) or with_copy(x, w, b))

    def run(mode):
        monkeypatch.setattr(layers, "CAST_FROZEN_WEIGHTS", mode)
        torch.manual_seed(0)
        model = build_model(make_config("tiny")).to(device)
        classes = {n: type(m) for n, m in model.named_modules()}
        calls.clear()
        cfg = _cfg(iterations=3, amp="bf16", checkpoint_every=3, device=device)
        res = train(model, ColourBlobs(), VOCAB, cfg, tmp_path / mode, model_cfg={"preset": "tiny"},
                    train_dataset="blobs", fingerprint="fp", progress=False,
                    dist_info=DistInfo(device=torch.device(device)))
        assert {n: type(m) for n, m in model.named_modules()} == classes
        return {k: v.cpu() for k, v in model.state_dict().items()}, res.losses, len(calls)

    ref_state, ref_losses, n_never = run("never")
    state, losses, n_always = run(on)
    assert n_never == 0 and n_always > 0
    assert len(losses) == len(ref_losses) == 3 and state.keys() == ref_state.keys()
    if device == "cpu":
        assert losses == ref_losses
        assert all(torch.equal(state[k], ref_state[k]) for k in state)
    else:  # the first loss, before any update; after it AdamW turns the order-dependent last
        # bits of near-zero gradients into lr-sized steps (tests/test_models_layers.py checks
        # one CUDA step's gradients)
        assert losses[0] == ref_losses[0]


def test_nan_loss_with_frozen_casts_gives_the_layers_back(tmp_path, monkeypatch):
    """A run that stops on a NaN loss while the frozen weights hold their cast copies (bf16
    autocast, the switch forced on for the CPU) gives every layer its own class back."""
    from drseg.models import layers
    from drseg.models.drseg import build_model, make_config

    monkeypatch.setattr(layers, "CAST_FROZEN_WEIGHTS", "always")
    torch.manual_seed(0)
    model = build_model(make_config("tiny"))
    classes = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(NonFiniteLossError):
        train(model, ColourBlobs(n=8, poison=5), VOCAB, _cfg(iterations=4, amp="bf16", batch_size=4),
              tmp_path, model_cfg={"preset": "tiny"}, train_dataset="blobs", fingerprint="fp",
              progress=False)
    assert {n: type(m) for n, m in model.named_modules()} == classes
    assert not any(layers.holds_frozen_cast(m) for m in model.modules())


def _cuda_flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark)


@pytest.fixture
def restore_cuda_flags(monkeypatch):
    """Whatever a test does to the TF32 / cuDNN flags is undone afterwards."""
    for obj, name in ((torch.backends.cuda.matmul, "fp32_precision"), (torch.backends.cudnn, "fp32_precision"),
                      (torch.backends.cudnn.conv, "fp32_precision"), (torch.backends.cudnn.rnn, "fp32_precision"),
                      (torch.backends.cudnn, "benchmark")):
        monkeypatch.setattr(obj, name, getattr(obj, name))


def test_cuda_math_sets_tf32_and_cudnn_search_on_cuda_and_restores_them(restore_cuda_flags):
    """The settings hold inside the block on CUDA; the previous ones come back, also after an
    error; the CPU is left alone."""
    from drseg.engine.distributed import cuda_math

    before = _cuda_flags()
    for tf32, bench in ((True, True), (False, False), (True, False)):
        with cuda_math(torch.device("cuda"), tf32, bench):
            assert _cuda_flags() == (tf32, tf32, bench)
        assert _cuda_flags() == before
    with pytest.raises(RuntimeError, match="boom"):
        with cuda_math(torch.device("cuda"), not before[0], not before[2]):
            raise RuntimeError("boom")
    assert _cuda_flags() == before
    with cuda_math(torch.device("cpu"), not before[0], not before[2]):
        assert _cuda_flags() == before


def test_cuda_math_leaves_tf32_set_through_the_fp32_precision_api(restore_cuda_flags):
    """cuDNN convolutions and RNNs on different precisions cannot be read as one allow_tf32
    flag (torch raises): TF32 is left as it is, with a warning; the cuDNN search still applies."""
    from drseg.engine.distributed import cuda_math

    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    bench = torch.backends.cudnn.benchmark
    with pytest.warns(UserWarning, match="TF32 left as set"):
        with cuda_math(torch.device("cuda"), False, not bench):
            assert torch.backends.cudnn.conv.fp32_precision == "tf32"
            assert torch.backends.cudnn.benchmark is (not bench)
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.backends.cudnn.benchmark is bench


def test_train_and_evaluate_run_under_their_configs_cuda_math(monkeypatch, tmp_path):
    """train() and evaluate_dataset() enter cuda_math with their configs' tf32 /
    cudnn_benchmark (on the CPU it changes nothing, so the call is what is checked)."""
    import contextlib

    import drseg.engine.evaluate as E
    import drseg.engine.train as T

    calls = []

    @contextlib.contextmanager
    def spy(device, tf32, bench):
        calls.append((device.type, tf32, bench))
        yield

    monkeypatch.setattr(T, "cuda_math", spy)
    monkeypatch.setattr(E, "cuda_math", spy)
    torch.manual_seed(0)
    model = TinySeg()
    train(model, ColourBlobs(n=4), VOCAB, _cfg(iterations=1, tf32=False, cudnn_benchmark=True),
          tmp_path / "run", model_cfg={}, train_dataset="blobs", progress=False)
    E.evaluate_dataset(model.eval(), ColourBlobs(n=2), VOCAB,
                       E.EvalConfig(input_size=12, short_side=20, tf32=True, cudnn_benchmark=False),
                       progress=False)
    assert calls == [("cpu", False, True), ("cpu", True, False)]


def _deterministic_state() -> tuple[bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())


@pytest.fixture
def restore_deterministic_state():
    """Whatever a test does to torch.use_deterministic_algorithms is undone afterwards."""
    enabled, warn_only = _deterministic_state()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.mark.parametrize("before", [(False, False), (True, False), (False, True)])
def test_train_puts_deterministic_algorithms_back(monkeypatch, tmp_path, before,
                                                   restore_deterministic_state):
    """train() turns deterministic algorithms on for a deterministic CPU run (seen inside
    the loop), and afterwards, also after an error, the caller's setting is back."""
    import drseg.engine.train as T

    seen = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(*a, **kw):
        seen.append(_deterministic_state())
        return real_clip(*a, **kw)

    monkeypatch.setattr(T.torch.nn.utils, "clip_grad_norm_", clip)
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.manual_seed(0)
    train(TinySeg(), ColourBlobs(n=4), VOCAB, _cfg(iterations=1, grad_clip=1.0),
          tmp_path / "run", model_cfg={}, train_dataset="blobs", progress=False)
    assert seen == [(True, True)]
    assert _deterministic_state() == before
    monkeypatch.setattr(T, "StepLoss", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        train(TinySeg(), ColourBlobs(n=4), VOCAB, _cfg(iterations=1), tmp_path / "run3",
              model_cfg={}, train_dataset="blobs", progress=False)
    assert _deterministic_state() == before


def test_tf32_and_cudnn_benchmark_params_are_checked():
    from drseg.engine.evaluate import EvalConfig

    assert TrainConfig.from_params({"tf32": False, "cudnn_benchmark": False}).tf32 is False
    with pytest.raises(DrsegInputError, match="train.tf32: expected true/false"):
        TrainConfig.from_params({"tf32": "yes"})
    with pytest.raises(DrsegInputError, match="evaluate.cudnn_benchmark: expected true/false"):
        EvalConfig.from_params({"cudnn_benchmark": 1})
