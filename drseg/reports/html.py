"""``reports/index.html``: one offline page with every table and figure, the params that
produced them and links to the MLflow runs.

The page references only files next to it (figures, table sources, a run-link script) and has
no external script, style or font. It is deterministic: the MLflow run ids, which change on
every rerun, are not written into it but into a small side script (``mlflow_runs.js``, written
by :func:`write_runs_script`) that the page loads if present and turns into links; without it
the page still lists the variants and says how to open the MLflow UI.
"""
from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from drseg.atomic import atomic_write_text
from drseg.reports.tables import PROVENANCE_TEXT, Table, display_name, fmt, table_emphasis

RUNS_SCRIPT = "mlflow_runs.js"


@dataclass(frozen=True)
class FigureEntry:
    """A figure on the page: paths relative to the page."""

    title: str
    png: str
    pdf: str | None = None
    caption: str = ""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _math(text: str) -> str:
    """The tables' little LaTeX bits as HTML: ``$\\rho$`` -> rho, ``$k$`` -> k."""
    return (_e(text).replace("$\\rho$", "&rho;").replace("$k$", "<i>k</i>")
            .replace("$", ""))


def table_html(table: Table, sources: Mapping[str, str] | None = None) -> str:
    """A table as HTML with the same emphasis as the LaTeX (best bold, second underlined).

    Args:
        table: the table.
        sources: ``{"tex": relpath, ...}`` links to the table's files.
    """
    marks = table_emphasis(table)
    nl = len(table.label_headers)
    out = [f'<p class="cap"><b>{_e(display_name(table.name))}.</b> {_math(table.caption)}</p>',
           f'<table class="res" id="{_e(table.name)}">', "<thead>"]
    groups = [c.group for c in table.columns]
    if any(groups):
        cells = [f'<th colspan="{nl}"></th>'] if nl else []
        j = 0
        while j < len(groups):
            n = 1
            while groups[j] is not None and j + n < len(groups) and groups[j + n] == groups[j]:
                n += 1
            cells.append(f'<th colspan="{n}" class="grp">{_e(groups[j] or "")}</th>')
            j += n
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("<tr>" + "".join(f'<th class="lab">{_math(h)}</th>' for h in table.label_headers)
               + "".join(f"<th>{_e(c.header)}</th>" for c in table.columns) + "</tr></thead>")
    out.append("<tbody>")
    for s, sec in enumerate(table.sections):
        if sec.title:
            out.append(f'<tr class="sec"><td colspan="{nl + len(table.columns)}">'
                       f"<i>{_e(sec.title)}</i></td></tr>")
        for i, row in enumerate(sec.rows):
            cells = [f'<td class="lab">{"&#10003;" if lab else ""}</td>' if isinstance(lab, bool)
                     else f'<td class="lab">{_e(lab)}</td>' for lab in row.labels]
            for j, v in enumerate(row.values):
                text = _e(fmt(v, table.decimals))
                mark = marks[s][i][j]
                text = (f"<b>{text}</b>" if mark == "best"
                        else f"<u>{text}</u>" if mark == "second" else text)
                cells.append(f"<td>{text}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if sources:
        out.append('<p class="src">' + " &middot; ".join(
            f'<a href="{_e(p)}">{_e(k)}</a>' for k, p in sources.items()) + "</p>")
    return "\n".join(out)


_CSS = """
body{font-family:sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} .banner{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;
border-radius:4px;margin:1em 0} .banner.real{background:#e7f3ff;border-color:#8ab6e0}
table.res{border-collapse:collapse;margin:0 0 .3em 0;font-size:13px}
p.cap{font-size:13px;margin:2em 0 .5em 0;max-width:1100px}
table.res th,table.res td{padding:3px 8px;text-align:right;white-space:nowrap}
table.res td.lab,table.res th.lab{text-align:left}
table.res thead tr:last-child th{border-bottom:1px solid #000}
table.res thead tr:first-child th{border-top:2px solid #000}
table.res tbody tr:last-child td{border-bottom:2px solid #000}
table.res th.grp{border-bottom:1px solid #888} tr.sec td{text-align:left;color:#555}
p.src{font-size:12px;margin:0 0 1em 0} figure{margin:1.5em 0} figure img{max-width:100%;
border:1px solid #ddd} figcaption{font-size:13px;color:#444} pre{background:#f6f6f6;
padding:1em;overflow:auto;font-size:12px} nav a{margin-right:1em}
table.runs{border-collapse:collapse;font-size:13px} table.runs td,table.runs th{padding:2px 10px;
text-align:left;border-bottom:1px solid #eee}
"""

_RUNS_JS = """
(function(){var runs=window.DRSEG_RUNS||{};var ui=window.DRSEG_MLFLOW_UI||"";
document.querySelectorAll("td.run[data-variant]").forEach(function(td){
var r=runs[td.getAttribute("data-variant")];if(!r){return;}
var a=document.createElement("a");a.href=ui.replace(/\\/$/,"")+"/#/experiments/"+r.experiment_id+
"/runs/"+r.run_id;a.textContent=r.run_name+" ("+r.run_id.slice(0,8)+")";td.textContent="";
td.appendChild(a);});})();
"""


def render_page(*, title: str, provenance: str, tables: Sequence[tuple[Table, Mapping[str, str]]],
                figures: Sequence[FigureEntry], params: Mapping[str, object],
                variants: Sequence[str], notes: Sequence[str] = ()) -> str:
    """The page as a string (deterministic for the same inputs).

    Args:
        title: page title.
        provenance: ``synthetic`` | ``real``; synthetic pages carry a banner saying so.
        tables: each table with its source-file links (relative paths).
        figures: the figures (relative paths).
        params: the params blocks that produced the numbers (shown as YAML).
        variants: the evaluated variants (one MLflow run link each).
        notes: extra paragraphs (plain text).
    """
    body = [f"<h1>{_e(title)}</h1>"]
    cls = "banner real" if provenance == "real" else "banner"
    body.append(f'<div class="{cls}"><b>{_e(provenance.capitalize())} data.</b> '
                f"{_e(PROVENANCE_TEXT[provenance])}</div>")
    body.append('<nav><a href="#tables">Tables</a><a href="#figures">Figures</a>'
                '<a href="#params">Params</a><a href="#runs">MLflow runs</a></nav>')
    for n in notes:
        body.append(f"<p>{_e(n)}</p>")
    body.append('<h2 id="tables">Tables</h2>')
    for t, src in tables:
        body.append(table_html(t, src))
    body.append('<h2 id="figures">Figures</h2>')
    if not figures:
        body.append("<p>No figures were produced.</p>")
    for f in figures:
        links = f' (<a href="{_e(f.pdf)}">PDF</a>)' if f.pdf else ""
        body.append(f'<figure><img src="{_e(f.png)}" alt="{_e(f.title)}">'
                    f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}{links}</figcaption></figure>")
    body.append('<h2 id="params">Params</h2>')
    body.append("<p>The params.yaml blocks that produced these numbers.</p>")
    body.append("<pre>" + _e(yaml.safe_dump(dict(params), sort_keys=False,
                                            default_flow_style=None, width=100)) + "</pre>")
    body.append('<h2 id="runs">MLflow runs</h2>')
    body.append("<p>Open the MLflow UI first: <code>MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "
                "mlflow ui --workers 1 --backend-store-uri sqlite:///&lt;project&gt;/mlflow.db"
                "</code>. Links come from <code>" + RUNS_SCRIPT + "</code>, written next to this "
                "page by the report step; a variant without a link had no run in the store.</p>")
    body.append('<table class="runs"><tr><th>variant</th><th>run</th></tr>')
    for v in variants:
        body.append(f'<tr><td>{_e(v)}</td><td class="run" data-variant="{_e(v)}">'
                    f"no run found</td></tr>")
    body.append("</table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + f'\n<script src="{RUNS_SCRIPT}"></script>\n<script>{_RUNS_JS}</script>\n'
            "</body>\n</html>\n")


def write_runs_script(path: str | Path, runs: Mapping[str, object], ui: str) -> Path:
    """Write the run-link side script (``window.DRSEG_RUNS``) the page loads.

    Args:
        path: where to write (next to the page, named :data:`RUNS_SCRIPT`).
        runs: ``{variant: RunRef}``.
        ui: the MLflow UI address.
    """
    data = {v: {"run_id": r.run_id, "run_name": r.run_name, "experiment_id": r.experiment_id}
            for v, r in sorted(runs.items())}
    text = (f"window.DRSEG_MLFLOW_UI = {json.dumps(ui)};\n"
            f"window.DRSEG_RUNS = {json.dumps(data, indent=1, sort_keys=True)};\n")
    return atomic_write_text(path, text, encoding="utf-8")


def write_page(path: str | Path, text: str) -> Path:
    """Write the page (UTF-8) atomically."""
    return atomic_write_text(path, text, encoding="utf-8")
