"""GPU-friendly forms of two standard layers, the same maps as the originals.

Found with ``bench/conv_layout_probe.py`` (one H200, paper shape, session 4):

* ViT patch embeddings (a convolution with kernel = stride = patch, 3 input channels) ran in
  cuDNN's legacy ``precomputed_convolve_sgemm`` kernel, no tensor cores: 0.72 ms for CLIP's 4
  rotations and 0.26 ms for the prior per step. Non-overlapping patches are a reshape, so the
  convolution is one GEMM (:func:`patch_conv`).
* ``nn.GroupNorm`` on CUDA returns NCHW whatever its input (on the CPU it keeps channels-last),
  so after the first GroupNorm the decoder's channels-last maps were NCHW again and cuDNN
  converted them around every convolution (2.5 ms of ``nchwToNhwc`` / ``nhwcToNchw`` kernels
  a step).
  :func:`group_norm_nhwc` keeps the input's channels-last layout.

Session 5: the CLIP blocks went through ``nn.MultiheadAttention``'s Python path, which turns
batch-first tokens sequence-first and back and runs the split q, k and v projections as three
GEMMs. :func:`residual_attention_block` projects q and v (the two trainable weights) with one
GEMM and k with another, and hands batch-first views to ``scaled_dot_product_attention``
(compiled step, one H200: 54.4 -> 53.0 ms, GPU time -1.85 ms).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


def device_switch(mode: str, is_cuda: bool) -> bool:
    """Whether a ``"cuda"`` / ``"always"`` / ``"never"`` switch of this module (and of
    :data:`drseg.models.clip.TRUNCATE_TEXT`) is on for a tensor on CUDA or not."""
    return mode == "always" or (mode == "cuda" and is_cuda)


def patch_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a patch-embedding convolution (kernel = stride, no padding, no dilation,
    one group) as one GEMM over the flattened patches.

    Args:
        x: (N, C, H, W) with H and W multiples of the patch side.
        conv: the convolution (its ``weight`` (D, C, p, p) and ``bias``).

    Returns:
        (N, D, H / p, W / p) in channels-last memory (a view of the (N, h, w, D) GEMM output).
    """
    ph, pw = conv.kernel_size
    N, C, H, W = x.shape
    h, w = H // ph, W // pw
    t = x.reshape(N, C, h, ph, w, pw).permute(0, 2, 4, 1, 3, 5).reshape(N * h * w, C * ph * pw)
    y = F.linear(t, conv.weight.reshape(conv.out_channels, -1), conv.bias)
    return y.view(N, h, w, -1).permute(0, 3, 1, 2)


def is_patch_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` is a convolution :func:`patch_conv` computes exactly."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride
            and conv.padding in ((0, 0), 0) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


#: where :class:`PatchConv2d` runs as a GEMM: ``"cuda"`` (default: CUDA inputs), ``"always"``
#: (tests: the GEMM path on the CPU too), ``"never"`` (the benchmarks' session-3 baseline)
PATCH_GEMM = "cuda"


class PatchConv2d(nn.Conv2d):
    """A patch-embedding ``nn.Conv2d`` that runs as :func:`patch_conv` on CUDA (see
    :data:`PATCH_GEMM`) and as the convolution elsewhere or when the input is not a whole
    number of patches. Same parameters and state_dict keys as the convolution it replaces
    (:func:`use_patch_gemm`). Same values up to rounding: with ``amp: off`` cuDNN may run the
    convolution in TF32 while the GEMM runs in the matmul precision torch is set to."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.kernel_size
        if device_switch(PATCH_GEMM, x.is_cuda) and x.shape[-2] % ph == 0 and x.shape[-1] % pw == 0:
            return patch_conv(x, self)
        return super().forward(x)


def use_patch_gemm(conv: nn.Module) -> nn.Module:
    """Turn a patch-embedding convolution into a :class:`PatchConv2d` in place (its class only:
    parameters, buffers and hooks stay). Other modules are returned unchanged."""
    if type(conv) is nn.Conv2d and is_patch_conv(conv):
        conv.__class__ = PatchConv2d
    return conv


def group_norm_nhwc(x: torch.Tensor, gn: nn.GroupNorm) -> torch.Tensor:
    """``gn(x)`` computed on the channels-last memory of ``x``, returned channels-last.

    Statistics in float32 (float64 for float64 input) over (H, W, C / G) per group, as
    ``nn.GroupNorm``. The output has the input's dtype, where ``nn.GroupNorm`` under CUDA
    autocast returns float32: the same values only where what follows rounds to the input's
    dtype anyway, as in the decoder (ReLU, then a convolution autocast to bfloat16; ReLU
    commutes with the rounding). Use it there, through :func:`run_layers`.

    Args:
        x: (N, C, H, W). gn: the GroupNorm (groups, eps, affine weight and bias).
    """
    N, C, H, W = x.shape
    G = gn.num_groups
    t = x.permute(0, 2, 3, 1).to(torch.promote_types(x.dtype, torch.float32))
    t = t.reshape(N, H * W, G, C // G)
    var, mean = torch.var_mean(t, dim=(1, 3), keepdim=True, correction=0)
    t = ((t - mean) * torch.rsqrt(var + gn.eps)).reshape(N, H, W, C)
    if gn.affine:
        t = t * gn.weight + gn.bias
    return t.to(x.dtype).permute(0, 3, 1, 2)


#: :func:`run_layers` uses :func:`group_norm_nhwc` for channels-last maps (off: nn.GroupNorm
#: always; the benchmarks' session-3 baseline)
NHWC_GROUP_NORM = True


def run_layers(layers, x: torch.Tensor) -> torch.Tensor:
    """Apply ``layers`` in order, GroupNorms through :func:`group_norm_nhwc` when ``x`` is
    channels-last (and not also NCHW-contiguous).

    For the decoder's (conv, GroupNorm, ReLU) stacks: every GroupNorm must be followed by a
    ReLU and a convolution (see :func:`group_norm_nhwc` on the output dtype)."""
    for layer in layers:
        if NHWC_GROUP_NORM and isinstance(layer, nn.GroupNorm) and not x.is_contiguous() \
                and x.is_contiguous(memory_format=torch.channels_last):
            x = group_norm_nhwc(x, layer)
        else:
            x = layer(x)
    return x


#: where :func:`residual_attention_block` takes the packed path: ``"cuda"`` (default: CUDA
#: inputs), ``"always"`` (tests: on the CPU too), ``"never"`` (the block's own forward; the
#: benchmarks' baseline)
PACKED_ATTENTION = "cuda"


def attn_projections(attn: nn.MultiheadAttention):
    """The q, k, v projection weights and biases of an ``nn.MultiheadAttention``.

    Args:
        attn: the attention, its projections packed (``in_proj_weight``) or split
            (``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``, as after
            :func:`drseg.models.clip.split_qkv`).

    Returns:
        ``((w_q, w_k, w_v), (b_q, b_k, b_v))``: three (D, D) weights and three (D,) biases (three
        None without ``in_proj_bias``).
    """
    if attn.in_proj_weight is not None:
        weights = tuple(attn.in_proj_weight.chunk(3, dim=0))
    else:
        weights = (attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight)
    if attn.in_proj_bias is None:
        return weights, (None, None, None)
    return weights, tuple(attn.in_proj_bias.chunk(3))


def packed_self_attention(attn: nn.MultiheadAttention, x: torch.Tensor,
                          causal: bool = False) -> torch.Tensor:
    """``attn(x, x, x, need_weights=False)[0]`` for a batch-first ``nn.MultiheadAttention``
    without a mask (or, with ``causal``, with the causal mask): q and v from one GEMM on the
    concatenated weights, k from another, then ``scaled_dot_product_attention`` on batch-first
    (B, heads, L, d) views and ``out_proj``.

    Packed (``in_proj_weight``) or split (``q_proj_weight``, ...) projections both work; the
    concatenation keeps the gradients of the q and v weights separate, so a frozen k (as in
    :func:`drseg.models.clip.set_qv_trainable`) costs no weight gradient.

    Args:
        attn: the attention (``batch_first=True``, no ``bias_k``/``bias_v``, no zero
            attention; see :func:`can_pack`).
        x: (B, L, D) tokens.
        causal: token i attends to tokens 0..i only (``is_causal`` of the attention).

    Returns:
        (B, L, D).
    """
    B, L, D = x.shape
    heads = attn.num_heads
    (w_q, w_k, w_v), (b_q, b_k, b_v) = attn_projections(attn)
    b_qv = None if b_q is None else torch.cat([b_q, b_v])
    qv = F.linear(x, torch.cat([w_q, w_v]), b_qv).view(B, L, 2, heads, D // heads)
    q, v = (t.transpose(1, 2) for t in qv.unbind(2))  # (B, heads, L, d) views
    k = F.linear(x, w_k, b_k).view(B, L, heads, D // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if attn.training else 0.0,
                                         is_causal=causal)
    return attn.out_proj(out.transpose(1, 2).reshape(B, L, D))


def can_pack(attn: nn.Module) -> bool:
    """Whether :func:`packed_self_attention` computes ``attn`` exactly."""
    return (isinstance(attn, nn.MultiheadAttention) and attn.batch_first
            and attn.bias_k is None and attn.bias_v is None and not attn.add_zero_attn
            and attn.kdim == attn.embed_dim and attn.vdim == attn.embed_dim)


def causal_mask(length: int, device=None) -> torch.Tensor:
    """open_clip's additive causal mask: (L, L) float32, 0 on and below the diagonal, -inf
    above (``build_causal_mask`` of its text tower, cut to L)."""
    return torch.full((length, length), float("-inf"), device=device).triu_(1)


def residual_attention_block(blk: nn.Module, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """``blk(x)`` (with ``causal``: ``blk(x, attn_mask=causal_mask(L))``, open_clip's text
    tower) for an open_clip ``ResidualAttentionBlock``, its attention through
    :func:`packed_self_attention` where :data:`PACKED_ATTENTION` says so and the block is the
    plain kind (``ln_1``, ``attn``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``, no cross attention);
    otherwise the block's own forward.

    Args:
        blk: the block. x: (B, L, D) tokens. causal: token i attends to tokens 0..i only.
    """
    plain = not hasattr(blk, "ln_1_kv") and can_pack(getattr(blk, "attn", None)) \
        and all(hasattr(blk, n) for n in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
    if not (plain and device_switch(PACKED_ATTENTION, x.is_cuda)):
        return blk(x, attn_mask=causal_mask(x.shape[1], x.device)) if causal else blk(x)
    x = x + blk.ls_1(packed_self_attention(blk.attn, blk.ln_1(x), causal=causal))
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


# ------------------------------------------------------------------ frozen weights cast once

#: where :func:`frozen_casts` keeps the casts: ``"cuda"`` (default: modules on CUDA),
#: ``"always"`` (tests: under CPU autocast too), ``"never"`` (the benchmarks' baseline)
CAST_FROZEN_WEIGHTS = "cuda"

#: weight dtypes autocast casts (it leaves float64 alone), so the only ones copied
_AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)


def linear_with_copy(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """``F.linear`` on the cast copies of a frozen layer (the path :func:`frozen_casts` opens;
    its own name so that tests can see it taken)."""
    return F.linear(x, weight, bias)


def _cast_forward(self, x: torch.Tensor) -> torch.Tensor:
    cast = getattr(self, "_frozen_cast", None)  # (the form compiled and run on CUDA)
    if cast is not None and not self.weight.requires_grad \
            and torch.is_autocast_enabled(x.device.type) \
            and torch.get_autocast_dtype(x.device.type) == cast[0].dtype \
            and x.device == cast[0].device:
        return linear_with_copy(x, cast[0], cast[1])
    return F.linear(x, self.weight, self.bias)


class CastLinear(nn.Linear):
    """An ``nn.Linear`` that, under autocast to the dtype of its cached copy, multiplies by that
    copy instead of casting its frozen weight again (:func:`frozen_casts`). Same parameters,
    state_dict keys and values as the layer it stands for: autocast would cast the weight and
    bias to that dtype (round to nearest even) at every call; the copy holds that rounding.
    Subclasses of ``nn.Linear`` that keep its forward get a subclass of their own with this
    forward (:func:`_cast_class`), so their other methods and ``isinstance`` still hold."""

    forward = _cast_forward


_CAST_CLASSES: dict[type, type] = {nn.Linear: CastLinear}


def _cast_class(cls: type) -> type:
    if cls not in _CAST_CLASSES:
        _CAST_CLASSES[cls] = type("Cast" + cls.__name__, (cls,), {"forward": _cast_forward,
                                                                   "__module__": __name__})
    return _CAST_CLASSES[cls]


def holds_frozen_cast(m: nn.Module) -> bool:
    """Whether ``m`` is a layer :func:`frozen_casts` gave a copy (while its context is open)."""
    return "_frozen_cast" in m.__dict__


def _castable(m: nn.Module) -> bool:
    return (isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward
            and not holds_frozen_cast(m) and not parametrize.is_parametrized(m)
            and not m._forward_pre_hooks  # e.g. spectral_norm recomputes the weight there
            and m.weight.dtype in _AUTOCAST_ELIGIBLE and not m.weight.requires_grad
            and (m.bias is None or not m.bias.requires_grad))


class frozen_casts:
    """Context manager: every frozen ``nn.Linear`` of ``module`` keeps its weight and bias cast
    to ``dtype`` for the duration, so that autocast does not re-cast them at every step.

    At the paper shape the frozen DINOv3 ViT-L/16 prior (303M parameters) and CLIP's frozen
    MLPs and output projections (394M frozen Linear parameters in all) were cast from float32
    to bfloat16 at every training step: ~2.4 GB of memory traffic, among it one 0.35 ms kernel
    of the compiled step on an H200 for the prior (session 7). With the copies the step ran
    0.62 ms GPU faster with 315 kernels fewer (one same-call pair, session 8). The
    copies cost ``dtype``'s bytes per frozen weight (0.79 GB at the paper shape) while the
    context is open.

    The layers compute exactly what they did (the copy is the rounding autocast makes); outside
    autocast, under autocast to another dtype, or once a weight trains again, they use their
    own weights. Only layers whose weight and bias do not train, in a dtype autocast casts,
    with nn.Linear's own forward and no parametrization or forward pre-hook, are touched, and
    nothing of the state_dict changes. The copies are taken on entry: load no weights into the
    module inside the context. Their storage is marked static for CUDA graphs
    (``torch._dynamo.mark_static_address``). A model compiled before the context (or used
    compiled after it) recompiles once on the class change.

    Args:
        module: the model (any nn.Module).
        dtype: the autocast dtype (bfloat16 / float16), or None: do nothing.
        enabled: True / False, or None: as :data:`CAST_FROZEN_WEIGHTS` says for the device of
            the module's first parameter.
    """

    def __init__(self, module: nn.Module, dtype, enabled: bool | None = None):
        if enabled is None:
            first = next(module.parameters(), None)
            enabled = first is not None and device_switch(CAST_FROZEN_WEIGHTS, first.is_cuda)
        self.module, self.dtype = module, dtype
        self.enabled = bool(enabled) and dtype is not None
        self.layers: list[tuple[nn.Linear, type]] = []
        self.bytes = 0

    def __enter__(self) -> "frozen_casts":
        if not self.enabled:
            return self
        try:
            with torch.no_grad():
                for m in self.module.modules():
                    if _castable(m):
                        self._take(m)
        except BaseException:
            self.__exit__()  # no layer may keep a copy that no context will drop
            raise
        return self

    def _take(self, m: nn.Linear) -> None:
        w = _copy(m.weight, self.dtype)
        b = None if m.bias is None else _copy(m.bias, self.dtype)
        for t in (w, b):
            if t is not None:
                if t.is_cuda:
                    torch._dynamo.mark_static_address(t)
                self.bytes += t.numel() * t.element_size()
        self.layers.append((m, type(m)))
        m.__class__ = _cast_class(type(m))
        object.__setattr__(m, "_frozen_cast", (w, b))

    def __exit__(self, *exc) -> None:
        for m, cls in self.layers:
            m.__dict__.pop("_frozen_cast", None)
            m.__class__ = cls
        self.layers = []


def _copy(t: torch.Tensor, dtype) -> torch.Tensor:
    return t.detach().to(dtype).contiguous()
