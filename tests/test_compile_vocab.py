"""Compiled evaluation does not recompile for every vocabulary.

``DRSeg.compile_dense`` compiles everything after the text tower. A counting torch.compile
backend (dynamo only, no code generation: fast on the CPU) records how many graphs are built
while the model runs five vocabularies of three sizes; compiling the whole model instead builds
new graphs for every vocabulary (tested too, as the contrast that makes the first test mean
something).
"""
from __future__ import annotations

import pytest
import torch

from drseg.models.drseg import build_model, make_config

VOCABS = [["road", "tree", "water"], ["building", "car", "grass"], ["sea", "ship", "dock", "sand"],
          ["low vegetation", "clutter", "court"], ["a", "b", "c", "d", "e"],
          ["f", "g", "h", "i", "j", "k"], ["tanks", "field", "chaparral", "pavement", "sand", "mobile home",
                                           "airplane"]]


class _Counter:
    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(make_config("tiny", {"prior_kwargs": {"patch_size": 8, "embed_dim": 32,
                                                             "depth": 1, "num_heads": 2}})).eval()


def _run(net, vocabs):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    outs = []
    with torch.no_grad():
        for v in vocabs:
            outs.append(net(x, v))
            assert outs[-1].shape[1] == len(v)
    return outs


def test_compile_dense_builds_few_graphs_over_many_vocabularies(model):
    torch._dynamo.reset()
    eager = _run(model, VOCABS)
    counter = _Counter()
    model.compile_dense(backend=counter)
    try:
        compiled = _run(model, VOCABS)
    finally:
        model._compiled_dense = None
    # 7 vocabularies of 5 sizes: the first size, then graphs with a dynamic class dimension
    assert counter.graphs <= 3
    for a, b in zip(compiled, eager):
        assert torch.allclose(a, b, atol=1e-5)


def test_whole_model_compile_rebuilds_per_vocabulary(model):
    torch._dynamo.reset()
    counter = _Counter()
    _run(torch.compile(model, backend=counter), VOCABS[:4])
    assert counter.graphs >= 4  # at least one new graph per vocabulary
