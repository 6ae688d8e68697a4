"""Core ML segmentation with the class index map an iOS app draws (target option ``class_map``):
the package outputs ``class_map`` beside ``logits`` and the row is judged on that map by pixel
agreement (and the map against the argmax of its own logits). A classifier refuses the option.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli, write_definition

pytestmark = pytest.mark.slow

SEG = ROOT / "examples" / "shapes_seg"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    pytest.importorskip("coremltools")
    pytest.importorskip("torch")
    data = yaml.safe_load((SEG / "shapes_seg.yaml").read_text())
    for key in ("labels", "weights"):
        data[key] = str(SEG / data[key])
    data["calibration"] = {"source": str(SEG / "calibration/images"), "max_images": 8}
    data["validation"] = {"source": str(SEG / "validation/images"), "masks": str(SEG / "validation/masks"),
                          "max_images": 12}
    data["target_options"] = {"coreml-fp32": {"class_map": True}}
    data["allow_outside_paths"] = True
    root = tmp_path_factory.mktemp("coreml-seg")
    out = root / "bundle"
    res = run_cli("build", str(write_definition(root, data, "shapes_seg.yaml")), "-o", str(out),
                  "--target", "coreml-fp32", "--no-app", "-q", env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": "none"})
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_the_class_map_is_an_output_and_judged_by_pixel_agreement(bundle):
    from mobiledeploy.backends.coreml.milexec.storage import proto, root_model

    man = json.loads((bundle / "manifest.json").read_text())
    art = next(a for a in man["artifacts"] if a["target"] == "coreml-fp32")
    assert art["facts"]["outputs"] == ["logits", "class_map"]
    spec = proto("Model_pb2").Model()
    spec.ParseFromString(root_model(bundle / art["path"]).read_bytes())
    outs = {o.name: o for o in spec.description.output}
    assert set(outs) == {"logits", "class_map"} and "argmax" in outs["class_map"].shortDescription
    row = next(r for r in json.loads((bundle / "report" / "validation.json").read_text())["results"]
               if r["target"] == "coreml-fp32")
    assert row["status"] == "pass", row["reason"]
    m = row["metrics"]
    assert m["class_map_vs_logits"] == 1.0 and m["pixel_agreement"] >= 0.999
    assert "min_pixel_agreement" in {c["key"] for c in row["checks"]}
    assert len(row["per_image_agreement"]) == 12


def test_a_classifier_refuses_the_option(example_copy, tmp_path):
    """A user error naming the file and field, nothing built."""
    from tests.conftest import tiny_data

    data = tiny_data(validation_images=4)
    data["target_options"] = {"coreml-fp32": {"class_map": True}}
    res = run_cli("build", str(write_definition(example_copy, data, "tiny.yaml")), "-o", str(tmp_path / "out"),
                  "--target", "coreml-fp32", "--no-app", "-q")
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip().splitlines()[-1]
    assert "tiny.yaml: target_options.coreml-fp32.class_map: applies to per-pixel (dense) tasks" in line, line
    assert not (tmp_path / "out").exists()
