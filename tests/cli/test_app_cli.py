"""`mobiledeploy app`: exit codes and one-line messages."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from mobiledeploy.cli import main


def test_missing_bundle_is_exit_2_one_line(tmp_path):
    r = CliRunner().invoke(main, ["app", str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "bundle directory not found" in r.output
    assert not (tmp_path / "out").exists()


def test_missing_manifest_is_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["app", str(tmp_path), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "manifest.json" in r.output and "Traceback" not in r.output


def test_manifest_without_the_model_is_exit_2(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x", "artifacts": []}))
    (tmp_path / "model").mkdir()
    (tmp_path / "model/definition.yaml").write_text("name: x\n")
    r = CliRunner().invoke(main, ["app", str(tmp_path), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and r.output.startswith("error: ")


def test_bad_runtime_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["app", str(tmp_path), "-o", str(tmp_path / "o"), "--runtime", "coreml"])
    assert r.exit_code == 2 and "coreml" in r.output


def test_help_imports_no_heavy_library():
    code = ("import sys; from click.testing import CliRunner; from mobiledeploy.cli import main; "
            "r = CliRunner().invoke(main, ['app', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--no-models' in r.output; "
            "print(sorted(m for m in ('tensorflow','torch','coremltools','executorch','ai_edge_litert') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
