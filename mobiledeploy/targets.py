"""Targets: profiles in ``targets/*.yaml`` (data), resolved once into typed ``ResolvedTarget``s.

A profile names a backend and a precision, the artifact's path in the bundle, and may override
the backend's option defaults and tolerances. Resolving a target applies, in order: the backend's
defaults for the precision, the profile, the definition's ``target_options``/``tolerances``. The
resolved target is recorded with the artifact in the manifest; validation, the report,
localisation, ``bench`` and the app read that record (``ResolvedTarget.from_record``).

Extra profile folders may be listed in ``MOBILEDEPLOY_TARGET_PATH`` (os.pathsep-separated): a new
target is one profile plus, for a new backend, one module named "package.module:Class".
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import DefinitionError, InternalError, UserError
from .resources import resource_dir
from .tolerance import Tolerance

TARGET_PATH_ENV = "MOBILEDEPLOY_TARGET_PATH"
KERAS_ROW = "reference-keras"  # the Keras twin's row: its tolerance is set like a target's
KERAS_TOLERANCE = Tolerance(max_abs=1e-4, min_top1_agreement=1.0)
_PROFILE_KEYS = {"name", "backend", "precision", "artifact", "description", "options", "tolerance", "order"}


@dataclass(frozen=True)
class TargetProfile:
    """One target as shipped: what it builds, with which backend (data from its YAML file)."""

    name: str
    backend: str
    precision: str
    artifact: str  # path template inside the bundle, e.g. "tflite/{name}_int8.tflite"
    description: str
    options: dict[str, Any]
    tolerance: Tolerance
    order: int = 0
    source: str = ""

    def backend_class(self):
        from .backends.registry import backend_class

        return backend_class(self.backend)

    def builds(self, task: str) -> bool:
        """Whether this target's backend converts ``task`` models (``Backend.tasks``)."""
        tasks = self.backend_class().tasks
        return tasks is None or task in tasks

    def artifact_path(self, model_name: str) -> str:
        return self.artifact.format(name=model_name)

    def options_model(self) -> type[BaseModel]:
        return self.backend_class().options[self.precision]

    def resolve(self, options: dict[str, Any] | None = None, tolerance: Tolerance | dict | None = None,
                *, where: str = "", task: str | None = None) -> ResolvedTarget:
        """Typed options and limits: backend defaults < the task's < profile < ``options``/``tolerance``."""
        cls = self.backend_class()
        try:
            opts = self.options_model()(**{**self.options, **(options or {})})
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(p) for p in e["loc"])
            allowed = ", ".join(self.options_model().model_fields) or "none"
            if e["type"] == "extra_forbidden":
                msg = f"unknown option; allowed: {allowed}"
            elif e["type"] in ("literal_error", "enum"):
                msg = f"{e['input']!r} is not allowed; allowed: {', '.join(_choices(self.options_model(), loc))}"
            else:
                msg = e["msg"].removeprefix("Value error, ") + f" (got {e.get('input')!r})"
            raise UserError(f"{where or self.name}: option {loc}: {msg}") from None
        base, task_tol = cls.tolerances.get(self.precision, Tolerance()), None
        if task is not None:
            from .tasks import get_task

            t = get_task(task)
            base, task_tol = t.backend_defaults(base), t.tolerance(self.precision)
        tol = base.over(task_tol, self.tolerance, tolerance)
        return ResolvedTarget(name=self.name, backend=self.backend, precision=self.precision,
                              artifact=self.artifact, description=self.description, order=self.order,
                              options=opts, tolerance=tol)


def _choices(model: type[BaseModel], field: str) -> list[str]:
    """The values a Literal or Enum option accepts, for error messages."""
    import typing

    ann = model.model_fields[field].annotation
    if isinstance(ann, type) and issubclass(ann, Enum):
        return [str(m.value) for m in ann]
    return [str(v) for v in typing.get_args(ann)]


@dataclass(frozen=True)
class ResolvedTarget:
    """A target with its options typed and its limits merged: what is built and judged."""

    name: str
    backend: str
    precision: str
    artifact: str
    description: str
    order: int
    options: BaseModel
    tolerance: Tolerance

    def artifact_path(self, model_name: str) -> str:
        return self.artifact.format(name=model_name)

    def backend_class(self):
        from .backends.registry import backend_class

        return backend_class(self.backend)

    def option(self, name: str, default: Any = None) -> Any:
        value = getattr(self.options, name, default)
        return getattr(value, "value", value)

    def options_dict(self) -> dict[str, Any]:
        return self.options.model_dump(mode="json")

    def record(self) -> dict[str, Any]:
        """What the manifest keeps of this target (``from_record`` reads it back)."""
        return {"target": self.name, "backend": self.backend, "precision": self.precision,
                "artifact_template": self.artifact, "options": self.options_dict(),
                "tolerance": self.tolerance.set_values()}

    @classmethod
    def from_record(cls, art: dict[str, Any]) -> ResolvedTarget:
        """The resolved target a manifest artifact was built as (UserError when unreadable)."""
        from .backends.registry import backend_class

        try:
            backend, precision = art["backend"], art["precision"]
            model = backend_class(backend).options[precision]
            options = model(**(art.get("options") or {}))
            tol = Tolerance(**(art.get("tolerance") or {}))
        except (KeyError, TypeError, ValidationError) as exc:
            raise UserError(f"manifest.json: artifact {art.get('target')!r} has an unreadable target record "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); rerun mobiledeploy build"
                            ) from None
        return cls(name=art["target"], backend=backend, precision=precision,
                   artifact=art.get("artifact_template", art.get("path", "")), description="",
                   order=0, options=options, tolerance=tol)


def _load_profile(path: Path) -> TargetProfile:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InternalError(f"{path}: a target profile is a YAML mapping")
    bad = set(data) - _PROFILE_KEYS
    if bad:
        raise InternalError(f"{path}: unknown keys {sorted(bad)}; allowed: {sorted(_PROFILE_KEYS)}")
    try:
        tol = Tolerance(**(data.get("tolerance") or {}))
    except ValidationError as exc:
        raise InternalError(f"{path}: tolerance: {exc.errors()[0]['msg']}") from None
    prof = TargetProfile(
        name=data["name"], backend=data["backend"], precision=data["precision"],
        artifact=data["artifact"], description=data.get("description", ""),
        options=data.get("options") or {}, tolerance=tol, order=int(data.get("order", 0)),
        source=str(path),
    )
    if prof.precision not in prof.backend_class().options:
        raise InternalError(f"{path}: backend {prof.backend} has no precision '{prof.precision}'; "
                            f"it builds {', '.join(prof.backend_class().options)}")
    prof.resolve(where=str(path))  # the profile's own options must type-check
    return prof


def profile_dirs() -> list[Path]:
    """The shipped profiles, then every folder in MOBILEDEPLOY_TARGET_PATH."""
    extra = [Path(p) for p in os.environ.get(TARGET_PATH_ENV, "").split(os.pathsep) if p]
    return [resource_dir("targets"), *extra]


@functools.cache
def _all_targets(dirs: tuple[str, ...]) -> dict[str, TargetProfile]:
    found: dict[str, TargetProfile] = {}
    for folder in dirs:
        for path in sorted(Path(folder).glob("*.yaml")):
            prof = _load_profile(path)
            if prof.name in found:
                raise InternalError(f"duplicate target '{prof.name}' in {path} and {found[prof.name].source}")
            found[prof.name] = prof
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def all_targets() -> dict[str, TargetProfile]:
    """Every target profile by name, in display order."""
    return _all_targets(tuple(str(d) for d in profile_dirs()))


def get_target(name: str) -> TargetProfile:
    targets = all_targets()
    if name not in targets:
        raise UserError(f"unknown target '{name}'; allowed: {', '.join(targets)}")
    return targets[name]


def resolve_target(definition, name: str, *, where: str = "") -> ResolvedTarget:
    """One target of a definition, with the definition's options and tolerances applied."""
    src = getattr(definition, "source_path", "")
    try:
        return get_target(name).resolve(definition.target_options.get(name), definition.tolerances.get(name),
                                        where=where or f"{src}: target_options.{name}",
                                        task=getattr(definition, "task", None))
    except UserError as exc:
        if where or not src:
            raise
        # "FILE: target_options.T: option lowering: ..." -> a DefinitionError naming the field
        msg = str(exc).removeprefix(f"{src}: target_options.{name}: ")
        field, _, rest = msg.partition(": ")
        raise DefinitionError(src, f"target_options.{name}.{field.removeprefix('option ')}", rest) from None


def resolve_targets(definition, selected: tuple[str, ...] | list[str] = ()) -> list[ResolvedTarget]:
    """The definition's targets (or the ``--target`` selection), resolved."""
    task = definition.task.value
    building = [n for n, t in all_targets().items() if t.builds(task)]
    names = list(selected) or definition.targets or building
    for n in names:
        if n not in all_targets():  # the definition's own list is checked when it is loaded
            raise UserError(f"--target: unknown target '{n}'; allowed: {', '.join(all_targets())}")
        if n not in building:
            raise UserError(f"target '{n}' does not build {task} models; targets that do: "
                            f"{', '.join(building) or 'none'} (see mobiledeploy targets)")
    return [resolve_target(definition, n) for n in names]


def keras_tolerance(definition) -> Tolerance:
    """The Keras twin's limits: the built-in ones, overridden by ``tolerances.reference-keras``."""
    from .tasks import get_task

    task = get_task(definition)
    return task.backend_defaults(KERAS_TOLERANCE).over(task.keras_tolerance,
                                                       definition.tolerances.get(KERAS_ROW))
