"""The split-guidance forms of the aggregator and decoder equal the concatenation forms.

The aggregator's q/k projections and the decoder's first conv act on ``[x || guidance]``; the
model computes them as ``W_x x + W_g g`` with the guidance half once per image (shared by the
K class maps) and, in the shifted Swin block, one broadcast bias instead of a per-map copy of
the shift mask. Each test runs the module and a direct computation of the reference form
(concatenate a per-map copy of the guidance, apply the full weight) on random inputs.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition, window_reverse

from drseg.models.aggregator import (ClassStep, GuidedSwinBlock, bilinear_matrix, linear_attention,
                                    upsample_bilinear)
from drseg.models.decoder import Decoder, GuidanceUpsampler, Up


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _swin_reference(blk: GuidedSwinBlock, x, guidance_per_map):
    """The block as the concatenation form: [norm1(x) || g] windows, full q/k weights,
    the shift mask repeated for every map."""
    N, h, w, dim = x.shape
    win, attn = blk.window, blk.attn
    y = torch.cat([blk.norm1(x), guidance_per_map], dim=-1)
    if blk.shift:
        y = torch.roll(y, (-blk.shift, -blk.shift), dims=(1, 2))
    yw = window_partition(y, (win, win)).flatten(1, 2)
    n, L, _ = yw.shape
    q = attn.q(yw).view(n, L, attn.heads, -1).transpose(1, 2)
    k = attn.k(yw).view(n, L, attn.heads, -1).transpose(1, 2)
    v = attn.v(yw[..., :dim]).view(n, L, attn.heads, -1).transpose(1, 2)
    bias = attn.bias_table[attn.bias_index].view(L, L, -1).permute(2, 0, 1).unsqueeze(0)
    mask = blk._mask(h, w, x.device)
    if mask is not None:
        bias = (bias + mask.unsqueeze(1)).repeat(n // mask.shape[0], 1, 1, 1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5 + bias
    out = scores.softmax(-1) @ v
    out = attn.proj(out.transpose(1, 2).reshape(n, L, dim))
    out = window_reverse(out.view(-1, win, win, dim), (win, win), h, w)
    if blk.shift:
        out = torch.roll(out, (blk.shift, blk.shift), dims=(1, 2))
    x = x + out
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_guided_swin_block_equals_the_concatenation_form(shift):
    torch.manual_seed(shift)
    B, K, h, dim, G = 2, 3, 8, 16, 8
    blk = GuidedSwinBlock(dim, G, window=4, shift=shift, heads=2)
    with torch.no_grad():  # a non-trivial relative position bias
        blk.attn.bias_table.normal_()
    x = torch.randn(B * K, h, h, dim, requires_grad=True)
    g = torch.randn(B, h, h, G, requires_grad=True)
    out = blk(x, g, K)
    ref = _swin_reference(blk, x, g.repeat_interleave(K, dim=0))
    assert out.shape == (B * K, h, h, dim)
    assert _rel(out, ref) < 1e-5
    # gradients (incl. the relative position bias table and the guidance) agree too
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), [x, g, blk.attn.bias_table, blk.attn.q.weight])
    grads_ref = torch.autograd.grad((ref * w).sum(), [x, g, blk.attn.bias_table, blk.attn.q.weight])
    for a, b in zip(grads, grads_ref):
        assert _rel(a, b) < 1e-4


def test_guided_swin_block_checks_guidance_against_the_maps():
    blk = GuidedSwinBlock(8, 4, window=4, shift=0, heads=2)
    with pytest.raises(Exception, match="guidance for 2 images"):
        blk(torch.randn(5, 4, 4, 8), torch.randn(2, 4, 4, 4), 3)


def test_class_step_equals_the_concatenation_form():
    torch.manual_seed(1)
    B, E, K, h, G = 2, 16, 5, 4, 8
    step = ClassStep(E, G, heads=2, pool_train=2).train()
    x = torch.randn(B, E, K, h, h)
    text = torch.randn(B, K, G)
    out = step(x, text)
    # reference: pooled tokens, [norm1(t) || text] through the full q/k weights
    t = F.avg_pool2d(x.transpose(1, 2).reshape(B * K, E, h, h), 2)
    hp = t.shape[-1]
    t = t.view(B, K, E, hp * hp).permute(0, 3, 1, 2).reshape(B * hp * hp, K, E)
    y = step.norm1(t)
    yg = torch.cat([y, text.unsqueeze(1).expand(-1, hp * hp, -1, -1).reshape(B * hp * hp, K, G)], -1)
    q = step.q(yg).view(B * hp * hp, K, 2, -1)
    k = step.k(yg).view(B * hp * hp, K, 2, -1)
    v = step.v(y).view(B * hp * hp, K, 2, -1)
    t = t + linear_attention(q, k, v).flatten(2)
    t = t + step.mlp(step.norm2(t))
    t = t.view(B, hp * hp, K, E).permute(0, 2, 3, 1).reshape(B * K, E, hp, hp)
    t = F.interpolate(t, size=(h, h), mode="bilinear", align_corners=True)
    ref = x + t.view(B, K, E, h, h).transpose(1, 2)
    assert _rel(out, ref) < 1e-5


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, E, K, h, w) values in (B, K, h, w, E) memory."""
    return x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)


def _value_and_grads(module, x, *rest):
    module.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = module(x, *rest)
    w = torch.arange(out.numel(), dtype=out.dtype).view(out.shape).sin()
    (out * w).sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("what,hw", [("class_step", (8, 8)), ("class_step", (7, 5)),
                                     ("aggregator", (8, 8)), ("aggregator", (8, 12))])
def test_channels_last_volume_gives_the_same_values_and_gradients(monkeypatch, what, hw):
    """With ``CHANNELS_LAST_VOLUME`` on, the class step pools and upsamples on the
    (B, K, h, w, E) memory order (what it hands ``avg_pool2d`` and ``upsample_bilinear``), with
    the output and every gradient of the (B, K, E, h, w) computation (float64, training mode:
    pooling 2; square and non-square maps, odd sizes pooled with the floor)."""
    import drseg.models.aggregator as agg

    torch.manual_seed(5)
    B, E, K, G = 2, 8, 3, 4
    h, w = hw
    if what == "class_step":
        module = ClassStep(E, G, heads=2, pool_train=2).double().train()
        rest = (torch.randn(B, K, G, dtype=torch.float64),)
    else:
        module = agg.Aggregator(E, G, G, layers=2, window=4, heads=2).double().train()
        rest = (torch.randn(B, G, h, w, dtype=torch.float64), torch.randn(B, K, G, dtype=torch.float64))
    x = torch.randn(B, E, K, h, w, dtype=torch.float64)
    seen = []
    real_pool, real_up = F.avg_pool2d, agg.upsample_bilinear

    def pool(t, *a, **kw):
        seen.append(("pool_channels_last", t.is_contiguous(memory_format=torch.channels_last)))
        return real_pool(t, *a, **kw)

    def up(t, size, channels_last=False):
        seen.append(("upsample_channels_last", channels_last))
        return real_up(t, size, channels_last)

    monkeypatch.setattr(agg.F, "avg_pool2d", pool)
    monkeypatch.setattr(agg, "upsample_bilinear", up)
    layers = 1 if what == "class_step" else 2
    results = {}
    for mode in ("never", "always"):
        monkeypatch.setattr(agg, "CHANNELS_LAST_VOLUME", mode)
        seen.clear()
        src = x if mode == "never" else _channels_last(x)
        results[mode] = _value_and_grads(module, src, *rest)
        on = mode == "always"
        assert [v for k, v in seen if k == "upsample_channels_last"] == [on] * layers
        if on:  # (in eager, the plain order's reshape may also hand the pooling such a view)
            assert [v for k, v in seen if k == "pool_channels_last"] == [True] * layers
    (ref, gx_ref, gp_ref), (out, gx, gp) = results["never"], results["always"]
    assert _rel(out, ref) < 1e-12 and _rel(gx, gx_ref) < 1e-12
    assert gp.keys() == gp_ref.keys()
    for name in gp:  # absolute floor: k's bias has a zero gradient (softmax shift invariance)
        assert float((gp[name] - gp_ref[name]).norm()) <= 1e-12 * float(gp_ref[name].norm()) + 1e-13, name


def _block_input_strides(agg):
    """A GuidedSwinBlock.forward that records the E stride of the class maps it is handed,
    and the list it records into."""
    strides = []
    real_forward = agg.GuidedSwinBlock.forward

    def forward(self, t, guidance, groups=None):
        strides.append(t.stride(-1))
        return real_forward(self, t, guidance, groups)

    return forward, strides


@pytest.mark.parametrize("hw", [(8, 8), (8, 12)])
def test_contiguous_spatial_tokens_give_the_blocks_contiguous_rows_and_the_same_values(monkeypatch, hw):
    """``CONTIGUOUS_SPATIAL_TOKENS``: on ("always"), the Swin blocks of both layers get their
    (B*K, h, w, E) class maps with E contiguous, where the volume in (B, K, E, h, w) memory gave
    them rows strided h*w apart ("never"); the output and every gradient are those of the
    strided computation (float64, training mode). "cuda" is off for CPU tensors."""
    import drseg.models.aggregator as agg

    torch.manual_seed(6)
    B, E, K, G = 2, 8, 3, 4
    h, w = hw
    module = agg.Aggregator(E, G, G, layers=2, window=4, heads=2).double().train()
    rest = (torch.randn(B, G, h, w, dtype=torch.float64), torch.randn(B, K, G, dtype=torch.float64))
    x = torch.randn(B, K, E, h, w, dtype=torch.float64).transpose(1, 2)  # (B, K, E, h, w) memory
    forward, strides = _block_input_strides(agg)
    monkeypatch.setattr(agg.GuidedSwinBlock, "forward", forward)
    results = {}
    for mode in ("never", "always", "cuda"):
        monkeypatch.setattr(agg, "CONTIGUOUS_SPATIAL_TOKENS", mode)
        strides.clear()
        results[mode] = _value_and_grads(module, x, *rest)
        assert len(strides) == 4  # 2 layers x 2 blocks
        # the first block of each layer sees the step's input; the second the first's output
        assert strides[0::2] == ([1, 1] if mode == "always" else [h * w, h * w]), mode
    (ref, gx_ref, gp_ref), (out, gx, gp) = results["never"], results["always"]
    assert _rel(out, ref) < 1e-12 and _rel(gx, gx_ref) < 1e-12
    for name in gp:  # absolute floor: k's bias has a zero gradient (softmax shift invariance)
        assert float((gp[name] - gp_ref[name]).norm()) <= 1e-12 * float(gp_ref[name].norm()) + 1e-13, name
    cpu = results["cuda"]  # off on the CPU: the strided computation, bit for bit
    assert torch.equal(cpu[0], ref) and torch.equal(cpu[1], gx_ref)
    assert all(torch.equal(cpu[2][name], gp_ref[name]) for name in gp_ref)


def test_unshifted_block_gives_sdpa_a_bias_with_unit_key_stride(monkeypatch):
    """The memory-efficient SDPA kernel (the one that trains a bias on CUDA) takes an
    attention mask only with unit stride along the keys; a permuted relative-position bias
    sent the unshifted block to the math path (bench/sdpa_probe.py, H200)."""
    import drseg.models.aggregator as agg

    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(attn_mask.stride(-1))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(agg.F, "scaled_dot_product_attention", spy)
    for shift in (0, 2):
        GuidedSwinBlock(16, 8, window=4, shift=shift, heads=2)(torch.randn(6, 8, 8, 16),
                                                                torch.randn(2, 8, 8, 8), 3)
    assert seen == [1, 1]


def test_decoder_up_equals_the_concatenation_form():
    torch.manual_seed(2)
    B, K, cin, cout, G, h = 2, 3, 16, 8, 4, 5
    up = Up(cin, cout, G).eval()
    x = torch.randn(B * K, cin, h, h)
    g = torch.randn(B, G, 2 * h, 2 * h)
    out = up(x, g)
    ref = up.conv(torch.cat([up.up(x), g.repeat_interleave(K, dim=0)], dim=1))
    assert out.shape == (B * K, cout, 2 * h, 2 * h)
    assert _rel(out, ref) < 1e-5


def _decoder_run(up: GuidanceUpsampler, dec: Decoder, feats, x):
    for p in (*up.parameters(), *dec.parameters()):
        p.grad = None
    out = dec(x, up(feats))
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    (out * w).sum().backward()
    grads = {n: p.grad.clone() for n, p in (*up.named_parameters(), *dec.named_parameters())}
    return out.detach(), grads


def test_decoder_layout_and_padded_head_match_the_plain_decoder():
    """Channels-last maps (guidance upsampler and decoder) and the head conv zero-padded to 8
    output channels (the CUDA defaults) give the logits and every gradient of the plain
    NCHW decoder with its 1-channel head."""
    torch.manual_seed(3)
    B, E, K, h, width = 2, 16, 3, 4, 12
    up = GuidanceUpsampler(width, (8, 6), (4, 2)).double()
    dec = Decoder(E, (8, 4), (4, 2)).double()
    feats = [torch.randn(B, width, h, h, dtype=torch.float64) for _ in range(2)]
    x = torch.randn(B, E, K, h, h, dtype=torch.float64)
    up.channels_last, dec.channels_last, dec.head_pad = False, False, 1
    ref, ref_grads = _decoder_run(up, dec, feats, x)
    up.channels_last, dec.channels_last, dec.head_pad = True, True, 8
    out, grads = _decoder_run(up, dec, feats, x)
    assert out.shape == (B, K, 4 * h, 4 * h)
    assert _rel(out, ref) < 1e-12
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert g.shape == ref_grads[name].shape, name
        assert _rel(g, ref_grads[name]) < 1e-12, name
    assert grads["head.weight"].shape == (1, 4, 3, 3)
    # on the CPU the defaults (None) are the plain layout and the unpadded head
    up.channels_last, dec.channels_last, dec.head_pad = None, None, None
    assert torch.equal(_decoder_run(up, dec, feats, x)[0], ref)


@pytest.mark.parametrize("src,dst", [((12, 12), (24, 24)), ((3, 5), (7, 10)), ((1, 4), (3, 8))])
def test_upsample_bilinear_equals_interpolate(src, dst):
    t = torch.randn(2, 3, *src, dtype=torch.float64)
    ref = F.interpolate(t, size=dst, mode="bilinear", align_corners=True)
    got = upsample_bilinear(t, dst)
    assert got.dtype == t.dtype and _rel(got, ref) < 1e-6
    # channels-last: (..., h, w, C) in, (..., H, W, C) out, every channel resized the same way
    last = upsample_bilinear(t.permute(0, 2, 3, 1).contiguous(), dst, channels_last=True)
    assert last.shape == (2, *dst, 3) and _rel(last.permute(0, 3, 1, 2), ref) < 1e-6
    m = bilinear_matrix(src[0], dst[0])
    assert torch.allclose(m.sum(1), torch.ones(dst[0]))  # rows are convex weights


def test_shift_mask_is_built_once_and_equals_a_fresh_one():
    from drseg.models.aggregator import cached_shift_window_mask, shift_window_mask

    blk = GuidedSwinBlock(16, 8, window=4, shift=2, heads=2)
    cpu = torch.device("cpu")
    m1 = blk._mask(8, 12, cpu)
    m2 = blk._mask(8, 12, cpu)
    assert m2 is m1  # cached, not rebuilt
    other = GuidedSwinBlock(16, 8, window=4, shift=2, heads=2)
    assert other._mask(8, 12, cpu) is m1  # shared by blocks of the same geometry
    fresh = shift_window_mask(8, 12, 4, 2, cpu)
    assert fresh is not m1 and fresh.dtype == m1.dtype == torch.float32
    assert fresh.shape == (6, 16, 16) and torch.equal(fresh, m1)
    assert set(m1.unique().tolist()) == {0.0, -100.0}
    assert blk._mask(12, 8, cpu) is not m1  # keyed by the map size
    assert torch.equal(blk._mask(12, 8, cpu), shift_window_mask(12, 8, 4, 2, cpu))
    assert GuidedSwinBlock(16, 8, window=4, shift=0, heads=2)._mask(8, 8, cpu) is None
    with torch.inference_mode():  # a mask first built in inference mode still serves training
        m3 = cached_shift_window_mask(16, 16, 4, 2, cpu)
    assert not m3.is_inference()
    # no state: the state_dict keys are those of the parameters and persistent buffers
    assert not any("mask" in k for k in blk.state_dict())


def test_shifted_block_traces_in_one_graph_under_torch_compile():
    """Under dynamo the mask is traced (no lru_cache lookup, no graph break), same output."""
    torch.manual_seed(4)
    blk = GuidedSwinBlock(16, 8, window=4, shift=2, heads=2).eval()
    x, g = torch.randn(6, 8, 8, 16), torch.randn(2, 8, 8, 8)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            out = torch.compile(blk, backend="eager", fullgraph=True)(x, g, 3)
            assert torch.equal(out, blk(x, g, 3))
    finally:
        torch._dynamo.reset()


def test_cached_bilinear_matrix_is_built_once_and_equals_a_fresh_one():
    from drseg.models.aggregator import bilinear_matrix, cached_bilinear_matrix

    a = cached_bilinear_matrix(12, 24, torch.device("cpu"), torch.bfloat16)
    assert a is cached_bilinear_matrix(12, 24, torch.device("cpu"), torch.bfloat16)
    assert a.dtype == torch.bfloat16 and torch.equal(a, bilinear_matrix(12, 24, "cpu", torch.bfloat16))


def _attention_inputs(dtype=torch.float32, device="cpu"):
    torch.manual_seed(7)
    q, k, v = (torch.randn(6, 3, 16, 8, dtype=dtype, device=device, requires_grad=True)
               for _ in range(3))
    bias = torch.randn(1, 3, 16, 16, dtype=torch.float32, device=device, requires_grad=True)
    return q, k, v, bias


@pytest.mark.parametrize("mode", ["sdpa", "flex"])
def test_window_attention_modes_equal_the_direct_computation(mode):
    """softmax(q k^T / sqrt(d) + bias) v, with the gradients of q, k, v and the shared bias."""
    from drseg.models.aggregator import window_attention

    q, k, v, bias = _attention_inputs()
    ref = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5 + bias, dim=-1) @ v
    if mode == "flex":  # FlexAttention has no backward on the CPU: the GPU test covers it
        out = window_attention(q.detach(), k.detach(), v.detach(), bias.detach(), mode=mode)
        assert out.shape == ref.shape and _rel(out, ref) < 1e-5
        return
    out = window_attention(q, k, v, bias, mode=mode)
    assert out.shape == ref.shape and out.dtype == v.dtype
    assert _rel(out, ref) < 1e-5
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((out * w).sum(), [q, k, v, bias])
    grads_ref = torch.autograd.grad((ref * w).sum(), [q, k, v, bias])
    for a, b in zip(grads, grads_ref):
        assert a.shape == b.shape and _rel(a, b) < 1e-4


def _count_flex(monkeypatch):
    """Counts calls of FlexAttention (at trace time under torch.compile)."""
    import torch.nn.attention.flex_attention as fa

    calls = []
    real = fa.flex_attention
    monkeypatch.setattr(fa, "flex_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    return calls


def test_window_attention_takes_flex_only_when_compiled_for_cuda(monkeypatch):
    """On the CPU, eager or compiled, the switch keeps SDPA (the CPU path is unchanged); an
    unknown switch value or mode is named."""
    import drseg.models.aggregator as agg

    flex = _count_flex(monkeypatch)
    monkeypatch.setattr(agg, "WINDOW_ATTENTION", "flex")
    q, k, v, bias = _attention_inputs()
    # the call the blocks made before window_attention existed
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype).expand(q.shape[0], -1, -1, -1))
    assert torch.equal(agg.window_attention(q, k, v, bias, mode="sdpa"), ref)
    assert torch.equal(agg.window_attention(q, k, v, bias), ref)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(agg.window_attention, backend="eager", fullgraph=True)
        assert torch.equal(compiled(q, k, v, bias), ref)
    finally:
        torch._dynamo.reset()
    assert flex == []
    monkeypatch.setattr(agg, "WINDOW_ATTENTION", "fast")
    with pytest.raises(Exception, match="WINDOW_ATTENTION is 'fast'"):
        agg.window_attention(q, k, v, bias)
    with pytest.raises(Exception, match="mode 'fast'"):
        agg.window_attention(q, k, v, bias, mode="fast")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["sdpa", "flex"])
@pytest.mark.parametrize("shift", [0, 6])
def test_window_attention_modes_on_cuda_match_float64(monkeypatch, mode, shift):
    """A Swin block of the paper's window (12) on CUDA under bf16 autocast, compiled, with the
    switch on each mode: output and gradients within bf16 error of the same block in float64;
    "flex" takes FlexAttention in the compiled training step only (not eager, not without
    gradients), "sdpa" never."""
    import copy

    import drseg.models.aggregator as agg

    flex = _count_flex(monkeypatch)
    torch.manual_seed(shift)
    blk = GuidedSwinBlock(64, 32, window=12, shift=shift, heads=2).cuda()
    with torch.no_grad():
        blk.attn.bias_table.normal_()
    x, g = torch.randn(12, 24, 24, 64, device="cuda"), torch.randn(4, 24, 24, 32, device="cuda")
    w = torch.randn(12, 24, 24, 64, device="cuda", dtype=torch.float64)

    def run(b, dtype, autocast):
        xx = x.to(dtype).requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = b(xx, g.to(dtype), 3)
        table = getattr(b, "_orig_mod", b).attn.bias_table
        grads = torch.autograd.grad((out.double() * w).sum(), [xx, table])
        return [out.double(), *[t.double() for t in grads]]

    monkeypatch.setattr(agg, "WINDOW_ATTENTION", "sdpa")
    ref = run(copy.deepcopy(blk).double(), torch.float64, False)
    monkeypatch.setattr(agg, "WINDOW_ATTENTION", mode)
    eager = run(blk, torch.float32, True)
    assert flex == []  # eager CUDA keeps SDPA
    torch._dynamo.reset()
    try:
        got = run(torch.compile(blk), torch.float32, True)
    finally:
        torch._dynamo.reset()
    assert bool(flex) == (mode == "flex")
    flex.clear()
    torch._dynamo.reset()
    try:  # the compiled evaluation (no gradients) keeps SDPA
        with torch.no_grad():
            torch.compile(blk)(x, g, 3)
    finally:
        torch._dynamo.reset()
    assert flex == []
    for a, b, c in zip(got, ref, eager):
        assert _rel(a, b) < 3e-2
        assert _rel(a, b) < 1.5 * _rel(c, b) + 1e-3  # no worse than the eager SDPA block


@pytest.mark.gpu
def test_contiguous_spatial_tokens_on_cuda_match_float64(monkeypatch):
    """On CUDA the default ``CONTIGUOUS_SPATIAL_TOKENS = "cuda"`` hands the Swin blocks
    E-contiguous class maps, and a paper-width aggregator (E 128, window 12, 24 x 24) under bf16
    autocast, compiled for training, gives its output and gradients within bf16 error of the
    float64 aggregator, no worse than with the strided maps ("never")."""
    import copy

    import drseg.models.aggregator as agg

    torch.manual_seed(7)
    B, K, E, G = 2, 3, 128, 32
    module = agg.Aggregator(E, G, G, layers=2, window=12, heads=4).cuda().train()
    x = torch.randn(B, K, E, 24, 24, device="cuda").transpose(1, 2)  # (B, K, E, h, w) memory
    app, text = torch.randn(B, G, 24, 24, device="cuda"), torch.randn(B, K, G, device="cuda")
    wgt = torch.randn(B, E, K, 24, 24, device="cuda", dtype=torch.float64)
    real_forward = agg.GuidedSwinBlock.forward
    forward, strides = _block_input_strides(agg)

    def run(m, dtype, autocast):
        xx = x.to(dtype).requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = m(xx, app.to(dtype), text.to(dtype))
        core = getattr(m, "_orig_mod", m)
        params = [core.spatial[0].blocks[0].norm1.weight, core.classwise[1].q.weight]
        grads = torch.autograd.grad((out.double() * wgt).sum(), [xx, *params])
        return [out.double(), *[t.double() for t in grads]]

    monkeypatch.setattr(agg, "CONTIGUOUS_SPATIAL_TOKENS", "never")
    ref = run(copy.deepcopy(module).double(), torch.float64, False)
    results = {}
    for mode in ("never", "cuda"):
        monkeypatch.setattr(agg, "CONTIGUOUS_SPATIAL_TOKENS", mode)
        monkeypatch.setattr(agg.GuidedSwinBlock, "forward", forward)
        strides.clear()
        run(module, torch.float32, True)  # eager: what the blocks are handed
        assert strides[0::2] == ([1, 1] if mode == "cuda" else [24 * 24, 24 * 24]), mode
        monkeypatch.setattr(agg.GuidedSwinBlock, "forward", real_forward)
        torch._dynamo.reset()
        try:
            results[mode] = run(torch.compile(module), torch.float32, True)
        finally:
            torch._dynamo.reset()
    for a, b, c in zip(results["cuda"], ref, results["never"]):
        assert _rel(a, b) < 3e-2
        assert _rel(a, b) < 1.5 * _rel(c, b) + 1e-3
