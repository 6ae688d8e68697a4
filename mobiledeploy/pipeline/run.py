"""`build`: reference -> artifacts (parallel, one process each) -> validation -> app -> manifest."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import __version__
from .._deps import version
from ..backends.registry import backend_class, check, get_backend
from ..bundle import (
    STATE_DIR,
    bundle_lock,
    check_output_folder,
    clean_stale,
    install,
    size_of,
    tmp_path,
    write_json_atomic,
)
from ..digests import FileDigests, using
from ..digests import file_sha as sha256_file
from ..digests import path_sha as sha256_path
from ..targets import ResolvedTarget, all_targets, keras_tolerance, resolve_targets
from .graph import Cache, Step, digest
from .sources import source_digest

# what the references and the validator run on: their versions are inputs of validation
REFERENCE_TOOLCHAIN = ("torch", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow")
# the definition's sections that do not shape an artifact (each is keyed where it matters)
_NOT_ARTIFACT = ("targets", "android", "tolerances", "target_options", "validation", "calibration")


@dataclass
class BuildOptions:
    out: Path
    targets: tuple[str, ...] = ()
    jobs: int = 1
    cache: bool = True
    quiet: bool = False
    wait: float = 0.0
    validate: bool = True
    app: bool = True
    samples: int | None = None
    force: bool = False  # build into an existing folder that is not a bundle


@dataclass
class BuildResult:
    manifest: dict
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    validation: dict | None = None
    explain: list[tuple[str, str, str]] = field(default_factory=list)  # step, ran|skipped, why


class BuildRecord:
    """The machine-readable record of one build: every step (ran, skipped or failed, why, seconds)
    and the wall time of each phase, written to OUT/.mobiledeploy/build.json (``make bench``
    reads it, not the progress lines)."""

    def __init__(self):
        self.t0 = self._last = time.monotonic()
        self.steps: list[dict] = []
        self.phases: dict[str, float] = {}

    def add(self, name: str, status: str, why: str, seconds: float, **extra) -> None:
        end = time.monotonic() - self.t0  # when it ended, from the build's start (critical path)
        self.steps.append({"step": name, "status": status, "why": why, "seconds": round(seconds, 3),
                           "start": round(max(0.0, end - seconds), 3), "end": round(end, 3), **extra})

    @contextlib.contextmanager
    def step(self, name: str):
        """Time a step run inline; the body sets ``status`` and ``why`` on the yielded dict."""
        rec = {"status": "ran", "why": ""}
        t0 = time.monotonic()
        try:
            yield rec
        finally:
            self.add(name, rec.pop("status"), rec.pop("why"), time.monotonic() - t0, **rec)

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self._last, 3)
        self._last = now

    def write(self, out: Path, total: float) -> None:
        write_json_atomic(out / STATE_DIR / "build.json", {
            "mobiledeploy_version": __version__, "seconds": round(total, 3), "phases": self.phases,
            "steps_ran": sum(st["status"] == "ran" for st in self.steps), "steps": self.steps})


class Reporter:
    """Progress lines on stderr (rich when a terminal), silent with --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg)


def _images_digest(d, which: str, truth: bool = True) -> str:
    """Contents of the images a definition uses (relative names, labels, sha256): never their
    absolute paths, so a moved project keeps its keys. ``truth``: with their masks and boxes
    (what validation judges); int8 calibration reads the pixels only, so its keys leave them out
    (an edited calibration mask rebuilt every int8 artifact for nothing)."""
    from ..images import select_images
    from ..tasks import get_task

    src = getattr(d, which)
    root = d.path(src.source)
    items = select_images(d, which)
    masks = (_mask_files(d, which, items) if truth else None) or [None] * len(items)
    return digest([(p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name, lab, sha256_file(p),
                    sha256_file(m) if m else None)
                   for (p, lab), m in zip(items, masks, strict=True)]
                  + ([get_task(d).truth_digest(d, which)] if truth else []))


def _mask_files(d, which: str, items) -> list[Path] | None:
    """The labelled mask of every selected image (segmentation), or None when the source names none."""
    src = getattr(d, which)
    if getattr(src, "masks", None) is None:
        return None
    from ..tasks.segmentation.masks import mask_path

    source, masks = d.confined(src.source, f"{which}.source"), d.confined(src.masks, f"{which}.masks")
    return [mask_path(p, source, masks) for p, _ in items]


def _resolved_definition(d, weights_name: str) -> dict:
    """The definition as the bundle keeps it: self-contained paths under model/."""
    data = d.model_dump(mode="json", exclude={"base_dir", "source_path"})
    data["weights"] = weights_name
    data["labels"] = "labels.txt"
    data["validation"] = {"source": "validation.txt", "max_images": None}
    if d.validation.masks is not None:  # copied beside the images: model/masks/validation/00003.png
        data["validation"]["masks"] = "masks"
    # calibration images stay with the project; as written (relative), never an absolute path
    data["calibration"] = {"source": d.calibration.source, "max_images": d.calibration.max_images}
    if d.calibration.masks is not None:
        data["calibration"]["masks"] = d.calibration.masks
    return data


def _toolchain(dists) -> dict[str, str]:
    return {dist: v for dist in dists if (v := version(dist))}


def build(definition_path: str, opts: BuildOptions) -> BuildResult:
    """Build the whole bundle for a definition into ``opts.out``.

    File digests (inputs, outputs, source files) are remembered in the bundle's state folder by
    (path, size, times, inode): a no-op rebuild stats files instead of hashing them. The record is
    read before the lock and written only by a build that held it.
    """
    from ..images import listings_remembered

    digests = FileDigests(Path(opts.out) / STATE_DIR / "digests.json")
    digests.locked = False
    try:
        with using(digests), listings_remembered():
            return _build(definition_path, opts, digests)
    finally:
        if digests.locked:
            with contextlib.suppress(OSError):
                digests.save()


def _build(definition_path: str, opts: BuildOptions, digests: FileDigests) -> BuildResult:
    from ..definition import load_definition
    from ..images import select_images

    say = Reporter(opts.quiet)
    d = load_definition(definition_path)
    targets = resolve_targets(d, opts.targets)
    if d.weights:  # weights that do not fit the architecture: refuse before writing anything
        from ..architectures.reference import check_weights_file

        check_weights_file(d)
    out = Path(opts.out)
    check_output_folder(out, opts.force)  # a user's folder is not a bundle: refused unless --force
    if opts.app:
        from ..app import check_output_dir

        check_output_dir(out / "android", opts.force)  # a hand-written android/ is not ours
    labels = d.labels_list()
    val_items = select_images(d, "validation")
    needs_calibration = any(t.precision == "int8" for t in targets)
    calib_digest = _images_digest(d, "calibration", truth=False) if needs_calibration else None
    for t in targets:  # the definition is sound; a missing extra is a user error before any write
        check(t.backend)

    out.mkdir(parents=True, exist_ok=True)
    result = BuildResult(manifest={})
    record = BuildRecord()
    with bundle_lock(out, opts.wait):
        digests.locked = True  # this build may write the bundle's state, digests included
        clean_stale(out, [t.artifact for t in all_targets().values()])
        manifest_path = out / "manifest.json"
        # the manifest goes only when the first new output is about to be written (a refusal
        # or a crash before that leaves a good bundle whole): see each `if not fresh` below
        cache = Cache(out, enabled=opts.cache)
        t_start = time.monotonic()
        labels_digest = digest(labels)
        weights_src = d.path(d.weights) if d.weights else None
        weights_name = f"{d.name}.safetensors"
        resolved = _resolved_definition(d, weights_name)
        shaping = digest({k: v for k, v in resolved.items() if k not in _NOT_ARTIFACT})
        # the task's module is loaded by name (tasks.TASKS), so no import walk reaches it: it is
        # an entry of every step's source key (it writes metadata text, bundles truth, judges rows)
        from ..tasks import task_module

        task_src = task_module(d)
        val_digest = _images_digest(d, "validation")

        # -- model/: canonical weights, labels, validation images, resolved definition
        model_step = Step("model", {
            "definition": digest(resolved),
            "weights": sha256_file(weights_src) if weights_src else f"seed:{d.seed}",
            "labels": labels_digest,
            "validation_images": val_digest,
            "source": source_digest("mobiledeploy.pipeline.run", "mobiledeploy.architectures.reference",
                                    task_src),
        }, outputs=["model"])
        with record.step(model_step.name) as rec:
            fresh, why = cache.check(model_step)
            rec.update(status="skipped" if fresh else "ran", why=why)
            result.explain.append(("model", rec["status"], why))
            if not fresh:
                manifest_path.unlink(missing_ok=True)  # the bundle changes: no manifest until whole
                _write_model_dir(out, d, weights_src, weights_name, labels, val_items)
                cache.record(model_step)
        weights_sha = sha256_file(out / "model" / weights_name)
        record.phase("model")

        # -- conversions: each key holds every input that can change the artifact's bytes
        steps: dict[str, tuple[Step, ResolvedTarget]] = {}
        for t in targets:
            rel = t.artifact_path(d.name)
            cls = backend_class(t.backend)
            inputs = {
                "definition": shaping,  # name, task, input, architecture, seed, metadata ...
                "labels": labels_digest,  # Core ML and the TFLite metadata embed the label text
                "weights": weights_sha,
                "target": digest({k: v for k, v in t.record().items() if k != "tolerance"}),
                "options": json.dumps(t.options_dict(), sort_keys=True),
                "toolchain": json.dumps(get_backend(t.backend).toolchain(), sort_keys=True),
                "source": source_digest("mobiledeploy.pipeline.worker", cls.__module__, task_src),
            }
            if t.precision == "int8":
                inputs["calibration"] = calib_digest
            steps[t.name] = (Step(f"convert:{t.name}", inputs, outputs=[rel]), t)
        todo = []
        for name, (step, t) in steps.items():
            fresh, why = cache.check(step)
            result.explain.append((step.name, "skipped" if fresh else "ran", why))
            if fresh:
                result.skipped.append(name)
                record.add(step.name, "skipped", why, 0.0)
            else:
                todo.append((step, t, why))
        reference = {"weights": f"model/{weights_name}", "weights_sha256": weights_sha,
                     # definition, labels, validation images: readers check it before use
                     "model_sha256": sha256_path(out / "model"),
                     "definition": "model/definition.yaml", "seeded_weights": d.weights is None,
                     "keras_tolerance": keras_tolerance(d).set_values()}
        early = twin_req = None
        records: dict[str, dict] = {}  # target -> its manifest record, computed once
        if todo:
            manifest_path.unlink(missing_ok=True)
            say(f"[bold]converting[/] {len(todo)} target(s) with {opts.jobs} job(s): "
                + ", ".join(t.name for _, t, _ in todo))
            if opts.validate and opts.jobs >= 2:
                # judge each artifact as soon as it exists, beside the remaining conversions
                from .early import EarlyValidation
                from .pool import worker_env

                twin = None
                if any(backend_class(t.backend).built_from == "keras" for _, t, _ in todo):
                    # the worker converting a TensorFlow target computes the twin's outputs
                    twin = out / STATE_DIR / "tmp" / f"keras-twin-{os.getpid()}.npz"
                    twin_req = {"path": str(twin), "bundle": str(out), "reference": reference,
                                "samples": opts.samples}
                early = EarlyValidation(out, reference, opts.samples, out / STATE_DIR / "logs",
                                        worker_env(opts.jobs), twin=twin)
                for name, (step, t) in steps.items():
                    if name in result.skipped:
                        early.artifact(records.setdefault(name, _artifact_record(out, step, t, cache)))

        def installed(name: str, art: dict) -> None:
            records[name] = art
            early.artifact(art)

        try:
            _run_conversions(out, d, todo, opts, cache, result, say, record,
                             on_installed=installed if early else None,
                             twin=twin_req if early is not None else None)
            record.phase("convert")

            # -- the manifest's artifact records: the resolved target, as built (once per build)
            artifacts = [records.get(name) or _artifact_record(out, step, t, cache)
                         for name, (step, t) in steps.items() if name not in result.failed]
            from ..tasks import get_task

            manifest = {
                "name": d.name,
                "definition_sha256": d.sha256(),
                "mobiledeploy_version": __version__,
                "reference": reference,
                "artifacts": artifacts,
                "failed": [{"target": k, "reason": v} for k, v in result.failed.items()],
                **get_task(d).manifest_facts(d),  # a detector: the one decoding spec
            }
            inputs_common = {"labels": labels_digest, "validation_images": val_digest, "definition": shaping,
                             "input": digest(d.input.model_dump(mode="json")),
                             "task_source": source_digest(task_src)}
            if opts.validate:
                result.validation = _validate_step(out, manifest, cache, opts, result, say, record,
                                                   inputs_common, early)
                manifest["validation"] = {"status": result.validation["status"],
                                          "report": "report/validation.json", "html": "report/index.html"}
        finally:
            if early is not None:
                early.cancel()  # a no-op once finished
        record.phase("validate")
        if opts.app:
            app = _app_step(out, d, manifest, cache, result, say, record, inputs_common)
            if app:
                manifest["android"] = app
        record.phase("app")
        write_json_atomic(manifest_path, manifest)  # last: the bundle is whole
        result.manifest = manifest
        record.phase("manifest")
        record.write(out, total=time.monotonic() - t_start)
        ran = sum(st["status"] == "ran" for st in record.steps)
        say(f"[bold]bundle[/] {out} written in {time.monotonic() - t_start:.1f}s "
            f"({ran} step(s) ran, {len(result.skipped)} target(s) up to date)")
    return result


def _write_model_dir(out: Path, d, weights_src, weights_name, labels, val_items) -> None:
    from ..architectures.reference import canonical_state, unused_weights
    from ..architectures.weights import save_weights
    from ..images import write_image_list

    final = out / "model"
    tmp = tmp_path(out, final)
    tmp.mkdir(parents=True)
    if weights_src and not unused_weights(d.architecture_spec()):
        shutil.copy2(weights_src, tmp / weights_name)
    else:  # seeded, or the file's tensors the head leaves out dropped: the canonical file is exact
        save_weights(canonical_state(d), tmp / weights_name,
                     metadata={} if weights_src else {"seeded": str(d.seed)})
    (tmp / "labels.txt").write_text("".join(f"{x}\n" for x in labels), encoding="utf-8")
    write_image_list(tmp, "validation", labels, val_items)  # labels are data, never folder names
    masks = _mask_files(d, "validation", val_items)
    if masks is not None:  # named as write_image_list names the images, so mask_path finds them
        (tmp / "masks" / "validation").mkdir(parents=True)
        for i, m in enumerate(masks):  # each one checked with the definition (masks.probe_masks)
            shutil.copyfile(m, tmp / "masks" / "validation" / f"{i:05d}.png")
    from ..tasks import get_task

    resolved = _resolved_definition(d, weights_name)
    # the task's labelled truth (detection: boxes) travels with the copied images
    resolved["validation"].update(get_task(d).bundle_truth(d, "validation", val_items, tmp))
    (tmp / "definition.yaml").write_text(
        "# resolved by mobiledeploy build from " + Path(d.source_path).name + "\n"
        + yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    install(tmp, final)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _artifact_record(out: Path, step: Step, t: ResolvedTarget, cache: Cache) -> dict:
    """An installed artifact's manifest record: the resolved target, as built."""
    rel = step.outputs[0]
    facts = cache.facts(step.name)
    cls = backend_class(t.backend)
    art = {
        **t.record(), "path": rel,
        "sha256": sha256_path(out / rel), "bytes": size_of(out / rel),
        "toolchain": json.loads(step.inputs["toolchain"]),
        "byte_stable": cls.byte_stable,
        "graph": get_backend(t.backend).graph(t).as_dict(),
        **({"content_sha256": facts["content_sha256"]} if "content_sha256" in facts else {}),
        "facts": {k: v for k, v in facts.items() if not k.startswith("_")},
    }
    for extra in facts.get("_extra_files", {}):
        if (out / extra).exists():
            art.setdefault("extra_files", []).append({"path": extra, "sha256": sha256_path(out / extra)})
    return art


def _run_conversions(out: Path, d, todo, opts: BuildOptions, cache: Cache, result: BuildResult, say,
                     record: BuildRecord, on_installed=None, twin: dict | None = None) -> None:
    """The conversions on ``--jobs`` long-lived workers grouped by framework family (pool.py);
    each artifact is installed (renamed into place) and recorded as soon as it is finished, and
    its record handed to ``on_installed(name, record)`` (early validation)."""
    from .pool import Job, Pool

    state = out / STATE_DIR
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    jobs = []
    for step, t, why in todo:
        final = out / step.outputs[0]
        tmp = tmp_path(out, final)
        work = tmp.with_name(tmp.name + ".work")
        work.mkdir(parents=True, exist_ok=True)
        req = {"definition": d.source_path, "target": t.record(), "out": str(tmp), "workdir": str(work),
               "result": str(tmp) + ".result.json", "log": str(logs / f"{t.name}.log")}
        jobs.append(Job((step, t, tmp, work, why), t, req))

    twin_sent = []

    def started(job: Job) -> None:
        if twin and not twin_sent and backend_class(job.target.backend).built_from == "keras":
            # the first TensorFlow conversion computes the Keras twin's outputs for the
            # validation beside the conversions (early.py) before it converts
            job.req["twin"] = twin
            twin_sent.append(job)
        say(f"  [cyan]→[/] {job.target.name} …")

    def finished(done) -> None:
        step, t, tmp, work, why = done.job.key
        res, dt = done.result, done.seconds
        log = logs / f"{t.name}.log"
        if res is None:
            code = done.returncode
            why_failed = (f"converter process crashed ({_signal_name(code)})" if code is not None and code < 0
                          else f"converter process exited {code} without a result")
            result.failed[t.name] = f"{why_failed}; log: {log}"
        elif not res["ok"]:
            result.failed[t.name] = f"{res['error']} (log: {log})"
            (logs / f"{t.name}.traceback").write_text(res.get("traceback", ""))
        elif not tmp.exists():
            result.failed[t.name] = "converter reported success but wrote no artifact"
        extra_rec = {"worker": done.worker, "position": done.position,
                     "cpu_seconds": (res or {}).get("cpu_seconds")}
        if (res or {}).get("twin_seconds") is not None:  # of ``seconds``: the validation's Keras outputs
            extra_rec["twin_seconds"] = res["twin_seconds"]
        if t.name in result.failed:
            cache.forget(step.name)
            say(f"  [red]✗[/] {t.name} failed after {dt:.1f}s: {result.failed[t.name]}")
            record.add(step.name, "failed", why, dt, error=result.failed[t.name], **extra_rec)
            shutil.rmtree(work, ignore_errors=True)
            return
        facts = res["facts"]
        extra = facts.get("_extra_files", {})
        for rel, src in extra.items():
            install(Path(src), out / rel)
        install(tmp, out / step.outputs[0])
        shutil.rmtree(work, ignore_errors=True)
        outputs = {o: sha256_path(out / o) for o in step.outputs}
        outputs.update({rel: sha256_path(out / rel) for rel in extra})
        cache.record(step, outputs, facts)
        result.ran.append(t.name)
        record.add(step.name, "ran", why, dt, **extra_rec)
        say(f"  [green]✓[/] {t.name} in {dt:.1f}s ({size_of(out / step.outputs[0]) / 1e6:.2f} MB)")
        if on_installed is not None:
            on_installed(t.name, _artifact_record(out, step, t, cache))

    Pool(opts.jobs, logs).run(jobs, started, finished)


def _validate_step(out: Path, manifest: dict, cache: Cache, opts: BuildOptions, result: BuildResult, say,
                   record: BuildRecord, common: dict, early=None) -> dict:
    from ..backends.tflite.mediapipe import mediapipe_version

    runs = {a["backend"] for a in manifest["artifacts"]}
    step = Step("validate", {
        **common,
        "artifacts": digest([(a["target"], a["sha256"]) for a in manifest["artifacts"]]),
        "failed": digest(manifest["failed"]),
        "targets": digest([{k: a[k] for k in ("target", "backend", "precision", "options", "tolerance", "graph")}
                           for a in manifest["artifacts"]]),
        "keras_tolerance": digest(manifest["reference"]["keras_tolerance"]),
        "weights": manifest["reference"]["weights_sha256"],
        "samples": opts.samples,
        # a newly installed (or removed) MediaPipe adds (or drops) the mediapipe:<target> rows
        "mediapipe": mediapipe_version(),
        # the runtimes that run the artifacts and the references they are compared with
        "toolchain": json.dumps(_toolchain(REFERENCE_TOOLCHAIN) | {
            k: v for a in manifest["artifacts"] for k, v in a["toolchain"].items()}, sort_keys=True),
        # mediapipe_runner runs as a script in MediaPipe's venv: no import reaches it either
        "source": source_digest("mobiledeploy.validate.runner", "mobiledeploy.backends.tflite.mediapipe_runner",
                                "mobiledeploy.pipeline.early", *sorted(backend_class(b).__module__ for b in runs)),
    }, outputs=["report/validation.json", "report/index.html"])
    with record.step("validate") as rec:
        fresh, why = cache.check(step)
        rec.update(status="skipped" if fresh else "ran", why=why)
        result.explain.append(("validate", rec["status"], why))
        if fresh:
            if early is not None:
                early.cancel()
            return json.loads((out / "report" / "validation.json").read_text())
        (out / "manifest.json").unlink(missing_ok=True)  # the report changes: no manifest until whole
        say("[bold]validating[/] every artifact against the PyTorch reference on real images …")
        report = early.finish(manifest) if early is not None else None
        if report is not None:
            for r in report["results"][1:]:
                say(f"  {r['target']}: {r['status']} {r['reason']}")
            rec["early"] = sorted(early.sent)  # judged while conversions ran
        else:
            from ..validate.runner import validate_bundle  # imported only when validation runs

            report = validate_bundle(out, manifest=manifest, samples=opts.samples, say=say)
        cache.record(step)
    return report


def _app_step(out: Path, d, manifest: dict, cache: Cache, result: BuildResult, say, record: BuildRecord,
              common: dict) -> dict:
    report = out / "report" / "validation.json"
    step = Step("app", {
        **common,
        "artifacts": digest([(a["target"], a["sha256"]) for a in manifest["artifacts"]]),
        "android": digest(d.android.model_dump(mode="json")),
        "report": sha256_file(report) if report.is_file() else None,  # the app quotes its figures
        "templates": _templates_digest(),
        "source": source_digest("mobiledeploy.app"),
    }, outputs=["android"])
    from ..capabilities import serves_app, summary

    if not serves_app(d.task.value):  # no app family for this task: said once, nothing rendered
        record.add("app", "skipped", f"no app ({summary(d.task.value)})", 0.0)
        result.explain.append(("app", "skipped", f"no Android app serves {d.task.value}"))
        say(f"[bold]android[/] app: none for {d.task.value} (see mobiledeploy targets)")
        return {}
    with record.step("app") as rec:
        fresh, why = cache.check(step)
        rec.update(status="skipped" if fresh else "ran", why=why)
        result.explain.append(("app", rec["status"], why))
        if not fresh:
            (out / "manifest.json").unlink(missing_ok=True)
            from ..app import context_from_artifacts, render_android_app  # only when the app is rendered

            arts = {a["target"]: out / a["path"] for a in manifest["artifacts"]}
            ctx = context_from_artifacts(d, arts, bundle_dir=out)
            # checked before the build started (check_output_dir with --force): ours to write
            render_android_app(ctx, out / "android", force=True)
            cache.record(step, facts={"runtime": ctx.runtime, "model": ctx.model_target,
                                      "application_id": ctx.application_id})
            say(f"[bold]android[/] app generated in {out / 'android'} ({ctx.runtime}, {ctx.model_target})")
    return {"path": "android", **cache.facts("app")}


def _templates_digest() -> str:
    from ..resources import resource_dir

    root = resource_dir("templates") / "android"
    if not root.is_dir():
        return "none"
    return digest([(p.relative_to(root).as_posix(), sha256_file(p)) for p in sorted(root.rglob("*")) if p.is_file()])
