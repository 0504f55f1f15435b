"""reports/index.html: offline (only local files), every table, the synthetic label, deterministic."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from drseg.reports import figures as F
from drseg.reports.mlflow_source import RunRef
from drseg.reports.report import make_report, options_from_params
from drseg.reports.tables import load_results

FIX = Path(__file__).parent / "fixtures" / "reports"


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") or (tag == "link" and k == "href"):
                self.refs.append((tag, k, v))


def _build(tmp_path: Path, runs=None) -> Path:
    opts = options_from_params(yaml.safe_load((FIX / "params.yaml").read_text()))
    results = load_results(FIX / "metrics", opts.variants)
    curves = tmp_path / "curves"
    curves.mkdir(exist_ok=True)
    for i, v in enumerate(opts.variants):
        (curves / f"{v}.csv").write_text(
            "iteration,loss,lr\n" + "".join(f"{t},{1.0 / (t + 1 + i)},0.0002\n" for t in range(5)))
    extra = tmp_path / "reports" / "figures" / "model"
    extra.mkdir(parents=True, exist_ok=True)
    F.plot_training_curves({"x": ([0, 1], [1.0, 0.5])}, extra / "fig5_qualitative")
    (extra / "fig5_qualitative.txt").write_text("A caption.\n")
    make_report(results, opts, tables_dir=tmp_path / "reports" / "tables",
                figures_dir=tmp_path / "reports" / "figures",
                page=tmp_path / "reports" / "index.html", metrics_dir=FIX / "metrics",
                curves=str(curves / "{variant}.csv"), extra_figures_dirs=[extra, tmp_path / "reports" / "figures"],
                plots_dir=tmp_path / "reports" / "plots", runs=runs)
    return tmp_path / "reports" / "index.html"


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("page"),
                  runs={"full": RunRef("full", "0123456789abcdef", "evaluate@full", "1")})


def test_page_references_only_local_files(page):
    p = _Refs()
    p.feed(page.read_text())
    assert len(p.refs) > 20
    for tag, attr, ref in p.refs:
        if ref.startswith("#"):
            continue
        u = urlparse(ref)
        assert not u.scheme and not u.netloc and not ref.startswith("/"), ref
        assert (page.parent / u.path).is_file(), ref
    assert "http" not in "".join(r for _, _, r in p.refs)


def test_page_has_every_table_figure_and_label(page):
    text = page.read_text()
    for i in range(1, 7):
        assert f'id="table{i}"' in text and f"tables/table{i}.tex" in text
    for img in ("figures/training_curves.png", "figures/class_iou_full.png",
                "figures/model/fig5_qualitative.png"):
        assert text.count(f'src="{img}"') == 1  # folders given twice: each figure once
    assert "Synthetic data." in text and "not the paper&#x27;s numbers" in text
    assert "<b>39.61</b>" in text  # table emphasis carried over
    assert "rho: 0.5" in text  # params shown


def test_runs_script_links_the_runs(page):
    js = (page.parent / "mlflow_runs.js").read_text()
    assert '"run_id": "0123456789abcdef"' in js and "127.0.0.1:5000" in js


def test_page_is_deterministic(page, tmp_path):
    again = _build(tmp_path)  # other folder, no MLflow runs
    assert again.read_bytes() == page.read_bytes()
    for name in ("training_curves.png", "class_iou_full.pdf"):
        assert (again.parent / "figures" / name).read_bytes() == \
            (page.parent / "figures" / name).read_bytes()


def test_missing_curve_writes_nothing(tmp_path):
    opts = options_from_params(yaml.safe_load((FIX / "params.yaml").read_text()))
    results = load_results(FIX / "metrics", opts.variants)
    from drseg.errors import DrsegInputError

    with pytest.raises(DrsegInputError, match=r"catseg\.csv: loss curve not found"):
        make_report(results, opts, tables_dir=tmp_path / "t", figures_dir=tmp_path / "f",
                    page=tmp_path / "index.html", curves=str(tmp_path / "{variant}.csv"))
    assert not list(tmp_path.iterdir())
