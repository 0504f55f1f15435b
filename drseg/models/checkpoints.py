"""Loading local weights into the model's frozen / pretrained parts.

* CLIP: :func:`drseg.models.clip.read_clip_state_dict` (OpenAI JIT ``.pt``, OpenAI and
  open_clip state dicts) through :func:`drseg.models.clip.load_open_clip`;
* structural prior (timm ViT): :func:`read_prior_state_dict` and :func:`load_prior_weights`
  -- timm/DINOv3 state dicts and DINO v1 training checkpoints (weights under ``teacher``,
  keys prefixed ``module.`` and/or ``backbone.``, as the RSIB checkpoint of GSNet/RSKT-Seg).

Every mismatch raises :class:`drseg.errors.DrsegInputError` naming the file and the keys
(:func:`check_state_dict`). No hub is ever contacted.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Union

import torch
from torch import nn

from drseg.errors import DrsegInputError

#: Keys under which training checkpoints keep the weights, tried in this order.
WRAPPER_KEYS = ("teacher", "model_ema", "model", "state_dict", "module")
#: Prefixes stripped from every key (DDP wrapper, DINO's MultiCropWrapper).
PREFIXES = ("module.", "backbone.")


def check_state_dict(model: nn.Module, state: dict, path: Union[str, Path], what: str) -> None:
    """Raise a clear error when ``state`` does not fit ``model`` exactly.

    Args:
        model: the module the state dict is meant for.
        state: the state dict.
        path: the file it came from (named in the message).
        what: a short label ("CLIP checkpoint", "prior checkpoint").

    Raises:
        DrsegInputError: naming missing keys, unexpected keys and shape mismatches.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def show(items: list) -> str:
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        raise DrsegInputError(f"{what} {path} does not match the architecture: "
                              + "; ".join(parts))


def strip_prefixes(state: dict, prefixes=PREFIXES) -> dict:
    """Remove leading ``module.`` / ``backbone.`` (in any combination) from every key."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def read_prior_state_dict(path: Union[str, Path]) -> dict:
    """Read a structural-prior checkpoint into a plain state dict.

    Unwraps ``teacher`` (DINO v1: the teacher is the model DINO evaluates), ``model_ema``,
    ``model``, ``state_dict``, ``module`` and strips ``module.`` / ``backbone.`` prefixes.

    Args:
        path: a ``.pth`` / ``.pt`` / ``.safetensors`` file.

    Returns:
        ``{name: tensor}``.

    Raises:
        DrsegInputError: missing or unreadable file, or no tensor state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise DrsegInputError(f"prior checkpoint {path}: file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise DrsegInputError(f"prior checkpoint {path}: cannot be read ({err})") from err
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise DrsegInputError(f"prior checkpoint {path}: holds no tensor state dict")
    return strip_prefixes(state)


def load_prior_weights(model: nn.Module, path: Union[str, Path]) -> None:
    """Load a local checkpoint into a timm ViT (strict, after timm's own key conversion).

    timm's ``checkpoint_filter_fn`` of the model's family converts original layouts (e.g. the
    DINOv3 release keys) and resamples absolute position embeddings to the model's grid.
    Keys of a projection head (``head.*``, e.g. DINO v1's DINOHead) are dropped when the
    model has no head.

    Args:
        model: the timm model (built with ``num_classes=0``).
        path: the checkpoint file.

    Raises:
        DrsegInputError: file problems or mismatched keys (named).
    """
    state = read_prior_state_dict(path)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as err:  # noqa: BLE001 -- a wrong layout fails inside timm
            raise DrsegInputError(f"prior checkpoint {path}: timm cannot convert it for "
                                  f"{type(model).__name__} ({err})") from err
    own = model.state_dict()
    if not any(k.startswith("head.") for k in own):
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    check_state_dict(model, state, path, "prior checkpoint")
    model.load_state_dict(state, strict=True)
