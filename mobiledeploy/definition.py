"""The model definition: one strict YAML schema for network, weights, preprocessing, targets.

Every mistake becomes a ``DefinitionError`` whose one line names the file, the field and what is
allowed. Paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .errors import DefinitionError
from .safety import MAX_LABEL_CHARS, MAX_LABELS, clip, confine, read_text_file
from .schema import MAX_CHANNELS, Strict
from .tolerance import Tolerance

# a seeded model is built in memory before anything is written: keep it to a few GB at most
MAX_PARAMS = 300_000_000


class ColorOrder(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


class Layout(str, Enum):
    nhwc = "nhwc"
    nchw = "nchw"


def _task_registry():
    from .tasks import TASKS, all_tasks

    return TASKS, all_tasks()


# the registered tasks (``tasks.TASKS``), as the schema's enum: a new task is not listed here
Task = Enum("Task", {name.replace("-", "_"): name for name in _task_registry()[0]}, type=str)
Task.__doc__ = "A definition's ``task:``: one of the registered tasks (``mobiledeploy.tasks.TASKS``)."


def _app_runtimes() -> list[str]:
    from .capabilities import app_runtimes

    return app_runtimes()


# the app runtimes the registered backends name (``Backend.app_runtime``), the first the default
Runtime = Enum("Runtime", {rt: rt for rt in _app_runtimes()}, type=str)


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
    height: StrictInt = Field(ge=32, le=1024)
    width: StrictInt = Field(ge=32, le=1024)
    channels: Literal[3] = 3
    color_order: ColorOrder = ColorOrder.rgb
    pixel_range: tuple[StrictFloat, StrictFloat] = (0.0, 1.0)
    mean: tuple[StrictFloat, ...] = (0.0, 0.0, 0.0)
    std: tuple[StrictFloat, ...] = (1.0, 1.0, 1.0)
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
            raise ValueError(f"every std must be > 0, got {clip(list(v), 60)}")
        return v

    @model_validator(mode="after")
    def _lengths(self):
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ValueError(
                    f"{name} needs {self.channels} values (one per channel), got {len(getattr(self, name))}"
                )
        scale, bias = self.normalise_affine()
        if not all(math.isfinite(v) and abs(v) < 1e30 for v in scale + bias):
            raise ValueError("pixel_range, mean and std give a non-finite or absurd scale/bias; "
                             "use moderate values")
        return self

    def normalise_affine(self) -> tuple[list[float], list[float]]:
        """Per-channel (scale, bias) with y = scale * p + bias for p in [0, 255]."""
        lo, hi = self.pixel_range
        scale = [(hi - lo) / 255.0 / s for s in self.std]
        bias = [(lo - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        return scale, bias


class StemSpec(BaseModel):
    model_config = Strict
    out: StrictInt = Field(16, ge=1, le=MAX_CHANNELS)
    kernel: Literal[3, 5, 7] = 3
    stride: Literal[1, 2] = 2
    activation: Literal["relu", "relu6", "hswish"] = "hswish"


class LastStageSpec(BaseModel):
    model_config = Strict
    conv: StrictInt = Field(ge=1, le=MAX_CHANNELS)
    activation: Literal["relu", "relu6", "hswish"] = "hswish"


class HeadSpec(BaseModel):
    model_config = Strict
    hidden: StrictInt | None = Field(1024, ge=1, le=MAX_CHANNELS)
    activation: Literal["relu", "relu6", "hswish", "none"] = "hswish"
    dropout: StrictFloat = Field(0.2, ge=0.0, lt=1.0)


class BlockRow(BaseModel):
    """A bottleneck row: ``[kernel, exp, out, se, activation, stride]`` or this mapping."""

    model_config = Strict
    kernel: Literal[1, 3, 5, 7]
    exp: StrictInt = Field(ge=1, le=MAX_CHANNELS)
    out: StrictInt = Field(ge=1, le=MAX_CHANNELS)
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


class _ArchitectureBase(BaseModel):
    """A preset, or the search space spelled out (stem, rows, last stage, head); each task with
    head options adds its section (``Task.head_field``)."""

    model_config = Strict
    preset: Literal[PRESET_NAMES] | None = None  # type: ignore[valid-type]
    width_multiplier: StrictFloat = Field(1.0, gt=0.0, le=4.0)
    stem: StemSpec | None = None
    blocks: list[BlockRow] | None = Field(None, max_length=128)
    last_stage: LastStageSpec | None = None
    head: HeadSpec | None = None

    def head_sections(self) -> dict[str, Any]:
        """The tasks' head sections this definition sets, by field."""
        return {t.head_field: getattr(self, t.head_field) for t in _task_registry()[1]
                if t.head_field and getattr(self, t.head_field, None) is not None}

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
        heads = self.head_sections()
        for t in _task_registry()[1]:
            if t.head_field in heads and t.replaces_classifier_head and self.head is not None:
                raise ValueError(f"head is the classifier's; a {t.title} network has the {t.head_title} "
                                 f"(architecture.{t.head_field}): remove head")
        if len(heads) > 1:
            raise ValueError(f"give {' or '.join(heads)}, not both")
        return self


ArchitectureSection = create_model(
    "ArchitectureSection", __base__=_ArchitectureBase,
    **{t.head_field: (t.head_section() | None, None) for t in _task_registry()[1] if t.head_field})


class ImageSource(BaseModel):
    """A folder of labelled images (label = sub-folder name) or a list file ("path label").

    ``masks`` (segmentation): a folder of PNG class-id masks, one per image with the image's
    path relative to ``source`` and the suffix ``.png`` (``masks.py``).
    ``boxes`` (detection): a JSON file of labelled boxes keyed by the image's path relative to
    ``source`` (``boxes.py``).
    """

    model_config = Strict
    source: str = Field(min_length=1, max_length=4096)
    max_images: StrictInt | None = Field(None, ge=1)
    masks: str | None = None
    boxes: str | None = Field(None, min_length=1, max_length=4096)

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v: Any):
        return {"source": v} if isinstance(v, str) else v


class AndroidSpec(BaseModel):
    model_config = Strict
    application_id: str = Field("com.example.mobiledeploy", max_length=150)
    app_name: str = "mobiledeploy demo"
    runtime: Runtime = Runtime(_app_runtimes()[0])

    @field_validator("application_id")
    @classmethod
    def _app_id(cls, v: str):
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*(\.[a-zA-Z][a-zA-Z0-9_]*)+", v):
            raise ValueError(
                f"'{clip(v, 60)}' is not a valid Android application id: use dot-separated segments of "
                "letters, digits and _ each starting with a letter, e.g. com.example.shapes"
            )
        if any(len(seg) > 64 for seg in v.split(".")):
            raise ValueError("each segment of the application id is at most 64 characters "
                             "(it becomes a folder name)")
        return v

    @field_validator("app_name")
    @classmethod
    def _name(cls, v: str):
        if not v.strip() or len(v) > 50:
            raise ValueError("app_name must be 1-50 characters")
        if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t" for ch in v):
            # a lone surrogate cannot be written as UTF-8; other control characters break the XML
            raise ValueError("app_name must be printable characters (newline and tab allowed) "
                             f"(got {clip(v, 60)})")
        return v


class MetadataSpec(BaseModel):
    """What every artifact says about itself (TFLite metadata, Core ML, the ExecuTorch sidecar).

    All optional: the description defaults to one naming the task and labels.
    """

    model_config = Strict
    author: str = ""
    license: str = ""
    version: str = "1"
    description: str | None = None

    @field_validator("author", "license", "version", "description")
    @classmethod
    def _bounded(cls, v):
        if v is not None and len(v) > 2000:
            raise ValueError("must be at most 2000 characters")
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
    seed: StrictInt = Field(0, ge=0, le=2**32 - 1)
    targets: list[str] | None = None
    calibration: ImageSource
    validation: ImageSource
    android: AndroidSpec = AndroidSpec()
    metadata: MetadataSpec = MetadataSpec()
    tolerances: dict[str, Tolerance] = {}
    target_options: dict[str, dict[str, Any]] = {}
    # paths the definition names stay inside its folder unless this is set (documented in README)
    allow_outside_paths: bool = False
    base_dir: str = Field("", exclude=True)
    source_path: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _task(self):
        for other in _task_registry()[1]:  # what belongs to another task
            if other.name == self.task.value:
                continue
            if other.head_field and getattr(self.architecture, other.head_field, None) is not None:
                raise ValueError(f"architecture.{other.head_field} needs task: {other.name}")
            for field in ("calibration", "validation"):
                for truth in other.truth_fields:
                    if getattr(getattr(self, field), truth) is not None:
                        raise ValueError(f"{field}.{truth} needs task: {other.name}")
        self.task_spec().check_definition(self)
        return self

    def task_spec(self):
        """The definition's task (``tasks.get_task``)."""
        from .tasks import get_task

        return get_task(self.task.value)

    def path(self, rel: str) -> Path:
        return (Path(self.base_dir) / rel).resolve()

    @property
    def root(self) -> Path | None:
        """The folder every named path must stay in (None: ``allow_outside_paths``)."""
        return None if self.allow_outside_paths else Path(self.base_dir)

    def confined(self, rel: str, field: str) -> Path:
        """A path the definition names, resolved and refused if it leaves the definition's folder."""
        return confine(Path(self.base_dir) / rel, self.root, self.source_path, field)

    def labels_list(self) -> list[str]:
        return read_labels(self.confined(self.labels, "labels"), self.source_path)

    @property
    def num_classes(self) -> int:
        return len(self.labels_list())

    def architecture_spec(self):
        """The resolved ArchitectureSpec (width-scaled, rounded, classes and resolution set)."""
        from .errors import UserError

        try:
            return self._architecture_spec()
        except UserError as exc:
            if isinstance(exc, DefinitionError) or "architecture." not in str(exc):
                raise
            field, _, msg = str(exc).partition(": ")
            raise DefinitionError(self.source_path, field, msg) from None

    def _architecture_spec(self):
        from .architectures.spec import RawArchitecture, RawRow, preset, resolve

        a = self.architecture
        res = (self.input.height, self.input.width)
        conv = {"padding": self.conventions.padding.value,
                "channel_rounding": self.conventions.channel_rounding.value}
        task = self.task_spec()
        conv.update(task.spec_options(getattr(a, task.head_field) if task.head_field else None))
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

    def description_text(self) -> str:
        """The artifacts' description: ``metadata.description`` or one naming the task and labels."""
        if self.metadata.description:
            return self.metadata.description
        labels = self.labels_list()
        shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
        return (f"{self.name}: {self.task.value} ({len(labels)} classes: {shown}), "
                f"{self.input.height}x{self.input.width} {self.input.color_order.value.upper()} input; "
                "built by mobiledeploy")

    def sha256(self) -> str:
        return hashlib.sha256(Path(self.source_path).read_bytes()).hexdigest()


def read_labels(path: Path, source: str = "") -> list[str]:
    """One label per line; blank lines ignored; duplicates are an error."""
    src = source or str(path)
    text = read_text_file(path, src, "labels")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) < 2:
        raise DefinitionError(src, "labels", f"{clip(str(path))} needs at least 2 labels, one per line")
    if len(labels) > MAX_LABELS:
        raise DefinitionError(src, "labels", f"{clip(str(path))} has {len(labels)} labels; "
                                             f"at most {MAX_LABELS}")
    long = next((x for x in labels if len(x) > MAX_LABEL_CHARS), None)
    if long is not None:
        raise DefinitionError(src, "labels", f"label {clip(long, 40)} is longer than "
                                             f"{MAX_LABEL_CHARS} characters")
    seen: set[str] = set()
    for x in labels:
        if x in seen:
            raise DefinitionError(src, "labels", f"duplicate label {clip(x, 60)!r} in {clip(str(path))}")
        seen.add(x)
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
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "finite_number":
        inp = err.get("input")
        # the input may be a whole expanded structure: quote a bounded slice of it
        msg = f"{msg} (got {type(inp).__name__} {clip(inp, 60)})" if not isinstance(inp, dict) else msg
    return clip(msg, 300)


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
    from .safety import load_yaml_bounded

    path = Path(path)
    src = clip(str(path), 200)
    if path.is_dir():
        raise DefinitionError(src, "", "is a folder; give the path to a model definition .yaml")
    if not path.is_file():
        raise DefinitionError(src, "", "file not found; give the path to a model definition .yaml")
    data = load_yaml_bounded(path, src)
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
        raise DefinitionError(src, clip(_loc(e), 120), _message(e, fields) + more) from None
    if check_files:
        check_definition_files(d)
    return d


def check_definition_files(d: ModelDefinition) -> None:
    """Files the definition names exist and fit: labels, weights, image sources, targets."""
    src = d.source_path
    d.labels_list()
    if d.weights is not None:
        w = d.confined(d.weights, "weights")
        if w.is_dir():
            raise DefinitionError(src, "weights", f"{clip(str(w))} is a folder; give the .safetensors file")
        if not w.is_file():
            raise DefinitionError(src, "weights", f"file not found: {clip(str(w))} "
                                                  "(omit 'weights' for a seeded initialisation)")
        if w.suffix != ".safetensors":
            raise DefinitionError(src, "weights", f"{clip(w.name)} must be a .safetensors file")
    for field in ("calibration", "validation"):
        s = getattr(d, field).source
        p = d.confined(s, f"{field}.source")
        if p == Path(p.anchor) or p == Path.home().resolve():
            raise DefinitionError(src, f"{field}.source", f"{clip(str(p))} is a whole filesystem or home "
                                                          "folder; give the folder of images or a list file")
        if not p.exists():
            raise DefinitionError(src, f"{field}.source", f"not found: {clip(str(p))} "
                                                          "(a folder of images or a list file)")
        m = getattr(d, field).masks
        if m is not None:
            mp = d.confined(m, f"{field}.masks")
            if not mp.is_dir():
                raise DefinitionError(src, f"{field}.masks", f"not found: {clip(str(mp))} (a folder of PNG "
                                      "class-id masks, one per image at the image's relative path)")
        b = getattr(d, field).boxes
        if b is not None and not d.confined(b, f"{field}.boxes").is_file():
            raise DefinitionError(src, f"{field}.boxes", f"not found: {clip(str(d.path(b)))} (a JSON file of "
                                  "labelled boxes, see mobiledeploy/tasks/detection/boxes.py)")
    from .targets import KERAS_ROW, all_targets, resolve_target

    known = all_targets()
    if d.targets is not None:
        for i, t in enumerate(d.targets):
            if t not in known:
                raise DefinitionError(src, f"targets[{i}]",
                                      f"unknown target '{clip(t, 40)}'; allowed: {', '.join(known)}")
    for section in ("tolerances", "target_options"):
        rows = [*known, KERAS_ROW] if section == "tolerances" else list(known)
        for t in getattr(d, section):
            if t not in rows:
                raise DefinitionError(src, f"{section}.{clip(t, 40)}",
                                      f"unknown target '{clip(t, 40)}'; allowed: {', '.join(rows)}")
    for t, opts in d.target_options.items():
        check_option_values(opts, src, f"target_options.{t}")
        resolve_target(d, t)  # options type-checked against the backend's model for the precision
    check_model_size(d)
    from .images import probe_image, select_images

    for field in ("calibration", "validation"):  # every image decodes: no surprise inside a converter
        images = [p for p, _ in select_images(d, field)]
        for p in images:
            probe_image(p)
        d.task_spec().check_truth_files(d, field, images)  # and so does its truth (masks, boxes)


def check_option_values(opts: dict[str, Any], src: str, where: str) -> None:
    """Target option values are finite, and counts (``*_samples``, ``*_images``) are >= 1."""
    for k, v in opts.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise DefinitionError(src, f"{where}.{clip(k, 40)}", f"{v} is not a finite number")
        if isinstance(v, bool) or not isinstance(v, int):
            continue
        if k.endswith(("_samples", "_images", "_runs", "_threads")) and v < 1:
            raise DefinitionError(src, f"{where}.{clip(k, 40)}", f"must be >= 1, got {v}")
        if abs(v) > 2**31 - 1:
            raise DefinitionError(src, f"{where}.{clip(k, 40)}", f"{clip(v, 30)} is out of range")


def check_model_size(d: ModelDefinition) -> None:
    """The architecture resolves and stays within MAX_PARAMS (a seeded model is built in memory)."""
    import numpy as np

    from .architectures.reference import expected_shapes

    spec = d.architecture_spec()
    params = sum(int(np.prod(s)) for s in expected_shapes(spec).values())
    if params > MAX_PARAMS:
        raise DefinitionError(d.source_path, "architecture",
                              f"{params / 1e6:.0f}M parameters; at most {MAX_PARAMS // 1_000_000}M "
                              "(check exp/out/width_multiplier and the labels count)")

