"""Core ML backend: PyTorch reference -> ML Program (.mlpackage) with coremltools.

The package takes camera pixels (an ImageType whose scale/bias are the definition's
preprocessing), ends in softmax + a classifier (``classLabel``, ``classLabel_probs``) for iOS, and
also outputs ``logits``, which validation compares. On macOS it runs through Core ML; elsewhere
through ``mobiledeploy.backends.coreml.milexec``, a NumPy executor of the same program.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ...errors import UserError
from ...tolerance import Tolerance
from ..base import Backend, ConvertContext, InputBatch, Runner, SkipRun, Tap

if TYPE_CHECKING:  # pragma: no cover
    from ...definition import ModelDefinition
    from ...targets import ResolvedTarget

IMAGE_INPUT = "image"
TENSOR_INPUT = "x"
LOGITS = "logits"
PROBS = "probs"
CLASS_MAP = "class_map"  # a segmenter's per-pixel class index (the argmax an app draws), option class_map
# a detector's two raw heads (architectures.ssdlite.OUTPUTS): decoded on the host / in the app
DETECTOR_OUTPUTS = ("class_logits", "box_encodings")
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14",
                      "macOS15")
NOT_BYTE_STABLE = (
    ".mlpackage bytes are not stable across conversions (metadata such as the conversion date "
    "is embedded); content_sha256 hashes the MIL program text and weight values instead"
)


def _image_affine(color_order, pixel_range, mean, std) -> tuple[float, list[float], list[float]]:
    """(scale, bias, per-channel multiplier) so that ``mult[c] * (scale * p + bias[c])`` is
    the definition's normalisation. ImageType has ONE scale; a per-channel std is folded into
    the graph as ``mult`` (all ones when std is uniform)."""
    lo, hi = (float(v) for v in pixel_range)
    if len(set(float(s) for s in std)) == 1:
        s = float(std[0])
        return (hi - lo) / 255.0 / s, [(lo - float(m)) / s for m in mean], [1.0] * len(std)
    return (hi - lo) / 255.0, [lo - float(m) for m in mean], [1.0 / float(s) for s in std]


def convert_torch_to_mlpackage(
    module,
    out: str | Path,
    *,
    height: int,
    width: int,
    color_order: str = "rgb",
    pixel_range=(0.0, 1.0),
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    labels: list[str],
    precision: str = "fp32",
    minimum_deployment_target: str = "iOS15",
    image_input: bool = True,
    fields: dict[str, Any] | None = None,
    classifier: bool = True,
    detector: bool = False,
    per_label: bool = True,
    output_name: str = LOGITS,
    output_text: str | None = None,
    decoding: tuple[dict, np.ndarray] | None = None,
    class_map: bool = False,
) -> dict[str, Any]:
    """Convert an eval-mode ``module`` (normalised NCHW float -> logits) to an ML Program.

    ``classifier`` (one score vector per image) adds softmax and Core ML's classifier outputs;
    otherwise (dense outputs, e.g. per-pixel logits) the program's only output is ``logits``.
    ``detector``: the module returns SSDLite's two raw heads; the program outputs them as
    ``class_logits`` and ``box_encodings`` (no classifier; the decoding spec is the manifest's).
    ``class_map`` (dense outputs only): a second output ``class_map``, the per-pixel argmax over
    the classes (int32, (1, H, W)), which is what an app draws.
    ``decoding`` (a detector's decoding spec and anchors): the package is instead the pipeline
    Vision consumes (``detection_pipeline``): the program decodes the boxes, Core ML's NMS model
    follows, outputs ``confidence`` and ``coordinates``; the raw heads stay inner features.

    The package is written to ``out`` (a directory). Returns the facts for the manifest.
    """
    import torch

    from ..._deps import require

    ct = require("coremltools", "the Core ML backend")
    if precision not in ("fp32", "fp16"):
        raise UserError(f"Core ML precision must be fp32 or fp16, got '{precision}'")
    if minimum_deployment_target not in DEPLOYMENT_TARGETS:
        raise UserError(
            f"target option minimum_deployment_target: unknown '{minimum_deployment_target}'; "
            f"allowed: {', '.join(DEPLOYMENT_TARGETS)}"
        )
    channels = len(mean)
    if detector and decoding is not None:
        from .detection_pipeline import decoding_module

        module = decoding_module(module, *decoding)
    order = str(getattr(color_order, "value", color_order)).lower()
    scale, bias, mult = _image_affine(order, pixel_range, mean, std)
    per_channel = image_input and any(m != 1.0 for m in mult)

    class Classifier(torch.nn.Module):
        """logits and softmax(logits); optionally the per-channel 1/std ImageType cannot hold."""

        def __init__(self):
            super().__init__()
            self.net = module
            self.register_buffer("mult", torch.tensor(mult, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x):
            logits = self.net(x * self.mult if per_channel else x)
            if detector:
                return logits
            if class_map:
                return logits, torch.argmax(logits, dim=1).to(torch.int32)
            return (logits, torch.softmax(logits, dim=1)) if classifier else logits

    wrapper = Classifier().eval()
    example = torch.rand(1, channels, height, width)
    with torch.no_grad():
        y = wrapper(example)
        n_out = (y[0].shape[-1] if decoding is not None else y[0].shape[-1] - 1) if detector else \
            (y[0] if classifier or class_map else y).shape[1]
        traced = torch.jit.trace(wrapper, example)
    if per_label and n_out != len(labels):
        raise UserError(f"labels: {len(labels)} labels but the model has {n_out} outputs")
    # Name the two outputs so the classifier reads "probs" and "logits" stays a model output.
    # Inline first: the converter inlines submodule calls, which would drop names set on them.
    torch._C._jit_pass_inline(traced.graph)
    if classifier and not detector:
        tup = traced.graph.return_node().inputsAt(0).node()
        for value, name in zip(tup.inputs(), (LOGITS, PROBS), strict=True):
            value.setDebugName(name)

    if image_input:
        layout = ct.colorlayout.BGR if order == "bgr" else ct.colorlayout.RGB
        inp = ct.ImageType(name=IMAGE_INPUT, shape=(1, channels, height, width), scale=scale,
                           bias=bias, color_layout=layout)
    else:
        inp = ct.TensorType(name=TENSOR_INPUT, shape=(1, channels, height, width))
    mlmodel = ct.convert(
        traced,
        inputs=[inp],
        outputs=None if classifier or detector else [ct.TensorType(name=output_name)] + (
            [ct.TensorType(name=CLASS_MAP)] if class_map else []),
        classifier_config=ct.ClassifierConfig(list(labels), predicted_probabilities_output=PROBS)
        if classifier and not detector else None,
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=getattr(ct.target, minimum_deployment_target),
    )
    mlmodel.short_description = "mobiledeploy object detector (SSDLite raw heads)" if detector else \
        "mobiledeploy image classifier" if classifier else "mobiledeploy semantic segmentation (per-pixel class logits)"
    names = [o.name for o in mlmodel.get_spec().description.output]
    from .detection_pipeline import RAW_CONFIDENCE, RAW_COORDINATES

    program_outputs = ((RAW_CONFIDENCE, RAW_COORDINATES, *DETECTOR_OUTPUTS) if decoding is not None
                       else DETECTOR_OUTPUTS)
    if detector and names != list(program_outputs) and len(names) == len(program_outputs):
        # the heads are built inside the traced module; the converter keeps its own names for
        # them: rename in output order (as the module returns them)
        spec = mlmodel.get_spec()
        for old_name, new_name in zip(names, program_outputs, strict=True):
            ct.utils.rename_feature(spec, old_name, new_name)
        mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir)
        names = [o.name for o in mlmodel.get_spec().description.output]
    wanted = DETECTOR_OUTPUTS if detector else (LOGITS if classifier else output_name,)
    if not set(wanted) <= set(names):  # pragma: no cover - a converter change; fail loudly, not silently
        raise RuntimeError(f"Core ML outputs {names} lack {wanted}")
    if detector:
        mlmodel.output_description[DETECTOR_OUTPUTS[0]] = "raw class logits per anchor (background first)"
        mlmodel.output_description[DETECTOR_OUTPUTS[1]] = "raw box encodings (ty, tx, th, tw) per anchor"
    elif output_text is not None:
        mlmodel.output_description[output_name] = output_text
    else:
        mlmodel.output_description[LOGITS] = "raw class scores (pre-softmax)" if classifier else \
            f"per-pixel raw class scores (1, {len(labels)}, {height}, {width}), pre-softmax"
        if class_map:
            mlmodel.output_description[CLASS_MAP] = (f"per-pixel class index (1, {height}, {width}), int32: "
                                                     "the argmax of logits over the classes, in label order")
    if detector and decoding is not None:
        from .detection_pipeline import make_detection_pipeline

        mlmodel.output_description[RAW_CONFIDENCE] = "per-anchor class confidences (no background)"
        mlmodel.output_description[RAW_COORDINATES] = "per-anchor boxes: centre x, y, width, height (normalised)"
        mlmodel = make_detection_pipeline(ct, mlmodel, list(labels), decoding[0], len(decoding[1]),
                                          DETECTOR_OUTPUTS)
        mlmodel.short_description = ("mobiledeploy object detector for Vision (VNCoreMLRequest returns "
                                     "VNRecognizedObjectObservation): network and box decoding, then "
                                     "Core ML's non-maximum suppression")
        mlmodel.input_description[IMAGE_INPUT if image_input else TENSOR_INPUT] = (
            f"RGB image {width}x{height}" if image_input else f"normalised tensor (1, {channels}, {height}, {width})")
    if fields:  # author, license, version, descriptions (artifact_metadata.coreml_fields)
        from ...artifact_metadata import apply_coreml_fields

        apply_coreml_fields(mlmodel, fields)
    mlmodel.save(str(out))
    if image_input:
        desc = {"type": "image", "name": IMAGE_INPUT, "color_layout": order.upper(),
                "height": height, "width": width, "scale": scale, "bias": bias,
                "per_channel_multiplier_in_graph": mult if per_channel else None}
    else:
        desc = {"type": "tensor", "name": TENSOR_INPUT, "shape": [1, channels, height, width]}
    extra: dict[str, Any] = {}
    if detector and decoding is not None:
        from .detection_pipeline import CONFIDENCE, COORDINATES, pipeline_facts

        extra = pipeline_facts(decoding[0])
    return {
        **extra,
        "format": "pipeline" if extra else "mlprogram",
        "compute_precision": "FLOAT16" if precision == "fp16" else "FLOAT32",
        "minimum_deployment_target": minimum_deployment_target,
        "input": desc,
        "outputs": [CONFIDENCE, COORDINATES] if extra else list(DETECTOR_OUTPUTS) if detector else
        ["classLabel", "classLabel_probs", LOGITS] if classifier else [output_name] + ([CLASS_MAP] if class_map else []),
        "content_sha256": content_sha256(out),
        "note": NOT_BYTE_STABLE,
    }


def content_sha256(mlpackage_path: str | Path) -> str:
    """sha256 over the MIL program text and weight values: equal for two conversions of the
    same model (unlike the package bytes)."""
    from .milexec import content_sha256 as _sha

    return _sha(mlpackage_path)


class CoreMLOptions(BaseModel):
    """Core ML: the OS the package needs at least, and camera-pixel (image) or tensor input."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    minimum_deployment_target: Literal[DEPLOYMENT_TARGETS] = "iOS15"  # type: ignore[valid-type]
    image_input: bool = True
    # semantic segmentation: also output the per-pixel class index map (what an iOS app draws)
    class_map: bool = False


class _MILRunner(Runner):
    """Runs the package's ML Program with the NumPy executor (any host)."""

    def __init__(self, path: Path):
        from . import milexec
        from .detection_pipeline import is_pipeline

        self.executor = "mobiledeploy milexec (NumPy), float16 where the program says so"
        self.pipeline = None
        if is_pipeline(path):  # a detector as Vision consumes it: program, then Core ML's NMS model
            from .milexec.pipeline import PipelineProgram

            self.pipeline = PipelineProgram(path)
            self.executor += "; the pipeline's NonMaximumSuppression model by milexec"
            self.program = self.pipeline.programs[0]
        else:
            self.program = milexec.MILProgram(path)
        unknown = sorted({op.type for op in self.program.ops} - set(milexec.OPS) - {"const"})
        if unknown:
            raise SkipRun(f"unsupported MIL op {unknown[0]} (milexec cannot run this program)")
        self.input_name = self.program.input_names[0]
        self.is_image = self.input_name in self.program.images

    def _feed(self, batch: InputBatch) -> dict[str, np.ndarray]:
        return {self.input_name: batch.pixels if self.is_image else batch.x}

    def _run_pipeline(self, batch: InputBatch):
        """The pipeline image by image: its raw heads and its own (NMS-kept) detections."""
        from ...tasks.detection.decode import RuntimeDetections
        from .detection_pipeline import CONFIDENCE, COORDINATES, detections_of

        feeds = self._feed(batch)
        logits, boxes, dets = [], [], []
        for i in range(len(batch)):
            env = self.pipeline.run_image({k: v[i:i + 1] for k, v in feeds.items()})
            logits.append(np.asarray(env[DETECTOR_OUTPUTS[0]], np.float32))
            boxes.append(np.asarray(env[DETECTOR_OUTPUTS[1]], np.float32))
            dets.append(detections_of(env[CONFIDENCE], env[COORDINATES]))
        return RuntimeDetections(np.concatenate(logits), np.concatenate(boxes), dets)

    def run(self, batch: InputBatch) -> np.ndarray:
        from .milexec import UnsupportedMILOp

        if self.pipeline is not None:
            try:
                return self._run_pipeline(batch)
            except UnsupportedMILOp as exc:
                raise SkipRun(str(exc)) from exc
        try:
            out = self.program.run(self._feed(batch))
        except UnsupportedMILOp as exc:
            raise SkipRun(str(exc)) from exc
        if all(k in out for k in DETECTOR_OUTPUTS):
            return tuple(np.asarray(out[k], dtype=np.float32) for k in DETECTOR_OUTPUTS)
        y = np.asarray(out[LOGITS] if LOGITS in out else out[self.program.output_names[0]], dtype=np.float32)
        y = y.reshape(len(batch), *y.shape[1:]) if y.ndim > 1 else y.reshape(len(batch), -1)
        return _with_class_map(y, out.get(CLASS_MAP), len(batch))

    def intermediates(self, batch: InputBatch) -> list[Tap]:
        """Every float value of the program (names are the converter's: matched by shape)."""
        from .milexec import UnsupportedMILOp

        try:
            values = self.program.run(self._feed(batch), intermediates=True)
        except UnsupportedMILOp:
            return []
        return [(k, set(), np.asarray(v, np.float32)) for k, v in values.items()
                if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim >= 2 and v.shape[0] == len(batch)]


def _with_class_map(logits: np.ndarray, class_map, n: int):
    """The logits, carrying the program's own class index map (N, H, W) when it has one (the
    segmentation task judges that map by pixel agreement)."""
    if class_map is None:
        return logits
    from ...tasks.segmentation.task import SegOutput

    out = np.ascontiguousarray(logits).view(SegOutput)
    out.class_map = np.asarray(class_map).reshape(n, *np.asarray(class_map).shape[-2:]).astype(np.int64)
    return out


class _CoreMLRunner(Runner):
    """Runs the package through Core ML itself (macOS)."""

    def __init__(self, model, path: Path, version: str):
        self.model = model
        self.path = path
        self.executor = f"coremltools {version} (Core ML)"
        self.input_name = model.get_spec().description.input[0].name
        self.is_image = model.get_spec().description.input[0].type.WhichOneof("Type") == "imageType"

    def run(self, batch: InputBatch) -> np.ndarray:
        from PIL import Image

        rows, maps = [], []
        for i in range(len(batch)):
            # Core ML reorders RGB pixels to BGR itself when the input's colour layout says so.
            feed = Image.fromarray(batch.pixels[i]) if self.is_image else batch.x[i : i + 1]
            pred = self.model.predict({self.input_name: feed})
            if all(k in pred for k in DETECTOR_OUTPUTS):
                rows.append(tuple(np.asarray(pred[k], np.float32) for k in DETECTOR_OUTPUTS))
                continue
            # a classifier's or dense task's "logits", else the program's one output (a vector task's)
            rows.append(np.asarray(pred[LOGITS] if LOGITS in pred else next(iter(pred.values()))))
            if CLASS_MAP in pred:
                maps.append(np.asarray(pred[CLASS_MAP]))
        if rows and isinstance(rows[0], tuple):
            return tuple(np.concatenate([r[k] for r in rows]) for k in range(len(rows[0])))
        y = np.concatenate([r.reshape(1, *r.shape[1:]) if r.ndim > 1 else r.reshape(1, -1)
                            for r in rows]).astype(np.float32)
        return _with_class_map(y, np.concatenate(maps) if maps else None, len(batch))

    def intermediates(self, batch: InputBatch) -> list[Tap]:
        # Core ML does not expose inner values; the program's own semantics do.
        try:
            return _MILRunner(self.path).intermediates(batch)
        except SkipRun:
            return []


class CoreMLBackend(Backend):
    """coreml-fp32 / coreml-fp16: an ML Program from the PyTorch reference."""

    name = "coreml"
    requires = ("coremltools", "torch")
    # (conversion, plus ~2 s of MIL-executor validation: converted last, its row would end the build)
    convert_seconds: ClassVar[dict[str, float]] = {"fp32": 6.0, "fp16": 4.0}
    # importing coremltools imports TensorFlow too (when installed; 4-5 s of its ~9 s import):
    # its targets share the TensorFlow targets' worker instead of paying that import again
    family = "tensorflow"
    extra = "coreml"
    distributions = ("coremltools", "torch")
    options: ClassVar[dict[str, type[BaseModel]]] = {"fp32": CoreMLOptions, "fp16": CoreMLOptions}
    tolerances: ClassVar[dict[str, Tolerance]] = {
        "fp32": Tolerance(max_abs=1e-4, min_cosine=0.99999, min_top1_agreement=1.0, max_accuracy_drop=0.0),
        "fp16": Tolerance(min_snr_db=30.0, min_cosine=0.999, max_gain_error=0.005, min_top1_agreement=0.98,
                          max_accuracy_drop=0.01),
    }
    byte_stable = False  # see NOT_BYTE_STABLE: the manifest records content_sha256
    bench_device = "Core ML"

    def bench_skip_reason(self) -> str | None:
        import platform

        if platform.system() != "Darwin":
            return f"not run on this OS ({platform.system()}): Core ML runs on macOS/iOS"
        return "not benchmarked by mobiledeploy: use Xcode's Core ML performance report"

    def convert(self, ctx: ConvertContext, target: ResolvedTarget, out: Path) -> dict[str, Any]:
        from ...artifact_metadata import coreml_fields
        from ...tasks import get_task

        d = ctx.definition
        inp = d.input
        task = get_task(getattr(d, "task", None))  # a definition without a task classifies
        # a task whose boxes are decoded from its heads ships the pipeline Vision consumes
        decoding = task.box_decoding(d) if task.output_kind == "heads" else None
        return convert_torch_to_mlpackage(
            ctx.torch_model(),
            out,
            height=inp.height,
            width=inp.width,
            color_order=getattr(inp.color_order, "value", inp.color_order),
            pixel_range=tuple(inp.pixel_range),
            mean=tuple(inp.mean),
            std=tuple(inp.std),
            labels=d.labels_list(),
            precision=target.precision,
            minimum_deployment_target=target.option("minimum_deployment_target"),
            image_input=target.option("image_input"),
            classifier=task.is_classifier,
            fields=coreml_fields(d),
            detector=task.output_kind == "heads",
            per_label=task.output_kind != "vector",
            output_name=task.output_names[0],
            output_text=None if task.output_kind != "vector" else task.output_description(
                len(d.labels_list()), "the labels"),
            decoding=decoding,
            class_map=bool(target.option("class_map")) and task.output_kind == "dense",
        )

    @classmethod
    def check_options(cls, options, task):
        from ...tasks import all_tasks, get_task

        t = get_task(task)
        if options.class_map and t.output_kind != "dense":
            dense = [x.name for x in all_tasks() if x.output_kind == "dense"]
            raise ValueError(f"option class_map: applies to per-pixel (dense) tasks ({', '.join(dense)}), "
                             f"not {t.name}: remove it")

    def load(self, path: Path, target: ResolvedTarget, definition: ModelDefinition) -> Runner:
        """Core ML on macOS; the NumPy MIL executor elsewhere (SkipRun if it lacks an op)."""
        path = Path(path)
        from .detection_pipeline import is_pipeline

        # a detection pipeline's predict returns the NMS outputs only: milexec runs it (every feature)
        if sys.platform == "darwin" and not is_pipeline(path):
            from ..._deps import require, version

            ct = require("coremltools", "running Core ML models")
            try:
                model = ct.models.MLModel(str(path))
                return _CoreMLRunner(model, path, version("coremltools") or ct.__version__)
            except Exception:  # noqa: BLE001 - Core ML framework unavailable: fall back
                pass
        return _MILRunner(path)
