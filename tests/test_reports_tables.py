"""Tables 1-6 from the fixed metrics fixture: expected LaTeX, emphasis with ties, means, errors."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from drseg.errors import DrsegInputError
from drseg.reports import tables as T
from drseg.reports.report import build_all_tables, options_from_params

FIX = Path(__file__).parent / "fixtures" / "reports"
METRICS = FIX / "metrics"


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((FIX / "params.yaml").read_text())


@pytest.fixture(scope="module")
def opts(params):
    return options_from_params(params)


@pytest.fixture(scope="module")
def results(opts):
    return T.load_results(METRICS, opts.variants)


@pytest.fixture(scope="module")
def tables(results, opts):
    return {t.name: t for t in build_all_tables(results, opts)}


def test_fixture_spec_matches_params_yaml(params):
    """The fixture's report block is the project's, so the expected .tex covers the real spec."""
    root = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    assert params["report"] == root["report"]


@pytest.mark.parametrize("name", [f"table{i}" for i in range(1, 7)])
def test_latex_matches_committed_expected(tables, name):
    expected = (FIX / "expected" / f"{name}.tex").read_text()
    assert T.to_latex(tables[name]) == expected


def test_write_tables_writes_three_formats(tables, tmp_path):
    paths = T.write_tables(list(tables.values()), tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"table{i}.{e}" for i in range(1, 7)
                                                   for e in ("tex", "md", "csv"))
    assert not list(tmp_path.glob("*.tmp"))


def _mean(variant: str, datasets: list[str], key: str) -> float:
    s = json.loads((METRICS / variant / "summary.json").read_text())
    return sum(s["datasets"][d][key] for d in datasets) / len(datasets)


def test_ablation_means_are_direct_means_over_targets(tables):
    targets = ["harbor", "rural", "urban"]  # every dataset but the source, by name
    t2 = tables["table2"]
    full = t2.sections[0].rows[-1]
    assert full.labels == (True, True, True)
    for value, key in zip(full.values, ("mIoU", "fwIoU", "mACC")):
        assert value == pytest.approx(_mean("full", targets, key), abs=1e-12)
    assert "average over harbor, rural, urban" in t2.caption


def test_table1_columns_and_means(tables):
    t1 = tables["table1"]
    groups = [c.group for c in t1.columns]
    assert groups[:8] == ["source", "source", "harbor", "harbor", "rural", "rural", "urban", "urban"]
    assert [c.header for c in t1.columns[8:10]] == ["m-mIoU", "m-mACC"]
    assert groups[10:] == ["source (val)", "source (val)"]  # beside the table, not in the means
    row = t1.sections[0].rows[-1]
    assert row.labels == ("DR-Seg", "tiny")
    assert row.values[8] == pytest.approx(_mean("full", ["source", "harbor", "rural", "urban"], "mIoU"))
    sv = json.loads((METRICS / "full" / "summary.json").read_text())["source_val"]
    assert row.values[10] == sv["mIoU"]


def test_captions_say_synthetic_datasets_and_class_lists(tables):
    for t in tables.values():
        assert "Synthetic-benchmark results" in t.caption and "not the paper's numbers" in t.caption
        assert "Class lists: rskt-v1" in t.caption and "evaluation mode: noslide" in t.caption
        assert "Trained on source" in t.caption


def test_default_row_labels_come_from_the_default_model(tables):
    t5, t6 = tables["table5"], tables["table6"]
    assert [r.labels[0] for r in t5.sections[0].rows] == ["0.3", "0.4", "0.5", "0.6", "0.7"]
    assert [r.labels[0] for r in t6.sections[0].rows] == ["20", "40", "50", "75", "100"]


# ---- emphasis ----------------------------------------------------------------------------


@pytest.mark.parametrize("values, expected", [
    ([1.0, 3.0, 2.0], ["", "best", "second"]),
    ([2.0, 3.0, 2.0, 1.0], ["second", "best", "second", ""]),          # tie for second
    ([3.0, 3.0, 2.0, 1.0], ["best", "best", "second", ""]),            # tie for best
    ([40.004, 39.996, 39.99], ["best", "best", "second"]),             # tie after rounding
    ([5.0, 5.0, 5.0], ["best", "best", "best"]),                       # all equal: no second
    ([7.0], ["best"]),
    ([None, 1.0, 2.0, None], ["", "second", "best", ""]),              # missing never marked
    ([None, None], ["", ""]),
])
def test_emphasis(values, expected):
    assert T.emphasis(values, 2) == expected


def test_emphasis_uses_printed_precision():
    assert T.emphasis([1.04, 1.01], 1) == ["best", "best"]
    assert T.emphasis([1.04, 1.01], 2) == ["best", "second"]


def test_fixture_ties_are_marked_in_the_latex(tables):
    t5 = T.to_latex(tables["table5"])
    # rho 0.4 (rho04) and the default (0.5) print the same m-mIoU, both second best
    assert "0.4 & \\underline{39.61}" in t5 and "0.5 & \\underline{39.61}" in t5
    t6 = T.to_latex(tables["table6"])
    # k=50 is higher than k=75 in m-fwIoU by 0.003: both print 49.63, both bold
    assert "\\textbf{49.63}" in t6.split("50 & ")[1].split("\n")[0]
    assert "\\textbf{49.63}" in t6.split("75 & ")[1].split("\n")[0]
    t4 = T.to_markdown(tables["table4"])
    assert "| concat | 37.14 | 47.82 | 50.46 |" in t4 and "| separate | 37.14 | 47.82 | 51.01 |" in t4


def test_table3_ranks_within_sections(tables):
    marks = T.table_emphasis(tables["table3"])
    assert [m[0] for m in marks[0]] == ["second", "best"]
    assert [m[0] for m in marks[1]] == ["second", "best"]


def test_markdown_and_csv_hold_the_latex_numbers(tables):
    for t in tables.values():
        rows = list(csv.reader(io.StringIO(T.to_csv(t))))
        header, body = rows[0], rows[1:]
        assert len(body) == sum(len(s.rows) for s in t.sections)
        offset = len(header) - len(t.columns)
        tex, md = T.to_latex(t), T.to_markdown(t)
        for r in body:
            for v in r[offset:]:
                assert v in tex and v in md


def test_csv_marks_checks_as_ones(tables):
    rows = list(csv.reader(io.StringIO(T.to_csv(tables["table2"]))))
    assert rows[0][:3] == ["PDGR", "SPSD", "UGAF"]
    assert [r[:3] for r in rows[1:]] == [["0", "0", "0"], ["1", "0", "0"], ["1", "1", "0"],
                                         ["1", "0", "1"], ["1", "1", "1"]]


def test_latex_escapes_specials():
    assert T.latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"
    assert T.latex_escape(r"Effect of $\rho_x$") == r"Effect of $\rho_x$"


# ---- bad input ---------------------------------------------------------------------------


def _copy_fixture(tmp_path: Path) -> Path:
    dst = tmp_path / "metrics"
    shutil.copytree(METRICS, dst)
    return dst


def test_missing_summary_names_the_file(tmp_path, opts):
    m = _copy_fixture(tmp_path)
    (m / "k20" / "summary.json").unlink()
    with pytest.raises(DrsegInputError, match=r"k20.summary\.json.*not found"):
        T.load_results(m, opts.variants)


def test_summary_of_another_variant_is_refused(tmp_path, opts):
    m = _copy_fixture(tmp_path)
    shutil.copy(m / "k40" / "summary.json", m / "k20" / "summary.json")
    with pytest.raises(DrsegInputError, match="holds variant 'k40', expected 'k20'"):
        T.load_results(m, opts.variants)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["datasets"]["urban"].pop("fwIoU"), "datasets.urban has no 'fwIoU'"),
    (lambda s: s["datasets"]["urban"].update(mIoU=None), "datasets.urban.mIoU: expected a finite"),
    (lambda s: s.pop("mode"), "missing key 'mode'"),
    (lambda s: s.update(datasets={}), "'datasets' must be a non-empty object"),
])
def test_malformed_summary(tmp_path, opts, edit, message):
    m = _copy_fixture(tmp_path)
    p = m / "full" / "summary.json"
    s = json.loads(p.read_text())
    edit(s)
    p.write_text(json.dumps(s))
    with pytest.raises(DrsegInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        T.load_results(m, opts.variants)


def test_missing_dataset_and_mixed_class_lists(tmp_path, opts):
    m = _copy_fixture(tmp_path)
    p = m / "k20" / "summary.json"
    s = json.loads(p.read_text())
    del s["datasets"]["rural"]
    p.write_text(json.dumps(s))
    with pytest.raises(DrsegInputError, match="variant 'k20' has no results for dataset 'rural'"):
        build_all_tables(T.load_results(m, opts.variants), opts)
    s = json.loads((METRICS / "k20" / "summary.json").read_text())
    s["class_list_variant"] = "pi-seg-v1"
    p.write_text(json.dumps(s))
    with pytest.raises(DrsegInputError, match="mix class list variants.*k20: pi-seg-v1"):
        build_all_tables(T.load_results(m, opts.variants), opts)


@pytest.mark.parametrize("key, value, message", [
    ("ablation_datasets", "all", "report.ablation_datasets"),
    ("datasets", [], "report.datasets"),
    ("decimals", "2", "report.decimals"),
    ("provenance", "paper", "report.provenance"),
    ("tables", {"table9": [{"variant": "full"}]}, "report.tables.table9: unknown table"),
    ("tables", {"table2": [{"variant": "full", "pdgr": "yes", "spsd": True, "ugaf": True}]},
     r"report.tables.table2\[0\].pdgr: expected true/false"),
    ("typo_key", 1, "unknown key.*report.typo_key"),
])
def test_bad_report_params(params, results, key, value, message):
    bad = yaml.safe_load(yaml.safe_dump(params))
    bad["report"][key] = value
    with pytest.raises(DrsegInputError, match=message):
        build_all_tables(results, options_from_params(bad))


def test_swept_labels_come_from_the_variant_overrides(params):
    opts = options_from_params(params)
    assert [r["rho"] for r in opts.tables["table5"]] == ["0.3", "0.4", "0.5", "0.6", "0.7"]
    assert [r["k"] for r in opts.tables["table6"]] == ["20", "40", "50", "75", "100"]
    p = yaml.safe_load(yaml.safe_dump(params))
    p["variants"]["k40"]["k"] = 41  # the run used 41: the label says so
    assert options_from_params(p).tables["table6"][1]["k"] == "41"


def test_swept_label_that_contradicts_params_is_refused(params):
    p = yaml.safe_load(yaml.safe_dump(params))
    p["report"]["tables"]["table5"][0]["rho"] = 0.35
    with pytest.raises(DrsegInputError, match=r"table5\[0\]\.rho: label 0\.35 disagrees with "
                                              r"variants\.rho03\.rho = 0\.3"):
        options_from_params(p)


def test_swept_label_missing_everywhere(params, tmp_path):
    p = yaml.safe_load(yaml.safe_dump(params))
    del p["model"]["k"]
    with pytest.raises(DrsegInputError, match=r"table6\[3\]\.k: no label.*variants\.full\.k or model\.k"):
        options_from_params(p)


def test_source_dataset_from_params_when_summaries_do_not_name_it(tmp_path, params):
    m = _copy_fixture(tmp_path)
    for p in m.glob("*/summary.json"):
        s = json.loads(p.read_text())
        s.pop("source_val")
        p.write_text(json.dumps(s))
    opts = options_from_params(params)
    results = T.load_results(m, opts.variants)
    with pytest.raises(DrsegInputError, match="'targets' needs the source dataset"):
        build_all_tables(results, opts)
    p = yaml.safe_load(yaml.safe_dump(params))
    p["report"]["source_dataset"] = "source"
    t = {t.name: t for t in build_all_tables(results, options_from_params(p))}
    assert [c.group for c in t["table1"].columns][:2] == ["source", "source"]
    assert len(t["table1"].columns) == 10  # no val columns without source_val
    assert "average over harbor, rural, urban" in t["table2"].caption
    p["report"]["source_dataset"] = "urban"
    with pytest.raises(DrsegInputError, match="report.source_dataset: 'urban', but the summaries"):
        build_all_tables(T.load_results(METRICS, opts.variants), options_from_params(p))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_tables_compile_with_pdflatex(tables, tmp_path):
    import subprocess

    T.write_tables(list(tables.values()), tmp_path)
    body = "\n".join(f"\\input{{table{i}}}" for i in range(1, 7))
    (tmp_path / "main.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{amssymb}\n"
        "\\usepackage{graphicx}\n\\begin{document}\n" + body + "\n\\end{document}\n")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / "main.pdf").stat().st_size > 1000
