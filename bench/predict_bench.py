"""Speed and peak memory of ``drseg predict`` on a large synthetic GeoTIFF.

Writes ``reports/bench/predict_<device>_<preset>.json``. Steps:

1. a model of the preset with **random weights** (speed does not depend on the weights) is
   saved as a ``drseg-model/1`` checkpoint and loaded back through
   :func:`drseg.predict.load_predictor`, the command's own path;
2. a synthetic ``size x size`` RGB uint8 GeoTIFF (tiled, deflate, EPSG:32633) is written;
3. each measurement runs in a fresh child process (so its peak RSS is its own): the command's
   streaming tiler (:func:`drseg.predict.predict_source`) over the first ``rows`` rows of the
   full-width raster (``--rows 0``: the whole raster), mask written as a GeoTIFF. The
   throughput of a row band extrapolates to the whole raster because the tiler does the same
   work for every window row; peak memory does not depend on the number of rows (streaming),
   which the bench shows by measuring two band heights.

Usage::

    python bench/predict_bench.py --preset tiny --device cpu --rows 256 512
    python bench/predict_bench.py --preset vitb16-384 --device cuda --rows 0
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ["impervious surface", "building", "low vegetation", "tree, forest", "car",
           "clutter, background"]  # Potsdam-like, 6 classes (one with a synonym)


def make_raster(path: Path, size: int, block: int = 1024) -> float:
    """A ``size x size`` RGB GeoTIFF of smooth fields + noise, written block-row by block-row
    (bounded memory). Returns seconds taken."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=3,
                       dtype="uint8", crs=CRS.from_epsg(32633),
                       transform=from_origin(500000.0, 5000000.0, 0.3, 0.3), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate",
                       BIGTIFF="IF_SAFER") as dst:
        xx = np.arange(size, dtype=np.float32)
        for r0 in range(0, size, block):
            h = min(block, size - r0)
            yy = np.arange(r0, r0 + h, dtype=np.float32)[:, None]
            base = np.stack([128 + 80 * np.sin(xx / 97.0 + yy / 151.0),
                             128 + 80 * np.cos(xx / 173.0 - yy / 89.0),
                             128 + 60 * np.sin((xx + yy) / 311.0)])  # (3, h, size)
            noise = rng.integers(-12, 13, base.shape)
            dst.write((base + noise).clip(0, 255).astype(np.uint8),
                      window=Window(0, r0, size, h))
    return time.perf_counter() - t0


def save_random_checkpoint(preset: str, path: Path) -> None:
    import torch

    from drseg.engine.checkpoint import save_model_checkpoint
    from drseg.models.drseg import build_model, make_config

    cfg = make_config(preset, {"seed": 0})
    torch.manual_seed(0)
    model = build_model(cfg)
    save_model_checkpoint(path, model=model, model_cfg=cfg.to_dict(), iteration=0,
                          train_dataset="random-init (bench)")


def rss_mb(field: str = "VmRSS") -> float:
    """Current (``VmRSS``) or peak (``VmHWM``) resident memory of this process in MiB. VmHWM is
    per address space, so unlike ``ru_maxrss`` it does not inherit the parent's peak across
    fork + exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    from drseg import predict as P
    from drseg.data import raster

    torch.set_num_threads(args.threads or torch.get_num_threads())
    pred = P.load_predictor(args.checkpoint, device=args.device,
                            amp=False if args.fp32 else None)
    tile = args.tile or pred.input_size
    tiles = P.TileSettings(tile, args.stride or P.default_stride(tile), args.batch_size,
                           args.max_strip_width)
    rows = args.rows[0]
    with raster.bounded_cache(), raster.open_raster(args.raster) as src:  # as predict_file
        H = src.height if rows == 0 else min(rows, src.height)

        class Band:  # the first H rows of the full-width raster
            height, width = H, src.width
            read_rgb = src.read_rgb
            read_valid = src.read_valid

        # warm-up: one batch (text embeddings cached, kernels chosen), not timed
        crops = torch.from_numpy(np.stack([src.read_rgb(0, 0, min(tile, H), min(tile, src.width))]
                                          * tiles.batch_size))
        P.window_scores(pred, crops, CLASSES)
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss_before = rss_mb()
        peak_warm = rss_mb("VmHWM")
        n = P.count_windows(H, src.width, tiles)
        out = Path(args.workdir) / f"mask_{rows}.tif"
        sink = raster.GeoTiffWriter(out, H, src.width, 1, "uint8", src.crs, src.transform, 255)
        t0, c0 = time.perf_counter(), time.process_time()
        P.predict_source(pred, Band(), CLASSES, tiles, sink)
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0  # all threads of this process
        sink.commit()
        full_windows = P.count_windows(src.height, src.width, tiles)
        size = (src.height, src.width)
    rec = {
        "rows": H, "width": size[1], "windows": n, "wall_s": round(wall, 3),
        "tiles_per_s": round(n / wall, 3),
        "cpu_s": round(cpu, 1),  # CPU time of this process; < wall x threads when cores are shared
        "tiles_per_cpu_s": round(n / cpu, 3),
        "full_raster_windows": full_windows,
        "full_raster_s_extrapolated": round(full_windows * wall / n, 1),
        "rss_after_model_mb": round(rss_before, 1),
        "peak_rss_after_warmup_mb": round(peak_warm, 1),  # model load + one forward batch
        "peak_rss_mb": round(rss_mb("VmHWM"), 1),
        "tile": tiles.tile, "stride": tiles.stride, "batch_size": tiles.batch_size,
        "max_strip_width": tiles.max_strip_width, "device": str(pred.device),
        "bf16_autocast": pred.amp,
        "threads": torch.get_num_threads(),
    }
    if pred.device.type == "cuda":
        rec["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        rec["gpu"] = torch.cuda.get_device_name()
    return rec


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--checkpoint", help="use this checkpoint instead of a random-init one")
    ap.add_argument("--size", type=int, default=10000, help="raster side [%(default)s]")
    ap.add_argument("--rows", type=int, nargs="+", default=[256, 512],
                    help="row-band heights to process; 0 = the whole raster [%(default)s]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tile", type=int)
    ap.add_argument("--stride", type=int)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-strip-width", type=int, default=8192)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--workdir", help="where the raster and checkpoint go [a temp dir]")
    ap.add_argument("--out", help="json [reports/bench/predict_<device>_<preset>.json]")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raster", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(child(args)))
        return 0

    os.environ.setdefault("TQDM_DISABLE", "1")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="predict_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else work / f"{args.preset}_random.pt"
    if not ckpt.exists():
        save_random_checkpoint(args.preset, ckpt)
    tif = work / f"synthetic_{args.size}.tif"
    gen_s = make_raster(tif, args.size) if not tif.exists() else None
    runs = []
    for rows in args.rows:
        cmd = [sys.executable, __file__, "--_child", "--checkpoint", str(ckpt), "--raster",
               str(tif), "--rows", str(rows), "--device", args.device, "--batch-size",
               str(args.batch_size), "--max-strip-width", str(args.max_strip_width),
               "--threads", str(args.threads), "--workdir", str(work)]
        if args.fp32:
            cmd.append("--fp32")
        for opt in ("tile", "stride"):
            if getattr(args, opt):
                cmd += [f"--{opt}", str(getattr(args, opt))]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            sys.stderr.write(r.stderr)
            return r.returncode
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        print(json.dumps(rec), flush=True)
        runs.append(rec)
    result = {
        "what": f"drseg predict streaming tiler on a synthetic {args.size}x{args.size} RGB "
                f"uint8 GeoTIFF, {len(CLASSES)} classes, preset {args.preset}",
        "weights": "given checkpoint" if args.checkpoint else
                   "random init (speed does not depend on the weights)",
        "method": "each run in a fresh process; 'rows' = full-width band processed "
                  "(the whole raster when it equals the size); full_raster_s_extrapolated = "
                  "full_raster_windows / tiles_per_s of that run",
        "command": "python bench/predict_bench.py " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "raster_generation_s": round(gen_s, 1) if gen_s is not None else None,
        "runs": runs,
    }
    import torch

    result["machine"]["torch"] = torch.__version__
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    out = Path(args.out or ROOT / "reports" / "bench" / f"predict_{dev}_{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
