"""drseg.engine.inductor: the wide-reduction split and the context that installs it."""
from __future__ import annotations

import pytest
import torch

from drseg.engine import inductor as I


@pytest.mark.parametrize("rnumel,outputs,split", [
    (147456, 272, 4),     # decoder GroupNorm at 96 x 96: 136 maps x 2 groups
    (36864, 544, 2),      # decoder GroupNorm at 48 x 48: 136 maps x 4 groups
    (39168, 512, 3),      # ceil(1056 / 512) = 3 parts of 13056
    (18432, 544, 1),      # too short a reduction
    (147456, 200, 1),     # fewer than 2 x SMs outputs: inductor's own heuristic splits
    (147456, 1056, 1),    # 8 x SMs outputs: enough blocks already
    (1 << 20, 264, 4),    # the lower edge is split
    (32768, 300, 4),      # capped by MIN_PART: 32768 // 8192
])
def test_wide_reduction_split(rnumel, outputs, split):
    assert I.wide_reduction_split(rnumel, outputs, num_sm=132) == split


def _current_choices():
    from torch._inductor.virtualized import V
    return type(V.choices)


def test_inductor_heuristics_installs_the_choices_on_cuda_and_puts_them_back(monkeypatch):
    from torch._inductor import config as inductor_config
    from torch._inductor.choices import InductorChoices

    from drseg.engine.inductor_choices import WideReductionChoices

    before, before_cfg = _current_choices(), getattr(inductor_config, "inductor_choices_class", None)
    assert before is not WideReductionChoices
    with I.inductor_heuristics(torch.device("cuda")):  # installs without a GPU: compile-time only
        assert _current_choices() is WideReductionChoices
        if hasattr(inductor_config, "inductor_choices_class"):
            assert inductor_config.inductor_choices_class is WideReductionChoices
    assert _current_choices() is before and issubclass(before, InductorChoices)
    with pytest.raises(RuntimeError, match="boom"):
        with I.inductor_heuristics(torch.device("cuda")):
            raise RuntimeError("boom")
    assert _current_choices() is before
    assert getattr(inductor_config, "inductor_choices_class", None) is before_cfg
    for device, enabled in ((torch.device("cpu"), None), (torch.device("cuda"), False)):
        with I.inductor_heuristics(device, enabled):
            assert _current_choices() is before
    monkeypatch.setattr(I, "SPLIT_WIDE_REDUCTIONS", False)
    with I.inductor_heuristics(torch.device("cuda")):
        assert _current_choices() is before


def test_wide_reduction_choices_split_only_what_inductor_leaves_whole_on_cuda(monkeypatch):
    from types import SimpleNamespace

    import drseg.engine.inductor_choices as C
    from torch._inductor.choices import InductorChoices

    base = {"split": 1}
    monkeypatch.setattr(InductorChoices, "reduction_split_factor",
                        lambda self, device, r, n, inner: base["split"])
    monkeypatch.setattr(C.DeviceProperties, "create",
                        staticmethod(lambda device: SimpleNamespace(multi_processor_count=132)))
    ch = C.WideReductionChoices()
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert ch.reduction_split_factor(cuda, 147456, 272, True) == 4
    assert ch.reduction_split_factor(cuda, 147456, 272, False) == 1  # outer reductions: inductor's
    assert ch.reduction_split_factor(cpu, 147456, 272, True) == 1
    base["split"] = 7  # inductor split it already: kept
    assert ch.reduction_split_factor(cuda, 147456, 272, True) == 7
    assert isinstance(ch.uuid(), str) and str(I.MIN_PART) in ch.uuid()


def test_a_compile_under_the_heuristics_gives_eager_values():
    """A CPU compile with the choices installed (as on CUDA) goes through inductor's cache key
    with the custom class and computes what eager does."""
    torch._dynamo.reset()
    x = torch.randn(4, 8, 6, 6)
    gn = torch.nn.GroupNorm(2, 8)

    def f(t):
        return torch.relu(gn(t)).sum(dim=(2, 3))

    try:
        with I.inductor_heuristics(torch.device("cuda")):
            got = torch.compile(f)(x)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, f(x))


@pytest.mark.gpu
def test_group_norm_compiled_with_the_split_matches_eager_on_cuda():
    """The decoder's widest GroupNorm (136 maps of 32 channels at 96 x 96, 2 groups,
    channels-last, bf16 autocast), forward and backward compiled with and without the split:
    the same values to float rounding, and the split generates more kernels."""
    from torch._inductor import metrics

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(2, 32).cuda()
    x = torch.randn(136, 32, 96, 96, device="cuda").contiguous(memory_format=torch.channels_last)
    w = torch.randn_like(x)

    def step(t):
        t = t.detach().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = torch.relu(gn(t.to(torch.bfloat16)))
        (y.float() * w).sum().backward()
        return y.float(), t.grad

    out, kernels = {}, {}
    for on in (False, True):
        torch._dynamo.reset()
        metrics.reset()
        try:
            with I.inductor_heuristics(torch.device("cuda"), enabled=on):
                out[on] = torch.compile(step)(x)
        finally:
            torch._dynamo.reset()
        kernels[on] = metrics.generated_kernel_count
    for a, b in zip(out[True], out[False]):
        assert float((a - b).norm() / b.norm()) < 1e-2
    assert kernels[True] > kernels[False]
