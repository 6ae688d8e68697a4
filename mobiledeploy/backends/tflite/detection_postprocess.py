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
    (boxes, classes, scores, num_detections), the signature's ``output_0`` .. ``output_3``.
    With ``raw`` the signature's outputs are named (``DETECTIONS``) and the two raw heads
    (``RAW``) are outputs too, so that validation compares the network and the op apart.

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
        outs = run(class_logits, box_encodings)
        if not raw:
            return outs
        return {**dict(zip(DETECTIONS, outs, strict=True)), RAW[0]: class_logits, RAW[1]: box_encodings}

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
