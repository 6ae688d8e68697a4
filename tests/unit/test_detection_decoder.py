"""The host decoder (TFLite_Detection_PostProcess semantics) against hand-computed boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobiledeploy.tasks.detection.decode import (
    convert_scores,
    decode_boxes,
    encode_boxes,
    iou_matrix,
    postprocess,
    postprocess_one,
)

SPEC = {"box_coder": {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0},
        "score_conversion": "softmax", "score_threshold": 0.3, "iou_threshold": 0.6, "max_detections": 10,
        "use_regular_nms": False, "detections_per_class": 100}


def test_center_size_decoding_by_hand():
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)  # yc, xc, h, w
    enc = np.array([[1.0, -2.0, 0.0, 5 * math.log(2)]], np.float32)  # ty, tx, th, tw
    # yc = 1/10 * 0.2 + 0.5 = 0.52; xc = -2/10 * 0.4 + 0.5 = 0.42; h = e^0 * 0.2; w = e^(ln 2) * 0.4 = 0.8
    box = decode_boxes(enc, anchors, (10, 10, 5, 5))
    np.testing.assert_allclose(box, [[0.52 - 0.1, 0.42 - 0.4, 0.52 + 0.1, 0.42 + 0.4]], atol=1e-6)
    assert box.dtype == np.float32
    # the order of the coder scales is y, x, h, w: swapping y and x changes the box
    swapped = decode_boxes(enc, anchors, (10, 5, 10, 5))
    assert np.abs(swapped - box).max() > 0.05


def test_encode_inverts_decode():
    rng = np.random.default_rng(0)
    anchors = np.c_[rng.uniform(0.2, 0.8, (50, 2)), rng.uniform(0.05, 0.5, (50, 2))].astype(np.float32)
    enc = rng.normal(0, 1, (50, 4)).astype(np.float32)
    boxes = decode_boxes(enc, anchors, (10, 10, 5, 5))
    np.testing.assert_allclose(encode_boxes(boxes, anchors, (10, 10, 5, 5)), enc, atol=2e-4)


def test_softmax_and_sigmoid_scores():
    logits = np.log(np.array([[0.1, 0.6, 0.3]]))
    np.testing.assert_allclose(convert_scores(logits, "softmax"), [[0.1, 0.6, 0.3]], atol=1e-6)
    np.testing.assert_allclose(convert_scores(np.array([[0.0, math.log(3)]]), "sigmoid"), [[0.5, 0.75]], atol=1e-6)
    with pytest.raises(ValueError, match="softmax or sigmoid"):
        convert_scores(logits, "tanh")


def test_iou_by_hand_and_degenerate_boxes():
    a = np.array([[0, 0, 0.4, 0.4]])
    b = np.array([[0.05, 0, 0.45, 0.4], [0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.1, 0.3]])
    # 0.35*0.4 = 0.14 / (0.16 + 0.16 - 0.14) = 0.7778; disjoint 0; zero-area box 0
    np.testing.assert_allclose(iou_matrix(a, b), [[0.14 / 0.18, 0.0, 0.0]], atol=1e-6)


def _three_boxes():
    # A and B overlap (IoU 0.778 > 0.6), C apart; zero encodings decode to the anchors themselves
    corners = np.array([[0, 0, 0.4, 0.4], [0.05, 0, 0.45, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32)
    anchors = np.c_[(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]].astype(np.float32)
    probs = np.array([[0.1, 0.8, 0.1],     # A: class 0 at 0.8
                      [0.05, 0.05, 0.9],   # B: class 1 at 0.9
                      [0.6, 0.1, 0.3]])    # C: best class 1 at exactly the threshold 0.3
    return np.log(probs), np.zeros((3, 4), np.float32), anchors, corners


def test_fast_nms_is_class_agnostic_and_keeps_scores_at_the_threshold():
    logits, enc, anchors, corners = _three_boxes()
    det = postprocess_one(logits, enc, anchors, SPEC)
    # sorted by best score: B 0.9, A 0.8 (suppressed by B although its class differs), C 0.3 (>= 0.3)
    np.testing.assert_array_equal(det.classes, [1, 1])
    np.testing.assert_allclose(det.scores, [0.9, 0.3], atol=1e-6)
    np.testing.assert_allclose(det.boxes, corners[[1, 2]], atol=1e-6)
    assert len(postprocess_one(logits, enc, anchors, {**SPEC, "score_threshold": 0.31})) == 1
    assert len(postprocess_one(logits, enc, anchors, {**SPEC, "max_detections": 1})) == 1
    # a higher IoU threshold keeps A: 0.778 is not > 0.8
    kept = postprocess_one(logits, enc, anchors, {**SPEC, "iou_threshold": 0.8})
    np.testing.assert_array_equal(kept.classes, [1, 0, 1])


def test_regular_nms_suppresses_within_a_class_only():
    logits, enc, anchors, _ = _three_boxes()
    det = postprocess_one(logits, enc, anchors, {**SPEC, "use_regular_nms": True})
    # class 0: only A passes 0.3; class 1: B 0.9 and C 0.3; merged by score
    np.testing.assert_array_equal(det.classes, [1, 0, 1])
    np.testing.assert_allclose(det.scores, [0.9, 0.8, 0.3], atol=1e-6)


def test_equal_scores_keep_anchor_order():
    corners = np.array([[0.5, 0.5, 0.9, 0.9], [0, 0, 0.4, 0.4]], np.float32)
    anchors = np.c_[(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]].astype(np.float32)
    logits = np.log(np.array([[0.5, 0.5], [0.5, 0.5]]))
    det = postprocess_one(logits, np.zeros((2, 4), np.float32), anchors, SPEC)
    np.testing.assert_allclose(det.boxes, corners, atol=1e-6)  # stable: anchor 0 first


def test_batch_shapes_are_checked():
    with pytest.raises(ValueError, match="anchors"):
        postprocess(np.zeros((1, 4, 3)), np.zeros((1, 4, 4)), np.zeros((5, 4)), SPEC)
