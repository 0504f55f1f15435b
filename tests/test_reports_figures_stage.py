"""The `figures` stage: tiny random-weight checkpoints on a tiny synthetic target dataset ->
arrays.npz, Fig. 5 and Fig. 7 (files only; the weights are untrained, the numbers meaningless)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))

import figures as stage  # noqa: E402

from drseg.errors import DrsegInputError  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from drseg.data.archive import write_suite_file
    from drseg.data.synth import generate_dataset
    from drseg.engine.checkpoint import save_model_checkpoint
    from drseg.models.drseg import build_model, make_config

    root = tmp_path_factory.mktemp("figstage")
    synth = root / "synth"
    generate_dataset(synth, "synth_urban", 0, 32, {"all": 2}, progress=False)
    write_suite_file(synth, {"suite": "synth", "root": ".", "datasets": ["synth_source", "synth_urban"],
                             "sources": ["synth_source"], "missing": []})
    for v, ov in {"catseg": {"variant": "catseg"}, "full": {}}.items():
        cfg = make_config("tiny", ov)
        save_model_checkpoint(root / "runs" / v / "model_final.pt", model=build_model(cfg),
                              model_cfg=cfg.to_dict(), iteration=0, train_dataset="synth_source")
    params = {"report": {"figures": {"samples": [1, 0], "methods": {"catseg": "CAT-Seg-style",
                                                                     "full": "DR-Seg"}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _run(root: Path, out: str, params: str = "params.yaml") -> int:
    return stage.main(["--data", str(root / "synth"), "--runs", str(root / "runs" / "{variant}" / "model_final.pt"),
                       "--out", str(root / out), "--params", str(root / params)])


def test_stage_writes_arrays_and_figures(setup):
    assert _run(setup, "a") == 0
    out = setup / "a"
    for name in ("fig5_qualitative.png", "fig5_qualitative.pdf", "fig7_correlation.png",
                 "fig7_correlation.pdf", "fig5_qualitative.txt", "fig7_correlation.txt"):
        assert (out / name).is_file(), name
    a = np.load(out / "arrays.npz")
    assert a["images"].shape == (2, 32, 32, 3) and a["gt"].shape == (2, 32, 32)
    assert list(a["sample_index"]) == [1, 0]
    K = len(a["classes"])
    assert a["pred_catseg"].shape == a["pred_full"].shape == (2, 32, 32)
    assert a["pred_full"].min() >= 0 and a["pred_full"].max() < K
    assert a["corr_original"].shape == a["corr_refined"].shape and a["corr_original"].shape[0] == K
    assert not np.allclose(a["corr_original"], a["corr_refined"])
    assert "synthetic benchmark" in (out / "fig5_qualitative.txt").read_text()
    # the figures are a pure function of the saved arrays (byte-identical reruns of the
    # drawing are tested in test_reports_figures.py)
    from drseg.reports import figures as F

    F.plot_correlation_maps(a["images"][0], a["corr_original"], a["corr_refined"],
                            [str(c) for c in a["classes"]], setup / "redraw",
                            title="Class-wise correlation maps of 'full' (synthetic benchmark)")
    assert (setup / "redraw.png").read_bytes() == (out / "fig7_correlation.png").read_bytes()


def test_correlation_hook_leaves_the_prediction_alone(setup):
    from drseg.data.dataset import open_split

    model = stage.load_model(setup / "runs" / "full" / "model_final.pt")
    item = open_split(setup / "synth", "synth_urban", "all")[0]
    vocab = list(open_split(setup / "synth", "synth_urban", "all").classes)
    before = stage.predict_labels(model, item["image"], vocab)
    ori, ref = stage.correlation_maps(model, item["image"], vocab)
    assert ori.shape[0] == ref.shape[0] == len(vocab)
    assert not model.fusion._forward_pre_hooks  # hook removed
    assert np.array_equal(before, stage.predict_labels(model, item["image"], vocab))


def test_bad_figure_params(setup):
    p = yaml.safe_load((setup / "params.yaml").read_text())
    p["report"]["figures"]["correlation_variant"] = "catseg"
    (setup / "bad.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(DrsegInputError, match="correlation_variant: the model has no refined branch"):
        _run(setup, "c", "bad.yaml")
    p["report"]["figures"] = {"samples": [5]}
    (setup / "bad.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(DrsegInputError, match=r"report.figures.samples: \[5\] not in 0..1"):
        _run(setup, "c", "bad.yaml")
    p["report"]["figures"] = {"sample": [0]}
    (setup / "bad.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(DrsegInputError, match="unknown key.*report.figures.sample"):
        _run(setup, "c", "bad.yaml")
