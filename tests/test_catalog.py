"""The dataset catalog: real benchmarks against PROTOCOL.md, variants, the synthetic suite."""
import re
from pathlib import Path

import numpy as np
import pytest

from drseg.data.catalog import (DATASETS, DEFAULT_VARIANT, IGNORE, REAL, SOURCES, SUITES, SYNTH,
                                VARIANTS, class_names, get_dataset)
from drseg.data.synth import CONCEPTS, DOMAINS
from drseg.errors import DrsegInputError

PROTOCOL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "PROTOCOL.md"

# Transcribed from PROTOCOL.md section 1 ("rskt-v1").
EXPECTED = {
    "DLRSD": "airplane, bare soil, buildings, cars, chaparral, court, dock, field, grass, mobile home, "
             "pavement, sand, sea, ship, tanks, trees, water",
    "iSAID": "ship, storage tank, baseball diamond, tennis court, basketball court, ground track field, "
             "bridge, large vehicle, small vehicle, helicopter, swimming pool, roundabout, "
             "soccer ball field, plane, harbor",
    "Potsdam": "Impervious surfaces, Building, Low vegetation, Tree, Car, Clutter/background",
    "Vaihingen": "Impervious surfaces, Building, Low vegetation, Tree, Car, Clutter/background",
    "LoveDA": "no-data, Background, Building, Road, Water, Barren, Forest, Agriculture",
    "UAVid": "Background clutter, Building, Road, Tree, Low vegetation, Moving car, Static car, Human",
    "UDD5": "Vegetation, Building, Road, Vehicle, Other",
    "VDD": "Other, Wall, Road, Vegetation, Vehicle, Roof, Water",
}
LAYOUT = {  # dataset: ({split: (image dir, mask dir)}, ext, #classes)
    "DLRSD": ({"train": ("DLRSD_split/train/imgs", "DLRSD_split/train/D2masks"),
               "val": ("DLRSD_split/val/imgs", "DLRSD_split/val/D2masks"),
               "all": ("DLRSD/imgs", "DLRSD/D2masks")}, ".jpg", 17),
    "iSAID": ({"train": ("iSAID_split/train/imgs", "iSAID_split/train/D2masks"),
               "val": ("iSAID_split/val/imgs", "iSAID_split/val/D2masks"),
               "all": ("iSAID/imgs", "iSAID/D2masks")}, ".png", 15),
    "Potsdam": ({"all": ("Potsdam/imgs", "Potsdam/D2masks")}, ".png", 6),
    "Vaihingen": ({"all": ("Vaihingen/imgs", "Vaihingen/D2masks")}, ".png", 6),
    "LoveDA": ({"all": ("LoveDA/images_png", "LoveDA/masks_png")}, ".png", 8),
    "UAVid": ({"all": ("uavid/Images", "uavid/Labels")}, ".png", 8),
    "UDD5": ({"all": ("UDD5/all/src", "UDD5/all/gt")}, ".JPG", 5),
    "VDD": ({"all": ("VDD/src", "VDD/gt")}, ".JPG", 7),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rskt_v1_lists_and_layout(name):
    assert class_names(name) == EXPECTED[name].split(", ")
    spec = get_dataset(name)
    splits, ext, n = LAYOUT[name]
    assert {s: (d.image_dir, d.mask_dir) for s, d in spec.splits.items()} == splits
    assert spec.image_ext == ext and spec.num_classes() == n
    assert set(spec.class_lists) == set(VARIANTS)


def test_suite_lists_and_sources():
    assert set(SUITES["rskt"]) == set(EXPECTED) and len(SUITES["rskt"]) == 8
    assert SOURCES["rskt"] == ("DLRSD", "iSAID")
    assert all(get_dataset(s).is_source for s in SOURCES["rskt"] + SOURCES["synth"])
    assert set(SUITES["synth"]) == set(SYNTH) and len(SYNTH) >= 4


@pytest.mark.skipif(not PROTOCOL.is_file(), reason="PROTOCOL.md not beside the repository")
def test_catalog_matches_protocol_file():
    text = PROTOCOL.read_text()
    lists = dict(re.findall(r"^- ([A-Za-z0-9, ]+?)(?: \(background is ignore, 255\))?: (.+)$",
                            text.split("### Class lists", 1)[1].split("Other published", 1)[0],
                            flags=re.M))
    found = {}
    for key, value in lists.items():
        for name in key.split(", "):
            found[name] = [c.strip() for c in value.split(", ")]
    # continuation lines of the wrapped DLRSD and iSAID lists
    block = text.split("### Class lists", 1)[1].split("Other published", 1)[0]
    for name in ("DLRSD", "iSAID"):
        m = re.search(rf"^- {name}[^:]*: (.+?)(?=^- )", block, flags=re.M | re.S)
        found[name] = [c.strip() for c in " ".join(m.group(1).split()).split(", ")]
    for name in EXPECTED:
        assert class_names(name) == found[name], name
    table = re.findall(r"^\| (\w+) \| (.+?) \| (\w+) \| (\d+) \|$", text, flags=re.M)
    rows = {r[0]: r for r in table if r[0] in EXPECTED}
    assert set(rows) == set(EXPECTED)
    for name, (_n, folders, ext, n) in rows.items():
        spec = get_dataset(name)
        assert spec.image_ext == "." + ext and spec.num_classes() == int(n)
        for d in spec.splits.values():  # every folder's last part is named in the table row
            assert d.image_dir.rsplit("/", 1)[1] in folders and d.mask_dir.rsplit("/", 1)[1] in folders


def test_pi_seg_and_segearth_variants():
    lov = get_dataset("LoveDA")
    assert lov.num_classes("pi-seg-v1") == 7 and "no-data" not in lov.classes("pi-seg-v1")
    lut = lov.class_list("pi-seg-v1").lut()
    assert lut[0] == IGNORE and list(lut[1:8]) == list(range(7)) and lut[IGNORE] == IGNORE
    uav = get_dataset("UAVid").class_list("pi-seg-v1")
    assert uav.lut()[5] == uav.lut()[6] == uav.names.index("Car")
    seg_uav = get_dataset("UAVid").class_list("segearth-ov")
    stored = get_dataset("UAVid").classes()
    for sid, sname in enumerate(stored):  # each stored class lands on the matching SegEarth name
        target = seg_uav.names[seg_uav.lut()[sid]]
        want = {"Background clutter": "background", "Moving car": "car", "Static car": "car",
                "Low vegetation": "vegetation"}.get(sname, sname.lower())
        assert target == want
    isaid = get_dataset("iSAID").class_list("segearth-ov")
    assert isaid.names[0] == "background" and isaid.lut()[IGNORE] == 0
    assert [isaid.names[isaid.lut()[k]] for k in range(15)][1:] == [
        n.replace("storage tank", "store tank") for n in EXPECTED["iSAID"].split(", ")][1:]
    vdd = get_dataset("VDD").classes("pi-seg-v1")
    assert "facade, wall" in vdd and "vehicle, car" in vdd and "other, Background" in vdd
    assert get_dataset("UDD5").classes("pi-seg-v1")[-1] == "Background/Clutter"
    for name in ("DLRSD", "iSAID", "Potsdam", "Vaihingen"):
        assert class_names(name, "pi-seg-v1") == class_names(name)
    assert class_names("Potsdam", "segearth-ov")[0] == "road, parking lot"


def test_identity_lut_and_errors():
    assert np.array_equal(get_dataset("Potsdam").class_list().lut(), np.arange(256))
    with pytest.raises(DrsegInputError, match="unknown dataset 'Potsdamm'"):
        get_dataset("Potsdamm")
    with pytest.raises(DrsegInputError, match="variant 'v9'"):
        class_names("VDD", "v9")
    with pytest.raises(DrsegInputError, match="no split 'train'"):
        get_dataset("VDD").split("train")


@pytest.mark.parametrize("name", sorted(SYNTH))
def test_synthetic_specs_are_consistent(name):
    spec = SYNTH[name]
    assert spec.domain in DOMAINS
    assert set(spec.concept_ids) <= set(CONCEPTS)
    n = spec.num_classes()
    assert sorted(set(spec.concept_ids.values())) == list(range(n))  # every class has a concept
    for v in VARIANTS:
        assert spec.num_classes(v) == n


def test_synthetic_suite_shifts_vocabulary_and_has_unseen_classes():
    src = SYNTH["synth_source"]
    drawn_in_source = {c for c, w in DOMAINS["source"].weights if w > 0}
    assert "ship" not in drawn_in_source and "court" not in drawn_in_source
    assert "clutter" not in src.concept_ids  # unlabelled in the source: ignore
    targets = [s for s in SUITES["synth"] if s != "synth_source"]
    assert len(targets) >= 3
    unseen = set()
    for t in targets:
        spec = SYNTH[t]
        assert DOMAINS[spec.domain].gsd != DOMAINS["source"].gsd
        assert set(spec.classes()) != set(src.classes())
        for cname in spec.classes():
            concepts = {c for c, k in spec.concept_ids.items() if spec.classes()[k] == cname}
            if concepts and concepts <= {"ship", "court"}:
                unseen.add(cname)
    assert {"Ship", "Tennis court", "Sport court"} <= unseen
    names = {SYNTH[t].classes()[SYNTH[t].concept_ids["building"]] for t in SUITES["synth"]}
    assert len(names) >= 3  # "buildings" / "Building" / "Roof"


def test_every_dataset_has_the_default_variant():
    for spec in DATASETS.values():
        assert spec.classes(DEFAULT_VARIANT)
        assert "all" in spec.splits
