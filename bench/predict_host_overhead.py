"""Host-side cost of ``drseg predict``'s streaming tiler, with a model that costs nothing.

A null model (zeros at 1/4 of the input, as the real decoder) replaces the network, so the time
is the tiler's own work per window: reading the band, stacking the crops, resizing the logits
back, accumulating the scores, dividing, the argmax and the sinks. On a GPU machine this is the
part that does not overlap with the model.

    python bench/predict_host_overhead.py --out reports/bench/predict_host_overhead_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from drseg.predict import Predictor, TileSettings, count_windows, predict_array  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--height", type=int, default=2048)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--tile", type=int, default=384)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    def null_model(x, vocab):
        return torch.zeros(x.shape[0], len(vocab), x.shape[-2] // 4, x.shape[-1] // 4, device=x.device)

    pred = Predictor(model=null_model, input_size=args.tile, device=device)
    img = (np.random.default_rng(0).random((3, args.height, args.width)) * 255).astype(np.float32)
    tiles = TileSettings(args.tile, args.stride, args.batch_size, 8192)
    vocab = [f"class {i}" for i in range(args.classes)]
    predict_array(pred, img[:, :args.tile, :args.tile], vocab, tiles)  # warm-up
    t = time.perf_counter()
    predict_array(pred, img, vocab, tiles)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t
    n = count_windows(args.height, args.width, tiles)
    rec = {"what": "drseg predict tiler with a null model: host (and device) work per window",
           "device": str(device), "cpu": platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "image": [3, args.height, args.width], "classes": args.classes, "tile": args.tile,
           "stride": args.stride, "batch_size": args.batch_size, "windows": n, "wall_s": wall,
           "ms_per_window": 1e3 * wall / n, "load_avg": list(os.getloadavg()),
           "note": "in-memory image, mask and score sinks (predict_array)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
    print(f"{n} windows, {wall:.2f} s, {rec['ms_per_window']:.1f} ms per window")


if __name__ == "__main__":
    main()
