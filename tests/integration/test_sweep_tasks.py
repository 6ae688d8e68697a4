"""Sweeps of every task, and a converter that crashes mid-step: segmentation and detection
sweeps run end to end (their masks and boxes reach the workers through the store), and a
converter process killed mid-conversion is retried, never cached as the step's verdict."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_data, write_definition

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.slow


def _copy(tmp_path: Path, example: str) -> Path:
    dest = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.parametrize("example,metric", [("shapes_seg", "miou"), ("shapes_det", "map50")])
def test_segmentation_and_detection_sweeps_run(tmp_path, example, metric):
    """One variant per task on tflite-fp32, local workers: the row is validated with the task's
    own metric against the masks / boxes the worker unpacked from the store (not the base folder)."""
    from mobiledeploy.sweep.run import SweepOptions, run_sweep

    folder = _copy(tmp_path, example)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "base": f"{example}.yaml", "targets": ["tflite-fp32"], "axes": {"seed": [1]}, "samples": 6,
        "bench": {"runs": 3, "threads": 1}}))
    work = tmp_path / "work"
    os.environ["MOBILEDEPLOY_SWEEP_WORK"] = str(work)
    try:
        t0 = time.monotonic()
        result = run_sweep(folder / "sweep.yaml", SweepOptions(out=tmp_path / "out", cache=str(tmp_path / "c"),
                                                               executor="local", jobs=1, quiet=True))
        print(f"{example} sweep: {time.monotonic() - t0:.1f}s")
    finally:
        os.environ.pop("MOBILEDEPLOY_SWEEP_WORK")
    (row,) = result["rows"]
    assert row["status"] == "pass", row
    assert row["accuracy_metric"] == metric and row["accuracy"] is not None and row["accuracy"] > 0.2, row
    assert row["latency_ms"] > 0 and row["node"] and [s["step"] for s in row["steps"]] == ["build", "bench"]
    # the worker's project folder (unpacked from the store) holds the task's truth
    (inputs,) = (work / "inputs").iterdir()
    truth = "validation/masks" if example == "shapes_seg" else "validation/boxes.json"
    assert (inputs / truth).exists()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: no psutil needed)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_crashed_converter_is_retried_not_cached(example_copy, tmp_path):
    """The first converter process of this sweep (a descendant of this test, never another
    process of the machine) is SIGKILLed mid-conversion: the step builds again and passes; the
    crash is noted in the step's record, not stored as its verdict."""
    from mobiledeploy.sweep.run import SweepOptions, run_sweep

    write_definition(example_copy, tiny_data(validation_images=10), "tiny.yaml")
    (example_copy / "s.yaml").write_text(yaml.safe_dump({"base": "tiny.yaml", "targets": ["tflite-fp32"],
                                                         "samples": 5, "bench": {"runs": 3, "threads": 1}}))
    killed: list[int] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set() and not killed:
            for pid in _descendants(os.getpid()):
                if "mobiledeploy.pipeline.worker" in _cmdline(pid):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        result = run_sweep(example_copy / "s.yaml", SweepOptions(out=tmp_path / "out", cache=str(tmp_path / "c"),
                                                                 executor="local", jobs=1, quiet=True))
    finally:
        stop.set()
        t.join()
    assert killed, "no converter process was seen"
    (row,) = result["rows"]
    assert row["status"] == "pass" and row["artifact_sha256"], row
    from mobiledeploy.sweep.store import Store

    rec = Store(tmp_path / "c").record(row["keys"]["build"])
    assert rec["failed"] is None and len(rec["crashes"]) == 1 and "SIGKILL" in rec["crashes"][0], rec
    assert result["stats"]["errors"] == 0
