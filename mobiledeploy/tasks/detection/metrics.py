"""Detection comparators: an artifact's detections against the reference's, and against labels.

Small functions over ``detection.Detections`` lists (one per image), feeding the report table:

- ``match``: reference detections paired one-to-one with the artifact's of the same class and
  IoU >= 0.5 (reference in score order, each takes the unmatched candidate of highest IoU);
  ``min_score`` leaves out reference detections scored below it (a display threshold), while
  every artifact detection may match, so a score that moves across that threshold in int8 is
  not counted as a lost box;
- ``box_recall``: matched / reference detections (``empty`` when the reference found nothing);
  with the roles swapped it is the artifact's precision: boxes the reference does not have;
- ``matched_iou``: mean IoU of the matched pairs; ``score_max_abs``: their largest score gap;
- ``map50``: mean over labelled classes of VOC average precision (all-point interpolation) at
  IoU 0.5 against labelled boxes.
"""

from __future__ import annotations

import numpy as np

from .decode import Detections, iou_matrix

IOU = 0.5


def _kept(ref: Detections, min_score: float) -> np.ndarray:
    return np.flatnonzero(ref.scores >= min_score)


def match(ref: Detections, art: Detections, iou_threshold: float = IOU,
          min_score: float = 0.0) -> list[tuple[int, int, float]]:
    """Pairs (reference index, artifact index, IoU) of same-class boxes with IoU >= threshold,
    for the reference detections scored >= ``min_score``."""
    if not len(ref) or not len(art):
        return []
    iou = iou_matrix(ref.boxes, art.boxes)
    iou[ref.classes[:, None] != art.classes[None, :]] = -1.0
    taken = np.zeros(len(art), bool)
    pairs = []
    order = np.argsort(-ref.scores, kind="stable")
    for i in order[ref.scores[order] >= min_score]:
        cand = np.where(taken, -1.0, iou[i])
        j = int(cand.argmax())
        if cand[j] >= iou_threshold:
            taken[j] = True
            pairs.append((int(i), j, float(iou[i, j])))
    return pairs


def box_recall(refs: list[Detections], arts: list[Detections], iou_threshold: float = IOU,
               min_score: float = 0.0, empty: float | None = 1.0) -> float | None:
    """Share of the reference's detections (all images, scored >= ``min_score``) that the
    artifact reproduces; ``empty`` when the reference has none (a row passes None: not judged)."""
    total = sum(len(_kept(r, min_score)) for r in refs)
    if total == 0:
        return empty
    return sum(len(match(r, a, iou_threshold, min_score)) for r, a in zip(refs, arts, strict=True)) / total


def matched_iou(refs: list[Detections], arts: list[Detections], iou_threshold: float = IOU,
                min_score: float = 0.0) -> float | None:
    """Mean IoU of matched pairs; None when nothing matched."""
    ious = [p[2] for r, a in zip(refs, arts, strict=True) for p in match(r, a, iou_threshold, min_score)]
    return float(np.mean(ious)) if ious else None


def score_max_abs(refs: list[Detections], arts: list[Detections], iou_threshold: float = IOU,
                  min_score: float = 0.0) -> float:
    """Largest |reference score - artifact score| over matched pairs (0.0 when none)."""
    gaps = [abs(float(r.scores[i]) - float(a.scores[j]))
            for r, a in zip(refs, arts, strict=True) for i, j, _ in match(r, a, iou_threshold, min_score)]
    return max(gaps, default=0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP: the area under the precision envelope (precision made
    monotonically non-increasing from the right), summed where recall changes."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def ap_per_class(dets: list[Detections], gts: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
                 iou_threshold: float = IOU) -> dict[int, float]:
    """VOC AP of every class that has labelled boxes. ``gts`` holds (boxes (k, 4), classes (k,))
    per image. A detection is a true positive when its highest-IoU labelled box of its class has
    IoU >= threshold and was not claimed by a better-scored detection (else a false positive)."""
    out = {}
    for c in range(num_classes):
        n_gt = sum(int((g[1] == c).sum()) for g in gts)
        if n_gt == 0:
            continue
        scores, tps = [], []
        for d, (gb, gc) in zip(dets, gts, strict=True):
            mine = d.classes == c
            if not mine.any():
                continue
            boxes, sc = d.boxes[mine], d.scores[mine]
            gboxes = gb[gc == c]
            claimed = np.zeros(len(gboxes), bool)
            iou = iou_matrix(boxes, gboxes) if len(gboxes) else np.zeros((len(boxes), 0))
            for k in np.argsort(-sc, kind="stable"):
                tp = False
                if iou.shape[1]:
                    j = int(iou[k].argmax())
                    if iou[k, j] >= iou_threshold and not claimed[j]:
                        claimed[j] = tp = True
                scores.append(float(sc[k]))
                tps.append(tp)
        if not scores:
            out[c] = 0.0
            continue
        order = np.argsort(-np.asarray(scores), kind="stable")
        tp = np.asarray(tps, float)[order]
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        out[c] = average_precision(ctp / n_gt, ctp / (ctp + cfp))
    return out


def map50(dets: list[Detections], gts: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> float:
    """Mean VOC AP at IoU 0.5 over the classes with labelled boxes (0.0 when none has any)."""
    aps = ap_per_class(dets, gts, num_classes, IOU)
    return float(np.mean(list(aps.values()))) if aps else 0.0
