"""Every bad definition exits 2 with one line naming file, field and fix, and writes nothing."""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.conftest import run_cli


def _edit(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    if value is _DELETE:
        cur.pop(keys[-1], None)
    else:
        cur[keys[-1]] = value


_DELETE = object()

# (case id, edit(s), text the message must contain)
CASES = [
    ("unknown-top-key", [("nmae", "x")], "nmae: unknown key; allowed: name"),
    ("unknown-nested-key", [("input.hieght", 10)], "input.hieght: unknown key; allowed: height, width"),
    ("wrong-type", [("input.height", "big")], "input.height"),
    ("bad-enum", [("input.color_order", "rbg")], "input.color_order: Input should be 'rgb' or 'bgr'"),
    ("missing-field", [("labels", _DELETE)], "labels: required field is missing"),
    ("impossible-shape", [("input.height", 8)], "input.height: Input should be greater than or equal to 32"),
    ("mean-length", [("input.mean", [0.5, 0.5])], "mean needs 3 values"),
    ("zero-std", [("input.std", [0.2, 0.0, 0.2])], "every std must be > 0"),
    ("reversed-range", [("input.pixel_range", [1.0, 0.0])], "input.pixel_range"),
    ("labels-missing-file", [("labels", "nope.txt")], "labels: file not found"),
    ("weights-missing-file", [("weights", "nope.safetensors")], "weights: file not found"),
    ("weights-wrong-format", [("weights", "labels.txt")], "weights: labels.txt must be a .safetensors file"),
    ("calibration-missing", [("calibration.source", "nowhere")], "calibration.source: not found"),
    ("unknown-target", [("targets", ["tflite-int4"])], "targets[0]: unknown target 'tflite-int4'; allowed: tflite-fp32"),
    ("unknown-preset", [("architecture.preset", "mobilenet_v4")], "architecture.preset"),
    ("bad-app-id", [("android.application_id", "1bad..id")], "android.application_id"),
    ("zero-width", [("architecture.width_multiplier", 0)], "architecture.width_multiplier"),
    ("bad-row", [("architecture", {"blocks": [[3, 16, 16, True, "relu"]], "last_stage": {"conv": 64}})],
     "a row is [kernel, exp, out, se, activation, stride]"),
    ("unknown-option", [("target_options", {"tflite-int8": {"bits": 4}})],
     "target_options.tflite-int8.bits: unknown option; allowed: lowering, calibration_samples, io_dtype"),
    ("bad-option-value", [("target_options", {"tflite-int8": {"io_dtype": "int16"}})],
     "'int16' is not allowed; allowed: int8, uint8"),
    ("bad-name", [("name", "My Model")], "name: String should match pattern"),
    ("preset-and-table", [("architecture.blocks", [[3, 16, 16, True, "relu", 2]])], "either preset or"),
    ("tolerance-unknown-target", [("tolerances", {"tflite-int9": {"min_snr_db": 3}})], "tolerances.tflite-int9"),
    # YAML booleans and quoted numbers are not numbers (pydantic's lax mode read `true` as 1)
    ("bool-as-int", [("input.height", True)], "input.height: Input should be a valid integer"),
    ("bool-as-float", [("architecture.width_multiplier", True)], "architecture.width_multiplier: Input should be a valid number"),
    ("string-as-float", [("input.mean", ["0.5", 0.5, 0.5])], "input.mean"),
    ("float-as-int", [("calibration.max_images", 10.0)], "calibration.max_images: Input should be a valid integer"),
]


@pytest.mark.parametrize("case, edits, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_definition_exits_2_with_one_line_and_writes_nothing(example_copy, case, edits, expected):
    path = example_copy / "shapes.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in edits:
        _edit(data, dotted, value)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = example_copy / "out"
    r = run_cli("build", str(path), "-o", str(out), "--quiet")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {path}"), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_yaml_syntax_error_names_the_line(example_copy):
    path = example_copy / "shapes.yaml"
    path.write_text(path.read_text() + "\ninput: [unclosed\n")
    r = run_cli("build", str(path), "-o", str(example_copy / "out"))
    assert r.returncode == 2 and "not valid YAML" in r.stderr and "line" in r.stderr
    assert not (example_copy / "out").exists()


def test_missing_definition_file(tmp_path):
    r = run_cli("build", str(tmp_path / "none.yaml"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "file not found" in r.stderr
    assert not (tmp_path / "out").exists()


def test_duplicate_label(example_copy):
    (example_copy / "labels.txt").write_text("circle\nsquare\ncircle\n")
    r = run_cli("show", str(example_copy / "shapes.yaml"))
    assert r.returncode == 2 and "duplicate label 'circle'" in r.stderr


def test_validation_folder_with_unknown_class(example_copy):
    shutil.copytree(example_copy / "validation" / "circle", example_copy / "validation" / "oval")
    r = run_cli("build", str(example_copy / "shapes.yaml"), "-o", str(example_copy / "out"), "--quiet")
    assert r.returncode == 2 and "folder 'oval'" in r.stderr
    assert not (example_copy / "out").exists()


def test_weights_of_another_architecture(example_copy):
    data = yaml.safe_load((example_copy / "shapes.yaml").read_text())
    data["architecture"]["preset"] = "mobilenet_v3_large"
    (example_copy / "shapes.yaml").write_text(yaml.safe_dump(data))
    r = run_cli("build", str(example_copy / "shapes.yaml"), "-o", str(example_copy / "out"), "--quiet")
    assert r.returncode == 2 and "weights do not match the architecture" in r.stderr
    assert not (example_copy / "out").exists()


def test_unknown_target_option_names_the_flag(example_copy):
    r = run_cli("build", str(example_copy / "shapes.yaml"), "-o", str(example_copy / "out"),
                "--target", "tflite-int4")
    assert r.returncode == 2
    assert r.stderr.startswith("error: --target: unknown target 'tflite-int4'; allowed: tflite-fp32")
    assert not (example_copy / "out").exists()
