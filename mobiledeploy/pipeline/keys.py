"""Every build step's key, declared once: what each step reads, so what reruns it.

A step's key is a dict of named inputs (``graph.Step``): definition sections, file and image
digests, options, toolchain versions, and the digest of the source modules that run it. A step
reruns when its key changed, and ``--explain`` names the inputs that did ("options changed",
"source changed"): the input names below are the reasons a user reads.

Source modules: each step names its entry modules and ``sources.source_digest`` follows their
imports. The modules a registered name loads (a backend's or a task's class, with its whole
folder, scripts run in another interpreter included) no import reaches: the registries list them
(``backends.registry.backend_modules``, ``tasks.task_modules``) and every step that runs that
backend or task keys on them.

The build (``pipeline/run.py``) and the sweep (``sweep/run.py``) both key with these declarations.
A sweep's build step is the build of one variant for one target (model, conversion, validation,
no app) planned before its weights or artifact exist: its key (``sweep_build_key``) holds what
those steps' keys know up front (``plan``: the resolved target, options, toolchains, sources)
beside the definition and the content of every file the variant reads.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from ..backends.registry import backend_modules, get_backend
from ..digests import file_sha
from .graph import Step, digest
from .sources import source_digest

# what the references and the validator run on: their versions are inputs of validation
REFERENCE_TOOLCHAIN = ("torch", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow")
# the definition's sections that do not shape an artifact (each is keyed where it matters)
NOT_ARTIFACT = ("targets", "android", "tolerances", "target_options", "validation", "calibration")


def toolchain(dists) -> dict[str, str]:
    """The installed versions of ``dists`` (absent ones left out)."""
    from .._deps import version

    return {dist: v for dist in dists if (v := version(dist))}


class BuildInputs:
    """What one build's keys read of its definition; each digest is computed once, when a step
    first needs it (a build without int8 targets never reads the calibration images)."""

    def __init__(self, d):
        self.d = d
        self.weights_name = f"{d.name}.safetensors"

    @cached_property
    def resolved(self) -> dict:
        return resolved_definition(self.d, self.weights_name)

    @cached_property
    def shaping(self) -> str:
        """The sections that shape an artifact: name, task, input, architecture, seed, metadata..."""
        return digest({k: v for k, v in self.resolved.items() if k not in NOT_ARTIFACT})

    @cached_property
    def labels(self) -> str:
        return digest(self.d.labels_list())

    @cached_property
    def validation_images(self) -> str:
        return images_digest(self.d, "validation")

    @cached_property
    def calibration_images(self) -> str:
        return images_digest(self.d, "calibration", truth=False)

    @cached_property
    def weights_source(self) -> str:
        d = self.d
        return file_sha(d.path(d.weights)) if d.weights else f"seed:{d.seed}"

    @cached_property
    def common(self) -> dict:
        """The inputs validation and the app share: what the model is and what it is judged on."""
        return {"labels": self.labels, "validation_images": self.validation_images, "definition": self.shaping,
                "input": digest(self.d.input.model_dump(mode="json"))}


def _artifacts(manifest: dict) -> str:
    return digest([(a["target"], a["sha256"]) for a in manifest["artifacts"]])


class StepKind:
    """One kind of step: its name, its entry modules, and the source digest of the code it runs
    (entry modules + the task's modules + the modules of the backends it runs)."""

    kind = ""
    entry: tuple[str, ...] = ()

    def modules(self, task, backends=()) -> tuple[str, ...]:
        from ..tasks import task_modules  # imports numpy: only when a key is computed

        mods = {*self.entry, *task_modules(task)}
        for b in backends:
            mods.update(backend_modules(b))
        return tuple(sorted(mods))

    def source(self, task, backends=()) -> str:
        return source_digest(*self.modules(task, backends))


class ModelStep(StepKind):
    """model/: canonical weights, labels, validation images (with their truth), the resolved
    definition. Reruns when the definition, the weights file (or the seed), the labels, the
    validation images or their truth, or its code changes."""

    kind = "model"
    entry = ("mobiledeploy.pipeline.run", "mobiledeploy.architectures.reference")

    def plan(self, task) -> dict:
        return {"source": self.source(task)}

    def step(self, b: BuildInputs) -> Step:
        return Step("model", {"definition": digest(b.resolved), "weights": b.weights_source, "labels": b.labels,
                              "validation_images": b.validation_images, **self.plan(b.d)}, outputs=["model"])


class ConvertStep(StepKind):
    """One artifact. Reruns when anything that can change its bytes changes: the shaping
    sections of the definition, the labels (Core ML and the TFLite metadata embed them), the
    weights, the target as resolved and its options, the backend's toolchain, the calibration
    images' pixels (int8), or the code of the worker, the backend and the task."""

    kind = "convert"
    entry = ("mobiledeploy.pipeline.worker",)

    def plan(self, task, t) -> dict:
        """What is known before any file is read (the sweep plans with it)."""
        return {"target": digest({k: v for k, v in t.record().items() if k != "tolerance"}),
                "options": json.dumps(t.options_dict(), sort_keys=True),
                "toolchain": json.dumps(get_backend(t.backend).toolchain(), sort_keys=True),
                "source": self.source(task, (t.backend,))}

    def step(self, b: BuildInputs, t, weights_sha: str) -> Step:
        inputs = {"definition": b.shaping, "labels": b.labels, "weights": weights_sha, **self.plan(b.d, t)}
        if t.precision == "int8":  # the pixels, names and labels; never the masks or boxes
            inputs["calibration"] = b.calibration_images
        return Step(f"convert:{t.name}", inputs, outputs=[t.artifact_path(b.d.name)])


class ValidateStep(StepKind):
    """report/: every artifact judged against the references. Reruns when an artifact, a
    failure, a target's limits, the weights, the validation images or their truth, the sample
    count, the MediaPipe environment, a runtime or reference version, or the code of the
    validator, the task and the backends that run the artifacts changes."""

    kind = "validate"
    entry = ("mobiledeploy.validate.runner", "mobiledeploy.pipeline.early")

    def plan(self, task, backends) -> dict:
        backends = sorted(set(backends))
        return {
            # a newly installed (or removed) client (MediaPipe) adds (or drops) its <client>:<target>
            # rows: Backend.client_toolchain
            "clients": json.dumps({k: v for b in backends for k, v in get_backend(b).client_toolchain().items()},
                                  sort_keys=True),
            # the runtimes that run the artifacts and the references they are compared with
            "toolchain": json.dumps(toolchain(REFERENCE_TOOLCHAIN) | {
                k: v for b in backends for k, v in get_backend(b).toolchain().items()}, sort_keys=True),
            "source": self.source(task, backends),
        }

    def step(self, b: BuildInputs, manifest: dict, samples: int | None) -> Step:
        return Step("validate", {
            **b.common,
            "artifacts": _artifacts(manifest),
            "failed": digest(manifest["failed"]),
            "targets": digest([{k: a[k] for k in ("target", "backend", "precision", "options", "tolerance", "graph")}
                               for a in manifest["artifacts"]]),
            "keras_tolerance": digest(manifest["reference"]["keras_tolerance"]),
            "weights": manifest["reference"]["weights_sha256"],
            "samples": samples,
            **self.plan(b.d, (a["backend"] for a in manifest["artifacts"])),
        }, outputs=["report/validation.json", "report/index.html"])


class AppStep(StepKind):
    """android/: the app project. Reruns when an artifact, the android section, the validation
    report (the app quotes its figures), a template, or the code of the app, the task (its app
    family) and the artifacts' backends (their app runtime) changes."""

    kind = "app"
    entry = ("mobiledeploy.app",)

    def step(self, b: BuildInputs, manifest: dict, report: Path) -> Step:
        return Step("app", {
            **b.common,
            "artifacts": _artifacts(manifest),
            "android": digest(b.d.android.model_dump(mode="json")),
            "report": file_sha(report) if report.is_file() else None,
            "templates": templates_digest(),
            "source": self.source(b.d, sorted({a["backend"] for a in manifest["artifacts"]})),
        }, outputs=["android"])


MODEL, CONVERT, VALIDATE, APP = ModelStep(), ConvertStep(), ValidateStep(), AppStep()
# the build's steps, in the order they run (pipeline/run.py runs one phase per kind)
STEPS = (MODEL, CONVERT, VALIDATE, APP)


def sweep_build_key(d, data: dict, target: str, *, weights, files: str, samples: int | None) -> str:
    """The key of a sweep's build step: variant ``d`` (its definition ``data`` as the worker
    writes it) built for ``target`` and validated, no app. ``weights`` names the weights by
    content (a file's sha256 or a training step's key), ``files`` is the digest of every file the
    variant reads (labels, images, masks, boxes, weights). The steps it runs key on the rest
    up front: the same ``plan`` as the build's model, convert and validate keys."""
    from ..targets import resolve_target

    t = resolve_target(d, target)
    return digest({"kind": "build", "definition": data, "weights": weights, "data": files, "samples": samples,
                   "target": t.record(), "model": MODEL.plan(d), "convert": CONVERT.plan(d, t),
                   "validate": VALIDATE.plan(d, (t.backend,)),
                   # the sweep's own worker code around the build (sweep/steps.py)
                   "runner": source_digest("mobiledeploy.sweep.steps")})


# -- the definition's content, as keys read it ---------------------------------------------------

def images_digest(d, which: str, truth: bool = True) -> str:
    """Contents of the images a definition uses (relative names, labels, sha256): never their
    absolute paths, so a moved project keeps its keys. ``truth``: with their masks and boxes
    (what validation judges); int8 calibration reads the pixels only, so its keys leave them out
    (an edited calibration mask rebuilt every int8 artifact for nothing)."""
    from ..images import select_images
    from ..tasks import get_task

    src = getattr(d, which)
    root = d.path(src.source)
    items = select_images(d, which)
    # the task's truth files beside the images (masks, boxes) by content: Task.truth_digest
    return digest([(p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name, lab, file_sha(p))
                   for p, lab in items]
                  + ([get_task(d).truth_digest(d, which)] if truth else []))


def resolved_definition(d, weights_name: str) -> dict:
    """The definition as the bundle keeps it: self-contained paths under model/."""
    data = d.model_dump(mode="json", exclude={"base_dir", "source_path"})
    data["weights"] = weights_name
    data["labels"] = "labels.txt"
    # the task's truth files are copied beside the images and named by Task.bundle_truth
    data["validation"] = {"source": "validation.txt", "max_images": None}
    # calibration images stay with the project; as written (relative), never an absolute path
    data["calibration"] = {"source": d.calibration.source, "max_images": d.calibration.max_images}
    if d.calibration.masks is not None:
        data["calibration"]["masks"] = d.calibration.masks
    return data


def templates_digest() -> str:
    """The Android templates' files, by relative path and content."""
    from ..resources import resource_dir

    root = resource_dir("templates") / "android"
    if not root.is_dir():
        return "none"
    return digest([(p.relative_to(root).as_posix(), file_sha(p)) for p in sorted(root.rglob("*")) if p.is_file()])
