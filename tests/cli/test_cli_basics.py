"""The CLI surface: help without heavy imports, targets, show, init."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import EXAMPLE, run_cli

HEAVY = ("tensorflow", "torch", "coremltools", "executorch", "keras", "ai_edge_litert")


def test_help_imports_no_heavy_framework():
    code = (
        "import sys\n"
        "from mobiledeploy.cli import main\n"
        "try:\n    main(['--help'], prog_name='mobiledeploy')\nexcept SystemExit:\n    pass\n"
        "for c in ['build', 'validate', 'inspect', 'app', 'bench', 'show', 'init', 'targets', 'import']:\n"
        "    try:\n        main([c, '--help'], prog_name='mobiledeploy')\n    except SystemExit:\n        pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for c in ("init", "show", "targets", "build", "validate", "inspect", "app", "bench", "import"):
        assert c in r.stdout


def test_targets_json_lists_all_eight_with_install_state():
    r = run_cli("targets", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    names = [x["target"] for x in rows]
    assert names == ["tflite-fp32", "tflite-fp16", "tflite-int8", "edgetpu", "coreml-fp32", "coreml-fp16",
                     "executorch-xnnpack", "executorch-xnnpack-int8"]
    for x in rows:
        assert x["needs"].startswith("pip install 'mobiledeploy[") and isinstance(x["installed"], bool)


def test_targets_reports_a_missing_extra(tmp_path):
    # a real absent package: importing coremltools fails in this interpreter
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['coremltools'] = None\n")
    r = run_cli("targets", "--json", env={"PYTHONPATH": str(tmp_path)})
    rows = {x["target"]: x for x in json.loads(r.stdout)}
    assert rows["coreml-fp32"]["installed"] is False and "coremltools" in rows["coreml-fp32"]["missing"]
    assert rows["coreml-fp32"]["needs"] == "pip install 'mobiledeploy[coreml]'"
    from mobiledeploy.backends.registry import missing

    assert rows["tflite-fp32"]["installed"] is (not missing("tflite"))


def test_show_small_at_224_lands_near_published_macs(tmp_path):
    text = (EXAMPLE / "shapes.yaml").read_text().replace("height: 112", "height: 224").replace(
        "width: 112", "width: 224")
    d = tmp_path / "m.yaml"
    d.write_text(text.replace("labels: labels.txt", f"labels: {EXAMPLE / 'labels.txt'}")
                 + "allow_outside_paths: true\n")
    r = run_cli("show", str(d), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    # 10 classes instead of 1000: the classifier is smaller; the body is the paper's
    assert 54e6 <= info["macs"] <= 66e6
    assert info["rows"][1]["operator"] == "bneck 3x3" and info["rows"][1]["se"] is True
    table = run_cli("show", str(d))
    assert "bneck 5x5" in table.stdout and "total" in table.stdout


def test_init_copies_the_demo_so_build_can_start_there(tmp_path):
    r = run_cli("init", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "shapes.yaml").is_file()
    assert (tmp_path / "demo" / "labels.txt").is_file()
    assert len(list((tmp_path / "demo" / "validation").rglob("*.*"))) >= 100
    r2 = run_cli("show", str(tmp_path / "demo" / "shapes.yaml"))
    assert r2.returncode == 0, r2.stderr
    again = run_cli("init", str(tmp_path / "demo"))
    assert again.returncode == 2 and "already exists; use --force" in again.stderr


def test_unknown_command_and_bad_option_exit_2():
    assert run_cli("frobnicate").returncode == 2
    r = run_cli("build", "x.yaml")
    assert r.returncode == 2 and "--out" in r.stderr
