"""bench/conv_layout_probe.py: kernels are attributed to the operator that launched them."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from conv_layout_probe import attribute  # noqa: E402


def test_attribute_groups_watched_kernels_by_launching_operator_and_inputs():
    op = lambda i, name, dims, strides: {  # noqa: E731
        "cat": "cpu_op", "name": name,
        "args": {"External id": i, "Input Dims": dims, "Input Strides": strides}}
    kern = lambda i, name, us: {"cat": "kernel", "name": name, "dur": us,  # noqa: E731
                                "args": {"External id": i}}
    trace = {"traceEvents": [
        op(1, "aten::cudnn_convolution", [[8, 3, 32, 32]], [[3072, 1024, 32, 1]]),
        op(2, "aten::cudnn_convolution", [[8, 3, 32, 32]], [[3072, 1024, 32, 1]]),
        op(3, "aten::convolution_backward", [[8, 4, 16, 16]], [[1024, 1, 64, 4]]),
        op(4, "aten::mm", [[4, 4]], [[4, 1]]),
        op(5, "aten::_cudnn_attention_forward", [[2, 4, 8, 8]], [[256, 64, 8, 1]]),
        op(6, "aten::convolution_backward", [[8, 4, 16, 16]], [[1024, 1, 64, 4]]),
        kern(1, "void cudnn::engines_precompiled::nchwToNhwcKernel<x>", 100),
        kern(2, "void cudnn::engines_precompiled::nchwToNhwcKernel<x>", 50),
        kern(3, "sm90_xmma_dgrad_implicit_gemm_bf16", 30),
        kern(4, "nvjet_sm90_tst_gemm", 999),  # not watched
        kern(9, "void precomputed_convolve_sgemm<bf16>", 20),  # no operator recorded
        kern(5, "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_x", 500),  # attention: skipped
        kern(5, "void cudnn::fusion::convert_dq_to_16bits<true>", 70),  # attention: skipped
        kern(6, "void cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816dgrad>", 40),  # by op
    ]}
    rows = attribute(trace)
    assert [(r["op"], r["count"], round(r["ms"], 3)) for r in rows] == [
        ("aten::cudnn_convolution", 2, 0.15), ("aten::convolution_backward", 1, 0.04),
        ("aten::convolution_backward", 1, 0.03), ("?", 1, 0.02)]
    assert rows[0]["input_dims"] == [[8, 3, 32, 32]] and rows[0]["input_strides"] == [[3072, 1024, 32, 1]]
    assert rows[1]["kernel"].startswith("void cutlass") and rows[2]["kernel"].startswith("sm90_xmma_dgrad")
