"""DVC stage `prepare`: make the dataset suite ready and describe it.

suite "synth" (default): render the synthetic suite into the archive layout under --out.
suite "rskt": scan the real benchmark archive at ``prepare.archive_root`` in place (nothing is
copied); --out then only holds ``suite.json`` pointing at the archive.

Both write one dataset card per dataset (--cards/<dataset>.json) and a figure of samples
(--figure, png + pdf). Later stages find the data through
``drseg.data.archive.resolve_root(<out>)``.

    python stages/prepare.py --out data/synth --cards reports/datasets \
        --figure reports/figures/datasets.png
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project root, for `python stages/prepare.py`
from stages._common import load_params, section, setup_logging  # noqa: E402

from drseg.data.archive import SUITE_FILE, prepare_real_suite, prepare_synth_suite  # noqa: E402
from drseg.errors import DrsegInputError  # noqa: E402

log = logging.getLogger("prepare")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="suite folder (synthetic data or suite.json)")
    ap.add_argument("--cards", required=True, help="folder for <dataset>.json cards")
    ap.add_argument("--figure", required=True, help="png path of the sample figure (+ .pdf)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    p = section(load_params(args.params), "prepare")

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / SUITE_FILE).is_file():
        raise DrsegInputError(f"{out}: exists and was not written by prepare (no {SUITE_FILE}); "
                              f"refusing to replace it")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    suite = p.get("suite", "synth")
    common = dict(cards_dir=Path(args.cards), figure=Path(args.figure),
                  variants=list(p.get("variants") or []) or None,
                  figure_samples=int(p.get("figure_samples", 4)))
    if suite == "synth":
        summary = prepare_synth_suite(
            tmp, seed=int(p["seed"]), image_size=int(p["image_size"]),
            train_images=int(p["train_images"]), val_images=int(p["val_images"]),
            target_images=int(p["target_images"]), **common)
    elif suite == "rskt":
        root = p.get("archive_root")
        if not root:
            raise DrsegInputError("params.yaml: prepare.archive_root must be set when prepare.suite is rskt")
        summary = prepare_real_suite(tmp, archive_root=Path(root), **common)
    else:
        raise DrsegInputError(f"params.yaml: prepare.suite must be synth or rskt, got {suite!r}")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("prepared suite %s: %s", suite, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
