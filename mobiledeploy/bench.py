"""Host benchmarks of a built bundle: latency, size, peak memory, XNNPACK partitions.

Every engine (LiteRT, ExecuTorch, the eager PyTorch and Keras references) runs in its own
subprocess (``python -m mobiledeploy.bench``), so engines share neither memory nor thread pools
and ``ru_maxrss`` is that engine's own peak. Latency: warm-up, then the median and p90 of
``runs`` single-sample invocations on a real validation image, ``threads`` threads.

``no_amx`` denies every engine Intel AMX (see ``mobiledeploy.amx``): on a Xeon with AMX, LiteRT's
XNNPACK runs int8 convolutions on AMX tiles, which pad narrow layers to 64 channels; without it
the int8 figures are those of the AVX512-VNNI kernels, as on x86 CPUs without AMX. Every row
records what happened (``amx``: granted, denied, not requested, n/a).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# flags from /proc/cpuinfo, best first: the widest vector/int8 ISA this CPU offers
_ISA_ORDER = ("avx512_vnni", "avx512f", "avx_vnni", "avx2", "avx", "sse4_2", "neon", "asimd")
CHILD_TIMEOUT_S = 900


# -- machine -------------------------------------------------------------------------------------

def machine_info(threads: int) -> dict[str, Any]:
    """The host as the results should name it: CPU, cores, ISA, clock, Python, OS, load."""
    from ._host import cpu_flags, cpuinfo

    info = cpuinfo()
    flags = cpu_flags(info)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    isa = [f for f in _ISA_ORDER if f in flags]
    mhz = float(info["cpu MHz"]) if info.get("cpu MHz") else None
    m: dict[str, Any] = {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "threads": threads,
        "cores": cores,
        "isa": isa[0] if isa else platform.machine(),
        "isa_flags": isa + sorted(f for f in flags if f.startswith("amx")),
        "mhz": mhz,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    m["peak"] = peak_throughput(m, flags)
    return m


def peak_throughput(machine: dict[str, Any], flags: set[str] | None = None) -> dict[str, Any]:
    """Peak multiply-accumulates per second of ``threads`` cores, fp32 and int8, with assumptions.

    fp32: lanes (16 with avx512f, 8 with avx2) x FMA units (2 assumed with avx512f, as on Xeon
    Gold/Platinum; 2 with avx2+fma) x clock ("cpu MHz", no turbo). int8: VNNI's dot-product
    instructions do 4 int8 MACs per 32-bit lane on the same ports, so 4x fp32; without VNNI 2x.
    """
    flags = flags if flags is not None else set(machine.get("isa_flags", []))
    mhz = machine.get("mhz")
    if not mhz:
        return {"available": False, "reason": "no 'cpu MHz' in /proc/cpuinfo"}
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2 if ("avx512f" in flags or "fma" in flags) else 1
    vnni = bool({"avx512_vnni", "avx_vnni"} & flags)
    n = min(machine["threads"], machine["cores"])
    fp32 = n * lanes * fma_units * mhz * 1e6
    return {
        "available": True,
        "cores_used": n,
        "gmacs_fp32": round(fp32 / 1e9, 1),
        "gmacs_int8": round(fp32 * (4 if vnni else 2) / 1e9, 1),
        "assumption": (f"{n} core(s) x {lanes} fp32 lanes x {fma_units} FMA units x {mhz:.0f} MHz "
                       f"(no turbo); int8 = {'4x (VNNI)' if vnni else '2x (no VNNI)'} fp32"),
    }


def bound_ms(macs: int, peak: dict[str, Any], precision: str) -> float | None:
    """The compute-bound floor of one forward: MACs / peak MAC rate, in ms."""
    if not peak.get("available") or not macs:
        return None
    rate = peak["gmacs_int8" if precision == "int8" else "gmacs_fp32"] * 1e9
    return round(macs / rate * 1e3, 4)


# -- parent: what to run -------------------------------------------------------------------------

def _row(target: str, status: str, reason: str = "", **extra) -> dict[str, Any]:
    return {"target": target, "latency_ms": None, "bytes": None, "runs": 0,
            "xnnpack_partitions": None, "peak_rss_mb": None, "status": status, "reason": reason,
            **extra}


def _plan(art: dict[str, Any]) -> tuple[str | None, str, str]:
    """(engine, device label, skip reason) for one manifest artifact: its backend class says."""
    from .backends.registry import backend_class
    from .errors import UserError

    try:
        cls = backend_class(art.get("backend", ""))
    except UserError as exc:
        return None, art.get("backend", "?"), str(exc)
    why = cls().bench_skip_reason()
    # the engine is the manifest's backend reference (a plugin's "module:Class" resolves in the child)
    return (None if why else art["backend"]), cls.bench_device, why or ""


def _write_input(bundle: Path, workdir: Path) -> tuple[Path, Any]:
    """One real validation image, preprocessed as the references take it (NCHW float32)."""
    import numpy as np

    from .images import load_batch
    from .validate.runner import bundle_definition

    d = bundle_definition(bundle)
    batch = load_batch(d, "validation", limit=1)
    path = workdir / "input.npy"
    np.save(path, batch.x[:1].astype(np.float32))
    return path, d


def _model_stats(d) -> dict[str, Any]:
    from .architectures.stats import totals

    macs, params = totals(d.architecture_spec())
    return {"name": d.name, "macs": int(macs), "params": int(params),
            "input": [d.input.height, d.input.width, d.input.channels]}


def run_engine(engine: str, *, path: Path | None, bundle: Path, input_path: Path, runs: int,
               threads: int, warmup: int, no_amx: bool = False, timeout: float = CHILD_TIMEOUT_S
               ) -> dict[str, Any]:
    """Run one engine in a fresh subprocess; its JSON result (status ok/skipped/failed)."""
    cmd = [sys.executable, "-m", "mobiledeploy.bench", "--engine", engine, "--bundle", str(bundle),
           "--input", str(input_path), "--runs", str(runs), "--threads", str(threads),
           "--warmup", str(warmup)]
    if path is not None:
        cmd += ["--path", str(path)]
    if no_amx:
        cmd.append("--no-amx")
    # one thread pool per process, sized by --threads; quiet TensorFlow
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"{engine} did not finish within {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    return {"status": "failed", "reason": f"{engine} exited {proc.returncode}: {tail[0][:300]}"}


def bench_bundle(bundle: str | Path, *, runs: int = 300, threads: int = 2, warmup: int | None = None,
                 references: bool = True, targets: tuple[str, ...] = (), no_amx: bool = False,
                 say=lambda m: None) -> dict[str, Any]:
    """Benchmark every artifact of a built bundle (and the eager references) on this host.

    Returns ``{"machine", "model", "bundle", "results": [row]}``; each row has ``target``,
    ``latency_ms`` ({median, p90, mean, min} or None), ``bytes``, ``runs``, ``threads``,
    ``xnnpack_partitions``, ``peak_rss_mb``, ``rss_delta_mb``, ``bound_ms``, ``device``,
    ``executor``, ``amx``, ``status`` (ok | skipped | failed) and ``reason``. ``no_amx`` denies
    the engines AMX (UserError where that cannot be done: not x86-64 Linux).
    """
    from . import amx
    from .bundle import load_manifest
    from .errors import UserError
    from .safety import clip

    if no_amx and not amx.supported():
        raise UserError(f"--no-amx: AMX can only be denied on x86-64 Linux (this is "
                        f"{platform.system()} {platform.machine()}); drop the flag")
    bundle = Path(bundle)
    manifest = load_manifest(bundle)  # UserError (exit 2) when the bundle or manifest is missing
    from .trust import verify_bundle

    known = [a["target"] for a in manifest.get("artifacts", []) if isinstance(a, dict)] + [
        f["target"] for f in manifest.get("failed", []) if isinstance(f, dict)]
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise UserError(f"--target {clip(unknown[0], 40)}: not in this bundle; present: "
                        f"{', '.join(known) or 'none'}")
    verify_bundle(bundle, manifest, set(targets) if targets else None)  # before timing anything
    warmup = warmup if warmup is not None else max(5, min(50, runs // 10))
    machine = machine_info(threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-bench-") as tmp:
        input_path, d = _write_input(bundle, Path(tmp))
        model = _model_stats(d)
        common = {"bundle": bundle, "input_path": input_path, "runs": runs, "threads": threads,
                  "warmup": warmup, "no_amx": no_amx}
        jobs: list[tuple[dict[str, Any], str | None, Path | None]] = []
        if references:
            for ref in ("reference-pytorch", "reference-keras"):
                jobs.append((_row(ref, "pending", device="CPU (eager, float32)",
                                  precision="fp32"), ref, None))
        for art in manifest.get("artifacts", []):
            if targets and art["target"] not in targets:
                continue
            engine, device, why = _plan(art)
            row = _row(art["target"], "skipped" if why else "pending", why, device=device,
                       precision=art.get("precision", ""), bytes=art.get("bytes"), path=art["path"])
            if (art.get("facts") or {}).get("xnnpack_partitions") is not None:  # counted at conversion
                row["xnnpack_partitions"] = art["facts"]["xnnpack_partitions"]
            jobs.append((row, engine, bundle / art["path"]))
        for f in manifest.get("failed", []):
            if not targets or f["target"] in targets:
                jobs.append((_row(f["target"], "failed", f"conversion failed: {f['reason']}"), None, None))
        for row, engine, path in jobs:
            if engine and row["status"] == "pending":
                if path is not None and not path.exists():
                    row.update(status="failed", reason=f"{row['path']} is missing; rerun mobiledeploy build")
                else:
                    say(f"  {row['target']}: {engine} …")
                    res = run_engine(engine, path=path, **common)
                    partitions = res.pop("xnnpack_partitions", None)
                    row.update(res)
                    if partitions is not None:
                        row["xnnpack_partitions"] = partitions
            row["threads"] = threads
            row["bound_ms"] = bound_ms(model["macs"], machine["peak"], row.get("precision", "fp32"))
            rows.append(row)
    return {"machine": machine, "model": model, "bundle": str(bundle), "warmup": warmup,
            "no_amx": no_amx, "results": rows}


# -- child: one engine, one process --------------------------------------------------------------

def _rss_mb() -> float:
    """Current resident set size (MB), or the peak so far where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _maxrss_mb()


def _maxrss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _engine_backend(name: str, path: Path, x, runs: int, threads: int, warmup: int, base: list) -> dict:
    """Time an artifact with its backend's own ``bench``."""
    from .backends.registry import get_backend

    def loaded() -> None:
        base[0] = _rss_mb()  # the runtime is loaded; what follows is the model's own memory

    return get_backend(name).bench(path, x, runs=runs, warmup=warmup, threads=threads, loaded=loaded)


def _engine_pytorch(bundle: Path, x, runs: int, threads: int, warmup: int, base: list) -> dict:
    from ._deps import require, version
    from ._timing import time_calls

    torch = require("torch", "the PyTorch reference")
    from .architectures.reference import build_torch_reference
    from .architectures.weights import read_weights
    from .bundle import load_manifest
    from .validate.runner import bundle_definition

    torch.set_num_threads(threads)
    base[0] = _rss_mb()
    d = bundle_definition(bundle)
    model = build_torch_reference(d, read_weights(bundle / load_manifest(bundle)["reference"]["weights"]))
    model.eval()
    t = torch.from_numpy(x)
    with torch.no_grad():
        lat = time_calls(lambda: model(t), runs, warmup)
    return {"latency_ms": lat, "executor": f"torch {version('torch')} eager (no_grad, batch 1, "
            f"{torch.get_num_threads()} threads)"}


def _engine_keras(bundle: Path, x, runs: int, threads: int, warmup: int, base: list) -> dict:
    from ._deps import require, version
    from ._timing import time_calls

    tf = require("tensorflow", "the Keras reference")
    from .architectures.reference import build_keras_reference
    from .architectures.weights import read_weights
    from .bundle import load_manifest
    from .validate.runner import bundle_definition

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    base[0] = _rss_mb()
    d = bundle_definition(bundle)
    model = build_keras_reference(d, read_weights(bundle / load_manifest(bundle)["reference"]["weights"]))
    xt = tf.constant(x.transpose(0, 2, 3, 1))
    fn = tf.function(lambda v: model(v, training=False))  # graph mode: what a deployment would call
    def call():
        y = fn(xt)
        # a detector returns its two heads: fetch every output, as the eager reference does
        return [t.numpy() for t in y] if isinstance(y, (list, tuple)) else y.numpy()

    lat = time_calls(call, runs, warmup)
    return {"latency_ms": lat, "executor": f"keras {version('keras')} tf.function (batch 1, "
            f"{threads} intra-op threads)"}


_REFERENCES = {"reference-pytorch": _engine_pytorch, "reference-keras": _engine_keras}


def _child(argv: list[str]) -> int:
    import argparse

    import numpy as np

    from .errors import MissingDependencyError

    p = argparse.ArgumentParser(prog="python -m mobiledeploy.bench")
    p.add_argument("--engine", required=True, help="a reference row or a backend name")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--path", type=Path)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-amx", action="store_true")
    a = p.parse_args(argv)
    from . import amx

    if a.no_amx and amx.cpu_has_amx():
        amx.deny()  # before any runtime is imported: XNNPACK asks once, at initialisation
    x = np.load(a.input)
    base = [_rss_mb()]
    try:
        if a.engine in _REFERENCES:
            out = _REFERENCES[a.engine](a.bundle, x, a.runs, a.threads, a.warmup, base)
        else:
            out = _engine_backend(a.engine, a.path, x, a.runs, a.threads, a.warmup, base)
        out.update(status="ok", reason="", runs=a.runs, peak_rss_mb=round(_maxrss_mb(), 1),
                   rss_delta_mb=round(_maxrss_mb() - base[0], 1), amx=amx.state())
        if a.engine not in _REFERENCES:  # after the peak is read: this may load the model again
            from .backends.registry import get_backend

            out.update(get_backend(a.engine).bench_facts(a.path))
    except MissingDependencyError as exc:
        out = {"status": "skipped", "reason": str(exc).splitlines()[0]}
    except Exception as exc:  # reported as a failed row, the other engines still run
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        out = {"status": "failed", "reason": f"{type(exc).__name__}: {msg}"[:300]}
    print(json.dumps(out))
    return 0


# -- presentation --------------------------------------------------------------------------------

def print_table(report: dict[str, Any], console=None) -> None:
    """The results as a rich table (latency read against the compute bound)."""
    from rich.console import Console
    from rich.table import Table

    m = report["machine"]
    peak = m["peak"]
    title = (f"{report['model']['name']}: {report['model']['macs'] / 1e6:.1f} M MACs on {m['cpu']} "
             f"({m['threads']} threads of {m['cores']} cores, {m['isa']})")
    amx_col = any(r.get("amx") not in (None, "n/a") for r in report["results"])
    if report.get("no_amx"):
        title += ", AMX denied"
    t = Table(title=title, caption=("bound = MACs / peak: " + peak["assumption"])
              if peak.get("available") else None)
    for col in ("target", "device", "median ms", "p90 ms", "bound ms", "MB", "XNNPACK parts",
                "peak RSS MB", *(["AMX"] if amx_col else []), "status"):
        t.add_column(col, justify="right" if "ms" in col or "MB" in col or "parts" in col else "left")
    for r in report["results"]:
        lat = r.get("latency_ms") or {}

        def f(v, fmt="{:.3f}"):
            return "" if v is None else fmt.format(v)

        color = {"ok": "green", "skipped": "yellow"}.get(r["status"], "red")
        status = f"[{color}]{r['status']}[/]" + (f" {r['reason'][:60]}" if r.get("reason") else "")
        t.add_row(r["target"], r.get("device", ""), f(lat.get("median")), f(lat.get("p90")),
                  f(r.get("bound_ms"), "{:.3f}"), f((r.get("bytes") or None) and r["bytes"] / 1e6, "{:.2f}"),
                  f(r.get("xnnpack_partitions"), "{}"), f(r.get("peak_rss_mb"), "{:.0f}"),
                  *([r.get("amx") or ""] if amx_col else []), status)
    console = console or Console(width=160)
    console.print(t)
    if any(r.get("amx") == "granted" and r.get("precision") == "int8" for r in report["results"]):
        console.print("int8 rows marked 'granted' ran on XNNPACK's AMX kernels, which pad narrow layers; "
                      "phones and most CPUs have no AMX: `mobiledeploy bench --no-amx` measures the "
                      "kernels they use.", style="yellow")


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
