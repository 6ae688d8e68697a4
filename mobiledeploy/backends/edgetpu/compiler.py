"""Google's ``edgetpu_compiler``: find it, run it, parse its log, compare it with a prediction.

The compiler prints a summary ("Number of operations that will run on Edge TPU: N") and writes
``<name>_edgetpu.log`` with an Operator / Count / Status table. A compiled model replaces every
mapped op with one ``edgetpu-custom-op``; every op left beside it runs on the CPU, which is the
ground truth ``analyze_compiled`` reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ...errors import InternalError, UserError
from ..tflite.reader import TFLiteModel, read_tflite
from .analysis import EDGETPU_CUSTOM_OP, MAPPED, summarize

ENV_VAR = "MOBILEDEPLOY_EDGETPU_COMPILER"
LOG_NAME = "edgetpu_compiler.log"  # the bundle keeps stdout + the operation log here
_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")


def find_compiler() -> str | None:
    """Path of ``edgetpu_compiler``: env MOBILEDEPLOY_EDGETPU_COMPILER first, then PATH."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            raise UserError(f"{ENV_VAR}={env}: not an executable file; point it at "
                            "edgetpu_compiler or unset it")
        return env
    return shutil.which("edgetpu_compiler")


def compiler_command(model_path: str | Path, out_dir: str | Path) -> list[str]:
    """The exact command that compiles ``model_path`` into ``out_dir``."""
    exe = find_compiler() or "edgetpu_compiler"
    return [exe, "--show_operations", "--out_dir", str(out_dir), str(model_path)]


def compiled_name(model_path: str | Path) -> str:
    """File name the compiler gives its output: ``<stem>_edgetpu.tflite``."""
    return f"{Path(model_path).stem}_edgetpu.tflite"


def parse_log(text: str) -> dict[str, Any]:
    """Parse compiler stdout and/or its operation log into counts, version and table rows."""
    out: dict[str, Any] = {"compiler_version": None, "summary": [], "ops_total": None,
                           "edgetpu_ops": None, "cpu_ops_total": None,
                           "edgetpu_subgraphs": None, "error": None}
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"Edge TPU Compiler version (\S+)", line):
            out["compiler_version"] = m.group(1)
        elif m := re.match(r"Number of operations that will run on Edge TPU: (\d+)", line):
            out["edgetpu_ops"] = int(m.group(1))
        elif m := re.match(r"Number of operations that will run on CPU: (\d+)", line):
            out["cpu_ops_total"] = int(m.group(1))
        elif m := re.match(r"Total number of operations: (\d+)", line):
            out["ops_total"] = int(m.group(1))
        elif m := re.match(r"Number of Edge TPU subgraphs: (\d+)", line):
            out["edgetpu_subgraphs"] = int(m.group(1))
        elif line.startswith(("ERROR:", "Compilation failed")):
            out["error"] = out["error"] or line
        elif re.match(r"Operator\s+Count\s+Status$", line):
            in_table = True
        elif in_table and (m := _ROW.match(line)):
            row = {"operator": m.group(1), "count": int(m.group(2)), "status": m.group(3)}
            if row not in out["summary"]:  # stdout (-s) and the .log repeat the same table
                out["summary"].append(row)
        elif in_table and line and not _ROW.match(line):
            in_table = False
    if out["summary"] and out["ops_total"] is None:
        out["ops_total"] = sum(r["count"] for r in out["summary"])
    if out["summary"] and out["edgetpu_ops"] is None:
        out["edgetpu_ops"] = sum(r["count"] for r in out["summary"] if r["status"] == MAPPED)
    return out


def run_compiler(model_path: str | Path, out_dir: str | Path,
                 timeout: float = 600) -> dict[str, Any]:
    """Compile ``model_path`` with the real compiler into ``out_dir`` and report what it did.

    Keeps stdout and the operation log in ``out_dir/edgetpu_compiler.log``. The report has the
    shape of ``analysis.analyze`` with ``compiled: true``, ``compiler_version``,
    ``compiled_model`` and ``log``; when the compiled file exists its CPU ops are read from it.
    """
    exe = find_compiler()
    if exe is None:
        raise UserError("edgetpu_compiler not found on PATH: install Coral's edgetpu-compiler "
                        f"package or set {ENV_VAR} to its path")
    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise UserError(f"{model_path}: no such file; pass the int8 .tflite to compile")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = compiler_command(model_path, out_dir)
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise InternalError(f"edgetpu_compiler timed out after {timeout:.0f}s on {model_path}") \
            from exc
    op_log = out_dir / f"{model_path.stem}_edgetpu.log"
    text = proc.stdout + ("\n" + proc.stderr if proc.stderr else "")
    if op_log.is_file():
        text += "\n" + op_log.read_text(errors="replace")
    log_path = out_dir / LOG_NAME
    log_path.write_text(f"$ {' '.join(cmd)}\n{text}")
    parsed = parse_log(text)
    compiled = out_dir / compiled_name(model_path)
    if proc.returncode != 0 or not compiled.is_file():
        why = parsed["error"] or f"exit code {proc.returncode}"
        raise UserError(f"{model_path}: edgetpu_compiler failed: {why} (see {log_path})")
    report = analyze_compiled(read_tflite(compiled))
    report.update({
        "model": str(model_path), "compiled_model": str(compiled), "log": str(log_path),
        "compiler_version": parsed["compiler_version"], "command": cmd,
        "summary": parsed["summary"] or report["summary"],
    })
    if parsed["ops_total"] is not None:  # the compiler counts the ops of the INPUT model
        report["ops_total"] = parsed["ops_total"]
        report["edgetpu_ops"] = parsed["edgetpu_ops"]
    else:
        report["ops_total"] = len(read_tflite(model_path).main.operators)
        report["edgetpu_ops"] = report["ops_total"] - report["cpu_ops_total"]
    return report


def analyze_compiled(model: TFLiteModel | str | Path) -> dict[str, Any]:
    """Ground truth from a compiled model: ops beside ``edgetpu-custom-op`` run on the CPU.

    How many input ops each custom op absorbed is not recorded in the file, so
    ``edgetpu_ops`` is None and ``edgetpu_custom_ops`` counts the custom ops; ``ops_total``
    counts the compiled file's ops. ``run_compiler`` fills both from the compiler's log.
    """
    if not isinstance(model, TFLiteModel):
        model = read_tflite(model)
    ops = model.main.operators
    tpu = [op for op in ops if op.op == EDGETPU_CUSTOM_OP]
    cpu = [op for op in ops if op.op != EDGETPU_CUSTOM_OP]
    rows = [{"index": op.index, "op": op.op, "mapped": op.op == EDGETPU_CUSTOM_OP,
             "status": MAPPED if op.op == EDGETPU_CUSTOM_OP else "Runs on the CPU",
             "reason": "" if op.op == EDGETPU_CUSTOM_OP else "left beside edgetpu-custom-op"}
            for op in ops]
    first = cpu[0] if cpu else None
    return {
        "model": model.path, "compiled": True, "ops_total": len(ops),
        "edgetpu_ops": None, "edgetpu_custom_ops": len(tpu), "cpu_ops_total": len(cpu),
        "cpu_ops": [{"index": op.index, "op": op.op, "status": "Runs on the CPU",
                     "reason": "left beside edgetpu-custom-op"} for op in cpu],
        "first_cpu_op": None if first is None else {
            "index": first.index, "op": first.op, "status": "Runs on the CPU",
            "reason": "left beside edgetpu-custom-op"},
        "edgetpu_subgraphs": len(tpu), "summary": summarize(rows), "ops": rows,
        "cpu_op_counts": _counts(op.op for op in cpu), "warnings": [],
    }


def _counts(names) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return out


def compare(prediction: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """Disagreements between a prediction and a real result (a compiler run or compiled file).

    Compares the number of ops that map and, per operator, how many stay on the CPU. Returns
    ``{"agree": bool, "edgetpu_ops": {"predicted", "actual"}, "cpu_ops": {op: {"predicted",
    "actual"}}}`` where ``cpu_ops`` lists only the operators whose counts differ.
    """
    pred_cpu = _counts(r["op"] for r in prediction["cpu_ops"])
    if "cpu_op_counts" in actual:
        act_cpu = dict(actual["cpu_op_counts"])
    else:
        act_cpu = {}
        for row in actual["summary"]:
            if row["status"] != MAPPED:
                act_cpu[row["operator"]] = act_cpu.get(row["operator"], 0) + row["count"]
    pred_tpu = prediction["edgetpu_ops"]
    act_tpu = actual["edgetpu_ops"]
    if act_tpu is None:  # a compiled file: every input op not left on the CPU was absorbed
        act_tpu = prediction["ops_total"] - sum(act_cpu.values())
    diffs = {op: {"predicted": pred_cpu.get(op, 0), "actual": act_cpu.get(op, 0)}
             for op in sorted(set(pred_cpu) | set(act_cpu))
             if pred_cpu.get(op, 0) != act_cpu.get(op, 0)}
    return {"agree": not diffs and pred_tpu == act_tpu,
            "edgetpu_ops": {"predicted": pred_tpu, "actual": act_tpu}, "cpu_ops": diffs}
