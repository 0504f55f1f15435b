"""The report: tables, figures and the page from the evaluated variants.

Entry points (``stages/report.py`` for DVC, ``python -m drseg report`` for people) turn params
into :class:`ReportOptions` with :func:`options_from_params` and call :func:`make_report`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drseg.errors import DrsegInputError
from drseg.reports import figures as F
from drseg.reports import html as H
from drseg.reports import tables as T

#: Swept labels of Tables 5 and 6, resolved per row from params (see :func:`resolve_labels`).
SWEPT_LABELS = {"table5": ("rho", ("model.rho", "spsd.rho")), "table6": ("k", ("model.k",))}


@dataclass(frozen=True)
class ReportOptions:
    """Plain values of the ``report:`` params block (docs/reports.md).

    Args:
        tables: ``{table_name: rows}``.
        provenance: ``synthetic`` | ``real``.
        decimals: printing precision.
        datasets: Table 1 columns (None: source first, then by name).
        source_dataset: the training dataset if the summaries do not name it.
        ablation_datasets: list or ``"targets"``.
        label_defaults: ``{table: {label key: value}}`` for rows that leave a label out.
        figure_variant: the variant whose per-class IoU is drawn.
        mlflow_ui: the MLflow UI address for the run links.
        shown_params: params blocks printed on the page.
    """

    tables: Mapping[str, Any]
    provenance: str = "synthetic"
    decimals: int = 2
    datasets: Sequence[str] | None = None
    source_dataset: str | None = None
    ablation_datasets: Sequence[str] | str = "targets"
    label_defaults: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    figure_variant: str = "full"
    mlflow_ui: str = "http://127.0.0.1:5000"
    shown_params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return T.table_variants(self.tables)


def _lookup(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _label_text(value: Any) -> str:
    return str(value)


def resolve_labels(params: Mapping[str, Any], tables: Mapping[str, Any]) -> dict[str, Any]:
    """Fill and check the swept labels of Tables 5 and 6 (rho, k) from params.

    A row's value is the variant's override (``variants.<variant>.rho`` / ``.k``, the block
    the train stage applies), else the model block's (``model.rho``, ``model.k``), else for rho
    the SPSD split (``spsd.rho``). A label written in the row must agree with a value found
    so; a row with neither is an error. So a label never claims a setting the run did not use.

    Args:
        params: the whole parsed params.
        tables: ``report.tables``.

    Returns:
        A copy of ``tables`` with the labels filled in (as printed strings).

    Raises:
        DrsegInputError: a label disagrees with params, or none can be found.
    """
    out = {name: [dict(r) for r in rows] for name, rows in tables.items()}
    variants = params.get("variants") or {}
    for name, (key, fallbacks) in SWEPT_LABELS.items():
        for i, row in enumerate(out.get(name, [])):
            where = f"report.tables.{name}[{i}].{key}"
            over = variants.get(row["variant"]) if isinstance(variants, Mapping) else None
            found, src = None, None
            if isinstance(over, Mapping) and over.get(key) is not None:
                found, src = over[key], f"variants.{row['variant']}.{key}"
            else:
                for fb in fallbacks:
                    if _lookup(params, fb) is not None:
                        found, src = _lookup(params, fb), fb
                        break
            given = row.get(key)
            if given is None:
                if found is None:
                    raise DrsegInputError(
                        f"{where}: no label, and params set none (variants.{row['variant']}."
                        f"{key} or {' / '.join(fallbacks)})")
                row[key] = _label_text(found)
            elif found is not None and not _same(given, found):
                raise DrsegInputError(f"{where}: label {given!r} disagrees with {src} = {found!r}")
            else:
                row[key] = _label_text(given)
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def options_from_params(params: Mapping[str, Any]) -> ReportOptions:
    """ReportOptions from the parsed params (the ``report`` block, plus ``model.preset`` for
    Table 1's backbone and the rho / k of each variant for Tables 5 and 6, see
    :func:`resolve_labels`).

    Args:
        params: the whole parsed params.yaml.

    Raises:
        DrsegInputError: a key of the ``report`` block is missing or of the wrong kind.
    """
    rep = params.get("report")
    if not isinstance(rep, Mapping):
        raise DrsegInputError("params.yaml: missing block 'report'")
    known = {"provenance", "decimals", "datasets", "source_dataset", "ablation_datasets",
             "backbone", "figure_variant", "mlflow_ui", "tables", "figures"}
    unknown = sorted(set(rep) - known)
    if unknown:
        raise DrsegInputError(f"params.yaml: unknown key(s) report.{', report.'.join(unknown)}")
    tables = rep.get("tables")
    if not isinstance(tables, Mapping) or not tables:
        raise DrsegInputError("params.yaml: report.tables must map table names to rows")
    T.table_variants(tables)  # validates the rows
    tables = resolve_labels(params, tables)
    defaults: dict[str, dict[str, str]] = {"table1": {}}
    backbone = rep.get("backbone") or _lookup(params, "model.preset")
    if backbone is not None:
        defaults["table1"]["backbone"] = str(backbone)
    datasets = rep.get("datasets")
    if datasets is not None and (not isinstance(datasets, list) or not datasets):
        raise DrsegInputError("params.yaml: report.datasets must be null or a non-empty list")
    abl = rep.get("ablation_datasets", "targets")
    if not (abl == "targets" or (isinstance(abl, list) and abl)):
        raise DrsegInputError("params.yaml: report.ablation_datasets must be 'targets' or a "
                              f"non-empty list, got {abl!r}")
    shown = {k: params[k] for k in ("prepare", "spsd", "model", "variants", "train", "evaluate",
                                    "report") if k in params}
    return ReportOptions(
        tables=tables, provenance=str(rep.get("provenance", "synthetic")),
        decimals=rep.get("decimals", 2), datasets=datasets,
        source_dataset=rep.get("source_dataset"), ablation_datasets=abl,
        label_defaults=defaults, figure_variant=str(rep.get("figure_variant", "full")),
        mlflow_ui=str(rep.get("mlflow_ui", "http://127.0.0.1:5000")), shown_params=shown)


def build_all_tables(results: Mapping[str, T.VariantResult], opts: ReportOptions) -> list[T.Table]:
    """The tables of ``opts`` from the variants' numbers (either source)."""
    return T.build_tables(results, opts.tables, datasets=opts.datasets,
                          ablation_datasets=opts.ablation_datasets,
                          source_dataset=opts.source_dataset, provenance=opts.provenance,
                          decimals=opts.decimals, defaults=opts.label_defaults)


def load_numbers(opts: ReportOptions, *, tracking_uri: str, metrics_dir: str | Path | None = None,
                 from_mlflow: bool = False, experiment: str = "drseg",
                 ) -> tuple[dict[str, T.VariantResult], dict[str, Any]]:
    """The variants' numbers from the metrics files (``metrics_dir``) or from MLflow, and the
    MLflow run of each variant (for links; those without a run are left out).

    Args:
        opts: report options (which variants).
        tracking_uri: the MLflow store.
        metrics_dir: the metrics root (when not ``from_mlflow``).
        from_mlflow: read the numbers from the MLflow runs alone.
        experiment: MLflow experiment name.
    """
    from drseg.reports import mlflow_source

    if from_mlflow:
        return mlflow_source.load_results(opts.variants, tracking_uri, experiment)
    if metrics_dir is None:
        raise DrsegInputError("report: give a metrics folder or read from MLflow")
    results = T.load_results(metrics_dir, opts.variants)
    return results, mlflow_source.find_runs(opts.variants, tracking_uri, experiment)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def make_report(results: Mapping[str, T.VariantResult], opts: ReportOptions, *,
                tables_dir: str | Path, figures_dir: str | Path | None = None,
                page: str | Path | None = None, metrics_dir: str | Path | None = None,
                curves: str | None = None,
                extra_figures_dirs: Sequence[str | Path] = (),
                plots_dir: str | Path | None = None,
                runs: Mapping[str, Any] | None = None) -> dict[str, list[Path]]:
    """Write the tables, the metrics figures and the page.

    Args:
        results: numbers per variant.
        opts: report options.
        tables_dir: where ``<table>.tex/.md/.csv`` go.
        figures_dir: where the training-curve and per-class-IoU figures go (None: none).
        page: the HTML page path (None: no page).
        metrics_dir: per-dataset metrics (per-class IoU figure); None skips that figure.
        curves: a path pattern with ``{variant}`` for the train stage's loss CSVs; None skips.
        extra_figures_dirs: folders (or single ``.png`` files) of figures made elsewhere (the
            ``figures`` stage: Fig. 5 and Fig. 7, the SPSD figures, the dataset samples) to
            show on the page; ``<stem>.png`` with an optional ``<stem>.pdf`` and ``<stem>.txt``
            caption.
        plots_dir: where ``class_iou.csv`` (a ``dvc plots`` source: per-class IoU of
            ``figure_variant``) goes; None: not written.
        runs: ``{variant: RunRef}`` for the page's MLflow links (written to a side script).

    Returns:
        ``{"tables": [...], "figures": [...], "page": [...]}`` written paths.
    """
    tables = build_all_tables(results, opts)
    # read every input before writing anything, so bad input leaves the old outputs in place
    loaded = ({v: F.read_loss_curve(Path(curves.format(variant=v))) for v in opts.variants}
              if figures_dir is not None and curves else {})
    per = None
    if metrics_dir is not None and (figures_dir is not None or plots_dir is not None):
        if opts.figure_variant not in results:
            raise DrsegInputError(f"report.figure_variant: '{opts.figure_variant}' is not a "
                                  f"variant of the tables")
        per = F.read_class_iou(metrics_dir, opts.figure_variant,
                               T.dataset_order(results, opts.datasets, opts.source_dataset))
    for extra in extra_figures_dirs:
        if not (Path(extra).is_dir() or (Path(extra).is_file() and Path(extra).suffix == ".png")):
            raise DrsegInputError(f"{extra}: not a figures folder or a .png file")
    written: dict[str, list[Path]] = {"tables": T.write_tables(tables, tables_dir),
                                      "figures": [], "page": []}
    entries: list[H.FigureEntry] = []
    label = ("synthetic benchmark, not the paper's numbers" if opts.provenance == "synthetic"
             else "real benchmarks")
    page_dir = Path(page).parent if page else Path(".")
    if figures_dir is not None:
        fdir = Path(figures_dir)
        if loaded:
            stem = fdir / "training_curves"
            written["figures"] += F.plot_training_curves(
                loaded, stem, title=f"Training loss ({label})", highlight=opts.figure_variant)
            entries.append(H.FigureEntry("Training curves", _rel(stem.with_suffix(".png"), page_dir),
                                         _rel(stem.with_suffix(".pdf"), page_dir),
                                         "Training loss per iteration of every variant."))
        if per is not None:
            v = opts.figure_variant
            stem = fdir / f"class_iou_{v}"
            written["figures"] += F.plot_class_iou(per, stem, title=f"Per-class IoU of '{v}' ({label})")
            entries.append(H.FigureEntry(f"Per-class IoU ({v})", _rel(stem.with_suffix(".png"), page_dir),
                                         _rel(stem.with_suffix(".pdf"), page_dir),
                                         "IoU per class and dataset; n/a: no ground truth."))
    if plots_dir is not None and per is not None:
        written["figures"].append(F.write_class_iou_csv(per, Path(plots_dir) / "class_iou.csv"))
    shown = {Path(p).resolve() for p in written["figures"]}
    for extra in extra_figures_dirs:
        extra = Path(extra)
        pngs = [extra] if extra.is_file() else sorted(extra.rglob("*.png"))
        for png in pngs:
            if png.resolve() in shown:  # already on the page
                continue
            shown.add(png.resolve())
            pdf = png.with_suffix(".pdf")
            cap = png.with_suffix(".txt")
            entries.append(H.FigureEntry(
                png.stem.replace("_", " "), _rel(png, page_dir),
                _rel(pdf, page_dir) if pdf.is_file() else None,
                cap.read_text(encoding="utf-8").strip() if cap.is_file() else ""))
    if page is not None:
        src = {t.name: {ext: _rel(Path(tables_dir) / f"{t.name}.{ext}", page_dir)
                        for ext in ("tex", "md", "csv")} for t in tables}
        text = H.render_page(
            title="DR-Seg reproduction report", provenance=opts.provenance,
            tables=[(t, src[t.name]) for t in tables], figures=entries,
            params=opts.shown_params, variants=opts.variants)
        written["page"].append(H.write_page(page, text))
        written["page"].append(H.write_runs_script(page_dir / H.RUNS_SCRIPT, runs or {},
                                                   opts.mlflow_ui))
    return written
