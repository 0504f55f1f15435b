"""Checkpoints: atomic writes, training-state resume, and the trained-model file format.

Two kinds of file live in a run directory (``data/runs/<variant>/``):

- ``last.pt``: the training state (model, optimiser, scheduler, RNG states, iteration, loss
  history) written every ``checkpoint_every`` iterations; a killed run resumes from it.
- ``model_final.pt``: the trained model in the ``drseg-model/1`` format of DESIGN.md,
  ``{"format", "model_cfg", "state_dict", "channel_index", "iteration", "train_dataset"}``;
  everything needed to rebuild the model, so evaluation and prediction need no other file.

Every write goes to a temporary file in the same directory, is flushed and fsynced, and then
renamed over the target with ``os.replace`` (atomic on POSIX): a kill or a full disk in the
middle of a write leaves the previous file untouched.
"""
from __future__ import annotations

import errno
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drseg.atomic import atomic_open
from drseg.errors import DrsegInputError

MODEL_FORMAT = "drseg-model/1"
TRAIN_STATE_FORMAT = "drseg-train-state/1"

__all__ = [
    "MODEL_FORMAT", "TRAIN_STATE_FORMAT", "atomic_torch_save", "rng_state", "set_rng_state",
    "save_training_state", "load_training_state", "save_model_checkpoint",
    "load_model_checkpoint", "check_model_cfg", "unwrap",
]


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (full disk, permissions); the previous file is intact."""


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a partial file at ``path``.

    Args:
        obj: anything ``torch.save`` accepts.
        path: the target file; its directory is created.

    Returns:
        The target path.

    Raises:
        CheckpointWriteError: the write failed (e.g. ``ENOSPC``); the temporary file is removed
            and whatever was at ``path`` before is unchanged.
    """
    path = Path(path)
    try:  # the temporary is removed on any exception, KeyboardInterrupt too
        with atomic_open(path, "wb", fsync=True) as f:  # makes the dir, fsyncs it after
            torch.save(obj, f)
    except OSError as e:
        what = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        kept = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint"
        raise CheckpointWriteError(
            e.errno or errno.EIO, f"{path}: could not write checkpoint ({what}); {kept}") from e
    return path


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    """The states of every random generator a training step may draw from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_training_state(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    iteration: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the resume state atomically.

    Args:
        path: target file (``<run>/last.pt``).
        model: the model (wrappers are unwrapped).
        optimizer: its optimiser.
        scheduler: its learning-rate scheduler.
        iteration: number of completed iterations.
        extra: anything else to restore (loss history, fingerprint of the params).
    """
    state = {
        "format": TRAIN_STATE_FORMAT,
        "iteration": int(iteration),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(state, path)


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a resume state written by :func:`save_training_state`.

    Raises:
        DrsegInputError: the file is unreadable or not a drseg training state.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise DrsegInputError(f"{path}: not a readable training checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise DrsegInputError(f"{path}: not a drseg training state (format != {TRAIN_STATE_FORMAT})")
    return state


def save_model_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    model_cfg: Mapping[str, Any],
    iteration: int,
    train_dataset: str,
    channel_index: Mapping[str, Any] | None = None,
) -> Path:
    """Write the trained model in the ``drseg-model/1`` format (DESIGN.md), atomically.

    Args:
        path: target file.
        model: the trained model (wrappers are unwrapped); the full state dict is stored.
        model_cfg: the ``ModelConfig`` as a plain dict (``dataclasses.asdict``).
        iteration: iterations trained.
        train_dataset: name of the training dataset.
        channel_index: the SPSD channel index used (the parsed json), or None.
    """
    state_dict = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    obj = {
        "format": MODEL_FORMAT,
        "model_cfg": dict(model_cfg),
        "state_dict": state_dict,
        "channel_index": dict(channel_index) if channel_index is not None else None,
        "iteration": int(iteration),
        "train_dataset": str(train_dataset),
    }
    return atomic_torch_save(obj, path)


def check_model_cfg(path: str | Path, saved: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise if the model params of a checkpoint differ from the expected ones.

    Only keys present in ``expected`` are compared, so a caller may check a subset.

    Raises:
        DrsegInputError: naming the checkpoint and each differing key with both values.
    """
    diffs = []
    for k, v in expected.items():
        if k not in saved:
            diffs.append(f"{k}: missing in checkpoint, params say {v!r}")
        elif _norm(saved[k]) != _norm(v):
            diffs.append(f"{k}: checkpoint {saved[k]!r} != params {v!r}")
    if diffs:
        raise DrsegInputError(
            f"{path}: checkpoint does not match the model params: " + "; ".join(diffs))


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _norm(x) for k, x in v.items()}
    return v


def load_model_checkpoint(
    path: str | Path,
    expected_cfg: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Read a ``drseg-model/1`` checkpoint.

    Args:
        path: the checkpoint file.
        expected_cfg: model params the checkpoint must have been trained with (a subset of
            ``ModelConfig`` fields is fine); None skips the check.
        map_location: where tensors are loaded.

    Returns:
        The checkpoint dict (``format``, ``model_cfg``, ``state_dict``, ``channel_index``,
        ``iteration``, ``train_dataset``).

    Raises:
        DrsegInputError: the file is missing, unreadable, of another format, or was trained
            with other model params than ``expected_cfg`` (each differing key named).
    """
    path = Path(path)
    if not path.is_file():
        raise DrsegInputError(f"{path}: model checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise DrsegInputError(f"{path}: not a readable model checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DrsegInputError(f"{path}: not a drseg model checkpoint (format {fmt!r}, "
                              f"expected {MODEL_FORMAT!r})")
    for key in ("model_cfg", "state_dict", "iteration", "train_dataset"):
        if key not in ckpt:
            raise DrsegInputError(f"{path}: model checkpoint lacks '{key}'")
    if expected_cfg is not None:
        check_model_cfg(path, ckpt["model_cfg"], expected_cfg)
    return ckpt


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                            path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with a message naming the file and the bad keys."""
    own = unwrap(model).state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} != model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
        raise DrsegInputError(f"{path}: weights do not fit the model: " + "; ".join(parts))
    unwrap(model).load_state_dict(state_dict, strict=True)
