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


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read params.yaml (relative to the working directory, as DVC runs stages)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p.resolve()}: params file not found (run from the project root)")
    with p.open() as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ValueError(f"{p}: expected a mapping at the top level")
    return params


def section(params: dict, name: str) -> dict:
    """One block of params.yaml, with a clear error when it is missing."""
    if name not in params or not isinstance(params[name], dict):
        raise KeyError(f"params.yaml: missing block '{name}'")
    return params[name]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
