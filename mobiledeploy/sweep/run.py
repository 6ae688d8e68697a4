"""`mobiledeploy sweep SWEEP.yaml -o OUT`: every variant x target built, validated and benchmarked
as content-keyed steps, on Ray or in local processes, against a shared artifact store.

The driver plans the steps and their keys (every input that can change a step's result, by
content), skips those the store already holds, runs the rest (train first, then build + bench),
and writes the table, the Pareto fronts and the plots to OUT.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .spec import Sweep, load_sweep
from .store import Store, StoreError

SWEEP_JSON = "sweep.json"


@dataclass
class SweepOptions:
    out: Path
    cache: str | None = None  # folder or fsspec URL; default $MOBILEDEPLOY_CACHE or ~/.cache/mobiledeploy/sweep
    executor: str = "auto"  # ray | local | auto (Ray when installed)
    address: str | None = None  # a Ray cluster (implies ray)
    jobs: int = 2
    retries: int = 3
    quiet: bool = False
    on_progress: object = None  # callable(event dict), for tests and tools


@dataclass
class Plan:
    train: dict[str, dict] = field(default_factory=dict)  # key -> request
    build: dict[str, dict] = field(default_factory=dict)  # key -> request
    cells: list[dict] = field(default_factory=list)  # (variant, target) -> keys


def default_cache() -> str:
    return os.environ.get("MOBILEDEPLOY_CACHE") or str(Path.home() / ".cache" / "mobiledeploy" / "sweep")


def run_sweep(path: str | Path, opts: SweepOptions) -> dict:
    """Run a sweep; returns the result written to OUT/sweep.json."""
    from ..backends.registry import check
    from ..targets import get_target
    from .report import write_report

    say = _say(opts.quiet)
    sweep = load_sweep(path)  # every variant checked: nothing written on a bad file
    out = Path(opts.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SWEEP_JSON).is_file())):
        raise UserError(f"{out}: exists and is not a sweep's output; choose a new or empty folder for -o")
    for b in sorted({get_target(t).backend for v in sweep.variants for t in v.targets}):
        check(b)  # a missing extra: exit 2 before any work
    store = Store(opts.cache or default_cache())  # a bad URL: one line, exit 2
    store.check()  # wrong credentials or no endpoint: one line naming the store, before any step
    executor = _LazyExecutor(opts)  # Ray starts only when a step is not in the store
    t0 = time.monotonic()
    plan = _plan(sweep, store)
    n_cells = len(plan.cells)
    say(f"[bold]sweep[/] {sweep.name}: {len(sweep.variants)} variant(s) x target(s) = {n_cells} cell(s); "
        f"{len(plan.train)} training and {len(plan.build)} build step(s); cache {store.describe()}; "
        f"{executor.describe()}")

    results: dict[str, dict] = {}
    stats = {"train_ran": 0, "build_ran": 0, "bench_ran": 0, "conversions": 0, "cached": 0, "errors": 0,
             "worker_deaths": 0}

    def done(res: dict, i: int, total: int, phase: str) -> None:
        if "store_error" in res:  # the store went away: nothing can be kept; stop (a rerun resumes)
            raise StoreError(res["store_error"])
        results[res["key"]] = res
        if "error" in res:
            stats["errors"] += 1
            say(f"  [red]✗[/] [{i}/{total}] {phase} {res.get('what', res['key'][:12])}: {res['error']}")
        elif phase == "train":
            stats["train_ran"] += bool(res["ran"])
            stats["cached"] += not res["ran"]
            s = res["record"]["summary"]
            say(f"  [green]✓[/] [{i}/{total}] train {res['what']}: "
                f"{'trained' if res['ran'] else 'cached'} (val top-1 {s['val_top1']:.3f})")
        else:
            ran = res["ran"]
            stats["build_ran"] += ran["build"]
            stats["bench_ran"] += ran["bench"]
            stats["conversions"] += res["conversions"]
            stats["cached"] += not (ran["build"] or ran["bench"])
            lat = (res["bench"].get("row") or {}).get("latency_ms") or {}
            how = ("built" if ran["build"] else "cached") + (", benchmarked" if ran["bench"] else "")
            status = ((res["build"].get("validation") or {}).get("row") or {}).get("status", "failed")
            say(f"  [green]✓[/] [{i}/{total}] {res['what']}: {how}; {status}"
                + (f", {lat['median']:.3f} ms" if lat.get("median") is not None else ""))
        if callable(opts.on_progress):
            opts.on_progress({"phase": phase, "key": res["key"], "result": res})

    if opts.address and "://" not in store.location:
        say(f"[yellow]the cache {store.location} is a local folder: every node of the cluster must see it "
            "(a shared filesystem), or give --cache s3://... (fsspec)[/]")
    try:
        for phase, reqs in (("train", plan.train), ("build", plan.build)):
            todo = []
            for _key, req in reqs.items():
                failed = results.get((req.get("weights") or {}).get("train", ""), {}).get("error")
                if failed:  # no weights: the variant's builds are not attempted
                    done({"key": req["key"], "what": req["what"], "error": f"training failed: {failed}"},
                         len(results) + 1, len(plan.train) + len(plan.build), phase)
                    continue
                res = _cached(store, req)
                if res is not None:
                    done(res, len(results) + 1, len(plan.train) + len(plan.build), phase)
                else:
                    todo.append(req)
            if todo:
                say(f"[bold]{phase}[/]: {len(todo)} step(s) to run")
                executor.run(todo, lambda res, ph=phase: done(res, len(results) + 1,
                                                                len(plan.train) + len(plan.build), ph), stats)
    finally:
        executor.close()  # a local Ray instance we started stops here

    rows = _rows(sweep, plan, results)
    result = {"name": sweep.name, "sweep": str(sweep.path), "base": str(sweep.base_path),
              "cache": store.describe(), "executor": executor.name,
              "axes": {k: v for k, v in sweep.spec.axes.items()},
              "variants": [{"id": v.id, "label": v.label, "values": v.values} for v in sweep.variants],
              "rows": rows, "stats": {**stats, "steps": len(plan.train) + len(plan.build),
                                      "seconds": round(time.monotonic() - t0, 1)}}
    write_report(out, result, store, say)
    say(f"[bold]sweep[/] {out / SWEEP_JSON} and {out / 'index.html'} written in {time.monotonic() - t0:.1f}s "
        f"({stats['build_ran']} build(s), {stats['conversions']} conversion(s), {stats['cached']} cached)")
    if stats["errors"]:  # the table is written (the errored cells say why); the exit code tells
        from ..errors import InternalError

        first = next(r for r in rows if r["status"] == "error")
        raise InternalError(f"{stats['errors']} step(s) did not finish (first: {first['variant']} x "
                            f"{first['target']}: {first['reason'][:200]}); see {out / SWEEP_JSON}")
    return result


def _say(quiet: bool):
    from ..pipeline.run import Reporter

    return Reporter(quiet)


def _cached(store: Store, req: dict) -> dict | None:
    """The result of a step the store already holds (without starting a worker)."""
    rec = store.record(req["key"])
    if rec is None:
        return None
    if req["kind"] == "train":
        return {"key": req["key"], "what": req["what"], "record": rec, "ran": False}
    bench = store.record(req["bench_key"])
    if bench is None:
        return None
    return {"key": req["key"], "bench_key": req["bench_key"], "what": req["what"], "build": rec, "bench": bench,
            "ran": {"build": False, "bench": False}, "conversions": 0}


# -- planning -----------------------------------------------------------------------------------

def _input_files(sweep: Sweep) -> dict[str, Path]:
    """Every file a worker needs from the base folder (labels, images, weights files), by the
    path the definitions name it with."""
    from ..images import list_images
    from ..tasks import get_task

    root = sweep.base_path.parent
    files: dict[str, Path] = {}

    def add(p: Path, field: str) -> None:
        p = p.resolve()
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:
            raise UserError(f"{sweep.path}: {field}: {p} is outside the base definition's folder; a sweep "
                            "ships that folder to its workers, so keep the files inside it") from None
        files[rel] = p

    for v in sweep.variants:
        d = v.definition
        add(d.confined(d.labels, "labels"), "labels")
        if d.weights:
            add(d.confined(d.weights, "weights"), "weights")
        for which in ("calibration", "validation"):
            images = getattr(d, which)
            # the task's truth files (``Task.truth_fields``: segmentation masks, a folder;
            # detection boxes, a JSON file): the workers judge the rows with them
            for tf in get_task(d).truth_fields:
                rel = getattr(images, tf, None)
                if rel:
                    where = d.confined(rel, f"{which}.{tf}")
                    for p in sorted(where.rglob("*")) if where.is_dir() else [where]:
                        if p.is_file():
                            add(p, f"{which}.{tf}")
            src = d.confined(images.source, f"{which}.source")
            if src.is_dir():
                for p in sorted(src.rglob("*")):
                    if p.is_file():
                        add(p, f"{which}.source")
            else:
                add(src, f"{which}.source")
                for p, _ in list_images(src, d.labels_list(), where=f"{which}", root=d.root):
                    add(p, f"{which}.source")
    return files


def _plan(sweep: Sweep, store: Store) -> Plan:
    from .._deps import version
    from ..bench import machine_info
    from ..bundle import sha256_file
    from ..pipeline.graph import digest
    from ..pipeline.keys import sweep_build_key
    from ..pipeline.sources import source_digest

    files = _input_files(sweep)
    shas = {rel: sha256_file(p) for rel, p in files.items()}
    pack = digest(sorted(shas.items()))
    store.put_inputs(pack, files)
    spec = sweep.spec
    machine = machine_info(spec.bench.threads)
    machine_id = {k: machine.get(k) for k in ("cpu", "cores", "isa_flags")}
    train_src = source_digest("mobiledeploy.sweep.steps", "mobiledeploy.demo.train")
    bench_src = source_digest("mobiledeploy.bench")
    plan = Plan()
    for v in sweep.variants:
        data = v.data
        weights_ref = weights_key = None
        if spec.train:
            init = data.get("weights") if "weights" in v.values or _fits(v) else None
            # what training reads: never the targets, their options, the app or the calibration set
            tdata = {k: x for k, x in data.items() if k not in ("targets", "target_options", "tolerances",
                                                               "android", "weights", "metadata")}
            if init:
                tdata["weights"] = init
            key = digest({"kind": "train", "definition": {k: x for k, x in tdata.items()
                                                          if k not in ("weights", "calibration")},
                          "init": shas.get(_rel(v, init)) if init else None, "labels": shas[_rel(v, data["labels"])],
                          "data": pack, "train": spec.train.model_dump(), "source": train_src,
                          "torch": version("torch")})
            plan.train.setdefault(key, {"kind": "train", "key": key, "store": store.location, "pack": pack,
                                        "definition": tdata, "train": spec.train.model_dump(),
                                        "what": f"{v.id} ({v.label})"})
            weights_ref, weights_key = {"train": key}, {"train": key}
        elif data.get("weights"):
            weights_ref = {"file": _rel(v, data["weights"])}
            weights_key = {"sha256": shas[weights_ref["file"]]}
        for t in v.targets:
            bdata = copy.deepcopy(data)
            bdata["targets"] = [t]
            bdata["target_options"] = {k: x for k, x in (data.get("target_options") or {}).items() if k == t}
            bdata["tolerances"] = {k: x for k, x in (data.get("tolerances") or {}).items()
                                   if k in (t, "reference-keras")}
            bdata.pop("weights", None)
            # the build's own step declarations (pipeline/keys.py): its sources, toolchains, target
            key = sweep_build_key(v.definition, {k: x for k, x in bdata.items() if k != "android"}, t,
                                  weights=weights_key, files=pack, samples=spec.samples)
            bench_key = digest({"kind": "bench", "build": key, "bench": spec.bench.model_dump(),
                                "machine": machine_id, "source": bench_src})
            what = f"{v.id} x {t} ({v.label})"
            plan.build.setdefault(key, {"kind": "build", "key": key, "bench_key": bench_key, "store": store.location,
                                        "pack": pack, "definition": bdata, "weights": weights_ref, "target": t,
                                        "samples": spec.samples, "bench": spec.bench.model_dump(), "what": what,
                                        "retries": 2})
            plan.cells.append({"variant": v.id, "target": t, "build": key, "bench": bench_key,
                               "train": (weights_ref or {}).get("train")})
    return plan


def _rel(v, name: str) -> str:
    return v.definition.path(name).resolve().relative_to(v.definition.path(".").resolve()).as_posix()


def _fits(v) -> bool:
    """The variant's (base) weights fit its architecture: fine-tune from them."""
    if not v.data.get("weights"):
        return False
    from ..architectures.reference import check_weights_file
    from ..errors import UserError as _UE

    try:
        check_weights_file(v.definition.model_copy(update={"weights": v.data["weights"]}))
        return True
    except _UE:
        return False


# -- executors ----------------------------------------------------------------------------------

class _LazyExecutor:
    def __init__(self, opts: SweepOptions):
        self.opts = opts
        self._ex = None
        kind = "ray" if opts.address else opts.executor
        from .._deps import available

        self.name = "ray" if kind == "ray" or (kind == "auto" and available("ray")) else "local"
        if self.name == "ray" and not available("ray"):
            from ..errors import MissingDependencyError

            raise MissingDependencyError("ray", "sweep", "--address")

    def describe(self) -> str:
        return "Ray" if self.name == "ray" else f"{self.opts.jobs} local worker process(es)"

    def run(self, reqs, done, stats) -> None:
        if self._ex is None:
            self._ex = _executor(self.opts)
        self._ex.run(reqs, done, stats)

    def close(self) -> None:
        if self._ex is not None:
            self._ex.close()


def _executor(opts: SweepOptions):
    from .._deps import available

    kind = "ray" if opts.address else opts.executor
    if kind == "auto":
        kind = "ray" if available("ray") else "local"
    if kind == "ray":
        if not available("ray"):
            from ..errors import MissingDependencyError

            raise MissingDependencyError("ray", "sweep", "--ray / --address")
        from .executors import RayExecutor

        return RayExecutor(opts.address, opts.jobs, opts.retries)
    from .executors import LocalExecutor

    return LocalExecutor(opts.jobs, opts.retries)


def _rows(sweep: Sweep, plan: Plan, results: dict[str, dict]) -> list[dict]:
    from .report import quality_keys

    variants = {v.id: v for v in sweep.variants}
    rows = []
    for cell in plan.cells:
        v = variants[cell["variant"]]
        res = results.get(cell["build"]) or {}
        build = res.get("build") or {}
        bench = (res.get("bench") or {}).get("row") or {}
        val = build.get("validation") or {}
        row = val.get("row") or {}
        metrics = row.get("metrics") or {}
        acc_key, agree_key = quality_keys(v.definition.task.value)
        art = build.get("artifact") or {}
        facts = art.get("facts") or {}
        train = (results.get(cell["train"]) or {}).get("record", {}).get("summary") if cell["train"] else None
        lat = bench.get("latency_ms") or {}
        ops_total, tpu_ops = facts.get("ops_total"), facts.get("edgetpu_ops")
        model = (res.get("bench") or {}).get("model") or {}
        rows.append({
            "variant": v.id, "label": v.label, "values": v.values, "target": cell["target"],
            "status": row.get("status") or ("error" if "error" in res else "failed"),
            "reason": row.get("reason") or res.get("error") or build.get("failed") or "",
            "accuracy": metrics.get(acc_key), "agreement": metrics.get(agree_key),
            "accuracy_metric": acc_key, "agreement_metric": agree_key,
            "reference_accuracy": ((val.get("reference") or {}).get("metrics") or {}).get(acc_key),
            "snr_db": metrics.get("snr_db"),
            "latency_ms": lat.get("median"), "latency_p90_ms": lat.get("p90"),
            "bench_status": bench.get("status"), "bytes": art.get("bytes"),
            "edgetpu_cpu_ops": (ops_total - tpu_ops) if ops_total is not None and tpu_ops is not None else None,
            "xnnpack_partitions": bench.get("xnnpack_partitions", facts.get("xnnpack_partitions")),
            "macs": model.get("macs"), "params": model.get("params"),
            "trained_val_top1": train["val_top1"] if train else None,
            "artifact": art.get("path"), "artifact_sha256": art.get("sha256"),
            "keys": {k: cell[k] for k in ("build", "bench", "train") if cell[k]},
            # where and when each step ran (a cached step: when it first ran, and ``ran`` false)
            "node": build.get("node") or build.get("host"),
            "steps": _steps(cell, res, results),
        })
    return rows


def _steps(cell: dict, res: dict, results: dict[str, dict]) -> list[dict]:
    """The cell's train, build and bench steps: node, seconds, start (epoch s), ran this sweep."""
    train = results.get(cell["train"] or "") or {}
    ran = res.get("ran") or {}
    out = []
    for name, rec, now in (("train", train.get("record"), train.get("ran")),
                           ("build", res.get("build"), ran.get("build")),
                           ("bench", res.get("bench"), ran.get("bench"))):
        if rec and rec.get("seconds") is not None:
            out.append({"step": name, "node": rec.get("node") or rec.get("host"), "seconds": rec["seconds"],
                        "start": rec.get("started"), "ran": bool(now)})
    return out
