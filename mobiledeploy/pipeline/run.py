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
from . import keys
from .graph import Cache, Step


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
    run = _Run.checked(definition_path, opts)  # every refusal before anything is written
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    with bundle_lock(out, opts.wait):
        digests.locked = True  # this build may write the bundle's state, digests included
        clean_stale(out, [t.artifact for t in all_targets().values()])
        run.cache = Cache(out, enabled=opts.cache)
        run.t_start = time.monotonic()
        try:
            for kind in keys.STEPS:  # model, convert, validate, app: each keys, skips or runs its steps
                getattr(run, kind.kind)(kind)
                run.record.phase(kind.kind)
        finally:
            if run.early is not None:
                run.early.cancel()  # a no-op once finished
        run.write_manifest()  # last: the bundle is whole
    return run.result


class _Run:
    """One build, phase by phase. Each phase builds its steps' keys from their declarations
    (``keys.py``), skips the fresh ones and runs the rest. The manifest goes when the first new
    output is about to be written (``changing``): a refusal or a crash before that leaves a good
    bundle whole."""

    def __init__(self, d, targets: list[ResolvedTarget], opts: BuildOptions, val_items, inputs: keys.BuildInputs):
        self.d, self.targets, self.opts, self.val_items, self.inputs = d, targets, opts, val_items, inputs
        self.out = Path(opts.out)
        self.say = Reporter(opts.quiet)
        self.result = BuildResult(manifest={})
        self.record = BuildRecord()
        self.cache: Cache | None = None
        self.t_start = time.monotonic()
        self.early = None  # validation beside the conversions (early.py), when it runs
        self.twin_req: dict | None = None
        self.steps: dict[str, tuple[Step, ResolvedTarget]] = {}  # target -> its conversion step
        self.records: dict[str, dict] = {}  # target -> its manifest record, computed once
        self.reference: dict = {}
        self.manifest: dict = {}

    @classmethod
    def checked(cls, definition_path: str, opts: BuildOptions) -> _Run:
        """The definition loaded and checked with everything the build reads before writing."""
        from ..definition import load_definition
        from ..images import select_images

        d = load_definition(definition_path)
        targets = resolve_targets(d, opts.targets)
        if d.weights:  # weights that do not fit the architecture: refuse before writing anything
            from ..architectures.reference import check_weights_file

            check_weights_file(d)
        check_output_folder(Path(opts.out), opts.force)  # a user's folder is not a bundle: refused unless --force
        if opts.app:
            from ..app import check_output_dir

            check_output_dir(Path(opts.out) / "android", opts.force)  # a hand-written android/ is not ours
        inputs = keys.BuildInputs(d)
        inputs.labels  # noqa: B018 (unreadable labels, images or calibration: refused here, not half-way)
        val_items = select_images(d, "validation")
        if any(t.precision == "int8" for t in targets):
            inputs.calibration_images  # noqa: B018
        for t in targets:  # the definition is sound; a missing extra is a user error before any write
            check(t.backend)
        return cls(d, targets, opts, val_items, inputs)

    def changing(self) -> None:
        """The bundle changes: no manifest until it is whole again."""
        (self.out / "manifest.json").unlink(missing_ok=True)

    def checked_step(self, step: Step, rec: dict) -> bool:
        """Whether ``step`` is fresh; its status and reason go to the record and --explain."""
        fresh, why = self.cache.check(step)
        rec.update(status="skipped" if fresh else "ran", why=why)
        self.result.explain.append((step.name, rec["status"], why))
        return fresh

    def model(self, kind: keys.ModelStep) -> None:
        """model/: canonical weights, labels, validation images, resolved definition."""
        d, inputs, out = self.d, self.inputs, self.out
        step = kind.step(inputs)
        with self.record.step(step.name) as rec:
            if not self.checked_step(step, rec):
                self.changing()
                weights_src = d.path(d.weights) if d.weights else None
                _write_model_dir(out, d, weights_src, inputs.weights_name, d.labels_list(), self.val_items)
                self.cache.record(step)
        weights_sha = sha256_file(out / "model" / inputs.weights_name)
        self.reference = {"weights": f"model/{inputs.weights_name}", "weights_sha256": weights_sha,
                          # definition, labels, validation images: readers check it before use
                          "model_sha256": sha256_path(out / "model"),
                          "definition": "model/definition.yaml", "seeded_weights": d.weights is None,
                          "keras_tolerance": keras_tolerance(d).set_values()}

    def convert(self, kind: keys.ConvertStep) -> None:
        """The artifacts: each key holds every input that can change its bytes."""
        result, weights_sha = self.result, self.reference["weights_sha256"]
        self.steps = {t.name: (kind.step(self.inputs, t, weights_sha), t) for t in self.targets}
        todo = []
        for name, (step, t) in self.steps.items():
            fresh, why = self.cache.check(step)
            result.explain.append((step.name, "skipped" if fresh else "ran", why))
            if fresh:
                result.skipped.append(name)
                self.record.add(step.name, "skipped", why, 0.0)
            else:
                todo.append((step, t, why))
        if todo:
            self.changing()
            self.say(f"[bold]converting[/] {len(todo)} target(s) with {self.opts.jobs} job(s): "
                     + ", ".join(t.name for _, t, _ in todo))
            if self.opts.validate and self.opts.jobs >= 2:
                self.start_early(todo)
        _run_conversions(self.out, self.d, todo, self.opts, self.cache, result, self.say, self.record,
                         on_installed=self.installed if self.early else None, twin=self.twin_req)
        self.manifest = self.new_manifest()

    def start_early(self, todo) -> None:
        """Judge each artifact as soon as it exists, beside the remaining conversions."""
        from .early import EarlyValidation
        from .pool import worker_env

        out, twin = self.out, None
        if any(backend_class(t.backend).built_from == "keras" for _, t, _ in todo):
            # the worker converting a TensorFlow target computes the twin's outputs
            twin = out / STATE_DIR / "tmp" / f"keras-twin-{os.getpid()}.npz"
            self.twin_req = {"path": str(twin), "bundle": str(out), "reference": self.reference,
                             "samples": self.opts.samples}
        self.early = EarlyValidation(out, self.reference, self.opts.samples, out / STATE_DIR / "logs",
                                     worker_env(self.opts.jobs), twin=twin)
        for name, (step, t) in self.steps.items():
            if name in self.result.skipped:
                self.early.artifact(self.records.setdefault(name, _artifact_record(out, step, t, self.cache)))

    def installed(self, name: str, art: dict) -> None:
        self.records[name] = art
        self.early.artifact(art)

    def new_manifest(self) -> dict:
        """The manifest's facts and artifact records (the resolved target, as built; once per build)."""
        from ..tasks import get_task

        d, result = self.d, self.result
        artifacts = [self.records.get(name) or _artifact_record(self.out, step, t, self.cache)
                     for name, (step, t) in self.steps.items() if name not in result.failed]
        return {
            "name": d.name,
            "definition_sha256": d.sha256(),
            "mobiledeploy_version": __version__,
            "reference": self.reference,
            "artifacts": artifacts,
            "failed": [{"target": k, "reason": v} for k, v in result.failed.items()],
            **get_task(d).manifest_facts(d),  # a detector: the one decoding spec
        }

    def validate(self, kind: keys.ValidateStep) -> None:
        """report/: every artifact judged against the references on real images."""
        if not self.opts.validate:
            return
        try:
            self.result.validation = self.validation(kind.step(self.inputs, self.manifest, self.opts.samples))
        finally:
            if self.early is not None:
                self.early.cancel()  # a no-op once finished
        self.manifest["validation"] = {"status": self.result.validation["status"],
                                       "report": "report/validation.json", "html": "report/index.html"}

    def validation(self, step: Step) -> dict:
        out, early, say = self.out, self.early, self.say
        with self.record.step(step.name) as rec:
            if self.checked_step(step, rec):
                return json.loads((out / "report" / "validation.json").read_text())
            self.changing()
            say("[bold]validating[/] every artifact against the PyTorch reference on real images …")
            report = early.finish(self.manifest) if early is not None else None
            if report is not None:
                for r in report["results"][1:]:
                    say(f"  {r['target']}: {r['status']} {r['reason']}")
                rec["early"] = sorted(early.sent)  # judged while conversions ran
            else:
                from ..validate.runner import validate_bundle  # imported only when validation runs

                report = validate_bundle(out, manifest=self.manifest, samples=self.opts.samples, say=say)
            self.cache.record(step)
        return report

    def app(self, kind: keys.AppStep) -> None:
        """android/: the app project, quoting the validation's figures."""
        if not self.opts.app:
            return
        out, d = self.out, self.d
        from ..capabilities import serves_app, summary

        if not serves_app(d.task.value):  # no app family for this task: said once, nothing rendered
            self.record.add("app", "skipped", f"no app ({summary(d.task.value)})", 0.0)
            self.result.explain.append(("app", "skipped", f"no Android app serves {d.task.value}"))
            self.say(f"[bold]android[/] app: none for {d.task.value} (see mobiledeploy targets)")
            return
        step = kind.step(self.inputs, self.manifest, out / "report" / "validation.json")
        with self.record.step(step.name) as rec:
            if not self.checked_step(step, rec):
                self.changing()
                from ..app import context_from_artifacts, render_android_app  # only when the app is rendered

                arts = {a["target"]: out / a["path"] for a in self.manifest["artifacts"]}
                ctx = context_from_artifacts(d, arts, bundle_dir=out)
                # checked before the build started (check_output_dir with --force): ours to write
                render_android_app(ctx, out / "android", force=True)
                self.cache.record(step, facts={"runtime": ctx.runtime, "model": ctx.model_target,
                                               "application_id": ctx.application_id})
                self.say(f"[bold]android[/] app generated in {out / 'android'} ({ctx.runtime}, {ctx.model_target})")
        self.manifest["android"] = {"path": "android", **self.cache.facts("app")}

    def write_manifest(self) -> None:
        """The manifest, last: the bundle is whole; then the build's record."""
        write_json_atomic(self.out / "manifest.json", self.manifest)
        self.result.manifest = self.manifest
        self.record.phase("manifest")
        self.record.write(self.out, total=time.monotonic() - self.t_start)
        ran = sum(st["status"] == "ran" for st in self.record.steps)
        self.say(f"[bold]bundle[/] {self.out} written in {time.monotonic() - self.t_start:.1f}s "
                 f"({ran} step(s) ran, {len(self.result.skipped)} target(s) up to date)")



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
    from ..tasks import get_task

    resolved = keys.resolved_definition(d, weights_name)
    # the task's labelled truth (masks, boxes) travels with the copied images
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
