"""DDP scaling of the training loop: images/s with 1, 2 (, 4) GPUs, the engine's own code path.

Launch through torch's launcher, one process per GPU, the per-GPU batch fixed (weak scaling:
the global batch is ``per_gpu_batch x processes``, as ``train.batch_size`` counts it)::

    torchrun --standalone --nproc_per_node 1 bench/ddp_bench.py --out /tmp/ddp1.json
    torchrun --standalone --nproc_per_node 2 bench/ddp_bench.py --out /tmp/ddp2.json
    python bench/ddp_bench.py --summarize /tmp/ddp1.json /tmp/ddp2.json --out reports/bench/ddp_h100.json

Each run is :func:`drseg.engine.train.train` end to end (loader workers with the random crop /
flip / colour jitter, DDP all-reduce of the gradients, bf16 autocast) on in-memory random
512x512 images, the paper-shape model (ViT-B/16 at 384, DINOv3 ViT-L/16 prior, 17 classes) with
random weights. Steady state = the median ms per iteration over the windows between
consecutive loss syncs (every ``log_every`` iterations on CUDA, every iteration on the CPU),
starting at the second sync: iterations up to the first sync (warm-up, compile) and the
window between the first two syncs are not timed. ``--quick`` runs the tiny preset on CPU (gloo) as a smoke test.
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

from engine_bench import DLRSD, _RandomCrops, build, log  # noqa: E402


def run(args) -> None:
    from drseg.engine.distributed import cleanup, init_distributed
    from drseg.engine.train import TrainConfig, train

    from engine_breakdown import set_switches

    switches = set_switches(args.set)
    if args.no_optimize_ddp:  # one graph; DDP all-reduces after the whole backward
        torch._dynamo.config.optimize_ddp = False
    if args.ddp_cuda_graphs:
        import drseg.engine.train as train_mod

        train_mod.CUDA_GRAPHS_UNDER_DDP = True
    info = init_distributed("cpu" if args.quick else "auto")
    device = info.device
    preset = "tiny" if args.quick else "vitb16-384"
    cfg, model = build(preset, device)
    ds = _RandomCrops(64, 96 if args.quick else 512, len(DLRSD))
    batch = args.per_gpu_batch * info.world_size
    tc = TrainConfig(iterations=args.iterations, batch_size=batch, crop=cfg.image_size,
                     num_workers=args.workers, checkpoint_every=10**6, log_every=args.log_every,
                     device=device.type, compile=args.compile,
                     compile_mode=args.compile_mode, fused_optimizer=args.fused_optimizer,
                     tf32=args.tf32, cudnn_benchmark=args.cudnn_benchmark)
    stamps = []
    params = [p for p in model.parameters() if p.requires_grad]
    start = torch.cat([p.detach().float().flatten() for p in params])
    with tempfile.TemporaryDirectory() as tmp:
        res = train(model, ds, DLRSD, tc, tmp, model_cfg=cfg.to_dict(), train_dataset="mem",
                    dist_info=info, progress=False,
                    on_log=lambda m, it: stamps.append((it, time.perf_counter())))
    # DDP keeps the replicas identical: the trainable weights of every rank must match after
    # training (bitwise: every rank applies the same all-reduced gradients), and have moved
    flat = torch.cat([p.detach().float().flatten() for p in params])
    moved = (flat - start).abs().max().item()
    rank_diff = 0.0
    if info.distributed:
        hi, lo = flat.clone(), flat.clone()
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        rank_diff = (hi - lo).abs().max().item()
    if info.is_main:
        # one window per loss sync (every log_every iterations); the first window holds the
        # warm-up (and the compile), so the steady state is the median of the later windows
        steady = stamps[1:] if len(stamps) > 2 else stamps
        windows = [1e3 * (t1 - t0) / max(i1 - i0, 1)
                   for (i0, t0), (i1, t1) in zip(steady, steady[1:])]
        if not windows:
            raise SystemExit(f"ddp_bench: {len(stamps)} loss sync(s) in {args.iterations} iterations: "
                             f"give --iterations at least 3 x --log-every ({args.log_every})")
        ms = statistics.median(windows)
        i0, i1 = steady[0][0], steady[-1][0]
        rec = {"processes": info.world_size, "device": torch.cuda.get_device_name(device)
               if device.type == "cuda" else "cpu", "torch": torch.__version__, "preset": preset,
               "per_gpu_batch": args.per_gpu_batch, "global_batch": batch,
               "iterations": args.iterations, "workers_per_process": args.workers,
               "compile": args.compile, "compile_mode": args.compile_mode if args.compile else None,
               "fused_optimizer": args.fused_optimizer,
               "tf32": args.tf32, "cudnn_benchmark": args.cudnn_benchmark,
               "optimize_ddp": not args.no_optimize_ddp, "ddp_cuda_graphs": res.cuda_graphs and info.distributed,
               "switches": switches,
               "ms_per_it_steady": ms, "steady_from_to": [i0, i1],
               "ms_per_it_windows": windows,
               "images_per_s": batch / (ms / 1e3), "wall_s": res.wall_s,
               "final_loss": res.final_loss, "losses": [[it, loss] for it, loss, _ in res.losses],
               "weights_max_abs_change": moved,
               "weights_max_abs_diff_between_ranks": rank_diff}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
        log(f"[ddp x{info.world_size}] {ms:.1f} ms/it (median of {len(windows)} windows between "
            f"loss syncs, {min(windows):.1f}-{max(windows):.1f}), "
            f"{rec['images_per_s']:.1f} images/s (global batch {batch}); final loss "
            f"{res.final_loss:.4f}, weights moved {moved:.2e}, rank difference {rank_diff:.2e}")
    cleanup()


def loss_curve_difference(run: dict, reference: dict) -> tuple[float, int, int]:
    """Largest relative difference of two runs' loss curves over their common logged
    iterations: ``(difference, at iteration, iterations compared)``."""
    la, lb = dict(map(tuple, run["losses"])), dict(map(tuple, reference["losses"]))
    its = sorted(set(la) & set(lb))
    if not its:
        raise ValueError("the two runs have no logged iteration in common")
    rel = {i: abs(la[i] - lb[i]) / abs(lb[i]) for i in its}
    worst = max(rel, key=rel.get)
    return rel[worst], worst, len(its)


def summarize(paths, out) -> None:
    runs = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda r: r["processes"])
    base = runs[0]
    rec = {"what": "DDP weak scaling of drseg.engine.train.train (per-GPU batch fixed)",
           "runs": runs,
           "scaling": {str(r["processes"]): r["images_per_s"] / base["images_per_s"] for r in runs},
           "efficiency": {str(r["processes"]): r["images_per_s"] / base["images_per_s"]
                          / (r["processes"] / base["processes"]) for r in runs}}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(rec, indent=2) + "\n")
    for r in runs:
        log(f"{r['processes']} process(es): {r['images_per_s']:.1f} images/s, "
            f"scaling x{rec['scaling'][str(r['processes'])]:.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny preset, CPU / gloo")
    ap.add_argument("--per-gpu-batch", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default="default",
                    help="train.compile_mode (reduce-overhead: CUDA graphs)")
    ap.add_argument("--no-optimize-ddp", action="store_true",
                    help="torch._dynamo.config.optimize_ddp = False (no graph split per bucket)")
    ap.add_argument("--fused-optimizer", action=argparse.BooleanOptionalAction,
                    default=True,
                    help="train.fused_optimizer: the fused AdamW kernel (the engine's default since session 8; "
                         "--no-fused-optimizer: the foreach AdamW; engine_breakdown.py's step always "
                         "uses the fused one)")
    ap.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                    help="train.tf32 (the engine's default: on; train() applies it)")
    ap.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                    help="train.cudnn_benchmark (the engine's default: on; train() applies it)")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                    help="set a module switch first, e.g. drseg.engine.train.PREFETCH_TO_DEVICE=false")
    ap.add_argument("--ddp-cuda-graphs", action="store_true",
                    help="let reduce-overhead keep its CUDA graphs under DDP "
                         "(drseg.engine.train.CUDA_GRAPHS_UNDER_DDP; the default since session 7: "
                         "--set drseg.engine.train.CUDA_GRAPHS_UNDER_DDP=false falls back to mode "
                         "'default' under DDP)")
    ap.add_argument("--summarize", nargs="+", help="per-run JSONs to combine into --out")
    args = ap.parse_args(argv)
    if args.summarize:
        summarize(args.summarize, args.out)
    else:
        run(args)


if __name__ == "__main__":
    main()
