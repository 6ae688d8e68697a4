"""Faults that need a real build: kill -9 mid-conversion, a read-only bundle, a failing twin.

Slow (real conversions on the mini definition); kept few and small.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mobiledeploy.bundle import STATE_DIR
from tests.conftest import ROOT, run_cli
from tests.hostile.helpers import bundle_copy, cli

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"mobiledeploy.pipeline.worker" in cmd:
            out.append(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_kill_9_of_a_build_takes_its_worker_then_rebuild_and_validate(mini, tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mobiledeploy", "build", str(mini), "-o", str(out),
                             "--target", "tflite-fp32", "-q", "--no-app"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 300
    workers: list[int] = []
    while time.monotonic() < deadline and not workers and proc.poll() is None:
        workers = _children(proc.pid)
        time.sleep(0.2)
    assert workers, "the build never started a worker"
    time.sleep(1.0)  # the worker is importing/converting
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    while any(_alive(w) for w in workers) and time.monotonic() - t0 < 15:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "the worker outlived its build"
    r = run_cli("build", str(mini), "-o", str(out), "--target", "tflite-fp32", "-q", "--no-app")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not any((out / STATE_DIR / "tmp").iterdir()) if (out / STATE_DIR / "tmp").exists() else True
    v = run_cli("validate", str(out), "-q")
    assert v.returncode == 0, v.stderr[-2000:]


def _namespaces_work() -> bool:
    r = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="no mount namespaces here (unshare -rm)")
def test_a_read_only_bundle_can_be_validated(built_bundle, tmp_path):
    b = bundle_copy(built_bundle, tmp_path / "ro")
    before = {p: p.stat().st_mtime_ns for p in b.rglob("*")}
    cmd = (f"mount --bind {b} {b} && mount -o remount,ro,bind {b} && "
           f"{sys.executable} -m mobiledeploy validate {b} -q")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in b.rglob("*")} == before


def test_a_failing_keras_twin_leaves_keras_built_artifacts_unjudged(built_bundle, tmp_path):
    b = bundle_copy(built_bundle, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["reference"]["keras_tolerance"] = {"max_abs": 1e-30}  # no float32 twin is that close
    (b / "manifest.json").write_text(json.dumps(m))
    r = cli("validate", b, "-q")
    assert r.exit_code == 1, r.output
    rep = json.loads((b / "report" / "validation.json").read_text())
    rows = {x["target"]: x for x in rep["results"]}
    assert rows["reference-keras"]["status"] == "fail"
    assert rows["tflite-fp32"]["status"] == "skipped"
    assert rows["tflite-fp32"]["reason"].startswith("not judged: built from the Keras twin")
