"""The Edge TPU target on the shipped example, and real images through mobiledeploy's own
preprocessing on Coral's reference model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import edgetpu_reference_dir, example_data, run_cli, write_definition

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")



def _edgetpu_report(definition: Path, out: Path) -> dict:
    r = run_cli("build", str(definition), "-o", str(out), "--target", "edgetpu", "--no-app", "--quiet")
    assert r.returncode in (0, 1), r.stderr
    return json.loads((out / "edgetpu" / "edgetpu.json").read_text())


@pytest.mark.slow
def test_example_hswish_fallback_unless_lowered_and_minimalistic_maps_fully(example_copy, tmp_path):
    data = example_data()
    data["validation"] = {"source": "validation", "max_images": 20}

    # the converter's own ops: HARD_SWISH falls back to the CPU, with the advice that fixes it
    data["target_options"] = {"edgetpu": {"lowering": "none"}}
    stock = _edgetpu_report(write_definition(example_copy, data, "stock.yaml"), tmp_path / "stock")
    assert stock["first_cpu_op"]["op"] == "HARD_SWISH"
    assert stock["edgetpu_ops"] < stock["ops_total"] // 4
    advice = json.dumps(stock["advice"])
    assert "minimalistic" in advice and "lowering" in advice
    assert stock["compiled"] is False and "edgetpu_compiler" in stock["compiler_command"]

    # the default lowering keeps SE and h-swish but maps every op
    data["target_options"] = {}
    lowered = _edgetpu_report(write_definition(example_copy, data, "lowered.yaml"), tmp_path / "lowered")
    assert lowered["edgetpu_ops"] == lowered["ops_total"] and lowered["first_cpu_op"] is None
    manifest = json.loads((tmp_path / "lowered" / "manifest.json").read_text())
    art = manifest["artifacts"][0]
    assert art["facts"]["compiled"] is False
    assert {e["path"] for e in art["extra_files"]} >= {"edgetpu/edgetpu.json", "edgetpu/edgetpu_prediction.log"}
    report = json.loads((tmp_path / "lowered" / "report" / "validation.json").read_text())
    row = next(r for r in report["results"] if r["target"] == "edgetpu")
    assert row["status"] == "pass" and "reference int8 kernels" in row["executor"]

    # the same definition with the minimalistic preset maps fully without any lowering
    data["architecture"] = {"preset": "mobilenet_v3_small_minimalistic"}
    data.pop("weights")
    data["target_options"] = {"edgetpu": {"lowering": "none"}}
    minimal = _edgetpu_report(write_definition(example_copy, data, "minimal.yaml"), tmp_path / "minimal")
    assert minimal["edgetpu_ops"] == minimal["ops_total"] and minimal["first_cpu_op"] is None


def test_coral_reference_model_through_our_preprocessing(tmp_path):
    """Coral's uint8 MobileNetV2 on its own test images, decoded, resized and quantized by
    mobiledeploy (input spec: pixels to [-1, 1], the model's quantization)."""
    from mobiledeploy.backends.edgetpu.backend import EdgeTPUBackend
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import load_batch

    REF = edgetpu_reference_dir()
    labels = [line.split(None, 1)[1].strip() for line in (REF / "imagenet_labels.txt").read_text().splitlines()
              if line.strip()]
    (tmp_path / "labels.txt").write_text("\n".join(f"{i}:{x}" for i, x in enumerate(labels)) + "\n")
    (tmp_path / "images.txt").write_text("".join(f"{REF / n} {i}\n" for n, i in
                                                 [("cat.bmp", 286), ("bird.bmp", 20), ("grace_hopper.bmp", 653)]))
    definition = {
        "name": "coral_v2", "labels": "labels.txt",
        "input": {"height": 224, "width": 224, "pixel_range": [-1.0, 1.0]},
        "architecture": {"preset": "mobilenet_v3_small"},
        "calibration": "images.txt", "validation": "images.txt",
        "allow_outside_paths": True,  # Coral's own images, in shared/
    }
    (tmp_path / "coral.yaml").write_text(yaml.safe_dump(definition))
    d = load_definition(tmp_path / "coral.yaml")
    batch = load_batch(d, "validation")
    runner = EdgeTPUBackend().load(REF / "mobilenet_v2_1.0_224_quant.tflite", None, d)
    top1 = runner.run(batch).argmax(1)
    assert [labels[i] for i in top1] == [labels[286], labels[20], labels[653]]
    assert "cat" in labels[286] and "chickadee" in labels[20] and "uniform" in labels[653]
