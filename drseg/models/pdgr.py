"""Prior-Driven Graph Rectification (PDGR), DR-Seg section 3.3, Eq. 7-9 and Eq. 11.

"DR-Seg: Decouple and Rectify ..." (2026). The structure-dominated CLIP subspace F_str
(Eq. 6, from :mod:`drseg.models.spsd`) is rectified by message passing over a sparse graph
whose connectivity comes from a frozen DINO prior and the token positions:

* :func:`affinity` -- Eq. 7, dense (B, N, N);
* :func:`topk_neighbors` -- the top-k sparse graph;
* :class:`EdgeMLP` -- Eq. 8 edge weights ``Softplus(MLP([f_i || f_j]))``;
* :func:`normalized_adjacency` and :class:`GraphRectifier` -- Eq. 9 propagation.

The recomposition with F_sem and the refined correlation (Eq. 11) are done in
:class:`PDGR` with :func:`drseg.models.spsd.recompose` and
:func:`drseg.models.clip.correlation`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from drseg.errors import DrsegInputError
from drseg.models import spsd


def grid_coords(h: int, w: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Token coordinates c_i of an h x w grid in row-major order (token units).

    Returns:
        (h*w, 2) float ``(row, col)``.
    """
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing="ij")
    return torch.stack([ys.flatten(), xs.flatten()], dim=1).float()  # (N, 2)


def affinity(dino: torch.Tensor, coords: torch.Tensor, sigma_f: float, sigma_s: float,
             eps: float = 1e-6) -> torch.Tensor:
    """Eq. 7: DINO- and position-based affinity between all pairs of nodes.

    ``A_ij = sigma_f * cos(f_i, f_j)^2 * exp(-sigma_s * ||c_i - c_j||_2 / (d_max + eps))``,
    with ``d_max`` the largest pairwise distance among the N coordinates. Computed in float32.

    Args:
        dino: (B, N, D) DINO features f_dino of the N nodes.
        coords: (N, 2) spatial coordinates c_i.
        sigma_f: the scaling factor (paper: 2.0).
        sigma_s: the spatial decay strength (paper: 0.05).
        eps: the epsilon of Eq. 7.

    Returns:
        (B, N, N) affinities.
    """
    if dino.dim() != 3 or coords.dim() != 2 or coords.shape != (dino.shape[1], 2):
        raise DrsegInputError(f"affinity: expected dino (B, N, D) and coords (N, 2), got "
                              f"{tuple(dino.shape)} and {tuple(coords.shape)}")
    f = F.normalize(dino.float(), dim=-1)
    cos = f @ f.transpose(1, 2)  # (B, N, N)
    dist = torch.cdist(coords.float(), coords.float())  # (N, N) Euclidean
    d_max = dist.max()
    spatial = torch.exp(-sigma_s * dist / (d_max + eps))  # (N, N)
    return sigma_f * cos.square() * spatial.unsqueeze(0)


def topk_neighbors(aff: torch.Tensor, k: int) -> torch.Tensor:
    """The k nodes j != i of largest affinity A_ij for every node i (the sparse graph).

    The node itself is excluded from the search (its self loop is added separately in Eq. 9);
    ``k`` is capped at N - 1. The graph is *not* symmetrised: j in N(i) does not imply
    i in N(j).

    Args:
        aff: (B, N, N) affinities (Eq. 7).
        k: neighbours per node (paper: 75).

    Returns:
        (B, N, k') long neighbour indices, k' = min(k, N - 1).
    """
    if k < 1:
        raise DrsegInputError(f"model.k: must be >= 1, got {k}")
    n = aff.shape[-1]
    k = min(k, n - 1)
    eye = torch.eye(n, dtype=torch.bool, device=aff.device)
    masked = aff.masked_fill(eye, float("-inf"))
    return masked.topk(k, dim=-1).indices  # (B, N, k)


class EdgeMLP(nn.Module):
    """Eq. 8: ``w_ij = Softplus(MLP([f_i || f_j]; Theta_edge))``.

    The MLP is Linear(2D, hidden) - ReLU - Linear(hidden, 1). Its first layer is applied as
    ``W_a f_i + W_b f_j`` (the same linear map as on the concatenation, split into the halves
    acting on f_i and f_j), so it runs per node and is gathered per edge.

    Args:
        dim: D, the DINO feature width.
        hidden: width of the hidden layer.
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(2 * dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, dino: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        """Edge weights of every retained edge.

        Args:
            dino: (B, N, D) node features.
            neighbors: (B, N, M) indices j of the edges (i, j).

        Returns:
            (B, N, M) positive weights w_ij.
        """
        d = dino.shape[-1]
        a = F.linear(dino, self.fc1.weight[:, :d], self.fc1.bias)  # (B, N, hidden): W_a f_i + b
        b = F.linear(dino, self.fc1.weight[:, d:])  # (B, N, hidden): W_b f_j
        B, N, M = neighbors.shape
        b_j = b.gather(1, neighbors.reshape(B, N * M, 1).expand(-1, -1, b.shape[-1]))
        b_j = b_j.view(B, N, M, -1)  # (B, N, M, hidden)
        h = F.relu(a.unsqueeze(2) + b_j)
        return F.softplus(self.fc2(h).squeeze(-1))  # (B, N, M)


def normalized_adjacency(neighbors: torch.Tensor, weights: torch.Tensor,
                         eps: float = 1e-6) -> torch.Tensor:
    """The propagation matrix of Eq. 9: ``P_ij = w_ij / sqrt(d_i d_j)`` on N(i) and {i}.

    * Self loop: ``neighbors`` must hold node i itself (see :class:`GraphRectifier`), with its
      own learned weight w_ii (Eq. 8 on [f_i || f_i]).
    * Degree: ``d_i = sum_j w_ij`` over node i's retained edges N(i) and {i} (its row sum).
    * Non-symmetric top-k: the edge (i, j) exists when j is among i's top k; P is not
      symmetrised, and ``d_j`` is node j's own row sum, whether or not i is in N(j).

    Args:
        neighbors: (B, N, M) indices j per node i (incl. i).
        weights: (B, N, M) w_ij.
        eps: guards the square root.

    Returns:
        (B, N, N) dense matrix, zero outside the retained edges.
    """
    B, N, _ = neighbors.shape
    deg = weights.sum(-1)  # (B, N)
    deg_j = deg.gather(1, neighbors.reshape(B, -1)).view_as(weights)  # (B, N, M)
    norm = weights / torch.sqrt(deg.unsqueeze(-1) * deg_j + eps)
    return weights.new_zeros(B, N, N).scatter(2, neighbors, norm)


class GraphRectifier(nn.Module):
    """Eq. 9: ``H_i^(l+1) = phi( sum_{j in N(i) u {i}} w_ij / sqrt(d_i d_j) H_j^(l) W^(l) )``.

    ReLU after the hidden layers, LayerNorm after the output layer; every layer keeps the
    width C_str. The graph and weights come from :func:`affinity`, :func:`topk_neighbors`
    (self excluded) plus the self loop, and :class:`EdgeMLP`; see
    :func:`normalized_adjacency` for the degree and the non-symmetric top-k.

    Args:
        channels: C_str.
        dino_dim: D.
        layers: number of propagation layers (>= 1).
        k: neighbours per node.
        sigma_f, sigma_s: Eq. 7.
        edge_hidden: hidden width of the edge MLP.
    """

    def __init__(self, channels: int, dino_dim: int, layers: int = 2, k: int = 75,
                 sigma_f: float = 2.0, sigma_s: float = 0.05, edge_hidden: int = 64):
        super().__init__()
        if layers < 1:
            raise DrsegInputError(f"model.graph_layers: must be >= 1, got {layers}")
        self.k, self.sigma_f, self.sigma_s = k, sigma_f, sigma_s
        self.edge = EdgeMLP(dino_dim, edge_hidden)
        self.weights = nn.ModuleList(nn.Linear(channels, channels, bias=False)
                                     for _ in range(layers))
        self.out_norm = nn.LayerNorm(channels)

    def graph(self, dino: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """The (B, N, N) propagation matrix of Eq. 9 from DINO tokens and coordinates."""
        with torch.no_grad():  # connectivity only: top-k is not differentiable anyway
            neighbors = topk_neighbors(affinity(dino, coords, self.sigma_f, self.sigma_s),
                                       self.k)
        B, N, _ = neighbors.shape
        self_idx = torch.arange(N, device=dino.device).view(1, N, 1).expand(B, N, 1)
        neighbors = torch.cat([self_idx, neighbors], dim=-1)  # (B, N, k + 1): N(i) u {i}
        w = self.edge(dino, neighbors)  # Eq. 8
        return normalized_adjacency(neighbors, w.float())

    def forward(self, h: torch.Tensor, dino: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Rectify node features.

        Args:
            h: (B, N, C_str) H^(0) (F_str reshaped).
            dino: (B, N, D) DINO features on the same grid.
            coords: (N, 2).

        Returns:
            (B, N, C_str) the rectified F_str.
        """
        adj = self.graph(dino, coords).to(h.dtype)  # (B, N, N)
        for i, lin in enumerate(self.weights):
            h = adj @ lin(h)  # (B, N, C_str)
            h = F.relu(h) if i < len(self.weights) - 1 else self.out_norm(h)
        return h


class PDGR(nn.Module):
    """SPSD slicing (Eq. 6) + graph rectification of F_str (Eq. 7-9) + recomposition.

    Without a channel index (or with SPSD off) the whole feature is F_str (C_str = C).

    Args:
        channels: C, the dense CLIP width.
        dino_dim: D.
        semantic, structural: I_sem, I_str (Eq. 5) or None for "all channels structural".
        layers, k, sigma_f, sigma_s, edge_hidden: see :class:`GraphRectifier`.
    """

    def __init__(self, channels: int, dino_dim: int, semantic: Optional[Sequence[int]] = None,
                 structural: Optional[Sequence[int]] = None, layers: int = 2, k: int = 75,
                 sigma_f: float = 2.0, sigma_s: float = 0.05, edge_hidden: int = 64):
        super().__init__()
        if (semantic is None) != (structural is None):
            raise DrsegInputError("pdgr: give both semantic and structural indices or neither")
        if semantic is not None:
            sem, struct = list(semantic), list(structural)
            if sorted(sem + struct) != list(range(channels)):
                raise DrsegInputError(f"pdgr: the channel index does not partition 0..{channels - 1}")
            if not struct:
                raise DrsegInputError("pdgr: the channel index leaves no structural channel "
                                      "(rho = 1)")
            self.register_buffer("sem_idx", torch.tensor(sem, dtype=torch.long), persistent=False)
            self.register_buffer("str_idx", torch.tensor(struct, dtype=torch.long),
                                 persistent=False)
            c_str = len(struct)
        else:
            self.sem_idx = self.str_idx = None
            c_str = channels
        self.rectifier = GraphRectifier(c_str, dino_dim, layers, k, sigma_f, sigma_s, edge_hidden)

    def forward(self, clip_dense: torch.Tensor, dino: torch.Tensor) -> torch.Tensor:
        """Refined CLIP feature F_ref.

        Args:
            clip_dense: (B, C, h, w) dense CLIP features F_clip (rotation 0).
            dino: (B, D, h, w) DINO tokens on the CLIP grid.

        Returns:
            (B, C, h, w) F_ref: F_sem untouched, F_str rectified, original channel order.
        """
        B, C, h, w = clip_dense.shape
        if self.sem_idx is not None:
            f_sem, f_str = spsd.decouple(clip_dense, self.sem_idx, self.str_idx, dim=1)  # Eq. 6
        else:
            f_sem, f_str = None, clip_dense
        h0 = f_str.flatten(2).transpose(1, 2)  # (B, N, C_str)
        nodes = dino.flatten(2).transpose(1, 2)  # (B, N, D)
        coords = grid_coords(h, w, clip_dense.device)
        h_out = self.rectifier(h0, nodes, coords)  # (B, N, C_str)
        f_str = h_out.transpose(1, 2).reshape(B, -1, h, w)  # (B, C_str, h, w)
        if f_sem is None:
            return f_str
        return spsd.recompose(f_sem, f_str.to(f_sem.dtype), self.sem_idx, self.str_idx, dim=1)

