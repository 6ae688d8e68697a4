"""The detection example as a bundle: TFLite fp32 with LiteRT's TFLite_Detection_PostProcess
validates with the detection keys, and the issue's two seeded faults fail plain `validate`.

One bundle is built once (tflite-fp32, 16 validation images). Each fault is a copy whose .tflite
has its anchors constant edited the way the mistakes happen (manifest sha256 rewritten, so only
numerics can catch it): y/x swapped in the anchors the op decodes with, and anchor sizes doubled.
The network (raw heads) is untouched, so the raw comparisons pass and only the boxes fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, write_definition

pytestmark = pytest.mark.slow

DET = ROOT / "examples" / "shapes_det"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("torch")
    import yaml

    data = yaml.safe_load((DET / "shapes_det.yaml").read_text())
    for key in ("labels", "weights"):
        data[key] = str(DET / data[key])
    for split, n in (("calibration", 8), ("validation", 16)):
        data[split] = {"source": str(DET / data[split]["source"]), "boxes": str(DET / data[split]["boxes"]),
                       "max_images": n}
    data["allow_outside_paths"] = True
    root = tmp_path_factory.mktemp("det")
    definition = write_definition(root, data, "shapes_det.yaml")
    out = root / "good"
    res = run_cli("build", str(definition), "-o", str(out), "--target", "tflite-fp32", "--no-app", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _report(bundle: Path) -> dict:
    return json.loads((bundle / "report" / "validation.json").read_text())


def test_the_bundle_validates_with_the_detection_keys(good):
    rep = _report(good)
    assert rep["task"] == "object-detection" and rep["status"] == "pass"
    ref = next(r for r in rep["results"] if r["target"] == "reference-pytorch")
    assert ref["metrics"]["map50"] >= 0.6 and ref["metrics"]["detections"] >= 16
    twin = next(r for r in rep["results"] if r["target"] == "reference-keras")
    assert twin["status"] == "pass" and twin["metrics"]["box_recall"] == 1.0
    assert twin["metrics"]["matched_iou"] >= 0.999 and twin["metrics"]["map50"] == ref["metrics"]["map50"]
    row = next(r for r in rep["results"] if r["target"] == "tflite-fp32")
    m = row["metrics"]
    for key in ("max_abs", "mean_abs", "cosine", "snr_db", "box_recall", "matched_iou", "score_max_abs", "map50",
                "decoder_recall"):
        assert key in m, key
    assert m["box_recall"] == 1.0 and m["matched_iou"] >= 0.99 and m["decoder_recall"] == 1.0
    assert abs(m["map50"] - ref["metrics"]["map50"]) < 1e-6
    assert row["worst_images"] and row["worst_images"][0]["reference"].startswith("data:image/png")
    html = (good / "report" / "index.html").read_text()
    assert "Detection: worst images" in html and "box recall" in html
    from mobiledeploy.backends.tflite.reader import parse

    man = json.loads((good / "manifest.json").read_text())
    dec = man["decoding"]  # the one decoding spec, beside the artifacts
    assert dec["box_layout"] == "ymin,xmin,ymax,xmax" and dec["anchor_layout"] == "ycenter,xcenter,height,width"
    assert dec["box_coder"] == {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}
    art = next(a for a in man["artifacts"])
    assert "TFLite_Detection_PostProcess" in parse((good / art["path"]).read_bytes()).op_counts()


def _edit_anchors(data: bytes, edit) -> bytes:
    """The .tflite with ``edit(anchors (A, 4) [yc, xc, h, w])`` applied to its anchors constant."""
    import flatbuffers

    from mobiledeploy.backends.tflite.metadata import _schema, model_only

    base = model_only(data)
    tail = data[len(base):]
    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(bytearray(base), 0)
    sg = m.subgraphs[0]
    op = next(o for o in sg.operators if m.operatorCodes[o.opcodeIndex].customCode in (
        b"TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess"))
    t = sg.tensors[op.inputs[2]]  # inputs: box encodings, class scores, anchors
    buf = m.buffers[t.buffer]
    a = np.frombuffer(bytes(bytearray(buf.data)), np.float32).reshape(-1, 4).copy()
    buf.data = np.frombuffer(edit(a).astype(np.float32).tobytes(), np.uint8).copy()
    b = flatbuffers.Builder(len(base) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()) + tail


FAULTS = {
    # the anchors written [xc, yc, w, h]: a y/x convention swap
    "yx-swap": lambda a: a[:, [1, 0, 3, 2]],
    # anchor sizes doubled: the box coder's scale wrong by 2 for every box
    "anchor-scale": lambda a: a * np.array([1, 1, 2, 2], np.float32),
}


def _faulty(good: Path, root: Path, fault: str) -> Path:
    """A copy of ``good`` whose .tflite decodes with anchors edited by ``FAULTS[fault]``."""
    from mobiledeploy.bundle import sha256_path, size_of

    bad = root / fault
    shutil.copytree(good, bad)
    man = json.loads((bad / "manifest.json").read_text())
    art = man["artifacts"][0]
    path = bad / art["path"]
    path.write_bytes(_edit_anchors(path.read_bytes(), FAULTS[fault]))
    art["sha256"], art["bytes"] = sha256_path(path), size_of(path)
    (bad / "manifest.json").write_text(json.dumps(man, indent=2))
    return bad


def _validate(bundle: Path) -> tuple[int, str]:
    res = subprocess.run([sys.executable, "-m", "mobiledeploy", "validate", str(bundle), "-q"],
                         capture_output=True, text=True, timeout=900)
    return res.returncode, res.stderr


@pytest.fixture(scope="module")
def caught(good, tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    """Every faulty copy validated with plain `mobiledeploy validate`, both at once."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("det-faults")
    bundles = {f: _faulty(good, root, f) for f in FAULTS}
    with ThreadPoolExecutor(len(bundles)) as pool:
        runs = dict(zip(bundles, pool.map(_validate, bundles.values()), strict=True))
    return {f: (bundles[f], *runs[f]) for f in FAULTS}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_seeded_fault_fails_plain_validate(caught, fault):
    bad, code, stderr = caught[fault]
    assert code == 1, stderr[-2000:]
    row = next(r for r in _report(bad)["results"] if r["target"] == "tflite-fp32")
    assert row["status"] == "fail"
    assert row["metrics"]["max_abs"] < 1e-4  # the network is still right: only the boxes are wrong
    assert "box_recall" in row["reason"] or "matched_iou" in row["reason"], row["reason"]
    assert "decoder_recall" in row["reason"], row["reason"]


def test_the_app_golden_detections_are_the_host_decoders(good, tmp_path):
    """The app's golden file: the host's run of the bundled .tflite (its own post-processing op)
    on the golden images, which must be the host decoder's detections on the PyTorch reference."""
    import torch

    from mobiledeploy.architectures.reference import build_torch_reference
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import decode_resized, normalise
    from mobiledeploy.tasks.detection.decode import Detections, postprocess
    from mobiledeploy.tasks.detection.metrics import box_recall, matched_iou
    from mobiledeploy.tasks.detection.ssdlite import anchors, decoding_spec

    res = run_cli("app", str(good), "-o", str(tmp_path / "app"))
    assert res.returncode == 0, res.stderr[-2000:]
    gdir = tmp_path / "app" / "app/src/androidTest/assets/golden"
    doc = json.loads((gdir / "golden_inputs.json").read_text())
    assert doc["expected_source"] == "host" and doc["samples"]
    d = load_definition(good / "model" / "definition.yaml", check_files=False)
    spec = d.architecture_spec()
    x = normalise(np.stack([decode_resized(gdir / s["file"], 160, 160) for s in doc["samples"]]), d.input)
    with torch.no_grad():
        logits, enc = (t.numpy() for t in build_torch_reference(d)(torch.from_numpy(x)))
    ref = postprocess(logits, enc, anchors(spec), decoding_spec(spec))
    app = [Detections(np.array([r[:4] for r in s["expected_detections"]], np.float32).reshape(-1, 4),
                      np.array([int(r[4]) for r in s["expected_detections"]], np.int64),
                      np.array([r[5] for r in s["expected_detections"]], np.float32)) for s in doc["samples"]]
    assert sum(len(a) for a in app) >= len(app)
    assert box_recall(ref, app) == 1.0 and box_recall(app, ref) == 1.0
    assert matched_iou(ref, app) >= 0.999
    main = next((tmp_path / "app").rglob("MainActivity.kt")).read_text()
    assert "BoxOverlayView" in main
