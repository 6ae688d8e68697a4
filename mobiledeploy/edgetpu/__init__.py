"""Edge TPU compatibility: predict the compiler's mapping, run the real compiler, advise.

Public API: ``analyze(path)``, ``format_log(report)`` (analysis), ``advise(report)`` (advice),
``find_compiler()``, ``compiler_command(model, out_dir)``, ``run_compiler(model, out_dir)``,
``analyze_compiled(path)``, ``compare(prediction, actual)`` (compiler).
"""

from __future__ import annotations

from .advice import advise, cpu_share
from .analysis import analyze, check_op, format_log, predict
from .compiler import (
                       analyze_compiled,
                       compare,
                       compiler_command,
                       find_compiler,
                       parse_log,
                       run_compiler,
)

__all__ = ["advise", "analyze", "analyze_compiled", "check_op", "compare", "compiler_command",
           "cpu_share", "find_compiler", "format_log", "parse_log", "predict", "run_compiler"]
