"""Edge TPU compatibility: predict the compiler's mapping, run the real compiler, advise.

Public API: ``analyze(path)``, ``format_log(report)`` (analysis), ``advise(report)`` (advice),
``find_compiler()``, ``compiler_command(model, out_dir)``, ``run_compiler(model, out_dir)``,
``analyze_compiled(path)``, ``compare(prediction, actual)`` (compiler).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tflite.reader import read_tflite
from .advice import advise, cpu_share
from .analysis import EDGETPU_CUSTOM_OP, check_op, format_log, predict
from .compiler import analyze_compiled, compare, compiler_command, find_compiler, parse_log, run_compiler

__all__ = ["advise", "analyze", "analyze_compiled", "check_op", "compare", "compiler_command",
           "cpu_share", "find_compiler", "format_log", "parse_log", "predict", "run_compiler"]


def analyze(path: str | Path, advice: bool = True) -> dict[str, Any]:
    """Predict the Edge TPU mapping of ``path`` without the compiler.

    Returns the JSON report: ``model, compiled (False), ops_total, edgetpu_ops, cpu_ops
    [{index, op, status, reason}], first_cpu_op, summary [{operator, count, status}], ops``
    (one row per op), ``macs_total, cpu_macs, warnings`` and, with ``advice``, ``cpu_share``
    and ``advice``. A compiled model (one holding ``edgetpu-custom-op``) is reported as it
    is: the ops left beside the custom op are the CPU ops (``compiled: true``).
    """
    model = read_tflite(path)
    if any(op.op == EDGETPU_CUSTOM_OP for op in model.main.operators):
        return analyze_compiled(model)
    report = predict(model)
    if advice:
        report.update(advise(report))
    return report
