"""The InductorChoices subclass of :func:`drseg.engine.inductor.inductor_heuristics` (a module
of its own: importing inductor is slow, and the class must be importable by name for inductor's
cache key)."""
from __future__ import annotations

from torch._inductor.choices import InductorChoices
from torch._inductor.runtime.hints import DeviceProperties

from drseg.engine import inductor


class WideReductionChoices(InductorChoices):
    """Inductor's choices, with :func:`drseg.engine.inductor.wide_reduction_split` for the
    inner reductions that inductor leaves whole on CUDA."""

    def reduction_split_factor(self, device, reduction_numel_hint, numel_hint, inner_reduction):
        split = super().reduction_split_factor(device, reduction_numel_hint, numel_hint,
                                               inner_reduction)
        if split != 1 or not inner_reduction or device.type != "cuda":
            return split
        num_sm = DeviceProperties.create(device).multi_processor_count
        return inductor.wide_reduction_split(int(reduction_numel_hint), int(numel_hint), num_sm)

    @staticmethod
    def uuid() -> str:
        """Inductor's cache key for a custom choices class (the split's constants)."""
        return (f"drseg-wide-reduction-split-{inductor.TARGET_BLOCKS_PER_SM}-"
                f"{inductor.MIN_REDUCTION}-{inductor.MIN_PART}")
