"""Metrics against hand-computed confusion matrices (detectron2 SemSegEvaluator semantics)."""
import math

import numpy as np
import pytest
import torch

from drseg.engine.metrics import (check_label_ids, confusion_matrix, confusion_matrix_unchecked,
                                  mean_over_datasets, summarize)
from drseg.errors import DrsegInputError


def _detectron2_reference(pred: np.ndarray, gt: np.ndarray, n: int, ignore: int = 255) -> dict:
    """A transcription of detectron2's SemSegEvaluator (matrix indexed [pred, gt], ignore -> n)."""
    gt = gt.copy()
    gt[gt == ignore] = n
    conf = np.bincount((n + 1) * pred.reshape(-1) + gt.reshape(-1),
                       minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
    acc = np.full(n, np.nan)
    iou = np.full(n, np.nan)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = np.sum(conf[:-1, :-1], axis=0).astype(float)
    class_weights = pos_gt / np.sum(pos_gt)
    pos_pred = np.sum(conf[:-1, :-1], axis=1).astype(float)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    iou_valid = np.logical_and(acc_valid, union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    return {
        "mIoU": 100 * np.sum(iou[iou_valid]) / np.sum(iou_valid),
        "fwIoU": 100 * np.sum(iou[iou_valid] * class_weights[iou_valid]),
        "mACC": 100 * np.sum(acc[acc_valid]) / np.sum(acc_valid),
        "pACC": 100 * np.sum(tp) / np.sum(pos_gt),
        "IoU": 100 * iou, "ACC": 100 * acc,
    }


def test_confusion_matrix_by_hand_with_ignore():
    gt = torch.tensor([[0, 0, 1], [1, 255, 2]])
    pred = torch.tensor([[0, 1, 1], [2, 0, 2]])  # the 0 on the ignore pixel must not count
    conf = confusion_matrix(pred, gt, 3)
    expected = torch.tensor([[1, 1, 0],   # gt 0: one right, one as 1
                             [0, 1, 1],   # gt 1: one right, one as 2
                             [0, 0, 1]])  # gt 2: right
    assert conf.dtype == torch.int64
    torch.testing.assert_close(conf, expected)


def test_summarize_by_hand_with_absent_class():
    # 4 classes; class 3 has no ground truth but is predicted once (counts against class 0's IoU
    # through nothing; it lowers nothing but is excluded from the means).
    conf = torch.tensor([[3, 1, 0, 0],
                         [0, 2, 0, 1],
                         [1, 0, 2, 0],
                         [0, 0, 0, 0]])
    m = summarize(conf)
    # class 0: tp 3, gt 4, pred 4 -> IoU 3/5, ACC 3/4
    # class 1: tp 2, gt 3, pred 3 -> IoU 2/4, ACC 2/3
    # class 2: tp 2, gt 3, pred 2 -> IoU 2/3, ACC 2/3
    iou = [3 / 5, 2 / 4, 2 / 3]
    acc = [3 / 4, 2 / 3, 2 / 3]
    assert m["IoU"][:3] == pytest.approx([100 * v for v in iou])
    assert m["ACC"][:3] == pytest.approx([100 * v for v in acc])
    assert math.isnan(m["IoU"][3]) and math.isnan(m["ACC"][3])
    assert m["mIoU"] == pytest.approx(100 * sum(iou) / 3)
    assert m["mACC"] == pytest.approx(100 * sum(acc) / 3)
    assert m["fwIoU"] == pytest.approx(100 * (4 * iou[0] + 3 * iou[1] + 3 * iou[2]) / 10)
    assert m["pACC"] == pytest.approx(100 * 7 / 10)


def test_absent_class_never_predicted_is_excluded_not_zero():
    conf = torch.tensor([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    m = summarize(conf)
    assert m["mIoU"] == pytest.approx(100.0)  # a 0 for class 2 would give 66.7
    assert math.isnan(m["IoU"][2])


def test_empty_matrix_gives_nan():
    m = summarize(torch.zeros(3, 3, dtype=torch.int64))
    assert all(math.isnan(m[k]) for k in ("mIoU", "mACC", "fwIoU", "pACC"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_detectron2_transcription_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    n = 6
    gt = rng.integers(0, n - 1, size=(3, 17, 19))  # class n-1 absent from gt
    gt[rng.random(gt.shape) < 0.2] = 255
    pred = rng.integers(0, n, size=gt.shape)
    conf = torch.zeros(n, n, dtype=torch.int64)
    for p, g in zip(pred, gt):  # accumulate image by image
        conf += confusion_matrix(torch.from_numpy(p), torch.from_numpy(g), n)
    fast = confusion_matrix_unchecked(torch.from_numpy(pred), torch.from_numpy(gt), n)
    assert torch.equal(conf, fast)
    ours = summarize(conf)
    ref = _detectron2_reference(pred, gt, n)
    for k in ("mIoU", "mACC", "fwIoU", "pACC"):
        assert ours[k] == pytest.approx(ref[k], rel=1e-12)
    np.testing.assert_allclose(np.array(ours["IoU"]), ref["IoU"], rtol=1e-12)
    np.testing.assert_allclose(np.array(ours["ACC"]), ref["ACC"], rtol=1e-12)


def test_out_of_range_ids_and_shape_mismatch_raise():
    with pytest.raises(DrsegInputError, match="ids must lie"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(DrsegInputError, match="ids must lie"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 3)
    with pytest.raises(DrsegInputError, match="shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 3)
    with pytest.raises(DrsegInputError, match="num_classes"):
        confusion_matrix(torch.zeros(2), torch.zeros(2), 0)


def test_one_class_vocabulary():
    conf = confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 255, 0]), 1)
    assert conf.tolist() == [[3]]
    assert summarize(conf)["mIoU"] == pytest.approx(100.0)


def test_suite_means():
    m = mean_over_datasets({"a": {"mIoU": 10.0, "mACC": 20.0, "fwIoU": 30.0},
                            "b": {"mIoU": 30.0, "mACC": 40.0, "fwIoU": 50.0}})
    assert m == {"m-mIoU": 20.0, "m-mACC": 30.0, "m-fwIoU": 40.0}


def test_check_label_ids_accepts_class_ids_and_the_ignore_id():
    for dtype in (torch.uint8, torch.int64):
        check_label_ids(torch.tensor([[0, 3], [255, 1]], dtype=dtype), 4)
    check_label_ids(torch.tensor([0, -1, 2]), 3, ignore_index=-1, source="x")
    check_label_ids(torch.zeros(0, dtype=torch.long), 1)


def test_check_label_ids_names_source_bad_ids_valid_range_and_ignore_id():
    mask = torch.zeros(2, 5, 5, dtype=torch.uint8)
    mask[1, 2, 3] = 7
    with pytest.raises(DrsegInputError, match=r"^blobs/img_003\.png: label id 7 outside 0\.\.3 "
                                              r"and not the ignore id 255 \(class ids must lie in "
                                              r"\[0, 4\) or equal the ignore id\)$"):
        check_label_ids(mask, 4, source="blobs/img_003.png")
    mask = torch.tensor([[0, 9, 255], [-2, 1, 4]])  # int64: negative ids too
    with pytest.raises(DrsegInputError, match=r"^masks: label ids -2\.\.9 outside 0\.\.3 and "
                                              r"not the ignore id 255"):
        check_label_ids(mask, 4)
    with pytest.raises(DrsegInputError, match=r"label id 255 outside 0\.\.1 and not the ignore "
                                              r"id 0"):
        check_label_ids(torch.tensor([0, 1, 255]), 2, ignore_index=0, source="m")


def test_checked_confusion_matrix_is_the_unchecked_count():
    g = torch.Generator().manual_seed(3)
    for n, dtype in ((1, torch.int64), (5, torch.uint8), (19, torch.int64)):
        gt = torch.randint(0, n, (3, 17, 23), generator=g).to(dtype)
        gt[torch.rand(gt.shape, generator=g) < 0.2] = 255
        pred = torch.randint(0, n, gt.shape, generator=g)
        conf = confusion_matrix(pred, gt, n)
        keep = gt.reshape(-1).long() != 255  # the former bincount computation
        ref = torch.bincount(gt.reshape(-1).long()[keep] * n + pred.reshape(-1)[keep],
                             minlength=n * n).reshape(n, n)
        assert conf.dtype == torch.int64 and torch.equal(conf, ref)
        assert torch.equal(conf, confusion_matrix_unchecked(pred, gt, n))
