"""MLflow tracking: one sqlite store at an absolute path in the project root.

Queued DVC experiments (``dvc exp run --queue`` + ``dvc queue start``) execute in temporary
copies of the repository under ``<root>/.dvc/tmp/exps/``. A relative store path would put their
runs in those copies, which DVC deletes; :func:`project_root` maps such a workspace back to the
project that owns it, so every run lands in ``<root>/mlflow.db``.

``MLFLOW_TRACKING_URI`` (MLflow's own variable) overrides the default store when set.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

EXPERIMENT = "drseg"
_EXPS_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def project_root(start: str | Path | None = None) -> Path:
    """The project root: the part of ``start`` (default: cwd) before ``.dvc/tmp/exps/``, if
    inside a DVC temporary workspace, else the nearest parent holding ``dvc.yaml``, else
    ``start`` itself."""
    p = Path(start or os.getcwd()).resolve()
    s = str(p) + os.sep
    if _EXPS_MARKER in s:
        return Path(s.split(_EXPS_MARKER, 1)[0])
    for q in (p, *p.parents):
        if (q / "dvc.yaml").is_file():
            return q
    return p


def tracking_uri(root: str | Path | None = None) -> str:
    """``sqlite:///<abs root>/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` is set."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    r = project_root(root)
    return f"sqlite:///{(r / 'mlflow.db').as_posix()}"


def artifact_location(root: str | Path | None = None) -> str:
    return (project_root(root) / "mlartifacts").resolve().as_uri()


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": "[1, 2]"}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def configured_mlflow(root: str | Path | None = None):
    """The ``mlflow`` module pointed at the project's store and experiment (created when
    missing), for callers that search or reopen runs themselves."""
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(root))
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(EXPERIMENT) is None:
        try:
            client.create_experiment(EXPERIMENT, artifact_location=artifact_location(root))
        except Exception:  # created meanwhile by a concurrent stage
            pass
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def run_name(stage: str, variant: str | None = None) -> str:
    """Run names say stage and variant: ``train@full``, ``spsd``."""
    return f"{stage}@{variant}" if variant else stage


@contextlib.contextmanager
def start_run(
    stage: str,
    variant: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    root: str | Path | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    """Start (or resume, with ``run_id``) a run named after stage and variant; params are
    logged flattened (``train.lr``), values longer than MLflow's limit truncated."""
    mlflow = configured_mlflow(root)
    all_tags = {"stage": stage, "variant": variant or ""}
    all_tags.update(tags or {})
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name(stage, variant),
                          tags=all_tags) as run:
        if params:
            flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
            items = list(flat.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i:i + 100]))
        yield run


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
    """Log the finite numeric leaves of ``metrics`` (nested dicts flattened, lists skipped)."""
    import mlflow

    flat = flatten(metrics, prefix)
    clean = {}
    for k, v in flat.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            clean[_metric_key(k)] = float(v)
    if clean:
        mlflow.log_metrics(clean, step=step)


def _metric_key(k: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / : only
    return "".join(c if (c.isalnum() or c in "_-. /:") else "_" for c in k)
