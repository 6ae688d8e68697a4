"""MediaPipe Tasks' ImageSegmenter and ObjectDetector on the segmentation and detection examples'
TFLite files: the files load (the detector's has the four post-processed outputs MediaPipe
requires, with its metadata), the ``mediapipe:<target>`` rows pass judged on MediaPipe's own
category masks and boxes, and a seeded metadata fault per task fails plain ``validate``: the
detector's labels in the wrong order, the segmenter's normalisation wrong.

Two small bundles (tflite-fp32, 16 validation images each), built once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, find_mediapipe, run_cli, write_definition

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def mediapipe():
    return find_mediapipe()


def _definition(root: Path, name: str) -> Path:
    src = EXAMPLES / name
    data = yaml.safe_load((src / f"{name}.yaml").read_text())
    for key in ("labels", "weights"):
        data[key] = str(src / data[key])
    if name == "shapes_det":
        for split, n in (("calibration", 8), ("validation", 16)):
            data[split] = {"source": str(src / data[split]["source"]), "boxes": str(src / data[split]["boxes"]),
                           "max_images": n}
    else:
        data["calibration"] = {"source": str(src / "calibration/images"), "max_images": 8}
        data["validation"] = {"source": str(src / "validation/images"), "masks": str(src / "validation/masks"),
                              "max_images": 16}
    data["allow_outside_paths"] = True
    return write_definition(root, data, f"{name}.yaml")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, mediapipe) -> dict[str, Path]:
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    root = tmp_path_factory.mktemp("mp")
    out = {}
    for name in ("shapes_det", "shapes_seg"):
        out[name] = root / name
        res = run_cli("build", str(_definition(root, name)), "-o", str(out[name]), "--target", "tflite-fp32",
                      "--no-app", "-q", env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": str(mediapipe)})
        assert res.returncode == 0, res.stderr[-3000:]
    return out


def _rows(bundle: Path) -> dict[str, dict]:
    return {r["target"]: r for r in json.loads((bundle / "report" / "validation.json").read_text())["results"]}


def _artifact(bundle: Path) -> Path:
    man = json.loads((bundle / "manifest.json").read_text())
    return bundle / next(a for a in man["artifacts"] if a["target"] == "tflite-fp32")["path"]


def test_the_detector_file_has_the_four_outputs_mediapipe_expects(bundles):
    from mobiledeploy.backends.tflite.backend import make_interpreter
    from mobiledeploy.backends.tflite.metadata import read_model_metadata

    path = _artifact(bundles["shapes_det"])
    interp = make_interpreter(path)
    assert len(interp.get_output_details()) == 4
    sig = next(iter(interp._get_full_signature_list().values()))["outputs"]
    assert set(sig) == {"detection_boxes", "detection_classes", "detection_scores", "num_detections"}
    info, files = read_model_metadata(path)
    outs = {t.name: t for t in info.outputs}
    assert set(outs) == {"location", "category", "score", "number of detections"}
    loc = outs["location"]
    assert (loc.content, loc.box_index, loc.box_type, loc.box_coordinates) == ("boxes", [1, 0, 3, 2], "BOUNDARIES",
                                                                               "RATIO")
    assert [f.type for f in outs["category"].associated_files] == ["TENSOR_VALUE_LABELS"] and "labels.txt" in files
    assert info.output_groups[0].tensor_names == ["location", "category", "score"]


def test_mediapipe_rows_pass_on_their_own_masks_and_boxes(bundles):
    det = _rows(bundles["shapes_det"])["mediapipe:tflite-fp32"]
    assert det["status"] == "pass", det["reason"]
    assert det["executor"].startswith("mediapipe 1.") and "ObjectDetector" in det["executor"]
    m = det["metrics"]
    assert m["box_recall"] == 1.0 and m["box_precision"] == 1.0 and m["matched_iou"] >= 0.99
    assert m["detections"] >= 16 and m["map50"] > 0.6
    assert {c["key"] for c in det["checks"]} >= {"min_box_recall", "min_box_precision", "min_matched_iou"}
    seg = _rows(bundles["shapes_seg"])["mediapipe:tflite-fp32"]
    assert seg["status"] == "pass", seg["reason"]
    assert "ImageSegmenter" in seg["executor"]
    assert seg["metrics"]["pixel_agreement"] >= 0.999 and abs(seg["metrics"]["miou_drop"]) <= 0.02
    assert len(seg["per_image_agreement"]) == 16 and len(seg["worst_images"]) == 3


def _seed(bundle: Path, dest: Path, edit) -> Path:
    """A copy of ``bundle`` whose tflite-fp32 metadata is ``edit(info, files)``-ed (graph
    untouched, manifest hash rewritten, so only validation can tell)."""
    from mobiledeploy.backends.tflite import metadata as TM
    from mobiledeploy.bundle import sha256_path, size_of

    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("report"))
    path = _artifact(dest)
    info, files = TM.read_model_metadata(path)
    edit(info, files)
    path.write_bytes(TM.attach(path.read_bytes(), TM.build_metadata(info), files))
    man = json.loads((dest / "manifest.json").read_text())
    art = next(a for a in man["artifacts"] if a["target"] == "tflite-fp32")
    art["sha256"], art["bytes"] = sha256_path(path), size_of(path)
    (dest / "manifest.json").write_text(json.dumps(man))
    return dest


def test_detector_labels_in_the_wrong_order_fail_validate(bundles, tmp_path, mediapipe):
    def swap(info, files):
        lines = files["labels.txt"].decode().splitlines()
        lines[0], lines[1] = lines[1], lines[0]  # two classes' names exchanged
        files["labels.txt"] = "".join(f"{x}\n" for x in lines).encode()

    bad = _seed(bundles["shapes_det"], tmp_path / "bad", swap)
    res = run_cli("validate", str(bad), "-q", env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": str(mediapipe)})
    assert res.returncode == 1, res.stderr[-2000:]
    rows = _rows(bad)
    assert rows["tflite-fp32"]["status"] == "pass"  # LiteRT's indices do not read the labels
    mp = rows["mediapipe:tflite-fp32"]
    assert mp["status"] == "fail" and "box_recall" in mp["reason"], mp["reason"]


def test_segmenter_with_the_wrong_normalisation_fails_validate(bundles, tmp_path, mediapipe):
    def norm(info, files):
        info.inputs[0].mean, info.inputs[0].std = [127.5] * 3, [127.5] * 3

    bad = _seed(bundles["shapes_seg"], tmp_path / "bad", norm)
    res = run_cli("validate", str(bad), "-q", env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": str(mediapipe)})
    assert res.returncode == 1, res.stderr[-2000:]
    mp = _rows(bad)["mediapipe:tflite-fp32"]
    assert mp["status"] == "fail" and "pixel_agreement" in mp["reason"], mp["reason"]
