"""Build and sweep keys come from one declaration per step (pipeline/keys.py); the modules a
registered backend or task loads by name are in them because the registries list them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT


def test_a_backend_name_loads_its_whole_folder_and_those_of_the_backends_it_extends():
    from mobiledeploy.backends.registry import backend_modules

    tflite = backend_modules("tflite")
    # run as a script in MediaPipe's interpreter: no import reaches it
    assert "mobiledeploy.backends.tflite.mediapipe_runner" in tflite
    assert "mobiledeploy.backends.tflite.backend" in tflite
    assert not [m for m in tflite if not m.startswith("mobiledeploy.backends.tflite")]
    edgetpu = backend_modules("edgetpu")
    assert "mobiledeploy.backends.edgetpu.compiler" in edgetpu and set(tflite) <= set(edgetpu)
    assert "mobiledeploy.backends.coreml.milexec.ops" in backend_modules("coreml")


def test_a_task_name_loads_its_whole_folder():
    from mobiledeploy.tasks import task_modules

    det = task_modules("object-detection")
    assert {"mobiledeploy.tasks.detection.task", "mobiledeploy.tasks.detection.metrics",
            "mobiledeploy.tasks.detection.report"} <= set(det)
    assert not [m for m in det if not m.startswith("mobiledeploy.tasks.detection")]


def test_the_build_steps_key_on_the_registries_modules():
    from mobiledeploy.pipeline import keys

    assert [k.kind for k in keys.STEPS] == ["model", "convert", "validate", "app"]
    validate = keys.VALIDATE.modules("object-detection", ["edgetpu"])
    assert "mobiledeploy.backends.tflite.mediapipe_runner" in validate
    assert "mobiledeploy.tasks.detection.metrics" in validate
    assert "mobiledeploy.tasks.segmentation.metrics" not in validate
    convert = keys.CONVERT.modules("image-classification", ["executorch"])
    assert "mobiledeploy.backends.executorch.quant" in convert and "mobiledeploy.pipeline.worker" in convert
    assert not [m for m in convert if m.startswith("mobiledeploy.backends.tflite")]


def test_a_plugin_backend_file_is_in_its_steps_source(tmp_path, monkeypatch):
    from mobiledeploy.backends.registry import backend_modules
    from mobiledeploy.pipeline.sources import closure

    plug = tmp_path / "md_keys_plugin.py"
    plug.write_text("from mobiledeploy.backends.base import Backend\n\n\nclass P(Backend):\n    name = 'p'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mods = backend_modules("md_keys_plugin:P")
    assert mods == ("md_keys_plugin",)  # a plugin's folder is its own: only its module
    files = closure(*mods)
    assert plug.resolve() in files  # loaded by name from a profile: hashed by its file
    assert any(p.parts[-2:] == ("backends", "base.py") for p in files)  # its imports into the package


# run in a copy of the package: source digests are cached per process and per file
KEYS = """
import json, sys
from mobiledeploy.definition import load_definition
from mobiledeploy.pipeline import keys
from mobiledeploy.sweep.run import _plan
from mobiledeploy.sweep.spec import load_sweep
from mobiledeploy.sweep.store import Store
from mobiledeploy.targets import resolve_target

d = load_definition(sys.argv[1])
t = resolve_target(d, "tflite-fp32")
plan = _plan(load_sweep(sys.argv[2]), Store(sys.argv[3]))
print(json.dumps({"sweep": sorted(plan.build), "model": keys.MODEL.plan(d)["source"],
                  "convert": keys.CONVERT.plan(d, t)["source"],
                  "validate": keys.VALIDATE.plan(d, ["tflite"])["source"]}))
"""


@pytest.mark.slow
def test_an_edited_task_or_runner_module_changes_build_and_sweep_keys(tmp_path):
    pytest.importorskip("tensorflow")
    src = tmp_path / "src"
    for name in ("mobiledeploy", "targets", "templates"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    project = tmp_path / "shapes_det"
    shutil.copytree(ROOT / "examples" / "shapes_det", project)
    (project / "sweep.yaml").write_text(yaml.safe_dump(
        {"base": "shapes_det.yaml", "targets": ["tflite-fp32"], "axes": {"seed": [1, 2]}}))

    def keys_now() -> dict:
        r = subprocess.run([sys.executable, "-c", KEYS, str(project / "shapes_det.yaml"),
                            str(project / "sweep.yaml"), str(tmp_path / "store")],
                           capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(src),
                                                                               "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.splitlines()[-1])

    def edit(rel: str) -> None:
        with open(src / "mobiledeploy" / rel, "a") as f:
            f.write("\n# edited\n")

    before = keys_now()
    assert len(before["sweep"]) == 2
    assert keys_now() == before  # the same sources: the same keys
    # another task's folder is not an input of a detector's steps
    edit("tasks/segmentation/metrics.py")
    assert keys_now() == before
    # a module of the task's folder no import of the build reaches: every step and the sweep rerun
    edit("tasks/detection/metrics.py")
    after = keys_now()
    for k in ("model", "convert", "validate"):
        assert after[k] != before[k], k
    assert not set(after["sweep"]) & set(before["sweep"])
    # MediaPipe's runner script (run in its own interpreter): validation and the sweep rerun
    edit("backends/tflite/mediapipe_runner.py")
    last = keys_now()
    assert last["validate"] != after["validate"] and last["model"] == after["model"]
    assert not set(last["sweep"]) & set(after["sweep"])


def test_no_function_in_the_pipeline_is_over_80_lines():
    import ast

    long = []
    for path in sorted((ROOT / "mobiledeploy" / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{Path(path).relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "split these: " + "; ".join(long)
