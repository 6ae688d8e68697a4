"""The benchmark suite behind ``make bench``: writes OUT/results.md and OUT/results.json.

Builds the shipped demo cold into a temporary folder (time per step, from the build's own
progress lines, timestamped as they arrive), times a no-op rebuild, the CLI's start-up and the
heavy imports a conversion process pays, validation per sample per target, then benchmarks the
demo bundle and a MobileNetV3-Small 1.0 @224 bundle (int8 vs fp32, TFLite and ExecuTorch side
by side), each latency read against the compute bound of this CPU.

int8 at 224 is measured three ways in the same run: the default (lowered) int8 graphs, the stock
converters' graphs (``lowering: none``), and a control network
(the same table with ReLU instead of h-swish: what int8 gains on this CPU when activations cost
nothing); on a CPU with AMX each with AMX allowed (LiteRT asks for it and gets it) and denied. The stock
graphs are also validated on the demo's held-out images next to the lowered ones.

    python -m mobiledeploy.benchsuite --out bench [--runs 300] [--threads 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .bench import machine_info

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "shapes" / "shapes.yaml"
BIG_TARGETS = ("tflite-fp32", "tflite-int8", "executorch-xnnpack", "executorch-xnnpack-int8")
# what issue 10 asks of the int8 artifacts at 224 (median latency, int8 / fp32)
RATIO_GOALS = {"tflite": 0.6, "executorch": 0.75}
# the stock converters' int8 graphs, the baseline of the lowering
STOCK_OPTIONS = {"tflite-int8": {"lowering": "none"}, "executorch-xnnpack-int8": {"lowering": "none"}}
RUNTIME_TARGETS = {"tflite": ("tflite-fp32", "tflite-int8"),
                   "executorch": ("executorch-xnnpack", "executorch-xnnpack-int8")}
HEAVY_IMPORTS = ("tensorflow", "torch", "executorch.runtime", "ai_edge_litert.interpreter", "coremltools")
HELP_BUDGET_S = 0.25


def _env() -> dict[str, str]:
    # wide lines: rich wraps at 80 columns when not on a terminal, which would split the lines parsed
    return {**os.environ, "COLUMNS": "300", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("mobiledeploy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mobiledeploy"]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- start-up ------------------------------------------------------------------------------------

def cli_startup(repeats: int = 5) -> dict[str, Any]:
    """Wall time of ``mobiledeploy --help`` (and ``bench --help``) and the top import offenders."""
    out: dict[str, Any] = {}
    for label, args in (("--help", ["--help"]), ("bench --help", ["bench", "--help"]),
                        ("build --help", ["build", "--help"])):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(_cli() + args, capture_output=True, env=_env(), check=True)
            times.append(time.perf_counter() - t0)
        out[label] = round(sorted(times)[len(times) // 2], 4)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mobiledeploy", "--help"],
                          capture_output=True, text=True, env=_env())
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append({"module": m[4], "self_ms": int(m[1]) / 1e3, "cumulative_ms": int(m[2]) / 1e3,
                         "depth": len(m[3]) // 2})
    top = sorted((r for r in rows if r["depth"] <= 1), key=lambda r: -r["cumulative_ms"])[:8]
    heavy = sorted({r["module"].split(".")[0] for r in rows} & {h.split(".")[0] for h in HEAVY_IMPORTS})
    return {"wall_s": out, "import_top": top, "heavy_modules_imported_by_help": heavy}


def heavy_imports() -> dict[str, float | None]:
    """Wall seconds of a fresh ``python -c 'import X'``: what every conversion process pays."""
    out: dict[str, float | None] = {}
    base_t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=_env(), check=True)
    base = time.perf_counter() - base_t0
    for mod in HEAVY_IMPORTS:
        t0 = time.perf_counter()
        ok = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True,
                            env=_env()).returncode == 0
        out[mod] = round(time.perf_counter() - t0 - base, 3) if ok else None
    return out


# -- builds --------------------------------------------------------------------------------------

def timed_build(definition: Path, out: Path, targets: tuple[str, ...] = (), jobs: int = 2,
                extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``mobiledeploy build`` and read its machine-readable record (.mobiledeploy/build.json):
    per-step status and seconds, and the wall time of each phase."""
    cmd = _cli() + ["build", str(definition), "-o", str(out), "--jobs", str(jobs), "--quiet", *extra]
    for t in targets:
        cmd += ["--target", t]
    import resource

    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    total = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the build and every worker it waited for
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    rec_path = out / ".mobiledeploy" / "build.json"
    rec = json.loads(rec_path.read_text()) if rec_path.is_file() and proc.returncode in (0, 1) else {}
    steps = rec.get("steps", [])
    conv = {s["step"].removeprefix("convert:"): s["seconds"] for s in steps
            if s["step"].startswith("convert:") and s["status"] == "ran"}
    failed = {s["step"].removeprefix("convert:"): s["seconds"] for s in steps if s["status"] == "failed"}
    phases = dict(rec.get("phases", {}))
    phases["start-up and exit"] = round(total - rec.get("seconds", total), 2)
    return {"command": " ".join(cmd), "returncode": proc.returncode, "wall_s": round(total, 2),
            "cpu_s": round(cpu, 2),
            "phases": phases, "steps_ran": rec.get("steps_ran"), "steps": steps,
            "conversion_s": conv, "conversion_failed_s": failed,
            "log_tail": proc.stderr.strip().splitlines()[-5:] if proc.returncode not in (0, 1) else []}


def critical_path(build: dict) -> dict[str, Any]:
    """The chain of steps that decided the build's wall time, from its record: the worker whose
    last conversion ended last (its conversions ran one after another), then the steps after it."""
    steps = build.get("steps", [])
    conv = [s for s in steps if s["step"].startswith("convert:") and s["status"] in ("ran", "failed")]
    chain: list[dict] = []
    if conv:
        last = max(conv, key=lambda s: s.get("end", 0))
        chain = sorted((s for s in conv if s.get("worker") == last.get("worker")), key=lambda s: s.get("start", 0))
    after = [s for s in steps if s["step"] in ("validate", "app") and s["status"] == "ran"]
    head = [s for s in steps if s["step"] == "model" and s["status"] == "ran"]
    path = [{"step": s["step"], "seconds": s["seconds"]} for s in (*head, *chain, *after)]
    return {"steps": path, "seconds": round(sum(s["seconds"] for s in path), 2)}


def build_costs(definition: Path, work: Path, jobs: int, targets: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Issue 20's measure, in one run: the cold full build (every target, validation, app), a
    no-op rebuild, and the naive cost of the same work: each target built alone in a fresh bundle
    (``build --target T``, validated, with its app), summed. Wall and CPU seconds (CPU: the build
    and its workers; other jobs on the machine do not inflate it)."""
    if targets is None:
        from .definition import load_definition
        from .targets import resolve_targets

        targets = tuple(t.name for t in resolve_targets(load_definition(definition), ()))
    full_out = work / "build_full"
    shutil.rmtree(full_out, ignore_errors=True)
    load0 = round(os.getloadavg()[0], 2)
    _say("cold full build …")
    full = timed_build(definition, full_out, jobs=jobs)
    _say("no-op rebuild …")
    noop = timed_build(definition, full_out, jobs=jobs)
    alone: dict[str, dict] = {}
    for t in targets:
        out = work / f"build_alone_{t}"
        shutil.rmtree(out, ignore_errors=True)
        _say(f"{t} alone in a fresh bundle …")
        alone[t] = timed_build(definition, out, targets=(t,), jobs=jobs)
        shutil.rmtree(out, ignore_errors=True)
    naive_wall = sum(b["wall_s"] for b in alone.values())
    naive_cpu = sum(b["cpu_s"] for b in alone.values())
    return {
        "targets": list(targets), "jobs": jobs, "load": {"before": load0, "after": round(os.getloadavg()[0], 2)},
        "full": full, "noop": noop,
        "alone": {t: {k: b[k] for k in ("wall_s", "cpu_s", "returncode", "phases")} for t, b in alone.items()},
        "naive_wall_s": round(naive_wall, 2), "naive_cpu_s": round(naive_cpu, 2),
        "ratio_wall": round(full["wall_s"] / naive_wall, 3) if naive_wall else None,
        "ratio_cpu": round(full["cpu_s"] / naive_cpu, 3) if naive_cpu else None,
        "critical_path": critical_path(full),
    }


def build_costs_markdown(bc: dict[str, Any]) -> list[str]:
    full, noop = bc["full"], bc["noop"]
    cp = bc["critical_path"]
    L = ["## Build time: the cold full build vs the naive per-target sum (same run)", "",
         f"Measured {bc.get('date', '')} on {bc.get('machine', {}).get('cpu', '?')} "
         f"({bc.get('machine', {}).get('cores', '?')} cores), `--jobs {bc['jobs']}`; load average "
         f"{bc['load']['before']} before, {bc['load']['after']} after. CPU seconds count the build and its "
         "workers only, so they hold when other jobs share the machine; wall seconds do not.", "",
         "| build | wall s | CPU s | exit |", "|---|---:|---:|---:|",
         f"| cold full build (all targets, validation, app) | {full['wall_s']:.1f} | {full['cpu_s']:.1f} | "
         f"{full['returncode']} |",
         f"| naive: each target alone in a fresh bundle, summed | {bc['naive_wall_s']:.1f} | "
         f"{bc['naive_cpu_s']:.1f} | |",
         f"| **ratio** full / naive | **{_fmt(bc['ratio_wall'], '{:.2f}')}** | "
         f"**{_fmt(bc['ratio_cpu'], '{:.2f}')}** | |",
         f"| no-op rebuild ({noop.get('steps_ran')} step(s) ran; inside the build "
         f"{sum(v for k, v in noop['phases'].items() if k != 'start-up and exit'):.2f} s) | {noop['wall_s']:.2f} | "
         f"{noop['cpu_s']:.2f} | {noop['returncode']} |", "",
         *([f"No-op: {noop['note']}.", ""] if noop.get("note") else []),
         "| target alone | wall s | CPU s |", "|---|---:|---:|",
         *[f"| {t} | {b['wall_s']:.1f} | {b['cpu_s']:.1f} |" for t, b in bc["alone"].items()], "",
         f"Critical path ({cp['seconds']:.1f} s of {full['wall_s']:.1f} s): "
         + " → ".join(f"{s['step']} {s['seconds']:.1f} s" for s in cp["steps"]) + ".", "",
         "| phase of the cold full build | seconds |", "|---|---:|",
         *[f"| {k} | {v:.2f} |" for k, v in full["phases"].items()], "",
         "| conversion step | worker | position | seconds | CPU s |", "|---|---:|---:|---:|---:|"]
    workers = {}
    for s in full["steps"]:
        if s["step"].startswith("convert:") and "worker" in s:
            w = workers.setdefault(s["worker"], len(workers) + 1)
            L.append(f"| {s['step'].removeprefix('convert:')} | {w} | {s.get('position', '')} | "
                     f"{s['seconds']:.1f} | {_fmt(s.get('cpu_seconds'), '{:.1f}')} |")
    return L + [""]


def validation_costs(bundle: Path) -> dict[str, Any]:
    """Seconds per validation sample per target, from report/validation.json."""
    path = bundle / "report" / "validation.json"
    if not path.exists():
        return {}
    rep = json.loads(path.read_text())
    n = max(1, int(rep.get("samples") or 1))
    return {"samples": n, "status": rep.get("status"),
            "per_sample_ms": {r["target"]: round(r["seconds"] / n * 1e3, 2)
                              for r in rep["results"] if r.get("seconds") is not None}}


def run_bench(bundle: Path, json_path: Path, runs: int, threads: int, *, no_amx: bool = False,
              references: bool = True) -> dict[str, Any]:
    """The bench command through the CLI, as a user runs it."""
    t0 = time.monotonic()
    cmd = _cli() + ["bench", str(bundle), "--json", str(json_path), "--runs", str(runs),
                    "--threads", str(threads), "--quiet"]
    cmd += ["--no-amx"] if no_amx else []
    cmd += [] if references else ["--no-references"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"mobiledeploy bench {bundle} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    rep = json.loads(json_path.read_text())
    rep["wall_s"] = round(time.monotonic() - t0, 1)
    return rep


def recalibrated_weights(definition: Path, out: Path, images: int = 100) -> Path:
    """Seeded weights with BatchNorm statistics re-estimated on the calibration images.

    A seeded network's activations shrink layer after layer (scales of 1e-9 by the head), which
    puts int8 ADD scale ratios outside what XNNPACK accepts: latencies would measure the seed,
    not the model. One pass in train mode with cumulative BN averages restores unit-scale
    activations, as trained weights have.
    """

    from .architectures.reference import build_torch_reference
    from .architectures.torch_builder import recalibrate_bn
    from .architectures.weights import save_weights
    from .definition import load_definition
    from .images import load_batch

    d = load_definition(definition)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_torch_reference(d)
    x = load_batch(d, "calibration", limit=images).x
    recalibrate_bn(model, (x[i:i + 25] for i in range(0, len(x), 25)))
    save_weights(model, out, metadata={"seeded": str(d.seed), "bn_recalibrated": str(len(x))})
    return out


def _with_recalibrated_weights(data: dict, tmp: Path, stem: str) -> Path:
    """Write ``data`` (seeded) to tmp, recalibrate its BN, and point it at those weights."""
    import yaml

    data.pop("weights", None)
    path = tmp / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    weights = recalibrated_weights(path, tmp / f"{stem}.safetensors")
    data["weights"] = str(weights)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def demo_definition(tmp: Path) -> tuple[Path, str]:
    """The shipped demo, or (weights not trained yet) a copy with BN-recalibrated seeded weights."""
    import yaml

    data = yaml.safe_load(DEMO.read_text())
    if data.get("weights") and (DEMO.parent / data["weights"]).exists():
        return DEMO, "trained weights (examples/shapes/shapes.safetensors)"
    _absolute_sources(data)
    return (_with_recalibrated_weights(data, tmp, "shapes"),
            "seeded weights, BN recalibrated (examples/shapes/shapes.safetensors not present)")


def _absolute_sources(data: dict, root: Path = DEMO.parent) -> None:
    """Make the definition's relative paths absolute (it is written elsewhere, and names the
    shipped example's files on purpose: outside paths allowed)."""
    data["allow_outside_paths"] = True
    for k in ("labels", "weights"):
        if data.get(k):
            data[k] = str(root / data[k])
    for k in ("calibration", "validation"):
        data[k]["source"] = str(root / data[k]["source"])


def _definition_224(tmp: Path, name: str, architecture: dict) -> Path:
    """The demo's classes and images at 224 px on ``architecture``, seeded weights with BatchNorm
    recalibrated on the calibration images."""
    import yaml

    data = yaml.safe_load(DEMO.read_text())
    _absolute_sources(data)
    data.update(name=name, targets=list(BIG_TARGETS), architecture=architecture,
                android={"application_id": f"dev.mobiledeploy.{name.replace('_', '')}", "app_name": name})
    data["input"].update(height=224, width=224)
    return _with_recalibrated_weights(data, tmp, name)


def big_definition(tmp: Path) -> Path:
    """MobileNetV3-Small 1.0 @224, 10 classes, seeded BN-recalibrated weights, the demo's images."""
    return _definition_224(tmp, "mnv3_small_224", {"preset": "mobilenet_v3_small", "width_multiplier": 1.0})


def stock_definition(definition: Path, tmp: Path) -> Path:
    """The same model with only the int8 targets, built the stock converters' way."""
    import yaml

    data = yaml.safe_load(definition.read_text())
    _absolute_sources(data, definition.parent)
    data.update(name=f"{data['name']}_stock", targets=list(STOCK_OPTIONS))
    opts = data.get("target_options") or {}
    data["target_options"] = {**opts, **{t: {**opts.get(t, {}), **o} for t, o in STOCK_OPTIONS.items()}}
    path = tmp / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def relu_control_definition(tmp: Path) -> Path:
    """MobileNetV3-Small @224 with ReLU in place of every h-swish (SE, 5x5 kernels and widths
    kept): what int8 gains on this CPU when the activations cost nothing."""
    from .architectures.spec import PRESETS

    raw = PRESETS["mobilenet_v3_small"]
    return _definition_224(tmp, "relu_control_224", {
        "stem": {"out": raw.stem[0], "kernel": raw.stem[1], "stride": raw.stem[2], "activation": "relu"},
        "blocks": [{"kernel": r.kernel, "exp": int(r.exp), "out": r.out, "se": r.se, "activation": "relu",
                    "stride": r.stride} for r in raw.rows],
        "last_stage": {"conv": raw.last_conv, "activation": "relu"},
        "head": {"hidden": raw.head_hidden, "activation": "relu"},
    })


# -- reading the numbers -------------------------------------------------------------------------

def _row(rep: dict, target: str) -> dict:
    return next((r for r in rep["results"] if r["target"] == target), {})


def _lat(rep: dict, target: str) -> float | None:
    return (_row(rep, target).get("latency_ms") or {}).get("median")


def _main_mode(big: dict) -> str:
    """The first AMX mode benched: the host as it is (AMX allowed where the CPU has it)."""
    return next(iter(big["matrix"]["lowered"]))


def _main_bench(big: dict) -> dict:
    """The @224 bench of the default (lowered) bundle, host as it is, references included."""
    return big["matrix"]["lowered"][_main_mode(big)]


VARIANT_LABELS = {"lowered": "lowered (default)", "stock": "stock converter",
                  "relu_control": "control: ReLU instead of h-swish"}


def amx_modes() -> dict[str, bool]:
    """AMX modes to bench in: {label: no_amx}. Both where the CPU has AMX, one otherwise."""
    from . import amx

    if amx.supported() and amx.cpu_has_amx():
        return {"AMX allowed": False, "AMX denied": True}
    return {"no AMX on this CPU": False}


def int8_ratios(matrix: dict[str, dict[str, dict]]) -> list[dict[str, Any]]:
    """int8 / fp32 median latency per runtime, int8 graph and AMX mode (goals of issue 10).

    ``matrix[variant][amx_mode]`` is a bench report; the stock bundle has int8 targets only, so
    its fp32 is the lowered bundle's, measured in the same mode.
    """
    out = []
    for rt, (fp, q) in RUNTIME_TARGETS.items():
        for variant, by_mode in matrix.items():
            for mode, rep in by_mode.items():
                fp_rep = matrix["lowered"][mode] if variant == "stock" else rep
                a, b = _lat(fp_rep, fp), _lat(rep, q)
                ratio = round(b / a, 3) if a and b else None
                out.append({"runtime": rt, "variant": variant, "amx": mode, "fp32_ms": a, "int8_ms": b,
                            "ratio": ratio, "goal": RATIO_GOALS[rt],
                            "meets_goal": ratio is not None and ratio <= RATIO_GOALS[rt],
                            "int8_partitions": _row(rep, q).get("xnnpack_partitions"),
                            "int8_undelegated_ops": _row(rep, q).get("undelegated_ops"),
                            # what the int8 engine did with AMX: ExecuTorch's XNNPACK never asks
                            "int8_amx": _row(rep, q).get("amx")})
    return out


def accuracy_pairs(lowered: Path, stock: Path) -> list[dict[str, Any]]:
    """Validation metrics of the lowered and the stock int8 artifacts of the same model."""
    from .validate.runner import REFERENCE_ROW

    rows = []
    for label, bundle in (("lowered", lowered), ("stock", stock)):
        path = bundle / "report" / "validation.json"
        if not path.exists():
            continue
        rep = json.loads(path.read_text())
        ref = next((r for r in rep["results"] if r["target"] == REFERENCE_ROW), {})
        for r in rep["results"]:
            if r["target"] in STOCK_OPTIONS:
                m = r.get("metrics") or {}
                rows.append({"target": r["target"], "graph": label, "status": r["status"],
                             "top1_accuracy": m.get("top1_accuracy"), "snr_db": m.get("snr_db"),
                             "max_abs": m.get("max_abs"), "top1_agreement": m.get("top1_agreement"),
                             "reference_top1": (ref.get("metrics") or {}).get("top1_accuracy"),
                             "samples": rep.get("samples")})
    return sorted(rows, key=lambda r: (r["target"], r["graph"]))


def _slowest_fix(name: str, cold: dict) -> str:
    """What to do about the slowest conversion: it matters only on the build's critical path."""
    path = [st["step"] for st in critical_path({"steps": cold.get("steps", [])})["steps"]]
    if not any(p.startswith("convert:") for p in path) or f"convert:{name}" in path:
        return (f"{name} is on the critical path: most of it is inside the converter's own passes "
                "(profile its worker with cProfile)")
    chain = " + ".join(p.removeprefix("convert:") for p in path if p.startswith("convert:"))
    return (f"{name} is not on the critical path (its worker finishes first); the build waits on "
            f"{chain}: shorten that worker's work or move some of it")


def findings(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cost measured against its budget, largest overrun first (``excess`` = figure/budget)."""
    f: list[dict[str, Any]] = []
    help_s = res["cli"]["wall_s"]["--help"]
    top = res["cli"]["import_top"][0] if res["cli"]["import_top"] else {"module": "?", "cumulative_ms": 0}
    f.append({"cost": "CLI start-up", "figure": f"`mobiledeploy --help` {help_s * 1e3:.0f} ms "
              f"(largest import: {top['module']} {top['cumulative_ms']:.0f} ms)",
              "excess": help_s / HELP_BUDGET_S, "budget": f"{HELP_BUDGET_S * 1e3:.0f} ms",
              "fix": "keep heavy imports out of the CLI path" if res["cli"]["heavy_modules_imported_by_help"]
              else "none needed: no heavy library is imported by --help"})
    imports = {k: v for k, v in res["heavy_imports_s"].items() if v}
    cold = res["demo"]["cold_build"]
    if cold["conversion_s"]:
        name, secs = max(cold["conversion_s"].items(), key=lambda kv: kv[1])
        total = sum(cold["conversion_s"].values())
        tf_s, torch_s = imports.get("tensorflow", 0), imports.get("torch", 0)
        grouped = any("worker" in st for st in cold.get("steps", []))
        how = ("workers grouped by framework pay imports once" if grouped else
               "measured before grouped workers: every conversion process paid its imports")
        f.append({"cost": "build: slowest conversion",
                  "figure": f"{name} {secs:.1f} s of {total:.1f} s summed conversion time ({how}: "
                            f"tensorflow {tf_s:.1f} s, torch {torch_s:.1f} s)",
                  "excess": secs / max(1e-9, total / max(1, len(cold["conversion_s"]))),
                  "budget": "mean conversion",
                  "fix": _slowest_fix(name, cold)})
    bc = res.get("build")
    if bc and bc.get("ratio_cpu"):
        f.append({"cost": "build: cold full build vs each target alone",
                  "figure": f"{bc['full']['wall_s']:.1f} s wall / {bc['naive_wall_s']:.1f} s = {bc['ratio_wall']:.2f}x; "
                            f"CPU {bc['full']['cpu_s']:.1f} s / {bc['naive_cpu_s']:.1f} s = {bc['ratio_cpu']:.2f}x",
                  "excess": bc["ratio_wall"] / 0.4, "budget": "<= 0.4x (issue 20)",
                  "fix": "see the critical path in the build section"})
    phases = cold["phases"]
    big_phase, big_s = max(phases.items(), key=lambda kv: kv[1])
    f.append({"cost": "build: dominant phase", "figure": f"{big_phase} {big_s:.1f} s of {cold['wall_s']:.1f} s "
              "cold build", "excess": big_s / cold["wall_s"] / 0.5, "budget": "half of the build",
              "fix": "see the conversion row" if big_phase in ("convert", "conversions") else
              f"cache or parallelise the {big_phase} phase"})
    val = res["demo"]["validation"].get("per_sample_ms", {})
    arts = {k: v for k, v in val.items() if not k.startswith("reference")}
    if arts:
        name, ms = max(arts.items(), key=lambda kv: kv[1])
        f.append({"cost": "validation per sample", "figure": f"{name} {ms:.1f} ms/sample",
                  "excess": ms / 50.0, "budget": "50 ms/sample",
                  "fix": f"batch {name}'s inputs or load its runtime once"})
    ratios = res["mnv3_small_224"]["int8_ratios"]
    default_mode = _main_mode(res["mnv3_small_224"])
    for r in ratios:
        if r["variant"] != "lowered" or r["amx"] != default_mode or r["ratio"] is None:
            continue
        f.append({"cost": f"{r['runtime']} int8 vs fp32 @224",
                  "figure": f"int8 {r['int8_ms']:.2f} ms / fp32 {r['fp32_ms']:.2f} ms = {r['ratio']:.2f}x "
                            f"(int8 XNNPACK partitions {r['int8_partitions']}, {r['amx']})",
                  "excess": r["ratio"] / r["goal"], "budget": f"<= {r['goal']}x",
                  "fix": _int8_fix(r, ratios)})
    for label, rep in (("demo", res["demo"]["bench"]), ("@224", _main_bench(res["mnv3_small_224"]))):
        for r in rep["results"]:
            left = r.get("undelegated_ops") or []
            parts = r.get("xnnpack_partitions")
            if r["target"].startswith(("tflite", "edgetpu")) and (left or (parts or 1) > 1):
                f.append({"cost": f"ops outside XNNPACK ({label} {r['target']})",
                          "figure": f"{parts} partitions; left to LiteRT's builtin kernels: "
                                    + ", ".join(sorted(set(left))),
                          "excess": 1.0 + len(left) / 10 + (parts or 1) - 1, "budget": "1 partition, 0 ops",
                          "fix": _xnnpack_fix(set(left))})
    return sorted(f, key=lambda x: -x["excess"])


def _xnnpack_fix(left: set[str]) -> str:
    fixes = []
    if "ADD" in left:
        fixes.append("XNNPACK rejects an int8 ADD whose input/output scale ratio is outside "
                     "[2^-10, 2^8): the h-swish '+3' on a tiny-scale tensor (collapsing activations: "
                     "untrained or un-recalibrated BN) or a residual add of mismatched scales; build from "
                     "trained or BN-recalibrated weights so activations stay unit-scale")
    if left & {"QUANTIZE", "DEQUANTIZE"}:
        fixes.append("uint8 I/O adds QUANTIZE ops outside the delegate: int8 I/O (io_dtype: int8) on CPU")
    rest = left - {"ADD", "QUANTIZE", "DEQUANTIZE"}
    if rest:
        fixes.append(f"see `mobiledeploy inspect` for why XNNPACK leaves {', '.join(sorted(rest))}")
    return "; ".join(fixes) or "merge the partitions"


def _int8_fix(r: dict, ratios: list[dict]) -> str:
    if r["meets_goal"]:
        return "none needed"
    if (r.get("int8_partitions") or 1) > 1:
        return ("one XNNPACK partition for the whole int8 graph: the undelegated ops "
                f"({', '.join(sorted(set(r.get('int8_undelegated_ops') or [])))}) split it")

    def ratio(variant: str, mode: str) -> float | None:
        return next((x["ratio"] for x in ratios if x["runtime"] == r["runtime"] and x["variant"] == variant
                     and x["amx"] == mode), None)

    text = "one partition already"
    control = ratio("relu_control", r["amx"])
    if control is not None:
        text += (f"; the ReLU control network reaches {control:.2f}x in the same mode, so this CPU's int8 "
                 f"kernels bound what any h-swish lowering can reach ({r['ratio'] / control:.2f}x the control)")
    denied = ratio("lowered", "AMX denied") if r.get("int8_amx") == "granted" else None
    if denied is not None:
        text += (f"; with AMX denied (the AVX512-VNNI kernels of CPUs without AMX) int8 is {denied:.2f}x: "
                 "XNNPACK's AMX kernels pad narrow layers (output channels to 64, the 3-channel stem "
                 "worst of all)")
    elif r.get("int8_amx") == "not requested":
        text += "; this runtime's XNNPACK does not use AMX (AVX512-VNNI int8 kernels)"
    return text + "; profile per op (perf shows XNNPACK's kernel names) before changing the graph"


# -- writing -------------------------------------------------------------------------------------

def _fmt(v, fmt="{:.3f}") -> str:
    return "" if v is None else fmt.format(v)


def _bench_table(rep: dict) -> list[str]:
    lines = ["| target | device | median ms | p90 ms | bound ms | median / bound | MB | XNNPACK partitions "
             "| peak RSS MB | status |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rep["results"]:
        lat = r.get("latency_ms") or {}
        over = lat.get("median") / r["bound_ms"] if lat.get("median") and r.get("bound_ms") else None
        status = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        lines.append(f"| {r['target']} | {r.get('device', '')} | {_fmt(lat.get('median'))} | "
                     f"{_fmt(lat.get('p90'))} | {_fmt(r.get('bound_ms'), '{:.4f}')} | {_fmt(over, '{:.0f}x')} | "
                     f"{_fmt(r['bytes'] / 1e6 if r.get('bytes') else None, '{:.2f}')} | "
                     f"{_fmt(r.get('xnnpack_partitions'), '{}')} | {_fmt(r.get('peak_rss_mb'), '{:.0f}')} | "
                     f"{status} |")
    return lines


def _stock_options() -> str:
    return ", ".join(f"`{t}` with " + ", ".join(f"`{k}: {str(v).lower()}`" for k, v in o.items())
                     for t, o in STOCK_OPTIONS.items())


def _accuracy_table(demo: dict) -> list[str]:
    rows = demo.get("int8_accuracy") or []
    if not rows:
        return []
    L = [f"### int8 on the held-out images: lowered vs stock graphs ({rows[0]['samples']} images, "
         f"reference top-1 {_fmt(rows[0]['reference_top1'])})", "",
         "| target | int8 graph | top-1 | top-1 agreement | SNR dB | max abs | status |",
         "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        L.append(f"| {r['target']} | {r['graph']} | {_fmt(r['top1_accuracy'])} | {_fmt(r['top1_agreement'])} | "
                 f"{_fmt(r['snr_db'], '{:.1f}')} | {_fmt(r['max_abs'], '{:.3f}')} | {r['status']} |")
    return L


def write_markdown(res: dict[str, Any], path: Path) -> None:
    m = res["machine"]
    demo, big = res["demo"], res["mnv3_small_224"]
    L = [
        "# mobiledeploy benchmarks",
        "",
        f"Written by `make bench` (`python -m mobiledeploy.benchsuite --out bench`) on {res['date']}.",
        "",
        f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['mhz']:.0f} MHz, ISA {m['isa']} "
        f"(flags: {', '.join(m['isa_flags'])}), Python {m['python']}, {m['os']}. "
        f"Every engine ran with **{m['threads']} threads**, in its own process.",
        "",
        f"**Load average** (1 min) {res['load']['before']} before, {res['load']['after']} after "
        f"(other jobs share these {m['cores']} cores: figures are noisy, read medians, not minima).",
        "",
        f"**Compute bound:** {m['peak'].get('assumption', 'n/a')} = {m['peak'].get('gmacs_fp32')} G MAC/s fp32, "
        f"{m['peak'].get('gmacs_int8')} G MAC/s int8. `bound ms` = MACs / peak: no run can beat it; "
        "`median / bound` is how far each engine is from it (depthwise convolutions and small "
        "tensors are memory- and overhead-bound, so large factors are expected at these sizes).",
        "",
        "## Largest costs (figure / budget, largest first)",
        "",
        "| # | cost | figure | budget | figure/budget | suggested fix |",
        "|---:|---|---|---|---:|---|",
    ]
    for i, f in enumerate(res["findings"], 1):
        L.append(f"| {i} | {f['cost']} | {f['figure']} | {f['budget']} | {f['excess']:.2f} | {f['fix']} |")
    cold, noop = demo["cold_build"], demo["noop_build"]
    L += [
        "",
        f"## Demo bundle: {demo['model']['name']} ({demo['model']['macs'] / 1e6:.1f} M MACs, "
        f"{demo['model']['params'] / 1e6:.2f} M params, input {demo['model']['input']}), {demo['weights']}",
        "",
        f"Cold build `--jobs {res['jobs']}`: **{cold['wall_s']:.1f} s** (exit {cold['returncode']}); "
        f"no-op rebuild: **{noop['wall_s']:.2f} s** (exit {noop['returncode']}, "
        f"{noop.get('steps_ran')} step(s) ran).",
        "",
        "| build phase | seconds |", "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in cold["phases"].items()],
        "",
        "| target | conversion s | validation ms / sample |", "|---|---:|---:|",
    ]
    per = demo["validation"].get("per_sample_ms", {})
    for t in sorted(set(cold["conversion_s"]) | set(per), key=lambda t: (t not in per, t)):
        L.append(f"| {t} | {_fmt(cold['conversion_s'].get(t), '{:.1f}')} | {_fmt(per.get(t), '{:.2f}')} |")
    if res.get("build"):
        L += ["", *build_costs_markdown(res["build"])]
    L += ["", f"Validation: {demo['validation'].get('samples')} samples, status "
          f"{demo['validation'].get('status')}.", "", "### Latency (bench)", "",
          *_bench_table(demo["bench"]), "",
          *_accuracy_table(demo), "",
          f"## MobileNetV3-Small 1.0 @224 ({_main_bench(big)['model']['macs'] / 1e6:.1f} M MACs), seeded weights "
          "with BatchNorm recalibrated on the demo's calibration images: int8 vs fp32", "",
          f"Built with `{big['builds']['lowered']['command'].split(' build ')[0]} build ... "
          f"{' '.join('--target ' + t for t in BIG_TARGETS)} --no-validate --no-app` in "
          f"{big['builds']['lowered']['wall_s']:.1f} s; the stock int8 graphs ({_stock_options()}) "
          "and the ReLU control network built the same way.", "",
          f"Every engine, {_main_mode(big)}:", "",
          *_bench_table(_main_bench(big)), "",
          "int8 / fp32, measured side by side in this run (the stock graph is divided by the lowered "
          "bundle's fp32 of the same mode; the control network by its own fp32):", "",
          "| runtime | int8 graph | run with | int8 engine's AMX | fp32 ms | int8 ms | int8/fp32 | goal | met "
          "| int8 XNNPACK partitions |",
          "|---|---|---|---|---:|---:|---:|---:|---|---:|"]
    for r in big["int8_ratios"]:
        L.append(f"| {r['runtime']} | {VARIANT_LABELS[r['variant']]} | {r['amx']} | {r.get('int8_amx') or ''} | "
                 f"{_fmt(r['fp32_ms'])} | "
                 f"{_fmt(r['int8_ms'])} | {_fmt(r['ratio'], '{:.2f}')} | <= {r['goal']} | "
                 f"{'yes' if r['meets_goal'] else 'NO'} | {_fmt(r['int8_partitions'], '{}')} |")
    L.append("")
    cli = res["cli"]
    L += ["", "## CLI start-up and imports", "",
          "| command | wall s (median of 5) |", "|---|---:|",
          *[f"| `mobiledeploy {k}` | {v:.3f} |" for k, v in cli["wall_s"].items()],
          "", f"Heavy libraries imported by `--help`: {', '.join(cli['heavy_modules_imported_by_help']) or 'none'}.",
          "", "`python -X importtime -m mobiledeploy --help`, top offenders:", "",
          "| module | cumulative ms | self ms |", "|---|---:|---:|",
          *[f"| {r['module']} | {r['cumulative_ms']:.1f} | {r['self_ms']:.1f} |" for r in cli["import_top"]],
          "", "What each conversion/validation process pays before any work (`python -c 'import X'`, wall s):",
          "", "| module | s |", "|---|---:|",
          *[f"| {k} | {_fmt(v, '{:.2f}')} |" for k, v in res["heavy_imports_s"].items()], ""]
    path.write_text("\n".join(L))


# -- main ----------------------------------------------------------------------------------------

def run_suite(out: Path, *, runs: int = 300, threads: int = 2, jobs: int = 2, keep: Path | None = None
              ) -> dict[str, Any]:
    """Run everything; write ``out/results.json`` and ``out/results.md``; return the results."""
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "jobs": jobs,
                           "load": {"before": round(os.getloadavg()[0], 2)},
                           "machine": machine_info(threads)}
    tmp_ctx = tempfile.TemporaryDirectory(prefix="mobiledeploy-benchsuite-")
    work = Path(keep) if keep else Path(tmp_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        _say("CLI start-up …")
        res["cli"] = cli_startup()
        _say("heavy imports …")
        res["heavy_imports_s"] = heavy_imports()
        definition, weights = demo_definition(work)
        demo_out = work / "demo"
        shutil.rmtree(demo_out, ignore_errors=True)
        _say(f"cold build of the demo ({weights}) …")
        cold = timed_build(definition, demo_out, jobs=jobs)
        if not (demo_out / "manifest.json").exists():
            raise RuntimeError(f"demo build failed (exit {cold['returncode']}): {cold['log_tail']}")
        _say("no-op rebuild …")
        noop = timed_build(definition, demo_out, jobs=jobs)
        _say("build costs: the cold full build vs each target alone …")
        res["build"] = {"date": res["date"], "machine": res["machine"],
                        **build_costs(definition, work, jobs)}
        _say("bench of the demo bundle …")
        demo_bench = run_bench(demo_out, work / "demo_bench.json", runs, threads)
        res["demo"] = {"weights": weights, "model": demo_bench["model"], "cold_build": cold,
                       "noop_build": noop, "validation": validation_costs(demo_out), "bench": demo_bench}
        _say("build of the demo's stock int8 graphs (validated) …")
        demo_stock_out = work / "demo_stock"
        shutil.rmtree(demo_stock_out, ignore_errors=True)
        stock_build = timed_build(stock_definition(definition, work), demo_stock_out, jobs=jobs,
                                  extra=("--no-app",))
        res["demo"]["stock_build"] = stock_build
        res["demo"]["int8_accuracy"] = accuracy_pairs(demo_out, demo_stock_out)
        big_def = big_definition(work)
        bundles: dict[str, Path] = {}
        builds: dict[str, dict] = {}
        for variant, vdef in (("lowered", big_def), ("stock", stock_definition(big_def, work)),
                              ("relu_control", relu_control_definition(work))):
            bundles[variant] = work / vdef.stem
            shutil.rmtree(bundles[variant], ignore_errors=True)
            _say(f"build of {vdef.stem} ({VARIANT_LABELS[variant]}) …")
            builds[variant] = timed_build(vdef, bundles[variant], jobs=jobs, extra=("--no-validate", "--no-app"))
            if not (bundles[variant] / "manifest.json").exists():
                raise RuntimeError(f"{vdef.stem} build failed (exit {builds[variant]['returncode']}): "
                                   f"{builds[variant]['log_tail']}")
        # modes outside, variants inside: every int8/fp32 pair is measured minutes apart at most
        matrix: dict[str, dict[str, dict]] = {v: {} for v in bundles}
        modes = amx_modes()
        first = next(iter(modes))  # references once, with the host as it is
        for mode, no_amx in modes.items():
            for variant, bundle in bundles.items():
                _say(f"bench of {bundle.name}, {mode} …")
                slug = mode.lower().replace(" ", "_")
                matrix[variant][mode] = run_bench(bundle, work / f"{bundle.name}_{slug}.json", runs, threads,
                                                  no_amx=no_amx, references=variant == "lowered" and mode == first)
        res["mnv3_small_224"] = {"builds": builds, "matrix": matrix}
        res["load"]["after"] = round(os.getloadavg()[0], 2)
    finally:
        tmp_ctx.cleanup()
    return _finish(res, out)


def run_build_only(out: Path, *, jobs: int = 2, keep: Path | None = None) -> dict[str, Any]:
    """Only the build costs of the demo, merged into ``out/results.json`` (the rest kept as it
    was measured, with its own date)."""
    res = json.loads((out / "results.json").read_text())
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-benchsuite-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        definition, _ = demo_definition(work)
        res["build"] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine_info(2),
                        **build_costs(definition, work, jobs)}
    return _finish(res, out)


def _finish(res: dict[str, Any], out: Path) -> dict[str, Any]:
    """Derive the int8 ratios and the findings from the measurements; write results.json/md."""
    res["mnv3_small_224"]["int8_ratios"] = int8_ratios(res["mnv3_small_224"]["matrix"])
    res["findings"] = findings(res)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(res, out / "results.md")
    return res


def rerender(out: Path) -> dict[str, Any]:
    """Measure nothing: rewrite ``out/results.md`` (and the derived parts of results.json) from
    ``out/results.json``."""
    return _finish(json.loads((out / "results.json").read_text()), out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobiledeploy.benchsuite", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench"), help="where results.md/json go")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="build --jobs")
    p.add_argument("--keep", type=Path, default=None, help="build the bundles here and keep them")
    p.add_argument("--rerender", action="store_true",
                   help="measure nothing: rewrite results.md (and the derived parts of results.json) "
                        "from OUT/results.json")
    p.add_argument("--only", choices=("build",), default=None,
                   help="build: measure only the build costs (cold full build, no-op, each target alone) "
                        "and merge them into OUT/results.json")
    a = p.parse_args(argv)
    if a.rerender:
        res = rerender(a.out)
    elif a.only == "build":
        res = run_build_only(a.out, jobs=a.jobs, keep=a.keep)
    else:
        res = run_suite(a.out, runs=a.runs, threads=a.threads, jobs=a.jobs, keep=a.keep)
    _say(f"wrote {a.out / 'results.md'} and {a.out / 'results.json'}")
    for i, f in enumerate(res["findings"][:3], 1):
        _say(f"  {i}. {f['cost']}: {f['figure']} -> {f['fix']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
