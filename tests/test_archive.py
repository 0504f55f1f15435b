"""Archive scan over a fake copy of the 8-dataset archive, and the prepare stage (both suites)."""
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from drseg.data.archive import load_suite, prepare_real_suite, resolve_root, scan
from drseg.data.catalog import SUITES, get_dataset
from drseg.data.dataset import open_split
from drseg.errors import DrsegInputError
from stages import prepare as prepare_stage


def _fake_dataset(root, name, n=2, size=(12, 10), seed=0):
    """Tiny images with the dataset's real extension and valid masks in every split folder;
    source datasets get all = train + val."""
    spec = get_dataset(name)
    rng = np.random.default_rng(seed)
    k = spec.num_classes()
    fmt = {".jpg": "JPEG", ".JPG": "JPEG", ".png": "PNG"}[spec.image_ext]
    stems = {"train": [f"tr{i}" for i in range(n)], "val": [f"va{i}" for i in range(n)]}
    stems["all"] = stems["train"] + stems["val"] if spec.is_source else [f"im{i}" for i in range(n)]
    for split, d in spec.splits.items():
        (root / d.image_dir).mkdir(parents=True, exist_ok=True)
        (root / d.mask_dir).mkdir(parents=True, exist_ok=True)
        for s in stems[split]:
            w, h = size
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / d.image_dir / f"{s}{spec.image_ext}", format=fmt)
            Image.fromarray(rng.integers(0, k, (h, w), dtype=np.uint8), mode="L").save(
                root / d.mask_dir / f"{s}.png")


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    for i, name in enumerate(SUITES["rskt"]):
        _fake_dataset(root, name, seed=i)
    return root


def test_scan_finds_all_eight_with_exact_layout(archive):
    res = scan(archive)
    assert list(res.datasets) == list(SUITES["rskt"]) and res.missing == []
    assert (archive / "UDD5/all/src/im0.JPG").is_file() and (archive / "DLRSD/imgs/tr0.jpg").is_file()
    dl = res.datasets["DLRSD"]
    assert set(dl.splits) == {"train", "val", "all"} and len(dl.splits["all"]) == 4
    assert dl.classes[0] == "airplane" and len(dl.classes) == 17
    pairs = res.datasets["UDD5"].splits["all"]
    assert [(p[0].name, p[1].name) for p in pairs] == [("im0.JPG", "im0.png"), ("im1.JPG", "im1.png")]
    assert scan(archive, variant="pi-seg-v1").datasets["LoveDA"].classes[0] == "Background"


def test_scan_reports_missing_and_rejects_partial_or_malformed(archive):
    import shutil

    shutil.rmtree(archive / "VDD")
    shutil.rmtree(archive / "uavid")
    res = scan(archive)
    assert res.missing == ["UAVid", "VDD"] and "VDD" not in res.datasets
    shutil.rmtree(archive / "DLRSD")  # DLRSD_split stays: partly present
    with pytest.raises(DrsegInputError, match=r"DLRSD/imgs: dataset DLRSD is partly present: split 'all'"):
        scan(archive)
    shutil.rmtree(archive / "DLRSD_split")
    (archive / "Potsdam/D2masks/im1.png").unlink()
    with pytest.raises(DrsegInputError, match=r"Potsdam/imgs/im1\.png: image without mask"):
        scan(archive)
    with pytest.raises(DrsegInputError, match="archive root not found"):
        scan(archive / "nope")


def test_prepare_real_suite_reads_in_place(archive, tmp_path):
    out = tmp_path / "suite"
    counts = prepare_real_suite(out, archive, tmp_path / "cards", tmp_path / "fig" / "datasets.png",
                                variants=["rskt-v1", "pi-seg-v1"], figure_samples=2)
    assert counts["DLRSD"] == {"train": 2, "val": 2, "all": 4} and counts["VDD"] == {"all": 2}
    assert [p.name for p in out.iterdir()] == ["suite.json"]  # nothing copied
    assert resolve_root(out) == archive.resolve()
    info = load_suite(out)
    assert info["suite"] == "rskt" and info["missing"] == [] and info["sources"] == ["DLRSD", "iSAID"]
    card = json.loads((tmp_path / "cards" / "LoveDA.json").read_text())
    assert card["splits"]["all"]["images"] == 2
    assert set(card["splits"]["all"]["class_pixels"]) == {"rskt-v1", "pi-seg-v1"}
    assert json.loads((tmp_path / "cards" / "DLRSD.json").read_text())["all_is_train_plus_val"]
    assert (tmp_path / "fig" / "datasets.pdf").is_file()
    ds = open_split(resolve_root(out), "UDD5")
    assert len(ds) == 2


def _params(tmp_path, **prepare):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"prepare": prepare}))
    return p


def _run(tmp_path, params, tag):
    args = ["--out", str(tmp_path / tag / "synth"), "--cards", str(tmp_path / tag / "cards"),
            "--figure", str(tmp_path / tag / "fig" / "datasets.png"), "--params", str(params)]
    assert prepare_stage.main(args) == 0
    return tmp_path / tag


def test_prepare_stage_synth_is_byte_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    params = _params(tmp_path, suite="synth", seed=3, image_size=32, train_images=2, val_images=1,
                     target_images=1, variants=["rskt-v1"], figure_samples=1)
    a, b = _run(tmp_path, params, "a"), _run(tmp_path, params, "b")
    fa = {p.relative_to(a).as_posix(): p.read_bytes() for p in sorted(a.rglob("*")) if p.is_file()}
    fb = {p.relative_to(b).as_posix(): p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()}
    assert fa == fb
    assert {f"cards/{n}.json" for n in SUITES["synth"]} <= set(fa)
    assert "fig/datasets.png" in fa and "fig/datasets.pdf" in fa and "synth/suite.json" in fa
    assert resolve_root(a / "synth") == a / "synth"
    assert len(open_split(a / "synth", "synth_source", "all")) == 3
    # rerun in place replaces its own output
    _run(tmp_path, params, "a")


def test_prepare_stage_refuses_foreign_folder_and_bad_params(tmp_path, archive):
    foreign = tmp_path / "x" / "synth"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("keep me")
    params = _params(tmp_path, suite="synth", seed=0, image_size=32, train_images=1, val_images=1,
                     target_images=1)
    with pytest.raises(DrsegInputError, match="was not written by prepare"):
        _run(tmp_path, params, "x")
    assert (foreign / "precious.txt").read_text() == "keep me"
    with pytest.raises(DrsegInputError, match="prepare.archive_root must be set"):
        _run(tmp_path, _params(tmp_path, suite="rskt", archive_root=None), "y")
    with pytest.raises(DrsegInputError, match="prepare.suite must be synth or rskt"):
        _run(tmp_path, _params(tmp_path, suite="real"), "y")
    with pytest.raises(DrsegInputError, match="prepare.train_images must be >= 1"):
        _run(tmp_path, _params(tmp_path, suite="synth", seed=0, image_size=32, train_images=0,
                               val_images=1, target_images=1), "y")
    out = _run(tmp_path, _params(tmp_path, suite="rskt", archive_root=str(archive), figure_samples=1), "z")
    assert load_suite(out / "synth")["suite"] == "rskt"
