"""LiteRT's ``TFLite_Detection_PostProcess`` attached to a detector before conversion.

The TFLite converter fuses a ``tf.function`` whose ``experimental_implements`` names
``TFLite_Detection_PostProcess`` (its attributes written as a NodeDef text) into that custom op,
which LiteRT's default op resolver runs; the function's body is a placeholder the converter
drops. The decoding spec (``architectures.ssdlite.decoding_spec``) gives every attribute, and
the anchors become a constant input, so the file decodes exactly as ``detection.postprocess``.

The op takes converted scores, so the graph applies the spec's ``score_conversion`` first.
Batch size 1 (the op's limit). Convert through a SavedModel (``to_tflite``): the converter's
composite-function pass sees the annotated function there, whereas ``from_concrete_functions``
inlines the placeholder body first and the op is lost (measured: a file of constants).
``allow_custom_ops`` must be on.
Outputs, as the op defines them: boxes (1, max_detections, 4) ``[ymin, xmin, ymax, xmax]``,
classes (1, max_detections) float label indices, scores (1, max_detections), num_detections
(1,); entries past ``num_detections`` are zero.
"""

from __future__ import annotations

import numpy as np

OP = "TFLite_Detection_PostProcess"


def implements_signature(spec: dict) -> str:
    """The op's attributes as the NodeDef text ``experimental_implements`` carries."""
    c = spec["box_coder"]
    ints = {"max_detections": spec["max_detections"], "max_classes_per_detection": 1,
            "detections_per_class": spec.get("detections_per_class", 100), "num_classes": spec["num_classes"]}
    floats = {"nms_score_threshold": spec["score_threshold"], "nms_iou_threshold": spec["iou_threshold"],
              "y_scale": c["y_scale"], "x_scale": c["x_scale"], "h_scale": c["h_scale"], "w_scale": c["w_scale"]}
    parts = [f'name: "{OP}"']
    parts += [f'attr {{ key: "{k}" value {{ i: {int(v)} }} }}' for k, v in ints.items()]
    # repr keeps every digit of the float (a %f would round a threshold to 6 decimals)
    parts += [f'attr {{ key: "{k}" value {{ f: {float(v)!r} }} }}' for k, v in floats.items()]
    parts.append(f'attr {{ key: "use_regular_nms" value {{ b: {str(bool(spec["use_regular_nms"])).lower()} }} }}')
    return " ".join(parts)


def postprocess_fn(spec: dict, anchors: np.ndarray):
    """A ``tf.function(class_logits (1, A, C+1), box_encodings (1, A, 4))`` -> the op's four
    outputs; the converter replaces its inner function with the custom op."""
    import tensorflow as tf

    @tf.function(experimental_implements=implements_signature(spec))
    def _op(box_encodings, class_predictions, anchors_in):
        # placeholder body (never converted): the op's output signature
        del box_encodings, class_predictions, anchors_in
        z = tf.constant(0.0, tf.float32)
        return z, z, z, z

    anchors = tf.constant(np.asarray(anchors, np.float32))
    conversion = spec["score_conversion"]

    def run(class_logits, box_encodings):
        scores = tf.nn.softmax(class_logits, -1) if conversion == "softmax" else tf.sigmoid(class_logits)
        return _op(box_encodings, scores, anchors)

    return run


RAW = ("class_logits", "box_encodings")
DETECTIONS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


def to_tflite(keras_model, spec: dict, anchors: np.ndarray, configure=None, *, raw: bool = False) -> bytes:
    """The detector plus ``TFLite_Detection_PostProcess`` as one .tflite: image (1, H, W, C) ->
    (boxes, classes, scores, num_detections), the signature's outputs named ``DETECTIONS``: the
    four outputs MediaPipe's ObjectDetector (and every TFLite detection client) expects. With
    ``raw`` the two raw heads (``RAW``) are outputs too (such a file no client loads; validation
    reads the heads of the shipped file with ``with_raw_heads`` instead).

    Written out as a SavedModel by Keras' ``ExportArchive`` (which tracks the model's variables;
    a plain ``tf.Module`` holding a Keras 3 model converts to NaN outputs, measured), then
    converted with custom ops allowed; ``configure(converter)`` may set quantization options.
    """
    import contextlib
    import io
    import tempfile

    import keras
    import tensorflow as tf

    run = postprocess_fn(spec, anchors)
    shape = [1, *keras_model.inputs[0].shape[1:]]

    def detect(x):
        class_logits, box_encodings = keras_model(x, training=False)
        outs = dict(zip(DETECTIONS, run(class_logits, box_encodings), strict=True))
        return {**outs, RAW[0]: class_logits, RAW[1]: box_encodings} if raw else outs

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint("serving_default", detect, input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(d)
        return saved_model_to_tflite(d, configure)


def output_order(model: bytes) -> list[str]:
    """The signature names of a converted detector's outputs, in the subgraph's output order
    (what the metadata's output list must follow)."""
    from ..._deps import require

    interp = require("ai_edge_litert.interpreter", "running .tflite files").Interpreter(model_content=bytes(model))
    sig = next(iter(interp._get_full_signature_list().values()))
    by_index = {i: k for k, i in sig["outputs"].items()}
    return [by_index[d["index"]] for d in interp.get_output_details()]


def saved_model_to_tflite(path, configure=None) -> bytes:
    """Convert a SavedModel with custom ops allowed (``configure(converter)`` first)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(path))
    conv.allow_custom_ops = True
    if configure is not None:
        configure(conv)
    return conv.convert()


def _custom(m, op) -> str:
    code = m.operatorCodes[op.opcodeIndex].customCode
    return code.decode() if isinstance(code, (bytes, bytearray)) else str(code or "")


def raw_head_tensors(model: bytes) -> tuple[int, int, list[int]] | None:
    """The tensor indices (class logits, box encodings) feeding a detector's
    ``TFLite_Detection_PostProcess`` in subgraph 0 and the op's four outputs (boxes, classes,
    scores, count, in its port order), or None when the file has no such op.

    The op takes box encodings (input 0) and converted scores (input 1); the logits are the input
    of the score conversion (SOFTMAX or LOGISTIC), itself behind a DEQUANTIZE in an int8 file.
    """
    from .metadata import _schema, model_only

    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(bytearray(model_only(model)), 0)
    sg = m.subgraphs[0]
    op = next((o for o in sg.operators if _custom(m, o) == OP), None)
    if op is None:
        return None
    producer = {int(t): o for o in sg.operators for t in (o.outputs if o.outputs is not None else [])}
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def source(t: int, kinds: tuple[str, ...]) -> int:
        """Walk back from tensor ``t`` through ops of ``kinds`` to their input."""
        while int(t) in producer and names.get(m.operatorCodes[producer[int(t)].opcodeIndex].builtinCode) in kinds:
            t = producer[int(t)].inputs[0]
        return int(t)

    scores = source(op.inputs[1], ("DEQUANTIZE",))
    conv = producer.get(scores)
    if conv is None or names.get(m.operatorCodes[conv.opcodeIndex].builtinCode) not in ("SOFTMAX", "LOGISTIC"):
        raise ValueError(f"{OP}'s scores are not a SOFTMAX/LOGISTIC of the class logits")
    return int(conv.inputs[0]), int(op.inputs[0]), [int(t) for t in op.outputs]


def with_raw_heads(model: bytes) -> tuple[bytes, tuple[int, int, list[int]]]:
    """The same model with its raw heads (``raw_head_tensors``) appended to subgraph 0's outputs,
    for validation: the shipped file's own network and op, the heads read beside its detections
    (a delegate such as XNNPACK keeps a graph output; an intermediate it may fuse away).
    Returns the bytes (metadata and associated files dropped) and ``raw_head_tensors``."""
    import flatbuffers

    from .metadata import _schema, model_only

    heads = raw_head_tensors(model)
    if heads is None:
        raise ValueError(f"no {OP} op in the model")
    m = _schema().ModelT.InitFromPackedBuf(bytearray(model_only(model)), 0)
    sg = m.subgraphs[0]
    outs = [int(t) for t in sg.outputs]
    sg.outputs = outs + [t for t in heads[:2] if t not in outs]
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), heads
