"""Engine benchmark: training step time / peak memory / MFU and evaluation throughput.

Run on a GPU machine (reports/bench/engine_<gpu>.json); ``--quick`` runs the same code at the
tiny preset on CPU as a smoke test. Random weights throughout (timing does not depend on them;
nothing is downloaded).

    python bench/engine_bench.py --out reports/bench/engine_h100.json
    python bench/engine_bench.py --quick --out /tmp/bench_cpu.json

Sections (each recorded even when another fails):
- ``train_step``: one optimisation step (forward, per-class BCE, backward, full-model clip,
  AdamW) of the real DR-Seg model at the paper shape (ViT-B/16 at 384, 4 rotations, DINOv3
  ViT-L/16 prior, batch 8, 17 classes), in the configurations of the engine's switches
  (bf16 autocast, fused AdamW, channels-last, torch.compile); CUDA-event timing, median of
  repeats after warm-up; peak memory; FLOPs from torch's FlopCounterMode; MFU against the
  H100 SXM dense bf16 peak (989.4 TFLOP/s).
- ``train_loop``: ``drseg.engine.train.train`` end to end (data loader with workers, random
  crop / flip / colour jitter on the CPU) to check the GPU is not starved.
- ``eval``: ``drseg.engine.evaluate.evaluate_dataset`` noslide images/s on a fake archive of
  512x512 JPEG images and PNG masks (decode + resize 640 + squash 384 in the loader workers).
- ``train_step_vitl``: the ViT-L/14 at 336 preset, eager bf16.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import drseg  # noqa: E402,F401
from drseg.engine.distributed import cuda_math  # noqa: E402

H100_BF16_PEAK = 989.4e12  # dense bf16 FLOP/s, H100 SXM datasheet
DLRSD = ["airplane", "bare soil", "buildings", "cars", "chaparral", "court", "dock", "field", "grass",
         "mobile home", "pavement", "sand", "sea", "ship", "tanks", "trees", "water"]


def hold_train_cuda_math(device: torch.device) -> None:
    """TF32 and cuDNN's search as ``train()`` applies them (``train.tf32`` /
    ``train.cudnn_benchmark``, both on), entered for the rest of the bench process."""
    cuda_math(device, tf32=True, cudnn_benchmark=True).__enter__()


def log(*a):
    print(*a, flush=True)


def build(preset: str, device, overrides=None):
    from drseg.models.drseg import build_model, make_config
    from drseg.models.spsd import channel_index_dict

    cfg = make_config(preset, dict(overrides or {}))
    g = torch.Generator().manual_seed(0)
    model = build_model(cfg)  # first without index to learn C
    c = model.clip.visual.output_dim
    index = channel_index_dict(torch.rand(c, generator=g), rho=0.5, lam=0.3, backbone=cfg.clip_model,
                               clip_checkpoint_sha256="random", dataset="bench")
    model = build_model(cfg, channel_index=index)
    return cfg, model.to(device)


def legacy_layers(model) -> None:
    """Undo sessions 4 and 5's layer changes (the session-3 baseline of the benches'
    ``--legacy``): 1-channel decoder head, NCHW guidance upsampler, nn.GroupNorm, convolution
    patch embeds, nn.MultiheadAttention in the CLIP blocks, full-length text tokens."""
    from drseg.models import clip, layers

    model.decoder.head_pad, model.guidance_up.channels_last = 1, False
    layers.NHWC_GROUP_NORM = False
    layers.PATCH_GEMM = layers.PACKED_ATTENTION = clip.TRUNCATE_TEXT = "never"


def step_setup(preset: str, batch: int, device, legacy: bool = False):
    """``(cfg, model, images, masks)`` of a training step: the model in train mode (session 3's
    layers with ``legacy``, :func:`legacy_layers`), seeded random 0..255 images and class-id
    masks of the model's input size."""
    cfg, model = build(preset, device)
    model.train()
    if legacy:
        legacy_layers(model)
    g = torch.Generator().manual_seed(0)
    size = cfg.image_size
    images = (torch.rand(batch, 3, size, size, generator=g) * 255).to(device)
    masks = torch.randint(0, len(DLRSD), (batch, size, size), generator=g).to(device)
    return cfg, model, images, masks


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device, warmup: int, reps: int) -> list[float]:
    """Per-call milliseconds (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t))
    return out


def make_step(model, opt, params, images, masks, vocab, amp, clip=0.01, compiled=None,
              graphed=False, step_loss=None):
    """One training step as the engine runs it (labels checked in the loader, not here).

    ``step_loss``: the engine's :class:`drseg.engine.train.StepLoss` (forward and loss in one
    module), compiled or not; None: the model (``compiled`` or ``model``) with the loss
    computed eagerly after it (the engine before session 4)."""
    net = compiled if compiled is not None else model

    def step():
        if graphed:
            torch.compiler.cudagraph_mark_step_begin()
        if step_loss is not None:
            loss = step_loss(images, masks)
        else:
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(images, vocab)
            loss = model.loss(logits.float(), masks, check=False)  # the engine checks in its loader
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return loss
    return step


def count_flops(model, images, masks, vocab, amp) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with fc:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images, vocab)
        model.loss(logits.float(), masks).backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def bench_train_step(preset, device, batch, configs, warmup, reps, res_key, results, overrides=None):
    cfg, model = build(preset, device, overrides)
    size = cfg.image_size
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, size, size, generator=g) * 255).to(device)
    masks = torch.randint(0, len(DLRSD), (batch, size, size), generator=g).to(device)
    masks[:, :8] = 255
    amp = device.type == "cuda"
    model.train()
    counts = model.parameter_counts()
    flops = count_flops(model, images, masks, DLRSD, amp)
    sec = {"preset": preset, "batch": batch, "image_size": size, "classes": len(DLRSD),
           "rotations": cfg.rotations, "prior": cfg.prior, "clip_model": cfg.clip_model,
           "params": counts, "flops_per_step": flops, "configs": {}}
    results[res_key] = sec
    for name, opts in configs:
        log(f"[{res_key}] {name} ...")
        t0 = time.perf_counter()
        try:
            if opts.get("channels_last"):
                model.to(memory_format=torch.channels_last)
                x = images.contiguous(memory_format=torch.channels_last)
            else:
                model.to(memory_format=torch.contiguous_format)
                x = images
            params = [p for p in model.parameters() if p.requires_grad]
            kw = {"fused": True} if opts.get("fused") and device.type == "cuda" else {}
            opt = torch.optim.AdamW(model.parameter_groups(2e-4, 0.01), lr=2e-4, weight_decay=1e-4, **kw)
            compiled = torch.compile(model) if opts.get("compile") else None
            step = make_step(model, opt, params, x, masks, DLRSD, amp, compiled=compiled)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            ms = time_fn(step, device, warmup, reps)
            med = statistics.median(ms)
            rec = {"opts": opts, "step_ms_median": med, "step_ms_min": min(ms), "step_ms_all": ms,
                   "wall_incl_warmup_s": time.perf_counter() - t0,
                   "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
                   "achieved_tflops": flops / (med / 1e3) / 1e12,
                   "mfu_vs_989": flops / (med / 1e3) / H100_BF16_PEAK}
            sec["configs"][name] = rec
            log(f"[{res_key}] {name}: {med:.1f} ms/step, {rec['achieved_tflops']:.0f} TFLOP/s, "
                f"MFU {100 * rec['mfu_vs_989']:.1f}%, peak {rec['peak_mem_gib']} GiB")
            del opt, step, compiled
        except Exception as e:  # record and go on
            sec["configs"][name] = {"opts": opts, "error": f"{type(e).__name__}: {e}",
                                    "trace": traceback.format_exc()[-3000:]}
            log(f"[{res_key}] {name} failed: {e}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del model
    return sec


class _RandomCrops(torch.utils.data.Dataset):
    """In-memory 512x512 images and masks (the loader still crops / flips / jitters them)."""

    def __init__(self, n, size, k):
        g = torch.Generator().manual_seed(0)
        self.img = (torch.rand(n, 3, size, size, generator=g) * 255).round()
        self.mask = torch.randint(0, k, (n, size, size), generator=g)

    def __len__(self):
        return len(self.img)

    def __getitem__(self, i):
        return {"image": self.img[i], "mask": self.mask[i], "path": f"mem/{i}"}


def bench_train_loop(preset, device, batch, iters, workers, results):
    from drseg.engine.distributed import DistInfo
    from drseg.engine.train import TrainConfig, train

    cfg, model = build(preset, device)
    ds = _RandomCrops(64, 512, len(DLRSD))
    tc = TrainConfig(iterations=iters, batch_size=batch, crop=cfg.image_size, num_workers=workers,
                     checkpoint_every=10**6, log_every=10, device=device.type, compile=False)
    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        res = train(model, ds, DLRSD, tc, tmp, model_cfg=cfg.to_dict(), train_dataset="mem",
                    dist_info=DistInfo(device=device), progress=False,
                    on_log=lambda m, it: stamps.append((it, time.perf_counter())))
    # steady state: between the first and the last loss sync (every log_every iterations)
    (i0, t0), (i1, t1) = stamps[0], stamps[-1]
    steady = 1e3 * (t1 - t0) / max(i1 - i0, 1)
    results["train_loop"] = {"preset": preset, "batch": batch, "iterations": iters, "num_workers": workers,
                             "wall_s": res.wall_s, "ms_per_it_incl_startup": 1e3 * res.wall_s / iters,
                             "ms_per_it_steady": steady, "steady_from_to": [i0, i1],
                             "note": "steady = between loss syncs; the whole run adds loader start-up, "
                                     "warm-up and the final 1.8 GB model save"}
    log(f"[train_loop] steady {steady:.1f} ms/it ({i0}..{i1}); whole run {1e3 * res.wall_s / iters:.1f} ms/it")


def make_fake_archive(root: Path, n: int, size: int):
    """A Potsdam-layout archive (Potsdam/imgs/*.png? no: jpg is not Potsdam's; we use png)."""
    import numpy as np
    from PIL import Image

    img_dir, mask_dir = root / "Potsdam" / "imgs", root / "Potsdam" / "D2masks"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((size, size, 3)) * 255).astype("uint8")
    for i in range(n):
        img = np.roll(base, i * 7, axis=1)
        Image.fromarray(img).save(img_dir / f"img_{i:04d}.png")
        m = np.zeros((size, size), "uint8") + (np.arange(size)[None, :] * 6 // size).astype("uint8")
        Image.fromarray(m, mode="L").save(mask_dir / f"img_{i:04d}.png")


def bench_eval(preset, device, n, batch, workers, results, mode="noslide", compile_model=False):
    from drseg.data.dataset import open_split
    from drseg.engine.distributed import DistInfo
    from drseg.engine.evaluate import EvalConfig, evaluate_dataset

    cfg, model = build(preset, device)
    model.eval()
    net = model.compile_dense() if compile_model else model
    with tempfile.TemporaryDirectory() as tmp:
        make_fake_archive(Path(tmp), n, 512)
        ds = open_split(tmp, "Potsdam", "all")
        ec = EvalConfig(mode=mode, input_size=cfg.image_size, short_side=640, max_long=2560, slide_size=640,
                        slide_stride=256, batch_size=batch, num_workers=workers, device=device.type,
                        channels_last=False)
        loader_rate = loader_only(ds, ec)
        runs = []
        for r in range(2):  # the first pass warms up kernels, compiles and fills the text cache
            conf, stats = evaluate_dataset(net, ds, ds.classes, ec, DistInfo(device=device), progress=False)
            runs.append(stats)
        # the model alone on resident input: GPU-side ceiling
        x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device) * 255
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            ms = time_fn(lambda: net(x, ds.classes), device, 2, 5)
        model_rate = batch / (statistics.median(ms) / 1e3)
    key = f"eval_{mode}" + ("_compiled" if compile_model else "")
    results[key] = {"preset": preset, "images": n, "image_size_on_disk": 512, "batch": batch,
                    "num_workers": workers, "classes": len(ds.classes), "mode": mode,
                    "images_per_s_first": runs[0]["images_per_s"], "images_per_s": runs[1]["images_per_s"],
                    "loader_only_images_per_s": loader_rate, "model_only_images_per_s": model_rate,
                    "note": "PNG decode in loader workers; resize to short side 640 + squash to the input "
                            "(on the GPU since run 3, in the workers before); model in bf16 autocast; "
                            "confusion matrix on the GPU"}
    log(f"[{key}] {runs[1]['images_per_s']:.1f} images/s (first pass {runs[0]['images_per_s']:.1f}); "
        f"loader alone {loader_rate:.1f}/s, model alone {model_rate:.1f}/s")


def loader_only(ds, ec) -> float:
    """Images/s of the evaluation loader alone (decode in workers, uint8 out; resizing is on the
    device since the second measurement), no model."""
    from torch.utils.data import DataLoader

    from drseg.engine.evaluate import _collate, _EvalInputs, _worker_init

    dl = DataLoader(_EvalInputs(ds, range(len(ds)), len(ds.classes)), batch_size=ec.batch_size, num_workers=ec.num_workers,
                    worker_init_fn=_worker_init if ec.num_workers else None,
                    collate_fn=_collate, pin_memory=True, **({"prefetch_factor": 4} if ec.num_workers else {}))
    t = time.perf_counter()
    n = sum(len(b["mask"]) for b in dl)
    return n / (time.perf_counter() - t)


def bench_profile(preset, device, batch, results):
    """Where an eager bf16 step spends its time: GPU kernel time vs wall, top kernels."""
    from torch.profiler import ProfilerActivity, profile

    cfg, model = build(preset, device)
    size = cfg.image_size
    images = torch.rand(batch, 3, size, size, device=device) * 255
    masks = torch.randint(0, len(DLRSD), (batch, size, size), device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(model.parameter_groups(2e-4, 0.01), lr=2e-4)
    step = make_step(model, opt, params, images, masks, DLRSD, True)
    time_fn(step, device, 3, 1)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for _ in range(3):
            step()
        sync(device)
        wall = (time.perf_counter() - t) / 3
    events = prof.key_averages()
    kern = sorted([e for e in events if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0) > 0],
                  key=lambda e: -getattr(e, "self_device_time_total", 0))
    gpu_total = sum(getattr(e, "self_device_time_total", 0) for e in events) / 3 / 1e3  # ms per step
    n_kernels = sum(e.count for e in events if getattr(e, "self_device_time_total", 0) > 0) / 3
    top = [{"name": e.key[:120], "ms_per_step": getattr(e, "self_device_time_total", 0) / 3 / 1e3,
            "calls_per_step": e.count / 3} for e in kern[:20]]
    cpu_top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    results["profile_eager_bf16"] = {
        "wall_ms_per_step": 1e3 * wall, "gpu_busy_ms_per_step": gpu_total,
        "gpu_busy_fraction": gpu_total / (1e3 * wall), "kernels_per_step": n_kernels, "top_gpu": top,
        "top_cpu_self": [{"name": e.key[:120], "ms_per_step": e.self_cpu_time_total / 3 / 1e3,
                          "calls_per_step": e.count / 3} for e in cpu_top]}
    log(f"[profile] wall {1e3 * wall:.1f} ms/step, GPU busy {gpu_total:.1f} ms ({100 * gpu_total / (1e3 * wall):.0f}%), "
        f"{n_kernels:.0f} kernels/step")
    for t_ in top[:12]:
        log(f"   {t_['ms_per_step']:7.2f} ms  x{t_['calls_per_step']:6.0f}  {t_['name']}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny preset on CPU (smoke test)")
    ap.add_argument("--sections", default="step,loop,eval,vitl,compile")
    ap.add_argument("--budget-s", type=float, default=540, help="skip sections once this is spent")
    ap.add_argument("--eval-images", type=int, default=512, help="images of the fake eval archive")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    hold_train_cuda_math(device)
    import open_clip
    import timm

    results = {"host": platform.node(), "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "cuda": torch.version.cuda, "timm": timm.__version__,
               "open_clip": open_clip.__version__, "python": platform.python_version(),
               "cpu_count": os.cpu_count(), "weights": "random (timing only)",
               "peak_reference_flops": H100_BF16_PEAK}
    preset, batch = ("tiny", 2) if args.quick else ("vitb16-384", 8)
    warmup, reps = (1, 2) if args.quick else (3, 10)
    secs = args.sections.split(",")

    def left():
        return args.budget_s - (time.perf_counter() - t_start)

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")

    configs = [("eager_fp32_unfused", {"amp": False}),
               ("eager_bf16", {}),
               ("eager_bf16_fused", {"fused": True}),
               ("eager_bf16_fused_channels_last", {"fused": True, "channels_last": True})]
    if args.quick:
        configs = configs[1:3]
    plan = [
        ("step", lambda: bench_train_step(preset, device, batch, configs, warmup, reps, "train_step", results)),
        ("eval", lambda: bench_eval(preset, device, 64 if args.quick else args.eval_images, 4 if args.quick else 32,
                                    0 if args.quick else 12, results)),
        ("loop", lambda: bench_train_loop(preset, device, batch, 4 if args.quick else 40,
                                          0 if args.quick else 8, results)),
        ("profile", lambda: bench_profile(preset, device, batch, results)),
        ("spread", lambda: bench_train_step(preset, device, batch, configs[1:3] + configs[1:2], warmup, 20,
                                            "train_step_repeat", results)),
        ("eval_compile", lambda: bench_eval(preset, device, 64 if args.quick else args.eval_images, 4 if args.quick else 32,
                                            0 if args.quick else 12, results, compile_model=True)),
        ("vitl", lambda: bench_train_step("tiny" if args.quick else "vitl14-336", device, batch,
                                          [("eager_bf16_fused", {"fused": True})], warmup, reps,
                                          "train_step_vitl", results)),
        ("compile", lambda: bench_train_step(preset, device, batch,
                                             [("compile_bf16_fused", {"fused": True, "compile": True})],
                                             2 if args.quick else 3, reps, "train_step_compile", results)),
    ]
    for name, fn in plan:
        if name not in secs:
            continue
        if left() < 60:
            results[f"skipped_{name}"] = "out of time budget"
            log(f"skip {name}: {left():.0f} s left")
            continue
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:
            results[f"error_{name}"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
            log(f"{name} failed: {e}")
        log(f"== {name} took {time.perf_counter() - t0:.0f} s")
        save()
    results["total_s"] = time.perf_counter() - t_start
    save()
    # summary table last
    log("\nsummary")
    for k in ("train_step", "train_step_repeat", "train_step_compile", "train_step_vitl"):
        for n, r in (results.get(k) or {}).get("configs", {}).items():
            if "step_ms_median" in r:
                log(f"{k:20s} {n:34s} {r['step_ms_median']:8.1f} ms  peak {r['peak_mem_gib']} GiB  "
                    f"MFU {100 * r['mfu_vs_989']:.1f}%")
            else:
                log(f"{k:20s} {n:34s} ERROR {r.get('error', '')[:200]}")
    for k in ("eval_noslide", "eval_noslide_compiled"):
        if k in results:
            log(f"{k}: {results[k]['images_per_s']:.1f} images/s")
    if "train_loop" in results:
        log(f"train_loop: steady {results['train_loop']['ms_per_it_steady']:.1f} ms/it")


if __name__ == "__main__":
    main()
