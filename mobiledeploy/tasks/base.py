"""The task contract: what differs between image classification, segmentation and detection.

Canonical output layouts (what the PyTorch reference returns and every comparator reads):
classification ``(N, classes)``; segmentation ``(N, classes, H, W)`` logits. A runner returns its
runtime's output and says its layout (``Runner.layout``: ``"nchw"`` or ``"nhwc"``, i.e. channels
first as PyTorch or channels last as TensorFlow); ``Task.canonical`` maps it to the canonical one.
A task with several outputs (detection) overrides ``canonical``/``metrics`` for what its runners
return; the validator only passes values through (``validate/runner.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..tolerance import Tolerance


class Task:
    """One task. Subclasses override what differs; defaults are the raw-output comparisons."""

    #: the definition's ``task:`` value
    name: ClassVar[str] = ""
    #: names of the model's outputs, in order (artifact metadata, the app, localisation)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    #: what the output holds, for converters that name and describe it: "scores" (a vector in the
    #: labels' order), "dense" (per-pixel scores in the labels' order), "heads" (a detector's raw
    #: heads) or "vector" (a feature vector whose axis is not the labels)
    output_kind: ClassVar[str] = "scores"
    #: the Android template family (``templates/android/<family>``-specific files) and labels
    app_family: ClassVar[str] = "classifier"
    #: one score vector per image: converters may add their classifier heads and metadata
    #: (Core ML's ClassifierConfig); dense tasks keep raw outputs only
    is_classifier: ClassVar[bool] = True
    #: the summary columns (metric key, heading) of the report and the build's table
    summary: ClassVar[tuple[tuple[str, str], ...]] = (
        ("max_abs", "max_abs"), ("snr_db", "SNR dB"), ("top1_agreement", "top-1 agree"),
        ("top1_accuracy", "top-1 acc"))
    #: precision -> limits this task adds over the backend's defaults (a profile and the
    #: definition still override them key by key)
    tolerances: ClassVar[dict[str, Tolerance]] = {}
    #: the Keras twin's limits for this task (over the built-in ones)
    keras_tolerance: ClassVar[Tolerance] = Tolerance()
    #: the definition's ``architecture.<head_field>`` section configuring this task's head (None:
    #: the task takes no head options); its schema is ``head_section()``
    head_field: ClassVar[str | None] = None
    #: the head replaces the pooled classifier (``architecture.head`` is then refused), and its name
    replaces_classifier_head: ClassVar[bool] = False
    head_title: ClassVar[str] = ""
    #: fields of the calibration/validation sources that hold this task's truth files
    truth_fields: ClassVar[tuple[str, ...]] = ()
    #: a row's truth is its images' labels (sub-folder names or list-file labels)
    labels_are_truth: ClassVar[bool] = True
    #: (quality against the labels, agreement with the reference): the row's metric keys a sweep
    #: ranks variants by
    quality_keys: ClassVar[tuple[str, str]] = ("top1_accuracy", "top1_agreement")
    #: the app runtimes whose generated app serves this task (None: every one; empty: no app)
    app_runtimes: ClassVar[tuple[str, ...] | None] = None
    #: how the task is named in tables and messages
    title: ClassVar[str] = ""

    # ---- definition ------------------------------------------------------------------------
    def head_section(self):
        """The pydantic model of ``architecture.<head_field>`` (None without a head section)."""
        return None

    def check_definition(self, definition) -> None:
        """Raise ValueError (one line, naming the field) for what this task refuses in a definition
        that the schema alone allows."""

    def check_truth_files(self, definition, field: str, images: list) -> None:
        """Check the truth files ``field`` (calibration/validation) names for ``images`` before
        anything is built (a one-line DefinitionError naming the file); nothing by default."""

    def spec_options(self, section) -> dict[str, Any]:
        """Keyword arguments for ``architectures.spec.preset``/``resolve`` from the head section
        (None when the definition has none: the task's defaults)."""
        return {}

    # ---- outputs -------------------------------------------------------------------------
    def output_shape(self, spec) -> tuple[int, ...]:
        """Canonical per-sample output shape of a model with architecture ``spec``."""
        return (spec.num_classes,)

    def canonical(self, out: np.ndarray, layout: str = "nchw") -> np.ndarray:
        """A runtime's output (N, ...) in ``layout`` as the canonical float32 array."""
        return np.asarray(out, dtype=np.float32).reshape(len(out), -1)

    def output_description(self, num_classes: int, label_file: str) -> str:
        """What the output tensor holds, for artifact metadata."""
        return (f"unnormalised class scores (logits, {num_classes} classes; softmax gives "
                f"probabilities), in the order of {label_file}")

    # ---- judging ---------------------------------------------------------------------------
    def truth(self, definition, which: str, batch) -> Any:
        """The labelled truth of ``batch`` (images of the definition's ``which`` source), or None."""
        return batch.labels

    def reference_metrics(self, ref: np.ndarray, truth) -> dict[str, float | None]:
        """The reference row's metrics (its scores against labelled truth)."""
        return {}

    def metrics(self, ref: np.ndarray, out: np.ndarray, truth, ref_metrics: dict) -> dict[str, float | None]:
        """Every comparator of ``out`` against the reference ``ref`` and the truth."""
        from ..validate import metrics as M

        return M.raw(ref, out)

    def per_sample(self, ref: np.ndarray, out: np.ndarray, batch=None, truth=None) -> dict[str, Any]:
        """Per-image facts stored in the row (the report ranks and shows images from them)."""
        diff = np.abs(ref - out).reshape(len(ref), -1)
        return {"per_sample_max_abs": [float(v) for v in diff.max(1)]}

    def sidecar_outputs(self, definition) -> dict[str, Any]:
        """The ExecuTorch sidecar's description of the outputs (an app reads it beside the .pte)."""
        shape = [1, *self.output_shape(definition.architecture_spec())]
        return {"output": {"name": self.output_names[0], "dtype": "float32", "shape": shape,
                           "meaning": self.output_description(definition.num_classes, "the labels")},
                **self.manifest_facts(definition)}

    def manifest_facts(self, definition) -> dict[str, Any]:
        """What the manifest (and the ExecuTorch sidecar) records for this task beside the
        artifacts, e.g. a detector's decoding spec; empty by default."""
        return {}

    def truth_digest(self, definition, which: str) -> str | None:
        """A digest of the labelled truth beside the images of ``which`` (part of the build's
        keys), or None when the task keeps its truth in the images' labels."""
        return None

    def bundle_truth(self, definition, which: str, items: list, folder) -> dict[str, Any]:
        """Copy the labelled truth of ``items`` (the images copied into the bundle as
        ``which/00000.ext`` ... in this order) into ``folder`` (the bundle's ``model/``); returns the
        keys the bundle's definition adds to its ``which`` source."""
        return {}

    #: metrics of the shared limits (``Tolerance``'s own fields) this task's rows never have: a
    #: backend's default limits on them are dropped, as are limits other tasks registered
    unmeasured: ClassVar[frozenset[str]] = frozenset()

    def labelled_count(self, truth, batch) -> int:
        """How many validation images carry labelled truth."""
        if self.labels_are_truth:
            return sum(lab is not None for lab in batch.labels)
        return len(truth) if truth is not None else 0

    def report_reference(self, ref, ref_metrics: dict) -> dict[str, Any]:
        """What the report keeps of the reference's outputs (the views it draws read them)."""
        return {"reference_metrics": ref_metrics}

    def tolerance(self, precision: str) -> Tolerance:
        """This task's limits for ``precision`` (laid over the backend's defaults)."""
        return self.tolerances.get(precision, Tolerance())

    def backend_defaults(self, tolerance: Tolerance) -> Tolerance:
        """A backend's default limits without those on metrics this task never measures (a
        classifier's top-1 limits mean nothing to a mask). Profiles and definitions are kept."""
        from ..tolerance import LIMITS, OWNER

        return Tolerance(**{k: v for k, v in tolerance.set_values().items()
                            if OWNER.get(k, self.name) == self.name and LIMITS[k][0] not in self.unmeasured})

    def box_decoding(self, definition) -> tuple[dict, Any] | None:
        """(decoding spec, anchors (A, 4) [yc, xc, h, w]) for a task whose boxes are decoded from its
        heads (a converter may put the decoding in the graph, e.g. Core ML's Vision pipeline), else None."""
        return None

    # ---- real clients ----------------------------------------------------------------------
    def mediapipe_client(self, definition) -> dict[str, Any] | None:
        """The MediaPipe Tasks vision task that consumes this task's .tflite files, as
        ``{"task": class name, "method": per-image method, "options": <task>Options keywords}``
        (``backends/tflite/mediapipe.py`` runs it), or None when there is none (no ``mediapipe:`` rows)."""
        return None

    def mediapipe_judge(self, row: dict, answer: dict, ctx) -> dict:
        """``row`` (a ``mediapipe:<target>`` row with its tolerance) judged from the MediaPipe
        runner's ``answer`` ({"executor", "labels", "results": one generic result per image}) and
        ``ctx`` (``backends.base.ClientContext``); ``mark`` judges it once."""
        raise NotImplementedError(f"{self.name} has no MediaPipe client")

    # ---- report --------------------------------------------------------------------------
    def report_section(self, report: dict, manifest: dict) -> str:
        """Task-specific HTML (safe markup) placed after the results table, built from the
        report alone (rows carry what it shows); empty when the generic table says it all."""
        return ""


def mark(row: dict) -> dict:
    """Judge ``row``'s metrics against its tolerance once: checks, status, reason."""
    from ..tolerance import failures, judge

    row["checks"] = judge(row["metrics"], row["tolerance"])
    bad = failures(row["checks"])
    row["status"] = "fail" if bad else "pass"
    row["reason"] = "; ".join(bad)
    return row
