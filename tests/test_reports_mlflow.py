"""The MLflow path (`drseg report --from-mlflow`) gives the same tables as the metrics files,
byte for byte."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from drseg import tracking
from drseg.__main__ import main as drseg_main
from drseg.errors import DrsegInputError
from drseg.reports import mlflow_source
from drseg.reports.report import make_report, options_from_params
from drseg.reports.tables import load_results

FIX = Path(__file__).parent / "fixtures" / "reports"


def _log_variant(variant: str, summary: dict) -> None:
    """What the evaluate step does: the summary's numbers as metrics, its strings as tags."""
    with tracking.start_run("evaluate", variant,
                            tags={"mode": summary["mode"],
                                  "class_list_variant": summary["class_list_variant"],
                                  "train_dataset": summary["source_val"]["dataset"]}):
        tracking.log_metrics({k: v for k, v in summary.items() if k != "variant"})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    params = yaml.safe_load((FIX / "params.yaml").read_text())
    opts = options_from_params(params)
    # an older run of `full` with other numbers: the newest run must win
    stale = json.loads((FIX / "metrics" / "k20" / "summary.json").read_text())
    _log_variant("full", stale)
    for v in opts.variants:
        _log_variant(v, json.loads((FIX / "metrics" / v / "summary.json").read_text()))
    yield uri, opts
    mp.undo()


def test_mlflow_tables_are_byte_identical(store, tmp_path):
    uri, opts = store
    files = make_report(load_results(FIX / "metrics", opts.variants), opts,
                        tables_dir=tmp_path / "files")["tables"]
    results, runs = mlflow_source.load_results(opts.variants, uri)
    assert set(runs) == set(opts.variants)
    make_report(results, opts, tables_dir=tmp_path / "mlflow")
    assert len(files) == 18
    for p in files:
        assert (tmp_path / "mlflow" / p.name).read_bytes() == p.read_bytes(), p.name


def test_cli_from_mlflow(store, tmp_path):
    uri, _ = store
    rc = drseg_main(["report", "--from-mlflow", "--tracking-uri", uri,
                     "--params", str(FIX / "params.yaml"), "--tables", str(tmp_path / "t")])
    assert rc == 0
    for i in range(1, 7):
        assert (tmp_path / "t" / f"table{i}.tex").read_text() == \
            (FIX / "expected" / f"table{i}.tex").read_text()


def test_run_links_for_the_page(store):
    uri, opts = store
    runs = mlflow_source.find_runs(["full", "no-such-variant"], uri)
    assert list(runs) == ["full"]
    assert runs["full"].url("http://127.0.0.1:5000/").startswith("http://127.0.0.1:5000/#/experiments/")


def test_variant_without_run_is_an_error(store):
    uri, _ = store
    with pytest.raises(DrsegInputError, match="no finished run tagged variant='nope'"):
        mlflow_source.load_results(["nope"], uri)


def test_cli_reports_bad_input_as_status_2(store, tmp_path, capsys):
    params = yaml.safe_load((FIX / "params.yaml").read_text())
    params["report"]["tables"] = {"table4": [{"variant": "nope", "fusion": "x"}]}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    rc = drseg_main(["report", "--from-mlflow", "--tracking-uri", store[0], "--params", str(p),
                     "--tables", str(tmp_path / "t")])
    assert rc == 2 and "variant='nope'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_find_runs_never_creates_a_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    assert mlflow_source.find_runs(["full"], uri) == {}
    assert not (tmp_path / "absent.db").exists()


def test_stage_and_cli_resolve_profile_overrides_alike(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    import report as report_stage

    params = yaml.safe_load((FIX / "params.yaml").read_text())
    params["overrides"] = {"report": {"decimals": 1}}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    args = ["--metrics", str(FIX / "metrics"), "--params", str(p)]
    assert report_stage.main(args + ["--tables", str(tmp_path / "stage")]) == 0
    assert drseg_main(["report", *args, "--tables", str(tmp_path / "cli")]) == 0
    for f in sorted((tmp_path / "stage").iterdir()):
        assert f.read_bytes() == (tmp_path / "cli" / f.name).read_bytes(), f.name
    assert "0.4 & \\underline{39.6} & \\textbf{51.0}" in (tmp_path / "cli" / "table5.tex").read_text()
