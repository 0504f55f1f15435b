"""The aggregator's window attention, by implementation: GPU time and error (GPU).

Per Swin block of the aggregator (shift 0 and window // 2) at the paper shape (8 images x 17
classes, 24 x 24 maps, width 128, 4 heads, window 12), for every
:data:`drseg.models.aggregator.WINDOW_ATTENTION_MODES`: the GPU kernels of the compiled block's
forward + backward under bf16 autocast, and the error of its output and gradients against the
same block in float64 (eager, ``"sdpa"``), as ``||a - ref|| / ||ref||``::

    python bench/window_attention_probe.py --out /tmp/window_attention.json

Session 9 also ran two explicit forms (scores written out for inductor), since removed: their
numbers are in ``reports/bench/window_attention_probe_h200_s9_call1.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from engine_breakdown import kernel_time  # noqa: E402
from engine_bench import hold_train_cuda_math, log  # noqa: E402
from drseg.models import aggregator as agg  # noqa: E402


def _run(blk, x, g, groups, w, autocast=True):
    """Forward + backward of ``blk`` with ``(out * w).sum()`` as the loss (``w`` a fixed
    pattern, so that every output element gets a gradient); returns (output, grads of x, the
    bias table and the q weight)."""
    for p in blk.parameters():
        p.grad = None
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = blk(x, g, groups)
    (out.to(w.dtype) * w).sum().backward()
    return out.detach(), x.grad, blk.attn.bias_table.grad, blk.attn.q.weight.grad


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--maps", type=int, default=8 * 17)
    ap.add_argument("--modes", default=",".join(agg.WINDOW_ATTENTION_MODES))
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: smoke test (SDPA in every mode)
    hold_train_cuda_math(dev)
    switch = agg.WINDOW_ATTENTION
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "maps": args.maps, "blocks": {}}
    names = ("output", "grad_x", "grad_bias_table", "grad_q_weight")
    for shift in (0, 6):
        torch.manual_seed(0)
        blk = agg.GuidedSwinBlock(128, 128, 12, shift, 4).to(dev)
        x = torch.randn(args.maps, 24, 24, 128, device=dev)
        g = torch.randn(8, 24, 24, 128, device=dev)
        groups = args.maps // 8
        ref_blk = copy.deepcopy(blk).double()
        agg.WINDOW_ATTENTION = "sdpa"
        w = torch.sin(torch.arange(args.maps * 24 * 24 * 128, device=dev,
                                   dtype=torch.float64)).view(args.maps, 24, 24, 128)
        ref = _run(ref_blk, x.double(), g.double(), groups, w, autocast=False)
        w = w.float()
        rec = {}
        for mode in args.modes.split(","):
            agg.WINDOW_ATTENTION = mode
            torch._dynamo.reset()
            f = torch.compile(blk)
            try:
                got = _run(f, x, g, groups, w)
                err = {n: float((a.double() - r).norm() / r.norm())
                       for n, a, r in zip(names, got, ref)}
                fn = lambda: _run(f, x, g, groups, w)  # noqa: E731
                fn()
                top = {}
                gms, nk = kernel_time(fn, dev, top=top, n_top=12)
                rec[mode] = {"gpu_ms": gms, "kernels": nk, "rel_error": err, "top_kernels_ms": top}
                log(f"shift {shift} {mode:14s} gpu {gms:6.3f} ms {nk:5.0f} kernels; rel. error "
                    + " ".join(f"{n} {e:.2e}" for n, e in err.items()))
                for kname, ms in list(top.items())[:5]:
                    log(f"    {ms:7.3f}  {kname}")
            except Exception as e:  # noqa: BLE001  (a mode the installed torch cannot run)
                rec[mode] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
                log(f"shift {shift} {mode:14s} FAILED {rec[mode]['error']}")
        res["blocks"][f"shift{shift}"] = rec
    agg.WINDOW_ATTENTION = switch
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
