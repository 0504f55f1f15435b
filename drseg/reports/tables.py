"""The paper's tables (DR-Seg, section 4, Tables 1-6) built from evaluation summaries.

One table model, three renderings of the same numbers: LaTeX (booktabs), Markdown and CSV.

    results = load_results(metrics_dir, variants)           # or drseg.reports.mlflow_source
    tables = build_tables(results, spec, ...)                 # list[Table]
    write_tables(tables, out_dir)                             # <name>.tex / .md / .csv

Emphasis (``best`` bold, ``second`` underlined, as in the paper) is decided per section and
per column on the numbers *as printed* (rounded to ``decimals``), higher is better: every row
whose printed value equals the best printed value is bold, every row equal to the next lower
distinct printed value is underlined. So ties share the mark, and a tie for best leaves the
next distinct value as "second". A column whose rows all print the same value is all bold and
has no second. A column with a single row is bold. Missing values (``None``) print as ``--``
and are never marked.

Nothing here reads params.yaml, DVC or MLflow: the caller passes plain values.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from drseg.atomic import atomic_write_text
from drseg.errors import DrsegInputError

METRICS = ("mIoU", "mACC", "fwIoU", "pACC")

PROVENANCE_TEXT = {
    "synthetic": ("Synthetic-benchmark results from the drseg embedded default (procedural "
                  "aerial suite, tiny models, CPU); not the paper's numbers."),
    "real": "Results on the real remote-sensing benchmarks.",
}


# --------------------------------------------------------------------------------------------
# Inputs: one evaluated variant


@dataclass(frozen=True)
class VariantResult:
    """The numbers of one evaluated variant, whatever the source (metrics files or MLflow).

    Args:
        variant: variant name (``full``, ``rho0.3`` ...).
        mode: evaluation mode (``noslide`` | ``slide``).
        class_list_variant: class-list variant of the catalog (``rskt-v1`` ...).
        datasets: ``{dataset: {"mIoU", "mACC", "fwIoU", "pACC"}}`` in percent.
        source_dataset: the training dataset, when known.
        source_val: the source dataset's held-out val split metrics, when evaluated.
        origin: where the numbers came from (a path or an MLflow run), for error messages.
    """

    variant: str
    mode: str
    class_list_variant: str
    datasets: Mapping[str, Mapping[str, float]]
    source_dataset: str | None = None
    source_val: Mapping[str, float] | None = None
    origin: str = ""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DrsegInputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def result_from_summary(summary: Mapping[str, Any], origin: str) -> VariantResult:
    """Check a suite summary (DESIGN.md "Shared formats") and turn it into a VariantResult.

    Args:
        summary: the parsed ``summary.json``.
        origin: its path (named in error messages).
    """
    if not isinstance(summary, Mapping):
        raise DrsegInputError(f"{origin}: expected a JSON object")
    for key in ("variant", "mode", "class_list_variant", "datasets"):
        if key not in summary:
            raise DrsegInputError(f"{origin}: missing key '{key}'")
    datasets = summary["datasets"]
    if not isinstance(datasets, Mapping) or not datasets:
        raise DrsegInputError(f"{origin}: 'datasets' must be a non-empty object")
    clean: dict[str, dict[str, float]] = {}
    for name, m in datasets.items():
        if not isinstance(m, Mapping):
            raise DrsegInputError(f"{origin}: datasets.{name} must be an object")
        clean[str(name)] = {}
        for k in ("mIoU", "mACC", "fwIoU"):
            if k not in m:
                raise DrsegInputError(f"{origin}: datasets.{name} has no '{k}'")
            clean[str(name)][k] = _number(m[k], f"{origin}: datasets.{name}.{k}")
        if m.get("pACC") is not None:
            clean[str(name)]["pACC"] = _number(m["pACC"], f"{origin}: datasets.{name}.pACC")
    source_val = None
    source = summary.get("train_dataset")
    sv = summary.get("source_val")
    if isinstance(sv, Mapping) and sv:
        source = source or sv.get("dataset")
        source_val = {k: _number(sv[k], f"{origin}: source_val.{k}")
                      for k in ("mIoU", "mACC", "fwIoU") if sv.get(k) is not None}
        source_val = source_val or None
    clv = summary["class_list_variant"]
    if isinstance(clv, (list, tuple)):  # datasets of several class-list variants
        clv = ", ".join(str(c) for c in clv)
    return VariantResult(
        variant=str(summary["variant"]), mode=str(summary["mode"]),
        class_list_variant=str(clv), datasets=clean,
        source_dataset=str(source) if source else None, source_val=source_val, origin=origin)


def load_results(metrics_dir: str | Path, variants: Sequence[str]) -> dict[str, VariantResult]:
    """Read ``<metrics_dir>/<variant>/summary.json`` for every variant.

    Args:
        metrics_dir: the metrics root (``reports/metrics``).
        variants: variant names to read.

    Raises:
        DrsegInputError: a summary is missing, unreadable, malformed or names another variant.
    """
    out: dict[str, VariantResult] = {}
    for v in variants:
        path = Path(metrics_dir) / v / "summary.json"
        if not path.is_file():
            raise DrsegInputError(f"{path}: summary of variant '{v}' not found (evaluate it first)")
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DrsegInputError(f"{path}: unreadable summary ({e})") from e
        r = result_from_summary(summary, str(path))
        if r.variant != v:
            raise DrsegInputError(f"{path}: holds variant '{r.variant}', expected '{v}'")
        out[v] = r
    return out


# --------------------------------------------------------------------------------------------
# The table model


@dataclass(frozen=True)
class Column:
    """A value column: ``header`` under an optional spanning ``group`` (a dataset name)."""

    header: str
    group: str | None = None


@dataclass(frozen=True)
class Row:
    """Label cells (str, or bool for a check-mark column) and values (None = missing)."""

    labels: tuple[str | bool, ...]
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Section:
    title: str | None
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Table:
    """One table. ``name`` is the file stem (``table1``)."""

    name: str
    title: str
    caption: str
    label_headers: tuple[str, ...]
    columns: tuple[Column, ...]
    sections: tuple[Section, ...]
    decimals: int = 2
    wide: bool = False
    notes: tuple[str, ...] = field(default=())


def fmt(value: float | None, decimals: int) -> str:
    """The printed form of a value (``--`` when missing)."""
    if value is None:
        return "--"
    s = f"{value:.{decimals}f}"
    return "0." + "0" * decimals if s.startswith("-") and float(s) == 0 else s


def emphasis(values: Sequence[float | None], decimals: int) -> list[str]:
    """``"best"`` / ``"second"`` / ``""`` for each value of one column (higher is better).

    Decided on the printed (rounded) values; ties share the mark (see the module docstring).

    Args:
        values: the column's values, None for missing.
        decimals: printing precision.
    """
    printed = [Decimal(fmt(v, decimals)) if v is not None else None for v in values]
    distinct = sorted({p for p in printed if p is not None}, reverse=True)
    best = distinct[0] if distinct else None
    second = distinct[1] if len(distinct) > 1 else None
    out = []
    for p in printed:
        out.append("best" if p is not None and p == best
                   else "second" if p is not None and p == second else "")
    return out


def table_emphasis(table: Table) -> list[list[list[str]]]:
    """Emphasis per section, row and column, ranked within each section."""
    out = []
    for sec in table.sections:
        cols = [emphasis([r.values[j] for r in sec.rows], table.decimals)
                for j in range(len(table.columns))]
        out.append([[cols[j][i] for j in range(len(table.columns))] for i in range(len(sec.rows))])
    return out


# --------------------------------------------------------------------------------------------
# Building the six tables


@dataclass(frozen=True)
class Layout:
    """A table layout of the paper: its title and label columns (key, header, is_check)."""

    title: str
    labels: tuple[tuple[str, str, bool], ...]
    per_dataset: bool = False


LAYOUTS: dict[str, Layout] = {
    "table1": Layout("Comparison with baselines (cf. paper Table 1)",
                     (("method", "Method", False), ("backbone", "Backbone", False)),
                     per_dataset=True),
    "table2": Layout("Effectiveness of the proposed components (cf. paper Table 2)",
                     (("pdgr", "PDGR", True), ("spsd", "SPSD", True), ("ugaf", "UGAF", True))),
    "table3": Layout("Impact of structural priors (cf. paper Table 3)",
                     (("method", "Method", False), ("prior", "Prior", False))),
    "table4": Layout("Comparison of fusion strategies (cf. paper Table 4)",
                     (("fusion", "Fusion", False),)),
    "table5": Layout(r"Effect of semantic ratio $\rho$ (cf. paper Table 5)",
                     (("rho", r"$\rho$", False),)),
    "table6": Layout("Effect of graph sparsity parameter $k$ (cf. paper Table 6)",
                     (("k", "Top-$k$", False),)),
}

ABLATION_METRICS = (("mIoU", "m-mIoU"), ("fwIoU", "m-fwIoU"), ("mACC", "m-mACC"))


def table_variants(spec: Mapping[str, Any]) -> list[str]:
    """Every variant a table spec names, in first-use order (what the report stage reads).

    Args:
        spec: ``{table_name: [row, ...]}``, each row a mapping with a ``variant`` key.
    """
    seen: list[str] = []
    for name, rows in spec.items():
        for row in _rows_of(name, rows):
            if row["variant"] not in seen:
                seen.append(row["variant"])
    return seen


def _rows_of(name: str, rows: Any) -> list[Mapping[str, Any]]:
    where = f"report.tables.{name}"
    if name not in LAYOUTS:
        raise DrsegInputError(f"{where}: unknown table (known: {', '.join(LAYOUTS)})")
    if not isinstance(rows, Sequence) or isinstance(rows, str) or not rows:
        raise DrsegInputError(f"{where}: expected a non-empty list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("variant"), str):
            raise DrsegInputError(f"{where}[{i}]: expected a mapping with a 'variant' name")
    return list(rows)


def dataset_order(results: Mapping[str, VariantResult], datasets: Sequence[str] | None,
                  source_dataset: str | None = None) -> list[str]:
    """The columns of Table 1: ``datasets`` if given, else the source first, then the others
    sorted by name (so metrics files and MLflow, which has no order, agree)."""
    if datasets:
        return list(datasets)
    names = sorted({d for r in results.values() for d in r.datasets})
    source = _source(results, source_dataset)
    return ([source] if source in names else []) + [d for d in names if d != source]


def _source(results: Mapping[str, VariantResult], given: str | None = None) -> str | None:
    """The training dataset: the summaries' (all must agree), else ``given``
    (``report.source_dataset``), which must agree with them when both are known."""
    sources = {r.source_dataset for r in results.values() if r.source_dataset}
    if len(sources) > 1:
        raise DrsegInputError("variants were trained on different datasets: "
                              + ", ".join(f"{r.variant}: {r.source_dataset}"
                                          for r in results.values() if r.source_dataset))
    found = next(iter(sources), None)
    if given and found and given != found:
        raise DrsegInputError(f"report.source_dataset: {given!r}, but the summaries say the "
                              f"variants were trained on {found!r}")
    return found or given


def ablation_set(results: Mapping[str, VariantResult], ablation_datasets: Sequence[str] | str,
                 source_dataset: str | None = None) -> list[str]:
    """The datasets the ablation tables average over.

    Args:
        results: the variants' numbers.
        ablation_datasets: a list of names, or ``"targets"``: every evaluated dataset but the
            source (paper: Potsdam, VDD, UAVid, UDD5).
        source_dataset: the source, when the summaries do not say it.
    """
    if isinstance(ablation_datasets, str):
        if ablation_datasets != "targets":
            raise DrsegInputError(f"report.ablation_datasets: expected a list or 'targets', "
                                  f"got {ablation_datasets!r}")
        source = _source(results, source_dataset)
        if not source:
            raise DrsegInputError("report.ablation_datasets: 'targets' needs the source dataset; "
                                  "set report.source_dataset (the summaries do not name it)")
        names = sorted({d for r in results.values() for d in r.datasets} - {source})
        if not names:
            raise DrsegInputError("report.ablation_datasets: no target dataset was evaluated")
        return names
    if not ablation_datasets:
        raise DrsegInputError("report.ablation_datasets: empty list")
    return [str(d) for d in ablation_datasets]


def _metric(r: VariantResult, dataset: str, key: str) -> float:
    if dataset not in r.datasets:
        raise DrsegInputError(f"{r.origin}: variant '{r.variant}' has no results for dataset "
                              f"'{dataset}' (has: {', '.join(r.datasets)})")
    return r.datasets[dataset][key]


def mean_metric(r: VariantResult, datasets: Sequence[str], key: str) -> float:
    """The paper's m-<metric>: the plain mean of a metric over datasets."""
    vals = [_metric(r, d, key) for d in datasets]
    return math.fsum(vals) / len(vals)


def _consistent(results: Sequence[VariantResult], what: str) -> str:
    values = {getattr(r, what) for r in results}
    if len(values) > 1:
        raise DrsegInputError(f"tables mix {what.replace('_', ' ')}s: "
                              + ", ".join(f"{r.variant}: {getattr(r, what)}" for r in results))
    return values.pop()


def _caption(title: str, provenance: str, scope: str, results: Sequence[VariantResult],
             source: str | None) -> str:
    if provenance not in PROVENANCE_TEXT:
        raise DrsegInputError(f"report.provenance: expected one of {list(PROVENANCE_TEXT)}, "
                              f"got {provenance!r}")
    clv = _consistent(results, "class_list_variant")
    mode = _consistent(results, "mode")
    trained = f"Trained on {source}; " if source else ""
    return (f"{title}. {PROVENANCE_TEXT[provenance]} {trained}{scope} "
            f"Class lists: {clv}; evaluation mode: {mode}. Best in bold, second best "
            f"underlined (tied printed values share the mark).")


def _label_cell(row: Mapping[str, Any], key: str, is_check: bool, where: str,
                default: str | None) -> str | bool:
    value = row.get(key)
    if value is None:  # left out or null: the default model's value
        value = default
    if is_check:
        if not isinstance(value, bool):
            raise DrsegInputError(f"{where}.{key}: expected true/false, got {value!r}")
        return value
    if value is None:
        raise DrsegInputError(f"{where}.{key}: missing label (set it in the row, or the default "
                              f"model's value in params for rows of the default model)")
    return str(value)


def build_table(name: str, rows: Sequence[Mapping[str, Any]],
                results: Mapping[str, VariantResult], *, datasets: Sequence[str],
                ablation_datasets: Sequence[str], provenance: str, decimals: int = 2,
                defaults: Mapping[str, str] | None = None,
                source_dataset: str | None = None) -> Table:
    """One table of the paper from its rows and the variants' numbers.

    Args:
        name: ``table1`` ... ``table6`` (see LAYOUTS).
        rows: the rows: ``{"variant": v, <label key>: label, "section": title?}``.
        results: numbers per variant.
        datasets: Table 1's dataset columns, in order.
        ablation_datasets: datasets the ablation tables (2-6) average over.
        provenance: ``synthetic`` | ``real`` (caption wording).
        decimals: printing precision.
        defaults: label values for keys a row leaves out or sets to null (the backbone).
        source_dataset: the training dataset when the summaries do not name it.
    """
    layout = LAYOUTS[name]
    rows = _rows_of(name, rows)
    defaults = dict(defaults or {})
    missing = [r["variant"] for r in rows if r["variant"] not in results]
    if missing:
        raise DrsegInputError(f"report.tables.{name}: no results for variant(s) {missing}")
    used = [results[r["variant"]] for r in rows]
    source = _source({r.variant: r for r in used}, source_dataset)
    sections: list[tuple[str | None, list[Row]]] = []
    if layout.per_dataset:
        columns = [Column(m, d) for d in datasets for m in ("mIoU", "mACC")]
        columns += [Column("m-mIoU"), Column("m-mACC")]
        with_val = source is not None and all(r.source_val for r in used)
        if with_val:
            columns += [Column(m, f"{source} (val)") for m in ("mIoU", "mACC")]
    else:
        columns = [Column(h) for _, h in ABLATION_METRICS]
    for i, row in enumerate(rows):
        where = f"report.tables.{name}[{i}]"
        r = results[row["variant"]]
        labels = tuple(_label_cell(row, k, chk, where, defaults.get(k))
                       for k, _, chk in layout.labels)
        if layout.per_dataset:
            vals = [_metric(r, d, m) for d in datasets for m in ("mIoU", "mACC")]
            vals += [mean_metric(r, datasets, "mIoU"), mean_metric(r, datasets, "mACC")]
            if with_val:
                vals += [r.source_val.get("mIoU"), r.source_val.get("mACC")]
        else:
            vals = [mean_metric(r, ablation_datasets, m) for m, _ in ABLATION_METRICS]
        title = row.get("section")
        if not sections or sections[-1][0] != title:
            sections.append((title, []))
        sections[-1][1].append(Row(labels, tuple(vals)))
    if layout.per_dataset:
        scope = (f"mIoU and mACC (%) per dataset; m-mIoU and m-mACC average the "
                 f"{len(datasets)} dataset columns"
                 + (f"; {source} (val) is its held-out val split, not in the averages."
                    if with_val else "."))
    else:
        scope = (f"m-mIoU, m-fwIoU and m-mACC (%) average over "
                 f"{', '.join(ablation_datasets)}.")
    return Table(name=name, title=layout.title,
                 caption=_caption(layout.title, provenance, scope, used, source),
                 label_headers=tuple(h for _, h, _ in layout.labels), columns=tuple(columns),
                 sections=tuple(Section(t, tuple(rs)) for t, rs in sections),
                 decimals=decimals, wide=layout.per_dataset)


def build_tables(results: Mapping[str, VariantResult], spec: Mapping[str, Any], *,
                 datasets: Sequence[str] | None = None,
                 ablation_datasets: Sequence[str] | str = "targets",
                 source_dataset: str | None = None, provenance: str = "synthetic",
                 decimals: int = 2, defaults: Mapping[str, Mapping[str, str]] | None = None,
                 ) -> list[Table]:
    """All tables of ``spec`` (``{table_name: rows}``), in the spec's order.

    Args:
        results: numbers per variant (``load_results`` or ``mlflow_source.load_results``).
        spec: ``report.tables`` of params.yaml.
        datasets: Table 1's columns (None: source first, then sorted).
        ablation_datasets: list, or ``"targets"`` (every dataset but the source).
        source_dataset: the source, when the summaries do not name it.
        provenance: ``synthetic`` | ``real``.
        decimals: printing precision.
        defaults: per table, label defaults (``{"table5": {"rho": "0.5"}}``).
    """
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 6:
        raise DrsegInputError(f"report.decimals: expected an integer 0..6, got {decimals!r}")
    cols = dataset_order(results, datasets, source_dataset)
    abl = ablation_set(results, ablation_datasets, source_dataset)
    defaults = defaults or {}
    return [build_table(n, rows, results, datasets=cols, ablation_datasets=abl,
                        provenance=provenance, decimals=decimals, defaults=defaults.get(n),
                        source_dataset=source_dataset)
            for n, rows in spec.items()]


# --------------------------------------------------------------------------------------------
# Renderers


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials, leaving ``$...$`` math spans as they are."""
    parts = text.split("$")
    out = []
    for i, p in enumerate(parts):
        out.append(p if i % 2 else "".join(_LATEX_SPECIAL.get(c, c) for c in p))
    return "$".join(out)


def display_name(name: str) -> str:
    """``table5`` -> ``Table 5``."""
    return name[:1].upper() + name[1:].rstrip("0123456789") + (
        " " + name[len(name.rstrip("0123456789")):] if name[-1:].isdigit() else "")


def _groups(columns: Sequence[Column]) -> list[tuple[str | None, int]]:
    spans: list[tuple[str | None, int]] = []
    for c in columns:
        if spans and c.group is not None and spans[-1][0] == c.group:
            spans[-1] = (c.group, spans[-1][1] + 1)
        else:
            spans.append((c.group, 1))
    return spans


def to_latex(table: Table) -> str:
    """booktabs LaTeX (needs ``booktabs`` and ``amssymb`` for ``\\checkmark``)."""
    nl, nv = len(table.label_headers), len(table.columns)
    env = "table*" if table.wide else "table"
    lines = [f"% {table.name}: generated by `drseg report`; do not edit by hand.",
             "% Needs \\usepackage{booktabs} and \\usepackage{amssymb}.",
             f"\\begin{{{env}}}[t]", "\\centering",
             f"\\caption{{{latex_escape(table.caption)}}}", f"\\label{{tab:{table.name}}}"]
    if table.wide:
        lines.append("\\resizebox{\\textwidth}{!}{%")
    first = table.sections[0].rows[0].labels if table.sections and table.sections[0].rows else ()
    align = "".join("c" if isinstance(lab, bool) else "l" for lab in first) or "l" * nl
    lines.append(f"\\begin{{tabular}}{{{align}{'c' * nv}}}")
    lines.append("\\toprule")
    spans = _groups(table.columns)
    if any(g for g, _ in spans):
        cells, rules, col = [""] * nl, [], nl + 1
        for g, n in spans:
            cells.append(f"\\multicolumn{{{n}}}{{c}}{{{latex_escape(g)}}}" if g else "")
            if g:
                rules.append(f"\\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        lines.append(" & ".join(cells) + " \\\\")
        lines.append(" ".join(rules))
    header = [latex_escape(h) for h in table.label_headers] + [latex_escape(c.header)
                                                               for c in table.columns]
    lines.append(" & ".join(header) + " \\\\")
    lines.append("\\midrule")
    marks = table_emphasis(table)
    for s, sec in enumerate(table.sections):
        if s:
            lines.append("\\midrule")
        if sec.title:
            lines.append(f"\\multicolumn{{{nl + nv}}}{{l}}{{\\textit{{{latex_escape(sec.title)}}}}} \\\\")
        for i, row in enumerate(sec.rows):
            cells = [("\\checkmark" if lab else "") if isinstance(lab, bool) else latex_escape(lab)
                     for lab in row.labels]
            for j, v in enumerate(row.values):
                text = fmt(v, table.decimals)
                mark = marks[s][i][j]
                cells.append(f"\\textbf{{{text}}}" if mark == "best"
                             else f"\\underline{{{text}}}" if mark == "second" else text)
            lines.append(" & ".join(cells) + " \\\\")
    lines.append("\\bottomrule")
    lines.append("\\end{tabular}" + ("}" if table.wide else ""))
    lines.append(f"\\end{{{env}}}")
    return "\n".join(lines) + "\n"


def _plain(text: str) -> str:
    """LaTeX-ish header text for plain-text outputs: ``$\\rho$`` -> ``rho``."""
    return (text.replace("$\\rho$", "rho").replace("$k$", "k").replace("$", ""))


def _flat_headers(table: Table) -> list[str]:
    return [_plain(h) for h in table.label_headers] + [
        f"{c.group} {c.header}" if c.group else c.header for c in table.columns]


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table: best ``**bold**``, second ``<u>underlined</u>``."""
    heads = _flat_headers(table)
    lines = [f"**{display_name(table.name)}.** {_plain(table.caption)}", "",
             "| " + " | ".join(heads) + " |",
             "|" + "|".join([":--"] * len(table.label_headers)
                            + ["--:"] * len(table.columns)) + "|"]
    marks = table_emphasis(table)
    for s, sec in enumerate(table.sections):
        if sec.title:
            lines.append("| " + " | ".join([f"*{sec.title}*"] + [""] * (len(heads) - 1)) + " |")
        for i, row in enumerate(sec.rows):
            cells = [("✓" if lab else "") if isinstance(lab, bool) else str(lab)
                     for lab in row.labels]
            for j, v in enumerate(row.values):
                text = fmt(v, table.decimals)
                mark = marks[s][i][j]
                cells.append(f"**{text}**" if mark == "best"
                             else f"<u>{text}</u>" if mark == "second" else text)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """CSV of the printed numbers (a ``section`` column first when the table has sections);
    check-mark columns hold 1/0, missing values are empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    has_sections = any(sec.title for sec in table.sections)
    w.writerow((["section"] if has_sections else []) + _flat_headers(table))
    for sec in table.sections:
        for row in sec.rows:
            labels = [("1" if lab else "0") if isinstance(lab, bool) else lab
                      for lab in row.labels]
            values = ["" if v is None else fmt(v, table.decimals) for v in row.values]
            w.writerow(([sec.title or ""] if has_sections else []) + labels + values)
    return buf.getvalue()


def write_tables(tables: Sequence[Table], out_dir: str | Path) -> list[Path]:
    """Write ``<name>.tex``, ``.md`` and ``.csv`` of each table into ``out_dir``.

    Each file is written to a temporary name and renamed, so a failure never leaves a half
    table behind.

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tables:
        for ext, text in (("tex", to_latex(t)), ("md", to_markdown(t)), ("csv", to_csv(t))):
            written.append(atomic_write_text(out / f"{t.name}.{ext}", text, encoding="utf-8"))
    return written
