"""`validate`'s app:<target> rows: the bundle's own app core compiled and run on the JVM, and the
issue's seeded faults in the generated Kotlin, each failing plain `mobiledeploy validate` on the
app row at its stage while the artifact's own row is untouched.

Three bundles are built once (the shipped examples, 8 validation images): classification
tflite-int8 (uint8 I/O, so dequantization has a zero point), segmentation and detection tflite-fp32.
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, need_kotlin, run_cli, write_definition

pytestmark = pytest.mark.slow

SAMPLES = "8"


def _build(root: Path, example: str, target: str) -> Path:
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("torch")
    src = ROOT / "examples" / example
    data = yaml.safe_load((src / f"{example}.yaml").read_text())
    for key in ("labels", "weights"):
        data[key] = str(src / data[key])
    for split in ("calibration", "validation"):
        part = {k: str(src / v) if k in ("source", "boxes", "masks") else v for k, v in data[split].items()}
        data[split] = {**part, "max_images": 8}
    data["allow_outside_paths"] = True
    definition = write_definition(root, data, f"{example}.yaml")
    out = root / "bundle"
    res = run_cli("build", str(definition), "-o", str(out), "--target", target, "--samples", SAMPLES, "-q")
    assert (out / "android").is_dir(), res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    need_kotlin()
    specs = {"cls": ("shapes", "tflite-int8"), "seg": ("shapes_seg", "tflite-fp32"),
             "det": ("shapes_det", "tflite-fp32")}
    return {k: _build(tmp_path_factory.mktemp(k), *v) for k, v in specs.items()}


def _validate(bundle: Path, env: dict | None = None) -> tuple[int, dict, str]:
    res = run_cli("validate", str(bundle), "--samples", SAMPLES, "-q", env=env)
    report = json.loads((bundle / "report" / "validation.json").read_text())
    return res.returncode, {r["target"]: r for r in report["results"]}, res.stderr


def _kotlin(bundle: Path, name: str) -> Path:
    return next((bundle / "android" / "app" / "src" / "main" / "java").rglob(f"core/{name}"))


@pytest.mark.parametrize("kind", ["cls", "seg", "det"])
def test_the_app_row_passes_on_a_healthy_bundle(bundles, kind):
    code, rows, err = _validate(bundles[kind])
    target = next(t for t in rows if t.startswith("tflite-"))
    app = rows[f"app:{target}"]
    assert app["status"] == "pass", app["reason"]
    m = app["metrics"]
    # the images are decoded at their own size and resized by the core: as the host, to the level
    assert m["pre_max_diff"] <= app["limits"]["max_pre_max_diff"]
    if kind == "cls":
        assert m["top1_agreement"] == 1.0 and m["post_label_agreement"] == 1.0 and m["post_dequant_max_abs"] == 0.0
    elif kind == "seg":
        assert m["pixel_agreement"] >= 0.999 and m["post_colour_agreement"] == 1.0
    else:
        assert m["box_recall"] == 1.0 and m["box_precision"] == 1.0 and m["detections"] >= 8
    assert app["executor"].startswith("app core on the JVM")
    html = (bundles[kind] / "report" / "index.html").read_text()
    assert f"app:{target}" in html and "pre_max_diff" in html  # the report shows the row


def _swap_colours(text: str) -> str:
    text = text.replace("rgb[i * 3] = (p shr 16) and 0xFF", "rgb[i * 3] = @@")
    text = text.replace("rgb[i * 3 + 2] = p and 0xFF", "rgb[i * 3 + 2] = (p shr 16) and 0xFF")
    return text.replace("@@", "p and 0xFF")


def _one_mean_wrong(text: str) -> str:
    # channel 0's bias off by half a unit: a mean wrong by std/2 in one channel
    return re.sub(r"(val BIAS: FloatArray = floatArrayOf\()(-?[\d.]+)f",
                  lambda m: f"{m.group(1)}{float(m.group(2)) + 0.5!r}f", text, count=1)


FAULTS = {
    # name: (bundle, file, edit, stage the row must name)
    "colour-order": ("cls", "Preprocessor.kt", _swap_colours, "pre"),
    "one-channel-mean": ("cls", "ModelConfig.kt", _one_mean_wrong, "pre"),
    "labels-off-by-one": ("cls", "Outputs.kt", lambda t: t.replace(
        'labels.getOrElse(index) { "#$index" }', 'labels.getOrElse(index + 1) { "#$index" }'), "post"),
    "zero-point-ignored": ("cls", "Outputs.kt", lambda t: t.replace(
        "(b.get(it).toInt() - zeroPoint) * scale", "b.get(it).toInt() * scale").replace(
        "((b.get(it).toInt() and 0xFF) - zeroPoint) * scale", "(b.get(it).toInt() and 0xFF) * scale"), "post"),
    "mask-transposed": ("seg", "Masks.kt", lambda t: t.replace(
        "outputs[p * c + k] else outputs[k * plane + p]",
        "outputs[((p % w) * h + p / w) * c + k] else outputs[k * plane + (p % w) * h + p / w]"), "post"),
    "boxes-xy": ("det", "Detections.kt", lambda t: t.replace(
        "Detection(boxes[4 * k], boxes[4 * k + 1], boxes[4 * k + 2], boxes[4 * k + 3],",
        "Detection(boxes[4 * k + 1], boxes[4 * k], boxes[4 * k + 3], boxes[4 * k + 2],"), "post"),
}


@pytest.fixture(scope="module")
def caught(bundles, tmp_path_factory) -> dict:
    """Every fault in its own copy of the bundle, validated with plain `mobiledeploy validate`."""
    root = tmp_path_factory.mktemp("app-faults")
    copies = {}
    for name, (kind, file, edit, _stage) in FAULTS.items():
        bad = root / name
        shutil.copytree(bundles[kind], bad)
        src = _kotlin(bad, file)
        text = src.read_text()
        edited = edit(text)
        assert edited != text, f"{name}: the edit found nothing to change in {file}"
        src.write_text(edited)
        copies[name] = bad
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(copies, pool.map(_validate, copies.values()), strict=True))
    return runs


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_seeded_app_fault_fails_validate_at_its_stage(caught, fault):
    code, rows, err = caught[fault]
    assert code == 1, err[-2000:]
    target = next(t for t in rows if t.startswith("tflite-"))
    assert rows[target]["status"] == "pass"  # the artifact is fine: only the app is wrong
    app = rows[f"app:{target}"]
    stage = FAULTS[fault][3]
    assert app["status"] == "fail" and app["stage"] == stage, app["reason"]
    assert app["reason"].startswith({"pre": "pre-processing", "post": "post-processing"}[stage]), app["reason"]
    assert f"app:{target}" in err


def test_without_the_toolchain_the_app_row_is_skipped_with_the_install_command(bundles, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(bundles["cls"], bundle)
    _code, rows, _err = _validate(bundle, env={"MOBILEDEPLOY_KOTLINC": str(tmp_path / "no-kotlinc")})
    app = rows["app:tflite-int8"]
    assert app["status"] == "skipped" and "make kotlin-toolchain" in app["reason"]


@pytest.mark.parametrize(("example", "target"), [("shapes", "executorch-xnnpack"),
                                             ("shapes_seg", "executorch-xnnpack"),
                                             ("shapes_det", "executorch-xnnpack-int8")])
def test_every_task_on_the_executorch_app(tmp_path, example, target):
    """Every task's app on ExecuTorch, judged by the same core: float NCHW input, (classes, H, W)
    masks, and for a detector the .pte's raw heads decoded by the core's SsdDecoder + NMS over
    anchors.bin with the bundle's decoding spec. Each app row passes."""
    need_kotlin()
    pytest.importorskip("executorch")
    pytest.importorskip("torch")
    src = ROOT / "examples" / example
    data = yaml.safe_load((src / f"{example}.yaml").read_text())
    for key in ("labels", "weights"):
        data[key] = str(src / data[key])
    for split in ("calibration", "validation"):
        part = {k: str(src / v) if k in ("source", "boxes", "masks") else v for k, v in data[split].items()}
        data[split] = {**part, "max_images": 8}
    data["allow_outside_paths"] = True
    data["android"]["runtime"] = "executorch"
    definition = write_definition(tmp_path, data, f"{example}.yaml")
    out = tmp_path / "bundle"
    res = run_cli("build", str(definition), "-o", str(out), "--target", target, "--samples", SAMPLES, "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    _code, rows, _err = _validate(out)
    app = rows[f"app:{target}"]
    assert app["status"] == "pass", app["reason"]
    assert "ExecuTorch" in app["executor"] and app["metrics"]["pre_max_diff"] == 0.0
    m = app["metrics"]
    if example == "shapes_det":
        assert "decoder.decode(" in next((out / "android").rglob("ExecuTorchClassifier.kt")).read_text()
        assert m["post_box_recall"] == 1.0 and m["post_box_precision"] == 1.0
        assert m["box_recall"] == 1.0 and m["detections"] >= 8
    elif example == "shapes_seg":
        assert m["post_pixel_agreement"] == 1.0 and m["pixel_agreement"] >= 0.999
    else:
        assert m["post_label_agreement"] == 1.0 and m["top1_agreement"] == 1.0
