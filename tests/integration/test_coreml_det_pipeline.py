"""Core ML detection as Vision consumes it: the shipped detection example's coreml-fp32 package is a
pipeline (ML Program with box decoding, then Core ML's NonMaximumSuppression model) whose outputs
are ``confidence`` and ``coordinates``; milexec runs the whole pipeline on Linux and the row is
judged on the pipeline's own boxes; the seeded fault (the NMS IoU threshold raised to 0.9) fails
plain ``validate``.

One bundle (coreml-fp32, 16 validation images), built once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli, write_definition

pytestmark = pytest.mark.slow

DET = ROOT / "examples" / "shapes_det"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    pytest.importorskip("coremltools")
    pytest.importorskip("torch")
    data = yaml.safe_load((DET / "shapes_det.yaml").read_text())
    for key in ("labels", "weights"):
        data[key] = str(DET / data[key])
    for split, n in (("calibration", 8), ("validation", 16)):
        data[split] = {"source": str(DET / data[split]["source"]), "boxes": str(DET / data[split]["boxes"]),
                       "max_images": n}
    data["allow_outside_paths"] = True
    root = tmp_path_factory.mktemp("coreml-det")
    out = root / "bundle"
    res = run_cli("build", str(write_definition(root, data, "shapes_det.yaml")), "-o", str(out),
                  "--target", "coreml-fp32", "--no-app", "-q", env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": "none"})
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _spec(pkg: Path):
    from mobiledeploy.backends.coreml.milexec.storage import proto, root_model

    m = proto("Model_pb2").Model()
    m.ParseFromString(root_model(pkg).read_bytes())
    return m


def _art(bundle: Path) -> tuple[dict, dict]:
    man = json.loads((bundle / "manifest.json").read_text())
    return man, next(a for a in man["artifacts"] if a["target"] == "coreml-fp32")


def test_the_package_is_the_pipeline_vision_reads(bundle):
    man, art = _art(bundle)
    spec = _spec(bundle / art["path"])
    assert spec.WhichOneof("Type") == "pipeline" and spec.specificationVersion >= 6  # iOS 15 / macOS 12
    kinds = [m.WhichOneof("Type") for m in spec.pipeline.models]
    assert kinds == ["mlProgram", "nonMaximumSuppression"]
    assert [o.name for o in spec.description.output] == ["confidence", "coordinates"]
    assert all(o.shortDescription for o in spec.description.output) and spec.description.input[0].shortDescription
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    nms = spec.pipeline.models[1].nonMaximumSuppression
    dec = man["decoding"]
    assert abs(nms.iouThreshold - dec["iou_threshold"]) < 1e-9
    assert abs(nms.confidenceThreshold - dec["score_threshold"]) < 1e-9
    assert list(nms.stringClassLabels.vector) == (DET / "labels.txt").read_text().split()
    upper = spec.pipeline.models[1].description.output[0].type.multiArrayType.shapeRange.sizeRanges[0].upperBound
    assert upper == dec["max_detections"]
    assert art["facts"]["format"] == "pipeline" and art["facts"]["outputs"] == ["confidence", "coordinates"]


def test_the_row_is_judged_on_the_pipelines_own_boxes(bundle):
    rep = json.loads((bundle / "report" / "validation.json").read_text())
    row = next(r for r in rep["results"] if r["target"] == "coreml-fp32")
    assert row["status"] == "pass", row["reason"]
    assert "NonMaximumSuppression model by milexec" in row["executor"]
    m = row["metrics"]
    # decoder_recall exists only when the runtime decoded its own boxes (the pipeline's NMS)
    assert m["decoder_recall"] == 1.0 and m["box_recall"] == 1.0 and m["box_precision"] == 1.0
    assert m["matched_iou"] >= 0.99 and m["max_abs"] < 1e-4 and m["detections"] >= 16


def test_nms_iou_threshold_raised_to_0_9_fails_validate(bundle, tmp_path):
    from mobiledeploy.backends.coreml.milexec.storage import root_model
    from mobiledeploy.bundle import sha256_path, size_of

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad, ignore=shutil.ignore_patterns("report"))
    man, art = _art(bad)
    pkg = bad / art["path"]
    spec = _spec(pkg)
    spec.pipeline.models[1].nonMaximumSuppression.iouThreshold = 0.9
    root_model(pkg).write_bytes(spec.SerializeToString())
    art["sha256"], art["bytes"] = sha256_path(pkg), size_of(pkg)
    (bad / "manifest.json").write_text(json.dumps(man))
    res = run_cli("validate", str(bad), "-q", env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": "none"})
    assert res.returncode == 1, res.stderr[-2000:]
    row = next(r for r in json.loads((bad / "report" / "validation.json").read_text())["results"]
               if r["target"] == "coreml-fp32")
    assert row["status"] == "fail" and "box_precision" in row["reason"] and "decoder_recall" in row["reason"]
    assert row["metrics"]["max_abs"] < 1e-4  # the network is right: only the suppression is wrong
