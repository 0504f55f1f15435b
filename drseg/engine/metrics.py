"""Semantic-segmentation metrics with detectron2 ``SemSegEvaluator`` semantics.

The reference is detectron2's ``SemSegEvaluator.evaluate`` (used by CAT-Seg, OVRS, GSNet,
RSKT-Seg and so by the DR-Seg benchmark protocol; PROTOCOL.md section 2):

- one confusion matrix over all images of a dataset, pixels whose ground truth is the ignore
  label dropped (predictions on them do not count);
- per class ``tp`` (diagonal), ``pos_gt`` (row sums here), ``pos_pred`` (column sums);
- ``IoU = tp / (pos_gt + pos_pred - tp)`` and ``ACC = tp / pos_gt`` for classes with
  ground truth; classes without ground-truth pixels are NaN and excluded from the means;
- ``mIoU``/``mACC`` the means over valid classes, ``fwIoU = sum_c pos_gt_c / sum pos_gt * IoU_c``,
  ``pACC = sum tp / sum pos_gt``; everything in percent.

detectron2 indexes its matrix ``[pred, gt]``; here rows are ground truth and columns are
prediction (the usual convention), which changes no number.
"""
from __future__ import annotations

import math

import torch

from drseg.data.labels import check_label_ids  # re-exported: part of the metrics API
from drseg.errors import DrsegInputError

__all__ = ["check_label_ids", "confusion_matrix", "confusion_matrix_unchecked", "summarize",
           "mean_over_datasets"]


def confusion_matrix(
    pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix of one prediction/label pair (or a batch of them).

    The ids are range-checked (one host sync), then counted by
    :func:`confusion_matrix_unchecked` on the tensors' device.

    Args:
        pred: predicted class ids, any integer shape, values in ``[0, num_classes)``.
        gt: ground-truth ids of the same shape, values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: N, the number of classes of the vocabulary.
        ignore_index: label value whose pixels are dropped.

    Returns:
        ``(N, N)`` int64 tensor on the inputs' device, ``conf[g, p]`` = number of non-ignore
        pixels with ground truth ``g`` predicted as ``p``.

    Raises:
        DrsegInputError: shapes differ, ``num_classes < 1``, or an id is out of range.
    """
    if num_classes < 1:
        raise DrsegInputError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    if pred.shape != gt.shape:
        raise DrsegInputError(
            f"confusion_matrix: prediction shape {tuple(pred.shape)} != label shape {tuple(gt.shape)}")
    pred = pred.reshape(-1).long()
    gt = gt.reshape(-1).long()
    keep = gt != ignore_index
    pred_kept, gt_kept = pred[keep], gt[keep]
    if gt_kept.numel():
        # one fused reduction instead of four host syncs
        lo = torch.stack([gt_kept.min(), pred_kept.min()]).min()
        hi = torch.stack([gt_kept.max(), pred_kept.max()]).max()
        if lo.item() < 0 or hi.item() >= num_classes:
            raise DrsegInputError(
                f"confusion_matrix: ids must lie in [0, {num_classes}) or equal ignore_index "
                f"{ignore_index}; found values in [{lo.item()}, {hi.item()}]")
    return confusion_matrix_unchecked(pred, gt, num_classes, ignore_index)


def confusion_matrix_unchecked(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                               ignore_index: int = 255) -> torch.Tensor:
    """:func:`confusion_matrix` without the range check, so without a host sync.

    For callers that validated the labels already (the evaluation loop checks each batch once)
    and whose predictions are an argmax over ``num_classes`` scores. Same arguments and result.
    """
    nn = num_classes * num_classes
    gt = gt.reshape(-1).long()
    idx = gt * num_classes + pred.reshape(-1).long()  # (P,)
    # ignored pixels go to an extra bin that is dropped: no boolean indexing, and a fixed-size
    # scatter instead of bincount (which reads the maximum back to the host to size its output)
    idx = torch.where(gt != ignore_index, idx, torch.full_like(idx, nn))
    conf = torch.zeros(nn + 1, dtype=torch.int64, device=idx.device)
    conf.scatter_add_(0, idx, torch.ones_like(idx))
    return conf[:-1].reshape(num_classes, num_classes)  # (N gt, N pred)


def summarize(conf: torch.Tensor) -> dict:
    """Metrics of an accumulated confusion matrix (detectron2 ``SemSegEvaluator`` semantics).

    Args:
        conf: ``(N, N)`` integer matrix, rows = ground truth, columns = prediction.

    Returns:
        dict with ``mIoU``, ``mACC``, ``fwIoU``, ``pACC`` (floats, percent; NaN when no pixel
        has ground truth) and ``IoU``, ``ACC`` (lists of N floats, percent, NaN for classes
        without ground-truth pixels).
    """
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise DrsegInputError(f"summarize: expected a square (N, N) matrix, got {tuple(conf.shape)}")
    c = conf.detach().to("cpu", torch.float64)
    tp = c.diagonal()
    pos_gt = c.sum(dim=1)
    pos_pred = c.sum(dim=0)
    n = c.shape[0]
    acc = torch.full((n,), math.nan, dtype=torch.float64)
    iou = torch.full((n,), math.nan, dtype=torch.float64)
    valid = pos_gt > 0
    acc[valid] = tp[valid] / pos_gt[valid]
    union = pos_gt + pos_pred - tp
    iou_valid = valid & (union > 0)  # union >= pos_gt > 0 wherever valid
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    total = pos_gt.sum()
    if total > 0:
        weights = pos_gt / total
        miou = iou[iou_valid].mean().item()
        macc = acc[valid].mean().item()
        fwiou = (iou[iou_valid] * weights[iou_valid]).sum().item()
        pacc = (tp.sum() / total).item()
    else:
        miou = macc = fwiou = pacc = math.nan
    return {
        "mIoU": 100.0 * miou,
        "mACC": 100.0 * macc,
        "fwIoU": 100.0 * fwiou,
        "pACC": 100.0 * pacc,
        "IoU": [100.0 * v for v in iou.tolist()],
        "ACC": [100.0 * v for v in acc.tolist()],
    }


def mean_over_datasets(per_dataset: dict[str, dict], keys=("mIoU", "mACC", "fwIoU")) -> dict:
    """Suite means as in the paper's tables: ``m-mIoU`` = mean of the datasets' mIoU, etc.

    Args:
        per_dataset: ``{dataset: {"mIoU": .., "mACC": .., "fwIoU": ..}}``.
        keys: metric names to average; each becomes ``m-<key>``.

    Returns:
        ``{"m-mIoU": .., "m-mACC": .., "m-fwIoU": ..}`` (NaN when there is no dataset).
    """
    out = {}
    for k in keys:
        vals = [float(m[k]) for m in per_dataset.values()]
        out[f"m-{k}"] = sum(vals) / len(vals) if vals else math.nan
    return out
