"""Evaluation loader cost per image on the CPU: before (decode + resize to short side 640 +
squash to 384 in the worker, float out) and after (decode only, uint8 out; the resize runs on
the device). One thread, as in a DataLoader worker; 512x512 PNG images of a fake archive.

    python bench/eval_loader_cpu.py --out reports/bench/eval_loader_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402


def main(argv=None) -> None:
    from engine_bench import make_fake_archive

    from drseg.data.dataset import open_split
    from drseg.data.transforms import resize_image, resize_short_side
    from drseg.engine.evaluate import _EvalInputs

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=32)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    make_fake_archive(Path(tmp), args.images, 512)
    ds = open_split(tmp, "Potsdam", "all")
    new = _EvalInputs(ds, range(len(ds)), len(ds.classes))

    def old(i):
        x = ds[i]["image"][None]  # (1, 3, H, W) float
        x = resize_image(x, resize_short_side(512, 512, 640, 2560))
        return resize_image(x, (384, 384))

    def med(f, reps=3):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for i in range(len(ds)):
                f(i)
            ts.append(1e3 * (time.perf_counter() - t0) / len(ds))
        return statistics.median(ts)

    rec = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 1,
           "images": len(ds), "image": "512x512 PNG (noise) + L mask",
           "ms_per_image_before": med(old), "ms_per_image_after": med(lambda i: new[i]),
           "bytes_per_image_before": 3 * 384 * 384 * 4, "bytes_per_image_after": 3 * 512 * 512,
           "note": "wall time on a shared machine: compare the two numbers of one run only"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
    print(f"worker ms/image: before {rec['ms_per_image_before']:.1f}, after {rec['ms_per_image_after']:.1f}")


if __name__ == "__main__":
    main()
