"""Segmentation comparators: small functions over logits and class-id masks.

Logits are (N, classes, H, W) by default (``axis=1``); pass ``axis=-1`` for NHWC. Masks are
(N, H, W) integer class ids; ``IGNORE`` (255) pixels are left out of the labelled scores.

Mean IoU follows the usual dataset convention (PASCAL VOC, Cityscapes): one confusion matrix
accumulated over every pixel of every image, IoU_c = TP_c / (TP_c + FP_c + FN_c), averaged over
the classes that occur in the target or the prediction (a class absent from both is not scored).
"""

from __future__ import annotations

import numpy as np

from .masks import IGNORE


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, classes) pixel counts: row = target class, column = predicted class."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = target != IGNORE
    idx = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of every class from a confusion matrix; NaN where the class occurs nowhere."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean IoU of predicted class ids against target class ids (see the module docstring)."""
    ious = iou_per_class(confusion(pred, target, num_classes))
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Share of scored (non-IGNORE) pixels whose predicted class is the target class."""
    pred, target = np.asarray(pred), np.asarray(target)
    keep = target != IGNORE
    return float((pred[keep] == target[keep]).mean()) if keep.any() else float("nan")


def per_image_agreement(logits: np.ndarray, reference: np.ndarray, axis: int = 1) -> np.ndarray:
    """(N,) share of pixels of each image whose argmax equals the reference's (worst-image ranking)."""
    same = np.asarray(logits).argmax(axis) == np.asarray(reference).argmax(axis)
    return same.reshape(len(same), -1).mean(1)


def pixel_agreement(logits: np.ndarray, reference: np.ndarray, axis: int = 1) -> float:
    """Share of all pixels whose argmax class equals the reference's argmax class."""
    return float(per_image_agreement(logits, reference, axis).mean())


def segmentation_metrics(
    logits: np.ndarray, reference: np.ndarray, masks: np.ndarray | None = None, axis: int = 1
) -> dict[str, float]:
    """The segmentation row of a validation table for one artifact's logits.

    ``pixel_agreement`` and ``miou_vs_reference`` compare with the reference's argmax;
    ``miou`` and ``pixel_accuracy`` (only with ``masks``) compare with the labelled masks.
    """
    num_classes = np.asarray(logits).shape[axis]
    pred, ref = np.asarray(logits).argmax(axis), np.asarray(reference).argmax(axis)
    out = {
        "pixel_agreement": float((pred == ref).mean()),
        "miou_vs_reference": mean_iou(pred, ref, num_classes),
    }
    if masks is not None:
        out["miou"] = mean_iou(pred, masks, num_classes)
        out["pixel_accuracy"] = pixel_accuracy(pred, masks)
    return out
