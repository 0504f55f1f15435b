"""Inductor heuristics the compiled CUDA training step is built under.

torch.compile (inductor) splits a reduction over several thread blocks only while it has fewer
than ``2 * SMs`` outputs (``InductorChoices.reduction_split_factor``). At the paper shape the
decoder's GroupNorms have 272 and 544 outputs (136 class maps x 2 or 4 groups) over 147456 and
36864 elements each, so each output is reduced by a single thread block: on an H200's 132 SMs
that is about two blocks per SM streaming a few hundred KB each, far under the memory
bandwidth (session 10: the GroupNorm backward kernels, ~0.14 ms each for ~0.5 GB together).
:func:`wide_reduction_split` also splits such wide reductions with a few hundred outputs, and
:func:`inductor_heuristics` installs it (through inductor's documented extension point,
``V.set_choices_handler``) for the duration of a block, on CUDA only. It changes how kernels
are cut, not what they compute (a split reduction sums in another order: float rounding).
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch

#: whether :func:`inductor_heuristics` installs the wide-reduction split (a switch as those of
#: :mod:`drseg.models.aggregator`; the benchmarks set it with ``--set``).
SPLIT_WIDE_REDUCTIONS = True

#: thread blocks per SM the split aims at, the smallest reduction split, and the fewest
#: elements a split part keeps.
TARGET_BLOCKS_PER_SM = 8
MIN_REDUCTION = 32768
MIN_PART = 8192


def wide_reduction_split(reduction_numel: int, outputs: int, num_sm: int) -> int:
    """Split factor of an inner reduction that inductor leaves whole (1 = no split).

    Splits when there are between ``2 * num_sm`` and ``TARGET_BLOCKS_PER_SM * num_sm`` outputs
    (fewer: inductor's own heuristic splits; more: enough blocks already) and each reduces at
    least :data:`MIN_REDUCTION` elements; the split gives about ``TARGET_BLOCKS_PER_SM * num_sm``
    blocks, each part at least :data:`MIN_PART` elements.

    Args:
        reduction_numel: elements reduced per output.
        outputs: number of outputs (inductor's ``numel``).
        num_sm: streaming multiprocessors of the device.
    """
    target = TARGET_BLOCKS_PER_SM * num_sm
    if outputs < 2 * num_sm or outputs >= target or reduction_numel < MIN_REDUCTION:
        return 1
    return max(1, min(math.ceil(target / outputs), reduction_numel // MIN_PART))


@contextlib.contextmanager
def inductor_heuristics(device: torch.device, enabled: bool | None = None):
    """For the duration of the block, on CUDA, inductor compiles with the wide-reduction split
    (:data:`SPLIT_WIDE_REDUCTIONS` when ``enabled`` is None); the previous choices come back
    afterwards. Nothing on other devices. It acts where the compile happens, i.e. around the
    first call of a compiled module (and any recompile). Where this torch's inductor lacks the
    extension point, it warns and compiles with inductor's own choices.
    """
    on = SPLIT_WIDE_REDUCTIONS if enabled is None else enabled
    if device.type != "cuda" or not on:
        yield
        return
    try:
        from torch._inductor import config as inductor_config
        from torch._inductor.virtualized import V

        from drseg.engine.inductor_choices import WideReductionChoices
    except ImportError as e:
        warnings.warn(f"drseg.engine.inductor: inductor's choices cannot be set in this torch "
                      f"({e}); compiling with inductor's own reduction splits", stacklevel=3)
        yield
        return
    with contextlib.ExitStack() as stack:
        # the handler first: it saves the thread's current choices (built from the unpatched
        # config when none were set) and puts them back on exit
        stack.enter_context(V.set_choices_handler(WideReductionChoices()))
        if hasattr(inductor_config, "inductor_choices_class"):
            # puts the class's uuid in inductor's cache key: a graph cached under the other
            # setting is not reused
            stack.enter_context(inductor_config.patch(inductor_choices_class=WideReductionChoices))
        yield
