"""The spsd and spsd_study stages end to end at tiny size: outputs, determinism, MLflow."""
import hashlib
import json
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))

import spsd as spsd_stage  # noqa: E402
import spsd_study as study_stage  # noqa: E402

from drseg.data.archive import write_suite_file  # noqa: E402
from drseg.data.synth import generate_dataset  # noqa: E402
from drseg.errors import DrsegInputError  # noqa: E402
from drseg.models import clip as dclip  # noqa: E402
from drseg.models import spsd as mspsd  # noqa: E402

MICRO = "drseg-test-micro-clip"  # a 16-channel CLIP registered here, to keep the tests fast
C = 16
BLOCK = {"lambda": 0.3, "rho": 0.5, "num_prototypes": 4, "seed": 0, "batch_size": 4,
         "clip_model": MICRO,
         "study": {"masking_images": 2, "ratios": [0.5, 1.0], "random_draws": 1,
                   "map_examples": 1, "seed": 0}}


def _micro_clip(seed):
    return dclip.load_open_clip(MICRO, None, seed=seed)[0]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite")
    cfg_dir = d / "configs"
    cfg_dir.mkdir()
    (cfg_dir / f"{MICRO}.json").write_text(json.dumps({
        "embed_dim": C,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "head_width": 16,
                       "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}))
    open_clip.add_model_config(cfg_dir)
    data = d / "synth"
    generate_dataset(data, "synth_source", seed=0, image_size=64,
                     counts={"train": 6, "val": 3}, progress=False)
    write_suite_file(data, {"suite": "synth", "root": ".", "datasets": ["synth_source"],
                            "sources": ["synth_source"], "missing": []})
    ckpt = d / "clip.pt"
    torch.save(_micro_clip(0).state_dict(), ckpt)
    return data, ckpt


def _run(suite, out, block=BLOCK):
    data, ckpt = suite
    spsd_stage.run(data, ckpt, out / "spsd", out / "reports" / "summary.json", block,
                   progress=False)
    study_stage.run(data, ckpt, out / "spsd", out / "reports", out / "maps" / "maps.json",
                    out / "figures", block, progress=False)


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stages_write_outputs_and_are_deterministic(suite, tmp_path):
    _run(suite, tmp_path / "a")
    _run(suite, tmp_path / "b")
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert set(a) == {
        "spsd/prototypes.pt", "spsd/scores.json", "spsd/channel_index.json",
        "reports/summary.json", "reports/study.json", "reports/retention.json",
        "reports/masking.json", "maps/maps.json",
        *(f"figures/{n}.{ext}" for n in study_stage.FIGURES for ext in ("png", "pdf"))}
    assert a == b  # byte-identical reruns, figures included

    index = mspsd.load_channel_index(tmp_path / "a/spsd/channel_index.json", channels=C,
                                     backbone=MICRO)
    assert index["dataset"] == "synth_source" and len(index["semantic"]) == C // 2
    assert index["clip_checkpoint_sha256"] == hashlib.sha256(suite[1].read_bytes()).hexdigest()
    scores = json.loads((tmp_path / "a/spsd/scores.json").read_text())
    # the index is the Eq. 1-4 score of the stored prototypes
    protos = torch.load(tmp_path / "a/spsd/prototypes.pt", weights_only=True)
    want = mspsd.channel_scores(protos["prototypes"], 0.3).score
    assert index["score"] == want.tolist()
    assert protos["class_names"] == scores["classes"]
    assert set(scores["absent_classes"]).isdisjoint(scores["classes"])
    study = json.loads((tmp_path / "a/reports/study.json").read_text())
    assert study["masking_images"] == 2 and study["split_images"] == 3
    assert study["retention"]["100"]["top"] == pytest.approx(study["zero_shot_mIoU"])
    masking = json.loads((tmp_path / "a/reports/masking.json").read_text())
    assert sorted(r["rank"] for r in masking) == list(range(C))


def test_other_seed_other_prototypes(suite, tmp_path):
    data, ckpt = suite
    for seed in (0, 1):
        spsd_stage.run(data, ckpt, tmp_path / str(seed), tmp_path / f"{seed}.json",
                       {**BLOCK, "seed": seed}, progress=False)
    p0 = torch.load(tmp_path / "0/prototypes.pt", weights_only=True)["prototypes"]
    p1 = torch.load(tmp_path / "1/prototypes.pt", weights_only=True)["prototypes"]
    assert p0.shape == p1.shape and not torch.equal(p0, p1)


def test_study_refuses_index_of_other_weights(suite, tmp_path):
    data, ckpt = suite
    spsd_stage.run(data, ckpt, tmp_path / "spsd", tmp_path / "s.json", BLOCK, progress=False)
    other = tmp_path / "other.pt"
    torch.save(_micro_clip(1).state_dict(), other)
    with pytest.raises(DrsegInputError, match="channel_index.json.*sha256"):
        study_stage.run(data, other, tmp_path / "spsd", tmp_path / "r", tmp_path / "m.json",
                        tmp_path / "f", BLOCK, progress=False)


@pytest.mark.parametrize("bad,match", [({"lambda": 2}, "spsd.lambda"),
                                        ({"num_prototypes": 0}, "spsd.num_prototypes"),
                                        ({"purity": 0.5}, "spsd.purity"),
                                        ({"bogus": 1}, "spsd.bogus"),
                                        ({"study": {"ratios": [0, 1]}}, "spsd.study.ratios")])
def test_bad_params_are_named(suite, tmp_path, bad, match):
    data, ckpt = suite
    with pytest.raises(DrsegInputError, match=match):
        spsd_stage.run(data, ckpt, tmp_path / "spsd", tmp_path / "s.json", {**BLOCK, **bad},
                       progress=False)
        study_stage.run(data, ckpt, tmp_path / "spsd", tmp_path / "r", tmp_path / "m.json",
                        tmp_path / "f", {**BLOCK, **bad}, progress=False)


def test_main_logs_to_mlflow(suite, tmp_path, monkeypatch):
    data, ckpt = suite
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"spsd": BLOCK}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    spsd_stage.main([str(data), str(ckpt), "out", "summary.json"])
    import mlflow

    runs = mlflow.search_runs(experiment_names=["drseg"], output_format="list")
    assert [r.info.run_name for r in runs] == ["spsd"]
    m = runs[0].data.metrics
    assert m["spsd.channels"] == C and m["spsd.classes_used"] >= 2
    assert runs[0].data.params["spsd.lambda"] == "0.3"
