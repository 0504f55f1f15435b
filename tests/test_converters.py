"""Converters from official releases: colour decoding, crops, mode "L" masks, unknown colours."""
import numpy as np
import pytest
from PIL import Image

from drseg.data.catalog import IGNORE
from drseg.data.converters import (CODINGS, colors_to_ids, convert_isaid, convert_isprs, convert_loveda,
                                   convert_uavid, convert_udd5, convert_vdd, crop_starts, save_mask)
from drseg.data.dataset import open_split
from drseg.errors import DrsegInputError


def _colour_label(ids, coding, rng=None):
    """Colour image of an id map under ``coding`` (the inverse of the converter)."""
    lut = {k: c for c, k in coding.colors}
    out = np.zeros(ids.shape + (3,), np.uint8)
    for k, c in lut.items():
        out[ids == k] = c
    return out


def _ids(rng, shape, n):
    return rng.integers(0, n, shape, dtype=np.uint8)


def _img(rng, shape):
    return rng.integers(0, 256, shape + (3,), dtype=np.uint8)


def test_crop_starts_cover_and_align():
    assert crop_starts(10, 4, 4) == [0, 4, 6]
    assert crop_starts(8, 4, 2) == [0, 2, 4]
    assert crop_starts(3, 4, 4) == [0]
    with pytest.raises(DrsegInputError, match="stride must be > 0"):
        crop_starts(10, 4, 0)


def test_colors_to_ids_and_unknown_colour():
    coding = CODINGS["Potsdam"]
    rng = np.random.default_rng(0)
    ids = _ids(rng, (9, 7), 6)
    rgb = _colour_label(ids, coding)
    np.testing.assert_array_equal(colors_to_ids(rgb, coding.colors, "x.png"), ids)
    rgb[4, 3] = (10, 20, 30)
    with pytest.raises(DrsegInputError, match=r"lab\.tif: unknown label colour \(10, 20, 30\) \(1 pixels, first at row 4, col 3\)"):
        colors_to_ids(rgb, coding.colors, "lab.tif")
    out = colors_to_ids(rgb, coding.colors, "lab.tif", unknown_to_ignore=True)
    assert out[4, 3] == IGNORE
    np.testing.assert_array_equal(np.delete(out.ravel(), 4 * 7 + 3), np.delete(ids.ravel(), 4 * 7 + 3))


def test_save_mask_writes_mode_L(tmp_path):
    ids = np.array([[0, 5], [255, 3]], np.uint8)
    p = save_mask(ids, tmp_path / "m.png")
    with Image.open(p) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), ids)
    with pytest.raises(DrsegInputError, match="refusing to overwrite"):
        save_mask(ids, p)


@pytest.mark.parametrize("dataset", ["Potsdam", "Vaihingen"])
def test_isprs_tiles_to_crops(tmp_path, dataset):
    rng = np.random.default_rng(1)
    coding = CODINGS[dataset]
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    ids = _ids(rng, (10, 12), 6)
    ids[0, 0] = IGNORE  # black boundary pixel of the eroded release
    img = _img(rng, (10, 12))
    if dataset == "Potsdam":
        Image.fromarray(img).save(tmp_path / "img" / "top_potsdam_2_10_RGB.tif")
        Image.fromarray(_colour_label(ids, coding)).save(tmp_path / "lab" / "top_potsdam_2_10_label.tif")
    else:
        Image.fromarray(img).save(tmp_path / "img" / "top_mosaic_09cm_area1.tif")
        Image.fromarray(_colour_label(ids, coding)).save(tmp_path / "lab" / "top_mosaic_09cm_area1.tif")
    out = tmp_path / "archive"
    n = convert_isprs(tmp_path / "img", tmp_path / "lab", out, dataset=dataset, crop=6, stride=6)
    assert n == 2 * 2  # rows [0, 4], cols [0, 6]
    ds = open_split(out, dataset)
    assert len(ds) == 4
    key = "top_potsdam_2_10" if dataset == "Potsdam" else "top_mosaic_09cm_area1"
    m = np.asarray(Image.open(out / dataset / "D2masks" / f"{key}_4_6.png"))
    assert Image.open(out / dataset / "D2masks" / f"{key}_4_6.png").mode == "L"
    np.testing.assert_array_equal(m, ids[4:10, 6:12])
    np.testing.assert_array_equal(np.asarray(Image.open(out / dataset / "imgs" / f"{key}_4_6.png")), img[4:10, 6:12])
    # unknown colour: error naming the file, or ignore with the flag
    bad = _colour_label(ids, coding)
    bad[2, 2] = (1, 2, 3)
    Image.fromarray(bad).save(next((tmp_path / "lab").iterdir()))
    with pytest.raises(DrsegInputError, match=r"unknown label colour \(1, 2, 3\)"):
        convert_isprs(tmp_path / "img", tmp_path / "lab", tmp_path / "o2", dataset=dataset, crop=6, stride=6)
    convert_isprs(tmp_path / "img", tmp_path / "lab", tmp_path / "o3", dataset=dataset, crop=6, stride=6,
                  unknown_to_ignore=True)
    assert np.asarray(Image.open(tmp_path / "o3" / dataset / "D2masks" / f"{key}_0_0.png"))[2, 2] == IGNORE
    with pytest.raises(DrsegInputError, match="refusing to overwrite"):
        convert_isprs(tmp_path / "img", tmp_path / "lab", tmp_path / "o3", dataset=dataset, crop=6, stride=6,
                      unknown_to_ignore=True)


def test_uavid_sequences(tmp_path):
    rng = np.random.default_rng(2)
    coding = CODINGS["UAVid"]
    truth = {}
    for split, seq in (("uavid_train", "seq1"), ("uavid_val", "seq16")):
        d = tmp_path / "rel" / split / seq
        (d / "Images").mkdir(parents=True)
        (d / "Labels").mkdir(parents=True)
        ids = _ids(rng, (6, 8), 8)
        Image.fromarray(_img(rng, (6, 8))).save(d / "Images" / "000000.png")
        Image.fromarray(_colour_label(ids, coding)).save(d / "Labels" / "000000.png")
        truth[f"{split}_{seq}_000000"] = ids
    assert convert_uavid(tmp_path / "rel", tmp_path / "out") == 2
    ds = open_split(tmp_path / "out", "UAVid")
    assert sorted(p[0].stem for p in ds.pairs) == sorted(truth)
    for i, (ip, _mp) in enumerate(ds.pairs):
        np.testing.assert_array_equal(ds[i]["mask"].numpy(), truth[ip.stem])


@pytest.mark.parametrize("dataset,convert,n", [("UDD5", convert_udd5, 5), ("VDD", convert_vdd, 7)])
def test_udd5_vdd_colour_and_id_labels(tmp_path, dataset, convert, n):
    rng = np.random.default_rng(3)
    coding = CODINGS[dataset]
    ids_a, ids_b = _ids(rng, (6, 8), n), _ids(rng, (6, 8), n)
    for split, stem, ids, colour in (("train", "DJI_0001", ids_a, True), ("val", "DJI_0002", ids_b, False)):
        d = tmp_path / "rel" / split
        (d / "src").mkdir(parents=True)
        (d / "gt").mkdir(parents=True)
        Image.fromarray(_img(rng, (6, 8))).save(d / "src" / f"{stem}.JPG", format="JPEG")
        Image.fromarray(_colour_label(ids, coding) if colour else ids).save(d / "gt" / f"{stem}.png")
    assert convert(tmp_path / "rel", tmp_path / "out") == 2
    ds = open_split(tmp_path / "out", dataset)
    assert [p[0].name for p in ds.pairs] == ["DJI_0001.JPG", "DJI_0002.JPG"]
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), ids_a)
    np.testing.assert_array_equal(ds[1]["mask"].numpy(), ids_b)
    # the JPG is copied byte for byte
    assert (tmp_path / "rel/train/src/DJI_0001.JPG").read_bytes() == ds.pairs[0][0].read_bytes()
    bad = ids_b.copy()
    bad[0, 0] = n + 3
    Image.fromarray(bad).save(tmp_path / "rel/val/gt/DJI_0002.png")
    with pytest.raises(DrsegInputError, match=rf"DJI_0002\.png: unknown label ids \[{n + 3}\]"):
        convert(tmp_path / "rel", tmp_path / "out2")


def test_loveda_ids_and_name_clash(tmp_path):
    rng = np.random.default_rng(4)
    truth = {}
    for part, stem in (("Train/Urban", "1366"), ("Train/Rural", "0"), ("Val/Urban", "3514")):
        d = tmp_path / "rel" / part
        (d / "images_png").mkdir(parents=True)
        (d / "masks_png").mkdir(parents=True)
        ids = _ids(rng, (5, 5), 8)
        Image.fromarray(_img(rng, (5, 5))).save(d / "images_png" / f"{stem}.png")
        Image.fromarray(ids, mode="L").save(d / "masks_png" / f"{stem}.png")
        truth[stem] = ids
    assert convert_loveda(tmp_path / "rel", tmp_path / "out") == 3
    ds = open_split(tmp_path / "out", "LoveDA")
    for i, (ip, _) in enumerate(ds.pairs):
        np.testing.assert_array_equal(ds[i]["mask"].numpy(), truth[ip.stem])
    d = tmp_path / "rel" / "Val/Rural"
    (d / "images_png").mkdir(parents=True)
    (d / "masks_png").mkdir(parents=True)
    Image.fromarray(_img(rng, (5, 5))).save(d / "images_png" / "0.png")
    Image.fromarray(_ids(rng, (5, 5), 8), mode="L").save(d / "masks_png" / "0.png")
    with pytest.raises(DrsegInputError, match="output name '0' also produced by"):
        convert_loveda(tmp_path / "rel", tmp_path / "out3")
    rgb_dir = tmp_path / "rgb" / "x"
    (rgb_dir / "images_png").mkdir(parents=True)
    (rgb_dir / "masks_png").mkdir(parents=True)
    Image.fromarray(_img(rng, (5, 5))).save(rgb_dir / "images_png" / "9.png")
    Image.fromarray(_img(rng, (5, 5))).save(rgb_dir / "masks_png" / "9.png")
    with pytest.raises(DrsegInputError, match="LoveDA labels must be single-channel ids"):
        convert_loveda(tmp_path / "rgb", tmp_path / "out4")


def test_isaid_patches_into_split_and_all(tmp_path):
    rng = np.random.default_rng(5)
    coding = CODINGS["iSAID"]
    for split, name in (("train", "P0001"), ("val", "P0002")):
        d = tmp_path / split
        (d / "images").mkdir(parents=True)
        (d / "sem").mkdir(parents=True)
        ids = rng.integers(0, 15, (8, 8), dtype=np.uint8)
        ids[:2] = IGNORE  # background
        Image.fromarray(_img(rng, (8, 8))).save(d / "images" / f"{name}.png")
        Image.fromarray(_colour_label(ids, coding)).save(d / "sem" / f"{name}_instance_color_RGB.png")
        assert convert_isaid(d / "images", d / "sem", tmp_path / "out", split, crop=4, stride=4) == 4
    assert len(open_split(tmp_path / "out", "iSAID", "train")) == 4
    assert len(open_split(tmp_path / "out", "iSAID", "val")) == 4
    full = open_split(tmp_path / "out", "iSAID", "all")
    assert len(full) == 8
    m = full[0]["mask"].numpy()
    assert (m[:2] == IGNORE).all()  # background stays ignore under rskt-v1
    seg = open_split(tmp_path / "out", "iSAID", "all", variant="segearth-ov")[0]["mask"].numpy()
    assert (seg[:2] == 0).all() and (seg[2:] >= 1).all()
    with pytest.raises(DrsegInputError, match="split must be train or val"):
        convert_isaid(tmp_path / "train/images", tmp_path / "train/sem", tmp_path / "o", "all")


def test_convert_cli(tmp_path):
    from stages import convert

    rng = np.random.default_rng(6)
    d = tmp_path / "rel" / "train"
    (d / "src").mkdir(parents=True)
    (d / "gt").mkdir(parents=True)
    Image.fromarray(_img(rng, (4, 4))).save(d / "src" / "a.JPG", format="JPEG")
    Image.fromarray(_ids(rng, (4, 4), 5)).save(d / "gt" / "a.png")
    assert convert.main(["udd5", "--src", str(tmp_path / "rel"), "--out", str(tmp_path / "out")]) == 0
    assert len(open_split(tmp_path / "out", "UDD5")) == 1
    with pytest.raises(SystemExit):
        convert.main(["potsdam", "--out", str(tmp_path / "out")])
