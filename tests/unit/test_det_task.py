"""The detection task on hand-made heads: canonical layout, box metrics, and the two seeded faults
(swapped y/x, wrong anchor scale) judged as failures by the default limits."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.tasks import get_task
from mobiledeploy.tasks.detection.decode import Detections, RuntimeDetections, encode_boxes
from mobiledeploy.tasks.detection.task import FLOAT, INT8, DetTruth
from mobiledeploy.tolerance import failures, judge

SPEC = {"num_classes": 2, "box_coder": {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0},
        "score_conversion": "softmax", "score_threshold": 0.3, "iou_threshold": 0.6, "max_detections": 5,
        "use_regular_nms": False, "detections_per_class": 10}
# four anchors [yc, xc, h, w]
ANCHORS = np.array([[0.25, 0.25, 0.3, 0.3], [0.25, 0.75, 0.3, 0.3], [0.75, 0.25, 0.3, 0.3],
                    [0.75, 0.75, 0.3, 0.3]], np.float32)
# two objects: a tall box of class 0 at anchor 0, a wide box of class 1 at anchor 3 (off-diagonal,
# so that swapping y and x moves them)
BOXES = np.array([[0.05, 0.15, 0.45, 0.35], [0.65, 0.55, 0.85, 0.95]], np.float32)


def _raw(scale=(10.0, 10.0, 5.0, 5.0)) -> np.ndarray:
    """(1, 4, 3 + 4): confident logits on anchors 0 and 3, encodings of BOXES against them."""
    logits = np.array([[4, 0, 0], [4, 0, 0], [4, 0, 0], [4, 0, 0]], np.float32)
    logits[0] = [0, 5, 0]
    logits[3] = [0, 0, 5]
    enc = np.zeros((4, 4), np.float32)
    enc[[0, 3]] = encode_boxes(BOXES, ANCHORS[[0, 3]], scale)
    return np.concatenate([logits, enc], -1)[None]


def _truth(labelled=True):
    gts = [(BOXES, np.array([0, 1]))] if labelled else None
    return DetTruth(ANCHORS, SPEC, 2, gts, ["a", "b"])


def test_canonical_joins_the_heads_and_keeps_a_runtimes_own_detections():
    task = get_task("object-detection")
    raw = _raw()
    out = task.canonical((raw[..., :3], raw[..., 3:]))
    assert out.shape == (1, 4, 7) and out.dtype == np.float32 and out.detections is None
    np.testing.assert_array_equal(out, raw)
    own = [Detections(BOXES, np.array([0, 1]), np.array([0.9, 0.9], np.float32))]
    out = task.canonical(RuntimeDetections(raw[..., :3], raw[..., 3:], own))
    assert out.detections is own
    with pytest.raises(ValueError, match="two outputs"):
        task.canonical((raw, raw, raw))


def test_identical_heads_pass_with_the_arithmetic_written_out():
    task, truth = get_task("object-detection"), _truth()
    ref = task.canonical(_raw())
    rm = task.reference_metrics(ref, truth)
    assert rm["detections"] == 2 and rm["map50"] == pytest.approx(1.0)  # both boxes found, both right
    m = task.metrics(ref, task.canonical(_raw()), truth, rm)
    assert m["box_recall"] == 1.0 and m["matched_iou"] == pytest.approx(1.0, abs=1e-6)
    assert m["score_max_abs"] == 0.0 and m["max_abs"] == 0.0 and m["map50_drop"] == 0.0
    assert failures(judge(m, FLOAT)) == []


def test_swapped_box_order_fails():
    """A runtime that reports [xmin, ymin, xmax, ymax]: the heads agree, the boxes do not."""
    task, truth = get_task("object-detection"), _truth()
    ref = task.canonical(_raw())
    host = truth.decode(np.asarray(ref))
    swapped = [Detections(d.boxes[:, [1, 0, 3, 2]], d.classes, d.scores) for d in host]
    raw = _raw()
    m = task.metrics(ref, task.canonical(RuntimeDetections(raw[..., :3], raw[..., 3:], swapped)), truth,
                     task.reference_metrics(ref, truth))
    assert m["max_abs"] == 0.0  # the network is right ...
    assert m["box_recall"] == 0.0 and m["decoder_recall"] == 0.0  # ... its boxes are not
    bad = failures(judge(m, FLOAT))
    assert any("box_recall" in b for b in bad) and any("decoder_recall" in b for b in bad)


def test_wrong_anchor_scale_fails():
    """Encodings made with h/w scales 10 instead of 5: boxes decode at the wrong size."""
    task, truth = get_task("object-detection"), _truth()
    ref = task.canonical(_raw())
    out = task.canonical(_raw(scale=(10.0, 10.0, 10.0, 10.0)))
    m = task.metrics(ref, out, truth, task.reference_metrics(ref, truth))
    assert m["box_recall"] < 1.0 or m["matched_iou"] < 0.99
    assert failures(judge(m, INT8)) or failures(judge(m, FLOAT))
    assert failures(judge(m, FLOAT))


def test_unlabelled_truth_has_no_map():
    task, truth = get_task("object-detection"), _truth(labelled=False)
    ref = task.canonical(_raw())
    assert "map50" not in task.reference_metrics(ref, truth) and len(truth) == 0


def test_the_sidecar_and_manifest_carry_the_decoding_spec():
    from mobiledeploy.artifact_metadata import _outputs
    from mobiledeploy.definition import load_definition
    from tests.conftest import ROOT

    d = load_definition(ROOT / "examples" / "shapes_det" / "shapes_det.yaml", check_files=False)
    doc = _outputs(d)
    assert [o["name"] for o in doc["outputs"]] == ["class_logits", "box_encodings"]
    n = d.architecture_spec().detection.num_anchors
    assert doc["outputs"][0]["shape"] == [1, n, 11] and doc["decoding"]["num_anchors"] == n
    assert doc["decoding"]["score_threshold"] == 0.3 and len(doc["decoding"]["anchors_sha256"]) == 64


def test_boxes_the_reference_does_not_have_fail_and_nothing_on_a_side_is_not_judged():
    """A reference that finds nothing against an artifact that finds two confident boxes: recall
    has nothing to count (None, not a pass of 1.0), precision is 0 and fails the row."""
    task, truth = get_task("object-detection"), _truth(labelled=False)
    empty = _raw()
    empty[..., :3] = [4, 0, 0]  # background everywhere: the reference detects nothing
    ref = task.canonical(empty)
    m = task.metrics(ref, task.canonical(_raw()), truth, task.reference_metrics(ref, truth))
    assert m["box_recall"] is None and m["box_precision"] == 0.0
    assert any("box_precision" in b for b in failures(judge(m, FLOAT)))
    both = task.metrics(ref, task.canonical(empty), truth, task.reference_metrics(ref, truth))
    assert both["box_recall"] is None and both["box_precision"] is None
    assert failures(judge(both, FLOAT)) == [] and judge(both, FLOAT)  # the heads are still judged
