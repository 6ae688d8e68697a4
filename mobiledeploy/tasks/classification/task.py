"""Image classification: logits (N, classes); top-1 agreement with the reference, top-1 accuracy."""

from __future__ import annotations

import numpy as np

from ..base import Task


class Classification(Task):
    name = "image-classification"
    output_names = ("logits",)
    app_family = "classifier"
    title = "classification"

    def report_reference(self, ref, ref_metrics):
        return {"reference_top1": [int(v) for v in ref.argmax(1)]}

    def reference_metrics(self, ref, truth):
        from ...validate import metrics as M

        return {"top1_accuracy": M.top1_accuracy(ref, truth)}

    def metrics(self, ref, out, truth, ref_metrics):
        from ...validate import metrics as M

        m = M.compare(ref, out, truth)
        ref_acc = ref_metrics.get("top1_accuracy")
        if ref_acc is not None and m.get("top1_accuracy") is not None:
            m["accuracy_drop"] = ref_acc - m["top1_accuracy"]
        return m

    def per_sample(self, ref, out, batch=None, truth=None):
        extra = super().per_sample(ref, out)
        extra["top1"] = [int(v) for v in np.asarray(out).argmax(1)]  # what a client of this row answers
        return extra
