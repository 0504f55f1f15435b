"""Shared helpers of the thin DVC stage scripts: read params.yaml once, seed, set up logging."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python stages/x.py` puts stages/ on sys.path, not the root
    sys.path.insert(0, str(ROOT))

import drseg  # noqa: E402,F401  (sets HF_HUB_OFFLINE before anything else is imported)


def load_params(path: str | Path = "params.yaml", check_inputs: bool = True) -> dict:
    """Read params.yaml (relative to the working directory, as DVC runs stages), resolved.

    The ``profile`` param is applied here, once for every stage
    (:func:`drseg.profiles.apply_profile`: params.yaml blocks < the profile's values < the
    ``overrides`` block), so stages see the paper's values under a paper profile. Then the
    inputs from outside the repository (``weights.*`` files, ``prepare.archive_root`` of the
    real suite) are checked, so a missing file stops the first stage before any work.

    Args:
        path: the params file.
        check_inputs: run :func:`drseg.profiles.check_inputs` (default True).
    """
    from drseg.profiles import apply_profile
    from drseg.profiles import check_inputs as check

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p.resolve()}: params file not found (run from the project root)")
    with p.open() as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ValueError(f"{p}: expected a mapping at the top level")
    params = apply_profile(params)
    if check_inputs:
        check(params)
    return params


def clip_checkpoint(params: dict, cli_path: str | Path | None) -> str | None:
    """The CLIP weights a stage loads: ``model.clip_checkpoint`` when the resolved params set
    it (a paper profile routes ``weights.clip_checkpoint`` there), else the command-line path
    dvc.yaml names (the tiny CLIP of the pretrain stage)."""
    chosen = (params.get("model") or {}).get("clip_checkpoint") or cli_path
    return None if chosen is None else str(chosen)


def section(params: dict, name: str) -> dict:
    """One block of params.yaml, with a clear error when it is missing."""
    if name not in params or not isinstance(params[name], dict):
        raise KeyError(f"params.yaml: missing block '{name}'")
    return params[name]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
