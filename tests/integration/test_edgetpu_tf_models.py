"""Tiny models built with the real TensorFlow converter, predicted op by op.

Keras' ``x * relu6(x + 3) / 6`` is fused by the converter into one HARD_SWISH op, which the
Edge TPU does not support: the partition must end there.
"""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from mobiledeploy.backends.edgetpu import analyze, format_log  # noqa: E402
from mobiledeploy.backends.edgetpu.analysis import (  # noqa: E402
    BAD_DTYPE,
    MAPPED,
    NOT_SUPPORTED,
    SECOND_SUBGRAPH,
    UNSPECIFIED,
)
from mobiledeploy.backends.tflite.reader import read_tflite, xnnpack_partitions  # noqa: E402

pytestmark = pytest.mark.slow


def _net(act: str = "relu", se: bool = False, mean_channels: int | None = None):
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = x * keras.layers.ReLU(6.0)(x + 3.0) / 6.0 if act == "hswish" else keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.ReLU()(x)
    if se:
        g = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
        g = keras.layers.Conv2D(4, 1, activation="relu")(g)
        g = keras.layers.Conv2D(8, 1)(g)
        x = x * (keras.layers.ReLU(6.0)(g + 3.0) / 6.0)
    if mean_channels:
        x = keras.layers.Conv2D(mean_channels, 1)(x)
        x = keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=-1, keepdims=True))(x)
        x = keras.layers.Flatten()(x)
    else:
        x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _convert(model, path, int8: bool = True, int8_io: bool = True):
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: (
            [rng.random((1, 16, 16, 3), dtype=np.float32)] for _ in range(8))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
    path.write_bytes(c.convert())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("edgetpu_models")
    return {
        "hswish": _convert(_net("hswish"), d / "hswish.tflite"),
        "relu": _convert(_net("relu"), d / "relu.tflite"),
        "float": _convert(_net("relu"), d / "float.tflite", int8=False),
        "float_io": _convert(_net("relu"), d / "float_io.tflite", int8_io=False),
        "se": _convert(_net("relu", se=True), d / "se.tflite"),
        "mean_z6": _convert(_net("relu", mean_channels=6), d / "mean_z6.tflite"),
    }


def test_hard_swish_is_where_the_edge_tpu_stops(models):
    ops = [op.op for op in read_tflite(models["hswish"]).main.operators]
    assert "HARD_SWISH" in ops  # the converter fused x*relu6(x+3)/6
    r = analyze(models["hswish"])
    first_hs = ops.index("HARD_SWISH")
    assert r["first_cpu_op"]["index"] == first_hs and r["first_cpu_op"]["op"] == "HARD_SWISH"
    assert r["edgetpu_ops"] == first_hs  # everything before maps, nothing after
    statuses = [row["status"] for row in r["ops"]]
    assert statuses[first_hs] == NOT_SUPPORTED
    assert set(statuses[:first_hs]) == {MAPPED}
    assert set(statuses[first_hs + 1:]) == {SECOND_SUBGRAPH}
    kinds = {a["kind"]: a for a in r["advice"]}
    assert "lowering: hswish" in kinds["hard_swish"]["fix"]
    assert "mobilenet_v3_small_minimalistic" in kinds["hard_swish"]["fix"]
    # CPU share computed from the per-op rows: ops and MACs from the first CPU op on
    n = len(ops)
    assert r["cpu_share"]["ops"] == round((n - first_hs) / n, 4)
    macs_after = sum(row["macs"] for row in r["ops"][first_hs:])
    assert r["cpu_share"]["cpu_macs"] == macs_after > 0
    assert 0 < r["cpu_share"]["macs"] < 1
    assert "HARD_SWISH                     1          Operation not supported" in format_log(r)


def test_relu_net_maps_fully(models):
    r = analyze(models["relu"])
    assert r["edgetpu_ops"] == r["ops_total"] == len(read_tflite(models["relu"]).main.operators)
    assert r["cpu_ops"] == [] and r["first_cpu_op"] is None
    assert [a for a in r["advice"] if a["severity"] == "fallback"] == []


def test_float_model_is_unsupported_data_type(models):
    r = analyze(models["float"])
    assert r["edgetpu_ops"] == 0
    assert r["first_cpu_op"]["index"] == 0 and r["first_cpu_op"]["status"] == BAD_DTYPE
    assert "FLOAT32" in r["first_cpu_op"]["reason"]
    assert any(a["kind"] == "dtype" for a in r["advice"])


def test_float_io_adapters_do_not_split_the_graph(models):
    ops = [op.op for op in read_tflite(models["float_io"]).main.operators]
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    r = analyze(models["float_io"])
    by_index = {row["index"]: row for row in r["ops"]}
    assert by_index[0]["status"] == UNSPECIFIED  # the input adapter stays on the CPU ...
    assert all(by_index[i]["mapped"] for i in range(1, len(ops) - 1))  # ... the body maps
    assert by_index[len(ops) - 1]["status"] == BAD_DTYPE
    assert r["edgetpu_ops"] == len(ops) - 2


def test_squeeze_excite_maps_when_relu(models):
    ops = [op.op for op in read_tflite(models["se"]).main.operators]
    assert ops.count("MUL") >= 1 and "MEAN" in ops
    r = analyze(models["se"])
    assert r["edgetpu_ops"] == r["ops_total"]


def test_mean_over_six_channels_hits_the_documented_limit(models):
    r = analyze(models["mean_z6"])
    means = [row for row in r["ops"] if row["op"] == "MEAN"]
    z = [m for m in means if m["status"] == UNSPECIFIED]
    assert z and "multiple of 4" in z[0]["reason"]
    assert r["first_cpu_op"]["index"] == z[0]["index"]
    assert any(a["kind"] == "mean" for a in r["advice"])


def test_xnnpack_partitions(models):
    pytest.importorskip("ai_edge_litert")
    relu = xnnpack_partitions(models["relu"])
    assert relu["available"] and relu["partitions"] >= 1
    n_relu = len(read_tflite(models["relu"]).main.operators)
    assert relu["delegated_ops"] + len(relu["undelegated_ops"]) == n_relu
    hs = xnnpack_partitions(models["hswish"])
    n_hs = len(read_tflite(models["hswish"]).main.operators)
    assert hs["delegated_ops"] + len(hs["undelegated_ops"]) == n_hs
    # every op XNNPACK leaves out splits the delegated run: partitions <= undelegated + 1
    assert hs["partitions"] <= len(hs["undelegated_ops"]) + 1


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_small_minimalistic"])
def test_project_presets(tmp_path, name):
    """The project's own Keras builder: MobileNetV3 stops at its first h-swish; the
    minimalistic variant (ReLU, no SE, 3x3) maps fully, as the advice promises."""
    spec_mod = pytest.importorskip("mobiledeploy.architectures.spec")
    builder = pytest.importorskip("mobiledeploy.architectures.keras_builder")
    model = builder.build_keras_model(spec_mod.preset(name, num_classes=10, resolution=96))
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    rng = np.random.default_rng(0)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: (
        [rng.random((1, 96, 96, 3), dtype=np.float32)] for _ in range(4))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(c.convert())
    ops = [op.op for op in read_tflite(path).main.operators]
    r = analyze(path)
    if "minimalistic" not in name:
        assert "HARD_SWISH" in ops
        assert r["first_cpu_op"]["index"] == ops.index("HARD_SWISH")
        assert r["cpu_share"]["macs"] > 0.5  # the stem is tiny: most MACs fall back
        assert any(a["kind"] == "hard_swish" for a in r["advice"])
    else:
        assert "HARD_SWISH" not in ops
        assert r["edgetpu_ops"] == r["ops_total"] == len(ops)
