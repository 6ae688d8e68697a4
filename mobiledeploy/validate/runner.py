"""Run every artifact of a bundle on the same real inputs and judge it against the reference.

Collect everything first, then judge once. A runtime that cannot run here is "skipped" with
its reason, never "pass"; a changed or missing artifact fails, naming the file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import __version__
from .._quiet import native_quiet
from ..bundle import load_manifest, write_bytes_atomic, write_json_atomic
from ..errors import MissingDependencyError, UserError, ValidationFailed
from ..targets import KERAS_ROW, keras_tolerance
from ..tolerance import Tolerance, failures, judge
from ..trust import check_paths, verify_reference
from .rows import REFERENCE_ROW
from .rows import row as _row

STATE_LOG = ".mobiledeploy/logs/validate.log"  # native library output during validation


def bundle_definition(bundle: Path):
    from ..definition import load_definition

    path = Path(bundle) / "model" / "definition.yaml"
    if not path.is_file():
        raise UserError(f"{path}: missing; rerun mobiledeploy build")
    return load_definition(path, check_files=False)


def _torch_logits(model, x: np.ndarray):
    """The reference's output on ``x``, in batches: one array, or a tuple of arrays for a model
    with several outputs (a detector's two heads)."""
    import torch

    with torch.no_grad():
        parts = [model(torch.from_numpy(x[i:i + 32])) for i in range(0, len(x), 32)]
    if isinstance(parts[0], (tuple, list)):
        return tuple(np.concatenate([p[k].numpy() for p in parts]) for k in range(len(parts[0])))
    return np.concatenate([p.numpy() for p in parts])


def _finish(row: dict, ref: np.ndarray, out: np.ndarray, batch, ref_metrics, task=None, truth=None) -> dict:
    """Measure ``out`` against the reference and the truth, then judge the row once.

    ``ref_metrics`` is the reference row's metrics (its scores against the truth); classification
    callers may still pass the reference's top-1 accuracy alone (a float or None).
    """
    from ..tasks import DEFAULT_TASK, get_task

    task = task or get_task(DEFAULT_TASK)
    if truth is None and task.labels_are_truth:
        truth = batch.labels
    if not isinstance(ref_metrics, dict):
        ref_metrics = {"top1_accuracy": ref_metrics}
    row["metrics"] = task.metrics(ref, out, truth, ref_metrics)
    row.update(task.per_sample(ref, out, batch, truth))
    row["checks"] = judge(row["metrics"], row["tolerance"])  # the verdict per metric, computed once
    bad = failures(row["checks"])
    row["status"] = "fail" if bad else "pass"
    row["reason"] = "; ".join(bad)
    return row


# images the per-layer gain check runs through the artifact's intermediates: on the demo a healthy
# int8 file's largest gain step measures 3.4% on 8 images (a few images clip differently) and 1.3%
# on 32, so fewer than 32 images cannot tell a 5% fault from a healthy file: not measured then
LAYER_SAMPLES = 32


def _judge_layers(row: dict, path: Path, art: dict, d, torch_model, batch) -> None:
    """The per-layer gain check (``max_layer_gain_step``): run the artifact's intermediates on a few
    images beside the reference's, store the largest gain step as a metric, judge the row again.
    A runtime without intermediates leaves the metric unmeasured (no check, said in the row)."""
    from .localize import localize_artifact

    if len(batch) < LAYER_SAMPLES:
        row["layer_check"] = (f"not measured: {len(batch)} validation images, the per-layer gain needs "
                              f">= {LAYER_SAMPLES}")
        return
    loc = localize_artifact(path, art, row["tolerance"], d, torch_model, batch, samples=LAYER_SAMPLES)
    step = loc.get("largest_gain_step")
    if step is None:
        row["layer_check"] = f"not measured: {loc.get('error') or 'no two matched layers'}"
        return
    row["metrics"]["layer_gain_step"] = step["step"]
    row["layer_check"] = f"largest gain step {step['step']:.4g} at {step['layer']} (after {step['from_layer']})"
    row["checks"] = judge(row["metrics"], row["tolerance"])
    bad = failures(row["checks"])
    row["status"] = "fail" if bad else "pass"
    row["reason"] = "; ".join(bad)
    if bad:
        if step["step"] > row["tolerance"]["max_layer_gain_step"]:
            # int8 layers sit at 12-38 dB when healthy, so an SNR threshold names noise; the
            # gain step names where the scale fault sits
            loc["first_divergent_layer"] = step["layer"]
            loc["metric"], loc["value"] = "gain_step", step["step"]
        row["localization"] = loc


def validate_bundle(bundle: Path, *, manifest: dict | None = None, samples: int | None = None,
                    say=lambda m: None, json_path: Path | None = None, write: bool = True) -> dict:
    """Validate every artifact of a built bundle; writes report/validation.json and index.html
    (unless ``write`` is False: a read-only bundle is validated without writing into it)."""
    bundle = Path(bundle)
    manifest = manifest or load_manifest(bundle)
    check_paths(bundle, manifest)  # nothing outside the bundle is ever read
    if not manifest["artifacts"] and not manifest.get("failed"):
        raise ValidationFailed(f"{bundle / 'manifest.json'}: lists no artifacts; nothing to judge is not a "
                               "pass: rerun mobiledeploy build")
    v = Validation(bundle, manifest["reference"], samples=samples, write=write)
    say(f"  reference-keras: {v.keras_row['status']} {v.keras_row['reason']}")
    rows = []
    for art in manifest["artifacts"]:
        rows.append(v.artifact_row(art))
        say(f"  {rows[-1]['target']}: {rows[-1]['status']} {rows[-1]['reason']}")
    report = v.finish(manifest, rows, json_path)
    for r in report["results"]:
        if r["target"].startswith("mediapipe:"):
            say(f"  {r['target']}: {r['status']} {r['reason']}")
    return report


class Validation:
    """One validation of a bundle in three parts, so that a build can judge each artifact as soon
    as it exists (``pipeline/early.py``) and ``validate`` all at once, with the same code:

    - construction: the reference side, which needs no artifact: the definition, the validation
      images and their truth, the PyTorch reference's outputs and the Keras twin's row;
    - ``artifact_row(art)``: one artifact, judged (with its per-layer check and localisation);
    - ``finish(manifest, rows)``: MediaPipe's rows, the failed conversions, the report (written).
    """

    def __init__(self, bundle: Path, reference: dict, *, samples: int | None = None, write: bool = True,
                 twin: Path | None = None):
        from ..architectures.reference import build_torch_reference
        from ..architectures.weights import read_weights
        from ..images import load_batch
        from ..tasks import get_task

        self.bundle, self.write = Path(bundle), write
        # a changed reference is a broken bundle, not bad artifacts
        verify_reference(self.bundle, {"reference": reference, "artifacts": []})
        self.reference, self.twin = reference, twin
        self.quiet_log = self.bundle / STATE_LOG if write else None
        d = self.d = bundle_definition(self.bundle)
        task = self.task = get_task(d)
        batch = self.batch = load_batch(d, "validation", limit=samples)
        self.truth = task.truth(d, "validation", batch)
        state = self.state = read_weights(self.bundle / reference["weights"])
        t0 = time.monotonic()
        with native_quiet(self.quiet_log):
            self.torch_model = build_torch_reference(d, state)
            self.ref = task.canonical(_torch_logits(self.torch_model, batch.x), "nchw")
        self.ref_metrics = task.reference_metrics(self.ref, self.truth)
        from .._deps import version

        self.reference_row = _row(REFERENCE_ROW, "pass", f"torch {version('torch')} (eager, float32)",
                                  metrics=self.ref_metrics, reason="the reference")
        self.reference_row["seconds"] = round(time.monotonic() - t0, 3)
        self._keras: dict | None = None

    @property
    def keras_row(self) -> dict:
        """The Keras twin's row, computed when first asked for: from the outputs a conversion
        worker already computed (``twin``, see ``keras_twin_outputs``) when that file exists, else
        here (which imports TensorFlow)."""
        if self._keras is None:
            self._keras = self._keras_row()
        return self._keras

    def waits_for_twin(self, art: dict) -> bool:
        """Is ``art`` built from the Keras twin, whose row still waits for a worker to write
        ``twin``? (Judging it now would compute the twin's outputs here.)"""
        return (self._keras is None and self.twin is not None and not Path(self.twin).exists()
                and _built_from(art) == "keras")

    def _keras_row(self) -> dict:
        """The twin must agree before any artifact built from it is judged."""
        from .._deps import version

        t0 = time.monotonic()
        d, batch, task, reference = self.d, self.batch, self.task, self.reference
        keras_model = None
        try:
            pred = _read_twin(self.twin) if self.twin is not None else None
            if pred is None:
                from ..architectures.reference import build_keras_reference

                with native_quiet(self.quiet_log):
                    keras_model = build_keras_reference(d, self.state)
                    pred = _keras_predict(keras_model, batch)
            out = task.canonical(pred, "nhwc")
            ktol = Tolerance(**reference["keras_tolerance"]) if "keras_tolerance" in reference \
                else keras_tolerance(d)
            row = _row(KERAS_ROW, "pass", f"keras {version('keras')} (TensorFlow "
                       f"{version('tensorflow-cpu') or version('tensorflow')})", tolerance=ktol.set_values())
            row = _finish(row, self.ref, out, batch, self.ref_metrics, task, self.truth)
            if row["status"] == "fail":
                from ..architectures.reference import build_keras_reference
                from .localize import localize_keras

                with native_quiet(self.quiet_log):
                    keras_model = keras_model or build_keras_reference(d, self.state)
                row["localization"] = localize_keras(keras_model, self.torch_model, batch, row["tolerance"])
        except MissingDependencyError as exc:
            row = _row(KERAS_ROW, "skipped", reason=str(exc))
        row["seconds"] = round(time.monotonic() - t0, 3)
        return row

    def client_rows(self, art: dict) -> list[dict]:
        """The rows of real clients that load this artifact (MediaPipe's Image Classifier on a
        classifier's .tflite, when its environment is installed)."""
        if self.task.name != "image-classification":  # MediaPipe's Image Classifier task only
            return []
        from ..backends.tflite.mediapipe import mediapipe_row

        row = mediapipe_row(self.bundle, art, self.batch, self.ref, self.ref_metrics.get("top1_accuracy"),
                            _finish, _row)
        return [row] if row is not None else []

    def artifact_row(self, art: dict) -> dict:
        """One artifact's row, judged."""
        t0 = time.monotonic()
        if _built_from(art) == "keras" and self.keras_row["status"] == "fail":
            # the twin the artifact was converted from disagrees with PyTorch: its numbers would
            # measure the twin's error, not the conversion's
            row = _row(art["target"], "skipped", path=art["path"],
                       reason=f"not judged: built from the Keras twin, which fails "
                              f"({self.keras_row['reason'] or 'reference-keras'})")
            row["seconds"] = 0.0
            return row
        d, batch = self.d, self.batch
        with native_quiet(self.quiet_log):
            row = _validate_artifact(self.bundle, art, d, batch, self.ref, self.ref_metrics, self.task, self.truth)
            if row["metrics"] and "max_layer_gain_step" in row["tolerance"]:
                _judge_layers(row, self.bundle / art["path"], art, d, self.torch_model, batch)
        if row["status"] == "fail" and row["metrics"] and "localization" not in row:
            from .localize import localize_artifact

            row["localization"] = localize_artifact(self.bundle / art["path"], art, row["tolerance"],
                                                    d, self.torch_model, batch)
        row["seconds"] = round(time.monotonic() - t0, 3)
        return row

    def finish(self, manifest: dict, rows: list[dict], json_path: Path | None = None,
               client_rows: list[dict] | None = None) -> dict:
        """The report of ``rows`` (one per artifact of ``manifest``, in its order) with the
        reference rows, the clients' (``client_rows``, computed here when None) and the failed
        conversions'; written unless ``write`` is off."""
        batch, task, ref, truth = self.batch, self.task, self.ref, self.truth
        if client_rows is None:
            client_rows = [r for art in manifest["artifacts"] for r in self.client_rows(art)]
        rows = [self.reference_row, self.keras_row, *rows, *client_rows]
        for f in manifest.get("failed", []):
            rows.append(_row(f["target"], "fail", reason=f"conversion failed: {f['reason']}"))

        # the reference is what everything is judged against, not a judged row: counts leave it out
        judged = [r for r in rows if r["status"] != "skipped" and r["target"] != REFERENCE_ROW]
        status = "fail" if any(r["status"] == "fail" for r in rows) else "pass"
        bundle = self.bundle
        report = {
            "name": manifest["name"],
            "reference": "pytorch",
            "samples": len(batch),
            "task": task.name,
            "labelled": task.labelled_count(truth, batch),
            "status": status,
            "passed": sum(r["status"] == "pass" for r in judged),
            "failed": sum(r["status"] == "fail" for r in rows),
            "skipped": sum(r["status"] == "skipped" for r in rows),
            "judged": len(judged),
            "mobiledeploy_version": __version__,
            "inputs": {"files": [Path(f).relative_to(bundle / "model").as_posix()
                                 if Path(f).is_relative_to(bundle / "model") else f for f in batch.files],
                       "labels": batch.labels},
            "results": rows,
        }
        report.update(task.report_reference(ref, self.ref_metrics))  # what the report's views draw
        if self.write:
            write_report(bundle, report, manifest, json_path)
        elif json_path:
            write_json_atomic(Path(json_path), report)
        return report


def _keras_predict(keras_model, batch):
    pred = keras_model.predict(batch.nhwc(), batch_size=32, verbose=0)
    return tuple(np.asarray(p) for p in pred) if isinstance(pred, (list, tuple)) else np.asarray(pred)


def keras_twin_outputs(bundle: Path, reference: dict, samples: int | None, path: Path) -> None:
    """Write the Keras twin's outputs on the validation images to ``path`` (.npz, atomically):
    what ``Validation`` would compute for its Keras row, computed where TensorFlow is already
    imported (a conversion worker), so that the validation process need not import it."""
    from ..architectures.reference import build_keras_reference
    from ..architectures.weights import read_weights
    from ..images import load_batch

    bundle = Path(bundle)
    verify_reference(bundle, {"reference": reference, "artifacts": []})
    d = bundle_definition(bundle)
    batch = load_batch(d, "validation", limit=samples)
    pred = _keras_predict(build_keras_reference(d, read_weights(bundle / reference["weights"])), batch)
    arrays = {f"out{i}": p for i, p in enumerate(pred if isinstance(pred, tuple) else (pred,))}
    tmp = Path(path).with_name(Path(path).name + ".tmp.npz")
    np.savez(tmp, tuple=np.array(isinstance(pred, tuple)), **arrays)
    tmp.replace(path)


def _read_twin(path: Path):
    """The outputs ``keras_twin_outputs`` wrote, or None when there are none (not written)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            outs = [z[f"out{i}"] for i in range(len(z.files) - 1)]
            return tuple(outs) if bool(z["tuple"]) else outs[0]
    except (OSError, KeyError, ValueError):
        return None


def _built_from(art: dict) -> str:
    from ..backends.registry import BACKENDS, backend_class

    if art.get("backend") not in BACKENDS:  # only registered names: a manifest names no code
        return "pytorch"
    return backend_class(art["backend"]).built_from


def _validate_artifact(bundle: Path, art: dict, d, batch, ref, ref_metrics, task, truth) -> dict:
    from ..backends.base import SkipRun
    from ..backends.registry import check, get_backend
    from ..targets import ResolvedTarget

    name = art["target"]
    try:
        target = ResolvedTarget.from_record(art)  # as built: options and limits resolved then
    except UserError as exc:
        return _row(name, "fail", reason=str(exc))
    from ..trust import artifact_problem

    path = bundle / art["path"]
    row = _row(name, "fail", tolerance=target.tolerance.set_values(), path=art["path"])
    problem = artifact_problem(bundle, art)  # confined to the bundle; artifact and extra files hashed
    if problem:
        row["reason"] = problem
        return row
    try:
        check(target.backend)
        runner = get_backend(target.backend).load(path, target, d)
    except MissingDependencyError as exc:
        row.update(status="skipped", reason=str(exc))
        return row
    except SkipRun as exc:
        row.update(status="skipped", reason=str(exc))
        return row
    except Exception as exc:  # a corrupt artifact: fail, naming the file
        row["reason"] = f"cannot load {art['path']}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return row
    row["executor"] = runner.executor
    try:
        out = task.canonical(runner.run(batch), getattr(runner, "layout", "nchw"))
    except SkipRun as exc:
        row.update(status="skipped", reason=str(exc))
        return row
    except Exception as exc:
        row["reason"] = f"running {art['path']} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return row
    if out.shape != ref.shape:
        row["reason"] = f"output shape {list(out.shape)} != reference {list(ref.shape)} ({art['path']})"
        return row
    return _finish(row, ref, out, batch, ref_metrics, task, truth)


def write_report(bundle: Path, report: dict, manifest: dict, json_path: Path | None = None) -> None:
    from .report import render_html

    write_json_atomic(bundle / "report" / "validation.json", report)
    if json_path:
        write_json_atomic(Path(json_path), report)
    write_bytes_atomic(bundle / "report" / "index.html", render_html(report, manifest).encode())


def failure_summary(report: dict) -> str:
    """One line naming each failing target with its metric, value and limit."""
    bad = [f"{r['target']}: {r['reason']}" for r in report["results"] if r["status"] == "fail"]
    return " | ".join(bad)
