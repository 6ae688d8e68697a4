"""The flatbuffer reader on Coral's reference models (real files, no interpreter)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flatbuffers")

from mobiledeploy.backends.tflite.reader import parse, read_tflite  # noqa: E402
from mobiledeploy.errors import UserError  # noqa: E402
from tests.conftest import edgetpu_reference_dir  # noqa: E402


def _reference_dir() -> Path:
    return edgetpu_reference_dir()


@pytest.fixture(scope="module")
def ref() -> Path:
    return _reference_dir()


def test_mobilenet_v2_structure(ref):
    m = read_tflite(ref / "mobilenet_v2_1.0_224_quant.tflite")
    sg = m.main
    assert len(m.subgraphs) == 1
    assert len(sg.operators) == 66  # README: 66 ops
    assert m.op_counts()["CONV_2D"] + m.op_counts()["DEPTHWISE_CONV_2D"] == 53
    (inp,) = [sg.tensors[i] for i in sg.inputs]
    assert inp.shape == [1, 224, 224, 3] and inp.dtype == "UINT8" and not inp.is_constant
    assert inp.quantized and inp.scale[0] > 0 and 0 <= inp.zero_point[0] <= 255
    first = sg.operators[0]
    assert first.op == "CONV_2D" and not first.custom
    assert first.options["stride_h"] == 2 and first.options["padding"] == "SAME"
    weights = sg.tensors[first.inputs[1]]
    assert weights.is_constant and weights.shape[1:3] == [3, 3]
    # every op input that no op produces is a graph input or a constant
    produced = set(sg.producers())
    for op in sg.operators:
        for t in op.inputs:
            assert t in produced or t in sg.inputs or sg.tensors[t].is_constant


def test_reshape_shape_values_are_read(ref):
    sg = read_tflite(ref / "mobilenet_v2_1.0_224_quant.tflite").main
    reshape = next(op for op in sg.operators if op.op == "RESHAPE")
    out = sg.tensors[reshape.outputs[0]]
    assert sg.tensors[reshape.inputs[1]].values == out.shape


def test_compiled_model_has_custom_op(ref):
    m = read_tflite(ref / "posenet_mobilenet_v1_075_353_481_quant_decoder_edgetpu.tflite")
    names = [(op.op, op.custom) for op in m.main.operators]
    assert ("edgetpu-custom-op", True) in names and ("PosenetDecoderOp", True) in names


def test_not_a_tflite_is_user_error(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"hello world, not a flatbuffer")
    with pytest.raises(UserError, match="x.tflite"):
        read_tflite(bad)


def test_truncated_file_is_user_error(ref):
    buf = (ref / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()[:4096]
    with pytest.raises(UserError, match="cut.tflite"):
        parse(buf, "cut.tflite")


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_tflite(tmp_path / "missing.tflite")
