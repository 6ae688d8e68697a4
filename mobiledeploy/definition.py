"""The model definition: one strict YAML schema for network, weights, preprocessing, targets.

Every mistake becomes a ``DefinitionError`` whose one line names the file, the field and what is
allowed. Paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import DefinitionError
from .tolerance import Tolerance

Strict = ConfigDict(extra="forbid", frozen=True)


class ColorOrder(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


class Layout(str, Enum):
    nhwc = "nhwc"
    nchw = "nchw"


class Task(str, Enum):
    image_classification = "image-classification"


class Runtime(str, Enum):
    litert = "litert"
    executorch = "executorch"


class Padding(str, Enum):
    symmetric = "symmetric"
    tf_same = "tf_same"


class ChannelRounding(str, Enum):
    torchvision = "torchvision"
    tf_slim = "tf_slim"


class Conventions(BaseModel):
    """The framework conventions a checkpoint was trained under (see ``architectures.spec``).

    ``padding``: ``symmetric`` pads (k-1)/2 on every side (PyTorch, torchvision); ``tf_same``
    pads as TensorFlow's "same" (a stride-2 conv on an even size pads (0,1) for 3x3 and (1,2)
    for 5x5: keras.applications, TF-slim, TF Hub). ``channel_rounding``: ``torchvision``
    scales every row's expansion size by the width; ``tf_slim`` rounds the expansion from the
    ratio times the rounded input channels and keeps the stem unscaled (keras.applications).
    """

    model_config = Strict
    padding: Padding = Padding.symmetric
    channel_rounding: ChannelRounding = ChannelRounding.torchvision


class ImportedFrom(BaseModel):
    """Where ``mobiledeploy import`` took the weights from (informational; the build ignores it).

    ``classifier_activation`` is the source's last activation: the reference models output
    logits, so a ``softmax`` source's outputs are ``softmax`` of the reference's.
    """

    model_config = Strict
    format: Literal["keras", "torchvision"]
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    classifier_activation: Literal["softmax", "none"] = "none"
    preprocessing_in_model: bool = False


class InputSpec(BaseModel):
    """How a camera frame becomes the tensor the model takes.

    pixel p in [0, 255] (in ``color_order``) -> x = lo + p/255*(hi - lo) -> (x - mean) / std.
    """

    model_config = Strict
    height: int = Field(ge=32, le=1024)
    width: int = Field(ge=32, le=1024)
    channels: Literal[3] = 3
    color_order: ColorOrder = ColorOrder.rgb
    pixel_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: Layout = Layout.nhwc
    resize: Literal["bilinear", "nearest"] = "bilinear"

    @field_validator("pixel_range")
    @classmethod
    def _range(cls, v):
        if not v[0] < v[1]:
            raise ValueError(f"must be [low, high] with low < high, got {list(v)}")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v):
        if any(s <= 0 for s in v):
            raise ValueError(f"every std must be > 0, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _lengths(self):
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ValueError(
                    f"{name} needs {self.channels} values (one per channel), got {len(getattr(self, name))}"
                )
        return self

    def normalise_affine(self) -> tuple[list[float], list[float]]:
        """Per-channel (scale, bias) with y = scale * p + bias for p in [0, 255]."""
        lo, hi = self.pixel_range
        scale = [(hi - lo) / 255.0 / s for s in self.std]
        bias = [(lo - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        return scale, bias


class StemSpec(BaseModel):
    model_config = Strict
    out: int = Field(16, ge=1)
    kernel: Literal[3, 5, 7] = 3
    stride: Literal[1, 2] = 2
    activation: Literal["relu", "relu6", "hswish"] = "hswish"


class LastStageSpec(BaseModel):
    model_config = Strict
    conv: int = Field(ge=1)
    activation: Literal["relu", "relu6", "hswish"] = "hswish"


class HeadSpec(BaseModel):
    model_config = Strict
    hidden: int | None = Field(1024, ge=1)
    activation: Literal["relu", "relu6", "hswish", "none"] = "hswish"
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class BlockRow(BaseModel):
    """A bottleneck row: ``[kernel, exp, out, se, activation, stride]`` or this mapping."""

    model_config = Strict
    kernel: Literal[1, 3, 5, 7]
    exp: int = Field(ge=1)
    out: int = Field(ge=1)
    se: bool = False
    activation: Literal["relu", "relu6", "hswish"] = "relu"
    stride: Literal[1, 2] = 1
    fused: bool = False
    residual: bool = True

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, v: Any):
        if isinstance(v, (list, tuple)):
            if len(v) != 6:
                raise ValueError(
                    f"a row is [kernel, exp, out, se, activation, stride] (6 values), got {len(v)}"
                )
            k, e, o, se, act, s = v
            return {"kernel": k, "exp": e, "out": o, "se": se, "activation": act, "stride": s}
        return v


PRESET_NAMES = (
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mobilenet_v3_small_minimalistic",
    "mobilenet_v3_large_minimalistic",
    "mobilenet_edgetpu",
)


class ArchitectureSection(BaseModel):
    """A preset, or the search space spelled out (stem, rows, last stage, head)."""

    model_config = Strict
    preset: Literal[PRESET_NAMES] | None = None  # type: ignore[valid-type]
    width_multiplier: float = Field(1.0, gt=0.0, le=4.0)
    stem: StemSpec | None = None
    blocks: list[BlockRow] | None = None
    last_stage: LastStageSpec | None = None
    head: HeadSpec | None = None

    @model_validator(mode="after")
    def _one_way(self):
        custom = self.blocks is not None
        if self.preset is None and not custom:
            raise ValueError(f"give a preset ({', '.join(PRESET_NAMES)}) or blocks")
        if self.preset is not None and (custom or self.stem or self.last_stage):
            raise ValueError("give either preset or stem/blocks/last_stage, not both")
        if custom and not self.blocks:
            raise ValueError("blocks must list at least one row")
        if custom and self.last_stage is None:
            raise ValueError("a custom table needs last_stage: {conv: N, activation: hswish}")
        return self


class ImageSource(BaseModel):
    """A folder of labelled images (label = sub-folder name) or a list file ("path label")."""

    model_config = Strict
    source: str
    max_images: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v: Any):
        return {"source": v} if isinstance(v, str) else v


class AndroidSpec(BaseModel):
    model_config = Strict
    application_id: str = "com.example.mobiledeploy"
    app_name: str = "mobiledeploy demo"
    runtime: Runtime = Runtime.litert

    @field_validator("application_id")
    @classmethod
    def _app_id(cls, v: str):
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*(\.[a-zA-Z][a-zA-Z0-9_]*)+", v):
            raise ValueError(
                f"'{v}' is not a valid Android application id: use dot-separated segments of "
                "letters, digits and _ each starting with a letter, e.g. com.example.shapes"
            )
        return v

    @field_validator("app_name")
    @classmethod
    def _name(cls, v: str):
        if not v.strip() or len(v) > 50:
            raise ValueError("app_name must be 1-50 characters")
        return v


class ModelDefinition(BaseModel):
    """The whole definition. ``base_dir`` (set by the loader) anchors relative paths."""

    model_config = Strict
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    task: Task = Task.image_classification
    input: InputSpec
    labels: str
    architecture: ArchitectureSection
    conventions: Conventions = Conventions()
    imported_from: ImportedFrom | None = None
    weights: str | None = None
    seed: int = 0
    targets: list[str] | None = None
    calibration: ImageSource
    validation: ImageSource
    android: AndroidSpec = AndroidSpec()
    tolerances: dict[str, Tolerance] = {}
    target_options: dict[str, dict[str, Any]] = {}
    base_dir: str = Field("", exclude=True)
    source_path: str = Field("", exclude=True)

    def path(self, rel: str) -> Path:
        return (Path(self.base_dir) / rel).resolve()

    def labels_list(self) -> list[str]:
        return read_labels(self.path(self.labels), self.source_path)

    @property
    def num_classes(self) -> int:
        return len(self.labels_list())

    def architecture_spec(self):
        """The resolved ArchitectureSpec (width-scaled, rounded, classes and resolution set)."""
        from .architectures.spec import RawArchitecture, RawRow, preset, resolve

        a = self.architecture
        res = (self.input.height, self.input.width)
        conv = {"padding": self.conventions.padding.value,
                "channel_rounding": self.conventions.channel_rounding.value}
        if a.preset:
            return preset(a.preset, a.width_multiplier, self.num_classes, res, **conv)
        stem = a.stem or StemSpec()
        head = a.head or HeadSpec()
        raw = RawArchitecture(
            (stem.out, stem.kernel, stem.stride, stem.activation),
            tuple(RawRow(r.kernel, r.exp, r.out, r.se, r.activation, r.stride, r.fused, r.residual)
                  for r in a.blocks),
            a.last_stage.conv, a.last_stage.activation, head.hidden, head.activation, head.dropout,
        )
        return resolve(raw, name=f"{self.name}", width_multiplier=a.width_multiplier,
                       num_classes=self.num_classes, resolution=res, in_channels=self.input.channels,
                       **conv)

    def sha256(self) -> str:
        return hashlib.sha256(Path(self.source_path).read_bytes()).hexdigest()


def read_labels(path: Path, source: str = "") -> list[str]:
    """One label per line; blank lines ignored; duplicates are an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(source or str(path), "labels", f"file not found: {path}") from None
    except UnicodeDecodeError:
        raise DefinitionError(source or str(path), "labels", f"{path} is not UTF-8 text") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) < 2:
        raise DefinitionError(source or str(path), "labels", f"{path} needs at least 2 labels, one per line")
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise DefinitionError(source or str(path), "labels", f"duplicate label {sorted(dup)[0]!r} in {path}")
    return labels


def _loc(err: dict) -> str:
    parts = []
    for p in err.get("loc", ()):
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in ("function-after[_from_list()]", "function-before[_from_str()]"):
            continue
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def _message(err: dict, model_fields: dict | None = None) -> str:
    kind = err.get("type", "")
    msg = err.get("msg", "invalid")
    if kind == "extra_forbidden":
        return "unknown key; " + (f"allowed: {', '.join(model_fields)}" if model_fields else "remove it")
    if kind == "missing":
        return "required field is missing"
    msg = msg.removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        inp = err.get("input")
        msg = f"{msg} (got {type(inp).__name__} {inp!r})" if not isinstance(inp, dict) else msg
    return msg


def _fields_at(loc: tuple) -> list[str] | None:
    """The allowed keys of the model that a bad key sits in (for 'unknown key' messages)."""
    model: Any = ModelDefinition
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        f = getattr(model, "model_fields", {}).get(part)
        if f is None:
            return None
        ann = f.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), None)
        if model is None and hasattr(ann, "model_fields"):
            model = ann
    return [k for k in getattr(model, "model_fields", {}) if k not in ("base_dir", "source_path")] if model else None


def load_definition(path: str | Path, *, check_files: bool = True) -> ModelDefinition:
    """Parse and check a definition file; every problem is a one-line DefinitionError."""
    import yaml

    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise DefinitionError(src, "", "file not found; give the path to a model definition .yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise DefinitionError(src, where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise DefinitionError(src, "", "the file must be a YAML mapping with name, input, labels, architecture, ...")
    bad_internal = [k for k in ("base_dir", "source_path") if k in data]
    if bad_internal:
        raise DefinitionError(src, bad_internal[0], "unknown key; remove it")
    data = {**data, "base_dir": str(path.parent.resolve()), "source_path": str(path)}
    try:
        d = ModelDefinition.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        e = errs[0]
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        fields = _fields_at(e["loc"]) if e.get("type") == "extra_forbidden" else None
        raise DefinitionError(src, _loc(e), _message(e, fields) + more) from None
    if check_files:
        check_definition_files(d)
    return d


def check_definition_files(d: ModelDefinition) -> None:
    """Files the definition names exist and fit: labels, weights, image sources, targets."""
    src = d.source_path
    d.labels_list()
    if d.weights is not None:
        w = d.path(d.weights)
        if not w.is_file():
            raise DefinitionError(src, "weights", f"file not found: {w} (omit 'weights' for a seeded initialisation)")
        if w.suffix != ".safetensors":
            raise DefinitionError(src, "weights", f"{w.name} must be a .safetensors file")
    for field in ("calibration", "validation"):
        s = getattr(d, field).source
        p = d.path(s)
        if not p.exists():
            raise DefinitionError(src, f"{field}.source", f"not found: {p} (a folder of images or a list file)")
    from .targets import KERAS_ROW, all_targets, resolve_target

    known = all_targets()
    if d.targets is not None:
        for i, t in enumerate(d.targets):
            if t not in known:
                raise DefinitionError(src, f"targets[{i}]", f"unknown target '{t}'; allowed: {', '.join(known)}")
    for section in ("tolerances", "target_options"):
        rows = [*known, KERAS_ROW] if section == "tolerances" else list(known)
        for t in getattr(d, section):
            if t not in rows:
                raise DefinitionError(src, f"{section}.{t}", f"unknown target '{t}'; allowed: {', '.join(rows)}")
    for t in d.target_options:
        resolve_target(d, t)  # options type-checked against the backend's model for the precision
    d.architecture_spec()

