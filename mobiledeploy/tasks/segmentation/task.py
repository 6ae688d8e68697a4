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
        a = np.asarray(out, dtype=np.float32)
        if a.ndim != 4:
            raise ValueError(f"a segmentation output has 4 dimensions (N, C, H, W), not shape {list(a.shape)}")
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if layout == "nhwc" else a

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
        m = super().metrics(ref, out, truth, ref_metrics)
        m.update(segmentation_metrics(out, ref, truth))
        if ref_metrics.get("miou") is not None and m.get("miou") is not None:
            m["miou_drop"] = ref_metrics["miou"] - m["miou"]
        return m

    def per_sample(self, ref, out, batch=None, truth=None):
        from .metrics import per_image_agreement

        extra = super().per_sample(ref, out)
        agree = per_image_agreement(out, ref)
        extra["per_image_agreement"] = [float(v) for v in agree]
        if batch is not None:  # the worst images, drawn now while the outputs are at hand
            from .report import worst_images

            extra["worst_images"] = worst_images(agree, ref.argmax(1), out.argmax(1), batch, truth,
                                                 ref.shape[1])
        return extra

    def report_section(self, report, manifest):
        from .report import worst_images_section

        return worst_images_section(report)
