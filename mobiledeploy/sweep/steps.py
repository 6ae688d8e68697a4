"""The sweep's steps, run in a worker (a Ray task or a local process): train, build (+ validate),
bench. Each reads its inputs from the store and commits its outputs under its key there, so a
step that finished is never run again, whichever worker or machine runs the rest.

A build step is the pipeline's own build (``mobiledeploy.pipeline.run.build``) of one variant for
one target, with validation; its bundle (artifact, manifest, validation report) is the step's
output. The bench step times that artifact with ``mobiledeploy.bench.bench_bundle``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path

import yaml

from .store import Store, StoreError

# how the build reports a conversion whose process died (pipeline/run.py ``_run_conversions``):
# a crash is not the converter's verdict on the model, so it is retried and never cached
CRASH_PREFIXES = ("converter process crashed", "converter process exited")


def node_id() -> str:
    """Where this step runs: the Ray node's id (short) in a Ray worker, else the host name."""
    try:
        import sys

        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                return "ray:" + ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # not in a Ray worker after all
        pass
    return socket.gethostname()


def work_root() -> Path:
    root = Path(os.environ.get("MOBILEDEPLOY_SWEEP_WORK") or Path(tempfile.gettempdir()) / f"mobiledeploy-sweep-{os.getuid()}")
    root.mkdir(parents=True, exist_ok=True)
    return root


def materialize_inputs(store: Store, pack: str) -> Path:
    """The base project's files (labels, images, weights) unpacked once per machine."""
    dest = work_root() / "inputs" / pack[:24]
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    store.fetch_inputs(pack, tmp)
    (tmp / ".complete").write_text(pack)
    try:
        os.replace(tmp, dest)
    except OSError:  # another worker unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_definition(project: Path, data: dict, tag: str) -> Path:
    from ..bundle import write_bytes_atomic

    path = project / f"_variant_{tag}.yaml"
    write_bytes_atomic(path, yaml.safe_dump(data, sort_keys=False).encode())
    return path


def _weights(store: Store, project: Path, ref: dict | None) -> str | None:
    """The weights file a step uses, relative to the project folder (None: seeded)."""
    if not ref:
        return None
    if "file" in ref:
        return ref["file"]
    name = f"_weights_{ref['train'][:16]}.safetensors"
    if not (project / name).exists():
        tmp = project / f".{name}.{os.getpid()}"
        store.fetch(ref["train"], tmp)
        os.replace(tmp / "weights.safetensors", project / name)
        shutil.rmtree(tmp, ignore_errors=True)
    return name


def run_task(req: dict) -> dict:
    """Entry point of every worker: never raises for a step's own failure (that is a result);
    only the death of the process loses the task, which the executor then reruns."""
    key = req["key"]
    try:
        store = Store(req["store"])
        lease = {"pid": os.getpid(), "host": socket.gethostname(), "node": node_id(), "kind": req["kind"],
                 "what": req.get("what", ""), "started": time.time(), "stage": req["kind"]}
        req = {**req, "_lease": lease}
        store.lease(key, lease)
    except StoreError as exc:  # the store is down: the driver stops the sweep (nothing to retry here)
        return {"key": key, "store_error": str(exc)}
    try:
        if req["kind"] == "train":
            return _train(store, req)
        return _build_and_bench(store, req)
    except StoreError as exc:
        return {"key": key, "store_error": str(exc)}
    except Exception as exc:  # a user error or a bug in one step: reported, the sweep goes on
        return {"key": key, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:600],
                "traceback": traceback.format_exc()[-4000:]}
    finally:
        with _suppress_store():
            store.release(key)


class _suppress_store:
    """Releasing a lease in a store that went away is not worth a second error."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (StoreError, NameError))


def _train(store: Store, req: dict) -> dict:
    key = req["key"]
    rec = store.record(key)
    if rec is not None:
        return {"key": key, "record": rec, "ran": False}
    from ..architectures.weights import read_weights, save_weights
    from ..definition import load_definition
    from ..demo.train import train_model

    project = materialize_inputs(store, req["pack"])
    data = dict(req["definition"])
    init = data.pop("weights", None)
    d = load_definition(_write_definition(project, data, key[:16]))
    spec = req["train"]
    t0, started = time.monotonic(), time.time()
    state = None
    if init:
        from ..architectures.reference import check_weights_file
        from ..errors import UserError

        try:  # fine-tune from the variant's file when it fits its architecture
            check_weights_file(load_definition(_write_definition(project, {**data, "weights": init}, key[:16] + "w")))
            state = read_weights(project / init)
        except UserError:
            state = None
    model, summary = train_model(d, train_images=spec["images"], epochs=spec["epochs"], batch=spec["batch"],
                                 lr=spec["lr"], seed=spec["seed"], threads=spec["threads"], render_workers=1,
                                 recalibrate_images=min(spec["images"], 3000), init_state=state,
                                 say=lambda m: None)
    summary["fine_tuned_from"] = init if state is not None else None
    with tempfile.TemporaryDirectory(dir=work_root()) as tmp:
        outdir = Path(tmp) / "out"
        outdir.mkdir()
        save_weights(model, outdir / "weights.safetensors", metadata={"val_top1": f"{summary['val_top1']:.4f}"})
        rec = {"kind": "train", "summary": summary, "seconds": round(time.monotonic() - t0, 2),
               "host": socket.gethostname(), "node": node_id(), "started": round(started, 3)}
        rec = store.commit(key, rec, outdir)
    return {"key": key, "record": rec, "ran": True}


def _build_and_bench(store: Store, req: dict) -> dict:
    key, bench_key = req["key"], req["bench_key"]
    build_rec = store.record(key)
    bench_rec = store.record(bench_key)
    out = {"key": key, "bench_key": bench_key, "ran": {"build": False, "bench": False}, "conversions": 0}
    if build_rec is not None and bench_rec is not None:
        return {**out, "build": build_rec, "bench": bench_rec}
    with tempfile.TemporaryDirectory(dir=work_root()) as tmp:
        bundle = Path(tmp) / "bundle"
        if build_rec is None:
            build_rec = _build(store, req, bundle)
            out["ran"]["build"] = True
            out["conversions"] = build_rec["conversions"]
        elif build_rec.get("artifact"):
            store.fetch(key, bundle)
        if bench_rec is None:
            store.lease(key, {**req["_lease"], "stage": "bench"})
            bench_rec = _bench(store, req, bundle, build_rec)
            out["ran"]["bench"] = True
    return {**out, "build": build_rec, "bench": bench_rec}


def _build(store: Store, req: dict, bundle: Path) -> dict:
    from ..pipeline.run import BuildOptions, build

    key, target = req["key"], req["target"]
    project = materialize_inputs(store, req["pack"])
    data = dict(req["definition"])
    weights = _weights(store, project, req.get("weights"))
    if weights:
        data["weights"] = weights
    else:
        data.pop("weights", None)
    path = _write_definition(project, data, key[:16])
    t0, started = time.monotonic(), time.time()
    crashes: list[str] = []
    while True:
        res = build(str(path), BuildOptions(out=bundle, targets=(target,), jobs=1, quiet=True, app=False,
                                            samples=req.get("samples"), force=True))
        why = res.failed.get(target) or ""
        if not why.startswith(CRASH_PREFIXES):
            break
        # the converter's process died (killed, out of memory): not a verdict on the model. The
        # build is run again (its own cache keeps what finished); after ``retries`` crashes the
        # step is an error, which is never stored, so the next sweep tries again
        crashes.append(why.split(";")[0])
        if len(crashes) > req.get("retries", 2):
            raise RuntimeError(f"the {target} converter crashed {len(crashes)} times ({crashes[-1]}); not cached")
    seconds = time.monotonic() - t0
    record = json.loads((bundle / ".mobiledeploy" / "build.json").read_text())
    conversions = sum(1 for s in record["steps"] if s["step"].startswith("convert:") and s["status"] != "skipped")
    art = next((a for a in res.manifest.get("artifacts", []) if a["target"] == target), None)
    validation = res.validation or {}
    rows = {r["target"]: r for r in validation.get("results", [])}
    rec = {"kind": "build", "target": target, "seconds": round(seconds, 2), "host": socket.gethostname(),
           "node": node_id(), "started": round(started, 3), "crashes": crashes,
           "conversions": conversions, "build_steps": [
               {k: s[k] for k in ("step", "status", "seconds")} for s in record["steps"]],
           "artifact": {k: art[k] for k in ("path", "sha256", "bytes", "precision", "backend", "options", "facts")
                        if k in art} if art else None,
           "failed": res.failed.get(target),
           "validation": {"status": validation.get("status"), "samples": validation.get("samples"),
                          "row": rows.get(target), "reference": rows.get("reference-pytorch"),
                          "keras": rows.get("reference-keras")}}
    shutil.rmtree(bundle / ".mobiledeploy", ignore_errors=True)
    return store.commit(key, rec, bundle)


def _bench(store: Store, req: dict, bundle: Path, build_rec: dict) -> dict:
    from ..bench import bench_bundle

    t0, started = time.monotonic(), time.time()
    if not build_rec.get("artifact"):
        rec = {"kind": "bench", "row": {"status": "failed", "reason": "no artifact (conversion failed)"}}
    else:
        spec = req["bench"]
        report = bench_bundle(bundle, runs=spec["runs"], threads=spec["threads"], references=False,
                              targets=(req["target"],))
        row = next(r for r in report["results"] if r["target"] == req["target"])
        rec = {"kind": "bench", "row": row, "machine": {k: report["machine"].get(k) for k in ("cpu", "threads")},
               "model": report.get("model"), "host": socket.gethostname()}
    rec.update(node=node_id(), started=round(started, 3), seconds=round(time.monotonic() - t0, 2))
    return store.commit(req["bench_key"], rec)
