"""`mobiledeploy sweep` on a tiny space: 2 widths x int8 lowering on/off, a tiny training budget,
tflite-int8. One Ray instance for the module (started here); the sweep runs on it with one worker
killed mid-sweep, again without Ray into a fresh store (same table), and a second time against the
first store (0 conversions, nothing trained)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_data, write_definition

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

SWEEP = {
    "base": "tiny.yaml",
    "targets": ["tflite-int8"],
    "axes": {"width": [0.5, 1.0], "lowering": ["hswish", "none"]},
    "train": {"images": 60, "epochs": 1, "batch": 20},
    "bench": {"runs": 10, "threads": 1},
    "samples": 20,
}
# what does not depend on the machine's timing: the table two executors must agree on
SAME = ("variant", "target", "status", "accuracy", "agreement", "snr_db", "bytes", "artifact_sha256",
        "trained_val_top1", "macs")


@pytest.fixture(scope="module")
def ray_instance():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=80 * 1024 * 1024)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def project(tmp_path_factory, ray_instance) -> Path:
    import shutil

    from tests.conftest import EXAMPLE

    root = tmp_path_factory.mktemp("sweep")
    dest = root / "shapes"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    write_definition(dest, tiny_data(validation_images=20), "tiny.yaml")
    (dest / "sweep.yaml").write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    return dest


class Killer:
    """Watches the store's leases and SIGKILLs the worker of the first build step that has been
    converting for 2 s (after ``after_first`` builds finished): a worker dying mid-build."""

    def __init__(self, cache: Path, after_first: int = 0):
        import threading

        self.cache, self.after_first = cache, after_first
        self.finished: list[str] = []
        self.killed: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def on_progress(self, ev) -> None:
        if ev["phase"] == "build":
            self.finished.append(ev["key"])

    def _watch(self) -> None:
        while not self._stop.is_set() and not self.killed:
            if len(self.finished) >= self.after_first:
                for lease in sorted((self.cache / "running").glob("*.json")):
                    try:
                        info = json.loads(lease.read_text())
                    except (OSError, ValueError):  # released (or being replaced) meanwhile
                        continue
                    if info["kind"] == "build" and info["stage"] == "build" and time.time() - info["started"] > 2:
                        os.kill(info["pid"], signal.SIGKILL)
                        self.killed.update(info, key=lease.stem, after=list(self.finished), at=time.time())
                        break
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def ray_run(project):
    """The sweep on Ray; when the first build finishes, a worker running another build is killed."""
    from mobiledeploy.sweep.run import SweepOptions, run_sweep

    cache = project.parent / "cache-ray"
    t0 = time.monotonic()
    with Killer(cache, after_first=1) as k:
        result = run_sweep(project / "sweep.yaml", SweepOptions(
            out=project.parent / "out-ray", cache=str(cache), executor="ray", quiet=True, on_progress=k.on_progress))
    print(f"ray sweep: {time.monotonic() - t0:.1f}s, killed {k.killed.get('what')}")
    return result, k.killed, cache


def _table(result):
    return [{k: r[k] for k in SAME} for r in result["rows"]]


def test_ray_sweep_builds_every_variant_and_survives_a_killed_worker(ray_run, project):
    result, killed, cache = ray_run
    rows = result["rows"]
    assert [(r["variant"], r["target"]) for r in rows] == [(f"v0{i}", "tflite-int8") for i in range(1, 5)]
    assert result["executor"] == "ray"
    for r in rows:
        assert r["status"] in ("pass", "fail"), r  # validated: an error would be a lost step
        assert r["latency_ms"] > 0 and r["bytes"] > 0 and 0.0 <= r["accuracy"] <= 1.0
        assert (project.parent / "out-ray" / r["artifact_file"]).stat().st_size == r["bytes"]
    # a worker was killed mid-build after the first build finished; Ray reran that task, the steps
    # finished before it were kept (4 conversions reported: the killed one never reported)
    assert killed, "no build was killed"
    s = result["stats"]
    print(s)
    rec = cache / "steps" / killed["key"][:2] / f"{killed['key']}.json"
    assert rec.stat().st_mtime > killed["at"]  # the killed step's record is its rerun's
    # lowering shares the training (2 widths -> 2 trainings); each build converts once
    assert s["train_ran"] == 2 and s["errors"] == 0
    assert s["build_ran"] == s["conversions"] == s["bench_ran"] == 4
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert killed["key"] not in killed["after"]
    assert all((cache / "steps" / k[:2] / f"{k}.json").is_file() for k in killed["after"] + [killed["key"]])
    assert not list((cache / "running").glob("*.json"))
    # the wider network is bigger; the Pareto front is not dominated
    by = {r["variant"]: r for r in rows}
    assert by["v03"]["macs"] > by["v01"]["macs"] and by["v03"]["bytes"] > by["v01"]["bytes"]
    front = [r for r in rows if r["pareto"]]
    assert front and result["fronts"]["tflite-int8"]
    for f in front:
        assert not any(o["latency_ms"] < f["latency_ms"] and o["accuracy"] >= f["accuracy"] for o in rows)
    out = project.parent / "out-ray"
    assert json.loads((out / "sweep.json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert (out / "plots" / "tflite-int8.png").read_bytes()[:4] == b"\x89PNG"
    assert "tflite-int8" in (out / "index.html").read_text()


def test_without_ray_the_same_table(ray_run, project):
    """Local processes, a store reached through fsspec (file://) holding the Ray run's steps but
    the wide network's training and v04's build and bench (a teammate's store; and CI time): those
    run again without Ray, the v04 build's worker process is killed once mid-build, and the table
    is the Ray run's."""
    import shutil

    from mobiledeploy.sweep.run import SweepOptions, run_sweep

    result, _, cache = ray_run
    local_cache = project.parent / "cache-local"
    shutil.copytree(cache, local_cache)
    v04 = next(r for r in result["rows"] if r["variant"] == "v04")
    for k in v04["keys"].values():  # train (width 1.0, shared with v03), build, bench
        for p in (local_cache / "steps" / k[:2]).glob(f"{k}.*"):
            p.unlink()
    t0 = time.monotonic()
    with Killer(local_cache) as k:
        local = run_sweep(project / "sweep.yaml", SweepOptions(
            out=project.parent / "out-local", cache="file://" + str(local_cache), executor="local", jobs=2,
            quiet=True, on_progress=k.on_progress))
    killed = k.killed
    print(f"local sweep: {time.monotonic() - t0:.1f}s, killed {killed.get('what')}")
    s = local["stats"]
    assert local["executor"] == "local" and local["cache"].startswith("file://")
    assert killed["what"].startswith("v04") and s["worker_deaths"] == 1 and s["errors"] == 0
    assert (s["train_ran"], s["build_ran"], s["conversions"], s["cached"]) == (1, 1, 1, 4)
    assert _table(local) == _table(result)


def test_a_second_sweep_reuses_every_artifact(ray_run, project):
    """The CLI against the Ray instance by address (as a cluster is reached), the first run's store
    minus one bench record: nothing is trained or converted, one bench step runs on Ray."""
    from tests.conftest import run_cli

    result, _, cache = ray_run
    bench_key = result["rows"][0]["keys"]["bench"]
    (cache / "steps" / bench_key[:2] / f"{bench_key}.json").unlink()
    address = ray.get_runtime_context().gcs_address
    out = project.parent / "out-ray"  # a previous sweep's output is replaced
    r = run_cli("sweep", str(project / "sweep.yaml"), "-o", str(out), "--cache", str(cache), "--address", address,
                cwd=project.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((out / "sweep.json").read_text())
    s = again["stats"]
    assert (s["conversions"], s["build_ran"], s["train_ran"], s["bench_ran"]) == (0, 0, 0, 1), s
    assert s["cached"] == s["steps"] - 1 == 5 and again["executor"] == "ray"
    assert _table(again) == _table(result)
    assert "v01" in r.stdout and "tflite-int8" in r.stdout  # the table, printed
