"""TFLite targets (fp32, fp16, full-integer int8) from the Keras reference, run with LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from .base import Backend, ConvertContext, InputBatch, Runner, SkipRun


def _tf():
    return require("tensorflow", "the TensorFlow Lite converter")


def convert_keras_to_tflite(model, precision: str, *, calibration: np.ndarray | None = None,
                            io_dtype: str = "int8") -> bytes:
    """Convert a Keras model (build it with ``batch_size=1`` for static shapes).

    ``calibration`` (NHWC float, real images) drives full-integer quantization for int8.
    """
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
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
        conv.inference_output_type = dt
    elif precision != "fp32":
        raise ValueError(f"unknown precision {precision!r}")
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


class TFLiteRunner(Runner):
    """Runs a .tflite one sample at a time (batch-1 signature), NHWC normalised input."""

    def __init__(self, path: Path, *, reference_kernels: bool = False, label: str = ""):
        from .._deps import version

        try:
            self.interp = make_interpreter(path, reference_kernels=reference_kernels)
        except (ValueError, RuntimeError) as exc:  # a corrupt artifact fails, it is not skipped
            raise RuntimeError(f"LiteRT cannot load {path.name}: {str(exc).splitlines()[0]}") from None
        self.path = path
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        kind = "reference int8 kernels" if reference_kernels else "XNNPACK"
        self.executor = f"ai-edge-litert {version('ai-edge-litert')} ({label or kind})"

    def run(self, batch: InputBatch) -> np.ndarray:
        x = batch.nhwc()
        if list(self.inp["shape"][1:]) != list(x.shape[1:]):
            raise SkipRun(
                f"{self.path.name} takes input {list(self.inp['shape'])}, the definition gives "
                f"{[1, *x.shape[1:]]}"
            )
        outs = []
        for i in range(len(x)):
            self.interp.set_tensor(self.inp["index"], quantize(x[i:i + 1], self.inp))
            self.interp.invoke()
            outs.append(dequantize(self.interp.get_tensor(self.out["index"]), self.out))
        return np.concatenate(outs).reshape(len(x), -1)


class TFLiteBackend(Backend):
    name = "tflite"
    requires = ("tensorflow", "ai_edge_litert")
    extra = "tflite"

    def distributions(self):
        return ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert")

    def keras_variant(self, target) -> dict[str, str]:
        lowering = target.options.get("lowering", "none")
        return {"hswish": "lowered" if target.precision == "int8" and lowering == "hswish" else "fused"}

    def convert(self, ctx: ConvertContext, target, out: Path) -> dict[str, Any]:
        variant = self.keras_variant(target)
        model = ctx.keras_model(batch_size=1, **variant)
        calib = None
        if target.precision == "int8":
            n = int(target.options.get("calibration_samples", 100))
            calib = ctx.calibration.nhwc()[:n]
        data = convert_keras_to_tflite(model, target.precision, calibration=calib,
                                       io_dtype=target.options.get("io_dtype", "int8"))
        Path(out).write_bytes(data)
        facts = model_facts(data)
        facts["keras_graph"] = variant
        if calib is not None:
            facts["calibration_images"] = int(len(calib))
        return facts

    def load(self, path: Path, target, definition) -> Runner:
        return TFLiteRunner(Path(path))
