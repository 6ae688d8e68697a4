"""The detection twins (PyTorch, Keras) compute the same function from the same weights, and the
host decoder gives the same boxes from either."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from mobiledeploy.architectures.keras_builder import build_keras_model  # noqa: E402
from mobiledeploy.architectures.spec import PRESETS, preset  # noqa: E402
from mobiledeploy.architectures.torch_builder import build_torch_model, recalibrate_bn  # noqa: E402
from mobiledeploy.architectures.weights import load_keras_weights, state_dict_numpy  # noqa: E402
from mobiledeploy.tasks.detection.ssdlite import DetectionOptions  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

DET_EXAMPLE = ROOT / "examples" / "shapes_det"


def _real_images(res: int, n: int = 8) -> np.ndarray:
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import decode_resized, list_images, normalise

    d = load_definition(DET_EXAMPLE / "shapes_det.yaml", check_files=False)
    items = list_images(DET_EXAMPLE / "validation" / "images", d.labels_list())[:n]
    return normalise(np.stack([decode_resized(p, res, res) for p, _ in items]), d.input)


def _compare(spec, state, x, tm, ref_logits, ref_boxes):
    """Keras (both graph variants) against the PyTorch outputs: the same function in float64 (to
    rounding), and in float32 within 1e-5 or the two libraries' own float32 errors."""
    x_nhwc = x.transpose(0, 2, 3, 1)
    ref = np.concatenate([ref_logits, ref_boxes], -1)
    with torch.no_grad():
        exact = np.concatenate([t.numpy() for t in tm.double()(torch.from_numpy(x).double())], -1)
    tm.float()
    scale = max(1.0, float(np.abs(ref).max()))
    for variant in ("fused", "lowered"):
        km = build_keras_model(spec, hswish=variant)
        load_keras_weights(km, state, spec, hswish=variant)
        logits, boxes = (np.asarray(t) for t in km(x_nhwc))
        assert logits.shape == ref_logits.shape and boxes.shape == ref_boxes.shape
        out = np.concatenate([logits, boxes], -1)
        keras.config.set_dtype_policy("float64")
        try:
            k64 = build_keras_model(spec, hswish=variant)
            load_keras_weights(k64, state, spec, hswish=variant)
            out64 = np.concatenate([np.asarray(t) for t in k64(x_nhwc.astype(np.float64))], -1)
        finally:
            keras.config.set_dtype_policy("float32")
        assert out64.dtype == np.float64
        assert np.abs(out64 - exact).max() <= 1e-9 * scale, (variant, np.abs(out64 - exact).max())
        floors = float(np.abs(ref - exact).max()), float(np.abs(out - out64).max())
        bound = max(1e-5 * scale, 1.5 * sum(floors))
        assert np.abs(out - ref).max() <= bound, (variant, np.abs(out - ref).max(), floors)
        yield variant, logits, boxes


# two presets cover the head's structural cases within the CI budget: feature 0 on an h-swish
# expansion with SE blocks (Small), and on a fused block's input with ReLU (EdgeTPU); the head's
# shapes, anchors and counts are checked on every preset in tests/unit/test_ssdlite_spec.py
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_edgetpu"])
def test_det_twins_agree_on_two_structural_presets(name):
    assert name in PRESETS
    res = 96  # maps 6, 3, then extras 2, 1: every head branch at the smallest cost
    spec = preset(name, 1.0, num_classes=10, resolution=res, detection=DetectionOptions(extra_layers=(64, 32)))
    x = _real_images(res)
    tm = build_torch_model(spec, seed=1)
    recalibrate_bn(tm, x)  # real BN statistics
    with torch.no_grad():
        for p in tm.head.cls.parameters():  # predictors with a real spread (not near-constant)
            if p.dim() == 4 and p.shape[1] > 1:
                p.normal_(0, 1.0 / np.sqrt(p.shape[1]))
        ref_logits, ref_boxes = (t.numpy() for t in tm(torch.from_numpy(x)))
    assert ref_logits.shape == (len(x), spec.detection.num_anchors, 11)
    assert ref_logits.std(axis=0).mean() > 0.05, "outputs must vary across real images"
    list(_compare(spec, state_dict_numpy(tm), x, tm, ref_logits, ref_boxes))


# the trained detector's twins, decoded: the reference-keras row of tests/integration/test_det_bundle.py
# (box recall 1.0 and matched IoU >= 0.999 against the PyTorch reference, judged by validation)
