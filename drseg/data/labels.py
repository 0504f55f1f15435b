"""Validation of integer label masks, shared by the loaders, the loss and the metrics.

Lives in :mod:`drseg.data` (no model or engine import) so that every layer can use it:
the training and evaluation loaders (in their workers, naming the file), the loss
(:func:`drseg.models.decoder.segmentation_loss`), the SPSD patch labels and
:mod:`drseg.engine.metrics`, which re-exports it.
"""
from __future__ import annotations

import torch

from drseg.errors import DrsegInputError

__all__ = ["check_label_ids"]


def check_label_ids(mask: torch.Tensor, num_classes: int, ignore_index: int = 255,
                    source: str = "masks") -> None:
    """Check that every id of an integer label mask is a class id or the ignore id.

    One reduction and one host sync (``bad.any()``); the offending ids are only gathered when
    the check fails.

    Args:
        mask: integer class ids, any shape (uint8 or int64; on any device).
        num_classes: K; valid ids are ``0..K-1``.
        ignore_index: the ignore id, also valid.
        source: what the mask is, for the message: its file path, or a label such as
            ``"masks"``.

    Raises:
        DrsegInputError: an id is outside ``0..K-1`` and not the ignore id; the message names
            ``source``, the range of the offending ids, the valid range and the ignore id.
    """
    bad = (mask != ignore_index) & ((mask < 0) | (mask >= num_classes))
    if bool(bad.any()):
        ids = mask[bad]
        lo, hi = int(ids.min()), int(ids.max())
        found = f"id {lo}" if lo == hi else f"ids {lo}..{hi}"
        raise DrsegInputError(f"{source}: label {found} outside 0..{num_classes - 1} and not "
                              f"the ignore id {ignore_index} (class ids must lie in "
                              f"[0, {num_classes}) or equal the ignore id)")
