"""The vendored `dvc plots show` template renders offline: the vega libraries are inline and
DVC's CDN script tags never get in."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from drseg.errors import DrsegInputError
from drseg.reports.dvc_template import build_template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"


def test_template_is_configured_and_self_contained():
    assert "html_template = plots/offline.html" in (ROOT / ".dvc" / "config").read_text()
    text = TEMPLATE.read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text
    assert not re.search(r"<script[^>]+src=", text)
    for lib in ("vega 5.", "vega-lite 5.", "vega-embed 6."):
        assert lib in text
    assert text.count("<script>") == 3


def test_dvc_render_page_has_no_cdn(tmp_path):
    from dvc_render.html import render_html
    from dvc_render.vega import VegaRenderer

    points = [{"iteration": i, "loss": 1.0 / (i + 1), "rev": "workspace", "filename": "loss.csv",
               "field": "loss", "step": i} for i in range(4)]
    r = VegaRenderer(points, "loss.csv", x="iteration", y="loss", template="linear")
    out = render_html([r], tmp_path / "index.html", html_template=str(TEMPLATE))
    page = Path(out).read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed(" in page
    assert '"iteration"' in page


def test_build_template_refuses_unsafe_bundles(tmp_path):
    ok = tmp_path / "ok.js"
    ok.write_text("var a=1;")
    bad = tmp_path / "bad.js"
    bad.write_text('var s="</script>";')
    with pytest.raises(DrsegInputError, match="bad.js: contains '</script'"):
        build_template(bad, ok, ok)
    bad.write_text('var s="{plot_divs}";')
    with pytest.raises(DrsegInputError, match="DVC placeholder"):
        build_template(ok, bad, ok)
    with pytest.raises(DrsegInputError, match="missing.js: vega-embed bundle not found"):
        build_template(ok, ok, tmp_path / "missing.js")
    text = build_template(ok, ok, ok)
    assert text.count("var a=1;") == 3 and "{plot_divs}" in text
