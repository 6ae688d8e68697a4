"""Each axis owns its code: no module outside ``backends/<name>/`` and ``tasks/<name>/`` names a
backend, a target or a task (as a string or an import of its folder), except the shared
mechanisms listed here with the reason each has one. A new name outside its home fails."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mobiledeploy
from mobiledeploy.backends.registry import BACKENDS
from mobiledeploy.targets import all_targets
from mobiledeploy.tasks import TASKS

PKG = Path(mobiledeploy.__file__).parent

# module (relative to the package) -> the names it may use, and why it is a shared mechanism
ALLOWED: dict[str, set[str]] = {
    # the registration lines themselves
    "backends/registry.py": {"tflite", "edgetpu", "coreml", "executorch"},
    "tasks/__init__.py": set(TASKS),
    # the built-in LR-ASPP and SSDLite heads tap the backbone inside the builders (a new head uses
    # the plugin slot, architectures/heads.py, and names nothing here)
    "architectures/keras_builder.py": {"tasks.detection", "tasks.segmentation"},
    "architectures/torch_builder.py": {"tasks.detection", "tasks.segmentation"},
    "architectures/reference.py": {"tasks.detection", "tasks.segmentation"},
    "architectures/stats.py": {"tasks.detection", "tasks.segmentation"},
    "architectures/weights.py": {"tasks.detection", "tasks.segmentation"},
    "architectures/spec.py": {"tasks.detection"},
    # the Android app: its runtimes' glue (LiteRT, ExecuTorch) are the app's own axis; it reads the
    # TFLite metadata and runs the artifacts on the host for its golden images and app: rows, and
    # renders the detection decoding and mask palette into the app's core
    "app/__init__.py": {"executorch", "backends.tflite", "tasks.detection",
                        "tasks.segmentation"},
    "app/rows.py": {"backends.tflite", "tasks.detection", "tasks.segmentation"},
    # a backend's own form of a task's outputs: its runner returns the task's output containers
    # (RuntimeDetections, SegOutput) and renders detection's one decoding spec (anchors, NMS
    # thresholds) into its format (TFLite_Detection_PostProcess, Core ML's NMS pipeline)
    "backends/tflite/backend.py": {"tasks.detection"},
    "backends/coreml/backend.py": {"tasks.detection", "tasks.segmentation"},
    "backends/coreml/detection_pipeline.py": {"tasks.detection"},
    # `inspect --edgetpu` is the Edge TPU analysis' own command (DESIGN's CLI contract)
    "commands/inspect.py": {"edgetpu", "backends.edgetpu", "backends.tflite"},
    # checkpoint import reads image classifiers (keras.applications, torchvision) into definitions
    "importers.py": {"image-classification"},
    # a sweep's fine-tuning trains on the shapes renderer, which draws a classification set
    "sweep/spec.py": {"image-classification"},
    # the demo trainers make the shipped examples' data and weights, one per task
    "demo/shapes_det.py": {"tasks.detection"},
    "demo/train_det.py": {"tasks.detection"},
    "demo/train_seg.py": {"tasks.segmentation"},
    # the benchmark suite measures named targets of the shipped examples (make bench)
    "benchsuite.py": {"edgetpu", "executorch", "executorch-xnnpack", "executorch-xnnpack-int8", "tflite",
                      "tflite-fp32", "tflite-int8"},
}


def _homes() -> tuple[dict[str, str], dict[str, str]]:
    """name -> the folder that owns it (``backends/x`` or ``tasks/x``)."""
    owner: dict[str, str] = {b: f"backends/{ref.split('.')[2].split(':')[0]}" for b, ref in BACKENDS.items()}
    for name, prof in all_targets().items():
        ref = BACKENDS.get(prof.backend, "")
        if ref:
            owner[name] = f"backends/{ref.split('.')[2].split(':')[0]}"
    for name, ref in TASKS.items():
        owner[name] = f"tasks/{ref.split('.')[2].split(':')[0]}"
    return owner, {}


def names_outside_their_homes() -> dict[str, set[str]]:
    owner, _ = _homes()
    strings = {n for n in owner if "-" in n or n in TASKS}  # targets and tasks: matched inside strings
    exact = set(BACKENDS)  # backend names are common words: only a string that is exactly one
    found: dict[str, set[str]] = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG).as_posix()
        parts = rel.split("/")
        home = "/".join(parts[:2]) if parts[0] in ("backends", "tasks") and len(parts) > 2 else None
        tree = ast.parse(f.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        hits: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                v = node.value
                hits |= {n for n in strings if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", v)
                         and owner[n] != home}
                hits |= {n for n in exact if v == n and owner[n] != home}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("mobiledeploy", "")):
                mod = node.module or ""
                if node.level == 0 and not mod.startswith("mobiledeploy"):
                    continue  # another package's (executorch.backends.xnnpack, mediapipe.tasks)
                for sub in [mod, *(f"{mod}.{a.name}" for a in node.names)]:
                    m = re.search(r"(?:^|\.)(backends|tasks)\.(\w+)", sub)
                    # a backend's or task's folder (not the registry's own names: get_task, TASKS)
                    if m and (PKG / m.group(1) / m.group(2)).is_dir() and f"{m.group(1)}/{m.group(2)}" != home:
                        hits.add(f"{m.group(1)}.{m.group(2)}")
        if hits:
            found[rel] = hits
    return found


def test_no_module_names_a_backend_or_task_outside_its_home_but_the_shared_mechanisms():
    found = names_outside_their_homes()
    new = {m: sorted(h - ALLOWED.get(m, set())) for m, h in found.items() if h - ALLOWED.get(m, set())}
    assert not new, f"names outside their homes (move the code into its folder, or add a task/backend hook): {new}"


def test_the_embedding_task_is_one_folder_and_one_registration_line():
    assert TASKS["image-embedding"].startswith("mobiledeploy.tasks.embedding.")
    found = names_outside_their_homes()
    assert not [m for m, h in found.items() if m != "tasks/__init__.py"
                and ("image-embedding" in h or "tasks.embedding" in h)]
