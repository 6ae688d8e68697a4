"""The lowered half-pixel bilinear upsampling (issue 30) is the reference function: against
tf.image.resize and torch interpolate (align_corners=False) on random inputs of several sizes
and factors, and inside the trained segmentation demo's head on its validation images."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from mobiledeploy.tasks.segmentation.upsample import factor, op_plan, upsample_bilinear_lowered  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

SEG_EXAMPLE = ROOT / "examples" / "shapes_seg"


def _lowered(x: np.ndarray, s: int) -> np.ndarray:
    inp = keras.Input(x.shape[1:], batch_size=x.shape[0])
    out = upsample_bilinear_lowered(inp, x.shape[1] * s, x.shape[2] * s, "up")
    return keras.Model(inp, out)(x).numpy()


@pytest.mark.parametrize("h, w, s", [(8, 8, 2), (16, 16, 8), (8, 8, 16), (5, 7, 8), (1, 3, 2),
                                     (9, 4, 4), (13, 13, 2), (3, 3, 16)])
def test_equals_tf_and_torch_half_pixel_resize(h, w, s):
    x = np.random.default_rng(h * 100 + w * 10 + s).standard_normal((2, h, w, 5)).astype(np.float32)
    got = _lowered(x, s)
    ref_tf = tf.image.resize(x, (h * s, w * s), method="bilinear").numpy()
    ref_torch = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(h * s, w * s),
                                                mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    assert got.shape == ref_tf.shape
    assert np.abs(got - ref_tf).max() <= 1e-6
    assert np.abs(got - ref_torch).max() <= 1e-6
    # the other convention is far off, so a wrong sampling grid cannot pass
    corners = tf.compat.v1.image.resize_bilinear(x, (h * s, w * s), align_corners=True).numpy()
    if h > 1 and w > 1:
        assert np.abs(got - corners).max() > 0.05


def test_only_power_of_two_factors_are_lowered():
    assert factor((8, 8), (16, 16)) == 2 and factor((16, 16), (128, 128)) == 8
    assert factor((8, 8), (16, 32)) is None  # unequal axes
    assert factor((7, 7), (13, 13)) is None  # not an integer factor (odd input sizes in LR-ASPP)
    assert factor((4, 4), (12, 12)) is None  # 3x: not a power of two
    assert factor((4, 4), (4, 4)) is None
    with pytest.raises(ValueError, match="power-of-two"):
        upsample_bilinear_lowered(keras.Input((4, 4, 1), batch_size=1), 12, 12, "up")


def _int8(model, path):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.standard_normal((1, 16, 16, 11)).astype(np.float32)]
                                           for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


@pytest.mark.slow
def test_tflite_ops_are_the_planned_edgetpu_forms(tmp_path):
    """The int8 conversion writes exactly the planned ops, the resizes at version 2 (legacy
    nearest, not half-pixel), and the Edge TPU analysis maps every one; the builtin resize of
    the same factor is version 3, refused, with advice naming the lowering."""
    from mobiledeploy.backends.edgetpu import analyze
    from mobiledeploy.backends.edgetpu.analysis import BAD_VERSION
    from mobiledeploy.backends.tflite.reader import read_tflite

    inp = keras.Input((16, 16, 11), batch_size=1)
    path = _int8(keras.Model(inp, upsample_bilinear_lowered(inp, 128, 128, "up")), tmp_path / "up8.tflite")
    ops = read_tflite(path).main.operators
    assert [op.op for op in ops] == op_plan(8)
    assert {op.version for op in ops if op.op == "RESIZE_NEAREST_NEIGHBOR"} == {2}
    report = analyze(path)
    assert report["edgetpu_ops"] == report["ops_total"] == len(op_plan(8)), report["cpu_ops"]
    assert report["guesses"] == []  # x2 nearest resizes only: the logged form

    builtin = _int8(keras.Model(inp, keras.layers.Resizing(128, 128, interpolation="bilinear")(inp)),
                    tmp_path / "builtin8.tflite")
    report = analyze(builtin)
    assert report["first_cpu_op"]["op"] == "RESIZE_BILINEAR" and report["first_cpu_op"]["status"] == BAD_VERSION
    assert "lowering: hswish+bilinear" in next(a for a in report["advice"] if a["kind"] == "resize_bilinear")["fix"]


def test_seg_demo_lowered_twin_equals_reference_on_validation_images():
    """The trained demo's Keras twin with lowered resizes equals the builtin-resize twin within
    1e-5 on the validation images (and both equal the PyTorch reference's logits)."""
    from mobiledeploy.architectures.reference import build_keras_reference, build_torch_reference
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import decode_resized, list_images, normalise

    d = load_definition(SEG_EXAMPLE / "shapes_seg.yaml")
    h, w = d.input.height, d.input.width
    items = list_images(SEG_EXAMPLE / "validation" / "images", d.labels_list())
    nchw = normalise(np.stack([decode_resized(p, h, w) for p, _ in items]), d.input).astype(np.float32)
    x = nchw.transpose(0, 2, 3, 1)
    builtin = build_keras_reference(d, hswish="lowered", resize="builtin")
    lowered = build_keras_reference(d, hswish="lowered", resize="lowered")
    assert not any("resiz" in type(layer).__name__.lower() for layer in lowered.layers)
    a = builtin.predict(x, batch_size=16, verbose=0)
    b = lowered.predict(x, batch_size=16, verbose=0)
    assert len(x) >= 20 and np.abs(a - b).max() <= 1e-5
    with torch.no_grad():
        ref = build_torch_reference(d)(torch.from_numpy(nchw)).numpy().transpose(0, 2, 3, 1)
    assert np.abs(b - ref).max() <= 1e-4  # the twins' float32 limit (FLOAT_TOLERANCE)
