"""The Edge TPU target: a fully 8-bit TFLite model, its predicted mapping, and the real
``edgetpu_compiler`` when it is installed. Validation runs the int8 model on LiteRT's reference
int8 kernels: the Edge TPU computes the int8 TFLite model's arithmetic."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from ...tolerance import Tolerance
from ..base import ConvertContext, GraphVariant, Runner, TFLiteLowering
from ..tflite.backend import INT8_TOLERANCE, TFLiteBackend, TFLiteInt8Options, TFLiteRunner, int8_graph


class EdgeTPUOptions(TFLiteInt8Options):
    """The Edge TPU's int8 model: uint8 I/O, as Coral's examples and camera pipelines feed it."""

    io_dtype: Literal["int8", "uint8"] = "uint8"
    # the compiler refuses half-pixel RESIZE_BILINEAR (version 3) and cuts a segmentation
    # head there; the lowered resizes keep LR-ASPP in one Edge TPU graph
    lowering: TFLiteLowering = TFLiteLowering.hswish_bilinear


class EdgeTPUBackend(TFLiteBackend):
    """edgetpu: a fully 8-bit TFLite model, its predicted compiler mapping, the compiler if present."""

    name = "edgetpu"
    options: ClassVar[dict[str, type[BaseModel]]] = {"int8": EdgeTPUOptions}
    tolerances: ClassVar[dict[str, Tolerance]] = {"int8": INT8_TOLERANCE}
    app_runtime = None  # the app runs tflite-* models; the Edge TPU model needs Coral's delegate
    bench_device = "CPU (LiteRT + XNNPACK), not Edge TPU"
    convert_seconds: ClassVar[dict[str, float]] = {"int8": 4.0}  # tflite-int8's export, shared

    def graph(self, target) -> GraphVariant:
        return int8_graph(target)

    def convert(self, ctx: ConvertContext, target, out: Path) -> dict[str, Any]:
        from . import analyze, compiler_command, find_compiler, format_log, run_compiler

        facts = super().convert(ctx, target, out)
        rel_dir = Path(target.artifact_path(ctx.definition.name)).parent.as_posix()
        final_name = Path(target.artifact_path(ctx.definition.name)).name
        # analyse under the final file name so reports and commands name what the user has
        work = Path(ctx.workdir)
        named = work / final_name
        named.write_bytes(Path(out).read_bytes())
        report = analyze(named)
        report["model"] = f"{rel_dir}/{final_name}"
        report["compiler_command"] = " ".join(
            shlex.quote(c) for c in compiler_command(final_name, ".")
        ) if find_compiler() else f"edgetpu_compiler --show_operations --out_dir . {final_name}"
        extra = {}
        if find_compiler():
            actual = run_compiler(named, work / "compiled")
            from . import compare

            report["compiler"] = {k: actual[k] for k in ("compiler_version", "edgetpu_ops", "ops_total",
                                                          "cpu_ops") if k in actual}
            report["compiled"] = True
            report["prediction_vs_compiler"] = compare(report, actual)
            compiled = Path(actual["compiled_model"])
            extra[f"{rel_dir}/{compiled.name}"] = str(compiled)
            extra[f"{rel_dir}/edgetpu_compiler.log"] = actual["log"]
        else:
            report["compiled"] = False
            report["compiler_missing"] = ("edgetpu_compiler is not installed here (set "
                                          "MOBILEDEPLOY_EDGETPU_COMPILER or put it on PATH); run "
                                          "the compiler_command in this folder to compile")
        report_path = work / "edgetpu.json"
        report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        (work / "edgetpu_prediction.log").write_text(format_log(report) + "\n")
        extra[f"{rel_dir}/edgetpu.json"] = str(report_path)
        extra[f"{rel_dir}/edgetpu_prediction.log"] = str(work / "edgetpu_prediction.log")
        facts.update({
            "compiled": report["compiled"],
            "edgetpu_ops": report["edgetpu_ops"], "ops_total": report["ops_total"],
            "first_cpu_op": report["first_cpu_op"],
            "cpu_ops": [f"{c['index']}:{c['op']}" for c in report["cpu_ops"]][:20],
            "_extra_files": extra,
        })
        return facts

    def load(self, path: Path, target, definition) -> Runner:
        return TFLiteRunner(Path(path), reference_kernels=True, require_metadata=target is not None,
                            label="reference int8 kernels = Edge TPU arithmetic; no Edge TPU device here")
