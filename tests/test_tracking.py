"""MLflow tracking: store location (incl. DVC temp workspaces) and a round trip."""
from pathlib import Path

import pytest

from drseg import tracking


def test_project_root_maps_dvc_temp_workspace_back(tmp_path):
    root = tmp_path / "proj"
    ws = root / ".dvc" / "tmp" / "exps" / "tmpabc123" / "stages"
    ws.mkdir(parents=True)
    assert tracking.project_root(ws) == root.resolve()


def test_project_root_finds_dvc_yaml(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert tracking.project_root(sub) == tmp_path.resolve()


def test_tracking_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    uri = tracking.tracking_uri(tmp_path)
    assert uri == f"sqlite:///{(tmp_path.resolve() / 'mlflow.db').as_posix()}"
    assert Path(uri[len("sqlite:///"):]).is_absolute()


def test_flatten_nested_params():
    flat = tracking.flatten({"train": {"lr": 2e-4, "opt": {"wd": 1e-4}}, "k": [1, 2]})
    assert flat == {"train.lr": 2e-4, "train.opt.wd": 1e-4, "k": [1, 2]}


def test_round_trip_into_temporary_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    params = {"spsd": {"rho": 0.4, "lambda": 0.3}, "model": {"preset": "tiny"}}
    with tracking.start_run("train", "rho0.4", params=params, root=tmp_path) as run:
        tracking.log_metrics({"val": {"mIoU": 42.5, "IoU": [1, 2]}, "bad": float("nan")}, step=3)
        run_id = run.info.run_id
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri(tmp_path))
    got = client.get_run(run_id)
    assert got.info.run_name == "train@rho0.4"
    assert got.data.params["spsd.rho"] == "0.4"
    assert got.data.params["model.preset"] == "tiny"
    assert got.data.metrics == {"val.mIoU": 42.5}  # lists and NaN are not metrics
    assert got.data.tags["stage"] == "train" and got.data.tags["variant"] == "rho0.4"
    assert (tmp_path / "mlflow.db").is_file()
