"""The GPU forms of the patch embedding and GroupNorm (drseg.models.layers) equal the layers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from drseg.models.layers import (PatchConv2d, can_pack, group_norm_nhwc, is_patch_conv,
                                 packed_self_attention, patch_conv, residual_attention_block,
                                 run_layers, use_patch_gemm)


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("cin,patch,bias", [(3, 16, False), (3, 14, True), (5, 4, True)])
def test_patch_conv_equals_the_convolution(cin, patch, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, 24, patch, stride=patch, bias=bias).double()
    x = torch.randn(2, cin, 3 * patch, 2 * patch, dtype=torch.float64, requires_grad=True)
    ref = conv(x)
    got = patch_conv(x, conv)
    assert got.shape == ref.shape == (2, 24, 3, 2)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert _rel(got, ref) < 1e-12
    w = torch.randn(ref.shape, dtype=torch.float64)
    g_ref = torch.autograd.grad((ref * w).sum(), [x, conv.weight])
    g_got = torch.autograd.grad((got * w).sum(), [x, conv.weight])
    for a, b in zip(g_got, g_ref):
        assert _rel(a, b) < 1e-12


def test_use_patch_gemm_keeps_parameters_and_only_takes_patch_convolutions():
    conv = nn.Conv2d(3, 8, 4, stride=4)
    keys = dict(conv.state_dict())
    assert use_patch_gemm(conv) is conv and type(conv) is PatchConv2d
    assert {k: v for k, v in conv.state_dict().items()}.keys() == keys.keys()
    assert all(torch.equal(conv.state_dict()[k], v) for k, v in keys.items())
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, stride=4))  # CPU
    for other in (nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 4, stride=2),
                  nn.Conv2d(4, 8, 4, stride=4, groups=2)):
        assert not is_patch_conv(other)
        assert type(use_patch_gemm(other)) is nn.Conv2d


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_nhwc_equals_group_norm_and_keeps_channels_last(groups):
    torch.manual_seed(1)
    gn = nn.GroupNorm(groups, 8).double()
    nn.init.normal_(gn.weight)
    nn.init.normal_(gn.bias)
    x = torch.randn(3, 8, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    ref, got = gn(x), group_norm_nhwc(x, gn)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    assert _rel(got, ref) < 1e-12
    w = torch.randn(ref.shape, dtype=torch.float64)
    params = [x, gn.weight, gn.bias]
    for a, b in zip(torch.autograd.grad((got * w).sum(), params),
                    torch.autograd.grad((ref * w).sum(), params)):
        assert _rel(a, b) < 1e-12


def test_run_layers_uses_the_nhwc_group_norm_for_channels_last_maps_only():
    torch.manual_seed(2)
    layers = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU())
    x = torch.randn(2, 4, 6, 6)
    plain = run_layers(layers, x)
    assert plain.is_contiguous() and torch.equal(plain, layers(x))
    cl = run_layers(layers, x.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    assert _rel(cl, plain) < 1e-5


def test_run_layers_dispatches_each_group_norm_of_channels_last_maps(monkeypatch):
    """On the CPU nn.GroupNorm keeps channels-last (on CUDA it does not), so count the calls."""
    from drseg.models import layers

    calls = []
    real = layers.group_norm_nhwc

    def counting(x, gn):
        calls.append(tuple(x.shape))
        return real(x, gn)

    monkeypatch.setattr(layers, "group_norm_nhwc", counting)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU())
    x = torch.randn(2, 4, 6, 6)
    run_layers(net, x)
    assert calls == []  # NCHW maps: nn.GroupNorm
    run_layers(net, x.contiguous(memory_format=torch.channels_last))
    assert calls == [(2, 8, 6, 6), (2, 8, 6, 6)]
    monkeypatch.setattr(layers, "NHWC_GROUP_NORM", False)
    run_layers(net, x.contiguous(memory_format=torch.channels_last))
    assert len(calls) == 2  # switched off: nn.GroupNorm again


def _tiny_step(amp_dtype=None, device="cpu"):
    """The tiny model (seed 0), one fixed batch of 2 and a ``run()`` that returns the loss and
    the gradients of one StepLoss forward + backward."""
    from drseg.engine.train import StepLoss
    from drseg.models.drseg import build_model, make_config

    torch.manual_seed(0)
    model = build_model(make_config("tiny")).to(device)
    g = torch.Generator().manual_seed(1)
    size = model.cfg.image_size
    images = (torch.rand(2, 3, size, size, generator=g) * 255).to(device)
    masks = torch.randint(0, 3, (2, size, size), generator=g).to(device)
    step = StepLoss(model, ["roof", "tree", "water"], amp_dtype)

    def run():
        model.zero_grad(set_to_none=True)
        loss = step(images, masks)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None}

    return model, run


def test_tiny_model_with_the_cuda_layer_forms_matches_the_plain_model(monkeypatch):
    """The whole tiny model with the GPU forms forced on (patch GEMMs, packed attention,
    text tokens cut after the longest sentence, channels-last aggregator volume, decoder and
    guidance upsampler, NHWC GroupNorm, padded head): the same loss and gradients (the text tower's q/v gradients
    checked on their own too)."""
    from drseg.models import aggregator, layers
    from drseg.models import clip as clip_lib

    model, run = _tiny_step()
    assert type(model.clip.visual.conv1) is PatchConv2d
    assert type(model.prior.model.patch_embed.proj) is PatchConv2d
    ref_loss, ref_grads = run()
    monkeypatch.setattr(layers, "PATCH_GEMM", "always")
    monkeypatch.setattr(layers, "PACKED_ATTENTION", "always")
    monkeypatch.setattr(clip_lib, "TRUNCATE_TEXT", "always")
    monkeypatch.setattr(aggregator, "CHANNELS_LAST_VOLUME", "always")
    model._token_cache.clear()  # tokens are cut from here on
    model.decoder.channels_last = model.guidance_up.channels_last = True
    model.decoder.head_pad = 8
    loss, grads = run()
    (tokens, _), = model._token_cache.values()
    assert tokens.shape[1] < model.clip.context_length  # the text tower ran on cut tokens
    assert abs(float(loss - ref_loss)) <= 1e-5 * abs(float(ref_loss))
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    for part in (lambda k: True, lambda k: k.startswith("clip.transformer.")):  # all; text q/v
        keys = [k for k in grads if part(k)]
        assert keys
        num = sum(float((grads[k] - ref_grads[k]).norm() ** 2) for k in keys) ** 0.5
        den = sum(float(ref_grads[k].norm() ** 2) for k in keys) ** 0.5
        assert num <= 1e-4 * den


@pytest.mark.parametrize("split", [False, True])
def test_packed_self_attention_equals_multihead_attention(split):
    """Values and gradients of nn.MultiheadAttention (packed or split projections), with k
    frozen as in the model: no gradient reaches it."""
    from drseg.models.clip import split_qkv

    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=True).double()
    nn.init.normal_(attn.in_proj_bias)
    if split:
        holder = nn.Module()
        holder.attn = attn
        assert split_qkv(holder) == 1 and attn.in_proj_weight is None
        attn.k_proj_weight.requires_grad_(False)
    assert can_pack(attn)
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    ref = attn(x, x, x, need_weights=False)[0]
    got = packed_self_attention(attn, x)
    assert _rel(got, ref) < 1e-12
    params = [p for p in attn.parameters() if p.requires_grad]
    w = torch.randn(ref.shape, dtype=torch.float64)
    g_ref = torch.autograd.grad((ref * w).sum(), [x, *params])
    g_got = torch.autograd.grad((got * w).sum(), [x, *params], retain_graph=True)
    for a, b in zip(g_got, g_ref):
        assert _rel(a, b) < 1e-12
    if split:
        (got * w).sum().backward()
        assert attn.k_proj_weight.grad is None and attn.q_proj_weight.grad is not None


def test_can_pack_refuses_what_packed_attention_does_not_compute():
    assert not can_pack(nn.MultiheadAttention(16, 4))  # sequence-first
    assert not can_pack(nn.MultiheadAttention(16, 4, batch_first=True, add_bias_kv=True))
    assert not can_pack(nn.MultiheadAttention(16, 4, batch_first=True, kdim=8, vdim=8))
    assert not can_pack(nn.Linear(4, 4))


def test_residual_attention_block_equals_the_block_and_follows_the_switch(monkeypatch):
    from open_clip.transformer import ResidualAttentionBlock

    from drseg.models import layers

    torch.manual_seed(0)
    blk = ResidualAttentionBlock(16, 4, ls_init_value=0.5).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    calls = []
    real = layers.packed_self_attention
    monkeypatch.setattr(layers, "packed_self_attention",
                        lambda a, t, causal=False: calls.append(causal) or real(a, t, causal))
    residual_attention_block(blk, x)
    assert not calls  # CPU with the default switch: the block's own forward
    mask = torch.full((5, 5), float("-inf")).triu(1).double()  # open_clip's causal mask
    ref_causal = blk(x, attn_mask=mask)
    assert _rel(ref_causal, blk(x)) > 1e-3  # the mask matters
    assert torch.equal(residual_attention_block(blk, x, causal=True), ref_causal)  # its mask
    monkeypatch.setattr(layers, "PACKED_ATTENTION", "always")
    assert _rel(residual_attention_block(blk, x), blk(x)) < 1e-12
    assert _rel(residual_attention_block(blk, x, causal=True), ref_causal) < 1e-12
    assert calls == [False, True]
    cross = ResidualAttentionBlock(16, 4, is_cross_attention=True).double()
    residual_attention_block(cross, x)  # a cross-attention block keeps its own forward
    assert len(calls) == 2


def test_residual_attention_block_under_cpu_autocast_matches_the_block(monkeypatch):
    """bfloat16 autocast: the packed path casts as nn.MultiheadAttention does (same dtype,
    values equal to bf16 rounding)."""
    from open_clip.transformer import ResidualAttentionBlock

    from drseg.models import layers

    torch.manual_seed(0)
    blk = ResidualAttentionBlock(32, 4)
    x = torch.randn(2, 9, 32)
    monkeypatch.setattr(layers, "PACKED_ATTENTION", "always")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, got = blk(x), residual_attention_block(blk, x)
    assert got.dtype == ref.dtype
    assert _rel(got.float(), ref.float()) < 2e-2


def _tiny_clip():
    from drseg.models import clip as clip_lib

    model, tok = clip_lib.load_open_clip("drseg-tiny-clip", None, 64, seed=0)
    clip_lib.set_qv_trainable(model)
    return clip_lib, model.double(), tok


@pytest.mark.parametrize("packed", ["never", "always"])
def test_encode_text_on_cut_tokens_equals_open_clip(monkeypatch, packed):
    """The text tower on tokens cut after the longest sentence: open_clip's embeddings and
    the same gradients of the trainable q/v weights, with and without the packed attention."""
    from drseg.models import layers

    clip_lib, model, tok = _tiny_clip()
    monkeypatch.setattr(layers, "PACKED_ATTENTION", packed)
    tokens, _ = clip_lib.tokenize_vocab(tok, ["roof", "tree, forest", "bare soil"])
    assert clip_lib.truncate_tokens(model, tokens, "cpu") is tokens  # default: CUDA only
    monkeypatch.setattr(clip_lib, "TRUNCATE_TEXT", "always")
    cut = clip_lib.truncate_tokens(model, tokens, "cpu")
    last = int((tokens != 0).sum(dim=1).max())
    assert cut.shape == (tokens.shape[0], last) and torch.equal(cut, tokens[:, :last])
    assert last < tokens.shape[1] and torch.all(tokens[:, last:] == 0)
    params = [p for n, p in model.named_parameters()
              if p.requires_grad and not n.startswith("visual.")]
    assert len(params) > 2
    ref = model.encode_text(tokens)
    got = clip_lib.encode_text(model, cut)
    assert _rel(got, ref) < 1e-10
    w = torch.randn(ref.shape, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((got * w).sum(), params),
                    torch.autograd.grad((ref * w).sum(), params)):
        assert _rel(a, b) < 1e-10
    full = clip_lib.encode_text(model, tokens)  # full rows, through drseg's own loop
    if packed == "never":
        assert torch.equal(full, ref)  # the same operations as open_clip's encode_text
    assert _rel(full, ref) < 1e-10


@pytest.mark.parametrize("change", ["no causal mask", "pool last", "sequence-first"])
def test_truncate_tokens_leaves_other_text_towers_alone(monkeypatch, change):
    clip_lib, model, tok = _tiny_clip()
    monkeypatch.setattr(clip_lib, "TRUNCATE_TEXT", "always")
    tokens, _ = clip_lib.tokenize_vocab(tok, ["roof"])
    assert clip_lib.truncate_tokens(model, tokens, "cpu").shape[1] < tokens.shape[1]
    if change == "no causal mask":
        model.attn_mask = None  # open_clip's text tower without the causal mask
    elif change == "pool last":
        model.text_pool_type = "last"  # reads the last column: cutting would move it
    else:
        model.transformer.batch_first = False
    assert clip_lib.truncate_tokens(model, tokens, "cpu") is tokens


def test_encode_text_of_a_custom_text_clip_is_open_clips(monkeypatch):
    """A CLIP whose text tower is a separate module (open_clip's CustomTextCLIP) is encoded by
    open_clip itself, cut switch or not."""
    import open_clip

    from drseg.models import clip as clip_lib

    clip_lib.register_configs()
    model = open_clip.create_model("drseg-tiny-clip", force_custom_text=True)
    tok = open_clip.get_tokenizer("drseg-tiny-clip")
    tokens, _ = clip_lib.tokenize_vocab(tok, ["roof", "bare soil"])
    monkeypatch.setattr(clip_lib, "TRUNCATE_TEXT", "always")
    assert clip_lib.truncate_tokens(model, tokens, "cpu") is tokens
    with torch.no_grad():
        assert torch.equal(clip_lib.encode_text(model, tokens), model.encode_text(tokens))


@pytest.mark.parametrize("device,packed", [("cpu", "never"), ("cpu", "always"),
                                           pytest.param("cuda", "cuda", marks=pytest.mark.gpu)])
def test_frozen_casts_change_no_bit_of_the_step_under_autocast(monkeypatch, device, packed):
    """The whole tiny model under bfloat16 autocast, with the frozen Linear weights (the
    prior's, CLIP's MLPs) cast once by ``frozen_casts``: the loss bitwise as without, and every
    gradient too on the CPU (on CUDA, where some backward kernels accumulate with atomics in
    no fixed order, within 1e-5 of the gradients' norm plus what two runs without the copies
    differ by); the prior's layers and CLIP's frozen ones were swapped, the trainable ones
    not; the state_dict is untouched inside, and the classes are back after."""
    from drseg.models import layers

    monkeypatch.setattr(layers, "PACKED_ATTENTION", packed)
    model, run = _tiny_step(torch.bfloat16, device)  # autocast to bfloat16 on the device
    ref_loss, ref_grads = run()
    # CUDA: what two runs of the same code differ by (atomic accumulation order)
    noise = 0.0 if device == "cpu" else sum(float((g - ref_grads[k]).norm() ** 2)
                                            for k, g in run()[1].items()) ** 0.5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = {n: type(m) for n, m in model.named_modules()}
    with layers.frozen_casts(model, torch.bfloat16, enabled=True) as casts:
        swapped = {n for n, m in model.named_modules() if layers.holds_frozen_cast(m)}
        assert any(n.startswith("prior.") for n in swapped)
        assert any(n.startswith("clip.visual.") and ".mlp." in n for n in swapped)
        for n in swapped:
            assert not model.get_submodule(n).weight.requires_grad
        trainable_linears = [n for n, m in model.named_modules()
                             if isinstance(m, nn.Linear) and m.weight.requires_grad]
        assert trainable_linears and not set(trainable_linears) & swapped
        assert casts.bytes == sum(p.numel() * 2 for n in swapped
                                  for p in model.get_submodule(n).parameters())
        state = model.state_dict()
        assert state.keys() == before.keys()
        assert all(state[k].dtype == before[k].dtype and torch.equal(state[k], before[k])
                   for k in state)
        loss, grads = run()
        for n in swapped:  # the copies are what the model multiplies by: spoil them, and see
            model.get_submodule(n)._frozen_cast[0].mul_(0.5)
        assert not torch.equal(run()[0], ref_loss)
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    if device == "cpu":
        assert all(torch.equal(grads[k], ref_grads[k]) for k in grads)
    else:
        num = sum(float((grads[k] - ref_grads[k]).norm() ** 2) for k in grads) ** 0.5
        den = sum(float(ref_grads[k].norm() ** 2) for k in grads) ** 0.5
        assert num <= 1e-5 * den + 4 * noise, (num, den, noise)
    assert {n: type(m) for n, m in model.named_modules()} == classes
    assert not any("_frozen_cast" in m.__dict__ for m in model.modules())


def test_frozen_casts_are_used_only_under_autocast_to_their_dtype():
    """A cast layer multiplies by its copy under autocast to the copy's dtype only: in float32,
    under autocast to another dtype, or once its weight trains again, it is the plain layer (a
    copy that is not the rounding of the weight shows which path ran). ``enabled=False``,
    ``dtype=None`` and the switch's default on the CPU swap nothing; trainable layers are left
    alone."""
    from drseg.models import layers

    torch.manual_seed(0)
    lin = nn.Linear(8, 4).requires_grad_(False)
    x = torch.randn(3, 8)
    for kw in ({"dtype": None}, {"dtype": torch.bfloat16, "enabled": False},
               {"dtype": torch.bfloat16}):  # the default switch "cuda", a CPU module
        with layers.frozen_casts(lin, **kw) as casts:
            assert type(lin) is nn.Linear and casts.bytes == 0
    with layers.frozen_casts(lin, torch.bfloat16, enabled=True):
        assert type(lin) is layers.CastLinear and layers.holds_frozen_cast(lin)
        w, b = lin._frozen_cast
        assert w.dtype == b.dtype == torch.bfloat16 and torch.equal(w, lin.weight.to(torch.bfloat16))
        w.zero_()
        b.fill_(1)  # now the copy path is visible: x @ 0 + 1
        assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))  # no autocast
        with torch.autocast("cpu", dtype=torch.float16):
            assert torch.equal(lin(x), F.linear(x.half(), lin.weight.half(), lin.bias.half()))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(lin(x), torch.ones(3, 4, dtype=torch.bfloat16))
            lin.requires_grad_(True)  # trains again: its own weight, and a gradient
            y = lin(x)
            assert not torch.equal(y, torch.ones(3, 4, dtype=torch.bfloat16))
            y.float().sum().backward()
            assert lin.weight.grad is not None
            lin.requires_grad_(False)
    assert type(lin) is nn.Linear and lin(x).dtype == torch.float32
    trainable = nn.Linear(8, 4)
    with layers.frozen_casts(trainable, torch.bfloat16, enabled=True) as casts:
        assert type(trainable) is nn.Linear and casts.bytes == 0


def test_frozen_casts_leave_what_autocast_would_not_cast_and_keep_subclasses():
    """float64 layers (autocast leaves them alone), parametrized layers and layers with a
    forward pre-hook are not touched; a subclass of nn.Linear keeps its methods and its
    isinstance inside the context, and its class after."""
    from torch.nn.utils import parametrize

    from drseg.models import layers

    class Scaled(nn.Linear):
        scale = 2.0

        def doubled(self):
            return self.scale * 2

    class Half(nn.Module):
        def forward(self, w):
            return w / 2

    torch.manual_seed(0)
    f64 = nn.Linear(4, 4).double().requires_grad_(False)
    par = nn.Linear(4, 4)
    parametrize.register_parametrization(par, "weight", Half())
    par.requires_grad_(False)
    hooked = nn.Linear(4, 4).requires_grad_(False)
    hooked.register_forward_pre_hook(lambda m, a: None)
    sub = Scaled(4, 4).requires_grad_(False)
    net = nn.ModuleList([f64, par, hooked, sub])
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = [f64(x.double()), par(x), hooked(x), sub(x)]
    with layers.frozen_casts(net, torch.bfloat16, enabled=True):
        assert [layers.holds_frozen_cast(m) for m in net] == [False, False, False, True]
        assert isinstance(sub, Scaled) and sub.doubled() == 4.0 and type(sub) is not Scaled
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = [f64(x.double()), par(x), hooked(x), sub(x)]
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert type(sub) is Scaled and not layers.holds_frozen_cast(sub)


def test_frozen_casts_that_fail_on_entry_leave_no_layer_cast(monkeypatch):
    """An error while taking the copies (say, out of GPU memory half way) restores the layers
    already swapped: none keeps a copy that no context would drop."""
    from drseg.models import layers

    net = nn.Sequential(*[nn.Linear(4, 4) for _ in range(4)]).requires_grad_(False)
    copy, taken = layers._copy, []

    def failing(t, dtype):
        taken.append(1)
        if len(taken) == 5:  # the third layer's weight
            raise torch.cuda.OutOfMemoryError("simulated")
        return copy(t, dtype)

    monkeypatch.setattr(layers, "_copy", failing)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        with layers.frozen_casts(net, torch.bfloat16, enabled=True):
            pass
    assert len(taken) == 5
    assert all(type(m) is nn.Linear and not layers.holds_frozen_cast(m) for m in net)
