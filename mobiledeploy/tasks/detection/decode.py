"""The host detection decoder: THE decoding spec every runtime's boxes are judged by.

It reproduces LiteRT's ``TFLite_Detection_PostProcess`` (``kernels/detection_postprocess.cc``)
on the network's raw outputs, so a TFLite file with the op, Core ML's NMS and a host-decoded
ExecuTorch program can all be compared with one function:

1. scores: ``softmax`` over ``classes + 1`` (index 0 = background) or ``sigmoid`` per class,
   applied to the raw class logits (the op itself takes converted scores, so a graph that
   carries the op applies the same conversion before it);
2. boxes, center-size decoding against ``[ycenter, xcenter, h, w]`` anchors, computed in float64
   and rounded to float32 as the op does::

       yc = ty / y_scale * ha + yca      h = exp(th / h_scale) * ha
       xc = tx / x_scale * wa + xca      w = exp(tw / w_scale) * wa
       box = [yc - h/2, xc - w/2, yc + h/2, xc + w/2]   (ymin, xmin, ymax, xmax; normalised)

3. NMS, ``use_regular_nms: false`` (the op's default, "fast"): CLASS-AGNOSTIC. Each anchor
   keeps its best non-background class (the first on ties); anchors whose best score is
   ``>= score_threshold`` are sorted by that score (stable: equal scores keep anchor order),
   then greedily kept while fewer than ``max_detections``, each suppressing the later ones whose
   IoU with it is ``> iou_threshold`` (IoU 0 for a box of area <= 0).
   ``use_regular_nms: true``: the same single-class NMS per class (``detections_per_class``
   each), merged by score (stable, classes in order), first ``max_detections`` kept.

Classes in the result are 0-based indices into the labels file (background excluded), as the
op reports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """One image's detections, best first: boxes (k, 4) [ymin, xmin, ymax, xmax] normalised,
    classes (k,) label indices, scores (k,)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class RuntimeDetections:
    """A runner's raw heads plus the detections its runtime decoded itself (one per image)."""

    class_logits: np.ndarray
    box_encodings: np.ndarray
    detections: list[Detections]


def _coder(spec: dict) -> tuple[float, float, float, float]:
    c = spec["box_coder"]
    return c["y_scale"], c["x_scale"], c["h_scale"], c["w_scale"]


def decode_boxes(box_encodings: np.ndarray, anchors: np.ndarray, scales) -> np.ndarray:
    """Raw ``(ty, tx, th, tw)`` encodings (..., A, 4) -> float32 ``[ymin, xmin, ymax, xmax]``."""
    ys, xs, hs, ws = (float(s) for s in scales)
    e = np.asarray(box_encodings, np.float64)
    a = np.asarray(anchors, np.float64)
    yc = e[..., 0] / ys * a[:, 2] + a[:, 0]
    xc = e[..., 1] / xs * a[:, 3] + a[:, 1]
    # the op rounds the half sizes to float32 before adding them to the float32 centres
    hh = (0.5 * np.exp(e[..., 2] / hs) * a[:, 2]).astype(np.float32)
    hw = (0.5 * np.exp(e[..., 3] / ws) * a[:, 3]).astype(np.float32)
    yc, xc = yc.astype(np.float32), xc.astype(np.float32)
    return np.stack([yc - hh, xc - hw, yc + hh, xc + hw], -1)


def encode_boxes(boxes: np.ndarray, anchors: np.ndarray, scales) -> np.ndarray:
    """The inverse of ``decode_boxes`` (training targets): corner boxes -> ``(ty, tx, th, tw)``."""
    ys, xs, hs, ws = (float(s) for s in scales)
    b = np.asarray(boxes, np.float64)
    a = np.asarray(anchors, np.float64)
    h = np.maximum(b[..., 2] - b[..., 0], 1e-8)
    w = np.maximum(b[..., 3] - b[..., 1], 1e-8)
    yc, xc = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    return np.stack([(yc - a[..., 0]) / a[..., 2] * ys, (xc - a[..., 1]) / a[..., 3] * xs,
                     np.log(h / a[..., 2]) * hs, np.log(w / a[..., 3]) * ws], -1).astype(np.float32)


def convert_scores(class_logits: np.ndarray, conversion: str) -> np.ndarray:
    """Raw logits (..., classes + 1) -> scores: softmax over all, or an element-wise sigmoid."""
    z = np.asarray(class_logits, np.float64)
    if conversion == "softmax":
        z = np.exp(z - z.max(-1, keepdims=True))
        return (z / z.sum(-1, keepdims=True)).astype(np.float32)
    if conversion == "sigmoid":
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    raise ValueError(f"score_conversion must be softmax or sigmoid, not {conversion!r}")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes (n, 4) x (m, 4); 0 where either box has area <= 0."""
    a = np.asarray(a, np.float32)[:, None, :]
    b = np.asarray(b, np.float32)[None, :, :]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    ih = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    iw = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = ih * iw
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_a + area_b - inter)
    return np.where((area_a > 0) & (area_b > 0), iou, 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
        max_out: int) -> np.ndarray:
    """Single-class greedy NMS as the op runs it; indices into ``boxes``, best first."""
    keep = np.flatnonzero(scores >= score_threshold)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    if not len(order):
        return order
    iou = iou_matrix(boxes[order], boxes[order])
    active = np.ones(len(order), bool)
    selected = []
    for i in range(len(order)):
        if len(selected) >= max_out:
            break
        if not active[i]:
            continue
        selected.append(order[i])
        active[i] = False
        active[i + 1:] &= ~(iou[i, i + 1:] > iou_threshold)
    return np.asarray(selected, dtype=np.int64)


def postprocess_one(class_logits: np.ndarray, box_encodings: np.ndarray, anchors: np.ndarray,
                    spec: dict) -> Detections:
    """One image's raw outputs (A, classes + 1), (A, 4) -> its detections (the module doc)."""
    scores = convert_scores(class_logits, spec["score_conversion"])[:, 1:]
    boxes = decode_boxes(box_encodings, anchors, _coder(spec))
    thr, iou, top = spec["score_threshold"], spec["iou_threshold"], spec["max_detections"]
    if not spec.get("use_regular_nms", False):
        cls = scores.argmax(1)  # first maximum on ties, as the op's ArgMaxVector
        best = scores[np.arange(len(scores)), cls]
        sel = nms(boxes, best, thr, iou, top)
        return Detections(boxes[sel], cls[sel].astype(np.int64), best[sel])
    idx, cl, sc = [], [], []
    for c in range(scores.shape[1]):
        s = nms(boxes, scores[:, c], thr, iou, spec.get("detections_per_class", 100))
        idx.append(s)
        cl.append(np.full(len(s), c))
        sc.append(scores[s, c])
    idx, cl, sc = np.concatenate(idx), np.concatenate(cl), np.concatenate(sc)
    order = np.argsort(-sc, kind="stable")[:top]
    return Detections(boxes[idx[order]], cl[order].astype(np.int64), sc[order])


def postprocess(class_logits: np.ndarray, box_encodings: np.ndarray, anchors: np.ndarray,
                spec: dict) -> list[Detections]:
    """A batch of raw outputs (N, A, classes + 1), (N, A, 4) -> detections per image.

    ``spec`` is ``architectures.ssdlite.decoding_spec(...)`` (the manifest's decoding spec).
    """
    class_logits, box_encodings = np.asarray(class_logits), np.asarray(box_encodings)
    if class_logits.shape[:2] != box_encodings.shape[:2] or class_logits.shape[1] != len(anchors):
        raise ValueError(f"outputs {class_logits.shape} / {box_encodings.shape} do not fit {len(anchors)} anchors")
    return [postprocess_one(lg, be, anchors, spec) for lg, be in zip(class_logits, box_encodings, strict=True)]
