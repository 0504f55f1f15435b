"""Where an evaluation pass waits: the loader or the device (diagnostic, GPU).

Builds the paper-shape model (random weights), a fake 1024-image Potsdam-layout archive, then
1. two ordinary ``evaluate_dataset`` passes (images/s as the stage sees it);
2. one instrumented pass of the same loop: per batch, the time spent waiting for the loader
   (``next()``) and the time of the device work (synchronised after the confusion update).
Synchronising every batch removes the host/device overlap, so the instrumented pass is slower;
it shows which side each batch waits on and the first-batch latency.

    python bench/eval_loop_probe.py --out reports/bench/eval_loop_probe.json [--images 1024]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from engine_bench import build, make_fake_archive  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="tiny preset on CPU, 32 images")
    ap.add_argument("--workers", type=int, default=12)
    args = ap.parse_args(argv)
    from torch.utils.data import DataLoader

    from drseg.data.dataset import open_split
    from drseg.engine.distributed import DistInfo
    from drseg.engine.evaluate import (EvalConfig, _collate, _EvalInputs, _forward, _prepare_images,
                                       _scores_to_labels, _worker_init, evaluate_dataset)
    from drseg.engine.metrics import confusion_matrix_unchecked

    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    preset, n, batch, workers = ("tiny", 32, 4, 2) if args.quick else ("vitb16-384", args.images, 32,
                                                                          args.workers)
    t = time.perf_counter()
    cfg, model = build(preset, device)
    model.eval()
    res = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "preset": preset, "images": n, "batch": batch,
           "num_workers": workers, "build_s": time.perf_counter() - t}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        make_fake_archive(Path(tmp), n, 512)
        res["archive_s"] = time.perf_counter() - t
        ds = open_split(tmp, "Potsdam", "all")
        ec = EvalConfig(mode="noslide", input_size=cfg.image_size, short_side=640, max_long=2560,
                        slide_size=640, slide_stride=256, batch_size=batch, num_workers=workers,
                        device=device.type, channels_last=False)
        passes = []
        for _ in range(2):
            _, stats = evaluate_dataset(model, ds, ds.classes, ec, DistInfo(device=device), progress=False)
            passes.append(stats["images_per_s"])
        res["evaluate_dataset_images_per_s"] = passes
        vocab = list(ds.classes)
        K = len(vocab)
        conf = torch.zeros(K, K, dtype=torch.int64, device=device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            loader = DataLoader(_EvalInputs(ds, range(len(ds)), K), batch_size=batch, shuffle=False,
                                num_workers=workers, collate_fn=_collate,
                                worker_init_fn=_worker_init if workers else None,
                                pin_memory=device.type == "cuda",
                                **({"prefetch_factor": 4} if workers else {}))
            it = iter(loader)
            t_iter = time.perf_counter() - t0
            waits, works = [], []
            while True:
                a = time.perf_counter()
                try:
                    b = next(it)
                except StopIteration:
                    break
                w = time.perf_counter()
                images = _prepare_images(b["image"], ec, device)
                masks = [m.to(device, non_blocking=True) for m in b["mask"]]
                scores = _forward(model, images, vocab, ec, device)
                for pred, gt in zip(_scores_to_labels(scores, masks), masks):
                    conf += confusion_matrix_unchecked(pred, gt, K)
                sync()
                waits.append(1e3 * (w - a))
                works.append(1e3 * (time.perf_counter() - w))
            total = time.perf_counter() - t0
    res["instrumented"] = {
        "seconds": total, "images_per_s": n / total, "iter_start_ms": 1e3 * t_iter,
        "first_batch_wait_ms": waits[0], "wait_ms_median_after_first": statistics.median(waits[1:] or [0]),
        "wait_ms_total": sum(waits), "work_ms_median": statistics.median(works),
        "work_ms_total": sum(works), "wait_ms_all": [round(x, 1) for x in waits],
        "work_ms_all": [round(x, 1) for x in works]}
    print(json.dumps({k: v for k, v in res.items() if k != "instrumented"}), flush=True)
    print(json.dumps({k: v for k, v in res["instrumented"].items() if not k.endswith("_all")}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
