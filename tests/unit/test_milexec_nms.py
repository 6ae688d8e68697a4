"""milexec's non_maximum_suppression: Core ML's documented semantics, case by case (coremltools'
own op tests run against it in tests/hostile/test_milexec_coremltools_ops.py)."""

from __future__ import annotations

import numpy as np

from mobiledeploy.backends.coreml.milexec import OPS
from mobiledeploy.backends.coreml.milexec.nms import iou_centre, select

NMS = OPS["non_maximum_suppression"]


def _boxes(*xywh):
    return np.asarray(xywh, np.float64)


def test_suppression_is_strictly_above_the_iou_threshold():
    # 3x1 boxes shifted by 1: IoU = 2 / 4 = 0.5 exactly (in binary too)
    b = _boxes((0.0, 0.0, 3.0, 1.0), (1.0, 0.0, 3.0, 1.0))
    assert iou_centre(b)[0, 1] == 0.5
    s = np.asarray([[0.9], [0.8]])
    assert select(b, s, 0.5, None, 5, False).tolist() == [0, 1]  # IoU == threshold: kept
    assert select(b, s, 0.49, None, 5, False).tolist() == [0]


def test_score_threshold_is_strict_and_no_candidate_returns_the_best_box_alone():
    b = _boxes((0, 0, 1, 1), (5, 5, 1, 1))
    s = np.asarray([[0.3], [0.5]])
    assert select(b, s, 0.5, 0.3, 5, False).tolist() == [1]  # 0.3 is not above 0.3
    assert select(b, s, 0.5, 0.9, 5, False).tolist() == [1]  # nothing above: the best alone


def test_equal_scores_keep_box_order_and_classes_suppress_apart_only_per_class():
    b = _boxes((0, 0, 1, 1), (0, 0, 1, 1), (0.1, 0, 1, 1))
    s = np.asarray([[0.7, 0.0], [0.7, 0.0], [0.0, 0.6]])  # box 2 is class 1
    assert select(b, s, 0.5, None, 5, False).tolist() == [0]
    assert select(b, s, 0.5, None, 5, True).tolist() == [0, 2]


def test_the_op_pads_and_the_ios17_form_transposes():
    b = _boxes((0, 0, 1, 1), (3, 3, 1, 1), (0.05, 0, 1, 1))[None]
    s = np.asarray([[[0.9], [0.5], [0.8]]])
    ob, os_, oi, oc = NMS(boxes=b, scores=s, iou_threshold=np.float32(0.5), score_threshold=np.float32(0.1),
                          max_boxes=np.int32(4))
    assert oi.tolist() == [[0, 1, -1, -1]] and oc.tolist() == [2]
    assert ob[0, 1].tolist() == [3, 3, 1, 1] and ob[0, 2:].tolist() == [[0] * 4] * 2 and os_[0, :, 0].tolist() == [0.9, 0.5, 0, 0]
    tb, ts, ti = NMS(boxes=b.transpose(0, 2, 1), scores=s.transpose(0, 2, 1), iou_threshold=np.float32(0.5),
                     max_boxes=np.int32(4), opset=7)
    assert ti.tolist() == [[0, 1, -1, -1]] and tb.shape == (1, 4, 4) and ts.shape == (1, 1, 4)
