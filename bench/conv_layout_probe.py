"""Which operator launches each layout-conversion and convolution kernel of a training step (GPU).

The compiled step of session 3 spent 2.5 ms in cuDNN's ``nchwToNhwc`` / ``nhwcToNchw``
conversions and 1 ms in a legacy (non-tensor-core) ``precomputed_convolve_sgemm`` kernel, but
a kernel name does not say which layer launched it. This profiles one training step (the
engine's ``StepLoss``, paper shape, random weights) with operator shapes recorded and maps every
such kernel to the aten operator that launched it, with that operator's input shapes and
strides (from the profiler's trace). ``--compile`` profiles the torch.compile'd step in mode
"default" (no CUDA graphs: graph replays hide the launching operator).

    python bench/conv_layout_probe.py --out reports/bench/conv_layout_probe.json [--compile]
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from engine_bench import DLRSD, log, make_step, step_setup, sync  # noqa: E402
from drseg.engine.train import StepLoss  # noqa: E402

#: kernels this probe attributes: every kernel launched by a convolution operator, and by name
#: the layout conversions and legacy convolution kernels (also where no operator was recorded)
WATCH_KERNELS = re.compile(r"nchwToNhwc|nhwcToNchw|convolve")
WATCH_OPS = re.compile(r"conv", re.I)
#: launching operators never attributed (attention kernels are named "..._fprop", "convert_...")
SKIP_OPS = re.compile(r"attention|sdpa", re.I)


def attribute(trace: dict) -> list[dict]:
    """Watched kernels of a chrome trace grouped by (kernel, launching operator, its inputs)."""
    ops: dict[int, dict] = {}
    for ev in trace.get("traceEvents", []):
        if ev.get("cat") == "cpu_op" and "External id" in ev.get("args", {}):
            ops[ev["args"]["External id"]] = ev
    groups: dict[tuple, dict] = collections.defaultdict(lambda: {"ms": 0.0, "count": 0})
    for ev in trace.get("traceEvents", []):
        if ev.get("cat") != "kernel":
            continue
        op = ops.get(ev.get("args", {}).get("External id"), {})
        name = op.get("name", "")
        if SKIP_OPS.search(name) or not (WATCH_OPS.search(name)
                                         or WATCH_KERNELS.search(ev.get("name", ""))):
            continue
        a = op.get("args", {})
        key = (ev["name"][:110], op.get("name", "?"), json.dumps(a.get("Input Dims")),
               json.dumps(a.get("Input Strides")))
        groups[key]["ms"] += ev.get("dur", 0) / 1e3
        groups[key]["count"] += 1
    rows = [{"kernel": k[0], "op": k[1], "input_dims": json.loads(k[2]),
             "input_strides": json.loads(k[3]), **v} for k, v in groups.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--compile", action="store_true", help="the compiled step (mode default)")
    ap.add_argument("--legacy", action="store_true",
                    help="session 3's layers: 1-channel head, NCHW guidance upsampler, nn.GroupNorm, "
                         "conv patch embeds, nn.MultiheadAttention, full-length text tokens")
    ap.add_argument("--quick", action="store_true", help="tiny preset on CPU (smoke test)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    preset, batch = ("tiny", 2) if args.quick else ("vitb16-384", 8)
    amp = device.type == "cuda"
    _, model, images, masks = step_setup(preset, batch, device, args.legacy)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(model.parameter_groups(2e-4, 0.01), lr=2e-4,
                            **({"fused": True} if amp else {}))
    sl = StepLoss(model, DLRSD, torch.bfloat16 if amp else None)
    step = make_step(model, opt, params, images, masks, DLRSD, amp,
                     step_loss=torch.compile(sl) if args.compile else sl)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync(device)
    warm = time.perf_counter() - t0
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
        step()
        sync(device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        rows = attribute(json.loads(path.read_text()))
    res = {"device": torch.cuda.get_device_name(0) if amp else "cpu", "torch": torch.__version__,
           "preset": preset, "batch": batch, "compiled": args.compile, "legacy": args.legacy,
           "warmup_s": warm, "total_ms": sum(r["ms"] for r in rows), "kernels": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    for r in rows[:25]:
        log(f"{r['ms']:7.3f} ms x{r['count']:3d} {r['op']:32s} {r['kernel'][:60]:60s} "
            f"{r['input_dims']} {r['input_strides']}")


if __name__ == "__main__":
    main()
