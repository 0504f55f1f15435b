"""Rebuild the tables' inputs from the MLflow runs alone (``drseg report --from-mlflow``).

The evaluate step logs each suite summary into the variant's run (tag ``variant=<variant>``)
with :func:`drseg.tracking.log_metrics`, which flattens it: ``datasets.<dataset>.mIoU`` ...,
``source_val.mIoU`` ..., optionally under a prefix (``eval.datasets.<dataset>.mIoU``). The
summary's strings (``mode``, ``class_list_variant`` and the source dataset, ``train_dataset``)
are read from the run's tags, else from its params, under the same prefix or bare
(``evaluate.mode``, ``evaluate.class_list_variant``, ``source_val.dataset`` and
``train.dataset`` are accepted too). MLflow keeps metrics as 64-bit floats, so the numbers round-trip exactly and the
rendered tables are byte-identical to those built from the metrics files.

For each variant the newest finished run tagged with it that holds suite metrics is used.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drseg.errors import DrsegInputError
from drseg.reports.tables import VariantResult

_DATASET_KEY = re.compile(r"^(?:(?P<prefix>.*)\.)?datasets\.(?P<ds>.+)\.(?P<m>mIoU|mACC|fwIoU|pACC)$")
_SOURCE_VAL_KEY = re.compile(r"^(?:(?P<prefix>.*)\.)?source_val\.(?P<m>mIoU|mACC|fwIoU)$")


@dataclass(frozen=True)
class RunRef:
    """Where a variant's numbers live in MLflow (for links on the page)."""

    variant: str
    run_id: str
    run_name: str
    experiment_id: str

    def url(self, ui: str) -> str:
        """The run's page in an ``mlflow ui`` served at ``ui``."""
        return f"{ui.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def _string_field(run: Any, name: str, prefix: str, extra: Sequence[str] = ()) -> str | None:
    keys = ([f"{prefix}.{name}"] if prefix else []) + [name, *extra]
    for source in (run.data.tags, run.data.params):
        for k in keys:
            if source.get(k) not in (None, ""):
                return str(source[k])
    return None


def result_from_run(run: Any, variant: str) -> VariantResult | None:
    """A VariantResult from one MLflow run, or None when the run holds no suite metrics.

    Args:
        run: an ``mlflow.entities.Run``.
        variant: the variant it stands for.

    Raises:
        DrsegInputError: the run has suite metrics but lacks a field tables need.
    """
    origin = f"MLflow run {run.info.run_id} ({run.info.run_name})"
    metrics: Mapping[str, float] = run.data.metrics
    datasets: dict[str, dict[str, float]] = {}
    prefixes = set()
    for key in sorted(metrics):
        m = _DATASET_KEY.match(key)
        if m:
            prefixes.add(m["prefix"] or "")
            datasets.setdefault(m["ds"], {})[m["m"]] = float(metrics[key])
    if not datasets:
        return None
    if len(prefixes) > 1:
        raise DrsegInputError(f"{origin}: suite metrics under several prefixes {sorted(prefixes)}")
    prefix = prefixes.pop()
    for ds, vals in datasets.items():
        for k in ("mIoU", "mACC", "fwIoU"):
            if k not in vals:
                raise DrsegInputError(f"{origin}: metric datasets.{ds}.{k} missing")
    source_val = {}
    for key in sorted(metrics):
        m = _SOURCE_VAL_KEY.match(key)
        if m and (m["prefix"] or "") == prefix:
            source_val[m["m"]] = float(metrics[key])
    mode = _string_field(run, "mode", prefix, ("evaluate.mode",))
    clv = _string_field(run, "class_list_variant", prefix, ("evaluate.class_list_variant",))
    for name, value in (("mode", mode), ("class_list_variant", clv)):
        if value is None:
            raise DrsegInputError(f"{origin}: no tag or param '{name}' (needed for the captions)")
    source = _string_field(run, "train_dataset", prefix, ("source_val.dataset", "train.dataset"))
    return VariantResult(variant=variant, mode=mode, class_list_variant=clv, datasets=datasets,
                         source_dataset=source, source_val=source_val or None, origin=origin)


def load_results(variants: Sequence[str], tracking_uri: str,
                 experiment: str = "drseg") -> tuple[dict[str, VariantResult], dict[str, RunRef]]:
    """Per variant, the numbers of its newest finished run that holds suite metrics.

    Args:
        variants: the variant names the tables need.
        tracking_uri: the MLflow store (``drseg.tracking.tracking_uri()``).
        experiment: the MLflow experiment name.

    Returns:
        ``(results, runs)`` keyed by variant.

    Raises:
        DrsegInputError: the experiment does not exist or a variant has no such run.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise DrsegInputError(f"{tracking_uri}: no MLflow experiment '{experiment}'")
    results: dict[str, VariantResult] = {}
    runs: dict[str, RunRef] = {}
    for v in variants:
        found = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.variant = '{v}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC", "attributes.run_id ASC"], max_results=50)
        for run in found:
            r = result_from_run(run, v)
            if r is not None:
                results[v] = r
                runs[v] = RunRef(v, run.info.run_id, run.info.run_name or "", exp.experiment_id)
                break
        else:
            raise DrsegInputError(f"{tracking_uri}: no finished run tagged variant='{v}' with "
                                  f"suite metrics (datasets.<name>.mIoU) in experiment "
                                  f"'{experiment}'")
    return results, runs


def find_runs(variants: Sequence[str], tracking_uri: str,
              experiment: str = "drseg") -> dict[str, RunRef]:
    """Run references for the page's links; variants without a run (or no store) are left out.

    Args:
        variants: variant names.
        tracking_uri: the MLflow store.
        experiment: the experiment name.
    """
    if tracking_uri.startswith("sqlite:///"):
        db = tracking_uri[len("sqlite:///"):]
        if not os.path.isfile(db):  # never create a store just to look into it
            return {}
    out = {}
    for v in variants:
        try:
            out.update(load_results([v], tracking_uri, experiment)[1])
        except DrsegInputError:
            continue
    return out
