"""The Android camera app: a Gradle project rendered from ``templates/android`` and a typed context.

The context is built only from the model definition and the bundle manifest. Everything the
device can read from the model itself (input dtype, int8/uint8 scale and zero point) is read at
run time in Kotlin, so the sources do not depend on a built model; the host-read values go to the
golden test's assets, where the instrumented test checks the device reads the same.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import UserError
from ..safety import clip
from ..tasks import DEFAULT_TASK

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

# Every dependency version of the generated project, in one place. ExecuTorch's runtime must read
# .pte files from the host exporter, so its version follows pyproject's executorch pin.
VERSIONS: dict[str, str] = {
    "gradle": "8.9",
    "agp": "8.7.3",
    "kotlin": "2.0.21",
    "core_ktx": "1.15.0",
    "activity": "1.9.3",
    "camerax": "1.4.1",
    "litert": "1.4.0",
    "litert_metadata": "1.0.1",  # org.tensorflow:tensorflow-lite-metadata's new home
    "executorch": "1.4.1",
    "junit": "4.13.2",
    "androidx_junit": "1.2.1",
    "androidx_test_runner": "1.6.2",
    "compile_sdk": "35",
    "target_sdk": "35",
    "min_sdk": "24",
    "jvm": "17",
}

RUNTIMES = ("litert", "executorch")
# which artifact an app prefers: int8 (smallest, fastest on phones), then fp32, then fp16
_PRECISION_PREFERENCE = ("int8", "fp32", "fp16")
GOLDEN_SAMPLES = 16
_KOTLIN_HARD_KEYWORDS = {
    "as", "break", "class", "continue", "do", "else", "false", "for", "fun", "if", "in",
    "interface", "is", "null", "object", "package", "return", "super", "this", "throw", "true",
    "try", "typealias", "typeof", "val", "var", "when", "while",
    # Java keywords: Android tooling rejects them in application ids
    "abstract", "boolean", "byte", "case", "catch", "char", "const", "default", "double", "enum",
    "extends", "final", "finally", "float", "goto", "implements", "import", "instanceof", "int",
    "long", "native", "new", "private", "protected", "public", "short", "static", "strictfp",
    "switch", "synchronized", "throws", "transient", "void", "volatile",
}  # fmt: skip
_APP_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*(\.[a-zA-Z][a-zA-Z0-9_]*)+")


class GoldenSample(BaseModel):
    """One validation image the instrumented test runs, with what the host expects."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str  # inside androidTest assets/golden/
    label: str | None
    label_index: int | None
    expected_top1: int | None  # host top-1 (or the label index when no host run was possible)
    host_outputs: list[float] | None = None
    # segmentation: the host's class id per pixel (row-major, input size), run-length encoded as
    # [class, count, class, count, ...]; host_outputs stays None (H*W*classes floats)
    expected_mask_rle: list[int] | None = None
    # detection: the host's detections of the same .tflite (its TFLite_Detection_PostProcess), each
    # [ymin, xmin, ymax, xmax, class, score], best first
    expected_detections: list[list[float]] | None = None
    source: str = Field("", exclude=True)  # the image on the host, copied as ``file``


class AppContext(BaseModel):
    """Everything the templates see. Built by ``context_from_definition``/``context_from_bundle``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    task: str = DEFAULT_TASK  # a registered task that some app runtime serves (_task)
    max_detections: int = 10  # detection: rows of the post-processing op's outputs
    application_id: str
    app_name: str = Field(min_length=1, max_length=50)
    runtime: Literal["litert", "executorch"]
    model_target: str
    model_asset: str
    labels: list[str] = Field(min_length=2)
    input_height: int = Field(ge=1)
    input_width: int = Field(ge=1)
    channels: Literal[3] = 3
    color_order: Literal["rgb", "bgr"] = "rgb"
    scale: list[float]
    bias: list[float]
    layout: Literal["nhwc", "nchw"] = "nhwc"
    resize: Literal["bilinear", "nearest"] = "bilinear"
    # read from the bundle's model on the host (None without a model); the app reads its own copy
    input_dtype: Literal["float32", "int8", "uint8"] | None = None
    input_scale: float | None = None
    input_zero_point: int | None = None
    versions: dict[str, str] = Field(default_factory=lambda: dict(VERSIONS))
    golden: list[GoldenSample] = []
    golden_expected_source: Literal["host", "label", "none"] = "none"
    golden_min_agreement: float = Field(0.9, ge=0, le=1)
    model_path: str = Field("", exclude=True)  # the model file on the host, when there is one
    sidecar_asset: str = ""  # ExecuTorch: the .pte's sidecar in assets (ArtifactCheck reads it)
    sidecar_path: str = Field("", exclude=True)  # ... and that sidecar on the host
    # detection: the bundle's decoding spec (with the anchors' digest) and the anchors themselves
    # (float32 [yc, xc, h, w] each, flattened), written as assets/anchors.bin for the core's SsdDecoder
    decoding: dict | None = None
    anchors: list[float] = Field(default_factory=list, exclude=True)

    @field_validator("application_id")
    @classmethod
    def _app_id(cls, v: str) -> str:
        check_application_id(v)
        return v

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, v: str) -> str:
        import unicodedata

        # a lone surrogate cannot be written as UTF-8; control characters are not allowed in XML 1.0
        if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t" for ch in v):
            raise ValueError(f"app_name must be printable characters (newline and tab allowed; got {clip(v, 60)})")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        # labels.txt is one label per line: a line break cannot be represented, so refuse it
        for i, lab in enumerate(v):
            if not lab.strip() or "\n" in lab or "\r" in lab:
                raise ValueError(f"label {i} ({clip(lab, 60)!r}) must be non-empty and on one line")
        return v

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        from ..capabilities import check_app

        check_app(v)  # a task no app serves is refused in one line, quoting the capability table
        return v

    @property
    def segmentation(self) -> bool:
        """The task draws a class per pixel (its output is dense label scores)."""
        from ..tasks import get_task

        return get_task(self.task).output_kind == "dense"

    @property
    def detection(self) -> bool:
        """The task draws boxes (its outputs are a detector's heads)."""
        from ..tasks import get_task

        return get_task(self.task).output_kind == "heads"

    @property
    def output_size(self) -> int:
        """Floats the model writes per frame: class scores, or a score per class and pixel; for a
        detector the packed detections [count, then ymin, xmin, ymax, xmax, class, score each]."""
        if self.detection:
            return 1 + 6 * self.max_detections
        return self.num_classes * (self.input_height * self.input_width if self.segmentation else 1)

    @property
    def palette(self) -> list[int]:
        """ARGB overlay colour per class (the report's palette; background transparent)."""
        from ..tasks.segmentation.masks import palette

        return [0 if c == 0 else (0xFF << 24) | (int(r) << 16) | (int(g) << 8) | int(b)
                for c, (r, g, b) in enumerate(palette(self.num_classes).tolist())]

    @property
    def package_path(self) -> str:
        return self.application_id.replace(".", "/")

    @property
    def accelerators(self) -> list[str]:
        return ["xnnpack", "gpu", "nnapi"] if self.runtime == "litert" else ["xnnpack"]


def check_application_id(app_id: str) -> None:
    """An Android application id usable as a Kotlin package; otherwise a one-line UserError."""
    if not _APP_ID.fullmatch(app_id):
        raise UserError(f"android.application_id: '{clip(app_id, 60)}' is not a valid application id; use "
                        "dot-separated segments of letters, digits and _, e.g. com.example.shapes")
    if len(app_id) > 150 or any(len(seg) > 64 for seg in app_id.split(".")):
        # each segment becomes a folder of the Kotlin sources: keep names well under NAME_MAX
        raise UserError("android.application_id: at most 150 characters and 64 per segment")
    bad = [s for s in app_id.split(".") if s in _KOTLIN_HARD_KEYWORDS]
    if bad:
        raise UserError(f"android.application_id: segment '{bad[0]}' of '{app_id}' is a Java/Kotlin "
                        "keyword; rename it (e.g. com.example.shapes)")


# --------------------------------------------------------------------------- escaping


def kotlin_string(s: str) -> str:
    """``s`` as a double-quoted Kotlin (and Gradle KTS) string literal."""
    out = []
    for ch in str(s):
        if ch in '\\"$':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def android_string(s: str) -> str:
    """Android string-resource escaping (backslash, quotes, newline, leading @ or ?).

    XML's own escaping (&, <, >) is left to autoescape of the .xml templates.
    """
    out = []
    for ch in str(s):
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out)
    return "\\" + text if text[:1] in ("@", "?") else text


def kotlin_float(x: float) -> str:
    """A float32 Kotlin literal that reads back as the same float32 value."""
    import numpy as np

    v = float(np.float32(x))
    if v != v or v in (float("inf"), float("-inf")):
        raise UserError(f"cannot write {x!r} into the app's preprocessing")
    return repr(v) + "f"


# --------------------------------------------------------------------------- context


def context_from_definition(definition, *, runtime: str | None = None,
                            model_target: str | None = None) -> AppContext:
    """The app context from a definition alone (no bundle: no model, no golden images)."""
    from ..capabilities import check_app
    from ..targets import get_target

    rt = _runtime(runtime or definition.android.runtime.value)
    check_app(definition.task.value, rt)
    target = model_target or model_targets(rt)[0]
    _check_target_runtime(target, rt)
    det = definition.architecture_spec().detection
    decoding, anchors = _decoding(definition) if det is not None else (None, [])
    inp = definition.input
    scale, bias = inp.normalise_affine()
    color_order = inp.color_order.value
    if rt == "litert":  # a TFLite model takes what its metadata says (backends/tflite/metadata.input_plan)
        from ..backends.tflite.metadata import planned_app_preprocessing
        from ..targets import resolve_target

        pre = planned_app_preprocessing(definition, resolve_target(definition, target))
        scale, bias, color_order = pre["scale"], pre["bias"], pre["color_order"]
    return AppContext(
        name=definition.name,
        task=definition.task.value,
        max_detections=det.options.max_detections if det is not None else 10,
        application_id=definition.android.application_id,
        app_name=definition.android.app_name,
        runtime=rt,
        model_target=target,
        model_asset=Path(get_target(target).artifact_path(definition.name)).name,
        labels=definition.labels_list(),
        input_height=inp.height,
        input_width=inp.width,
        channels=inp.channels,
        color_order=color_order,
        scale=scale,
        bias=bias,
        # the .pte takes the PyTorch reference's NCHW input; TFLite follows the definition
        layout="nchw" if rt == "executorch" else inp.layout.value,
        resize=inp.resize,
        sidecar_asset=Path(get_target(target).artifact_path(definition.name)).stem + ".json"
        if rt == "executorch" else "",
        decoding=decoding,
        anchors=anchors,
    )


def _decoding(definition) -> tuple[dict, list[float]]:
    """A detector's decoding spec (as the manifest records it) and its anchors, flattened."""
    from ..tasks import get_task

    facts = get_task(definition).manifest_facts(definition)["decoding"]
    from ..tasks.detection.ssdlite import anchors

    return facts, [float(v) for v in anchors(definition.architecture_spec()).reshape(-1)]


def context_from_bundle(bundle_dir: str | Path, runtime: str | None = None,
                        model_target: str | None = None, *, definition=None) -> AppContext:
    """The app context for a finished bundle (its manifest, definition, model, golden inputs).

    ``definition`` (the loaded source definition) helps find the validation images when the
    bundle's ``model/definition.yaml`` names them relative to a folder that is elsewhere.
    """
    bundle = Path(bundle_dir)
    from ..bundle import load_manifest
    from ..trust import inside, verify_bundle

    manifest = load_manifest(bundle)
    verify_bundle(bundle, manifest)  # paths inside the bundle, every recorded hash as built
    if definition is None:
        definition = _bundle_definition(bundle)
    artifacts = {a["target"]: inside(bundle, a["path"], a["target"]) for a in manifest["artifacts"]}
    return context_from_artifacts(definition, artifacts, runtime=runtime, model_target=model_target,
                                  bundle_dir=bundle, where=str(bundle / "manifest.json"))


def context_from_artifacts(definition, artifacts: dict[str, str | Path], *, runtime: str | None = None,
                           model_target: str | None = None, bundle_dir: str | Path | None = None,
                           where: str = "build") -> AppContext:
    """The app context from a definition and built artifacts ({target: file}), before any manifest.

    This is what the build graph calls: the manifest is written last, after the app.
    """
    rt = _runtime(runtime or definition.android.runtime.value)
    if model_target is None:
        wanted = model_targets(rt)
        model_target = next((t for t in wanted if t in artifacts), None)
        if model_target is None:
            raise UserError(f"{where}: no {' or '.join(wanted)} artifact for runtime {rt}; "
                            f"build one (--target {wanted[0]}) or pick the other --runtime")
    elif model_target not in artifacts:
        raise UserError(f"{where}: no artifact for target '{model_target}'; "
                        f"present: {', '.join(sorted(artifacts))}")
    ctx = context_from_definition(definition, runtime=rt, model_target=model_target)
    model_path = Path(artifacts[model_target])
    if not model_path.is_file():
        raise UserError(f"{model_path}: listed for {model_target} but missing; rebuild the bundle")
    updates: dict = {"model_asset": model_path.name, "model_path": str(model_path.resolve())}
    if rt == "litert":
        updates.update(_tflite_input(model_path))
        # the constants follow what the model's metadata says (the app checks it again at start)
        from ..backends.tflite.metadata import app_preprocessing

        scale, bias = definition.input.normalise_affine()  # a model without metadata: the definition's
        updates.update(app_preprocessing(model_path) or {
            "scale": scale, "bias": bias, "color_order": definition.input.color_order.value})
    elif model_path.with_suffix(".json").is_file():
        updates.update(sidecar_asset=model_path.with_suffix(".json").name,
                       sidecar_path=str(model_path.with_suffix(".json").resolve()))
    ctx = ctx.model_copy(update=updates)
    golden, source, min_agree = _golden_samples(ctx, definition, model_path,
                                                Path(bundle_dir) if bundle_dir else None)
    return ctx.model_copy(update={"golden": golden, "golden_expected_source": source,
                                  "golden_min_agreement": min_agree})


def model_targets(rt: str) -> tuple[str, ...]:
    """The targets whose backend the app runtime ``rt`` loads, most preferred first."""
    from ..targets import all_targets

    found = [t for t in all_targets().values() if t.backend_class().app_runtime == rt]
    order = {p: i for i, p in enumerate(_PRECISION_PREFERENCE)}
    return tuple(t.name for t in sorted(found, key=lambda t: (order.get(t.precision, 9), t.order)))


def _runtime(rt: str) -> str:
    if rt not in RUNTIMES:
        raise UserError(f"unknown runtime '{rt}'; allowed: {', '.join(RUNTIMES)}")
    return rt


def _check_target_runtime(target: str, rt: str) -> None:
    if target not in model_targets(rt):
        raise UserError(f"target '{target}' cannot run on runtime {rt}; use one of "
                        f"{', '.join(model_targets(rt))}")


def _bundle_definition(bundle: Path):
    from ..definition import load_definition

    path = bundle / "model" / "definition.yaml"
    if not path.is_file():
        raise UserError(f"{path}: not found; is {bundle} a finished bundle (mobiledeploy build)?")
    d = load_definition(path, check_files=False)
    if not d.path(d.labels).is_file():
        # labels travel in the bundle next to the definition when the original folder is gone
        for cand in (bundle / "model" / "labels.txt", bundle / "labels.txt"):
            if cand.is_file():
                return d.model_copy(update={"labels": str(cand.resolve())})
    return d


def _tflite_input(model_path: Path) -> dict:
    """dtype, scale and zero point of the .tflite model's first input, read on the host."""
    from .._deps import require

    interp_mod = require("ai_edge_litert.interpreter", "reading the app model's input tensor")
    det = interp_mod.Interpreter(model_path=str(model_path)).get_input_details()[0]
    import numpy as np

    dtype = np.dtype(det["dtype"]).name
    if dtype not in ("float32", "int8", "uint8"):
        raise UserError(f"{model_path}: input dtype {dtype} is not supported by the app "
                        "(float32, int8, uint8)")
    scale, zp = det.get("quantization", (0.0, 0))
    shape = [int(s) for s in det["shape"]]
    layout = "nchw" if len(shape) == 4 and shape[1] == 3 and shape[3] != 3 else "nhwc"
    out = {"input_dtype": dtype, "layout": layout}
    if dtype != "float32":
        out.update(input_scale=float(scale), input_zero_point=int(zp))
    return out


# --------------------------------------------------------------------------- preprocessing (host)


def preprocess(ctx: AppContext, rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3), already resized -> the model's input (1, ...) exactly as the app does.

    Same float32 arithmetic as Preprocessor.kt: colour order, y = scale * p + bias, layout, then
    round-half-even quantization with the model's input scale and zero point.
    """
    import numpy as np

    p = rgb.astype(np.float32)
    if ctx.color_order == "bgr":
        p = p[..., ::-1]
    x = p * np.asarray(ctx.scale, np.float32) + np.asarray(ctx.bias, np.float32)
    if ctx.layout == "nchw":
        x = x.transpose(2, 0, 1)
    x = np.ascontiguousarray(x[None], dtype=np.float32)
    if ctx.input_dtype in ("int8", "uint8"):
        lo, hi = (-128, 127) if ctx.input_dtype == "int8" else (0, 255)
        q = np.rint(x / np.float32(ctx.input_scale)) + ctx.input_zero_point
        return np.clip(q, lo, hi).astype(ctx.input_dtype)
    return x


def _golden_samples(ctx: AppContext, definition, model_path: Path, bundle: Path | None):
    """A spread of validation images with host top-1 (host run of the same model) or labels."""
    from ..images import decode_resized, list_images

    try:
        src = definition.path(definition.validation.source)
        items = list_images(src, ctx.labels, root=definition.root)
    except UserError:
        return [], "none", 0.0
    if len(items) > GOLDEN_SAMPLES:
        step = len(items) / GOLDEN_SAMPLES
        items = [items[int(i * step)] for i in range(GOLDEN_SAMPLES)]
    outputs = _host_outputs(ctx, model_path, [
        decode_resized(p, ctx.input_height, ctx.input_width, ctx.resize) for p, _ in items])
    if ctx.segmentation:
        return _golden_masks(ctx, items, outputs)
    if ctx.detection:
        return _golden_detections(ctx, items, outputs)
    golden = []
    for i, (p, lab) in enumerate(items):
        out = outputs[i] if outputs is not None else None
        golden.append(GoldenSample(
            file=f"{i:02d}_{p.name}", label=ctx.labels[lab] if lab is not None else None,
            label_index=lab, expected_top1=int(max(range(len(out)), key=out.__getitem__))
            if out is not None else lab, host_outputs=out, source=str(p)))
    golden = [g for g in golden if g.expected_top1 is not None]
    if outputs is not None:
        # the same model on the same pixels: only near-ties may flip between CPU kernels
        return golden, "host", 0.9
    acc = _reported_accuracy(bundle, ctx.model_target) if bundle else None
    return golden, "label", max(0.0, round((acc if acc is not None else 0.7) - 0.2, 3))


def rle(ids) -> list[int]:
    """[value, run length, ...] of a flat sequence of class ids."""
    import numpy as np

    a = np.asarray(ids).reshape(-1)
    if a.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    lengths = np.diff(np.r_[starts, a.size])
    return [int(v) for pair in zip(a[starts].tolist(), lengths.tolist(), strict=True) for v in pair]


def _golden_masks(ctx: AppContext, items, outputs):
    """Segmentation golden samples: the host's mask per image (argmax over the class axis)."""
    import numpy as np

    if outputs is None:  # no host run: nothing to compare a device mask with
        return [], "none", 0.0
    golden = []
    for i, (p, _lab) in enumerate(items):
        # a channels-last model (TFLite): (H, W, classes) flattened
        logits = np.asarray(outputs[i], np.float32).reshape(ctx.input_height, ctx.input_width, -1)
        golden.append(GoldenSample(file=f"{i:02d}_{p.name}", label=None, label_index=None, expected_top1=None,
                                   expected_mask_rle=rle(logits.argmax(-1)), source=str(p)))
    # the same model on the same pixels: only near-tie pixels may flip between CPU kernels
    return golden, "host", 0.99


def _golden_detections(ctx: AppContext, items, outputs):
    """Detection golden samples: the host's detections per image (the same file's op, on LiteRT)."""
    if outputs is None:  # no host run: nothing to compare the device's boxes with
        return [], "none", 0.0
    golden = []
    for i, (p, _lab) in enumerate(items):
        packed = outputs[i]
        n = int(packed[0])
        dets = [[round(float(v), 6) for v in packed[1 + 6 * k: 7 + 6 * k]] for k in range(n)]
        golden.append(GoldenSample(file=f"{i:02d}_{p.name}", label=None, label_index=None, expected_top1=None,
                                   expected_detections=dets, source=str(p)))
    # the same model on the same pixels: a box near the score threshold may come or go between kernels
    return golden, "host", 0.9


def _host_detections(interp, x) -> list[float]:
    """One image through a detector's signature: [count, ymin, xmin, ymax, xmax, class, score, ...]."""
    run = interp.get_signature_runner()
    t = run(input=x)
    n = int(t["num_detections"].ravel()[0])
    out = [float(n)]
    for k in range(int(t["detection_scores"].shape[-1])):
        out += [float(v) for v in t["detection_boxes"][0, k]] + [float(t["detection_classes"][0, k]),
                                                                 float(t["detection_scores"][0, k])]
    return out


def _host_outputs(ctx: AppContext, model_path: Path, images: list) -> list[list[float]] | None:
    """The model's outputs on the host (LiteRT only), dequantized; None when it cannot run here."""
    if ctx.runtime != "litert":
        return None
    from .._deps import available
    from ..backends.tflite.backend import dequantize, make_interpreter

    if not available("ai_edge_litert"):
        return None
    interp = make_interpreter(model_path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if ctx.detection:
        return [_host_detections(interp, preprocess(ctx, rgb)) for rgb in images]
    results = []
    for rgb in images:  # the app's own preprocessing, not validation's: that is what is golden
        interp.set_tensor(inp["index"], preprocess(ctx, rgb))
        interp.invoke()
        results.append([float(v) for v in dequantize(interp.get_tensor(out["index"]), out).reshape(-1)])
    return results


def _reported_accuracy(bundle: Path, target: str) -> float | None:
    try:
        report = json.loads((bundle / "report" / "validation.json").read_text(encoding="utf-8"))
        row = next(r for r in report.get("results", []) if r.get("target") == target)
        return float(row["metrics"]["top1_accuracy"])
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- rendering

_RUNTIME_ONLY = {"LiteRtClassifier.kt.j2": "litert", "ExecuTorchClassifier.kt.j2": "executorch",
                 "TfliteMetadataCheck.kt.j2": "litert", "SidecarCheck.kt.j2": "executorch"}
# template files only one task family renders (tasks.Task.app_family)
_FAMILY_ONLY = {"Segmentation.kt.j2": "segmenter", "Detection.kt.j2": "detector",
                "Masks.kt.j2": "segmenter", "MasksTest.kt.j2": "segmenter",
                "Detections.kt.j2": "detector", "DetectionsTest.kt.j2": "detector",
}

def _environment(template_dir: Path):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".xml.j2"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(kotlin_string=kotlin_string, android_string=android_string,
                       kotlin_float=kotlin_float, json=lambda v: json.dumps(v),
                       one_line=lambda v: " ".join(str(v).split()))
    return env


def template_dir() -> Path:
    """The shipped ``templates/android`` folder."""
    from ..resources import resource_dir

    return resource_dir("templates") / "android"


MARKER = ".mobiledeploy-app.json"  # the record of what `app` wrote: only these files are ever replaced
_LEGACY_SIGNATURE = "Generated by `mobiledeploy app`"  # README line of projects from before the record


def render_android_app(ctx: AppContext, out_dir: str | Path, *, copy_models: bool = True,
                       force: bool = False) -> Path:
    """Render the Gradle project for ``ctx`` into ``out_dir``.

    With ``copy_models`` and a context built from a model (``context_from_bundle`` /
    ``context_from_artifacts``) the model goes to ``app/src/main/assets`` and the golden images with
    ``golden_inputs.json`` to ``app/src/androidTest/assets/golden``; ``labels.txt`` is always
    written. The files written are recorded in ``.mobiledeploy-app.json``: a later render replaces
    and removes only recorded files and keeps everything else (local.properties, build/, a
    developer's own files). A non-empty folder without that record is refused unless ``force``
    (then only the files this render produces are overwritten).
    """
    out = Path(out_dir)
    owned = _owned_files(out, force)
    src = template_dir()
    env = _environment(src)
    with_models = bool(copy_models and ctx.model_path and ctx.golden)
    from ..tasks import get_task

    family = get_task(ctx.task).app_family
    values = {**ctx.model_dump(), "ctx": ctx, "package": ctx.application_id,
              "num_classes": ctx.num_classes, "accelerators": ctx.accelerators,
              "unit_fixtures": _unit_fixtures(ctx), "with_models": with_models}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(_default_dir_mode())  # mkdtemp makes 0700; the project is an ordinary folder
    try:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = path.relative_to(src).as_posix()
            if _RUNTIME_ONLY.get(path.name, ctx.runtime) != ctx.runtime or "__pycache__" in rel:
                continue
            if _FAMILY_ONLY.get(path.name, family) != family:
                continue
            dest = tmp / rel.replace("__package__", ctx.package_path).removesuffix(".j2")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".j2"):
                dest.write_text(env.get_template(rel).render(values), encoding="utf-8")
            else:
                shutil.copyfile(path, dest)
            if os.access(path, os.X_OK) or dest.name == "gradlew":
                dest.chmod(0o755)
        assets = tmp / "app/src/main/assets"
        assets.mkdir(parents=True, exist_ok=True)
        (assets / "labels.txt").write_text("".join(lab + "\n" for lab in ctx.labels), encoding="utf-8")
        if ctx.detection and ctx.anchors:
            import numpy as np

            (assets / "anchors.bin").write_bytes(np.asarray(ctx.anchors, "<f4").tobytes())
        if copy_models and ctx.model_path:
            _copy_models(ctx, tmp)
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        record = {"generator": "mobiledeploy app", "version": _version(), "files": written}
        (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        _install_project(tmp, out, owned, set(written))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_output_dir(out_dir: str | Path, force: bool = False) -> None:
    """Refuse ``out_dir`` up front (before any bundle is read) when ``render_android_app`` would."""
    _owned_files(Path(out_dir), force)


def _copy_models(ctx: AppContext, tmp: Path) -> None:
    shutil.copyfile(ctx.model_path, tmp / "app/src/main/assets" / ctx.model_asset)
    if ctx.sidecar_path:
        shutil.copyfile(ctx.sidecar_path, tmp / "app/src/main/assets" / ctx.sidecar_asset)
    if not ctx.golden:
        return
    gdir = tmp / "app/src/androidTest/assets/golden"
    gdir.mkdir(parents=True, exist_ok=True)
    for g in ctx.golden:
        if not Path(g.source).is_file():
            raise UserError(f"{g.source}: golden image missing; rebuild the app context")
        shutil.copyfile(g.source, gdir / g.file)
    doc = {
        "name": ctx.name, "target": ctx.model_target, "runtime": ctx.runtime,
        "expected_source": ctx.golden_expected_source, "min_agreement": ctx.golden_min_agreement,
        "input": {"dtype": ctx.input_dtype, "scale": ctx.input_scale,
                  "zero_point": ctx.input_zero_point},
        "samples": [g.model_dump() for g in ctx.golden],
    }
    (gdir / "golden_inputs.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _version() -> str:
    from .. import __version__

    return __version__


def _default_dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _owned_files(out: Path, force: bool) -> set[str] | None:
    """Files a previous render recorded in ``out`` (None: ``out`` is new or empty).

    A non-empty folder without the record is refused unless ``force``.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another output folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    marker = out / MARKER
    if marker.is_file():
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
            files = record["files"]
            if record.get("generator") != "mobiledeploy app" or not isinstance(files, list):
                raise ValueError
            return {f for f in files if isinstance(f, str) and _inside(out, f)}
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if not force:
                raise UserError(f"{marker}: not a record mobiledeploy wrote; pass --force to overwrite "
                                "the generated files (others are kept) or choose a new folder") from None
            return set()
    readme = out / "README.md"
    try:
        legacy = readme.is_file() and _LEGACY_SIGNATURE in readme.read_text(encoding="utf-8")[:2000]
    except (OSError, UnicodeDecodeError):
        legacy = False
    if legacy and (out / "settings.gradle.kts").is_file():
        # a project from before the record: its generated files are the ones a render produces,
        # plus the assets a render with models copies in
        return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                and (p.suffix in (".tflite", ".pte") or "androidTest/assets/golden" in p.as_posix())}
    if force:
        return set()
    raise UserError(f"{out}: exists and is not a generated Android project (no {MARKER}); "
                    "choose an empty or new folder, or pass --force to write the generated files "
                    "into it (other files are kept)")


def _inside(out: Path, rel: str) -> bool:
    """A recorded path stays inside the project (a tampered record must not reach outside)."""
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel not in ("", ".")


def _install_project(tmp: Path, out: Path, owned: set[str] | None, written: set[str]) -> None:
    """Move the rendered files into ``out``; remove recorded files the new render no longer has."""
    if owned is None:  # a new (or empty) folder: one rename
        if out.exists():
            out.rmdir()
        tmp.rename(out)
        return
    for rel in sorted(written - {MARKER}):
        dest = out / rel
        if dest.is_symlink() or (dest.exists() and not dest.is_file()):
            raise UserError(f"{dest}: is not a regular file; remove it or choose a new folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, dest)
    for rel in sorted(owned - written, reverse=True):
        dest = out / rel
        if dest.is_file() and not dest.is_symlink():
            dest.unlink()
        parent = dest.parent
        while parent != out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    os.replace(tmp / MARKER, out / MARKER)  # last: the record matches what is there


def _unit_fixtures(ctx: AppContext) -> dict:
    """Small images and their host-resized pixels, for the JVM unit test of Preprocessor.kt."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1234)
    method = Image.Resampling.BILINEAR if ctx.resize == "bilinear" else Image.Resampling.NEAREST
    cases = []
    for (w, h), (ow, oh) in (((13, 9), (5, 4)), ((4, 3), (7, 6)), ((10, 10), (10, 3))):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        resized = np.asarray(Image.fromarray(rgb).resize((ow, oh), method))
        argb = (0xFF << 24) | (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        argb = [int(v) - (1 << 32) if v >= 1 << 31 else int(v) for v in argb.reshape(-1)]
        cases.append({"w": w, "h": h, "ow": ow, "oh": oh, "argb": argb,
                      "rgb": [int(v) for v in resized.reshape(-1)]})
    # normalisation of the first case's resized pixels, in the model's layout
    first = np.asarray(cases[0]["rgb"], np.uint8).reshape(cases[0]["oh"], cases[0]["ow"], 3)
    p = first.astype(np.float32)[..., ::-1] if ctx.color_order == "bgr" else first.astype(np.float32)
    x = p * np.asarray(ctx.scale, np.float32) + np.asarray(ctx.bias, np.float32)
    if ctx.layout == "nchw":
        x = x.transpose(2, 0, 1)
    qscale, qzp = 0.0187, -3
    q = np.clip(np.rint(x / np.float32(qscale)) + qzp, -128, 127).astype(int)
    out = {"cases": cases, "normalised": [float(v) for v in x.reshape(-1)],
           "qscale": qscale, "qzp": qzp, "quantized": [int(v) for v in q.reshape(-1)]}
    out.update(_output_fixtures(ctx, rng))
    if ctx.detection and ctx.decoding:
        out["decoder"] = _decoder_fixtures(ctx, rng)
    return out


def _f32(values) -> list[float]:
    import numpy as np

    return [float(v) for v in np.asarray(values, np.float32).reshape(-1)]


def _output_fixtures(ctx: AppContext, rng) -> dict:
    """Raw outputs and what the host makes of them: dequantized values (LiteRT's arithmetic),
    top-k with softmax probabilities, and (segmentation) the mask and its colours."""
    import numpy as np

    from ..backends.tflite.backend import dequantize

    q8 = rng.integers(-128, 128, 24, dtype=np.int64)
    u8 = rng.integers(0, 256, 24, dtype=np.int64)
    dq = {"int8": dequantize(q8.astype(np.int8), {"dtype": np.int8, "quantization": (0.0731, -7)}),
          "uint8": dequantize(u8.astype(np.uint8), {"dtype": np.uint8, "quantization": (0.0213, 131)})}
    logits = rng.normal(0, 2, ctx.num_classes).astype(np.float32)
    order = np.argsort(-logits, kind="stable")[:3]
    e = np.exp(logits.astype(np.float64) - logits.max())
    probs = e / e.sum()
    out = {"q8": [int(v) for v in q8], "u8": [int(v) for v in u8], "dq8": _f32(dq["int8"]),
           "du8": _f32(dq["uint8"]), "logits": _f32(logits), "top": [int(i) for i in order],
           "top_p": _f32(probs[order])}
    if ctx.segmentation:
        h, w, c = 5, 7, ctx.num_classes  # small: argmax does not depend on the input size
        raw = rng.normal(0, 1, (h, w, c) if ctx.runtime == "litert" else (c, h, w)).astype(np.float32)
        mask = raw.argmax(-1) if ctx.runtime == "litert" else raw.argmax(0)
        out.update(seg_raw=_f32(raw), seg_mask=[int(v) for v in mask.reshape(-1)],
                   seg_colours=[ctx.palette[int(v)] - (1 << 32) if ctx.palette[int(v)] >= 1 << 31
                                else ctx.palette[int(v)] for v in mask.reshape(-1)])
    return out


def _decoder_fixtures(ctx: AppContext, rng) -> dict:
    """Raw heads on a few clustered synthetic anchors and the host decoder's detections for them
    (mobiledeploy/detection.py, the reference), for fast and regular NMS, softmax and sigmoid."""
    import numpy as np

    from ..tasks.detection.decode import postprocess_one

    n, c = 24, ctx.num_classes
    # anchors in 3 clusters, so NMS has overlapping boxes to suppress
    centres = rng.uniform(0.2, 0.8, (3, 2))
    anchors = np.concatenate([centres[np.arange(n) % 3] + rng.normal(0, 0.02, (n, 2)),
                              rng.uniform(0.1, 0.4, (n, 2))], 1).astype(np.float32)
    logits = rng.normal(0, 2.5, (n, c + 1)).astype(np.float32)
    enc = rng.normal(0, 1, (n, 4)).astype(np.float32)
    cases = []
    base = dict(ctx.decoding)
    for conv, regular, thr in (("softmax", False, 0.2), ("sigmoid", False, 0.5), ("softmax", True, 0.15)):
        spec = {**base, "score_conversion": conv, "use_regular_nms": regular, "score_threshold": thr,
                "iou_threshold": 0.3, "max_detections": 6, "detections_per_class": 3}
        d = postprocess_one(logits, enc, anchors, spec)
        cases.append({"name": f"{conv}{'Regular' if regular else 'Fast'}", "sigmoid": conv == "sigmoid",
                      "regular": regular, "threshold": thr, "iou": 0.3, "max": 6, "per_class": 3,
                      "coder": [float(v) for v in (base["box_coder"][k] for k in ("y_scale", "x_scale", "h_scale", "w_scale"))],
                      "boxes": _f32(d.boxes), "classes": [int(v) for v in d.classes], "scores": _f32(d.scores)})
    return {"anchors": _f32(anchors), "logits": _f32(logits), "enc": _f32(enc), "cases": cases}
