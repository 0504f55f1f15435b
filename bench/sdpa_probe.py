"""Which attention kernel the aggregator's window attention gets, eager and compiled (GPU).

The aggregator's Swin blocks call ``scaled_dot_product_attention`` with an additive bias (the
relative position bias, plus the shift mask in the shifted block) whose table trains. Session
5's compiled aggregator showed both memory-efficient attention kernels and an inductor softmax
kernel, so one of the two calls may run the math path. Per block (shift 0 and window // 2) at
the paper shape (8 images x 17 classes, 24 x 24 maps, width 128, 4 heads, window 12), this
prints the backend ``torch._fused_sdp_choice`` picks for the tensors the block builds, and the
GPU kernels of the block's forward + backward, eager and under ``torch.compile``::

    python bench/sdpa_probe.py --out /tmp/sdpa_probe.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine_breakdown import kernel_time  # noqa: E402
from engine_bench import log  # noqa: E402
from drseg.models import aggregator as agg  # noqa: E402

BACKENDS = {int(v): k for k, v in torch.nn.attention.SDPBackend.__members__.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--maps", type=int, default=8 * 17)
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: smoke test
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__, "blocks": {}}
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        if not torch.compiler.is_compiling():
            choice = torch._fused_sdp_choice(q, k, v, attn_mask, 0.0, False)
            seen.append({"q": list(q.shape), "q_stride": list(q.stride()),
                         "mask": list(attn_mask.shape) if attn_mask is not None else None,
                         "mask_stride": list(attn_mask.stride()) if attn_mask is not None else None,
                         "mask_dtype": str(attn_mask.dtype) if attn_mask is not None else None,
                         "mask_requires_grad": bool(attn_mask is not None and attn_mask.requires_grad),
                         "backend": BACKENDS.get(int(choice), str(choice))})
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kw)

    agg.F.scaled_dot_product_attention = spy
    switch = agg.WINDOW_ATTENTION
    agg.WINDOW_ATTENTION = "sdpa"  # the compiled training block would take FlexAttention (session 9)
    try:
        for shift in (0, 6):
            torch.manual_seed(0)
            blk = agg.GuidedSwinBlock(128, 128, 12, shift, 4).to(dev)
            x = torch.randn(args.maps, 24, 24, 128, device=dev, requires_grad=True)
            g = torch.randn(8, 24, 24, 128, device=dev)

            def run(f):
                def call():
                    with torch.autocast(dev.type, dtype=torch.bfloat16):
                        out = f(x, g, args.maps // 8)
                    out.float().mean().backward()
                return call

            rec = {}
            seen.clear()
            run(blk)()
            rec["eager_choice"] = list(seen)
            for name, f in (("eager", blk), ("compiled", torch.compile(blk))):
                top = {}
                fn = run(f)
                for _ in range(2):
                    fn()
                gms, nk = kernel_time(fn, dev, top=top, n_top=25)
                rec[name] = {"gpu_ms": gms, "kernels": nk, "top_kernels_ms": top}
                log(f"shift {shift} {name:9s} gpu {gms:6.3f} ms {nk:5.0f} kernels; "
                    f"eager choice {[s['backend'] for s in rec['eager_choice']]}")
                for kname, ms in list(top.items())[:8]:
                    log(f"    {ms:7.3f}  {kname}")
            res["blocks"][f"shift{shift}"] = rec
    finally:
        agg.F.scaled_dot_product_attention = real_sdpa
        agg.WINDOW_ATTENTION = switch
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
