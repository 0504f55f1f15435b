"""Dataset reader: pairing, validation errors, items, cards, figure."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from drseg.data.catalog import get_dataset
from drseg.data.dataset import (dataset_card, list_pairs, open_split, read_image, sample_figure,
                                write_card)
from drseg.errors import DrsegInputError


def _write(root, name, split, stems, size=(20, 16), ids=None, ext=None, seed=0):
    """Write images and masks of catalog dataset ``name`` / ``split`` under ``root``."""
    spec = get_dataset(name)
    d = spec.split(split)
    (root / d.image_dir).mkdir(parents=True, exist_ok=True)
    (root / d.mask_dir).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = spec.num_classes()
    w, h = size
    for stem in stems:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / d.image_dir / f"{stem}{ext or spec.image_ext}",
                                  format="PNG" if (ext or spec.image_ext).lower() == ".png" else "JPEG")
        mask = rng.integers(0, n, (h, w), dtype=np.uint8) if ids is None else np.full((h, w), ids, np.uint8)
        mask[0, 0] = 255
        Image.fromarray(mask, mode="L").save(root / d.mask_dir / f"{stem}.png")
    return root / d.image_dir, root / d.mask_dir


def test_items_have_the_contract_types(tmp_path):
    _write(tmp_path, "Potsdam", "all", ["b", "a", "c"])
    ds = open_split(tmp_path, "Potsdam")
    assert len(ds) == 3 and ds.num_classes == 6 and ds.variant == "rskt-v1"
    assert [p[0].stem for p in ds.pairs] == ["a", "b", "c"]
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 16, 20)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (16, 20)
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 255
    assert item["path"].endswith("a.png") and int(item["mask"][0, 0]) == 255
    raw = np.array(Image.open(ds.pairs[0][0]))
    torch.testing.assert_close(item["image"], torch.from_numpy(raw).permute(2, 0, 1).float())
    assert ds.transform is None
    ds2 = open_split(tmp_path, "Potsdam", transform=lambda it: {**it, "flag": 1})
    assert ds2[0]["flag"] == 1


def test_variant_remap_is_applied(tmp_path):
    _write(tmp_path, "LoveDA", "all", ["x"], ids=0)  # stored 0 = no-data
    m_rskt = open_split(tmp_path, "LoveDA")[0]["mask"]
    m_pi = open_split(tmp_path, "LoveDA", variant="pi-seg-v1")[0]["mask"]
    assert int(m_rskt[1, 1]) == 0 and int(m_pi[1, 1]) == 255
    _write(tmp_path, "LoveDA", "all", ["x"], ids=3)  # Road
    assert int(open_split(tmp_path, "LoveDA", variant="pi-seg-v1")[0]["mask"][1, 1]) == 2


def test_mixed_case_extensions_are_paired(tmp_path):
    _write(tmp_path, "UDD5", "all", ["DJI_0001", "DJI_0002"])
    pairs = list_pairs(tmp_path / "UDD5/all/src", tmp_path / "UDD5/all/gt")
    assert [p[0].name for p in pairs] == ["DJI_0001.JPG", "DJI_0002.JPG"]


def test_mask_without_image(tmp_path):
    img_dir, mask_dir = _write(tmp_path, "Potsdam", "all", ["a", "b"])
    (img_dir / "b.png").unlink()
    with pytest.raises(DrsegInputError, match=r"b\.png: mask without image"):
        open_split(tmp_path, "Potsdam")


def test_image_without_mask(tmp_path):
    img_dir, mask_dir = _write(tmp_path, "Potsdam", "all", ["a", "b"])
    (mask_dir / "a.png").unlink()
    with pytest.raises(DrsegInputError, match=r"imgs/a\.png: image without mask"):
        open_split(tmp_path, "Potsdam")


def test_size_mismatch(tmp_path):
    img_dir, mask_dir = _write(tmp_path, "Potsdam", "all", ["a"])
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(mask_dir / "a.png")
    with pytest.raises(DrsegInputError, match=r"D2masks/a\.png: size 8x8 does not match its image .*20x16"):
        open_split(tmp_path, "Potsdam")[0]


def test_label_ids_out_of_range(tmp_path):
    _img_dir, mask_dir = _write(tmp_path, "Potsdam", "all", ["a"], ids=6)
    with pytest.raises(DrsegInputError, match=r"a\.png: label ids \[6\] >= number of classes 6"):
        open_split(tmp_path, "Potsdam")[0]


def test_unreadable_image(tmp_path):
    img_dir, _ = _write(tmp_path, "Potsdam", "all", ["a"])
    (img_dir / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(DrsegInputError, match=r"a\.png: unreadable or truncated image"):
        open_split(tmp_path, "Potsdam")[0]


@pytest.mark.parametrize("name", ["Potsdam", "DLRSD"])  # png and jpg
def test_truncated_image(tmp_path, name):
    split = "all"
    img_dir, _ = _write(tmp_path, name, split, ["a"], size=(64, 64))
    p = next(img_dir.iterdir())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DrsegInputError, match="unreadable or truncated image"):
        read_image(p)


def test_empty_and_missing_split(tmp_path):
    _write(tmp_path, "Potsdam", "all", [])
    with pytest.raises(DrsegInputError, match="empty split"):
        open_split(tmp_path, "Potsdam")
    with pytest.raises(DrsegInputError, match=r"Vaihingen/imgs: image folder not found"):
        open_split(tmp_path, "Vaihingen")


def test_rgb_mask_is_rejected(tmp_path):
    _img_dir, mask_dir = _write(tmp_path, "Potsdam", "all", ["a"])
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(mask_dir / "a.png")
    with pytest.raises(DrsegInputError, match="mode RGB, expected a single-channel"):
        open_split(tmp_path, "Potsdam")[0]


def test_duplicate_stems_are_an_error(tmp_path):
    img_dir, _ = _write(tmp_path, "Potsdam", "all", ["a"])
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(img_dir / "a.jpg")
    with pytest.raises(DrsegInputError, match="share the stem 'a'"):
        open_split(tmp_path, "Potsdam")


def test_card_counts_frequencies_and_hashes(tmp_path):
    _write(tmp_path, "DLRSD", "train", ["t1", "t2"], size=(10, 8))
    _write(tmp_path, "DLRSD", "val", ["v1"], size=(10, 8), seed=1)
    _write(tmp_path, "DLRSD", "all", ["t1", "t2"], size=(10, 8))
    _write(tmp_path, "DLRSD", "all", ["v1"], size=(10, 8), seed=1)
    card = dataset_card(tmp_path, "DLRSD", progress=False)
    assert {s: v["images"] for s, v in card["splits"].items()} == {"train": 2, "val": 1, "all": 3}
    assert card["all_is_train_plus_val"] and card["train_val_overlap"] == 0
    assert card["splits"]["all"]["image_sizes"] == {"10x8": 3}
    cp = card["splits"]["all"]["class_pixels"]["rskt-v1"]
    assert sum(cp["pixels"]) + cp["ignore_pixels"] == 3 * 80 and cp["ignore_pixels"] == 3
    assert abs(sum(cp["frequency"]) - 1.0) < 1e-4 and len(cp["classes"]) == 17
    # pixel counts equal a direct count over the masks
    direct = np.zeros(17, int)
    for p in sorted((tmp_path / "DLRSD/D2masks").iterdir()):
        m = np.asarray(Image.open(p))
        direct += np.bincount(m[m != 255], minlength=17)
    assert cp["pixels"] == direct.tolist()
    again = dataset_card(tmp_path, "DLRSD", progress=False)
    assert again == card
    (tmp_path / "DLRSD/imgs/t2.jpg").rename(tmp_path / "DLRSD/imgs/t3.jpg")
    (tmp_path / "DLRSD/D2masks/t2.png").rename(tmp_path / "DLRSD/D2masks/t3.png")
    moved = dataset_card(tmp_path, "DLRSD", progress=False)
    assert moved["splits"]["all"]["file_list_sha256"] != card["splits"]["all"]["file_list_sha256"]
    assert not moved["all_is_train_plus_val"]
    out = write_card(card, tmp_path / "cards" / "DLRSD.json")
    assert json.loads(out.read_text()) == card


def test_sample_figure_is_byte_stable(tmp_path):
    _write(tmp_path, "Potsdam", "all", ["a", "b", "c"])
    _write(tmp_path, "VDD", "all", ["a", "b"])
    p1 = sample_figure(tmp_path, ["Potsdam", "VDD"], tmp_path / "f1" / "fig.png", samples=2)
    p2 = sample_figure(tmp_path, ["Potsdam", "VDD"], tmp_path / "f2" / "fig.png", samples=2)
    assert [p.suffix for p in p1] == [".png", ".pdf"]
    for a, b in zip(p1, p2):
        assert a.read_bytes() == b.read_bytes()
