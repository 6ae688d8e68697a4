"""`mobiledeploy inspect`: exit codes, one-line errors, JSON keys, the compiler-shaped table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import main
from tests.conftest import edgetpu_reference_dir  # noqa: E402

pytest.importorskip("flatbuffers")


def _reference_dir() -> Path:
    return edgetpu_reference_dir()


def _run(*args):
    return CliRunner().invoke(main, ["inspect", *map(str, args)])


def test_missing_file_exits_2_one_line(tmp_path):
    r = _run(tmp_path / "nope.tflite")
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nope.tflite" in lines[0] and "Traceback" not in r.output


def test_not_a_tflite_exits_2(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_text("name: shapes\n")
    r = _run(bad, "--edgetpu")
    assert r.exit_code == 2 and "model.tflite" in r.output


def test_json_edgetpu_keys():
    ref = _reference_dir()
    r = _run(ref / "mobilenet_v2_1.0_224_quant.tflite", "--edgetpu", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    for key in ("model", "ops_total", "edgetpu_ops", "cpu_ops", "first_cpu_op", "compiled",
                "summary", "inputs", "outputs", "tensors_total", "xnnpack", "advice"):
        assert key in data, key
    assert data["compiled"] is False and data["ops_total"] == len(data["ops"])
    assert data["edgetpu_ops"] == data["ops_total"] and data["first_cpu_op"] is None
    assert data["inputs"][0]["shape"] == [1, 224, 224, 3]
    assert data["inputs"][0]["quantization"]["scale"][0] > 0
    assert all(op["edgetpu"]["mapped"] for op in data["ops"])
    if data["xnnpack"].get("available"):
        x = data["xnnpack"]
        assert x["partitions"] >= 1
        assert x["delegated_ops"] + len(x["undelegated_ops"]) == data["ops_total"]


def test_json_without_edgetpu_has_no_prediction():
    ref = _reference_dir()
    r = _run(ref / "mobilenet_v1_0.25_128_quant.tflite", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    assert "edgetpu_ops" not in data and data["ops_total"] == 31
    assert sum(data["op_counts"].values()) == 31


def test_table_shows_compiler_log_and_cpu_op():
    ref = _reference_dir()
    r = _run(ref / "posenet_mobilenet_v1_075_353_481_quant_decoder.tflite", "--edgetpu")
    assert r.exit_code == 0, r.output
    assert "Operator" in r.output and "Count" in r.output and "Status" in r.output
    assert "PosenetDecoderOp" in r.output and "Operation not supported" in r.output
    # LiteRT cannot load the custom decoder op: said, not crashed
    assert "XNNPACK" in r.output


def test_compiled_model_reports_ground_truth():
    ref = _reference_dir()
    r = _run(ref / "posenet_mobilenet_v1_075_353_481_quant_decoder_edgetpu.tflite",
             "--edgetpu", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    assert data["compiled"] is True
    assert [o["op"] for o in data["cpu_ops"]] == ["PosenetDecoderOp"]


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from mobiledeploy.cli import main\n"
            "try:\n    main(['inspect', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('tensorflow', 'torch', 'coremltools', 'executorch') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out and "--edgetpu" in out
