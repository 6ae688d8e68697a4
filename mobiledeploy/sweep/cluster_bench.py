"""Measure a sweep on a local Ray cluster of 1, 2, ... nodes (one CPU each, separate raylets),
each run from an empty store: the wall time, the steps per node and their busy seconds.

    python -m mobiledeploy.sweep.cluster_bench examples/shapes/sweep-large.yaml --nodes 1 2 \\
        --only preset=mobilenet_v3_small --only width=0.5,1.0 --only resolution=64 \\
        --targets tflite-fp32,tflite-int8,executorch-xnnpack --train-images 300

``--only AXIS=V1,V2`` keeps those values of an axis (a stated subset of a sweep too long to run
whole here); ``--targets`` and ``--train-images`` shrink it further. Nothing is cached between the
runs (each has its own store), so each run does the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml


def _subset(path: Path, only: list[str], targets: str | None, train_images: int | None) -> dict:
    spec = yaml.safe_load(path.read_text())
    for item in only:
        axis, _, values = item.partition("=")
        if axis not in spec.get("axes", {}):
            raise SystemExit(f"--only {item}: no axis {axis!r} in {path}")
        keep = [yaml.safe_load(v) for v in values.split(",")]
        spec["axes"][axis] = [v for v in spec["axes"][axis] if v in keep]
    if targets:
        spec["targets"] = targets.split(",")
    if train_images and spec.get("train"):
        spec["train"]["images"] = train_images
    return spec


def run(path: Path, nodes: int, spec: dict, work: Path) -> dict:
    """One sweep of ``spec`` on a fresh ``nodes``-node cluster with a fresh store."""
    import ray
    from ray.cluster_utils import Cluster

    from .run import SweepOptions, run_sweep

    sweep_file = path.with_name(f".{path.stem}-bench-{os.getpid()}.yaml")  # beside the base definition
    sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's sockets: a short path
    Path(temp, "ray").mkdir()  # Ray's own folder under RAY_TMPDIR
    saved = {k: os.environ.get(k) for k in ("MOBILEDEPLOY_SWEEP_WORK", "RAY_TMPDIR")}
    try:
        os.environ["RAY_TMPDIR"] = temp  # Ray's address file too (not the machine's /tmp/ray)
        os.environ["MOBILEDEPLOY_SWEEP_WORK"] = str(work / "node0")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                                "object_store_memory": 80 * 1024 * 1024,
                                                                "temp_dir": f"{temp}/ray"})
        for i in range(1, nodes):
            os.environ["MOBILEDEPLOY_SWEEP_WORK"] = str(work / f"node{i}")
            cluster.add_node(num_cpus=1, object_store_memory=80 * 1024 * 1024)
        cluster.wait_for_nodes()
        t0 = time.monotonic()
        try:
            result = run_sweep(sweep_file, SweepOptions(out=work / "out", cache=str(work / "store"),
                                                        address=cluster.address, quiet=True))
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
        wall = time.monotonic() - t0
    finally:
        sweep_file.unlink(missing_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    busy: dict[str, float] = {}
    count: dict[str, int] = {}
    seen = set()
    for r in result["rows"]:
        for st in r["steps"]:
            key = (st["step"], st["node"], st["start"])
            if st["ran"] and key not in seen:  # a training shared by cells counts once
                seen.add(key)
                busy[st["node"]] = busy.get(st["node"], 0.0) + st["seconds"]
                count[st["node"]] = count.get(st["node"], 0) + 1
    return {"nodes": nodes, "wall_s": round(wall, 1), "stats": result["stats"],
            "per_node": {n: {"steps": count[n], "busy_s": round(busy[n], 1)} for n in sorted(busy)},
            "rows": len(result["rows"]), "errors": result["stats"]["errors"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", action="append", default=[], metavar="AXIS=V1,V2")
    ap.add_argument("--targets")
    ap.add_argument("--train-images", type=int)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    spec = _subset(args.sweep, args.only, args.targets, args.train_images)
    print(f"subset: axes {spec['axes']}, targets {spec.get('targets')}, train {spec.get('train')}", flush=True)
    results = []
    for n in args.nodes:
        with tempfile.TemporaryDirectory(prefix="sweep-nodes-") as tmp:
            res = run(args.sweep.resolve(), n, spec, Path(tmp))
        results.append(res)
        print(json.dumps(res), flush=True)
    base = results[0]["wall_s"]
    for r in results:
        print(f"{r['nodes']} node(s): {r['wall_s']:.1f} s wall ({base / r['wall_s']:.2f}x of {results[0]['nodes']} "
              f"node(s)); steps per node {r['per_node']}")
    if args.json:
        args.json.write_text(json.dumps({"subset": spec, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
