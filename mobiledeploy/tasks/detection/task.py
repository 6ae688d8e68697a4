"""Object detection: SSDLite's raw heads, decoded by one spec everywhere (``detection.py``).

Canonical output: ``(N, anchors, classes + 1 + 4)`` float32, the class logits (index 0 =
background) then the box encodings ``(ty, tx, th, tw)`` of every anchor, in the anchors' order
(``architectures.ssdlite.anchors``). A runner may return the two heads as a pair (the twins and
ExecuTorch do), or the pair plus the detections its runtime decoded itself
(``RuntimeDetections``: TFLite's ``TFLite_Detection_PostProcess``).

Judged on the raw heads (max_abs, mean_abs, cosine, snr_db) and on boxes: the reference's
detections (host-decoded) against the artifact's (the runtime's own when it decodes, else
host-decoded from its heads with the same spec): ``box_recall`` (same class, IoU >= 0.5),
``matched_iou``, ``score_max_abs``; ``map50`` against labelled boxes and ``map50_drop`` (the
reference's mAP minus the artifact's). When the runtime decodes, ``decoder_recall`` is the
agreement of its detections with the host decoder on its own heads (both ways, the smaller).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...tolerance import Tolerance, register_limit
from ..base import Task
from .decode import RuntimeDetections

NAME = "object-detection"

register_limit(NAME, "min_box_recall", "box_recall", "min", 0, 1)
register_limit(NAME, "min_box_precision", "box_precision", "min", 0, 1)
register_limit(NAME, "min_matched_iou", "matched_iou", "min", 0, 1)
register_limit(NAME, "max_score_abs", "score_max_abs", "max", 0, 1)
register_limit(NAME, "max_map50_drop", "map50_drop", "max", 0, 1)
register_limit(NAME, "min_decoder_recall", "decoder_recall", "min", 0, 1)

FLOAT = Tolerance(min_box_recall=1.0, min_box_precision=1.0, min_matched_iou=0.99, max_score_abs=0.01,
                  max_map50_drop=0.005, min_decoder_recall=1.0)
FP16 = Tolerance(min_box_recall=0.97, min_box_precision=0.97, min_matched_iou=0.97, max_score_abs=0.05,
                 max_map50_drop=0.01, min_decoder_recall=1.0)
INT8 = Tolerance(min_box_recall=0.95, min_box_precision=0.95, min_matched_iou=0.9, max_map50_drop=0.03,
                 min_decoder_recall=0.98)


class DetOutput(np.ndarray):
    """The canonical array, carrying the runtime's own detections when it decoded them."""

    detections: list | None = None


@dataclass
class DetTruth:
    """What detection rows are judged with: the decoding context and the labelled boxes."""

    anchors: np.ndarray
    spec: dict
    num_classes: int
    boxes: list | None = None
    labels: list[str] | None = None  # per image (boxes (k, 4), classes (k,)), or None when unlabelled
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.boxes) if self.boxes is not None else 0

    def decode(self, raw: np.ndarray) -> list:
        """Host-decoded detections of canonical raw outputs (N, A, C + 5)."""
        from .decode import postprocess

        key = id(raw)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is raw:
            return hit[1]
        c1 = self.num_classes + 1
        dets = postprocess(raw[..., :c1], raw[..., c1:], self.anchors, self.spec)
        self._cache[key] = (raw, dets)
        return dets


class Detection(Task):
    name = NAME
    is_classifier = False
    output_names = ("class_logits", "box_encodings")
    app_family = "detector"
    summary = (("max_abs", "max_abs"), ("snr_db", "SNR dB"), ("box_recall", "box recall"),
               ("matched_iou", "matched IoU"), ("map50", "mAP@0.5"))
    tolerances = {"fp32": FLOAT, "fp16": FP16, "int8": INT8}
    # a detector has no top-1 and no masks: the backends' classifier limits do not apply
    unmeasured = frozenset({"top1_agreement", "top5_agreement", "accuracy_drop"})
    title = "detection"
    output_kind = "heads"
    head_field = "detection"
    head_title = "SSDLite head"
    replaces_classifier_head = True
    truth_fields = ("boxes",)
    labels_are_truth = False
    quality_keys = ("map50", "box_recall")

    def check_truth_files(self, definition, field, images):
        from .boxes import load_boxes

        load_boxes(definition, field, images)  # every image has a well-formed boxes entry

    def head_section(self):
        from .section import DetectionSection

        return DetectionSection

    def spec_options(self, section):
        from .section import DetectionSection

        return {"detection": (section or DetectionSection()).options()}

    def check_definition(self, definition):
        if definition.conventions.padding.value != "symmetric":
            raise ValueError("the SSDLite head pads symmetrically: object-detection needs conventions.padding: "
                             "symmetric")
    keras_tolerance = Tolerance(min_box_recall=1.0, min_box_precision=1.0, min_matched_iou=0.999, max_score_abs=1e-3)

    def output_shape(self, spec):
        return (spec.detection.num_anchors, spec.num_classes + 5)

    def canonical(self, out, layout="nchw"):
        dets = None
        if isinstance(out, RuntimeDetections):
            dets, out = out.detections, (out.class_logits, out.box_encodings)
        if isinstance(out, (tuple, list)):
            if len(out) != 2:
                raise ValueError(f"a detector has two outputs (class logits, box encodings), not {len(out)}")
            logits, boxes = (np.asarray(o, np.float32) for o in out)
            n = len(logits)
            # (N, A, k) either way: a runtime may flatten the anchors' axis
            a = np.concatenate([logits.reshape(n, -1, logits.shape[-1]), boxes.reshape(n, -1, 4)], -1)
        else:
            a = np.asarray(out, np.float32)
            if a.ndim != 3:
                raise ValueError(f"a detection output is (N, anchors, classes + 5), not shape {list(a.shape)}")
        a = np.ascontiguousarray(a).view(DetOutput)
        a.detections = dets
        return a

    def truth(self, definition, which, batch):
        from .boxes import load_boxes
        from .ssdlite import anchors, decoding_spec

        spec = definition.architecture_spec()
        return DetTruth(anchors(spec), decoding_spec(spec), spec.num_classes,
                        load_boxes(definition, which, batch.files), definition.labels_list())

    def sidecar_outputs(self, definition):
        spec = definition.architecture_spec()
        a, c = spec.detection.num_anchors, definition.num_classes
        return {"outputs": [
            {"name": "class_logits", "dtype": "float32", "shape": [1, a, c + 1],
             "meaning": "raw class logits per anchor, background at index 0, then the labels in order"},
            {"name": "box_encodings", "dtype": "float32", "shape": [1, a, 4],
             "meaning": "raw (ty, tx, th, tw) per anchor; decode with the decoding spec"}],
            **self.manifest_facts(definition)}

    def manifest_facts(self, definition):
        """The one decoding spec every runtime, the host validator and the app decode with, and
        the anchors' digest (they are generated from the spec, NumPy only)."""
        import hashlib

        from .ssdlite import anchors, decoding_spec

        spec = definition.architecture_spec()
        a = anchors(spec)
        return {"decoding": {**decoding_spec(spec), "anchors_sha256": hashlib.sha256(a.tobytes()).hexdigest(),
                             "anchors_generator": "mobiledeploy.tasks.detection.ssdlite.anchors"}}

    def truth_digest(self, definition, which):
        from ...bundle import sha256_file

        src = getattr(definition, which)
        return sha256_file(definition.confined(src.boxes, f"{which}.boxes")) if src.boxes else None

    def bundle_truth(self, definition, which, items, folder):
        from pathlib import Path

        from .boxes import load_boxes, write_boxes

        gts = load_boxes(definition, which, [str(p) for p, _ in items])
        if gts is None:
            return {}
        labels = definition.labels_list()
        entries = {f"{which}/{i:05d}{Path(p).suffix.lower()}":
                   [{"label": labels[int(c)], "box": [float(v) for v in b]} for b, c in zip(*g, strict=True)]
                   for i, ((p, _), g) in enumerate(zip(items, gts, strict=True))}
        name = f"{which}_boxes.json"
        write_boxes(Path(folder) / name, entries)
        return {"boxes": name}

    def reference_metrics(self, ref, truth):
        from .metrics import map50

        dets = truth.decode(ref)
        m: dict[str, Any] = {"detections": float(sum(len(d) for d in dets))}
        if truth.boxes is not None:
            m["map50"] = map50(dets, truth.boxes, truth.num_classes)
        return m

    def _artifact_detections(self, out, truth) -> list:
        own = getattr(out, "detections", None)
        return own if own is not None else truth.decode(out)

    def metrics(self, ref, out, truth, ref_metrics):
        from . import metrics as D

        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
        m = super().metrics(np.asarray(ref), np.asarray(out), truth, ref_metrics)
        refs, arts = truth.decode(ref), self._artifact_detections(out, truth)
        # both ways: a lost box lowers the recall, a box the reference does not have the precision;
        # None (not judged) when there is nothing on that side to count
        m["box_recall"] = D.box_recall(refs, arts, empty=None)
        m["box_precision"] = D.box_recall(arts, refs, empty=None)
        m["matched_iou"] = D.matched_iou(refs, arts)
        m["score_max_abs"] = D.score_max_abs(refs, arts)
        m["detections"] = float(sum(len(d) for d in arts))
        if truth.boxes is not None:
            m["map50"] = D.map50(arts, truth.boxes, truth.num_classes)
            if ref_metrics.get("map50") is not None:
                m["map50_drop"] = max(0.0, ref_metrics["map50"] - m["map50"])
        own = getattr(out, "detections", None)
        if own is not None:  # the runtime's decoder against the host's, on the runtime's own heads
            host = truth.decode(np.asarray(out))
            m["decoder_recall"] = min(D.box_recall(host, own), D.box_recall(own, host))
        return m

    def per_sample(self, ref, out, batch=None, truth=None):
        from . import metrics as D

        extra = super().per_sample(np.asarray(ref), np.asarray(out), batch, truth)
        if truth is None:
            return extra
        refs, arts = truth.decode(ref), self._artifact_detections(out, truth)
        extra["per_image_recall"] = [D.box_recall([r], [a]) for r, a in zip(refs, arts, strict=True)]
        extra["detections"] = [_dets_json(a) for a in arts]
        if batch is not None and getattr(batch, "pixels", None) is not None:
            from .report import worst_images

            extra["worst_images"] = worst_images(extra["per_image_recall"], extra["per_sample_max_abs"], refs,
                                                 arts, batch, truth.labels)
        return extra

    def report_section(self, report, manifest):
        from .report import worst_images_section

        return worst_images_section(report)


def _dets_json(d) -> list[list[float]]:
    """One image's detections as [[ymin, xmin, ymax, xmax, class, score], ...] (rounded)."""
    return [[round(float(v), 5) for v in b] + [int(c), round(float(s), 5)]
            for b, c, s in zip(d.boxes, d.classes, d.scores, strict=True)]
