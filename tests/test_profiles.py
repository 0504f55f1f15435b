"""Run profiles (drseg/profiles.py): the paper's hyperparameters, precedence, weights checks,
and local weight files flowing from the ``weights`` block into the built model.

The paper's numbers below are written out from the paper (section 4.1, "Implementation
Details"; section 4.3 for the ablation datasets) and PROTOCOL.md section 1 -- not imported
from drseg.profiles -- so a wrong profile value fails here.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))

from drseg.errors import DrsegInputError  # noqa: E402
from drseg.profiles import (PROFILES, Ref, apply_profile, check_inputs,  # noqa: E402
                            check_weights, get_profile, profile_keys)

PAPER_PROFILES = ["paper-vitb16-dlrsd", "paper-vitb16-isaid", "paper-vitl14-dlrsd",
                  "paper-vitl14-isaid"]
# backbone facts of section 4.1 / PROTOCOL.md section 3: open_clip config (OpenAI weights use
# QuickGELU), input side, decoder guidance blocks
BACKBONE = {"vitb16": ("ViT-B-16-quickgelu", 384, (3, 7)),
            "vitl14": ("ViT-L-14-336-quickgelu", 336, (7, 15))}
SOURCE = {"dlrsd": "DLRSD", "isaid": "iSAID"}
EIGHT = ["DLRSD", "iSAID", "Potsdam", "Vaihingen", "LoveDA", "UAVid", "UDD5", "VDD"]


@pytest.fixture(scope="module")
def repo_params() -> dict:
    """The repository's params.yaml as written (the embedded default)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture()
def weight_files(tmp_path) -> dict:
    """Stand-in files for the three weights keys (existence is all check_weights reads)."""
    out = {}
    for key, name in [("clip_checkpoint", "ViT-B-16.pt"),
                      ("prior_checkpoint", "dinov3_vitl16_pretrain_sat493m.pth"),
                      ("prior_dinov1_checkpoint", "rsib_dino_vitb8.pth")]:
        p = tmp_path / "weights" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"stand-in")
        out[key] = str(p)
    return out


def with_profile(params: dict, name: str, weights: dict | None = None, **blocks) -> dict:
    raw = copy.deepcopy(params)
    raw["profile"] = name
    if weights is not None:
        raw["weights"] = dict(weights)
    for block, values in blocks.items():
        raw.setdefault(block, {}).update(values)
    return raw


# --------------------------------------------------------------------------- the paper numbers

def test_registry_holds_the_embedded_default_and_four_paper_settings():
    assert set(PROFILES) == {"embedded", *PAPER_PROFILES}
    assert PROFILES["embedded"].values == {}
    with pytest.raises(DrsegInputError, match="paper-vitb16-dlrsd"):
        get_profile("paper-vitb16")


def test_embedded_profile_changes_nothing(repo_params):
    assert repo_params["profile"] == "embedded"
    resolved = apply_profile(repo_params)
    assert resolved == repo_params
    check_inputs(resolved)  # no weights, synthetic suite: nothing to check


@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_paper_profile_resolves_to_the_papers_hyperparameters(name, repo_params, weight_files):
    from drseg.data.catalog import SOURCES, SUITES
    from drseg.engine.evaluate import EvalConfig
    from drseg.engine.spsd import SpsdConfig
    from drseg.engine.train import TrainConfig
    from stages.evaluate import DATA_KEYS as EVAL_DATA_KEYS
    from stages.train import resolve_model_config, train_block

    _, backbone, source = name.split("-")
    clip_model, size, guidance = BACKBONE[backbone]
    dataset = SOURCE[source]
    params = apply_profile(with_profile(repo_params, name, weight_files, train={"nproc": 2}))
    check_inputs({**params, "prepare": {**params["prepare"], "suite": "synth"}})

    # data: the real archive, trained on DLRSD or iSAID, evaluated on all eight
    assert params["prepare"]["suite"] == "rskt"
    assert list(SUITES["rskt"]) == EIGHT and dataset in SOURCES["rskt"]

    # training, as the engine reads it
    loop, data = train_block(params, "full")
    cfg = TrainConfig.from_params(loop)
    assert data["dataset"] == dataset and data["split"] == "train"
    assert cfg.iterations == 30000
    assert cfg.batch_size == 8
    assert cfg.lr == pytest.approx(2e-4)
    assert cfg.weight_decay == pytest.approx(1e-4)
    assert cfg.grad_clip == pytest.approx(0.01)
    assert cfg.clip_lr_mult == pytest.approx(0.01)
    assert cfg.crop == size
    assert cfg.flip and cfg.color_jitter
    assert cfg.device == "cuda" and cfg.nproc == 2  # nproc = GPUs, the user's param

    # the model, as the train stage builds its config
    m = resolve_model_config(params, "full")
    assert m.clip_model == clip_model and m.image_size == size
    assert m.guidance_layers == guidance
    assert m.prior == "vit_large_patch16_dinov3" and m.prior_kwargs == {}
    assert m.templates == ("A photo of a {} in the scene",)
    assert (m.k, m.sigma_f, m.sigma_s, m.rho) == (75, 2.0, 0.05, 0.5)
    assert m.variant == "drseg" and m.pdgr and m.spsd and m.ugaf and m.fusion == "ugaf"
    assert m.rotations
    assert m.clip_checkpoint == weight_files["clip_checkpoint"]
    assert m.prior_checkpoint == weight_files["prior_checkpoint"]

    # SPSD: lambda 0.3 (Eq. 4), rho 0.5 (Eq. 5), on the training source with the model's CLIP
    s = SpsdConfig.from_params(params["spsd"]).resolve_backbone(params["model"])
    assert s.lam == pytest.approx(0.3) and s.rho == pytest.approx(0.5)
    assert s.dataset == dataset and s.split == "train"
    assert s.clip_model == clip_model and s.input_size == size

    # evaluation: noslide, short side 640, long side <= 2560, squashed to the model input
    block = {k: v for k, v in params["evaluate"].items() if k not in EVAL_DATA_KEYS}
    e = EvalConfig.from_params(block)
    assert e.mode == "noslide"
    assert (e.short_side, e.max_long, e.input_size) == (640, 2560, size)
    assert (e.slide_size, e.slide_stride) == (640, 256)  # the slide alternative, if chosen
    assert e.device == "cuda"
    assert params["evaluate"]["nproc"] == 2  # follows train.nproc
    assert params["evaluate"]["class_list_variant"] == "rskt-v1"

    # section 4.3: ablations averaged over Potsdam, VDD, UAVid, UDD5
    assert params["report"]["ablation_datasets"] == ["Potsdam", "VDD", "UAVid", "UDD5"]
    assert params["report"]["provenance"] == "real"
    # Tables 5 and 6 sweeps at the paper's values; Table 3 DINOv1 rows from the RSIB file
    assert {v: params["variants"][v]["k"] for v in ("k20", "k40", "k50", "k100")} == \
        {"k20": 20, "k40": 40, "k50": 50, "k100": 100}
    assert {v: params["variants"][v]["rho"] for v in ("rho03", "rho04", "rho06", "rho07")} == \
        {"rho03": 0.3, "rho04": 0.4, "rho06": 0.6, "rho07": 0.7}
    for v in ("holistic-dinov1", "prior-dinov1"):
        mv = resolve_model_config(params, v)
        assert mv.prior == "vit_base_patch8_224" and mv.prior_kwargs == {}
        assert mv.prior_checkpoint == weight_files["prior_dinov1_checkpoint"]
        assert mv.prior_image_size == 384  # 48x48 ViT-B/8 tokens, 2x2 conv to the 24x24 grid


@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_paper_model_is_the_preset_without_leaks_from_the_tiny_params(name, repo_params,
                                                                      weight_files):
    """Every architecture field equals the paper preset: nothing of the embedded params.yaml
    (tiny sizes) leaks into a paper run."""
    from drseg.models.drseg import make_config
    from stages.train import resolve_model_config

    params = apply_profile(with_profile(repo_params, name, weight_files))
    got = resolve_model_config(params, "full").to_dict()
    want = make_config(params["model"]["preset"], {
        "clip_checkpoint": weight_files["clip_checkpoint"],
        "prior_checkpoint": weight_files["prior_checkpoint"], "rho": 0.5}).to_dict()
    assert got == want


def test_profile_keys_lists_what_a_profile_sets():
    keys = profile_keys("paper-vitb16-dlrsd")
    assert "train.iterations" in keys and "model.k" in keys and "evaluate.nproc" in keys
    for user_key in ("prepare.archive_root", "train.nproc", "train.seed"):
        assert user_key not in keys
    assert not any(k.startswith("weights.") for k in keys)
    assert profile_keys("embedded") == []


# --------------------------------------------------------------------------- precedence

def test_precedence_params_then_profile_then_overrides(repo_params, weight_files):
    raw = with_profile(repo_params, "paper-vitb16-dlrsd", weight_files,
                       train={"iterations": 7, "nproc": 4, "seed": 3})
    before = copy.deepcopy(raw)
    p = apply_profile(raw)
    assert raw == before  # input untouched
    assert p["train"]["iterations"] == 30000  # the profile's key beats params.yaml
    assert p["train"]["nproc"] == 4 and p["train"]["seed"] == 3  # keys no profile sets: the user's
    assert p["evaluate"]["nproc"] == 4  # follows train.nproc

    raw["overrides"] = {"train": {"iterations": 1000, "nproc": 2}, "evaluate": {"nproc": 1},
                        "model": {"k": 50}, "variants": {"k20": {"k": 21}}}
    p = apply_profile(raw)
    assert p["train"]["iterations"] == 1000 and p["train"]["nproc"] == 2
    assert p["evaluate"]["nproc"] == 1  # an override beats the profile's reference
    assert p["model"]["k"] == 50 and p["variants"]["k20"]["k"] == 21
    assert p["train"]["lr"] == pytest.approx(2e-4)  # untouched profile keys stay

    # overrides also work under the embedded profile
    q = apply_profile({**repo_params, "overrides": {"train": {"iterations": 5}}})
    assert q["train"]["iterations"] == 5


def test_overrides_follow_train_nproc_set_by_an_override(repo_params, weight_files):
    raw = with_profile(repo_params, "paper-vitl14-isaid", weight_files)
    raw["overrides"] = {"train": {"nproc": 8}}
    assert apply_profile(raw)["evaluate"]["nproc"] == 8


@pytest.mark.parametrize("overrides, match", [
    ({"trian": {"iterations": 1}}, "overrides.trian"),
    ({"train": 5}, "overrides.train must be a mapping"),
    ({"train": {"iterations": {"a": 1}}}, "overrides.train.iterations"),
    ("train.iterations=5", "overrides must be a mapping"),
])
def test_bad_overrides_name_the_param(overrides, match, repo_params):
    with pytest.raises(DrsegInputError, match=match):
        apply_profile({**repo_params, "overrides": overrides})


def test_unknown_weights_key_and_profile_are_errors(repo_params):
    with pytest.raises(DrsegInputError, match="weights.clip_ckpt"):
        apply_profile({**repo_params, "weights": {"clip_ckpt": "/x.pt"}})
    with pytest.raises(DrsegInputError, match="profile 'paper'"):
        apply_profile({**repo_params, "profile": "paper"})


def test_paper_profiles_take_weights_and_gpu_count_by_reference():
    prof = PROFILES["paper-vitb16-dlrsd"]
    assert prof.values["evaluate"]["nproc"] == Ref("train.nproc")
    assert prof.values["model"]["clip_checkpoint"] == Ref("weights.clip_checkpoint")


# --------------------------------------------------------------------------- weights checks

def test_missing_weight_file_names_the_file_and_the_param(repo_params, weight_files, tmp_path):
    missing = tmp_path / "nowhere" / "ViT-B-16.pt"
    params = apply_profile(with_profile(repo_params, "paper-vitb16-dlrsd",
                                        {**weight_files, "clip_checkpoint": str(missing)}))
    with pytest.raises(DrsegInputError) as err:
        check_weights(params)
    msg = str(err.value)
    assert f"weights.clip_checkpoint: {missing} does not exist" in msg
    assert "dvc exp run -S weights.clip_checkpoint=" in msg
    assert "ViT-B-16.pt" in msg


def test_unset_weight_of_a_paper_profile_is_an_error(repo_params, weight_files):
    params = apply_profile(with_profile(repo_params, "paper-vitl14-dlrsd",
                                        {**weight_files, "prior_checkpoint": None}))
    with pytest.raises(DrsegInputError, match=r"weights.prior_checkpoint is not set; profile "
                                              r"paper-vitl14-dlrsd needs RS-DINOv3"):
        check_weights(params)
    params = apply_profile(with_profile(repo_params, "paper-vitl14-dlrsd",
                                        {**weight_files, "clip_checkpoint": None}))
    with pytest.raises(DrsegInputError, match=r"ViT-L-14-336px\.pt"):
        check_weights(params)


def test_weight_path_that_is_a_folder_is_an_error(repo_params, weight_files, tmp_path):
    params = with_profile(repo_params, "embedded", {"prior_checkpoint": str(tmp_path)})
    with pytest.raises(DrsegInputError, match="weights.prior_checkpoint: .* is not a file"):
        check_weights(apply_profile(params))
    ok = with_profile(repo_params, "paper-vitb16-isaid", weight_files)
    assert len(check_weights(apply_profile(ok))) == 3


def test_archive_root_is_checked_for_the_real_suite(repo_params, weight_files, tmp_path):
    params = apply_profile(with_profile(repo_params, "paper-vitb16-dlrsd", weight_files))
    with pytest.raises(DrsegInputError, match="prepare.archive_root must be set when prepare.suite is rskt"):
        check_inputs(params)
    params["prepare"]["archive_root"] = str(tmp_path / "absent")
    with pytest.raises(DrsegInputError, match="prepare.archive_root: .*absent is not a folder"):
        check_inputs(params)
    params["prepare"]["archive_root"] = str(tmp_path)
    check_inputs(params)


def test_first_stage_fails_before_any_work(repo_params, tmp_path, monkeypatch):
    """prepare under a paper profile without weights: the error names the param and nothing
    is written."""
    import stages.prepare as prepare

    raw = with_profile(repo_params, "paper-vitb16-dlrsd", prepare={"archive_root": str(tmp_path)})
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    out = tmp_path / "suite"
    with pytest.raises(DrsegInputError, match="weights.clip_checkpoint is not set"):
        prepare.main(["--out", str(out), "--cards", str(tmp_path / "cards"),
                      "--figure", str(tmp_path / "fig.png"), "--params", str(pfile)])
    assert not out.exists() and not (tmp_path / "cards").exists()


def test_load_params_applies_the_profile(repo_params, weight_files, tmp_path):
    from _common import clip_checkpoint, load_params

    raw = with_profile(repo_params, "paper-vitb16-isaid", weight_files,
                       prepare={"archive_root": str(tmp_path)})
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    params = load_params(pfile)
    assert params["train"]["dataset"] == "iSAID" and params["train"]["iterations"] == 30000
    # the CLIP file: the weights block under a paper profile, the dvc.yaml path otherwise
    assert clip_checkpoint(params, "data/clip/drseg-tiny-clip.pt") == weight_files["clip_checkpoint"]
    assert clip_checkpoint(apply_profile(repo_params), "data/clip/x.pt") == "data/clip/x.pt"


# --------------------------------------------------------------------------- stand-in weights

TINY_PRIOR = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}


def test_weight_files_flow_into_the_built_model(repo_params, tmp_path):
    """Stand-in checkpoints (random, seeded, tiny shapes) in the ``weights`` block reach the
    model a paper profile builds: its weights and outputs equal a reference model into which
    the same state dicts were loaded by hand, and differ from the random initialisation."""
    import timm

    from drseg.models import clip as clip_lib
    from drseg.models.drseg import build_model, make_config
    from stages.train import resolve_model_config

    clip_model, _ = clip_lib.load_open_clip("drseg-tiny-clip", None, image_size=64, seed=11)
    clip_state = clip_model.state_dict()
    clip_file = tmp_path / "tiny-clip.pt"
    torch.save(clip_state, clip_file)
    torch.manual_seed(12)
    dinov3 = timm.create_model("vit_small_patch16_dinov3", pretrained=False, num_classes=0,
                               img_size=64, **TINY_PRIOR)
    prior_file = tmp_path / "prior.pth"
    torch.save(dinov3.state_dict(), prior_file)
    torch.manual_seed(13)
    dinov1 = timm.create_model("vit_base_patch8_224", pretrained=False, num_classes=0,
                               img_size=64, **TINY_PRIOR)
    # a DINO v1 training checkpoint: weights under "teacher", keys "module.backbone."-prefixed
    v1_file = tmp_path / "rsib.pth"
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in dinov1.state_dict().items()},
                "epoch": 3}, v1_file)

    raw = with_profile(repo_params, "paper-vitb16-dlrsd",
                       {"clip_checkpoint": str(clip_file), "prior_checkpoint": str(prior_file),
                        "prior_dinov1_checkpoint": str(v1_file)})
    # shrink the paper model to the tiny shapes of the stand-ins (overrides beat the profile)
    raw["overrides"] = {"model": {"preset": "tiny", "prior": "vit_small_patch16_dinov3",
                                  "prior_kwargs": TINY_PRIOR, "k": 8},
                        "variants": {"prior-dinov1": {"prior_kwargs": TINY_PRIOR,
                                                      "prior_image_size": 64}}}
    params = apply_profile(raw)
    check_weights(params)
    cfg = resolve_model_config(params, "full")
    assert cfg.clip_checkpoint == str(clip_file) and cfg.prior_checkpoint == str(prior_file)
    model = build_model(cfg).eval()

    # reference: random-init tiny model, then the stand-in weights loaded by hand (the CLIP
    # through open_clip's own load_state_dict, then its packed q/k/v split as DRSeg does)
    ref = build_model(make_config("tiny", {"k": 8, "rho": 0.5})).eval()
    random_init = copy.deepcopy(ref)
    by_hand, _ = clip_lib.load_open_clip("drseg-tiny-clip", None, image_size=64, seed=0)
    by_hand.load_state_dict(clip_state)
    clip_lib.split_qkv(by_hand)
    ref.clip.load_state_dict(by_hand.state_dict())
    ref.prior.model.load_state_dict(dinov3.state_dict())
    torch.testing.assert_close(model.clip.state_dict(), ref.clip.state_dict())
    torch.testing.assert_close(model.prior.model.state_dict(), dinov3.state_dict())
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    vocab = ["building", "road", "tree, forest"]
    with torch.no_grad():
        out = model(images, vocab)
        torch.testing.assert_close(out, ref(images, vocab))
        assert not torch.allclose(out, random_init(images, vocab))

    # the Table 3 DINOv1 variant takes the RSIB-style file (teacher key and prefixes unwrapped)
    cfg1 = resolve_model_config(params, "prior-dinov1")
    assert cfg1.prior_checkpoint == str(v1_file)
    m1 = build_model(cfg1)
    torch.testing.assert_close(m1.prior.model.state_dict(), dinov1.state_dict())
    torch.testing.assert_close(m1.clip.state_dict(), ref.clip.state_dict())


# --------------------------------------------------------------------------- CUDA, paper sizes

def _fake_archive(root: Path, n: int = 3) -> None:
    """The eight datasets with their real folders and extensions; images of realistic sizes
    (DLRSD 256x256, others 512x384), masks of 32-px blocks (SPSD's purity rule needs pure
    cells); source datasets get all = train + val."""
    import numpy as np
    from PIL import Image

    from drseg.data.catalog import SUITES, get_dataset

    for i, name in enumerate(SUITES["rskt"]):
        spec = get_dataset(name)
        rng = np.random.default_rng(i)
        w, h = (256, 256) if name == "DLRSD" else (512, 384)
        fmt = {".jpg": "JPEG", ".JPG": "JPEG", ".png": "PNG"}[spec.image_ext]
        stems = {"train": [f"tr{j}" for j in range(n)], "val": [f"va{j}" for j in range(n)]}
        stems["all"] = (stems["train"] + stems["val"]) if spec.is_source else [f"im{j}" for j in range(n)]
        for split, d in spec.splits.items():
            (root / d.image_dir).mkdir(parents=True, exist_ok=True)
            (root / d.mask_dir).mkdir(parents=True, exist_ok=True)
            for s in stems[split]:
                blocks = rng.integers(0, spec.num_classes(), (h // 32, w // 32), dtype=np.uint8)
                mask = np.kron(blocks, np.ones((32, 32), dtype=np.uint8))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    root / d.image_dir / f"{s}{spec.image_ext}", format=fmt)
                Image.fromarray(mask, mode="L").save(root / d.mask_dir / f"{s}.png")


@pytest.mark.gpu
@pytest.mark.slow
def test_paper_profile_runs_on_cuda_with_full_size_stand_ins(repo_params, tmp_path):
    """paper-vitb16-dlrsd end to end on one GPU (prepare, SPSD, a few training iterations,
    noslide evaluation of all eight datasets) with *random* full-size stand-in checkpoints in
    the release layouts: OpenAI ViT-B/16 state dict (224 px position embeddings, resized to
    384 on load), DINOv3 ViT-L/16 and an RSIB-style DINO v1 file. Shapes, devices and the
    wiring are real; the weights are not, so no number here means anything."""
    import json
    import os
    import time

    import open_clip
    import timm

    import stages.spsd as spsd_stage
    from _common import clip_checkpoint, load_params
    from drseg.data.archive import prepare_real_suite, resolve_root
    from drseg.data.dataset import open_split
    from drseg.engine.distributed import init_distributed
    from drseg.engine.evaluate import EvalConfig, EvalItem, evaluate_suite
    from drseg.engine.train import TrainConfig, train
    from drseg.models.drseg import build_model
    from stages.evaluate import DATA_KEYS as EVAL_DATA_KEYS
    from stages.train import resolve_model_config, train_block

    archive = tmp_path / "archive"
    _fake_archive(archive)
    wdir = tmp_path / "weights"
    wdir.mkdir()
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    torch.save(clip.state_dict(), wdir / "ViT-B-16.pt")
    del clip
    torch.save(timm.create_model("vit_large_patch16_dinov3", num_classes=0).state_dict(),
               wdir / "dinov3_vitl16_pretrain_sat493m.pth")
    v1 = timm.create_model("vit_base_patch8_224", num_classes=0).state_dict()
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in v1.items()}},
               wdir / "rsib_dino_vitb8.pth")
    iterations = int(os.environ.get("DRSEG_SMOKE_ITERATIONS", "12"))
    raw = with_profile(repo_params, "paper-vitb16-dlrsd",
                       {"clip_checkpoint": str(wdir / "ViT-B-16.pt"),
                        "prior_checkpoint": str(wdir / "dinov3_vitl16_pretrain_sat493m.pth"),
                        "prior_dinov1_checkpoint": str(wdir / "rsib_dino_vitb8.pth")},
                       prepare={"archive_root": str(archive)})
    raw["overrides"] = {"train": {"iterations": iterations, "checkpoint_every": iterations,
                                  "log_every": 4, "num_workers": 4},
                        "spsd": {"num_workers": 0, "num_prototypes": 4},
                        "evaluate": {"num_workers": 2}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    params = load_params(pfile)
    timings = {}

    suite = tmp_path / "suite"
    prepare_real_suite(suite, archive_root=params["prepare"]["archive_root"],
                       cards_dir=tmp_path / "cards", figure=tmp_path / "datasets.png")
    root = resolve_root(suite)

    t = time.perf_counter()
    spsd_summary = spsd_stage.run(suite, Path(clip_checkpoint(params, None)), tmp_path / "spsd",
                                  tmp_path / "spsd.json", params["spsd"], params["model"],
                                  progress=False)
    timings["spsd_s"] = time.perf_counter() - t
    assert spsd_summary["channels"] == 512  # ViT-B/16 dense width
    index = json.loads((tmp_path / "spsd" / "channel_index.json").read_text())

    loop, data = train_block(params, "full")
    model_cfg = resolve_model_config(params, "full")
    cfg = TrainConfig.from_params(loop)
    assert (cfg.crop, cfg.batch_size, cfg.device) == (384, 8, "cuda")
    info = init_distributed(cfg.device)
    dataset = open_split(root, data["dataset"], data["split"], data["class_list_variant"])
    t = time.perf_counter()
    model = build_model(model_cfg, channel_index=index)
    timings["build_s"] = time.perf_counter() - t
    counts = model.parameter_counts()
    model.to(info.device)
    torch.cuda.reset_peak_memory_stats()
    result = train(model, dataset, dataset.classes, cfg, tmp_path / "run",
                   model_cfg=model_cfg.to_dict(), train_dataset=data["dataset"],
                   channel_index=model.channel_index, dist_info=info, progress=False)
    timings.update(train_s=result.wall_s, train_iterations=result.iterations,
                   train_peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    assert result.iterations == iterations and torch.isfinite(torch.tensor(result.final_loss))
    saved = torch.load(tmp_path / "run" / "model_final.pt", map_location="cpu", weights_only=False)
    assert saved["model_cfg"]["clip_model"] == "ViT-B-16-quickgelu"
    assert saved["model_cfg"]["image_size"] == 384 and saved["train_dataset"] == "DLRSD"

    block = {k: v for k, v in params["evaluate"].items() if k not in EVAL_DATA_KEYS}
    ecfg = EvalConfig.from_params(block)
    items = []
    for name in EIGHT:
        ds = open_split(root, name, "all", "rskt-v1")
        items.append(EvalItem(name, ds, ds.classes, name, "all", "rskt-v1"))
    model.eval()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    summary = evaluate_suite(model, items, ecfg, tmp_path / "metrics", variant="full",
                             dist_info=info, progress=False)
    timings["eval_s"] = time.perf_counter() - t
    timings["eval_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    assert summary["mode"] == "noslide" and sorted(summary["datasets"]) == sorted(EIGHT)
    report = {"device": torch.cuda.get_device_name(0), "parameter_counts": counts, **timings}
    print("paper-profile smoke:", json.dumps(report))
    if os.environ.get("DRSEG_SMOKE_OUT"):
        Path(os.environ["DRSEG_SMOKE_OUT"]).write_text(json.dumps(report, indent=2) + "\n")
