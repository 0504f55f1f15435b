"""Cost aggregation of the CAT-Seg / RSKT-Seg code path that DR-Seg extends.

"CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation" (Cho et al., CVPR 2024,
arXiv:2303.11797); constants in ``/work/shared/reference/PROTOCOL.md`` section 3. Per layer:

* spatial step: two Swin blocks (window ``w``, shift ``w // 2``) on every class map, with the
  appearance guidance concatenated into the inputs of q and k (v sees the cost only);
* class step: linear attention across the K classes at every (pooled) position, with the
  text guidance concatenated into the inputs of q and k, then an MLP (ratio 4); average
  pooling 2 in training and 1 at evaluation, bilinear upsampling back, residual.

The volume's shape is (B, E, K, h, w) (its memory order: :data:`CHANNELS_LAST_VOLUME`).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.swin_transformer import (get_relative_position_index, window_partition,
                                          window_reverse)
from torch import nn

from drseg.errors import DrsegInputError
from drseg.models.layers import device_switch

#: where the class step gathers, pools and upsamples on the channels-last memory order
#: (B, K, h, w, E) that the spatial step returns, instead of transposing the volume to
#: (B, K, E, h, w) and back (``"cuda"`` / ``"always"`` / ``"never"``, as the switches of
#: :mod:`drseg.models.layers`). Off: not faster. On H200s (session 7, call 1, one run each on
#: two GPUs of one call) the compiled aggregator alone took 10.00 against 10.15 ms GPU, but
#: the whole compiled training step 45.83 against 45.30 (more pointwise time); the volume was
#: then in (B, K, E, h, w) memory. With the spatial step handing it (B, K, h, w, E) memory on
#: CUDA (:data:`CONTIGUOUS_SPATIAL_TOKENS`, session 10, call 4) the loop took 42.9 against
#: 43.2 ms per iteration, within the spread: still off.
CHANNELS_LAST_VOLUME = "never"

#: how :func:`window_attention` runs: ``"flex"`` takes FlexAttention (the bias as a score
#: modification, one Triton kernel forward and one backward) where the model is compiled on
#: CUDA with gradients on, i.e. in the compiled training step, and
#: ``scaled_dot_product_attention`` elsewhere (eager FlexAttention is an unfused reference; the
#: CPU has no FlexAttention backward; the compiled evaluation traces the vocabulary size as a
#: dynamic dimension, which FlexAttention was not run with on a GPU). ``"sdpa"`` takes SDPA
#: everywhere: on CUDA the memory-efficient kernel, the one fused SDPA kernel that trains a
#: bias. On an H200 (session 9) the compiled paper-shape step took 42.50 ms of GPU time with
#: ``"flex"`` against 44.39 with ``"sdpa"`` (the loop 44.1 against 46.6 ms per iteration);
#: scores written out in float32 for inductor (44.78, +1 GiB) were dropped. The CPU path is the
#: same either way.
WINDOW_ATTENTION = "flex"
WINDOW_ATTENTION_MODES = ("flex", "sdpa")

#: where the spatial step copies its class maps into (B*K, h, w, E) memory (E contiguous)
#: before the Swin blocks (``"cuda"`` / ``"always"`` / ``"never"``, as
#: :data:`CHANNELS_LAST_VOLUME`). Why: the volume reaches the spatial step in (B, K, E, h, w)
#: memory (the cost embedding's convolution and the class step keep it), so the step's
#: (B*K, h, w, E) view strides E by h*w, and its residual stream keeps that order: every layer
#: norm over E (forward and backward) read and wrote the volume h*w elements apart. In session
#: 10's compiled step on an H200 the two largest of them took ~0.53 ms each for a ~20 MB volume
#: (``triton_red_..._native_layer_norm_permute``). One copy per spatial step gives them
#: contiguous rows. The values are the same either way (a copy); off on the CPU, whose path is
#: unchanged bit for bit.
CONTIGUOUS_SPATIAL_TOKENS = "cuda"


class GuidedWindowAttention(nn.Module):
    """Window attention with relative position bias; q, k see ``[x || guidance]``, v sees x.

    ``q([x || g]) = W_q,x x + W_q,g g + b_q``: the linear map on the concatenation, split by
    input columns (parameters keep the reference layout, ``q.weight`` of shape
    (dim, dim + G)). The appearance guidance is the same for the K class maps of an image, so
    its half is projected once per image (:meth:`project_guidance`) and broadcast over the
    classes instead of being concatenated to every class map.

    Args:
        dim: token width. guidance_dim: appearance guidance width (0 = none).
        window: window side. heads: attention heads.
    """

    def __init__(self, dim: int, guidance_dim: int, window: int, heads: int):
        super().__init__()
        if dim % heads:
            raise DrsegInputError(f"model.hidden_dim {dim} is not divisible by {heads} heads")
        self.heads, self.window, self.dim = heads, window, dim
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", get_relative_position_index(window, window).flatten(),
                             persistent=False)

    def project_guidance(self, guidance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_q,g g, W_k,g g)``: the guidance halves of the q and k projections.

        Args:
            guidance: (..., G) guidance tokens.

        Returns:
            two (..., dim) tensors.
        """
        d = self.dim
        return F.linear(guidance, self.q.weight[:, d:]), F.linear(guidance, self.k.weight[:, d:])

    def forward(self, x: torch.Tensor, guidance: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None, windows: int = 1, groups: int = 1) -> torch.Tensor:
        """Attention inside every window.

        Args:
            x: (N*nW, L, dim) window tokens of N maps in ``window_partition`` order (block
                ``n * nW + w``), N = B*K with map ``n = b * K + k``.
            guidance: :meth:`project_guidance` of the (B*nW, L, G) guidance windows (shared
                by the K maps of image b), or None.
            mask: (nW, L, L) additive shift mask, or None.
            windows: nW, windows per map. groups: K, maps per image.

        Returns:
            (N*nW, L, dim).
        """
        n, L, dim = x.shape
        heads, hd = self.heads, dim // self.heads
        q = F.linear(x, self.q.weight[:, :dim], self.q.bias)
        k = F.linear(x, self.k.weight[:, :dim], self.k.bias)
        v = self.v(x)
        if guidance is not None:
            gq, gk = (g.view(-1, 1, windows, L, dim) for g in guidance)  # (B, 1, nW, L, dim)
            q = (q.view(-1, groups, windows, L, dim) + gq).view(n, L, dim)
            k = (k.view(-1, groups, windows, L, dim) + gk).view(n, L, dim)
        bias = self.bias_table[self.bias_index].view(L, L, heads).permute(2, 0, 1)  # (h, L, L)
        if mask is None:  # one bias for every window: (n, heads, L, L) broadcast
            q, k, v = (t.view(n, L, heads, hd).transpose(1, 2) for t in (q, k, v))
            # contiguous: the memory-efficient SDPA kernel (the one that trains a bias) takes a
            # mask only with unit stride along the keys; the permuted view (stride heads) sent
            # this block to the math path on CUDA, eager and compiled (bench/sdpa_probe.py)
            out = window_attention(q, k, v, bias.contiguous().unsqueeze(0))
            return self.proj(out.transpose(1, 2).reshape(n, L, dim))
        # the shift mask depends on the window: windows x heads as the head axis, so that one
        # (1, nW*heads, L, L) bias broadcasts over the N maps (no per-map copy of the mask)
        maps = n // windows

        def split(t: torch.Tensor) -> torch.Tensor:
            t = t.view(maps, windows, L, heads, hd).permute(0, 1, 3, 2, 4)
            return t.reshape(maps, windows * heads, L, hd)

        bias = (bias.unsqueeze(0) + mask.unsqueeze(1).to(bias.dtype))  # (nW, heads, L, L)
        out = window_attention(split(q), split(k), split(v), bias.reshape(1, windows * heads, L, L))
        out = out.view(maps, windows, heads, L, hd).permute(0, 1, 3, 2, 4).reshape(n, L, dim)
        return self.proj(out)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v``, the attention of Swin's window blocks.

    Args:
        q, k, v: (n, H, L, d) of one dtype (the one autocast gives them).
        bias: (1, H, L, L) additive bias shared by the n batches (float32, may train; used
            in the dtype of q, as SDPA's fused kernels take it).
        mode: ``"flex"`` or ``"sdpa"``; None: ``"flex"`` when :data:`WINDOW_ATTENTION` says so
            and the call is being compiled for CUDA with gradients on, else ``"sdpa"``.

    Returns:
        (n, H, L, d) in the dtype of q.
    """
    if mode is None:
        if WINDOW_ATTENTION not in WINDOW_ATTENTION_MODES:
            raise DrsegInputError(f"aggregator.WINDOW_ATTENTION is {WINDOW_ATTENTION!r}: one of "
                                  f"{WINDOW_ATTENTION_MODES}")
        flex = (WINDOW_ATTENTION == "flex" and q.is_cuda and torch.is_grad_enabled()
                and torch.compiler.is_compiling())
        mode = "flex" if flex else "sdpa"
    bias = bias.to(q.dtype)
    if mode == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        table = bias[0]

        def score_mod(score, batch, head, q_idx, kv_idx):
            return score + table[head, q_idx, kv_idx]

        return flex_attention(q, k, v, score_mod=score_mod)
    if mode != "sdpa":
        raise DrsegInputError(f"window_attention: mode {mode!r} is not one of {WINDOW_ATTENTION_MODES}")
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(q.shape[0], -1, -1, -1))


def shift_window_mask(h: int, w: int, window: int, shift: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The additive attention mask of a shifted-window (SW-MSA) block, as Swin's.

    After the cyclic shift a window may hold tokens from up to four regions that were not
    adjacent in the map; attention between different regions is masked out.

    Args:
        h, w: map size (multiples of ``window``). window: window side.
        shift: cyclic shift (0 < shift < window). device: where to build it.

    Returns:
        (nW, L, L) float32 on ``device``, 0 within a region and -100 across regions,
        nW = (h / window) * (w / window), L = window ** 2.
    """
    img = torch.zeros(1, h, w, 1, device=device)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, (window, window)).flatten(1)  # (nW, L)
    diff = win.unsqueeze(1) - win.unsqueeze(2)  # (nW, L, L)
    return diff.ne(0).float() * -100.0


@functools.lru_cache(maxsize=64)
def cached_shift_window_mask(h: int, w: int, window: int, shift: int,
                             device: torch.device) -> torch.Tensor:
    """:func:`shift_window_mask`, built once per argument tuple and then shared: the caller
    must not modify it in place. Built outside inference mode, so a mask first made during
    evaluation also serves a later training step."""
    with torch.inference_mode(False):
        return shift_window_mask(h, w, window, shift, device)


class GuidedSwinBlock(nn.Module):
    """One Swin block (W-MSA or SW-MSA, then MLP) with appearance guidance in q/k.

    Args:
        dim: token width. guidance_dim: guidance width. window: window side.
        shift: cyclic shift (0 or window // 2). heads: attention heads.
    """

    def __init__(self, dim: int, guidance_dim: int, window: int, shift: int, heads: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        """The (nW, L, L) shift mask of an h x w map (None without a shift), built once per
        (h, w, device) in eager mode (:func:`cached_shift_window_mask`); under torch.compile
        it is traced into the graph as before (no Python-side cache in the compiled code)."""
        if not self.shift:
            return None
        if torch.compiler.is_compiling():
            return shift_window_mask(h, w, self.window, self.shift, device)
        return cached_shift_window_mask(h, w, self.window, self.shift, device)

    def _windows(self, t: torch.Tensor) -> torch.Tensor:
        """(N, h, w, C) -> (N*nW, L, C): cyclic shift, then window partition."""
        if self.shift:
            t = torch.roll(t, (-self.shift, -self.shift), dims=(1, 2))
        return window_partition(t, (self.window, self.window)).flatten(1, 2)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None,
                groups: int | None = None) -> torch.Tensor:
        """One block.

        Args:
            x: (N, h, w, dim) class maps, N = B*K with map ``n = b * K + k``.
            guidance: (B, h, w, G) appearance guidance of the B images (shared by their K
                maps), (N, h, w, G) per map, or None.
            groups: K (None: N / B from the shapes).

        Returns:
            (N, h, w, dim).
        """
        N, h, w, dim = x.shape
        win = self.window
        windows = (h // win) * (w // win)
        g = None
        if guidance is not None:
            if groups is None:
                groups = N // guidance.shape[0]
            if guidance.shape[0] * groups != N:
                raise DrsegInputError(f"aggregator: guidance for {guidance.shape[0]} images does "
                                      f"not match {N} maps of {groups} classes")
            g = self.attn.project_guidance(self._windows(guidance))  # per image, (B*nW, L, dim)
        yw = self._windows(self.norm1(x))  # (N*nW, L, dim)
        out = self.attn(yw, g, self._mask(h, w, x.device), windows, groups or 1)
        out = window_reverse(out.view(-1, win, win, dim), (win, win), h, w)  # (N, h, w, dim)
        if self.shift:
            out = torch.roll(out, (self.shift, self.shift), dims=(1, 2))
        x = x + out
        return x + self.mlp(self.norm2(x))


class SpatialStep(nn.Module):
    """Two guided Swin blocks (shift 0, then window // 2) on every class map.

    Args:
        dim: hidden width. guidance_dim: appearance guidance width. window: window side.
        heads: attention heads.
    """

    def __init__(self, dim: int, guidance_dim: int, window: int, heads: int):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList([GuidedSwinBlock(dim, guidance_dim, window, 0, heads),
                                     GuidedSwinBlock(dim, guidance_dim, window, window // 2,
                                                     heads)])
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim else None

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """x (B, E, K, h, w), guidance (B, G, h, w) -> (B, E, K, h, w)."""
        B, E, K, h, w = x.shape
        if h % self.window or w % self.window:
            raise DrsegInputError(f"model.swin_window: {self.window} does not divide the "
                                  f"{h}x{w} CLIP grid")
        t = x.permute(0, 2, 3, 4, 1).reshape(B * K, h, w, E)  # (B*K, h, w, E)
        if device_switch(CONTIGUOUS_SPATIAL_TOKENS, x.is_cuda):
            t = t.contiguous()  # E contiguous: see CONTIGUOUS_SPATIAL_TOKENS
        g = None
        if guidance is not None and self.guidance_norm is not None:
            g = self.guidance_norm(guidance.permute(0, 2, 3, 1))  # (B, h, w, G), shared by K
        for blk in self.blocks:
            t = blk(t, g, K)
        return t.view(B, K, h, w, E).permute(0, 4, 1, 2, 3)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     eps: float = 1e-6) -> torch.Tensor:
    """Linear attention with the elu + 1 feature map (Katharopoulos et al. 2020, as CAT-Seg).

    Args:
        q, k, v: (N, L, heads, d).

    Returns:
        (N, L, heads, d).
    """
    q, k = F.elu(q) + 1, F.elu(k) + 1
    length = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", k, v / length)
    z = 1.0 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, z) * length


def bilinear_matrix(n_in: int, n_out: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of 1-d linear interpolation with ``align_corners=True``.

    Output i samples the input at ``p_i = i (n_in - 1) / (n_out - 1)``; input j weighs
    ``max(0, 1 - |p_i - j|)`` (the linear "tent"), so
    ``F.interpolate(t, size, mode="bilinear", align_corners=True) == M_h @ t @ M_w.T``.
    Built on ``device`` (float64, then float32, then ``dtype``): no host-to-device copy in the
    forward pass.
    """
    pos = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in - 1) / max(n_out - 1, 1)
    src = torch.arange(n_in, dtype=torch.float64, device=device)
    return (1 - (pos[:, None] - src[None, :]).abs()).clamp_min(0).float().to(dtype)


@functools.lru_cache(maxsize=64)
def cached_bilinear_matrix(n_in: int, n_out: int, device: torch.device,
                           dtype: torch.dtype) -> torch.Tensor:
    """:func:`bilinear_matrix`, built once per argument tuple and shared (eager mode; the
    caller must not modify it in place), outside inference mode like
    :func:`cached_shift_window_mask`."""
    with torch.inference_mode(False):
        return bilinear_matrix(n_in, n_out, device, dtype)


def upsample_bilinear(t: torch.Tensor, size: tuple[int, int],
                      channels_last: bool = False) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=True``) of (..., h, w) as two matrix products.

    The same linear map as ``F.interpolate(..., mode="bilinear", align_corners=True)``, run as
    GEMMs in the input's (autocast) dtype. Why: at the paper shape the class step upsamples
    136 x 128 maps of 12 x 12, and CUDA's NCHW interpolation kernel, parallel only over the
    576 output pixels and run in float32 under autocast, took 9 ms of a 111 ms step (H100).

    Args:
        t: (..., h, w), or (..., h, w, C) with ``channels_last`` (every channel resized; the
            channels-last memory is not transposed).
        size: (H, W).
    """
    hw = t.shape[-3:-1] if channels_last else t.shape[-2:]
    build = bilinear_matrix if torch.compiler.is_compiling() else cached_bilinear_matrix
    mh = build(hw[0], size[0], t.device, t.dtype)
    mw = build(hw[1], size[1], t.device, t.dtype)
    if not channels_last:
        return torch.matmul(torch.matmul(mh, t), mw.T)
    rows = torch.matmul(mh, t.flatten(-2))  # (..., H, w * C)
    return torch.matmul(mw, rows.unflatten(-1, (hw[1], t.shape[-1])))  # (..., H, W, C)


class ClassStep(nn.Module):
    """Linear attention across classes with text guidance in q/k, MLP ratio 4, residual.

    Args:
        dim: hidden width. guidance_dim: text guidance width. heads: attention heads.
        pool_train: average-pooling size in training (1 at evaluation).
    """

    def __init__(self, dim: int, guidance_dim: int, heads: int, pool_train: int = 2):
        super().__init__()
        self.heads, self.pool_train = heads, pool_train
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """x (B, E, K, h, w), guidance (B, K, G) or None -> (B, E, K, h, w).

        With :data:`CHANNELS_LAST_VOLUME` on, pooling, token gathering, upsampling and the
        residual run on the channels-last view (B, K, h, w, E) of x (no transposing copy when
        x lies in that memory order, as the spatial step returns it on CUDA); else on the
        (B, K, E, h, w) view (a copy unless x lies in that order).
        """
        B, E, K, h, w = x.shape
        pool = self.pool_train if self.training else 1
        last = device_switch(CHANNELS_LAST_VOLUME, x.is_cuda)
        if last:
            xl = x.permute(0, 2, 3, 4, 1)  # (B, K, h, w, E)
            t = xl.reshape(B * K, h, w, E)
            if pool > 1:  # on the channels-last NCHW view: a channels-last result
                t = F.avg_pool2d(t.permute(0, 3, 1, 2), pool).permute(0, 2, 3, 1)
            hp, wp = t.shape[1:3]
            t = t.reshape(B, K, hp * wp, E).transpose(1, 2).reshape(B * hp * wp, K, E)
        else:
            t = x.transpose(1, 2).reshape(B * K, E, h, w)
            if pool > 1:
                t = F.avg_pool2d(t, pool)
            hp, wp = t.shape[-2:]
            t = t.view(B, K, E, hp * wp).permute(0, 3, 1, 2).reshape(B * hp * wp, K, E)
        t = self._attend(t, guidance, B, K)  # (B*hp*wp, K, E)
        if last:
            t = t.view(B, hp * wp, K, E).transpose(1, 2).reshape(B * K, hp, wp, E)
            if pool > 1:  # = F.interpolate(bilinear, align_corners=True) per channel
                t = upsample_bilinear(t, (h, w), channels_last=True)
            return (xl + t.view(B, K, h, w, E)).permute(0, 4, 1, 2, 3)
        t = t.view(B, hp * wp, K, E).permute(0, 2, 3, 1).reshape(B * K, E, hp, wp)
        if pool > 1:
            t = upsample_bilinear(t, (h, w))  # = F.interpolate(bilinear, align_corners=True)
        return x + t.view(B, K, E, h, w).transpose(1, 2)

    def _attend(self, t: torch.Tensor, guidance: torch.Tensor | None, B: int,
                K: int) -> torch.Tensor:
        """Linear attention across the K classes (text guidance in q / k), then the MLP, each
        with its residual: (B*P, K, E) tokens of P positions -> (B*P, K, E)."""
        E = t.shape[-1]
        P = t.shape[0] // B
        y = self.norm1(t)
        q = F.linear(y, self.q.weight[:, :E], self.q.bias)
        k = F.linear(y, self.k.weight[:, :E], self.k.bias)
        if guidance is not None:  # [y || g] split by columns; g is shared by the positions
            gq = F.linear(guidance, self.q.weight[:, E:]).unsqueeze(1)  # (B, 1, K, E)
            gk = F.linear(guidance, self.k.weight[:, E:]).unsqueeze(1)
            q = (q.view(B, P, K, E) + gq).view(B * P, K, E)
            k = (k.view(B, P, K, E) + gk).view(B * P, K, E)
        q = q.view(B * P, K, self.heads, -1)
        k = k.view(B * P, K, self.heads, -1)
        v = self.v(y).view(B * P, K, self.heads, -1)
        t = t + linear_attention(q, k, v).flatten(2)
        return t + self.mlp(self.norm2(t))


class Aggregator(nn.Module):
    """``layers`` x (spatial step, class step) with appearance and text guidance.

    Args:
        dim: hidden width (128 in the reference).
        appearance_dim: projected appearance guidance width (128).
        text_dim: projected text guidance width (128).
        layers: aggregator layers (2 in CAT-Seg).
        window: Swin window (12 for a 24x24 grid).
        heads: attention heads (4).
        pool_train: class-step pooling in training (2).
    """

    def __init__(self, dim: int = 128, appearance_dim: int = 128, text_dim: int = 128,
                 layers: int = 2, window: int = 12, heads: int = 4, pool_train: int = 2):
        super().__init__()
        if layers < 1:
            raise DrsegInputError(f"model.aggregator_layers: must be >= 1, got {layers}")
        self.spatial = nn.ModuleList(SpatialStep(dim, appearance_dim, window, heads)
                                     for _ in range(layers))
        self.classwise = nn.ModuleList(ClassStep(dim, text_dim, heads, pool_train)
                                       for _ in range(layers))

    def forward(self, x: torch.Tensor, appearance: torch.Tensor | None,
                text: torch.Tensor | None) -> torch.Tensor:
        """x (B, E, K, h, w), appearance (B, G, h, w), text (B, K, G') -> (B, E, K, h, w).

        On CUDA the spatial step returns a view of (B, K, h, w, E) memory
        (:data:`CONTIGUOUS_SPATIAL_TOKENS`; elsewhere the memory order it was given); with
        :data:`CHANNELS_LAST_VOLUME` on, the class step works on that order too instead of
        transposing to (B, K, E, h, w) and back."""
        for spatial, classwise in zip(self.spatial, self.classwise):
            x = classwise(spatial(x, appearance), text)
        return x
