"""TFLite metadata: every field written from the definition reads back; the input plan's arithmetic.

The flatbuffer is written and read with the ``flatbuffers`` runtime alone (no TensorFlow); the
model edit uses LiteRT's TFLite schema on a small model built with that same schema.
"""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.backends.tflite import metadata as TM
from mobiledeploy.definition import load_definition
from tests.conftest import example_data, write_definition

META = {"author": "Ada <ada@example.com>", "license": "Apache-2.0", "version": "2.1.0",
        "description": "Shapes a phone camera can meet; ünïcode ok"}


@pytest.fixture
def definition(example_copy):
    data = example_data()
    data["metadata"] = META
    return load_definition(write_definition(example_copy, data, "meta.yaml"))


def test_every_field_round_trips_against_the_definition(definition):
    info = TM.metadata_for(definition, io_dtype="uint8", stats=([0.0, 0.0, 0.01], [1.0, 0.99, 1.0]),
                           target="tflite-int8")
    back = TM.parse_metadata(TM.build_metadata(info))
    assert back == info
    # each field against the definition, not only against what was written
    assert (back.name, back.version, back.author, back.license, back.description) == (
        "shapes", META["version"], META["author"], META["license"], META["description"])
    assert back.min_parser_version == "1.0.0" and back.subgraph_name == "tflite-int8"
    (image,), (scores,) = back.inputs, back.outputs
    assert image.content == "image" and image.color_space == "RGB"
    assert image.image_size == (definition.input.width, definition.input.height)
    # ImageNet per-channel stats cannot be one mean/std: the plan takes p/255 and adapts in-graph
    assert image.mean == [0.0] * 3 and image.std == [255.0] * 3
    assert image.stats_min == [0.0, 0.0, pytest.approx(0.01)] and image.stats_max[0] == 1.0
    assert scores.content == "feature" and not scores.mean
    (labels,) = scores.associated_files
    assert (labels.name, labels.type) == ("labels.txt", "TENSOR_AXIS_LABELS")


def test_default_description_names_task_and_labels(example_copy):
    d = load_definition(example_copy / "shapes.yaml")
    info = TM.parse_metadata(TM.build_metadata(TM.metadata_for(d)))
    assert info.version == "1" and info.author == "" and info.license == ""
    assert "image-classification" in info.description and "circle" in info.description


def test_reader_refuses_a_foreign_buffer():
    with pytest.raises(ValueError, match="M001"):
        TM.parse_metadata(b"\x10\x00\x00\x00TFL3" + bytes(16))


def _spec(**kw):
    from mobiledeploy.definition import InputSpec

    return InputSpec(height=32, width=32, **kw)


def _definition_input(spec, p):
    from mobiledeploy.images import normalise

    return normalise(p, spec).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("kw, io, adapter, mean, std, quant", [
    ({"pixel_range": (0.0, 1.0)}, "float32", False, 0.0, 255.0, None),
    ({"pixel_range": (-1.0, 1.0)}, "float32", False, 127.5, 127.5, None),
    ({"pixel_range": (-1.0, 1.0)}, "uint8", True, 0.0, 255.0, (1 / 255, 0)),  # zero point 127.5
    ({"pixel_range": (0.0, 255.0)}, "uint8", False, 0.0, 1.0, (1.0, 0)),
    ({"pixel_range": (0.0, 255.0)}, "int8", False, 0.0, 1.0, (1.0, -128)),
    ({"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}, "float32", True, 0.0, 255.0, None),
    ({"color_order": "bgr"}, "float32", True, 0.0, 255.0, None),
])
def test_input_plan_reproduces_the_definition(kw, io, adapter, mean, std, quant):
    """metadata normalisation (+ adapter) applied to pixels == the definition's preprocessing, and
    an integer input's parameters make q = p (uint8) / p - 128 (int8)."""
    spec = _spec(**kw)
    plan = TM.input_plan(spec, io)
    assert (plan.adapter is not None, plan.mean, plan.std) == (adapter, pytest.approx(mean), pytest.approx(std))
    if quant is None:
        assert plan.quant is None
    else:
        assert plan.quant[0] == pytest.approx(quant[0]) and plan.quant[1] == quant[1]
    p = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3)).astype(np.uint8)
    x_in = (p.astype(np.float64) - plan.mean) / plan.std
    if plan.adapter is not None:
        m, b = (np.asarray(v, np.float64) for v in plan.adapter)
        x_in = x_in @ m.T + b
    np.testing.assert_allclose(x_in, _definition_input(spec, p), atol=1e-5)
    if plan.quant is not None:
        scale, zp = plan.quant
        q = p.astype(np.float64) - (128 if io == "int8" else 0)
        np.testing.assert_allclose(scale * (q - zp), (p - plan.mean) / plan.std, atol=1e-9)


def _tiny_tflite() -> bytes:
    """A valid one-op TFLite model (ADD of the input to itself), built with LiteRT's schema."""
    import flatbuffers

    S = TM._schema()
    m = S.ModelT()
    m.version = 3
    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.ADD
    m.operatorCodes = [code]
    sg = S.SubGraphT()
    tensors = []
    for name in ("image", "logits"):
        t = S.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, 4], S.TensorType.FLOAT32, 0, name
        tensors.append(t)
    sg.tensors, sg.inputs, sg.outputs = tensors, [0], [1]
    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    op.builtinOptionsType, op.builtinOptions = S.BuiltinOptions.AddOptions, S.AddOptionsT()
    sg.operators = [op]
    m.subgraphs = [sg]
    m.buffers = [S.BufferT()]
    b = flatbuffers.Builder(256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_attach_read_and_replace_on_a_model(definition):
    pytest.importorskip("ai_edge_litert")
    model = _tiny_tflite()
    info = TM.metadata_for(definition)
    labels = TM.labels_file(definition)
    out = TM.attach(model, TM.build_metadata(info), {"labels.txt": labels})
    got, files = TM.read_model_metadata(out)
    assert got == info and files == {"labels.txt": labels}
    assert TM.check_against_definition(got, files, definition) == []
    # attaching again replaces (one entry, one archive), and the result still runs
    wrong = TM.metadata_for(definition)
    wrong.inputs[0].mean = [123.0] * 3
    again = TM.attach(out, TM.build_metadata(wrong), {"labels.txt": labels})
    got2, files2 = TM.read_model_metadata(again)
    assert got2.inputs[0].mean == [123.0] * 3 and files2 == files
    root = TM._schema().Model.GetRootAs(bytearray(again), 0)
    names = [TM._name(root.Metadata(i).Name()) for i in range(root.MetadataLength())]
    assert names.count("TFLITE_METADATA") == 1
    assert any("normalisation" in p for p in TM.check_against_definition(got2, files2, definition))
    from mobiledeploy.backends.tflite.backend import make_interpreter

    interp = make_interpreter(again)
    interp.set_tensor(interp.get_input_details()[0]["index"], np.array([[1, 2, 3, 4]], np.float32))
    interp.invoke()
    np.testing.assert_array_equal(interp.get_tensor(interp.get_output_details()[0]["index"]), [[2, 4, 6, 8]])
