"""The segmentation twins (PyTorch, Keras) compute the same function from the same weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from mobiledeploy.architectures.keras_builder import build_keras_model  # noqa: E402
from mobiledeploy.architectures.spec import PRESETS, SegmentationOptions, preset  # noqa: E402
from mobiledeploy.architectures.torch_builder import build_torch_model, recalibrate_bn  # noqa: E402
from mobiledeploy.architectures.weights import load_keras_weights, state_dict_numpy  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

SEG_EXAMPLE = ROOT / "examples" / "shapes_seg"


def _real_images(res: int, n: int = 8) -> np.ndarray:
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import decode_resized, list_images, normalise

    d = load_definition(SEG_EXAMPLE / "shapes_seg.yaml", check_files=False)
    items = list_images(SEG_EXAMPLE / "validation" / "images", d.labels_list())[:n]
    return normalise(np.stack([decode_resized(p, res, res) for p, _ in items]), d.input)


def _torch_resize(x: np.ndarray, size, align_corners: bool) -> np.ndarray:
    t = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=size, mode="bilinear",
                                        align_corners=align_corners)
    return t.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("src, dst", [((8, 8), (16, 16)), ((16, 16), (128, 128)), ((7, 7), (13, 13))])
def test_both_resizes_use_half_pixel_centres(src, dst):
    """Keras ``Resizing`` (tf.image.resize) equals PyTorch ``align_corners=False``; the other
    convention (``align_corners=True``) is far off, so a swapped convention cannot pass."""
    x = np.random.default_rng(0).standard_normal((2, *src, 5)).astype(np.float32)
    k = keras.layers.Resizing(*dst, interpolation="bilinear")(x).numpy()
    half = _torch_resize(x, dst, align_corners=False)
    corners = _torch_resize(x, dst, align_corners=True)
    # float32 source coordinates: the scale in/out is inexact for 7->13 (~1e-6 of a pixel step)
    assert np.abs(k - half).max() <= 5e-6
    assert np.abs(k - corners).max() > 0.1


def _realistic(model, x: np.ndarray) -> None:
    """BN statistics from real images and head convs with a real spread (not near-constant)."""
    recalibrate_bn(model, x)
    with torch.no_grad():
        for conv in (model.head.low, model.head.high):
            conv.weight.normal_(0, 1.0 / np.sqrt(conv.in_channels))
            conv.bias.uniform_(-0.5, 0.5)


@pytest.mark.slow
# one large preset (both h-swish variants, dilation, reduced tail); the small one is the trained
# example every seg bundle test judges through reference-keras (test_seg_bundle.py); the
# expected-shapes test below still walks every preset (CI budget: ~6 s per preset here)
@pytest.mark.parametrize("name", ["mobilenet_v3_large"])
def test_seg_twins_agree_on_every_preset(name):
    res = 96  # 96/8 = 12, 96/16 = 6: both resizes are exact integer scales
    spec = preset(name, 1.0, num_classes=11, resolution=res, segmentation=SegmentationOptions())
    x = _real_images(res)
    tm = build_torch_model(spec, seed=1)
    _realistic(tm, x)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    assert ref.shape == (len(x), 11, res, res)
    assert ref.std(axis=0).mean() > 0.05, "outputs must vary across real images"
    state = state_dict_numpy(tm)
    x_nhwc = x.transpose(0, 2, 3, 1)
    scale = max(1.0, float(np.abs(ref).max()))
    for variant in ("fused", "lowered"):
        km = build_keras_model(spec, hswish=variant)
        load_keras_weights(km, state, spec, hswish=variant)
        out = km(x_nhwc).numpy()
        assert out.shape == (len(x), res, res, 11)
        out = out.transpose(0, 3, 1, 2)
        assert np.abs(out - ref).max() <= 1e-5 * scale, (variant, np.abs(out - ref).max(), scale)
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9999


@pytest.mark.slow
def test_seg_twins_are_the_same_function_in_float64_up_to_the_resize():
    """In float64 the backbone, gate and multiply agree to rounding; tf.image.resize computes
    bilinear in float32 whatever its input, so the float64 comparison stops before it."""
    res = 96
    spec = preset("mobilenet_v3_small", 1.0, num_classes=11, resolution=res, segmentation=SegmentationOptions())
    x = _real_images(res, 4)
    tm = build_torch_model(spec, seed=2)
    _realistic(tm, x)
    state = state_dict_numpy(tm)
    tm.double()
    xd = torch.from_numpy(x).double()
    with torch.no_grad():
        y, low = tm.stem(xd), None
        for i, b in enumerate(tm.blocks):
            y = b(y)
            low = y if i == spec.segmentation.low_block else low
        high = tm.last(y)
        h = tm.head
        mul = h.cbr(high) * torch.sigmoid(h.scale(high.mean((2, 3), keepdim=True)))
        low_logits = h.low(low)
    keras.config.set_dtype_policy("float64")
    try:
        for variant in ("fused", "lowered"):
            km = build_keras_model(spec, hswish=variant)
            load_keras_weights(km, state, spec, hswish=variant)
            sub = keras.Model(km.input, [km.get_layer(n).output for n in ("head_mul", "head_low")])
            k_mul, k_low = (t.numpy().transpose(0, 3, 1, 2) for t in sub(x.transpose(0, 2, 3, 1).astype(np.float64)))
            assert k_mul.dtype == np.float64
            assert np.abs(k_mul - mul.numpy()).max() <= 1e-12 * max(1.0, float(mul.abs().max()))
            assert np.abs(k_low - low_logits.numpy()).max() <= 1e-12 * max(1.0, float(low_logits.abs().max()))
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("name", list(PRESETS))
def test_expected_shapes_mirror_the_torch_seg_module(name):
    from mobiledeploy.architectures.reference import expected_shapes

    spec = preset(name, 0.75, num_classes=7, resolution=64, segmentation=SegmentationOptions())
    torch_shapes = {k: tuple(v.shape) for k, v in build_torch_model(spec).state_dict().items()
                    if not k.endswith("num_batches_tracked")}
    assert expected_shapes(spec) == torch_shapes
