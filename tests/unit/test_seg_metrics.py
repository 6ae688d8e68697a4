"""Segmentation comparators, with the arithmetic written out."""

import numpy as np
import pytest

from mobiledeploy.tasks.segmentation.masks import IGNORE
from mobiledeploy.tasks.segmentation.metrics import (
    confusion,
    iou_per_class,
    mean_iou,
    per_image_agreement,
    pixel_accuracy,
    pixel_agreement,
    segmentation_metrics,
)

# one 2x4 image, 3 classes
TARGET = np.array([[[0, 0, 1, 1],
                    [0, 2, 2, 1]]])
PRED = np.array([[[0, 1, 1, 1],
                  [0, 2, 0, 1]]])


def _logits(ids: np.ndarray, classes: int = 3) -> np.ndarray:
    """NCHW logits whose argmax is ``ids`` (one-hot times 5, plus a small constant)."""
    return np.moveaxis(np.eye(classes)[ids] * 5.0 + 0.1, -1, 1)


def test_confusion_counts_target_rows_and_predicted_columns():
    # target 0 at (0,0),(0,1),(1,0): predicted 0, 1, 0  -> row 0 = [2, 1, 0]
    # target 1 at (0,2),(0,3),(1,3): predicted 1, 1, 1  -> row 1 = [0, 3, 0]
    # target 2 at (1,1),(1,2):       predicted 2, 0     -> row 2 = [1, 0, 1]
    assert confusion(PRED, TARGET, 3).tolist() == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]


def test_iou_per_class_and_mean():
    # class 0: TP 2, FP 1 (pred 0 at (1,2)), FN 1 -> 2/4
    # class 1: TP 3, FP 1 (pred 1 at (0,1)), FN 0 -> 3/4
    # class 2: TP 1, FP 0, FN 1                 -> 1/2
    ious = iou_per_class(confusion(PRED, TARGET, 3))
    assert ious == pytest.approx([0.5, 0.75, 0.5])
    assert mean_iou(PRED, TARGET, 3) == pytest.approx((0.5 + 0.75 + 0.5) / 3)


def test_a_class_absent_from_target_and_prediction_is_not_scored():
    # 4 classes, class 3 never occurs: the mean is still over classes 0..2
    assert np.isnan(iou_per_class(confusion(PRED, TARGET, 4))[3])
    assert mean_iou(PRED, TARGET, 4) == pytest.approx(1.75 / 3)


def test_a_class_only_predicted_scores_zero():
    target = np.zeros((1, 1, 4), int)
    pred = np.array([[[0, 0, 0, 2]]])
    # class 0: TP 3, FN 1 -> 3/4; class 2: TP 0, FP 1 -> 0; class 1 absent
    assert mean_iou(pred, target, 3) == pytest.approx((0.75 + 0.0) / 2)


def test_pixel_accuracy_and_ignore():
    # 6 of 8 pixels right
    assert pixel_accuracy(PRED, TARGET) == pytest.approx(6 / 8)
    target = TARGET.copy()
    target[0, 1, 2] = IGNORE  # the wrong pixel at (1,2) is no longer scored: 6 of 7
    assert pixel_accuracy(PRED, target) == pytest.approx(6 / 7)
    # and class 0 loses its FP there: TP 2 / (2 + 0 + 1); class 2 loses its FN: 1/1
    assert iou_per_class(confusion(PRED, target, 3)) == pytest.approx([2 / 3, 0.75, 1.0])


def test_pixel_agreement_compares_argmax_of_two_logit_tensors():
    ref = _logits(TARGET)
    out = _logits(PRED)
    assert pixel_agreement(out, ref) == pytest.approx(6 / 8)
    assert pixel_agreement(ref + 3.0, ref) == 1.0  # a shift changes no argmax
    # NHWC: the class axis last
    assert pixel_agreement(np.moveaxis(out, 1, -1), np.moveaxis(ref, 1, -1), axis=-1) == pytest.approx(6 / 8)


def test_per_image_agreement_ranks_images():
    ref = _logits(np.concatenate([TARGET, TARGET]))
    out = _logits(np.concatenate([TARGET, PRED]))
    assert per_image_agreement(out, ref).tolist() == [1.0, 0.75]


def test_segmentation_metrics_row():
    ref, out = _logits(TARGET), _logits(PRED)
    row = segmentation_metrics(out, ref, TARGET)
    assert row == pytest.approx({
        "pixel_agreement": 6 / 8,
        "miou_vs_reference": 1.75 / 3,  # the reference's argmax is TARGET here
        "miou": 1.75 / 3,
        "pixel_accuracy": 6 / 8,
    })
    assert set(segmentation_metrics(out, ref)) == {"pixel_agreement", "miou_vs_reference"}
