"""``python -m drseg report``: rebuild the report from the metrics files or from MLflow alone.

    python -m drseg report --from-mlflow --tables reports/tables_mlflow
    python -m drseg report --metrics reports/metrics --tables reports/tables --page reports/index.html

The table spec (which variants make which row) is the ``report`` block of a params file given
with ``--params`` (default ``params.yaml``, the file the DVC stage uses), resolved with its
``profile`` and ``overrides`` as the stages resolve it, so both paths build the same tables;
the numbers come from ``--metrics`` or from the MLflow store.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's options."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-mlflow", action="store_true",
                     help="read the numbers from the MLflow runs (tag variant=<variant>)")
    src.add_argument("--metrics", help="metrics root holding <variant>/summary.json")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: the project's sqlite store, or MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default="drseg", help="MLflow experiment name")
    p.add_argument("--params", default="params.yaml", help="params file with the report block")
    p.add_argument("--tables", required=True, help="output folder for the tables")
    p.add_argument("--figures", default=None, help="output folder for the metrics figures")
    p.add_argument("--page", default=None, help="HTML page to write")
    p.add_argument("--curves", default=None, help="loss CSV path pattern with {variant}")
    p.add_argument("--extra-figures", action="append",
                   help="folder (or .png) of figures to show on the page (repeatable)")
    p.add_argument("--plots", default=None, help="folder for dvc plots sources (class_iou.csv)")


def _read_params(path: str) -> dict:
    import yaml

    from drseg.errors import DrsegInputError

    p = Path(path)
    if not p.is_file():
        raise DrsegInputError(f"{p}: params file not found (pass --params)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DrsegInputError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise DrsegInputError(f"{p}: expected a mapping at the top level")
    from drseg.profiles import apply_profile

    return apply_profile(data)  # the same resolved params the DVC stages see


def run(args: argparse.Namespace) -> int:
    """Build the report; returns 0."""
    from drseg import tracking
    from drseg.reports.report import load_numbers, make_report, options_from_params
    
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opts = options_from_params(_read_params(args.params))
    uri = args.tracking_uri or tracking.tracking_uri()
    results, runs = load_numbers(opts, tracking_uri=uri, metrics_dir=args.metrics,
                                 from_mlflow=args.from_mlflow, experiment=args.experiment)
    written = make_report(results, opts, tables_dir=args.tables, figures_dir=args.figures,
                          page=args.page, metrics_dir=args.metrics, curves=args.curves,
                          extra_figures_dirs=args.extra_figures or (), plots_dir=args.plots,
                          runs=runs)
    for kind, paths in written.items():
        for p in paths:
            logging.getLogger("drseg.report").info("%s: %s", kind, p)
    return 0
