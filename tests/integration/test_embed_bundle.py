"""The fourth task end to end: the shipped embedder builds all eight artifacts and validates on
real images, with no Android app (no app runtime serves embeddings)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLE, find_mediapipe, run_cli

pytestmark = pytest.mark.slow


def test_the_shipped_embedder_builds_every_target_and_validates(tmp_path):
    out = tmp_path / "embed"
    mp = find_mediapipe(required=False)
    r = run_cli("build", str(EXAMPLE / "shapes_embed.yaml"), "-o", str(out), "--jobs", "2",
                env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": str(mp) if mp else "none"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["artifacts"]) == 8 and "android" not in m and not (out / "android").exists()
    rep = json.loads((out / "report" / "validation.json").read_text())
    assert rep["task"] == "image-embedding" and rep["status"] == "pass"
    rows = {x["target"]: x for x in rep["results"]}
    assert rows["reference-pytorch"]["metrics"]["retrieval_top1"] > 0.9  # trained weights, not noise
    for t in (a["target"] for a in m["artifacts"]):
        row = rows[t]
        assert row["status"] == "pass", (t, row["reason"])
        keys = {c["key"] for c in row["checks"]}
        assert {"min_cosine_min", "min_nn_agreement", "max_retrieval_drop"} <= keys
        assert not keys & {"min_top1_agreement", "min_pixel_agreement", "min_box_recall"}
        assert len(row["per_image_cosine"]) == rep["samples"]
    if mp is not None:  # MediaPipe's ImageEmbedder on every .tflite, from the metadata alone
        mp_rows = [x for x in rep["results"] if x["target"].startswith("mediapipe:")]
        assert {x["target"] for x in mp_rows} == {f"mediapipe:{a['target']}" for a in m["artifacts"]
                                                 if a["path"].endswith(".tflite")}
        assert all(x["status"] == "pass" and x["metrics"]["cosine_min"] > 0.95 for x in mp_rows)
    # the outputs are vectors, not label scores: no label file is tied to the TFLite output axis
    from mobiledeploy.backends.tflite.metadata import read_model_metadata

    info, files = read_model_metadata(out / "tflite" / "shapes_embed_fp32.tflite")
    assert info.outputs[0].name == "embedding" and not info.outputs[0].associated_files
    side = json.loads((out / "executorch" / "shapes_embed_xnnpack.json").read_text())
    assert side["output"]["name"] == "embedding" and side["output"]["shape"] == [1, 1024]
    # the app is refused in one line from the capability table
    r = run_cli("app", str(out), "-o", str(tmp_path / "app"))
    assert r.returncode == 2 and "does not serve image-embedding" in r.stderr and "Traceback" not in r.stderr
