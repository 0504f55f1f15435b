"""Uncertainty-Guided Adaptive Fusion (UGAF), DR-Seg section 3.4, Eq. 12-13.

"DR-Seg: Decouple and Rectify ..." (2026). The original multi-rotation CLIP branch C_ori and
the refined branch C_ref (Eq. 11) are embedded into the aggregator's latent space and fused:

* :func:`uncertainty_gate` -- Eq. 12, ``M_unc = (U / log K)^2`` from the softmax entropy;
* :class:`UGAF` -- Eq. 13 ``C~_ref = sigmoid(psi(M_unc)) * C_ref``, projection of both
  branches (per class), a multi-scale conv block on the refined branch and a fusion head.
* :class:`BranchFusion` -- UGAF and the fusion alternatives of Table 4 (mean, concat,
  separate).

Tensors of the cost volume are laid out (B, E, K, h, w): E embedding channels per class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from drseg.errors import DrsegInputError

FUSIONS = ("ugaf", "mean", "concat", "separate")


def uncertainty_gate(corr: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 12: the normalised uncertainty gate.

    ``p = softmax_k(corr)``, ``U = -sum_k p_k log(p_k + eps)``, ``M_unc = (U / log K)^2``.

    Args:
        corr: (B, K, H, W) class scores (K >= 2).
        eps: the epsilon inside the log.

    Returns:
        (B, 1, H, W) in [0, 1] (1 = uniform, most ambiguous).
    """
    K = corr.shape[1]
    if K < 2:
        raise DrsegInputError(f"uncertainty_gate: needs at least 2 classes, got {K}")
    p = corr.float().softmax(dim=1)
    u = -(p * torch.log(p + eps)).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    log_k = torch.full((), K, dtype=torch.float64, device=u.device).log()  # log K, any K
    return (u / log_k).square()


def per_class(x: torch.Tensor, fn: nn.Module) -> torch.Tensor:
    """Apply a 2-d module to every class map of a (B, E, K, h, w) volume.

    Args:
        x: (B, E, K, h, w).
        fn: module mapping (N, E, h, w) -> (N, E', h', w').

    Returns:
        (B, E', K, h', w').
    """
    B, E, K, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(B * K, E, h, w))  # (B*K, E', h', w')
    return y.view(B, K, *y.shape[1:]).transpose(1, 2)


class MultiScaleBlock(nn.Module):
    """Lightweight multi-scale conv block on the refined branch (section 3.4).

    Three parallel 3x3 convs with dilation 1, 2 and 4 (local corrections and wider context),
    concatenated, fused by a 1x1 conv, GELU, residual.

    Args:
        dim: channels in and out.
    """

    def __init__(self, dim: int):
        super().__init__()
        branch = max(dim // 4, 1)
        self.branches = nn.ModuleList(nn.Conv2d(dim, branch, 3, padding=d, dilation=d)
                                      for d in (1, 2, 4))
        self.fuse = nn.Conv2d(3 * branch, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, dim, h, w) -> (N, dim, h, w)."""
        y = torch.cat([b(x) for b in self.branches], dim=1)
        return x + F.gelu(self.fuse(y))


class BranchFusion(nn.Module):
    """Embed C_ori and C_ref per class and fuse them (UGAF or a Table 4 alternative).

    * ``ugaf``: Eq. 12 gate from class scores of C_ori, Eq. 13 modulation of C_ref,
      projections of both branches, multi-scale block on the refined branch, fusion head
      (1x1 conv on the concatenation).
    * ``ugaf`` with ``gate=False``: the same without the modulation.
    * ``mean``: mean of the two embeddings (no gate, no multi-scale block).
    * ``concat``: 1x1 conv on the concatenated embeddings (no gate, no multi-scale block).
    * ``separate``: no fusion here; :meth:`embed` gives both embeddings and the assembly runs
      each through the aggregator and decoder and averages the logits.

    Args:
        rotations: R, channels per class of C_ori (4 with multi-rotation, else 1).
        dim: latent width (the aggregator's hidden width).
        fusion: one of :data:`FUSIONS`.
        gate: use the uncertainty modulation (Eq. 13; only with ``ugaf``).
        kernel: projection kernel (7 as the reference's cost embedding).
    """

    def __init__(self, rotations: int, dim: int, fusion: str = "ugaf", gate: bool = True,
                 kernel: int = 7):
        super().__init__()
        if fusion not in FUSIONS:
            raise DrsegInputError(f"model.fusion: {fusion!r} is not one of {', '.join(FUSIONS)}")
        self.fusion, self.gate = fusion, gate and fusion == "ugaf"
        self.proj_ori = nn.Conv2d(rotations, dim, kernel, padding=kernel // 2)
        self.proj_ref = nn.Conv2d(1, dim, kernel, padding=kernel // 2)
        self.psi = nn.Conv2d(1, 1, 1) if self.gate else None  # Eq. 13 psi
        self.multiscale = MultiScaleBlock(dim) if fusion == "ugaf" else nn.Identity()
        self.head = nn.Conv2d(2 * dim, dim, 1) if fusion in ("ugaf", "concat") else None

    def embed(self, c_ori: torch.Tensor, c_ref: torch.Tensor,
              gate_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project both branches (with Eq. 12-13 modulation of C_ref when gated).

        Args:
            c_ori: (B, R, K, h, w) original-branch correlations (all rotations).
            c_ref: (B, K, h, w) refined correlation (Eq. 11).
            gate_scores: (B, K, h, w) class scores derived from C_ori for Eq. 12.

        Returns:
            ``(e_ori, e_ref)``, each (B, dim, K, h, w).
        """
        if self.gate:
            m_unc = uncertainty_gate(gate_scores)  # (B, 1, h, w), Eq. 12
            c_ref = torch.sigmoid(self.psi(m_unc.to(c_ref.dtype))) * c_ref  # Eq. 13
        e_ori = per_class(c_ori, self.proj_ori)  # (B, dim, K, h, w)
        e_ref = per_class(c_ref.unsqueeze(1), self.proj_ref)  # (B, dim, K, h, w)
        return e_ori, per_class(e_ref, self.multiscale)

    def forward(self, c_ori: torch.Tensor, c_ref: torch.Tensor,
                gate_scores: torch.Tensor) -> torch.Tensor:
        """Fused (B, dim, K, h, w) embedding; arguments as :meth:`embed`."""
        if self.fusion == "separate":
            raise DrsegInputError("model.fusion: 'separate' has no fused embedding")
        e_ori, e_ref = self.embed(c_ori, c_ref, gate_scores)
        if self.fusion == "mean":
            return 0.5 * (e_ori + e_ref)
        return per_class(torch.cat([e_ori, e_ref], dim=1), self.head)
