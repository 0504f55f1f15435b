"""Build the offline HTML template of ``dvc plots show``: vega, vega-lite and vega-embed inlined.

DVC's default page loads the three libraries from a CDN and renders blank without a network.
The template written here holds them inline and omits DVC's ``{scripts}`` placeholder (so
DVC's CDN tags are never inserted); it keeps ``{plot_divs}`` and ``{refresh_tag}``.

The libraries come from the npm registry's packages (``npm pack vega@5 vega-lite@5
vega-embed@6``; the ``build/*.min.js`` files, BSD-3-Clause). Rebuild with::

    python -m drseg.reports.dvc_template --vega .../vega.min.js \
        --vega-lite .../vega-lite.min.js --vega-embed .../vega-embed.min.js \
        --out .dvc/plots/offline.html
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from drseg.errors import DrsegInputError

_PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")


def _library(path: str | Path, name: str) -> tuple[str, str]:
    p = Path(path)
    if not p.is_file():
        raise DrsegInputError(f"{p}: {name} bundle not found")
    text = p.read_text(encoding="utf-8")
    if "</script" in text.lower():
        raise DrsegInputError(f"{p}: contains '</script' and cannot be inlined")
    hit = [ph for ph in _PLACEHOLDERS if ph in text]
    if hit:
        raise DrsegInputError(f"{p}: contains DVC placeholder(s) {hit}; DVC would rewrite them")
    pkg = p.parent.parent / "package.json"  # <package>/build/<name>.min.js
    version = json.loads(pkg.read_text()).get("version", "?") if pkg.is_file() else "?"
    return text, f"{name} {version} sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def build_template(vega: str | Path, vega_lite: str | Path, vega_embed: str | Path) -> str:
    """The template text.

    Args:
        vega: path of ``vega.min.js``.
        vega_lite: path of ``vega-lite.min.js``.
        vega_embed: path of ``vega-embed.min.js``.

    Raises:
        DrsegInputError: a bundle is missing or cannot be inlined safely.
    """
    libs = [_library(vega, "vega"), _library(vega_lite, "vega-lite"),
            _library(vega_embed, "vega-embed")]
    notice = "; ".join(tag for _, tag in libs)
    scripts = "\n".join(f"<script>\n{text}\n</script>" for text, _ in libs)
    return ("<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<meta charset=\"utf-8\">\n"
            "<title>DVC Plot (offline)</title>\n"
            f"<!-- Offline dvc plots template built by drseg/reports/dvc_template.py. Inlined from "
            f"the npm packages, BSD-3-Clause (c) the Vega project (UW Interactive Data Lab): "
            f"{notice} -->\n{scripts}\n"
            "<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n"
            "</body>\n</html>\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vega", required=True)
    ap.add_argument("--vega-lite", required=True)
    ap.add_argument("--vega-embed", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_template(a.vega, a.vega_lite, a.vega_embed), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
