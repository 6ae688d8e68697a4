"""Semantic segmentation: per-pixel logits (N, classes, H, W) at the input size.

Judged per pixel: ``pixel_agreement`` (argmax vs the reference's argmax), ``miou_vs_reference``,
and against labelled masks ``miou`` / ``pixel_accuracy`` with ``miou_drop`` (the reference's mIoU
minus the artifact's). The raw logits are still compared (max_abs, mean_abs, cosine, snr_db).
Default limits are the issue's: float artifacts agree on >= 99.9% of pixels, int8 on >= 97%,
and no artifact loses more than 2 mIoU points against the labels.
"""

from __future__ import annotations

import numpy as np

from ...tolerance import Tolerance, register_limit
from ..base import Task

NAME = "semantic-segmentation"

register_limit(NAME, "min_pixel_agreement", "pixel_agreement", "min", 0, 1)
register_limit(NAME, "min_miou_vs_reference", "miou_vs_reference", "min", 0, 1)
register_limit(NAME, "max_miou_drop", "miou_drop", "max", 0, 1)

# max_abs: a dense output has classes x H x W logits per image (180k here, against 10 for the
# shapes classifier), and the largest of that many float32 rounding differences is ~1e-4 on its
# own (XNNPACK and LiteRT fp32 reached 1.26e-4 at SNR 122 dB): the limit scales with the count
FLOAT = Tolerance(max_abs=1e-3, min_pixel_agreement=0.999, max_miou_drop=0.02)
HALF = Tolerance(min_pixel_agreement=0.999, max_miou_drop=0.02)
INT8 = Tolerance(min_pixel_agreement=0.97, max_miou_drop=0.02)


class SegOutput(np.ndarray):
    """Canonical logits carrying the runtime's own class index map (N, H, W), when the artifact
    outputs one (Core ML's ``class_map`` option)."""

    class_map: np.ndarray | None = None


class Segmentation(Task):
    name = NAME
    output_names = ("logits",)
    app_family = "segmenter"
    is_classifier = False
    summary = (("max_abs", "max_abs"), ("snr_db", "SNR dB"), ("pixel_agreement", "pixel agree"),
               ("miou", "mIoU"))
    tolerances = {"fp32": FLOAT, "fp16": HALF, "int8": INT8}
    keras_tolerance = Tolerance(min_pixel_agreement=0.999)
    unmeasured = frozenset({"top1_agreement", "top5_agreement", "accuracy_drop"})
    title = "segmentation"
    output_kind = "dense"
    head_field = "segmentation"
    head_title = "LR-ASPP head"
    replaces_classifier_head = True
    truth_fields = ("masks",)
    labels_are_truth = False
    quality_keys = ("miou", "pixel_agreement")

    def truth_digest(self, definition, which):
        """The masks of the selected images, by content (a build's keys hold them)."""
        import hashlib

        from ...digests import file_sha
        from ...images import select_images

        files = mask_files(definition, which, select_images(definition, which))
        if files is None:
            return None
        return hashlib.sha256("\n".join(file_sha(m) for m in files).encode()).hexdigest()

    def bundle_truth(self, definition, which, items, folder):
        """Copy the masks of ``items`` beside the bundle's copies of the images, named as
        ``write_image_list`` names the images (``masks/<which>/00003.png``), so mask_path finds them."""
        import shutil
        from pathlib import Path

        files = mask_files(definition, which, items)
        if files is None:
            return {}
        dest = Path(folder) / "masks" / which
        dest.mkdir(parents=True)
        for i, m in enumerate(files):  # each one checked with the definition (masks.probe_masks)
            shutil.copyfile(m, dest / f"{i:05d}.png")
        return {"masks": "masks"}

    def check_truth_files(self, definition, field, images):
        from .masks import probe_masks

        probe_masks(definition, field, images)  # every mask decodes, at its image's size

    def head_section(self):
        from .section import SegmentationSection

        return SegmentationSection

    def spec_options(self, section):
        from .section import SegmentationSection

        return {"segmentation": (section or SegmentationSection()).options()}

    def output_shape(self, spec):
        return (spec.num_classes, *spec.resolution)

    def output_description(self, num_classes, label_file):
        return (f"per-pixel unnormalised class scores (logits, {num_classes} classes on the last axis, "
                f"at the input size; argmax gives the mask), in the order of {label_file}")

    def canonical(self, out, layout="nchw"):
        class_map = getattr(out, "class_map", None)
        a = np.asarray(out, dtype=np.float32)
        if a.ndim != 4:
            raise ValueError(f"a segmentation output has 4 dimensions (N, C, H, W), not shape {list(a.shape)}")
        a = np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if layout == "nhwc" else a
        if class_map is None:
            return a
        a = np.ascontiguousarray(a).view(SegOutput)
        a.class_map = class_map
        return a

    def truth(self, definition, which, batch):
        from .masks import load_masks

        return load_masks(definition, which, batch.files)

    def reference_metrics(self, ref, truth):
        from .metrics import mean_iou, pixel_accuracy

        if truth is None:
            return {}
        pred = ref.argmax(1)
        return {"miou": mean_iou(pred, truth, ref.shape[1]), "pixel_accuracy": pixel_accuracy(pred, truth)}

    def metrics(self, ref, out, truth, ref_metrics):
        from .metrics import segmentation_metrics

        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
        class_map = getattr(out, "class_map", None)
        out, ref = np.asarray(out), np.asarray(ref)
        m = super().metrics(ref, out, truth, ref_metrics)
        if class_map is not None:
            # the artifact's own class index map is what an app draws: judged per pixel, and
            # against the argmax of its own logits (an argmax on other values shows up here)
            m.update(class_map_metrics(class_map, ref, truth, ref_metrics))
            m["class_map_vs_logits"] = float((class_map == out.argmax(1)).mean())
            return m
        m.update(segmentation_metrics(out, ref, truth))
        if ref_metrics.get("miou") is not None and m.get("miou") is not None:
            m["miou_drop"] = ref_metrics["miou"] - m["miou"]
        return m

    def per_sample(self, ref, out, batch=None, truth=None):
        from .metrics import per_image_agreement

        class_map = getattr(out, "class_map", None)
        out, ref = np.asarray(out), np.asarray(ref)
        extra = super().per_sample(ref, out)
        agree = per_image_agreement(out, ref) if class_map is None else \
            (class_map == ref.argmax(1)).reshape(len(ref), -1).mean(1)
        extra["per_image_agreement"] = [float(v) for v in agree]
        if batch is not None:  # the worst images, drawn now while the outputs are at hand
            from .report import worst_images

            drawn = out.argmax(1) if class_map is None else class_map
            extra["worst_images"] = worst_images(agree, ref.argmax(1), drawn, batch, truth, ref.shape[1])
        return extra

    def report_section(self, report, manifest):
        from .report import worst_images_section

        return worst_images_section(report)

    def mediapipe_client(self, definition):
        return {"task": "ImageSegmenter", "method": "segment",
                "options": {"output_category_mask": True, "output_confidence_masks": False}}

    def mediapipe_judge(self, row, answer, ctx):
        """MediaPipe's category mask (the class index map an app draws, labels from the metadata)
        judged per pixel against the reference's argmax and the labelled masks."""
        masks = np.stack([np.asarray(r["category_mask"]).reshape(np.asarray(r["category_mask"]).shape[:2])
                          for r in answer["results"]])
        want = list(ctx.definition.labels_list())
        if answer.get("labels") is not None and list(answer["labels"]) != want:
            row["reason"] = (f"MediaPipe reads labels {answer['labels'][:4]}... from the metadata, the "
                             f"definition has {want[:4]}...")
            return row
        return judge_class_map(row, masks, ctx)


def class_map_metrics(pred: np.ndarray, ref: np.ndarray, truth, ref_metrics: dict) -> dict:
    """A class index map (N, H, W) against the reference's logits (N, C, H, W) and the labelled
    masks: pixel agreement, mIoU against the reference, mIoU / pixel accuracy / mIoU drop."""
    from .metrics import mean_iou, pixel_accuracy

    ids = ref.argmax(1)
    m = {"pixel_agreement": float((pred == ids).mean()), "miou_vs_reference": mean_iou(pred, ids, ref.shape[1])}
    if truth is not None:
        m["miou"] = mean_iou(pred, truth, ref.shape[1])
        m["pixel_accuracy"] = pixel_accuracy(pred, truth)
        if ref_metrics.get("miou") is not None:
            m["miou_drop"] = ref_metrics["miou"] - m["miou"]
    return m


def judge_class_map(row: dict, pred: np.ndarray, ctx) -> dict:
    """``row`` judged on a class index map ``pred`` (N, H, W) with its per-image agreement and
    worst images (the same views as a logits row)."""
    from ..base import mark
    from .report import worst_images

    ref = ctx.ref
    if pred.shape != (ref.shape[0], *ref.shape[2:]):
        row["reason"] = f"class map {list(pred.shape)}, the reference's {[ref.shape[0], *ref.shape[2:]]}"
        return row
    row["metrics"] = class_map_metrics(pred, ref, ctx.truth, ctx.ref_metrics)
    agree = (pred == ref.argmax(1)).reshape(len(pred), -1).mean(1)
    row["per_image_agreement"] = [float(v) for v in agree]
    row["worst_images"] = worst_images(agree, ref.argmax(1), pred, ctx.batch, ctx.truth, ref.shape[1])
    return mark(row)


def mask_files(definition, which: str, items) -> list | None:
    """The labelled mask of every selected image, or None when the source names no masks."""
    from .masks import mask_path

    src = getattr(definition, which)
    if getattr(src, "masks", None) is None:
        return None
    source = definition.confined(src.source, f"{which}.source")
    masks = definition.confined(src.masks, f"{which}.masks")
    return [mask_path(p, source, masks) for p, _ in items]
