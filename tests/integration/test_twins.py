"""The twin references (PyTorch, Keras) compute the same function from the same weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from mobiledeploy.architectures.keras_builder import build_keras_model  # noqa: E402
from mobiledeploy.architectures.spec import PRESETS, preset  # noqa: E402
from mobiledeploy.architectures.torch_builder import build_torch_model  # noqa: E402
from mobiledeploy.architectures.weights import (  # noqa: E402
    load_keras_weights,
    load_torch_weights,
    read_weights,
    save_weights,
    sixth_folds,
    state_dict_numpy,
)
from tests.conftest import EXAMPLE  # noqa: E402


def _real_images(res: int, n: int = 12) -> np.ndarray:
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import decode_resized, list_images, normalise

    d = load_definition(EXAMPLE / "shapes.yaml", check_files=False)
    items = list_images(EXAMPLE / "validation", d.labels_list())[:: 200 // n][:n]
    px = np.stack([decode_resized(p, res, res) for p, _ in items])
    return normalise(px, d.input)


def _realistic(model, x: np.ndarray) -> None:
    """Recalibrate BN on real images and give the classifier a real spread (not near-constant)."""
    from mobiledeploy.architectures.torch_builder import recalibrate_bn

    recalibrate_bn(model, x)
    with torch.no_grad():
        for lin in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
            lin.weight.normal_(0, 1.0 / np.sqrt(lin.in_features))
            lin.bias.uniform_(-0.1, 0.1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_twins_agree_on_every_preset_and_graph_variant(name, width, tmp_path):
    res = 96
    spec = preset(name, width, num_classes=10, resolution=res)
    x = _real_images(res)
    tm = build_torch_model(spec, seed=1)
    _realistic(tm, x)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    assert ref.std(axis=0).mean() > 0.05, "outputs must vary across real images"
    # through the canonical file, as users get it
    save_weights(tm, tmp_path / "w.safetensors")
    state = read_weights(tmp_path / "w.safetensors")
    with torch.no_grad():
        exact = tm.double()(torch.from_numpy(x).double()).numpy()
    tm.float()
    scale = max(1.0, float(np.abs(ref).max()))
    x_nhwc = x.transpose(0, 2, 3, 1)
    for variant in ("fused", "lowered"):
        km = build_keras_model(spec, hswish=variant)
        load_keras_weights(km, state, spec, hswish=variant)
        out = km(x_nhwc).numpy()
        # the same function: run in float64, the twins agree to float64 rounding
        keras.config.set_dtype_policy("float64")
        try:
            k64 = build_keras_model(spec, hswish=variant)
            load_keras_weights(k64, state, spec, hswish=variant)
            out64 = k64(x_nhwc.astype(np.float64)).numpy()
        finally:
            keras.config.set_dtype_policy("float32")
        assert out64.dtype == np.float64
        assert np.abs(out64 - exact).max() <= 1e-9 * scale, (variant, np.abs(out64 - exact).max())
        # in float32: 1e-5, or each library's own float32 error (against its float64 run) where
        # their sum is larger (Large ~1e-5, MobileNetEdgeTPU ~2e-5 each; it varies with threads)
        floors = float(np.abs(ref - exact).max()), float(np.abs(out - out64).max())
        bound = max(1e-5 * scale, 1.5 * sum(floors))
        assert np.abs(out - ref).max() <= bound, (variant, np.abs(out - ref).max(), floors)
        assert (out.argmax(1) == ref.argmax(1)).all()


def test_lowered_graph_folds_one_sixth_per_lowered_op():
    spec = preset("mobilenet_v3_small", 1.0, 10, 96)
    folds = sixth_folds(spec)
    # block 3: hswish after expand and dw, SE gate: project sees 1/6 (dw) and 1/6 (gate)
    assert folds["blocks.3.dw.conv.weight"] == pytest.approx(1 / 6)
    assert folds["blocks.3.project.conv.weight"] == pytest.approx(1 / 36)
    assert folds["blocks.3.se.fc1.weight"] == pytest.approx(1 / 6)
    # block 0: relu + SE: only the gate folds
    assert folds["blocks.0.project.conv.weight"] == pytest.approx(1 / 6)
    assert folds["blocks.0.dw.conv.weight"] == pytest.approx(1 / 6)  # the stem's h-swish
    assert folds["head.classifier.weight"] == pytest.approx(1 / 6)
    minimal = sixth_folds(preset("mobilenet_v3_small_minimalistic"))
    assert minimal == {}


def test_weights_with_wrong_shapes_are_a_user_error():
    from mobiledeploy.errors import UserError

    spec = preset("mobilenet_v3_small", 1.0, 10, 96)
    tm = build_torch_model(spec)
    state = state_dict_numpy(build_torch_model(preset("mobilenet_v3_small", 0.5, 10, 96)))
    with pytest.raises(UserError, match="has shape"):
        load_torch_weights(tm, state)


@pytest.mark.slow
def test_trained_demo_twins_agree_on_real_images():
    from mobiledeploy.architectures.reference import build_keras_reference, build_torch_reference
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import load_batch

    d = load_definition(EXAMPLE / "shapes.yaml")
    batch = load_batch(d, "validation", limit=64)
    tm = build_torch_reference(d)
    with torch.no_grad():
        ref = tm(torch.from_numpy(batch.x)).numpy()
    assert ref.std(axis=0).mean() > 1.0  # trained: confident, varied logits
    for variant in ("fused", "lowered"):
        out = build_keras_reference(d, hswish=variant).predict(batch.nhwc(), verbose=0)
        assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("conventions", [{}, {"padding": "tf_same", "channel_rounding": "tf_slim"}])
def test_expected_shapes_mirror_the_torch_module(name, conventions):
    from mobiledeploy.architectures.reference import expected_shapes

    spec = preset(name, 0.75, num_classes=7, resolution=64, **conventions)
    torch_shapes = {k: tuple(v.shape) for k, v in build_torch_model(spec).state_dict().items()
                    if not k.endswith("num_batches_tracked")}
    assert expected_shapes(spec) == torch_shapes


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_edgetpu"])
def test_tf_same_twins_agree_at_even_and_odd_sizes(name):
    """TensorFlow "same" padding: the PyTorch twin's explicit (0,1)/(1,2) pads and the Keras twin's
    padding="same" are one function. At 80 the last stride-2 conv of Small sees an odd size (5),
    where TensorFlow pads symmetrically."""
    res = 80
    spec = preset(name, 0.75, num_classes=10, resolution=res, padding="tf_same", channel_rounding="tf_slim")
    x = _real_images(res, n=6)
    tm = build_torch_model(spec, seed=2)
    _realistic(tm, x)
    assert any(isinstance(m, torch.nn.ZeroPad2d) for m in tm.modules())
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    state = state_dict_numpy(tm)
    scale = max(1.0, float(np.abs(ref).max()))
    for variant in ("fused", "lowered"):
        km = build_keras_model(spec, hswish=variant)
        assert not any(type(la).__name__ == "ZeroPadding2D" for la in km.layers)
        load_keras_weights(km, state, spec, hswish=variant)
        out = km(x.transpose(0, 2, 3, 1)).numpy()
        # float32 rounding (MobileNetEdgeTPU ~2e-5, see above); a padding off by one is > 1e-3
        assert np.abs(out - ref).max() <= 1e-4 * scale, (variant, np.abs(out - ref).max())
    # the symmetric twin computes something else from the same tensors
    sym = build_torch_model(preset(name, 0.75, 10, res, channel_rounding="tf_slim"))
    load_torch_weights(sym, state)
    with torch.no_grad():
        assert np.abs(sym(torch.from_numpy(x)).numpy() - ref).max() > 1e-3 * scale
