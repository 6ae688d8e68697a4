"""Target profiles: data in ``targets/*.yaml`` (backend, precision, options, tolerance).

A registry with string keys: a duplicate is an error, a failed lookup lists the valid names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DefinitionError, InternalError, UserError
from .resources import resource_dir

TOLERANCE_KEYS = ("max_abs", "mean_abs", "min_cosine", "min_snr_db", "min_top1_agreement",
                  "max_accuracy_drop")


@dataclass(frozen=True)
class TargetProfile:
    """One target: what it builds, with which backend, and how it is judged."""

    name: str
    backend: str
    precision: str
    artifact: str  # path template inside the bundle, e.g. "tflite/{name}_int8.tflite"
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, list] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    order: int = 0

    def artifact_path(self, model_name: str) -> str:
        return self.artifact.format(name=model_name)

    def with_overrides(self, options: dict[str, Any] | None = None,
                       tolerance: dict[str, float] | None = None) -> TargetProfile:
        from dataclasses import replace

        return replace(
            self,
            options={**self.options, **(options or {})},
            tolerance={**self.tolerance, **{k: v for k, v in (tolerance or {}).items() if v is not None}},
        )

    def check_options(self, opts: dict[str, Any], src: str, where: str) -> None:
        """Unknown option names and values outside ``choices`` are definition errors."""
        for k, v in opts.items():
            if k not in self.options:
                allowed = ", ".join(self.options) or "none"
                raise DefinitionError(src, f"{where}.{k}", f"unknown option; allowed: {allowed}")
            if k in self.choices and v not in self.choices[k]:
                allowed = ", ".join(map(str, self.choices[k]))
                raise DefinitionError(src, f"{where}.{k}", f"{v!r} is not allowed; allowed: {allowed}")
            default = self.options[k]
            if default is not None and not isinstance(v, type(default)) and not (
                isinstance(default, float) and isinstance(v, int)
            ):
                raise DefinitionError(
                    src, f"{where}.{k}", f"expected {type(default).__name__}, got {type(v).__name__} {v!r}"
                )


def _load_profile(path: Path) -> TargetProfile:
    import yaml

    data = yaml.safe_load(path.read_text())
    bad = set(data) - {"name", "backend", "precision", "artifact", "description", "options", "choices",
                       "tolerance", "order"}
    if bad:
        raise InternalError(f"{path}: unknown keys {sorted(bad)}")
    tol = data.get("tolerance") or {}
    if set(tol) - set(TOLERANCE_KEYS):
        raise InternalError(f"{path}: unknown tolerance keys {sorted(set(tol) - set(TOLERANCE_KEYS))}")
    return TargetProfile(
        name=data["name"], backend=data["backend"], precision=data["precision"],
        artifact=data["artifact"], description=data.get("description", ""),
        options=data.get("options") or {}, choices=data.get("choices") or {}, tolerance=tol,
        order=int(data.get("order", 0)),
    )


@functools.cache
def all_targets() -> dict[str, TargetProfile]:
    """Every target profile by name, in display order."""
    found: dict[str, TargetProfile] = {}
    for path in sorted(resource_dir("targets").glob("*.yaml")):
        prof = _load_profile(path)
        if prof.name in found:
            raise InternalError(f"duplicate target '{prof.name}' in {path}")
        found[prof.name] = prof
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def get_target(name: str) -> TargetProfile:
    targets = all_targets()
    if name not in targets:
        raise UserError(f"unknown target '{name}'; allowed: {', '.join(targets)}")
    return targets[name]


def resolve_targets(definition, selected: tuple[str, ...] | list[str] = ()) -> list[TargetProfile]:
    """The definition's targets (or ``--target`` selection), with its overrides applied."""
    names = list(selected) or definition.targets or list(all_targets())
    out = []
    for n in names:
        if n not in all_targets():  # the definition's own list is checked when it is loaded
            raise UserError(f"--target: unknown target '{n}'; allowed: {', '.join(all_targets())}")
        prof = get_target(n)
        tol = definition.tolerances.get(n)
        out.append(prof.with_overrides(definition.target_options.get(n),
                                       tol.model_dump() if tol is not None else None))
    return out
