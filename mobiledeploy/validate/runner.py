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
from .rows import REFERENCE_ROW
from .rows import row as _row

STATE_LOG = ".mobiledeploy/logs/validate.log"  # native library output during validation


def bundle_definition(bundle: Path):
    from ..definition import load_definition

    path = Path(bundle) / "model" / "definition.yaml"
    if not path.is_file():
        raise UserError(f"{path}: missing; rerun mobiledeploy build")
    return load_definition(path, check_files=False)


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + 32])).numpy() for i in range(0, len(x), 32)])


def _finish(row: dict, ref: np.ndarray, out: np.ndarray, batch, ref_metrics, task=None, truth=None) -> dict:
    """Measure ``out`` against the reference and the truth, then judge the row once.

    ``ref_metrics`` is the reference row's metrics (its scores against the truth); classification
    callers may still pass the reference's top-1 accuracy alone (a float or None).
    """
    from ..tasks import get_task

    task = task or get_task("image-classification")
    if truth is None and task.name == "image-classification":
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
    from ..architectures.reference import build_torch_reference
    from ..architectures.weights import read_weights
    from ..images import load_batch
    from ..trust import check_paths, verify_reference

    bundle = Path(bundle)
    manifest = manifest or load_manifest(bundle)
    check_paths(bundle, manifest)  # nothing outside the bundle is ever read
    verify_reference(bundle, manifest)  # a changed reference is a broken bundle, not bad artifacts
    if not manifest["artifacts"] and not manifest.get("failed"):
        raise ValidationFailed(f"{bundle / 'manifest.json'}: lists no artifacts; nothing to judge is not a "
                               "pass: rerun mobiledeploy build")
    from ..tasks import get_task

    d = bundle_definition(bundle)
    task = get_task(d)
    batch = load_batch(d, "validation", limit=samples)
    truth = task.truth(d, "validation", batch)
    state = read_weights(bundle / manifest["reference"]["weights"])
    t0 = time.monotonic()
    quiet_log = bundle / STATE_LOG if write else None
    with native_quiet(quiet_log):
        torch_model = build_torch_reference(d, state)
        ref = task.canonical(_torch_logits(torch_model, batch.x), "nchw")
    ref_metrics = task.reference_metrics(ref, truth)
    ref_acc = ref_metrics.get("top1_accuracy")
    from .._deps import version

    rows = [_row(REFERENCE_ROW, "pass", f"torch {version('torch')} (eager, float32)",
                 metrics=ref_metrics, reason="the reference")]
    rows[0]["seconds"] = round(time.monotonic() - t0, 3)

    # the twin must agree before any artifact is judged
    t0 = time.monotonic()
    try:
        from ..architectures.reference import build_keras_reference

        with native_quiet(quiet_log):
            keras_model = build_keras_reference(d, state)
            out = task.canonical(np.asarray(keras_model.predict(batch.nhwc(), batch_size=32, verbose=0)), "nhwc")
        ktol = Tolerance(**manifest["reference"]["keras_tolerance"]) if "keras_tolerance" in manifest.get(
            "reference", {}) else keras_tolerance(d)
        row = _row(KERAS_ROW, "pass", f"keras {version('keras')} (TensorFlow {version('tensorflow-cpu') or version('tensorflow')})",
                   tolerance=ktol.set_values())
        rows.append(_finish(row, ref, out, batch, ref_metrics, task, truth))
        if rows[-1]["status"] == "fail":
            from .localize import localize_keras

            rows[-1]["localization"] = localize_keras(keras_model, torch_model, batch, row["tolerance"])
    except MissingDependencyError as exc:
        rows.append(_row(KERAS_ROW, "skipped", reason=str(exc)))
    rows[-1]["seconds"] = round(time.monotonic() - t0, 3)
    say(f"  reference-keras: {rows[-1]['status']} {rows[-1]['reason']}")

    keras_row = rows[-1]
    for art in manifest["artifacts"]:
        t0 = time.monotonic()
        if keras_row["status"] == "fail" and _built_from(art) == "keras":
            # the twin the artifact was converted from disagrees with PyTorch: its numbers would
            # measure the twin's error, not the conversion's
            rows.append(_row(art["target"], "skipped", path=art["path"],
                             reason=f"not judged: built from the Keras twin, which fails "
                                    f"({keras_row['reason'] or 'reference-keras'})"))
            rows[-1]["seconds"] = 0.0
            continue
        with native_quiet(quiet_log):
            rows.append(_validate_artifact(bundle, art, d, batch, ref, ref_metrics, task, truth))
            if rows[-1]["metrics"] and "max_layer_gain_step" in rows[-1]["tolerance"]:
                _judge_layers(rows[-1], bundle / art["path"], art, d, torch_model, batch)
        if rows[-1]["status"] == "fail" and rows[-1]["metrics"] and "localization" not in rows[-1]:
            from .localize import localize_artifact

            rows[-1]["localization"] = localize_artifact(bundle / art["path"], art, rows[-1]["tolerance"],
                                                         d, torch_model, batch)
        rows[-1]["seconds"] = round(time.monotonic() - t0, 3)
        r = rows[-1]
        say(f"  {r['target']}: {r['status']} {r['reason']}")
    # a real metadata client, when its environment is installed: MediaPipe reads the .tflite's metadata
    from .mediapipe import mediapipe_rows

    mp_rows = mediapipe_rows(bundle, manifest, d, batch, ref, ref_acc, _finish, _row) \
        if task.name == "image-classification" else []  # MediaPipe's Image Classifier task only
    for r in mp_rows:
        rows.append(r)
        say(f"  {r['target']}: {r['status']} {r['reason']}")
    for f in manifest.get("failed", []):
        rows.append(_row(f["target"], "fail", reason=f"conversion failed: {f['reason']}"))

    # the reference is what everything is judged against, not a judged row: counts leave it out
    judged = [r for r in rows if r["status"] != "skipped" and r["target"] != REFERENCE_ROW]
    status = "fail" if any(r["status"] == "fail" for r in rows) else "pass"
    report = {
        "name": manifest["name"],
        "reference": "pytorch",
        "samples": len(batch),
        "task": task.name,
        "labelled": (len(truth) if truth is not None else 0) if task.name != "image-classification"
        else sum(lab is not None for lab in batch.labels),
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
    if task.name == "image-classification":
        report["reference_top1"] = [int(v) for v in ref.argmax(1)]
    else:  # what the report's worst-image views draw: the reference's class ids per image
        report["reference_metrics"] = ref_metrics
    if write:
        write_report(bundle, report, manifest, json_path)
    elif json_path:
        write_json_atomic(Path(json_path), report)
    return report


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
