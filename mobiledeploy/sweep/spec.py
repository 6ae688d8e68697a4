"""The sweep file: a base definition, axes over its fields, an optional training budget.

```yaml
base: shapes.yaml                  # the base definition (relative to this file)
targets: [tflite-fp32, tflite-int8]
axes:                              # the cartesian product of every axis is the set of variants
  width: [0.5, 1.0]                # shortcuts: width, resolution, preset, minimalistic, lowering
  resolution: [96, 112]
  lowering: [hswish, none]         # every int8 target's target_options.<target>.lowering
  target_options.tflite-int8.io_dtype: [int8, uint8]   # or any definition field, dotted
  "architecture.width_multiplier,weights": [[0.5, w05.safetensors], [1.0, w10.safetensors]]  # linked
train: {images: 2000, epochs: 1}   # fine-tune every variant on the procedural shapes
bench: {runs: 100, threads: 2}
samples: 100                       # validation images per build
```

Everything is checked before anything is written: each variant is validated as a definition, and
an error names the sweep file, the axis and the variant.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DefinitionError
from ..safety import clip

Strict = ConfigDict(extra="forbid")

# shortcut -> what it sets (see _assign)
SHORTCUTS = {
    "width": "architecture.width_multiplier",
    "resolution": "input.height + input.width",
    "preset": "architecture.preset",
    "minimalistic": "architecture.preset (+ _minimalistic)",
    "lowering": "target_options.<every int8 target>.lowering",
}
MAX_VARIANTS = 256


class TrainSpec(BaseModel):
    """Fine-tune every variant (the demo's training code) for a small budget, seeded."""

    model_config = Strict
    data: str = Field("shapes", pattern=r"^shapes$")  # the procedural shapes renderer
    images: int = Field(2000, ge=10, le=200_000)
    epochs: int = Field(1, ge=1, le=100)
    batch: int = Field(64, ge=2, le=1024)
    lr: float = Field(3e-3, gt=0, le=1.0)
    seed: int = Field(7, ge=0, le=2**32 - 1)
    threads: int = Field(1, ge=1, le=64)


class BenchSpec(BaseModel):
    model_config = Strict
    runs: int = Field(100, ge=3, le=100_000)
    threads: int = Field(2, ge=1, le=64)


class SweepFile(BaseModel):
    model_config = Strict
    base: str = Field(min_length=1, max_length=4096)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    targets: list[str] | None = Field(None, min_length=1)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    train: TrainSpec | None = None
    bench: BenchSpec = BenchSpec()
    samples: int | None = Field(None, ge=1)


@dataclass
class Variant:
    """One point of the sweep: its axis values and the definition they make."""

    id: str
    values: dict[str, Any]  # axis -> value (linked axes: each field)
    data: dict[str, Any]  # the definition (relative paths, as in the base folder)
    definition: Any = None  # the validated ModelDefinition
    targets: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in self.values.items()) or "base"


@dataclass
class Sweep:
    path: Path
    spec: SweepFile
    base_path: Path
    variants: list[Variant]

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem


def _short(v: Any) -> str:
    return v if isinstance(v, str) else str(v).replace(" ", "")


def load_sweep(path: str | Path) -> Sweep:
    """Parse a sweep file and validate every variant; a problem is one DefinitionError line."""
    from ..definition import check_definition_files
    from ..safety import load_yaml_bounded

    path = Path(path)
    src = clip(str(path), 200)
    if not path.is_file():
        raise DefinitionError(src, "", "file not found; give the path to a sweep .yaml")
    raw = load_yaml_bounded(path, src)
    if not isinstance(raw, dict):
        raise DefinitionError(src, "", "the file must be a YAML mapping with base, axes, targets, ...")
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            owner = {"train": TrainSpec, "bench": BenchSpec}.get(str(e["loc"][0]), SweepFile)
            msg = "unknown key; allowed: " + ", ".join(owner.model_fields)
        raise DefinitionError(src, clip(loc, 120), clip(msg, 300)) from None
    base_path = (path.parent / spec.base).resolve()
    if not base_path.is_file():
        raise DefinitionError(src, "base", f"{clip(spec.base)} not found; give the base definition's path "
                                           "(relative to the sweep file)")
    base = load_yaml_bounded(base_path, clip(str(base_path), 200))
    if not isinstance(base, dict):
        raise DefinitionError(src, "base", f"{clip(spec.base)} is not a YAML mapping (a model definition)")
    if spec.targets:
        from ..targets import all_targets

        known = all_targets()
        for i, t in enumerate(spec.targets):
            if t not in known:
                raise DefinitionError(src, f"targets[{i}]", f"unknown target {clip(t, 40)!r}; allowed: "
                                                            f"{', '.join(known)}")
        base["targets"] = list(spec.targets)

    axes: list[tuple[list[str], list[Any]]] = []
    for key, values in spec.axes.items():
        names = [k.strip() for k in key.split(",")]
        if not values:
            raise DefinitionError(src, f"axes.{key}", "an axis needs at least one value")
        for i, v in enumerate(values):
            if len(names) > 1 and (not isinstance(v, list) or len(v) != len(names)):
                raise DefinitionError(src, f"axes.{key}[{i}]", f"a linked axis takes lists of {len(names)} "
                                                               f"values ({', '.join(names)})")
        axes.append((names, values))
    _no_overlap(axes, src)
    combos = list(itertools.product(*[range(len(v)) for _, v in axes]))
    if len(combos) > MAX_VARIANTS:
        raise DefinitionError(src, "axes", f"{len(combos)} variants; at most {MAX_VARIANTS}: drop values")

    variants = []
    for n, combo in enumerate(combos):
        data = copy.deepcopy(base)
        values: dict[str, Any] = {}
        assigned: list[tuple[str, str, Any]] = []
        for (names, vals), i in zip(axes, combo, strict=False):
            row = vals[i] if len(names) > 1 else [vals[i]]
            for name, v in zip(names, row, strict=False):
                values[name] = v
                assigned.append((", ".join(names), name, v))
        # preset first, minimalistic after it, lowering once the targets are known
        order = {"preset": 0, "architecture.preset": 0, "minimalistic": 2, "lowering": 3}
        for axis, name, v in sorted(assigned, key=lambda a: order.get(a[1], 1)):
            _assign(data, name, v, src, f"axes.{axis}")
        variant = Variant(id=f"v{n + 1:02d}", values=values, data=data)
        variant.definition = _validate(variant, base_path, src, trains=spec.train is not None)
        check_definition_files(variant.definition)
        variants.append(variant)
    if spec.train:
        from ..demo.shapes import CLASSES

        task = variants[0].definition.task.value
        if task != "image-classification":
            raise DefinitionError(src, "train", f"fine-tuning covers image-classification (the shapes "
                                                f"renderer); this is {task}: give weights per variant instead")
        labels = variants[0].definition.labels_list()
        if labels != CLASSES:
            raise DefinitionError(src, "train.data", "the shapes renderer draws "
                                  f"{', '.join(CLASSES)} (in that order); the base definition's labels differ")
    return Sweep(path=path, spec=spec, base_path=base_path, variants=variants)


# what each shortcut writes in a definition ("*": any target); minimalistic edits the preset on
# purpose (applied after it), so it overlaps nothing
_WRITES = {"width": ("architecture.width_multiplier",), "resolution": ("input.height", "input.width"),
           "preset": ("architecture.preset",), "lowering": ("target_options.*.lowering",),
           "minimalistic": ()}


def _no_overlap(axes: list[tuple[list[str], list[Any]]], src: str) -> None:
    """Two axes (or two names of one linked axis) that set the same field, or a field and a part
    of it, would let one silently overwrite the other: a variant would not be what its label says."""
    def overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
        return all(x == y or "*" in (x, y) for x, y in zip(a, b, strict=False))

    seen: list[tuple[tuple[str, ...], str, str]] = []  # (field path, axis name, axis key)
    for names, _ in axes:
        key = ", ".join(names)
        for name in names:
            for path in _WRITES.get(name, (name,)):
                parts = tuple(path.split("."))
                for other_parts, other, other_key in seen:
                    if overlaps(parts, other_parts):
                        same = "the same axis" if other_key == key else f"axis '{clip(other_key, 60)}'"
                        raise DefinitionError(src, f"axes.{clip(key, 60)}", f"{clip(name, 60)} sets "
                                              f"{clip('.'.join(parts), 60)}, which {clip(other, 60)} of {same} "
                                              "sets too: give each field one axis (link axes as 'a, b' "
                                              "to vary fields together)")
                seen.append((parts, name, key))


def _assign(data: dict, name: str, value: Any, src: str, where: str) -> None:
    """Set one axis value on a definition mapping."""
    if name.split(".")[0] in ("base_dir", "source_path"):  # the loader sets these, no file may
        raise DefinitionError(src, where, f"{clip(name, 40)} is not a definition field (the loader sets it)")
    if name == "width":
        name = "architecture.width_multiplier"
    elif name == "resolution":
        if not isinstance(value, int) or isinstance(value, bool):
            raise DefinitionError(src, where, f"resolution is one integer (pixels per side), got {clip(value, 40)}")
        data.setdefault("input", {}).update(height=value, width=value)
        return
    elif name == "preset":
        name = "architecture.preset"
    elif name == "minimalistic":
        if not isinstance(value, bool):
            raise DefinitionError(src, where, f"minimalistic is true or false, got {clip(value, 40)}")
        preset = (data.get("architecture") or {}).get("preset")
        if not preset:
            raise DefinitionError(src, where, "minimalistic applies to a preset; the variant has custom blocks")
        preset = preset.removesuffix("_minimalistic")
        data["architecture"]["preset"] = preset + ("_minimalistic" if value else "")
        return
    elif name == "lowering":
        from ..targets import all_targets

        profiles = all_targets()
        names = data.get("targets") or list(profiles)
        int8 = [t for t in names if t in profiles and profiles[t].precision == "int8"]
        if not int8:
            raise DefinitionError(src, where, "lowering applies to int8 targets; the sweep has none")
        opts = data.setdefault("target_options", {})
        for t in int8:
            opts.setdefault(t, {})["lowering"] = value
        return
    parts = name.split(".")
    if not all(parts):
        raise DefinitionError(src, where, f"{clip(name, 60)} is not a field path (e.g. architecture.preset); "
                                          f"shortcuts: {', '.join(SHORTCUTS)}")
    node = data
    for p in parts[:-1]:
        nxt = node.get(p) if isinstance(node, dict) else None
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise DefinitionError(src, where, f"{clip(name, 60)}: {p} is not a mapping in the base definition")
        node = nxt
    node[parts[-1]] = value
    if parts == ["architecture", "preset"]:  # a preset replaces custom blocks
        for k in ("stem", "blocks", "last_stage", "head"):
            data["architecture"].pop(k, None)


def _validate(variant: Variant, base_path: Path, src: str, trains: bool):
    from ..definition import ModelDefinition, _fields_at, _loc, _message
    from ..errors import UserError
    from ..targets import resolve_targets

    where = f"axes (variant {variant.id}: {variant.label})" if variant.values else "base"
    data = {**variant.data, "base_dir": str(base_path.parent), "source_path": str(base_path)}
    if trains and "weights" not in variant.values:  # trained from scratch: the base file need not fit
        data.pop("weights", None)
    try:
        d = ModelDefinition.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        fields = _fields_at(e["loc"]) if e.get("type") == "extra_forbidden" else None
        raise DefinitionError(src, where, f"{clip(_loc(e), 120)}: {_message(e, fields)}") from None
    _confine_paths(d, src, where)  # an axis value is a path too: never opened outside the folder
    try:
        resolved = resolve_targets(d)
        if d.weights and not trains:
            from ..architectures.reference import check_weights_file

            check_weights_file(d)
    except UserError as exc:
        msg = str(exc).replace(str(base_path) + ": ", "")
        if "weights" in msg and not trains:
            msg += "; give each variant its weights (a linked axis) or add train:"
        raise DefinitionError(src, where, clip(msg, 400)) from None
    variant.targets = [t.name for t in resolved]
    return d


def _confine_paths(d, src: str, where: str) -> None:
    """Every path field of a variant stays in the base definition's folder (unless the definition
    opts out with ``allow_outside_paths``), checked before any of them is opened: an axis such as
    ``weights: [/etc/passwd]`` is refused as the same line in the definition would be."""
    from ..errors import UserError
    from ..tasks import get_task

    fields = [("labels", d.labels), ("weights", d.weights)]
    for which in ("calibration", "validation"):
        src_ = getattr(d, which)
        fields += [(f"{which}.{k}", getattr(src_, k, None)) for k in ("source", *get_task(d).truth_fields)]
    for name, rel in fields:
        if rel is None:
            continue
        try:
            d.confined(rel, name)
        except UserError as exc:
            msg = str(exc).replace(str(d.source_path) + ": ", "")
            raise DefinitionError(src, where, clip(msg, 400)) from None
