"""A build graph users can trust: every input that can change an output reruns exactly the steps
that depend on it (and ``--explain`` names it); nothing path-dependent is in a key."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli, tiny_data, write_definition

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.slow

FP32 = ("--target", "tflite-fp32")


def _explain(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in ("ran", "skipped", "failed"):
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def _build(defn: Path, out: Path, *args: str, env: dict | None = None, cwd: Path | None = None):
    r = run_cli("build", str(defn), "-o", str(out), "--explain", "--quiet", *args, env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return _explain(r.stdout)


def _ran(rows) -> set[str]:
    return {k for k, (what, _) in rows.items() if what == "ran"}


def test_a_replaced_validation_image_reruns_model_and_validation_only(tiny_definition, tmp_path):
    out = tmp_path / "out"
    _build(tiny_definition, out, *FP32)
    before = json.loads((out / "report" / "validation.json").read_text())
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import select_images

    # the first image validation uses, replaced by another class's image
    first = select_images(load_definition(tiny_definition), "validation")[0][0]
    other = sorted(p for p in first.parent.parent.rglob("*.png") if p.parent != first.parent)[-1]
    shutil.copy2(other, first)
    rows = _build(tiny_definition, out, *FP32)
    assert _ran(rows) == {"model", "validate", "app"}, rows
    assert "validation_images changed" in rows["validate"][1]
    assert rows["convert:tflite-fp32"][0] == "skipped"
    after = json.loads((out / "report" / "validation.json").read_text())
    assert after["results"][0]["metrics"] != before["results"][0]["metrics"] or \
        after["reference_top1"] != before["reference_top1"]


def test_a_renamed_label_reaches_core_ml_the_app_and_the_report(example_copy, tmp_path):
    pytest.importorskip("coremltools")
    defn = write_definition(example_copy, tiny_data(), "tiny.yaml")
    out = tmp_path / "out"
    targets = ("--target", "tflite-fp32", "--target", "coreml-fp32")
    _build(defn, out, *targets)
    labels = (example_copy / "labels.txt").read_text().split()
    old, new = labels[1], "quadrilateral"
    (example_copy / "labels.txt").write_text("\n".join(new if x == old else x for x in labels) + "\n")
    for which in ("calibration", "validation"):  # image folders are named by label
        (example_copy / which / old).rename(example_copy / which / new)
    rows = _build(defn, out, *targets)
    assert "labels changed" in rows["convert:coreml-fp32"][1], rows
    assert rows["convert:coreml-fp32"][0] == rows["convert:tflite-fp32"][0] == "ran"
    assert rows["validate"][0] == rows["app"][0] == "ran"
    program = (out / "coreml" / "shapes_fp32.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes()
    assert new.encode() in program and old.encode() not in program
    app_labels = (out / "android" / "app" / "src" / "main" / "assets" / "labels.txt").read_text().split()
    assert new in app_labels and old not in app_labels
    report = (out / "report" / "index.html").read_text()
    assert (out / "model" / "labels.txt").read_text().split()[1] == new
    assert "validation on" in report or report  # the report was rewritten (validate ran above)


def test_a_moved_project_and_bundle_rebuild_nothing(example_copy, tmp_path):
    defn = write_definition(example_copy, tiny_data(), "tiny.yaml")
    out = example_copy / "bundle"
    _build(defn, out, *FP32)
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(example_copy, moved, symlinks=True)
    rows = _build(moved / "tiny.yaml", moved / "bundle", *FP32)
    assert _ran(rows) == set(), rows
    rec = json.loads((moved / "bundle" / ".mobiledeploy" / "build.json").read_text())
    assert rec["steps_ran"] == 0 and all(s["status"] == "skipped" for s in rec["steps"])


def _package_copy(dest: Path) -> Path:
    """The project's source tree copied (package, target profiles, templates): a checkout a test
    may edit."""
    for name in ("mobiledeploy", "targets", "templates", "examples"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_a_changed_backend_module_reruns_its_conversions_only(tiny_definition, tmp_path):
    pytest.importorskip("executorch")
    src = _package_copy(tmp_path / "src")
    env = {"PYTHONPATH": str(src)}
    out = tmp_path / "out"
    targets = ("--target", "tflite-fp32", "--target", "executorch-xnnpack", "--no-app")
    # run from outside the checkout: `python -m` puts the working folder first on sys.path
    _build(tiny_definition, out, *targets, env=env, cwd=tmp_path)
    with open(src / "mobiledeploy" / "backends" / "executorch" / "backend.py", "a") as f:
        f.write("\n# a changed converter module\n")
    rows = _build(tiny_definition, out, *targets, env=env, cwd=tmp_path)
    assert rows["convert:executorch-xnnpack"] == ("ran", "source changed"), rows
    assert rows["convert:tflite-fp32"][0] == "skipped"
    assert rows["validate"][0] == "ran" and "source changed" in rows["validate"][1]
    # the task's module is loaded by name (no import reaches it) and writes metadata and judges
    # rows: a change to it reruns every step it takes part in
    with open(src / "mobiledeploy" / "tasks" / "classification" / "task.py", "a") as f:
        f.write("\n# a changed task module\n")
    rows = _build(tiny_definition, out, *targets, env=env, cwd=tmp_path)
    for step in ("model", "convert:tflite-fp32", "convert:executorch-xnnpack", "validate"):
        assert rows[step][0] == "ran" and "source changed" in rows[step][1], (step, rows)


PLUGIN = '''
"""A target added from one module: TorchScript, traced from the PyTorch reference."""
from pathlib import Path
from typing import ClassVar

import numpy as np

from mobiledeploy.backends.base import Backend, NoOptions, Runner
from mobiledeploy.tolerance import Tolerance


class _Runner(Runner):
    def __init__(self, path):
        import torch

        self.module = torch.jit.load(str(path))
        self.executor = f"torch.jit {torch.__version__}"

    def run(self, batch):
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(batch.x)).numpy().astype(np.float32)


class TorchScriptBackend(Backend):
    name = "torchscript"
    requires = ("torch",)
    extra = "torch"
    distributions = ("torch",)
    options: ClassVar = {"fp32": NoOptions}
    tolerances: ClassVar = {"fp32": Tolerance(max_abs=1e-4, min_top1_agreement=1.0)}

    def convert(self, ctx, target, out):
        import torch

        inp = ctx.definition.input
        traced = torch.jit.trace(ctx.torch_model(), torch.zeros(1, inp.channels, inp.height, inp.width))
        traced.save(str(out))
        return {"format": "torchscript"}

    def load(self, path, target, definition):
        return _Runner(Path(path))

    def bench(self, path, x, *, runs, warmup, threads, loaded):
        import torch

        from mobiledeploy._timing import time_calls

        torch.set_num_threads(threads)
        loaded()
        module = torch.jit.load(str(path))
        t = torch.from_numpy(x)
        with torch.no_grad():
            return {"latency_ms": time_calls(lambda: module(t), runs, warmup), "executor": "torch.jit"}
'''

PROFILE = """name: torchscript-fp32
order: 90
backend: md_plugin.torchscript:TorchScriptBackend
precision: fp32
artifact: torchscript/{name}.pt
description: TorchScript traced from the PyTorch reference (a plugin target).
"""


def test_a_target_added_from_one_module_and_one_profile_builds_validates_and_benches(tiny_definition, tmp_path):
    plug = tmp_path / "plugin"
    (plug / "md_plugin").mkdir(parents=True)
    (plug / "md_plugin" / "__init__.py").write_text("")
    (plug / "md_plugin" / "torchscript.py").write_text(PLUGIN)
    (plug / "profiles").mkdir()
    (plug / "profiles" / "torchscript-fp32.yaml").write_text(PROFILE)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(plug), os.environ.get("PYTHONPATH")) if p),
           "MOBILEDEPLOY_TARGET_PATH": str(plug / "profiles")}
    r = run_cli("targets", "--json", env=env)
    assert r.returncode == 0, r.stderr
    row = next(x for x in json.loads(r.stdout) if x["target"] == "torchscript-fp32")
    assert row["installed"] and row["tolerance"] == {"max_abs": 1e-4, "min_top1_agreement": 1.0}
    out = tmp_path / "out"
    data = yaml.safe_load(tiny_definition.read_text())
    data["tolerances"] = {"torchscript-fp32": {"max_abs": 1e-5}}  # the definition overrides it
    tiny_definition.write_text(yaml.safe_dump(data))
    r = run_cli("build", str(tiny_definition), "-o", str(out), "--target", "torchscript-fp32", "--no-app",
                env=env)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    art = m["artifacts"][0]
    assert art["path"] == "torchscript/shapes.pt" and art["tolerance"] == {"max_abs": 1e-5, "min_top1_agreement": 1.0}
    rep = json.loads((out / "report" / "validation.json").read_text())
    row = next(x for x in rep["results"] if x["target"] == "torchscript-fp32")
    assert row["status"] == "pass" and row["executor"].startswith("torch.jit")
    assert {c["key"] for c in row["checks"]} == {"max_abs", "min_top1_agreement"}
    assert all(c["ok"] for c in row["checks"])
    r = run_cli("bench", str(out), "--runs", "5", "--no-references", "--json", str(tmp_path / "b.json"), env=env)
    assert r.returncode == 0, r.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    ts = next(x for x in b["results"] if x["target"] == "torchscript-fp32")
    assert ts["status"] == "ok" and ts["latency_ms"]["median"] > 0
