"""DVC stage `report`: Tables 1-6 (LaTeX, Markdown, CSV), metrics figures and reports/index.html.

    python stages/report.py --metrics reports/metrics --tables reports/tables \
        --figures reports/figures --page reports/index.html \
        [--curves 'reports/train/{variant}/loss.csv'] [--extra-figures reports/figures/model] \
        [--from-mlflow]

Reads the `report` block of params.yaml (plus model.preset, spsd.rho and the model's k for
row labels). With --from-mlflow the numbers come from the MLflow runs instead of the metrics
files; the tables are byte-identical.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_params, setup_logging  # noqa: E402  (puts the root on sys.path)

from drseg import tracking  # noqa: E402
from drseg.reports.report import load_numbers, make_report, options_from_params  # noqa: E402

log = logging.getLogger("drseg.report")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", help="metrics root: <metrics>/<variant>/summary.json")
    ap.add_argument("--tables", required=True, help="output folder of the tables")
    ap.add_argument("--figures", help="output folder of the metrics figures")
    ap.add_argument("--page", help="the HTML page to write")
    ap.add_argument("--curves", help="loss CSV path pattern with {variant}")
    ap.add_argument("--extra-figures", action="append",
                    help="folder (or .png) of figures made by other stages, shown on the page (repeatable)")
    ap.add_argument("--plots", help="folder for dvc plots sources (class_iou.csv)")
    ap.add_argument("--from-mlflow", action="store_true", help="read the numbers from MLflow")
    ap.add_argument("--params", default="params.yaml")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    opts = options_from_params(load_params(args.params, check_inputs=False))
    uri = tracking.tracking_uri()
    results, runs = load_numbers(opts, tracking_uri=uri, metrics_dir=args.metrics,
                                 from_mlflow=args.from_mlflow)
    written = make_report(results, opts, tables_dir=args.tables, figures_dir=args.figures,
                          page=args.page, metrics_dir=args.metrics, curves=args.curves,
                          extra_figures_dirs=args.extra_figures or (), plots_dir=args.plots,
                          runs=runs)
    for kind, paths in written.items():
        log.info("%s: %d files (%s)", kind, len(paths), ", ".join(sorted({str(p.parent) for p in paths})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
