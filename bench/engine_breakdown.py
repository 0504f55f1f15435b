"""Where a DR-Seg training step spends its time, component by component (GPU).

Each component of the step runs alone, forward and backward, on inputs of its real shape at the
paper setting (ViT-B/16 at 384, 4 rotations, DINOv3 ViT-L/16 prior, batch 8, 17 classes), in
bf16 autocast as the engine runs it. Per component it records

* ``wall_ms``: median wall time of one call, synchronised (what the host and the GPU take
  together; an eager step is the sum of these when the host is the bottleneck);
* ``gpu_ms``: GPU kernel time of one call (torch.profiler, kernel / memcpy / memset events
  only, so aten ops that launched them are not counted twice);
* ``kernels``: kernel launches per call.

A component whose ``wall_ms`` is far above its ``gpu_ms`` is bound by the host (launches and
Python); one whose ``gpu_ms`` is high needs fewer bytes or fewer FLOPs. The whole eager step and
(with ``--compile``) the compiled step are measured the same way. Random weights (timing only).

    python bench/engine_breakdown.py --out reports/bench/engine_breakdown_h100.json [--compile]
    python bench/engine_breakdown.py --quick --out /tmp/breakdown_cpu.json   # tiny, CPU smoke
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from engine_bench import (DLRSD, H100_BF16_PEAK, hold_train_cuda_math, log, make_step,  # noqa: E402
                          step_setup, sync)
from drseg.engine.train import StepLoss  # noqa: E402


#: kernel-name patterns of each category (first match wins), for the compiled step's breakdown
CATEGORIES = (
    ("attention", ("sdpa", "flash", "fmha", "attention", "efficient_attention")),
    ("gemm", ("nvjet", "gemm", "cutlass", "xmma", "cublas", "sm90_", "sm80_")),
    ("conv", ("conv", "implicit", "cudnn", "winograd", "dgrad", "wgrad")),
    ("triton_reduction", ("triton_per", "triton_red")),
    ("triton_pointwise", ("triton_poi", "triton_")),
    ("copy_memset", ("memcpy", "memset", "copy", "cat", "fill")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "norm_kernel")),
)


def categorize(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def kernel_time(fn, device, reps: int = 3, top: dict | None = None, n_top: int = 5,
                categories: dict | None = None) -> tuple[float, float]:
    """(GPU kernel ms per call, kernels per call) of ``fn`` under torch.profiler; the
    ``n_top`` costliest kernel names (ms per call) go into ``top`` when given, and the ms and
    kernel count per call of each :data:`CATEGORIES` entry into ``categories``."""
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return float("nan"), float("nan")
    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        sync(device)
    total, count, names, counts = 0.0, 0, {}, {}
    for e in prof.events():
        if e.device_type.name == "CUDA":
            t = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            total += t
            count += 1
            names[e.name[:90]] = names.get(e.name[:90], 0.0) + t / reps / 1e3
            counts[e.name[:90]] = counts.get(e.name[:90], 0) + 1
    if top is not None:
        top.update(dict(sorted(names.items(), key=lambda kv: -kv[1])[:n_top]))
    if categories is not None:
        for name, ms in names.items():
            c = categories.setdefault(categorize(name), {"ms": 0.0, "kernels": 0.0})
            c["ms"] += ms
            c["kernels"] += counts[name] / reps
    return total / reps / 1e3, count / reps


def wall_time(fn, device, warmup: int = 3, reps: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(1e3 * (time.perf_counter() - t))
    return out


def pipelined_ms(fn, device, steps: int = 20) -> float:
    """Mean ms per call of ``steps`` back-to-back calls with one synchronisation at the end:
    the training loop's rate (it synchronises only to log the loss), where :func:`wall_time`
    synchronises after every call and so adds the start of each call to the GPU's time."""
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return 1e3 * (time.perf_counter() - t) / steps


#: the values of the models' device switches (drseg.models.layers.PATCH_GEMM, ...)
SWITCH_MODES = ("cuda", "always", "never")


def set_switches(assignments) -> dict:
    """Apply ``module.ATTR=value`` assignments (e.g. ``drseg.models.layers.PACKED_ATTENTION=never``,
    the baseline of a session's change); returns them as a dict for the results. Booleans take
    true/false/1/0, device switches one of :data:`SWITCH_MODES`; anything else stops the run."""
    import importlib

    done = {}
    for a in assignments or ():
        target, _, value = a.partition("=")
        mod, _, attr = target.rpartition(".")
        module = importlib.import_module(mod)
        if not hasattr(module, attr):
            raise SystemExit(f"--set {a}: {mod} has no {attr}")
        old = getattr(module, attr)
        if isinstance(old, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {a}: {attr} is a boolean (true/false/1/0)")
            new = value.lower() in ("true", "1")
        elif isinstance(old, str) and old in SWITCH_MODES:
            if value not in SWITCH_MODES:
                raise SystemExit(f"--set {a}: {attr} takes one of {SWITCH_MODES}")
            new = value
        elif isinstance(old, (int, float, str)):
            new = type(old)(value)
        else:
            raise SystemExit(f"--set {a}: {attr} is a {type(old).__name__}, not a switch")
        setattr(module, attr, new)
        done[target] = new
    return done


def components(model, images, masks, vocab, amp: bool, wrap=None):
    """Closures running each part of the step alone (forward + backward), real shapes.

    ``wrap`` (e.g. ``torch.compile``) is applied to each part's forward function; the backward
    runs outside it (its compiled form when the forward is compiled)."""
    from drseg.models import clip as clip_lib

    wrap = wrap or (lambda f: f)

    dev = images.device
    ac = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)  # noqa: E731
    cfg = model.cfg
    B, K = images.shape[0], len(vocab)
    x = clip_lib.normalize_images(images)
    with torch.no_grad(), ac():
        maps, guide = model._clip_branch(x)
        text_emb, group = model.text_embeddings(vocab)
        dense0 = maps[0]
        c_ori = torch.stack([clip_lib.class_correlation(d, text_emb, group, K) for d in maps], 1)
        dino = model.adapter(model.prior(x))
        f_ref = model.pdgr(dense0, dino)
        c_ref = clip_lib.class_correlation(f_ref, text_emb, group, K)
        gate = model.gate_scale * c_ori.mean(1)
        cost = model.fusion(c_ori.to(dense0.dtype), c_ref.to(dense0.dtype), gate)
        app = model.appearance(dense0)
        text_g = model.text_guidance(clip_lib.class_text_embeddings(text_emb, group, K))
        text_g = text_g.unsqueeze(0).expand(B, -1, -1)
        agg = model.aggregator(cost, app, text_g)
        gd = model.guidance_up(guide)
        logits = model.decoder(agg, gd)

    def leaf(t):
        return t.detach().clone().requires_grad_(True)

    def backward(out):
        if isinstance(out, (list, tuple)):
            out = sum(o.float().mean() for o in out)
        out.float().mean().backward()

    clip_fwd = wrap(model._clip_branch)

    def clip_visual():
        with ac():
            m, g = clip_fwd(x)
        backward(list(m) + list(g))

    tokens, _ = clip_lib.tokenize_vocab(model.tokenizer, vocab, cfg.templates)
    tokens = clip_lib.truncate_tokens(model.clip, tokens, dev).to(dev)
    text_fwd = wrap(lambda t: clip_lib.encode_tokens(model.clip, t, len(cfg.templates)))

    def text():
        with ac():
            e = text_fwd(tokens)
        backward(e)

    prior_fwd = wrap(lambda t: model.adapter(model.prior(t)))

    def prior():
        with ac():
            prior_fwd(x)

    d0, dn = leaf(dense0), dino.detach()
    pdgr_fwd = wrap(model.pdgr)

    def pdgr():
        with ac():
            backward(pdgr_fwd(d0, dn))

    co, cr, gt = leaf(c_ori.to(dense0.dtype)), leaf(c_ref.to(dense0.dtype)), gate.detach()
    fusion_fwd = wrap(model.fusion)

    def fusion():
        with ac():
            backward(fusion_fwd(co, cr, gt))

    cs, ap, tg = leaf(cost), leaf(app), leaf(text_g)
    agg_fwd = wrap(model.aggregator)

    def aggregator():
        with ac():
            backward(agg_fwd(cs, ap, tg))

    ag, gl = leaf(agg), [leaf(g) for g in guide]
    dec_fwd = wrap(lambda a, g: model.decoder(a, model.guidance_up(g)))

    def decoder():
        with ac():
            backward(dec_fwd(ag, gl))

    lg = leaf(logits.float())
    loss_fwd = wrap(lambda lo: model.loss(lo, masks, check=False))

    def loss():
        loss_fwd(lg).backward()

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(model.parameter_groups(2e-4, 0.01), lr=2e-4, weight_decay=1e-4,
                            **({"fused": True} if dev.type == "cuda" else {}))
    grads = [torch.randn_like(p) * 1e-3 for p in params]

    def optimizer():
        for p, gr in zip(params, grads):
            p.grad = gr
        torch.nn.utils.clip_grad_norm_(params, 0.01)
        opt.step()

    return {"clip_visual_4rot": clip_visual, "text_tower": text, "prior_frozen": prior,
            "pdgr": pdgr, "fusion_ugaf": fusion, "aggregator": aggregator,
            "guidance_up_decoder": decoder, "loss": loss, "clip_grad_adamw": optimizer}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny preset on CPU (smoke test)")
    ap.add_argument("--compile", action="store_true", help="also the torch.compile'd whole step")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. reduce-overhead)")
    ap.add_argument("--label", default="", help="free text stored with the results")
    ap.add_argument("--no-components", action="store_true", help="whole steps only")
    ap.add_argument("--no-eager", action="store_true", help="skip the eager whole step")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                    help="set a module switch first (e.g. drseg.models.layers.PACKED_ATTENTION=never)")
    ap.add_argument("--only", default="", help="comma list of the components to run (default: all)")
    ap.add_argument("--compile-components", action="store_true",
                    help="torch.compile (mode default) each component's forward")
    ap.add_argument("--preset", default="vitb16-384", help="model preset (vitl14-336: ViT-L/14)")
    ap.add_argument("--sdpa-no-cudnn", action="store_true",
                    help="torch.backends.cuda.enable_cudnn_sdp(False): the CLIP and prior "
                         "attention on flash / memory-efficient kernels instead of cuDNN")
    ap.add_argument("--top", type=int, default=5,
                    help="costliest kernel names kept per component (default 5)")
    ap.add_argument("--legacy", action="store_true",
                    help="the step as of session 3 (baseline): loss outside the compiled model, "
                         "1-channel decoder head, NCHW guidance upsampler, nn.GroupNorm, convolution "
                         "patch embeddings, nn.MultiheadAttention in the CLIP blocks, full-length text tokens")
    args = ap.parse_args(argv)
    switches = set_switches(args.set)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    hold_train_cuda_math(device)
    if device.type == "cuda" and args.sdpa_no_cudnn:
        torch.backends.cuda.enable_cudnn_sdp(False)
    preset, batch = ("tiny", 2) if args.quick else (args.preset, 8)
    amp = device.type == "cuda"
    cfg, model, images, masks = step_setup(preset, batch, device, args.legacy)
    from drseg.models import layers as model_layers  # the switch as --set left it
    # as train() does: frozen weights cast once (CUDA); held open for the whole bench process
    casts = model_layers.frozen_casts(model, torch.bfloat16 if amp else None).__enter__()
    res = {"label": args.label, "legacy": args.legacy, "device": torch.cuda.get_device_name(0) if amp else "cpu",
           "torch": torch.__version__, "switches": switches, "sdpa_cudnn": not args.sdpa_no_cudnn,
           "preset": preset, "batch": batch, "classes": len(DLRSD),
           "frozen_cast_bytes": casts.bytes, "components": {}, "steps": {}}
    out = Path(args.out)

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")

    wrap = torch.compile if args.compile_components else None
    res["components_compiled"] = bool(args.compile_components)
    if args.only and args.no_components:
        raise SystemExit("--only names components to run: drop --no-components")
    parts = {} if args.no_components else components(model, images, masks, DLRSD, amp, wrap)
    if args.only:
        only = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = set(only) - set(parts)
        if unknown:
            raise SystemExit(f"--only: unknown components {sorted(unknown)}; known: {sorted(parts)}")
        parts = {k: v for k, v in parts.items() if k in only}
    for name, fn in parts.items():
        try:
            w = wall_time(fn, device)
            top, cats = {}, {}
            gms, nk = kernel_time(fn, device, top=top, n_top=args.top, categories=cats)
            res["components"][name] = {"wall_ms": statistics.median(w), "gpu_ms": gms, "kernels": nk,
                                       "categories_ms": dict(sorted(cats.items(),
                                                                    key=lambda kv: -kv[1]["ms"])),
                                       "top_kernels_ms": top}
            log(f"{name:22s} wall {statistics.median(w):8.2f} ms   gpu {gms:8.2f} ms   {nk:6.0f} kernels")
        except Exception as e:
            res["components"][name] = {"error": f"{type(e).__name__}: {e}",
                                       "trace": traceback.format_exc()[-2000:]}
            log(f"{name} failed: {e}")
        model.zero_grad(set_to_none=True)
    save()
    params = [p for p in model.parameters() if p.requires_grad]
    steps = [] if args.no_eager else [("eager_bf16", None)]
    if args.compile:
        steps.append(("compiled" + (f"_{args.compile_mode}" if args.compile_mode else ""),
                      args.compile_mode or "default"))
    for name, mode in steps:
        try:
            t0 = time.perf_counter()
            opt = torch.optim.AdamW(model.parameter_groups(2e-4, 0.01), lr=2e-4, weight_decay=1e-4,
                                    **({"fused": True} if amp else {}))
            compile_ = (lambda m: torch.compile(m, mode=None if mode == "default" else mode)) if mode \
                else (lambda m: None)
            if args.legacy:  # the model compiled, the loss eager after it
                step = make_step(model, opt, params, images, masks, DLRSD, amp, compiled=compile_(model),
                                 graphed=mode in ("reduce-overhead", "max-autotune"))
            else:  # the engine's StepLoss (forward + loss) compiled as one
                sl = StepLoss(model, DLRSD, torch.bfloat16 if amp else None)
                compiled_sl = compile_(sl)
                step = make_step(model, opt, params, images, masks, DLRSD, amp,
                                 graphed=mode in ("reduce-overhead", "max-autotune"),
                                 step_loss=sl if compiled_sl is None else compiled_sl)
            if amp:
                torch.cuda.reset_peak_memory_stats(device)
            w = wall_time(step, device, warmup=3, reps=10)
            setup_s = time.perf_counter() - t0 - sum(w) / 1e3  # build, compile, 3 warm-up steps
            piped = pipelined_ms(step, device)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if amp else float("nan")
            top, cats = {}, {}
            gms, nk = kernel_time(step, device, top=top, n_top=40, categories=cats)
            res["steps"][name] = {"wall_ms": statistics.median(w), "wall_ms_all": w,
                                  "wall_ms_pipelined": piped, "gpu_ms": gms,
                                  "kernels": nk, "peak_allocated_gib": peak,
                                  "categories_ms": dict(sorted(cats.items(), key=lambda kv: -kv[1]["ms"])),
                                  "top_kernels_ms": top, "setup_and_warmup_s": setup_s}
            for cat, c in res["steps"][name]["categories_ms"].items():
                log(f"    {cat:18s} {c['ms']:7.2f} ms  {c['kernels']:6.0f} kernels")
            log(f"STEP {name:16s} wall {statistics.median(w):8.2f} ms   pipelined {piped:8.2f} ms   "
                f"gpu {gms:8.2f} ms   {nk:6.0f} kernels")
        except Exception as e:
            res["steps"][name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
            log(f"step {name} failed: {e}")
        save()
    comp = res["components"]
    res["sum_components_gpu_ms"] = sum(c.get("gpu_ms", 0) for c in comp.values())
    res["sum_components_wall_ms"] = sum(c.get("wall_ms", 0) for c in comp.values())
    res["peak_reference_flops"] = H100_BF16_PEAK
    save()
    log(f"sum of components: wall {res['sum_components_wall_ms']:.1f} ms, gpu {res['sum_components_gpu_ms']:.1f} ms")


if __name__ == "__main__":
    main()
