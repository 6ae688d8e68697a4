"""Detection comparators with the arithmetic written out."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.tasks.detection.decode import Detections
from mobiledeploy.tasks.detection.metrics import (
    ap_per_class,
    average_precision,
    box_recall,
    map50,
    match,
    matched_iou,
    score_max_abs,
)


def D(boxes, classes, scores) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64),
                      np.asarray(scores, np.float32))


REF = [D([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]], [0, 1, 2], [0.9, 0.6, 0.5])]
ART = [D([[0, 0.05, 0.5, 0.55], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]], [0, 1, 0], [0.85, 0.4, 0.5])]


def test_matching_by_class_and_iou():
    pairs = match(REF[0], ART[0])
    # ref 0 ~ art 0: inter 0.5*0.45 = 0.225, union 0.25+0.25-0.225 = 0.275 -> 0.8182;
    # ref 1 == art 1 (IoU 1); ref 2 has the same box as art 2 but another class: unmatched
    assert [(i, j) for i, j, _ in pairs] == [(0, 0), (1, 1)]
    assert pairs[0][2] == pytest.approx(0.225 / 0.275, abs=1e-6)
    assert box_recall(REF, ART) == pytest.approx(2 / 3)
    assert matched_iou(REF, ART) == pytest.approx((0.225 / 0.275 + 1.0) / 2, abs=1e-6)
    assert score_max_abs(REF, ART) == pytest.approx(0.2, abs=1e-6)  # |0.6 - 0.4| > |0.9 - 0.85|


def test_min_score_counts_only_confident_reference_boxes():
    # ref 1 (0.6) and ref 2 (0.5, unmatched) fall below 0.65: only ref 0 counts, and it matches
    assert box_recall(REF, ART, min_score=0.65) == 1.0
    assert score_max_abs(REF, ART, min_score=0.65) == pytest.approx(0.05, abs=1e-6)
    # at 0.55 ref 1 counts too (matched by art 1 at 0.4, below that threshold: still a match)
    assert box_recall(REF, ART, min_score=0.55) == 1.0
    assert box_recall(REF, ART, min_score=0.5) == pytest.approx(2 / 3)


def test_one_artifact_box_matches_one_reference_box():
    ref = [D([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.52]], [0, 0], [0.9, 0.8])]
    art = [D([[0, 0, 0.5, 0.5]], [0], [0.9])]
    assert box_recall(ref, art) == 0.5


def test_empty_reference_is_full_recall_and_no_matches_no_iou():
    assert box_recall([D([], [], [])], ART) == 1.0
    assert matched_iou([D([], [], [])], ART) is None
    assert score_max_abs([D([], [], [])], ART) == 0.0


def test_voc_all_point_ap_by_hand():
    # TP, FP, TP over 2 labelled boxes: recall 0.5, 0.5, 1; precision 1, 0.5, 2/3
    # envelope: 1 up to recall 0.5, 2/3 up to 1 -> AP = 0.5 * 1 + 0.5 * 2/3 = 0.8333
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)
    # recall never reaching 1: the missing part counts 0
    assert average_precision(np.array([0.5]), np.array([1.0])) == pytest.approx(0.5)


def test_map50_against_labelled_boxes():
    gts = [(np.array([[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5]], np.float32), np.array([0, 1])),
           (np.array([[0.5, 0.5, 1, 1]], np.float32), np.array([0]))]
    dets = [D([[0, 0, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0, 0, 0.5, 0.5]], [0, 0, 0], [0.9, 0.8, 0.3]),
            D([[0.5, 0.5, 1, 1]], [0], [0.7])]
    aps = ap_per_class(dets, gts, num_classes=3)
    # class 0, by score: 0.9 TP, 0.8 FP (IoU 0), 0.7 TP, 0.3 FP (duplicate of a claimed box):
    # recall 1/2, 1/2, 1, 1; precision 1, 1/2, 2/3, 1/2 -> AP 0.5 * 1 + 0.5 * 2/3 = 5/6
    assert aps[0] == pytest.approx(5 / 6)
    assert aps[1] == 0.0  # labelled, never detected
    assert 2 not in aps  # no labels: left out of the mean
    assert map50(dets, gts, 3) == pytest.approx((5 / 6 + 0.0) / 2)


def test_a_box_below_iou_half_is_a_false_positive():
    gts = [(np.array([[0, 0, 0.5, 0.5]], np.float32), np.array([0]))]
    # [0, 0, 0.5, 0.25]: IoU 0.125 / 0.25 = 0.5 (kept); [0, 0, 0.5, 0.24]: 0.48 (rejected)
    assert map50([D([[0, 0, 0.5, 0.25]], [0], [0.9])], gts, 1) == pytest.approx(1.0)
    assert map50([D([[0, 0, 0.5, 0.24]], [0], [0.9])], gts, 1) == 0.0
