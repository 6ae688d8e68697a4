"""The task seam: one place per task for outputs, judging, limits and report sections."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.errors import UserError
from mobiledeploy.images import InputBatch
from mobiledeploy.tasks import get_task
from mobiledeploy.tolerance import judge


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UserError, match="allowed: image-classification, semantic-segmentation"):
        get_task("pose-estimation")


def test_segmentation_canonical_layout_transposes_channels_last():
    seg = get_task("semantic-segmentation")
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert np.array_equal(seg.canonical(nchw.transpose(0, 2, 3, 1), "nhwc"), nchw)
    assert np.array_equal(seg.canonical(nchw, "nchw"), nchw)
    with pytest.raises(ValueError, match="4 dimensions"):
        seg.canonical(nchw.reshape(2, -1))
    cls = get_task("image-classification")
    assert cls.canonical(np.ones((2, 1, 1, 7))).shape == (2, 7)


def _batch(n, h, w):
    return InputBatch(np.zeros((n, h, w, 3), np.uint8), np.zeros((n, 3, h, w), np.float32), [None] * n,
                      [f"/x/{i}.png" for i in range(n)])


def test_segmentation_metrics_and_limits_judge_a_flipped_pixel_block():
    seg = get_task("semantic-segmentation")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = ref.copy()
    # swap classes 0 and 1 on a 4x4 block of image 1: 16 of 128 pixels can change their argmax
    out[1, [0, 1], :4, :4] = out[1, [1, 0], :4, :4]
    changed = (ref.argmax(1) != out.argmax(1)).sum()
    truth = ref.argmax(1).astype(np.uint8)
    ref_m = seg.reference_metrics(ref, truth)
    assert ref_m == {"miou": 1.0, "pixel_accuracy": 1.0}
    m = seg.metrics(ref, out, truth, ref_m)
    assert m["pixel_agreement"] == pytest.approx(1 - changed / 128)
    assert m["pixel_accuracy"] == pytest.approx(1 - changed / 128)
    assert m["miou_drop"] == pytest.approx(1.0 - m["miou"]) and m["miou_drop"] > 0
    assert {"max_abs", "mean_abs", "cosine", "snr_db", "miou_vs_reference"} <= set(m)
    checks = {c["key"]: c["ok"] for c in judge(m, seg.tolerance("int8"))}
    assert checks == {"min_pixel_agreement": m["pixel_agreement"] >= 0.97, "max_miou_drop": m["miou_drop"] <= 0.02}
    extra = seg.per_sample(ref, out, _batch(2, 8, 8), truth)
    assert extra["per_image_agreement"][0] == 1.0 and extra["per_image_agreement"][1] < 1.0
    assert extra["worst_images"][0]["index"] == 1  # the worst image first
    html = seg.report_section({"results": [{"target": "t", **extra}]}, {})
    assert html.count("<img") == 4 * 2 + 0 and "worst images" in html


def test_task_limits_sit_between_the_backend_defaults_and_the_definition(tmp_path):
    from mobiledeploy.targets import get_target

    t = get_target("tflite-int8")
    seg = t.resolve(task="semantic-segmentation").tolerance
    assert seg.min_pixel_agreement == 0.97 and seg.min_snr_db == t.resolve().tolerance.min_snr_db
    # the backend's top-1 limits mean nothing to a mask: dropped from the defaults, not judged
    assert t.resolve().tolerance.min_top1_agreement is not None and seg.min_top1_agreement is None
    assert t.resolve(task="image-classification").tolerance.min_pixel_agreement is None
    over = t.resolve(tolerance={"min_pixel_agreement": 0.5}, task="semantic-segmentation").tolerance
    assert over.min_pixel_agreement == 0.5
