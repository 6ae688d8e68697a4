"""TFLite targets (fp32, fp16, full-integer int8) from the Keras reference, run with LiteRT."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel

from ..._deps import require
from ...tolerance import Tolerance
from ..base import (
    OUTPUT,
    Backend,
    ConvertContext,
    GraphVariant,
    InputBatch,
    Int8Options,
    Lowering,
    NoOptions,
    Runner,
    Tap,
    TFLiteLowering,
)


def _tf():
    return require("tensorflow", "the TensorFlow Lite converter")


def configure_converter(conv, precision: str, *, calibration: np.ndarray | None = None,
                        io_dtype: str = "int8", int_output: bool = True) -> None:
    """Set a TFLiteConverter up for ``precision`` (``int_output``: int8 outputs too)."""
    tf = _tf()
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 conversion needs real calibration images")

        def rep():
            for i in range(len(calibration)):
                yield [calibration[i:i + 1].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dt = {"int8": tf.int8, "uint8": tf.uint8}[io_dtype]
        conv.inference_input_type = dt
        if int_output:
            conv.inference_output_type = dt
    elif precision != "fp32":
        raise ValueError(f"unknown precision {precision!r}")


def export_saved_model(model, directory: Path) -> Path:
    """Write what ``TFLiteConverter.from_keras_model`` exports before converting a Keras 3
    model (its inference call, ``training=False``, as the SavedModel's serving endpoint), so
    that several targets converting the same model export it once (``convert_keras_to_tflite``'s
    ``saved_model``). Most of a small model's conversion time is this export."""
    import functools

    import keras

    tf = _tf()
    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = [tf.TensorSpec(x.shape, dtype=x.dtype, name=x.name) for x in model.inputs]
    if len(signature) > 1:
        signature = [signature]
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints every captured variable
        archive.write_out(str(directory))
    return Path(directory)


def _use_saved_model(conv, directory: Path) -> bool:
    """Point a Keras-model converter at an export ``export_saved_model`` already wrote, instead
    of exporting the model again: what the converter does after its own export, on ours. False
    (the converter exports as usual) if this TensorFlow's converter is not shaped as expected."""
    if not all(hasattr(conv, a) for a in ("_convert_keras_to_saved_model", "_parse_saved_model_args",
                                           "_load_saved_model", "experimental_lower_to_saved_model")):
        return False
    from tensorflow.python.saved_model import signature_constants, tag_constants
    from tensorflow.python.saved_model.load import load

    def from_export(_output_dir):
        conv.saved_model_dir = str(directory)
        conv._saved_model_tags = {tag_constants.SERVING}
        conv._saved_model_exported_names = [signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
        conv._parse_saved_model_args(always_enable_saved_model_import=conv.experimental_lower_to_saved_model)
        if not conv.saved_model_dir:
            return None, None, None
        graph_def, inputs, outputs = conv._load_saved_model(conv.saved_model_dir, conv._saved_model_tags)
        conv._trackable_obj = load(conv.saved_model_dir, conv._saved_model_tags)
        return graph_def, inputs, outputs

    conv._convert_keras_to_saved_model = from_export
    return True


def convert_keras_to_tflite(model, precision: str, *, calibration: np.ndarray | None = None,
                            io_dtype: str = "int8", saved_model: Path | None = None) -> bytes:
    """Convert a Keras model (build it with ``batch_size=1`` for static shapes).

    ``calibration`` (NHWC float, real images) drives full-integer quantization for int8.
    ``saved_model``: ``export_saved_model(model, ...)``'s folder, to convert without exporting
    the model again (the same bytes: the converter's own export, done once).
    """
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if saved_model is not None:
        _use_saved_model(conv, saved_model)
    configure_converter(conv, precision, calibration=calibration, io_dtype=io_dtype)
    import contextlib
    import io

    # the Keras export prints every captured variable to stdout; keep build output readable
    with contextlib.redirect_stdout(io.StringIO()):
        return conv.convert()


def model_facts(data_or_path) -> dict[str, Any]:
    """Ops histogram and I/O quantization of a .tflite model, for the manifest."""
    interp = make_interpreter(data_or_path)
    ops: dict[str, int] = {}
    for op in interp._get_ops_details():
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def q(d):
        s, z = d["quantization"]
        return {"dtype": np.dtype(d["dtype"]).name, "shape": [int(v) for v in d["shape"]],
                "scale": float(s), "zero_point": int(z)}

    return {"ops": dict(sorted(ops.items())), "ops_total": sum(ops.values()), "input": q(inp), "output": q(out)}


def make_interpreter(data_or_path, *, reference_kernels: bool = False, threads: int = 2,
                     preserve: bool = False):
    """A LiteRT interpreter; ``reference_kernels`` uses the builtin reference int8 kernels."""
    litert = require("ai_edge_litert.interpreter", "running .tflite files")
    kw: dict[str, Any] = {"num_threads": threads}
    if reference_kernels:
        kw["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_REF
    if preserve:
        kw["experimental_preserve_all_tensors"] = True
    if isinstance(data_or_path, (bytes, bytearray)):
        interp = litert.Interpreter(model_content=bytes(data_or_path), **kw)
    else:
        interp = litert.Interpreter(model_path=str(data_or_path), **kw)
    interp.allocate_tensors()
    return interp


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float -> the model's integer input with its own scale/zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zp = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zp = detail["quantization"]
    return ((y.astype(np.float32) - zp) * scale).astype(np.float32)


def layers_of(tensor_name: str) -> set[str]:
    """Keras layer names in a TFLite tensor name ('model_1/stem_act_1/Mul;model_1/...').

    Every path segment counts (a model nested in another adds a level), with and without the
    ``_N`` suffix Keras appends to the names of layers it has built before.
    """
    layers = set()
    for part in tensor_name.split(";"):
        for seg in part.split("/")[:-1]:
            layers.add(seg)
            layers.add(re.sub(r"_\d+$", "", seg))
    return layers


def int8_graph(target) -> GraphVariant:
    """The graph an int8 TFLite / Edge TPU target's ``lowering`` asks for."""
    lowering = target.option("lowering")
    return GraphVariant(
        hswish="lowered" if lowering in (Lowering.hswish.value, TFLiteLowering.hswish_bilinear.value) else "fused",
        resize="lowered" if lowering == TFLiteLowering.hswish_bilinear.value else "builtin")


class TFLiteInt8Options(Int8Options):
    """int8 TFLite: I/O tensor type (apps and MediaPipe feed uint8; int8 for pipelines that need it)."""

    # uint8: MediaPipe Tasks and camera pipelines feed the pixel bytes (q = p, see metadata.py)
    io_dtype: Literal["int8", "uint8"] = "uint8"
    lowering: TFLiteLowering = TFLiteLowering.hswish


FLOAT_TOLERANCE = Tolerance(max_abs=1e-4, min_cosine=0.99999, min_top1_agreement=1.0, max_accuracy_drop=0.0)
# int8 limits from the demo's measured distribution (README "Tolerances with teeth"): SNR 26.1-27.6 dB
# (limit 6 dB below: 4x the noise power), output gain error <= 1.8% (limit 4%), consecutive layer
# gains within 1.4% (limit 3%: a 5% scale fault in one layer steps by ~5.5%)
INT8_TOLERANCE = Tolerance(min_snr_db=20.0, max_gain_error=0.04, max_layer_gain_step=0.03,
                           min_top1_agreement=0.95, max_accuracy_drop=0.02)


class TFLiteRunner(Runner):
    """Runs a .tflite one sample at a time (batch-1 signature), NHWC normalised input."""

    layout = "nhwc"  # converted from the Keras twin: channels last

    def __init__(self, path: Path, *, reference_kernels: bool = False, label: str = "",
                 require_metadata: bool = True):
        from ..._deps import version

        # a bundle's artifact must carry its own input metadata; a foreign file loaded without a
        # target (e.g. a Coral model checked through a definition's preprocessing) takes the
        # definition's normalisation instead
        self.require_metadata = require_metadata
        try:
            self.interp = make_interpreter(path, reference_kernels=reference_kernels)
        except (ValueError, RuntimeError) as exc:  # a corrupt artifact fails, it is not skipped
            raise RuntimeError(f"LiteRT cannot load {path.name}: {str(exc).splitlines()[0]}") from None
        self.path = path
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        # a detector carrying TFLite_Detection_PostProcess: its own detections, and its raw heads
        # read from the same network (the file's outputs are the op's four alone)
        from . import detection_postprocess as detection_tf

        data = path.read_bytes()
        self.heads = detection_tf.raw_head_tensors(data)
        self.detector = self.heads is not None
        if self.detector:
            data, self.heads = detection_tf.with_raw_heads(data)
            self.interp = make_interpreter(data, reference_kernels=reference_kernels)
        kind = "reference int8 kernels" if reference_kernels else "XNNPACK"
        self.executor = f"ai-edge-litert {version('ai-edge-litert')} ({label or kind})"

    def run(self, batch: InputBatch) -> np.ndarray:
        from .metadata import artifact_input, read_model_metadata

        # the artifact's own metadata says how pixels become its input, as it does for every app
        # and MediaPipe: a file without it fails (validated with the definition's normalisation,
        # a build that stopped writing metadata would pass while no client can feed the file)
        info = read_model_metadata(self.path)[0]
        if (info is None or not info.inputs or not info.inputs[0].mean) and self.require_metadata:
            raise ValueError(f"{self.path.name} carries no TFLite metadata with the input's normalisation "
                             "(clients take mean/std and labels from it): rebuild the artifact")
        x = artifact_input(info, batch)
        if list(self.inp["shape"][1:]) != list(x.shape[1:]):
            # a converter that changed the input shape is a broken artifact, not an unrunnable one
            raise ValueError(f"{self.path.name} takes input {[int(v) for v in self.inp['shape']]}, the definition "
                             f"gives {[1, *x.shape[1:]]}")
        if self.detector:
            return self._run_detector(x)
        outs = []
        for i in range(len(x)):
            self.interp.set_tensor(self.inp["index"], quantize(x[i:i + 1], self.inp))
            self.interp.invoke()
            outs.append(dequantize(self.interp.get_tensor(self.out["index"]), self.out))
        return np.concatenate(outs)

    def _run_detector(self, x: np.ndarray):
        """The raw heads and the file's own post-processed detections, image by image."""
        from ...tasks.detection.decode import Detections, RuntimeDetections

        details = {d["index"]: d for d in self.interp.get_output_details()}
        # the op's outputs in its port order, then the two heads: by tensor index, not by
        # name (the shipped file's signature names the op's four only)
        logit_t, box_t, op_outs = self.heads
        names = dict(zip(("detection_boxes", "detection_classes", "detection_scores", "num_detections"),
                         op_outs, strict=True))
        names.update(class_logits=logit_t, box_encodings=box_t)
        logits, boxes, dets = [], [], []
        for i in range(len(x)):
            self.interp.set_tensor(self.inp["index"], quantize(x[i:i + 1], self.inp))
            self.interp.invoke()
            t = {k: dequantize(self.interp.get_tensor(j), details[j]) for k, j in names.items()}
            n = int(t["num_detections"].ravel()[0])
            logits.append(t["class_logits"])
            boxes.append(t["box_encodings"])
            dets.append(Detections(t["detection_boxes"][0, :n].copy(),
                                   t["detection_classes"][0, :n].astype(np.int64),
                                   t["detection_scores"][0, :n].copy()))
        return RuntimeDetections(np.concatenate(logits), np.concatenate(boxes), dets)

    def intermediates(self, batch: InputBatch) -> list[Tap]:
        """Every op output, int8 ones dequantized, NHWC -> NCHW, named by their Keras layers.

        Runs LiteRT's builtin kernels without the XNNPACK delegate, whose fused partitions would
        hide the intermediate tensors.
        """
        litert = require("ai_edge_litert.interpreter", "running .tflite files")
        import warnings

        with warnings.catch_warnings():  # the debugging-only notice is exactly what this is for
            warnings.simplefilter("ignore")
            interp = litert.Interpreter(
                model_path=str(self.path), experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        outputs = {d["index"] for d in interp.get_output_details()}
        details = {t["index"]: t for t in interp.get_tensor_details()}
        order = [i for op in interp._get_ops_details() for i in op["outputs"] if i >= 0]
        values: dict[int, list[np.ndarray]] = {i: [] for i in order}
        from .metadata import artifact_input, read_model_metadata

        x = artifact_input(read_model_metadata(self.path)[0], batch)
        for n in range(len(x)):
            interp.set_tensor(inp["index"], quantize(x[n:n + 1], inp))
            interp.invoke()
            for i in order:
                values[i].append(dequantize(interp.get_tensor(i), details[i]))
        out = []
        for i in order:
            v = np.concatenate(values[i])
            if v.ndim == 4:
                v = v.transpose(0, 3, 1, 2)
            layers = layers_of(details[i]["name"]) | ({OUTPUT} if i in outputs else set())
            out.append((details[i]["name"], layers, v))
        return out


def _convert_detector(model, definition, precision: str, calib: np.ndarray, io_dtype: str):
    """A detector with LiteRT's TFLite_Detection_PostProcess attached (``detection_postprocess.py``): the
    network quantized as asked, the op's four outputs (float32) the file's only outputs, as
    MediaPipe's ObjectDetector requires. Returns the model bytes and its outputs' signature
    names in subgraph order."""
    import contextlib
    import io

    from ...tasks.detection.ssdlite import anchors, decoding_spec
    from . import detection_postprocess as detection_tf

    spec = definition.architecture_spec()

    def configure(conv):
        configure_converter(conv, precision, calibration=calib if precision == "int8" else None,
                            io_dtype=io_dtype if io_dtype != "float32" else "int8", int_output=False)

    with contextlib.redirect_stdout(io.StringIO()):
        data = detection_tf.to_tflite(model, decoding_spec(spec), anchors(spec), configure)
    return data, detection_tf.output_order(data)


class TFLiteBackend(Backend):
    """tflite-fp32 / fp16 / int8: the TensorFlow converter on the Keras twin, run with LiteRT."""

    name = "tflite"
    built_from = "keras"
    requires = ("tensorflow", "ai_edge_litert", "torch")
    convert_seconds: ClassVar[dict[str, float]] = {"fp32": 6.0, "fp16": 3.0, "int8": 7.0}
    extra = "tflite"
    distributions = ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert")
    options: ClassVar[dict[str, type[BaseModel]]] = {"fp32": NoOptions, "fp16": NoOptions,
                                                     "int8": TFLiteInt8Options}
    tolerances: ClassVar[dict[str, Tolerance]] = {
        "fp32": FLOAT_TOLERANCE,
        "fp16": Tolerance(min_snr_db=40.0, min_cosine=0.9999, max_gain_error=0.005, min_top1_agreement=0.99,
                          max_accuracy_drop=0.005),
        "int8": INT8_TOLERANCE,
    }
    app_runtime = "litert"
    bench_device = "CPU (LiteRT + XNNPACK)"


    def client_toolchain(self):
        from .mediapipe import mediapipe_version

        return {"mediapipe": mediapipe_version()}

    def client_rows(self, bundle, art, task, ctx, make_row):
        """MediaPipe Tasks' vision task for this task (``Task.mediapipe_client``), when its own
        environment is installed: preprocessing and labels from the file's metadata alone."""
        from .mediapipe import mediapipe_row

        row = mediapipe_row(bundle, art, task, ctx, make_row)
        return [row] if row is not None else []

    def graph(self, target) -> GraphVariant:
        return int8_graph(target) if target.precision == "int8" else GraphVariant()

    def convert(self, ctx: ConvertContext, target, out: Path) -> dict[str, Any]:
        from . import metadata as meta

        graph = self.graph(target).for_definition(ctx.definition)
        io_dtype = target.option("io_dtype", "int8") if target.precision == "int8" else "float32"
        # the artifact takes what its metadata can say (one mean/std over RGB pixels): see input_plan
        # targets with the same graph and input adapter share the wrapped model and its export
        adapter = repr(meta.input_plan(ctx.definition.input, io_dtype).adapter)
        model = ctx.memo(("tflite-model", graph, adapter), lambda: meta.wrap_keras(
            ctx.keras_model(graph, batch_size=1), ctx.definition, io_dtype))
        n = int(target.option("calibration_samples", 100) or 100)
        calib = meta.calibration_input(ctx.calibration.pixels[:n], ctx.definition, io_dtype)
        order = None
        if ctx.definition.architecture_spec().detection is not None:
            data, order = _convert_detector(model, ctx.definition, target.precision, calib, io_dtype)
        else:
            export = ctx.memo(("tflite-savedmodel", graph, adapter), lambda: export_saved_model(
                model, Path(tempfile.mkdtemp(prefix="savedmodel-", dir=ctx.scratch()))))
            data = convert_keras_to_tflite(model, target.precision,
                                           calibration=calib if target.precision == "int8" else None,
                                           io_dtype=io_dtype if io_dtype != "float32" else "int8",
                                           saved_model=export)
        stats = (calib.min(axis=(0, 1, 2)).tolist(), calib.max(axis=(0, 1, 2)).tolist())
        data = meta.finish_tflite(data, ctx.definition, io_dtype=io_dtype, target=target.name, stats=stats,
                                  output_order=order)
        Path(out).write_bytes(data)
        facts = model_facts(data)
        facts["metadata"] = {**meta.facts(data),
                             "input_adapter": meta.input_plan(ctx.definition.input, io_dtype).adapter is not None}
        if target.precision != "int8":
            calib = None
        if calib is not None:
            facts["calibration_images"] = int(len(calib))
        return facts

    def load(self, path: Path, target, definition) -> Runner:
        return TFLiteRunner(Path(path), require_metadata=target is not None)

    def bench(self, path: Path, x: np.ndarray, *, runs: int, warmup: int, threads: int, loaded) -> dict[str, Any]:
        from ..._deps import version
        from ..._timing import time_calls

        require("ai_edge_litert.interpreter", "running .tflite files")
        loaded()  # the runtime is loaded; what follows is the model's own memory
        interp = make_interpreter(path, threads=threads)
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], quantize(x.transpose(0, 2, 3, 1), inp))
        lat = time_calls(interp.invoke, runs, warmup)
        return {"latency_ms": lat, "executor": f"ai-edge-litert {version('ai-edge-litert')} (XNNPACK, "
                f"{threads} threads)"}

    def bench_facts(self, path: Path) -> dict[str, Any]:
        from .reader import xnnpack_partitions

        xp = xnnpack_partitions(path)
        return {"xnnpack_partitions": xp.get("partitions"),
                "undelegated_ops": [o["op"] for o in xp.get("undelegated_ops", [])]}
