"""Convert an official dataset release into the benchmark archive layout (a one-off tool, not a
DVC stage). See docs/data.md.

    python stages/convert.py potsdam  --images DIR --labels DIR --out ARCHIVE [--crop 512 --stride 512]
    python stages/convert.py vaihingen --images DIR --labels DIR --out ARCHIVE [--crop 512 --stride 256]
    python stages/convert.py isaid    --images DIR --labels DIR --out ARCHIVE --split train [--crop 800 --stride 600]
    python stages/convert.py uavid    --src DIR --out ARCHIVE
    python stages/convert.py udd5     --src DIR --out ARCHIVE
    python stages/convert.py vdd      --src DIR --out ARCHIVE
    python stages/convert.py loveda   --src DIR --out ARCHIVE

Add --unknown-to-ignore to map label colours / ids outside the release's table to 255 (ignore)
instead of failing, and --overwrite to replace files already in ARCHIVE.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # project root, for `python stages/convert.py`
from stages._common import setup_logging  # noqa: E402

from drseg.data import converters as cv  # noqa: E402

TILED = {"potsdam": "Potsdam", "vaihingen": "Vaihingen"}
FOLDERS = {"uavid": cv.convert_uavid, "udd5": cv.convert_udd5, "vdd": cv.convert_vdd,
           "loveda": cv.convert_loveda}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted([*TILED, *FOLDERS, "isaid"]))
    ap.add_argument("--out", required=True, help="archive root to write into")
    ap.add_argument("--images", help="tiles / images folder (potsdam, vaihingen, isaid)")
    ap.add_argument("--labels", help="colour label folder (potsdam, vaihingen, isaid)")
    ap.add_argument("--src", help="release root (uavid, udd5, vdd, loveda)")
    ap.add_argument("--split", choices=["train", "val"], help="isaid: which split these images are")
    ap.add_argument("--crop", type=int, help="crop side (tiled datasets)")
    ap.add_argument("--stride", type=int, help="step between crops (default: crop)")
    ap.add_argument("--unknown-to-ignore", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    setup_logging()
    flags = dict(unknown_to_ignore=args.unknown_to_ignore, overwrite=args.overwrite)
    if args.dataset in TILED or args.dataset == "isaid":
        if not (args.images and args.labels):
            ap.error(f"{args.dataset} needs --images and --labels")
        if args.dataset == "isaid":
            if not args.split:
                ap.error("isaid needs --split train|val")
            crop = args.crop or 800
            n = cv.convert_isaid(args.images, args.labels, args.out, args.split, crop=crop,
                                 stride=args.stride or 600, **flags)
        else:
            crop = args.crop or 512
            n = cv.convert_isprs(args.images, args.labels, args.out, dataset=TILED[args.dataset],
                                 crop=crop, stride=args.stride or crop, **flags)
    else:
        if not args.src:
            ap.error(f"{args.dataset} needs --src")
        n = FOLDERS[args.dataset](args.src, args.out, **flags)
    print(f"{args.dataset}: wrote {n} image/mask pairs under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
