"""Training-step benchmark of a model preset (forward + backward + AdamW step).

Random weights (no file is read) and random inputs: the numbers measure speed and memory
only. ``python -m drseg.models.bench --preset vitb16-384 --device cuda --out bench.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from drseg.models import spsd
from drseg.models.drseg import build_model, make_config

#: DLRSD's 17 classes (PROTOCOL.md, rskt-v1) -- the paper's training vocabulary size.
DLRSD_LIKE_VOCAB = ["airplane", "bare soil", "buildings", "cars", "chaparral", "court", "dock",
                    "field", "grass", "mobile home", "pavement", "sand", "sea", "ship", "tanks",
                    "trees", "water"]


def step_benchmark(preset: str, overrides: Optional[dict] = None, batch: int = 8,
                   steps: int = 10, warmup: int = 3, device: str = "cpu", amp: bool = True,
                   vocab: Sequence[str] = DLRSD_LIKE_VOCAB, seed: int = 0) -> dict[str, Any]:
    """Time training steps of a randomly initialised model.

    Args:
        preset: a :data:`drseg.models.drseg.PRESETS` key. overrides: config fields.
        batch: images per step. steps: timed steps. warmup: untimed steps first.
        device: ``cpu`` or ``cuda``. amp: bf16 autocast on CUDA.
        vocab: class names (K = len(vocab)).
        seed: input / init seed.

    Returns:
        a json-able record: seconds per step (median, min), peak GPU memory, parameter
        counts, the config.
    """
    torch.manual_seed(seed)
    cfg = make_config(preset, overrides)
    model = build_model(cfg)
    C = model.clip.visual.output_dim
    score = torch.rand(C, generator=torch.Generator().manual_seed(seed))
    if cfg.variant == "drseg" and cfg.pdgr and cfg.spsd:  # random stand-in channel index
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            record = spsd.save_channel_index(Path(tmp) / "ci.json", score, rho=0.5, lam=0.3,
                                             backbone=cfg.clip_model,
                                             clip_checkpoint_sha256="0" * 64,
                                             dataset="random")
        model = build_model(cfg, channel_index=record)
    dev = torch.device(device)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameter_groups(2e-4, 0.01), weight_decay=1e-4)
    size = cfg.image_size
    x = torch.rand(batch, 3, size, size, device=dev) * 255
    masks = torch.randint(0, len(vocab), (batch, size, size), device=dev)
    use_amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x, vocab)
        loss = model.loss(logits, masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    out = {"preset": preset, "overrides": overrides or {}, "batch": batch, "classes": len(vocab),
           "steps": steps, "amp_bf16": use_amp, "device": device,
           "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                           else platform.processor() or platform.machine()),
           "torch": torch.__version__, "step_s_median": times[len(times) // 2],
           "step_s_min": times[0], "loss": float(loss.detach()), "logits_shape": list(logits.shape),
           "params": model.parameter_counts(), "note": "random weights and inputs"}
    if dev.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    """CLI: print (and optionally write) the benchmark record."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--overrides", default="{}", help="json dict of ModelConfig fields")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = step_benchmark(args.preset, json.loads(args.overrides), args.batch, args.steps,
                         args.warmup, args.device, not args.no_amp)
    text = json.dumps(rec, indent=1, sort_keys=True)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
