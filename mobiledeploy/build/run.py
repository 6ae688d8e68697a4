"""`build`: reference -> artifacts (parallel, one process each) -> validation -> app -> manifest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .. import __version__
from ..backends.registry import entry, get_backend
from ..errors import UserError
from ..targets import TargetProfile, resolve_targets
from .bundle import (
    STATE_DIR,
    bundle_lock,
    clean_stale,
    install,
    sha256_file,
    sha256_path,
    size_of,
    tmp_path,
    write_json_atomic,
)
from .graph import Cache, Step, digest


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


@dataclass
class BuildResult:
    manifest: dict
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    validation: dict | None = None
    explain: list[tuple[str, str, str]] = field(default_factory=list)  # step, ran|skipped, why


class Reporter:
    """Progress lines on stderr (rich when a terminal), silent with --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg)


def _files_digest(paths: list[Path]) -> str:
    return digest([(p.name, sha256_file(p)) for p in paths])


def _resolved_definition(d, weights_name: str) -> dict:
    """The definition as the bundle keeps it: self-contained paths under model/."""
    data = d.model_dump(mode="json", exclude={"base_dir", "source_path"})
    data["weights"] = weights_name
    data["labels"] = "labels.txt"
    data["validation"] = {"source": "validation", "max_images": None}
    data["calibration"] = {"source": str(d.path(d.calibration.source)), "max_images": d.calibration.max_images}
    return data


def build(definition_path: str, opts: BuildOptions) -> BuildResult:
    """Build the whole bundle for a definition into ``opts.out``."""
    from ..definition import load_definition
    from ..validate.inputs import select_images

    say = Reporter(opts.quiet)
    d = load_definition(definition_path)
    targets = resolve_targets(d, opts.targets)
    if d.weights:  # weights that do not fit the architecture: refuse before writing anything
        from ..architectures.reference import check_weights_file

        check_weights_file(d)
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another -o")
    labels = d.labels_list()
    calib_files = [p for p, _ in select_images(d, "calibration")]
    val_items = select_images(d, "validation")
    for t in targets:  # the definition is sound; a missing extra is a user error before any write
        entry(t.backend).check()

    out.mkdir(parents=True, exist_ok=True)
    result = BuildResult(manifest={})
    with bundle_lock(out, opts.wait):
        clean_stale(out)
        manifest_path = out / "manifest.json"
        if manifest_path.exists():
            # the bundle is about to change: no manifest until it is whole again
            manifest_path.unlink()
        cache = Cache(out, enabled=opts.cache)
        t_start = time.monotonic()

        # -- model/: canonical weights, labels, validation images, resolved definition
        weights_src = d.path(d.weights) if d.weights else None
        weights_name = f"{d.name}.safetensors"
        model_step = Step("model", {
            "definition": d.sha256(),
            "weights": sha256_file(weights_src) if weights_src else f"seed:{d.seed}",
            "labels": digest(labels),
            "validation_images": digest([(p.name, lab, sha256_file(p)) for p, lab in val_items]),
            "mobiledeploy": __version__,
        }, outputs=["model"])
        fresh, why = cache.check(model_step)
        result.explain.append(("model", "skipped" if fresh else "ran", why))
        if not fresh:
            _write_model_dir(out, d, weights_src, weights_name, labels, val_items)
            cache.record(model_step)
        weights_sha = sha256_file(out / "model" / weights_name)

        # -- conversions
        calib_digest = _files_digest(calib_files)
        steps: dict[str, tuple[Step, TargetProfile]] = {}
        for t in targets:
            rel = t.artifact_path(d.name)
            inputs = {
                # what shapes every artifact; per-target options and tolerances are keyed apart
                "definition": digest(_resolved_definition(d, weights_name) | {
                    "targets": None, "android": None, "tolerances": None, "target_options": None,
                    "validation": None}),
                "weights": weights_sha,
                "target": digest(asdict(t)),
                "options": json.dumps(t.options, sort_keys=True),
                "toolchain": json.dumps(get_backend(t.backend).toolchain(), sort_keys=True),
                "mobiledeploy": __version__,
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
            else:
                todo.append((step, t))
        if todo:
            say(f"[bold]converting[/] {len(todo)} target(s) with {opts.jobs} job(s): "
                + ", ".join(t.name for _, t in todo))
        _run_conversions(out, d, todo, opts, cache, result, say)

        # -- validation
        artifacts = []
        for name, (step, t) in steps.items():
            if name in result.failed:
                continue
            rel = step.outputs[0]
            facts = cache.facts(step.name)
            artifacts.append({
                "target": t.name, "backend": t.backend, "precision": t.precision, "path": rel,
                "sha256": sha256_path(out / rel), "bytes": size_of(out / rel),
                "toolchain": json.loads(step.inputs["toolchain"]), "options": t.options,
                "byte_stable": t.backend != "coreml",
                **({"content_sha256": facts["content_sha256"]} if "content_sha256" in facts else {}),
                "facts": {k: v for k, v in facts.items() if not k.startswith("_")},
            })
            for extra in facts.get("_extra_files", {}):
                if (out / extra).exists():
                    artifacts[-1].setdefault("extra_files", []).append(
                        {"path": extra, "sha256": sha256_path(out / extra)})
        manifest = {
            "name": d.name,
            "definition_sha256": d.sha256(),
            "mobiledeploy_version": __version__,
            "reference": {"weights": f"model/{weights_name}", "weights_sha256": weights_sha,
                          "definition": "model/definition.yaml", "seeded_weights": d.weights is None},
            "artifacts": artifacts,
            "failed": [{"target": k, "reason": v} for k, v in result.failed.items()],
        }
        if opts.validate:
            result.validation = _validate_step(out, d, manifest, targets, cache, opts, result, say)
            manifest["validation"] = {"status": result.validation["status"],
                                      "report": "report/validation.json", "html": "report/index.html"}
        if opts.app:
            manifest["android"] = _app_step(out, d, manifest, cache, result, say)
        write_json_atomic(manifest_path, manifest)  # last: the bundle is whole
        result.manifest = manifest
        say(f"[bold]bundle[/] {out} written in {time.monotonic() - t_start:.1f}s "
            f"({len(result.ran)} step(s) ran, {len(result.skipped)} target(s) up to date)")
    return result


def _write_model_dir(out: Path, d, weights_src, weights_name, labels, val_items) -> None:
    from ..architectures.reference import canonical_state
    from ..architectures.weights import save_weights

    final = out / "model"
    tmp = tmp_path(out, final)
    tmp.mkdir(parents=True)
    if weights_src:
        shutil.copy2(weights_src, tmp / weights_name)
    else:
        save_weights(canonical_state(d), tmp / weights_name, metadata={"seeded": str(d.seed)})
    (tmp / "labels.txt").write_text("".join(f"{x}\n" for x in labels), encoding="utf-8")
    for p, lab in val_items:
        sub = labels[lab] if lab is not None else "_unlabelled"
        dest = tmp / "validation" / sub / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    resolved = _resolved_definition(d, weights_name)
    (tmp / "definition.yaml").write_text(
        "# resolved by mobiledeploy build from " + Path(d.source_path).name + "\n"
        + yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    install(tmp, final)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _run_conversions(out: Path, d, todo, opts: BuildOptions, cache: Cache, result: BuildResult, say) -> None:
    """Each conversion in its own process; ``--jobs`` of them at a time."""
    state = out / STATE_DIR
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending = list(todo)
    running: list[tuple] = []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    if opts.jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    while pending or running:
        while pending and len(running) < max(1, opts.jobs):
            step, t = pending.pop(0)
            final = out / step.outputs[0]
            tmp = tmp_path(out, final)
            work = tmp.with_name(tmp.name + ".work")
            work.mkdir(parents=True, exist_ok=True)
            req = {"definition": d.source_path, "target": asdict(t), "out": str(tmp),
                   "workdir": str(work), "result": str(tmp) + ".result.json"}
            req_path = Path(str(tmp) + ".request.json")
            req_path.write_text(json.dumps(req))
            log = open(logs / f"{t.name}.log", "w")
            proc = subprocess.Popen([sys.executable, "-m", "mobiledeploy.build.worker", str(req_path)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((proc, step, t, tmp, work, req, log, time.monotonic()))
            say(f"  [cyan]→[/] {t.name} …")
        time.sleep(0.1)
        for item in list(running):
            proc, step, t, tmp, work, req, log, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            dt = time.monotonic() - t0
            res_path = Path(req["result"])
            res = json.loads(res_path.read_text()) if res_path.exists() else None
            res_path.unlink(missing_ok=True)
            Path(str(tmp) + ".request.json").unlink(missing_ok=True)
            if proc.returncode < 0 or res is None:
                why = (f"converter process crashed ({_signal_name(proc.returncode)})" if proc.returncode < 0
                       else f"converter process exited {proc.returncode} without a result")
                result.failed[t.name] = f"{why}; log: {logs / (t.name + '.log')}"
            elif not res["ok"]:
                result.failed[t.name] = f"{res['error']} (log: {logs / (t.name + '.log')})"
                (logs / f"{t.name}.traceback").write_text(res.get("traceback", ""))
            elif not tmp.exists():
                result.failed[t.name] = "converter reported success but wrote no artifact"
            if t.name in result.failed:
                cache.forget(step.name)
                say(f"  [red]✗[/] {t.name} failed after {dt:.1f}s: {result.failed[t.name]}")
                shutil.rmtree(work, ignore_errors=True)
                continue
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
            say(f"  [green]✓[/] {t.name} in {dt:.1f}s ({size_of(out / step.outputs[0]) / 1e6:.2f} MB)")


def _validate_step(out: Path, d, manifest: dict, targets, cache: Cache, opts: BuildOptions,
                   result: BuildResult, say) -> dict:
    from ..validate.runner import validate_bundle

    step = Step("validate", {
        "artifacts": digest([(a["target"], a["sha256"]) for a in manifest["artifacts"]]),
        "failed": digest(manifest["failed"]),
        "tolerances": digest([t.tolerance for t in targets]),
        "model": manifest["reference"]["weights_sha256"],
        "samples": opts.samples,
        "mobiledeploy": __version__,
    }, outputs=["report/validation.json", "report/index.html"])
    fresh, why = cache.check(step)
    result.explain.append(("validate", "skipped" if fresh else "ran", why))
    if fresh:
        return json.loads((out / "report" / "validation.json").read_text())
    say("[bold]validating[/] every artifact against the PyTorch reference on real images …")
    report = validate_bundle(out, manifest=manifest, samples=opts.samples, say=say)
    cache.record(step)
    return report


def _app_step(out: Path, d, manifest: dict, cache: Cache, result: BuildResult, say) -> dict:
    from ..app import context_from_artifacts, render_android_app

    step = Step("app", {
        "artifacts": digest([(a["target"], a["sha256"]) for a in manifest["artifacts"]]),
        "android": digest(d.android.model_dump(mode="json")),
        "input": digest(d.input.model_dump(mode="json")),
        "templates": _templates_digest(),
        "mobiledeploy": __version__,
    }, outputs=["android"])
    fresh, why = cache.check(step)
    result.explain.append(("app", "skipped" if fresh else "ran", why))
    if not fresh:
        arts = {a["target"]: out / a["path"] for a in manifest["artifacts"]}
        ctx = context_from_artifacts(d, arts, bundle_dir=out)
        render_android_app(ctx, out / "android")
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
