"""The train and evaluate stages end to end with the real tiny model on a tiny synthetic suite:
params wiring, outputs and their schemas, MLflow logging, and the refusal of a checkpoint whose model params differ."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from drseg.errors import DrsegInputError


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from drseg.data.archive import prepare_synth_suite

    root = tmp_path_factory.mktemp("suite")
    prepare_synth_suite(root / "synth", seed=0, image_size=64, train_images=4, val_images=2,
                        target_images=2, cards_dir=root / "cards", figure=root / "fig.png",
                        figure_samples=1)
    return root / "synth"


def _params(tmp_path, **train):
    with open("params.yaml") as f:
        params = yaml.safe_load(f)
    params["model"] = {"preset": "tiny"}  # random CLIP: no weight file needed
    params["train"].update({"iterations": 3, "batch_size": 2, "checkpoint_every": 2, **train})
    params["evaluate"].update({"batch_size": 4})
    params["variants"] = {"nok": {"k": 4}}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


@pytest.mark.slow
def test_train_then_evaluate_stage(suite, tmp_path, monkeypatch):
    from stages import evaluate as eval_stage
    from stages import train as train_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    params = _params(tmp_path)
    run = tmp_path / "runs" / "full"
    common = ["--params", str(params), "--variant", "full", "--data", str(suite)]
    assert train_stage.main(common + ["--out", str(run), "--reports", str(tmp_path / "rep")]) == 0
    ckpt = torch.load(run / "model_final.pt", weights_only=False)
    assert ckpt["format"] == "drseg-model/1" and ckpt["iteration"] == 3
    assert ckpt["train_dataset"] == "synth_source" and ckpt["model_cfg"]["image_size"] == 64
    assert not (run / "last.pt").exists()  # removed after success (keep_state: false)
    rows = (tmp_path / "rep" / "loss.csv").read_text().splitlines()
    assert rows[0] == "iteration,loss,lr" and len(rows) == 4
    assert json.loads((tmp_path / "rep" / "train.json").read_text())["iterations"] == 3

    out = tmp_path / "metrics"
    assert eval_stage.main(common + ["--checkpoint", str(run / "model_final.pt"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["datasets"]) == {"synth_source", "synth_urban", "synth_rural", "synth_harbor"}
    assert summary["source_val"]["split"] == "val" and summary["train_dataset"] == "synth_source"
    means = [summary["datasets"][d]["mIoU"] for d in summary["datasets"]]
    assert summary["m-mIoU"] == pytest.approx(sum(means) / 4)
    urban = json.loads((out / "synth_urban.json").read_text())
    assert urban["mode"] == "noslide" and len(urban["IoU"]) == len(urban["classes"])

    # the summary went into the training run, with the tags the report reads
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["drseg"], filter_string="tags.stage = 'train'",
                              output_format="list")
    with_eval = [r for r in runs if "datasets.synth_urban.mIoU" in r.data.metrics]
    assert len(with_eval) == 1
    r = with_eval[0]
    assert r.data.tags["mode"] == "noslide" and r.data.tags["train_dataset"] == "synth_source"
    assert r.data.metrics["m-mIoU"] == pytest.approx(summary["m-mIoU"])
    assert "train.loss" in r.data.metrics and r.data.tags["checkpoint"].endswith("model_final.pt")

    # a checkpoint evaluated as a variant with other model params is refused, naming the param
    with pytest.raises(DrsegInputError, match="k: checkpoint .* != params 4"):
        eval_stage.main(["--params", str(params), "--variant", "nok", "--data", str(suite),
                         "--checkpoint", str(run / "model_final.pt"), "--out", str(tmp_path / "m2")])


def test_train_stage_resumes_only_a_state_of_the_same_code(suite, tmp_path, monkeypatch, caplog):
    """The run's fingerprint holds a digest of the drseg sources: a ``last.pt`` of the same
    params is resumed, one written by other code is not (a run killed mid-stage and re-run by
    ``dvc repro`` after a code change starts afresh)."""
    import logging

    import drseg.engine.train as train_mod
    from stages import train as train_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    params = _params(tmp_path, iterations=2, keep_state=True)
    run = tmp_path / "runs" / "full"
    argv = ["--params", str(params), "--variant", "full", "--data", str(suite), "--out", str(run),
            "--reports", str(tmp_path / "rep")]
    assert train_stage.main(argv) == 0 and (run / "last.pt").exists()
    with caplog.at_level(logging.INFO, logger="drseg.engine.train"):
        caplog.clear()
        assert train_stage.main(argv) == 0
        assert "resumed from" in caplog.text and "starting afresh" not in caplog.text
        monkeypatch.setattr(train_mod, "code_digest", lambda root=None: "other sources")
        caplog.clear()
        assert train_stage.main(argv) == 0
        assert "starting afresh" in caplog.text and "resumed from" not in caplog.text


def test_code_digest_follows_the_python_sources(tmp_path):
    from drseg.engine.train import code_digest

    pkg = tmp_path / "pkg"
    (pkg / "sub" / "__pycache__").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    d0 = code_digest(pkg)
    assert len(d0) == 64 and code_digest(pkg) == d0
    (pkg / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "notes.txt").write_text("not code")
    assert code_digest(pkg) == d0  # only the Python sources count
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert code_digest(pkg) != d0
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "sub" / "b.py").rename(pkg / "sub" / "c.py")  # same contents, another module
    assert code_digest(pkg) != d0
    assert code_digest() != d0 and len(code_digest()) == 64  # the installed drseg
