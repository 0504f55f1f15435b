"""Semantic-Preserving Subspace Decoupling (SPSD), DR-Seg section 3.2, Eq. 1-6.

"DR-Seg: Decouple and Rectify" (2026). SPSD scores every CLIP dense-feature channel with
class-wise prototypes of the frozen encoder (prototype-level cross-class activation entropy,
Eq. 1-2, and inter-class similarity, Eq. 3), combines the two normalised ranks (Eq. 4), splits
the channels into a semantics-dominated and a structure-dominated subset (Eq. 5) and slices the
features accordingly (Eq. 6). The scores are computed offline on the training split and stored
in the channel index file (``data/spsd/channel_index.json``, format ``drseg-spsd-index/1``:
scores, order, a reference split); the model reads it through :func:`load_channel_index`, which
re-splits at the training run's rho.

Everything here is pure (tensors / plain values in, tensors / files out); prototype extraction
with the encoder lives in :mod:`drseg.engine.spsd`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from drseg.atomic import atomic_write_text
from drseg.errors import DrsegInputError

INDEX_FORMAT = "drseg-spsd-index/1"
_INDEX_KEYS = ("format", "channels", "score", "order", "semantic", "structural", "rho",
               "lambda", "backbone", "clip_checkpoint_sha256", "dataset")


class ChannelScores(NamedTuple):
    """Per-channel SPSD quantities, each of shape (C,), float64."""

    H: torch.Tensor  # Eq. 2, cross-class activation entropy (bits); lower = more selective
    S: torch.Tensor  # Eq. 3, inter-class prototype similarity; lower = more discriminative
    score: torch.Tensor  # Eq. 4, in [0, 1]; higher = more important for semantics


# ----------------------------------------------------------------------------- Eq. 1-4


def class_responses(prototypes: torch.Tensor) -> torch.Tensor:
    """u_{k,c}: the mean ReLU activation of channel c over the prototypes of class k.

    Args:
        prototypes: (K, N_p, C) class-wise prototypes.

    Returns:
        (K, C) tensor u.
    """
    return prototypes.clamp_min(0).mean(dim=1)  # (K, C)


def class_distribution(u: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 1: p_{k,c} = u_{k,c} / (sum_j u_{j,c} + eps).

    Args:
        u: (K, C) non-negative class responses (:func:`class_responses`).
        eps: the paper's epsilon.

    Returns:
        (K, C) tensor p; each column sums to (almost) 1, or 0 for a channel that never fires.
    """
    return u / (u.sum(dim=0, keepdim=True) + eps)  # (K, C)


def channel_entropy(p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 2: H_c = -sum_k p_{k,c} log2(p_{k,c} + eps).

    Args:
        p: (K, C) class distributions per channel (Eq. 1).
        eps: the paper's epsilon.

    Returns:
        (C,) entropies in bits.
    """
    return -(p * torch.log2(p + eps)).sum(dim=0)  # (C,)


def interclass_similarity(prototypes: torch.Tensor) -> torch.Tensor:
    """Eq. 3: S_c = 1/|Omega| sum_{(i,j) in Omega} v_{i,c} v_{j,c}, Omega = the prototype pairs
    from different classes, in closed form (no pair enumeration).

    With T_c = sum_i v_{i,c} over all prototypes and T_{k,c} = sum over class k's prototypes,
    the sum over unordered cross-class pairs is (T_c^2 - sum_k T_{k,c}^2) / 2 and
    |Omega| = (N^2 - sum_k N_k^2) / 2 with N_k = N_p, N = K N_p. Ordered and unordered pairs give
    the same mean (the product is symmetric).

    Args:
        prototypes: (K, N_p, C), K >= 2 and N_p >= 1.

    Returns:
        (C,) mean cross-class product per channel.
    """
    K, n_p, _ = prototypes.shape
    per_class = prototypes.sum(dim=1)  # (K, C) T_{k,c}
    total = per_class.sum(dim=0)  # (C,) T_c
    pair_sum = (total * total - (per_class * per_class).sum(dim=0)) / 2  # (C,)
    n_pairs = (K * K - K) * n_p * n_p / 2  # (N^2 - K N_p^2) / 2
    return pair_sum / n_pairs


def normalized_rank(values: torch.Tensor) -> torch.Tensor:
    """Ranks normalised to [0, 1] (Eq. 4's Rank): r / (C - 1), r = 0 for the smallest value,
    ties broken by channel index (the lower index gets the lower rank).

    Args:
        values: (C,) values to rank.

    Returns:
        (C,) float64 ranks; all zero when C == 1.
    """
    C = values.numel()
    order = torch.sort(values, stable=True).indices  # ascending; stable keeps index order
    rank = torch.empty(C, dtype=torch.float64)
    rank[order] = torch.arange(C, dtype=torch.float64)
    return rank / max(C - 1, 1)


def channel_scores(prototypes: torch.Tensor, lam: float, eps: float = 1e-8) -> ChannelScores:
    """SPSD channel scores, Eq. 1-4.

    Score_c = lam (1 - Rank(H_c)) + (1 - lam) (1 - Rank(S_c)): a low entropy (selective
    channel) and a low inter-class similarity (discriminative channel) both raise the score.
    Computed in float64.

    Args:
        prototypes: (K, N_p, C) class-wise prototypes of L2-normalised pixel features from the
            frozen CLIP (classes absent from the training split must be left out beforehand).
        lam: lambda of Eq. 4, in [0, 1] (paper: 0.3).
        eps: epsilon of Eq. 1-2.

    Returns:
        ChannelScores(H, S, score), each (C,) float64.

    Raises:
        DrsegInputError: wrong shape, fewer than 2 classes, non-finite values, lam outside [0, 1].
    """
    if not isinstance(prototypes, torch.Tensor) or prototypes.dim() != 3:
        raise DrsegInputError(f"spsd prototypes: expected a (K, N_p, C) tensor, got "
                              f"{getattr(prototypes, 'shape', type(prototypes).__name__)}")
    K, n_p, C = prototypes.shape
    if K < 2 or n_p < 1 or C < 1:
        raise DrsegInputError(f"spsd prototypes: need K >= 2 classes, N_p >= 1, C >= 1; got "
                              f"shape {tuple(prototypes.shape)}")
    _check_unit("spsd.lambda", lam)
    v = prototypes.detach().to(torch.float64)
    if not torch.isfinite(v).all():
        raise DrsegInputError("spsd prototypes: contain NaN or inf")
    p = class_distribution(class_responses(v), eps)  # Eq. 1, (K, C)
    H = channel_entropy(p, eps)  # Eq. 2, (C,)
    S = interclass_similarity(v)  # Eq. 3, (C,)
    score = lam * (1 - normalized_rank(H)) + (1 - lam) * (1 - normalized_rank(S))  # Eq. 4
    return ChannelScores(H, S, score)


# ----------------------------------------------------------------------------- Eq. 5-6


def num_semantic(channels: int, rho: float) -> int:
    """C_sem = floor(rho C) (Eq. 5-6); a 1e-9 slack absorbs float artefacts such as
    0.29 * 100 = 28.999999999999996."""
    _check_unit("spsd.rho", rho)
    return min(channels, int(math.floor(rho * channels + 1e-9)))


def split_channels(score: torch.Tensor, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5: sort channels by descending score (ties: lower channel index first) into the
    permutation pi; I_sem = pi[:floor(rho C)], I_str = the rest.

    Args:
        score: (C,) semantic scores (Eq. 4).
        rho: semantic ratio in [0, 1] (paper: 0.5).

    Returns:
        (semantic, structural): int64 index tensors in pi order (descending score).
    """
    if score.dim() != 1:
        raise DrsegInputError(f"spsd score: expected shape (C,), got {tuple(score.shape)}")
    pi = torch.sort(score, descending=True, stable=True).indices  # (C,)
    c_sem = num_semantic(score.numel(), rho)
    return pi[:c_sem].clone(), pi[c_sem:].clone()


def decouple(features: torch.Tensor, semantic: Sequence[int] | torch.Tensor,
             structural: Sequence[int] | torch.Tensor, dim: int = 1
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: F_sem = F[.., I_sem], F_str = F[.., I_str] by channel slicing.

    Args:
        features: e.g. (B, C, h, w) dense CLIP features (``dim=1``) or (T, C) text embeddings
            (``dim=-1``).
        semantic: I_sem. structural: I_str (from :func:`split_channels` or the index file).
        dim: the channel dimension.

    Returns:
        (F_sem, F_str) with C_sem and C_str channels along ``dim``.
    """
    return (select_channels(features, semantic, dim), select_channels(features, structural, dim))


def recompose(f_sem: torch.Tensor, f_str: torch.Tensor, semantic: Sequence[int] | torch.Tensor,
              structural: Sequence[int] | torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Inverse of :func:`decouple`: put both subsets back at their original channel positions.

    Args:
        f_sem, f_str: the two subspaces (channels along ``dim``).
        semantic, structural: the indices they were sliced with.
        dim: the channel dimension.

    Returns:
        Tensor with C = C_sem + C_str channels in the original order.
    """
    sem = _as_index(semantic, f_sem.device)
    struct = _as_index(structural, f_str.device)
    order = torch.cat([sem, struct])  # (C,) original channel of each concatenated slot
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat([f_sem, f_str], dim=dim).index_select(dim, inverse)


def select_channels(x: torch.Tensor, index: Sequence[int] | torch.Tensor, dim: int = 1
                    ) -> torch.Tensor:
    """``x`` restricted to the channels ``index`` (in that order) along ``dim``."""
    return x.index_select(dim, _as_index(index, x.device))


def _as_index(index: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(index, dtype=torch.long, device=device).reshape(-1)


def _check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 1):
        raise DrsegInputError(f"{name}: must be a number in [0, 1], got {value!r}")


# ----------------------------------------------------------------------------- index file


def channel_index_dict(score: torch.Tensor, *, rho: float, lam: float, backbone: str,
                       clip_checkpoint_sha256: str, dataset: str) -> dict[str, Any]:
    """The channel index record of DESIGN.md "Shared formats" (``drseg-spsd-index/1``):
    the scores (Eq. 4), the order by descending score (pi of Eq. 5) and the split at ``rho``.

    Args:
        score: (C,) Eq. 4 scores.
        rho, lam: the Eq. 5 and Eq. 4 parameters.
        backbone: open_clip model name (e.g. ``ViT-B-16``, ``drseg-tiny-clip``).
        clip_checkpoint_sha256: sha256 of the CLIP weights file the scores came from.
        dataset: the training dataset the prototypes came from.
    """
    if not isinstance(score, torch.Tensor) or score.dim() != 1:
        raise DrsegInputError("spsd score: expected a (C,) tensor")
    _check_unit("spsd.lambda", lam)
    order = torch.sort(score, descending=True, stable=True).indices
    sem, struct = split_channels(score, rho)
    record = {
        "format": INDEX_FORMAT,
        "channels": int(score.numel()),
        "score": [float(x) for x in score.tolist()],
        "order": [int(i) for i in order.tolist()],
        "semantic": [int(i) for i in sem.tolist()],
        "structural": [int(i) for i in struct.tolist()],
        "rho": float(rho),
        "lambda": float(lam),
        "backbone": str(backbone),
        "clip_checkpoint_sha256": str(clip_checkpoint_sha256),
        "dataset": str(dataset),
    }
    return validate_channel_index(record, source="channel index")


def save_channel_index(path: str | Path, score: torch.Tensor, *, rho: float, lam: float,
                       backbone: str, clip_checkpoint_sha256: str, dataset: str
                       ) -> dict[str, Any]:
    """Write the channel index file atomically (temp file + rename; byte-identical reruns).

    Args:
        path: output json (``data/spsd/channel_index.json``).
        score: (C,) Eq. 4 scores; the order and the split at ``rho`` are derived from them.
        rho: the semantic ratio of the stored reference split (training re-splits with its own
            rho through :func:`load_channel_index`).
        lam, backbone, clip_checkpoint_sha256, dataset: see :func:`channel_index_dict`.

    Returns:
        The record written.
    """
    record = channel_index_dict(score, rho=rho, lam=lam, backbone=backbone,
                                clip_checkpoint_sha256=clip_checkpoint_sha256, dataset=dataset)
    write_json_atomic(path, record)
    return record


def load_channel_index(path: str | Path, channels: int | None = None, rho: float | None = None,
                       backbone: str | None = None) -> dict[str, Any]:
    """Read and check a channel index file; optionally re-split it at another rho (Eq. 5).

    Args:
        path: the json written by :func:`save_channel_index`.
        channels: the CLIP dense width of the model that will use it (checked when given).
        rho: when given, ``semantic`` / ``structural`` / ``rho`` of the returned record are
            recomputed with :func:`split_channels` from the stored scores.
        backbone: the open_clip model name of that model (checked when given).

    Returns:
        The validated record (index lists as lists of int, ``score`` as floats).

    Raises:
        DrsegInputError: missing/unreadable file, wrong format, or a width/backbone mismatch;
            the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise DrsegInputError(f"{p}: SPSD channel index file not found (run the spsd stage)")
    try:
        record = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DrsegInputError(f"{p}: not a readable JSON channel index file ({e})") from e
    return validate_channel_index(record, channels=channels, rho=rho, backbone=backbone,
                                  source=str(p))


def validate_channel_index(record: Any, channels: int | None = None, rho: float | None = None,
                           backbone: str | None = None, source: str = "channel index"
                           ) -> dict[str, Any]:
    """Check a channel index record (from a file or embedded in a model checkpoint).

    Args:
        record: the parsed record.
        channels: expected C (the model's CLIP dense width), or None.
        rho: re-split at this semantic ratio (Eq. 5), or None to keep the stored split.
        backbone: expected open_clip model name, or None.
        source: what to name in error messages (the file path).

    Returns:
        A clean copy of the record.
    """
    if not isinstance(record, Mapping):
        raise DrsegInputError(f"{source}: expected a JSON object, got {type(record).__name__}")
    if record.get("format") != INDEX_FORMAT:
        raise DrsegInputError(f"{source}: format is {record.get('format')!r}, expected "
                              f"{INDEX_FORMAT!r}")
    missing = [k for k in _INDEX_KEYS if k not in record]
    if missing:
        raise DrsegInputError(f"{source}: missing keys {missing}")
    C = record["channels"]
    if isinstance(C, bool) or not isinstance(C, int) or C < 1:
        raise DrsegInputError(f"{source}: 'channels' must be a positive integer, got {C!r}")
    if channels is not None and C != channels:
        raise DrsegInputError(f"{source}: computed for {C} CLIP channels (backbone "
                              f"{record['backbone']!r}) but the model has {channels}; rerun the "
                              f"spsd stage for this backbone")
    if backbone is not None and record["backbone"] != backbone:
        raise DrsegInputError(f"{source}: computed for backbone {record['backbone']!r}, the "
                              f"model uses {backbone!r}; rerun the spsd stage for this backbone")
    score = record["score"]
    if (not isinstance(score, list) or len(score) != C or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in score)):
        raise DrsegInputError(f"{source}: 'score' must be a list of {C} finite numbers")
    for name in ("order", "semantic", "structural"):
        lst = record[name]
        if not isinstance(lst, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in lst):
            raise DrsegInputError(f"{source}: '{name}' must be a list of integers")
    for key in ("rho", "lambda"):
        v = record[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise DrsegInputError(f"{source}: '{key}' must be a number in [0, 1], got {v!r}")
    score_t = torch.tensor(score, dtype=torch.float64)
    order, _ = split_channels(score_t, 1.0)
    if record["order"] != order.tolist():
        raise DrsegInputError(f"{source}: 'order' is not the channels sorted by descending "
                              f"'score' (ties by channel index)")
    stored_sem, stored_str = split_channels(score_t, record["rho"])
    if record["semantic"] != stored_sem.tolist() or record["structural"] != stored_str.tolist():
        raise DrsegInputError(f"{source}: 'semantic' / 'structural' are not the first "
                              f"floor(rho * C) = {len(stored_sem)} channels of 'order' and the "
                              f"rest (rho={record['rho']}, C={C})")
    out = {k: (list(record[k]) if isinstance(record[k], list) else record[k])
           for k in _INDEX_KEYS}
    out["score"] = [float(x) for x in score]
    if rho is not None:
        try:
            sem, struct = split_channels(score_t, rho)
        except DrsegInputError as e:
            raise DrsegInputError(f"{source}: cannot re-split: {e}") from e
        out.update(semantic=sem.tolist(), structural=struct.tolist(), rho=float(rho))
    return out


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (trailing newline) via a temp file and rename, so an
    interrupted run never leaves a half-written file."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
