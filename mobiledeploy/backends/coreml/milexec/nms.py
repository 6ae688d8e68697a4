"""Core ML's non-maximum suppression: the MIL op ``non_maximum_suppression`` (iOS15 and iOS17
forms) and the NonMaximumSuppression model of a pipeline share one NumPy kernel.

Semantics, as Core ML documents them and as coremltools' own op tests check them (their
reference is TensorFlow's ``non_max_suppression``):

- a box's score is its largest class score, its class the argmax (first of equal scores);
- candidates are the boxes scored strictly above ``score_threshold`` (iOS17's op has none: all);
- candidates are taken best first, equal scores in box order (a stable sort), and a candidate is
  suppressed when its IoU with a box already kept is strictly greater than ``iou_threshold``;
  with ``per_class_suppression`` only boxes of the same class suppress each other (and each class
  keeps up to ``max_boxes``, the result cut to ``max_boxes`` best first);
- IoU is 0 when either box has no area; boxes are ``(x, y, width, height)`` with (x, y) the centre;
- when no box is a candidate the best box is returned alone (Core ML never returns zero boxes
  from the MIL op; the reference ``_ref_non_maximum_suppression`` does the same);
- outputs are padded to ``max_boxes``: boxes and scores with 0, indices with -1.
"""

from __future__ import annotations

import numpy as np

from .ops import OPSET_AWARE, op


def iou_centre(boxes: np.ndarray) -> np.ndarray:
    """(B, B) IoU of boxes (B, 4) as (x, y, w, h) centre/size; 0 where a box has no area."""
    b = np.asarray(boxes, np.float64)
    x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x1, x2 = np.minimum(x - w / 2, x + w / 2), np.maximum(x - w / 2, x + w / 2)
    y1, y2 = np.minimum(y - h / 2, y + h / 2), np.maximum(y - h / 2, y + h / 2)
    area = (x2 - x1) * (y2 - y1)
    iw = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    ih = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    inter = iw * ih
    union = area[:, None] + area[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((area[:, None] > 0) & (area[None] > 0) & (union > 0), inter / union, 0.0)
    return iou


def select(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float | None,
           max_boxes: int, per_class: bool, keep_best: bool = True, inclusive: bool = False) -> np.ndarray:
    """Indices of the boxes kept for one image, best first (see the module doc). ``inclusive``:
    a score equal to the threshold is a candidate (the NonMaximumSuppression model's rule);
    ``keep_best``: no candidate returns the best box alone (the MIL op's)."""
    best = scores.max(-1)
    cls = scores.argmax(-1)
    order = np.argsort(-best, kind="stable")
    if score_threshold is not None:
        order = order[best[order] >= score_threshold] if inclusive else order[best[order] > score_threshold]
    iou = iou_centre(boxes) if len(order) else None
    kept: list[int] = []
    per: dict[int, int] = {}
    for i in order.tolist():
        if per_class:
            if per.get(int(cls[i]), 0) >= max_boxes:
                continue
            rivals = [k for k in kept if cls[k] == cls[i]]
        else:
            if len(kept) >= max_boxes:
                break
            rivals = kept
        if rivals and (iou[i, rivals] > iou_threshold).any():
            continue
        kept.append(i)
        per[int(cls[i])] = per.get(int(cls[i]), 0) + 1
    kept = kept[:max_boxes]  # per class: each class's best, cut best first (kept is in score order)
    if not kept and keep_best and len(best):
        kept = [int(np.argmax(best))]  # no candidate: the best box alone (first of equal scores)
    return np.asarray(kept, np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold, score_threshold, max_boxes: int,
        per_class: bool):
    """Batched: boxes (n, B, 4), scores (n, B, K) -> boxes (n, M, 4), scores (n, M, K),
    indices (n, M) int32 (-1 padded), counts (n,) int32."""
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    n, _, k = scores.shape
    m = int(max_boxes)
    ob = np.zeros((n, m, 4), np.float64)
    os_ = np.zeros((n, m, k), np.float64)
    oi = np.full((n, m), -1, np.int32)
    oc = np.zeros((n,), np.int32)
    for b in range(n):
        ids = select(boxes[b], scores[b], float(iou_threshold),
                     None if score_threshold is None else float(score_threshold), m, per_class)
        c = len(ids)
        ob[b, :c], os_[b, :c], oi[b, :c], oc[b] = boxes[b, ids], scores[b, ids], ids, c
    return ob, os_, oi, oc


OPSET_AWARE.add("non_maximum_suppression")


@op("non_maximum_suppression")
def _non_maximum_suppression(boxes, scores, iou_threshold, max_boxes, score_threshold=None,
                             per_class_suppression=False, opset: int = 5):
    """iOS15: boxes (n, B, 4), scores (n, B, K) -> boxes, scores, indices, counts. iOS17 on:
    boxes (n, 4, B), scores (n, K, B), no score threshold -> boxes (n, 4, M), scores (n, K, M),
    indices (n, M)."""
    per_class = bool(np.asarray(per_class_suppression).item())
    m = int(np.asarray(max_boxes).item())
    if opset >= 7:
        ob, os_, oi, _ = nms(np.swapaxes(boxes, 1, 2), np.swapaxes(scores, 1, 2), np.asarray(iou_threshold).item(),
                             None, m, per_class)
        return np.swapaxes(ob, 1, 2), np.swapaxes(os_, 1, 2), oi
    thr = None if score_threshold is None else np.asarray(score_threshold).item()
    return nms(boxes, scores, np.asarray(iou_threshold).item(), thr, m, per_class)


def nms_model(confidence: np.ndarray, coordinates: np.ndarray, *, iou_threshold: float,
              confidence_threshold: float, max_boxes: int, per_class: bool) -> tuple[np.ndarray, np.ndarray]:
    """Core ML's NonMaximumSuppression MODEL (a pipeline's last model, not the MIL op) on one
    image: confidence (B, C), coordinates (B, 4) -> the kept rows of each, best first, at most
    ``max_boxes`` (the output's upper bound). As ``NonMaximumSuppression.proto`` defines it:
    boxes "below the confidence threshold are discarded" (a box AT it stays), then PickTop
    (suppress IoU above the IoU threshold, within a class when ``perClass``); no box passes: zero
    rows (the model pads only to a fixed output shape)."""
    conf = np.asarray(confidence, np.float64)
    coords = np.asarray(coordinates, np.float64)
    ids = select(coords, conf, float(iou_threshold), float(confidence_threshold), int(max_boxes), per_class,
                 keep_best=False, inclusive=True)
    return conf[ids], coords[ids]
