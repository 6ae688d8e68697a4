"""The build graph: cache, selective rebuilds, crash isolation, kill -9, lock, integrity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.slow

TFLITE = ("--target", "tflite-fp32", "--target", "tflite-int8")


def _explain(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in ("ran", "skipped"):
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_cache_hit_option_change_and_integrity(tiny_definition, tmp_path):
    out = tmp_path / "out"
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--jobs", "2", "--no-app",
                "--no-validate", "--quiet")
    assert r.returncode == 0, r.stderr
    m = _manifest(out)
    assert [a["target"] for a in m["artifacts"]] == ["tflite-fp32", "tflite-int8"]
    for a in m["artifacts"]:
        assert (out / a["path"]).stat().st_size == a["bytes"] > 0
        assert len(a["sha256"]) == 64 and a["toolchain"].get("ai-edge-litert")
    mtimes = {a["path"]: (out / a["path"]).stat().st_mtime_ns for a in m["artifacts"]}

    # nothing changed: no conversion, every step says why it was skipped
    t0 = time.monotonic()
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--no-app", "--no-validate",
                "--explain", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = _explain(r.stdout)
    assert rows["convert:tflite-fp32"][0] == "skipped" and rows["convert:tflite-int8"][0] == "skipped"
    assert "up to date" in rows["convert:tflite-int8"][1]
    assert {a["path"]: (out / a["path"]).stat().st_mtime_ns for a in m["artifacts"]} == mtimes
    assert _manifest(out) == m
    print(f"no-op rebuild: {time.monotonic() - t0:.2f}s")

    # one option of one target changes: only that target reruns, and it says why
    data = yaml.safe_load(tiny_definition.read_text())
    data["target_options"] = {"tflite-int8": {"io_dtype": "int8"}}
    tiny_definition.write_text(yaml.safe_dump(data))
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--no-app", "--no-validate",
                "--explain", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = _explain(r.stdout)
    assert rows["convert:tflite-fp32"][0] == "skipped"
    assert rows["convert:tflite-int8"][0] == "ran" and "options" in rows["convert:tflite-int8"][1]
    int8 = next(a for a in _manifest(out)["artifacts"] if a["target"] == "tflite-int8")
    assert int8["facts"]["input"]["dtype"] == "int8"

    # a modified artifact is rebuilt and the reason named
    (out / int8["path"]).write_bytes(b"garbage")
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--no-app", "--no-validate",
                "--explain", "--quiet")
    rows = _explain(r.stdout)
    assert rows["convert:tflite-int8"] == ("ran", f"output {int8['path']} was modified")


def test_validate_catches_a_changed_artifact_and_a_missing_manifest(tiny_definition, tmp_path):
    out = tmp_path / "out"
    r = run_cli("build", str(tiny_definition), "-o", str(out), "--target", "tflite-fp32", "--no-app", "--quiet")
    assert r.returncode == 0, r.stderr
    path = out / _manifest(out)["artifacts"][0]["path"]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    r = run_cli("validate", str(out), "--quiet")
    assert r.returncode == 1
    assert "tflite-fp32: artifact changed since build: tflite/shapes_fp32.tflite" in r.stderr
    (out / "manifest.json").unlink()
    r = run_cli("validate", str(out))
    assert r.returncode == 2 and "manifest.json: missing" in r.stderr


def test_converter_crash_fails_one_target_not_the_build(tiny_definition, tmp_path):
    out = tmp_path / "out"
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--jobs", "2", "--no-app",
                env={"MOBILEDEPLOY_FAULT_CRASH": "tflite-int8"})
    assert r.returncode == 1, r.stderr
    assert "tflite-int8" in r.stderr and "crashed (SIGSEGV)" in r.stderr
    m = _manifest(out)
    assert [a["target"] for a in m["artifacts"]] == ["tflite-fp32"]
    assert m["failed"][0]["target"] == "tflite-int8"
    report = json.loads((out / "report" / "validation.json").read_text())
    row = next(x for x in report["results"] if x["target"] == "tflite-int8")
    assert row["status"] == "fail" and "crashed" in row["reason"]
    # the next build completes it
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--no-app", "--no-validate", "--quiet")
    assert r.returncode == 0 and len(_manifest(out)["artifacts"]) == 2


def test_kill_minus_9_then_rebuild(tiny_definition, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mobiledeploy", "build", str(tiny_definition), "-o", str(out), *TFLITE,
           "--jobs", "2", "--no-app", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    logs = out / ".mobiledeploy" / "logs"
    while time.monotonic() < deadline and not (logs.is_dir() and any(logs.iterdir())):
        time.sleep(0.2)
    time.sleep(3)  # mid-conversion
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    r = run_cli("validate", str(out))
    assert r.returncode == 2 and "incomplete" in r.stderr
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--no-app", "--quiet")
    assert r.returncode in (0, 1), r.stderr  # seeded weights: int8 numerics may fail, the bundle is whole
    m = _manifest(out)
    assert len(m["artifacts"]) == 2
    assert not list((out / ".mobiledeploy").glob("tmp/*"))
    r = run_cli("validate", str(out), "--quiet")
    assert "artifact changed" not in r.stderr and "missing" not in r.stderr


def test_second_build_refuses_the_lock(tiny_definition, tmp_path):
    from mobiledeploy.bundle import bundle_lock

    out = tmp_path / "out"
    with bundle_lock(out):
        r = run_cli("build", str(tiny_definition), "-o", str(out), "--target", "tflite-fp32", "--quiet")
    assert r.returncode == 2
    assert "another mobiledeploy build" in r.stderr and "--wait" in r.stderr
    assert not (out / "manifest.json").exists()


def test_missing_extra_is_exit_2_with_install_hint(tiny_definition, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.modules['coremltools'] = None\n")
    out = tmp_path / "out"
    r = run_cli("build", str(tiny_definition), "-o", str(out), "--target", "coreml-fp32",
                env={"PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 2
    assert "pip install 'mobiledeploy[coreml]'" in r.stderr
    assert not out.exists()


def test_rebuild_from_scratch_is_byte_identical(tiny_definition, tmp_path):
    shas = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--jobs", "2", "--no-app",
                    "--no-validate", "--quiet")
        assert r.returncode == 0, r.stderr
        shas.append({a["target"]: a["sha256"] for a in _manifest(out)["artifacts"]})
    assert shas[0] == shas[1]


def _step(out: Path, name: str) -> dict:
    rec = json.loads((out / ".mobiledeploy" / "build.json").read_text())
    return next(s for s in rec["steps"] if s["step"] == name)


def test_validation_beside_the_conversions_equals_validate(tiny_definition, tmp_path):
    """With --jobs 2 each artifact is judged as soon as it is installed (pipeline/early.py): the
    rows are those `validate` computes; a byte-identical reconversion leaves the report as it was
    (the early validator is stopped unused); a crashed early validator costs nothing but time."""
    out = tmp_path / "out"
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--jobs", "2", "--no-app", "--quiet")
    assert r.returncode in (0, 1), r.stderr  # seeded weights: int8 numerics may fail, the report is whole
    assert sorted(_step(out, "validate")["early"]) == ["tflite-fp32", "tflite-int8"]
    log = (out / ".mobiledeploy" / "logs" / "validate-early.log").read_text()
    assert "early validation ended (0)" in log
    # the Keras twin's outputs came from the TensorFlow worker: the validator imported no converter
    assert "imported: no converter" in log, log
    workers = "".join(p.read_text() for p in (out / ".mobiledeploy" / "logs").glob("tflite-*.log"))
    assert workers.count("keras twin outputs for validation") == 1, workers
    steps = json.loads((out / ".mobiledeploy" / "build.json").read_text())["steps"]
    twin = [s for s in steps if "twin_seconds" in s]  # recorded apart from the conversion's CPU
    assert len(twin) == 1 and twin[0]["step"].startswith("convert:tflite-"), steps
    assert 0 < twin[0]["twin_seconds"] < twin[0]["seconds"]
    early = json.loads((out / "report" / "validation.json").read_text())

    # the same bytes again: the validation is up to date, the report untouched
    report_mtime = (out / "report" / "validation.json").stat().st_mtime_ns
    fp32 = next(a for a in _manifest(out)["artifacts"] if a["target"] == "tflite-fp32")
    (out / fp32["path"]).unlink()
    r = run_cli("build", str(tiny_definition), "-o", str(out), *TFLITE, "--jobs", "2", "--no-app", "--quiet")
    assert r.returncode in (0, 1), r.stderr
    assert _step(out, "convert:tflite-fp32")["status"] == "ran"
    assert _step(out, "validate")["status"] == "skipped", _step(out, "validate")["why"]
    assert (out / "report" / "validation.json").stat().st_mtime_ns == report_mtime
    assert not list((out / ".mobiledeploy").glob("tmp/*"))

    # `validate` computes the same rows
    again = tmp_path / "again.json"
    run_cli("validate", str(out), "--json", str(again), "--quiet")
    later = json.loads(again.read_text())
    assert [(x["target"], x["status"]) for x in early["results"]] == [(x["target"], x["status"])
                                                                       for x in later["results"]]
    for a, b in zip(early["results"], later["results"], strict=True):
        for k, v in a["metrics"].items():
            if isinstance(v, float):
                assert b["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (a["target"], k)
    assert not list((out / ".mobiledeploy").glob("tmp/*"))

    # the early validator crashes: the build validates in-process, same verdicts (one target: enough)
    crashed = tmp_path / "crashed"
    r = run_cli("build", str(tiny_definition), "-o", str(crashed), "--target", "tflite-fp32", "--jobs", "2",
                "--no-app", "--quiet", env={"MOBILEDEPLOY_FAULT_CRASH": "early-validation"})
    assert r.returncode in (0, 1), r.stderr
    assert "early" not in _step(crashed, "validate")
    report = json.loads((crashed / "report" / "validation.json").read_text())
    mine = {x["target"]: x["status"] for x in report["results"]}
    assert mine == {x["target"]: x["status"] for x in early["results"] if x["target"] in mine}
    assert "tflite-fp32" in mine and "reference-keras" in mine
