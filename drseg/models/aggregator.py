"""Cost aggregation of the CAT-Seg / RSKT-Seg code path that DR-Seg extends.

"CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation" (Cho et al., CVPR 2024,
arXiv:2303.11797); constants in ``/work/shared/reference/PROTOCOL.md`` section 3. Per layer:

* spatial step: two Swin blocks (window ``w``, shift ``w // 2``) on every class map, with the
  appearance guidance concatenated into the inputs of q and k (v sees the cost only);
* class step: linear attention across the K classes at every (pooled) position, with the
  text guidance concatenated into the inputs of q and k, then an MLP (ratio 4); average
  pooling 2 in training and 1 at evaluation, bilinear upsampling back, residual.

The volume is laid out (B, E, K, h, w).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.swin_transformer import (get_relative_position_index, window_partition,
                                          window_reverse)
from torch import nn

from drseg.errors import DrsegInputError


class GuidedWindowAttention(nn.Module):
    """Window attention with relative position bias; q, k see ``[x || guidance]``, v sees x.

    Args:
        dim: token width. guidance_dim: appearance guidance width (0 = none).
        window: window side. heads: attention heads.
    """

    def __init__(self, dim: int, guidance_dim: int, window: int, heads: int):
        super().__init__()
        if dim % heads:
            raise DrsegInputError(f"model.hidden_dim {dim} is not divisible by {heads} heads")
        self.heads, self.window = heads, window
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", get_relative_position_index(window, window).flatten(),
                             persistent=False)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x (nW*B, L, dim), guidance (nW*B, L, G) or None, mask (nW, L, L) or None."""
        n, L, dim = x.shape
        xg = x if guidance is None else torch.cat([x, guidance], dim=-1)
        q = self.q(xg).view(n, L, self.heads, -1).transpose(1, 2)  # (n, heads, L, d)
        k = self.k(xg).view(n, L, self.heads, -1).transpose(1, 2)
        v = self.v(x).view(n, L, self.heads, -1).transpose(1, 2)
        bias = self.bias_table[self.bias_index].view(L, L, -1).permute(2, 0, 1)  # (heads, L, L)
        bias = bias.unsqueeze(0).to(q.dtype)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias + mask.unsqueeze(1).to(q.dtype)).repeat(n // nw, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(n, -1, -1, -1))
        return self.proj(out.transpose(1, 2).reshape(n, L, dim))


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
        if not self.shift:
            return None
        img = torch.zeros(1, h, w, 1, device=device)
        cnt = 0
        for hs in (slice(0, -self.window), slice(-self.window, -self.shift),
                   slice(-self.shift, None)):
            for ws in (slice(0, -self.window), slice(-self.window, -self.shift),
                       slice(-self.shift, None)):
                img[:, hs, ws, :] = cnt
                cnt += 1
        win = window_partition(img, (self.window, self.window)).flatten(1)  # (nW, L)
        diff = win.unsqueeze(1) - win.unsqueeze(2)  # (nW, L, L)
        return diff.ne(0).float() * -100.0

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """x (N, h, w, dim), guidance (N, h, w, G) or None -> (N, h, w, dim)."""
        N, h, w, dim = x.shape
        win = self.window
        y = self.norm1(x)
        if guidance is not None:
            y = torch.cat([y, guidance], dim=-1)  # (N, h, w, dim + G)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        yw = window_partition(y, (win, win)).flatten(1, 2)  # (nW*N, L, dim + G)
        g = yw[..., dim:] if guidance is not None else None
        out = self.attn(yw[..., :dim], g, self._mask(h, w, x.device))  # (nW*N, L, dim)
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
        g = None
        if guidance is not None and self.guidance_norm is not None:
            g = self.guidance_norm(guidance.permute(0, 2, 3, 1))  # (B, h, w, G)
            g = g.unsqueeze(1).expand(-1, K, -1, -1, -1).reshape(B * K, h, w, -1)
        for blk in self.blocks:
            t = blk(t, g)
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
        """x (B, E, K, h, w), guidance (B, K, G) or None -> (B, E, K, h, w)."""
        B, E, K, h, w = x.shape
        pool = self.pool_train if self.training else 1
        t = x.transpose(1, 2).reshape(B * K, E, h, w)
        if pool > 1:
            t = F.avg_pool2d(t, pool)
        hp, wp = t.shape[-2:]
        t = t.view(B, K, E, hp * wp).permute(0, 3, 1, 2).reshape(B * hp * wp, K, E)
        y = self.norm1(t)
        if guidance is not None:
            g = guidance.unsqueeze(1).expand(-1, hp * wp, -1, -1).reshape(B * hp * wp, K, -1)
            yg = torch.cat([y, g], dim=-1)
        else:
            yg = y
        q = self.q(yg).view(B * hp * wp, K, self.heads, -1)
        k = self.k(yg).view(B * hp * wp, K, self.heads, -1)
        v = self.v(y).view(B * hp * wp, K, self.heads, -1)
        t = t + linear_attention(q, k, v).flatten(2)
        t = t + self.mlp(self.norm2(t))  # (B*hp*wp, K, E)
        t = t.view(B, hp * wp, K, E).permute(0, 2, 3, 1).reshape(B * K, E, hp, wp)
        if pool > 1:
            t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)
        return x + t.view(B, K, E, h, w).transpose(1, 2)


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
        """x (B, E, K, h, w), appearance (B, G, h, w), text (B, K, G') -> (B, E, K, h, w)."""
        for spatial, classwise in zip(self.spatial, self.classwise):
            x = classwise(spatial(x, appearance), text)
        return x
