"""Core ML detection as Vision consumes it: a pipeline of the ML Program (network, score
conversion and box decoding in the graph) and Core ML's NonMaximumSuppression model.

What makes ``VNCoreMLRequest`` return ``VNRecognizedObjectObservation``s (coremltools'
``NonMaximumSuppression.proto``; Turi Create's and Create ML's detectors; ultralytics' ``nms=True``
export): the last model of a pipeline is a NonMaximumSuppression model whose outputs are
``confidence`` (boxes x classes, each class's confidence, no background) and ``coordinates``
(boxes x 4: centre x, centre y, width, height, normalised 0..1 from the image's top left), with
the class labels in the NMS model (``stringClassLabels``) and an image input. A pipeline holding
an ML Program needs Core ML 5: iOS 15 / macOS 12 (specification version 6) or later.

The ML Program also outputs the two raw heads (``class_logits``, ``box_encodings``): they are
not pipeline outputs (Vision sees ``confidence`` and ``coordinates`` only) but stay features of
the package that ``milexec``'s pipeline runner reads, so that validation compares the network and
the pipeline's own boxes apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CONFIDENCE, COORDINATES = "confidence", "coordinates"
RAW_CONFIDENCE, RAW_COORDINATES = "raw_confidence", "raw_coordinates"


def decoding_module(net, spec: dict, anchors: np.ndarray):
    """A torch module: image -> (raw_confidence (A, C), raw_coordinates (A, 4) as normalised
    centre x, y, width, height, class_logits (1, A, C + 1), box_encodings (1, A, 4)), decoding as
    ``tasks/detection/decode.py`` does (the spec's coder scales and score conversion)."""
    import torch

    c = spec["box_coder"]
    a = torch.tensor(np.asarray(anchors, np.float32))  # (A, 4) [yc, xc, h, w]

    class Decode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("anchors", a)

        def forward(self, x):
            logits, enc = self.net(x)
            if spec["score_conversion"] == "softmax":
                scores = torch.softmax(logits, -1)[0, :, 1:]
            else:
                scores = torch.sigmoid(logits)[0, :, 1:]
            e, an = enc[0], self.anchors
            yc = e[:, 0] / c["y_scale"] * an[:, 2] + an[:, 0]
            xc = e[:, 1] / c["x_scale"] * an[:, 3] + an[:, 1]
            h = torch.exp(e[:, 2] / c["h_scale"]) * an[:, 2]
            w = torch.exp(e[:, 3] / c["w_scale"]) * an[:, 3]
            return scores, torch.stack([xc, yc, w, h], -1), logits, enc

    return Decode().eval()


def nms_model(ct, labels: list[str], spec: dict, num_anchors: int):
    """Core ML's NonMaximumSuppression model with the spec's thresholds and detection count."""
    from coremltools.proto import FeatureTypes_pb2 as ft
    from coremltools.proto import Model_pb2

    m = Model_pb2.Model()
    m.specificationVersion = 3  # NonMaximumSuppression: iOS 12 / macOS 10.14
    n = len(labels)
    for name, width in ((RAW_CONFIDENCE, n), (RAW_COORDINATES, 4)):
        f = m.description.input.add()
        f.name = name
        f.type.multiArrayType.shape.extend([num_anchors, width])
        f.type.multiArrayType.dataType = ft.ArrayFeatureType.DOUBLE
    for name, width in ((CONFIDENCE, n), (COORDINATES, 4)):
        f = m.description.output.add()
        f.name = name
        f.type.multiArrayType.dataType = ft.ArrayFeatureType.DOUBLE
        # 0 .. max_detections boxes: a flexible first dimension, as Create ML's detectors have
        r = f.type.multiArrayType.shapeRange.sizeRanges
        r.add(lowerBound=0, upperBound=int(spec["max_detections"]))
        r.add(lowerBound=width, upperBound=width)
    nms = m.nonMaximumSuppression
    # regular NMS suppresses within a class; the fast one (the spec's default) across classes
    nms.pickTop.perClass = bool(spec.get("use_regular_nms"))
    nms.stringClassLabels.vector.extend(labels)
    nms.iouThreshold = float(spec["iou_threshold"])
    nms.confidenceThreshold = float(spec["score_threshold"])
    nms.confidenceInputFeatureName = RAW_CONFIDENCE
    nms.coordinatesInputFeatureName = RAW_COORDINATES
    nms.confidenceOutputFeatureName = CONFIDENCE
    nms.coordinatesOutputFeatureName = COORDINATES
    return ct.models.MLModel(m)


def make_detection_pipeline(ct, program, labels: list[str], spec: dict, num_anchors: int, raw: tuple[str, str]):
    """``program`` (an ML Program MLModel with outputs raw_confidence, raw_coordinates and the
    ``raw`` heads) followed by the NMS model, as one pipeline MLModel whose outputs are
    ``confidence`` and ``coordinates`` only."""
    pipe = ct.utils.make_pipeline(program, nms_model(ct, labels, spec, num_anchors))
    s = pipe.get_spec()
    keep = [o for o in s.description.output if o.name in (CONFIDENCE, COORDINATES)]
    del s.description.output[:]
    s.description.output.extend(keep)
    # Vision reads these; the user-facing descriptions say what each holds
    s.description.output[0].shortDescription = (
        f"boxes x {len(labels)} class confidences (no background; {spec['score_conversion']} scores), "
        f"after NMS (IoU {spec['iou_threshold']}, confidence >= {spec['score_threshold']}, at most "
        f"{spec['max_detections']} boxes)")
    s.description.output[1].shortDescription = (
        "boxes x 4: centre x, centre y, width, height, normalised 0..1 from the image's top left")
    s.description.predictedFeatureName = ""
    return ct.models.MLModel(s, weights_dir=pipe.weights_dir)


def pipeline_facts(spec: dict) -> dict[str, Any]:
    """What the manifest records about the pipeline (its NMS settings, Vision's outputs)."""
    return {"pipeline": ["mlProgram (network, score conversion, box decoding)", "nonMaximumSuppression"],
            "vision_outputs": [CONFIDENCE, COORDINATES],
            "nms": {"iou_threshold": spec["iou_threshold"], "confidence_threshold": spec["score_threshold"],
                    "max_detections": spec["max_detections"], "per_class": bool(spec.get("use_regular_nms"))},
            "coordinates": "centre x, centre y, width, height (normalised, top-left origin)"}


def detections_of(confidence: np.ndarray, coordinates: np.ndarray):
    """The pipeline's outputs for one image as ``Detections`` (class: the best confidence)."""
    from ...tasks.detection.decode import Detections

    conf = np.asarray(confidence, np.float32).reshape(-1, np.asarray(confidence).shape[-1])
    xywh = np.asarray(coordinates, np.float32).reshape(-1, 4)
    x, y, w, h = xywh[:, 0], xywh[:, 1], xywh[:, 2], xywh[:, 3]
    boxes = np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], -1)
    return Detections(boxes, conf.argmax(-1).astype(np.int64) if len(conf) else np.zeros(0, np.int64),
                      conf.max(-1) if len(conf) else np.zeros(0, np.float32))


def is_pipeline(path: Path) -> bool:
    """Is the package at ``path`` a pipeline (read without coremltools)?"""
    from .milexec.program import _load_spec

    return _load_spec(Path(path)).WhichOneof("Type") == "pipeline"
