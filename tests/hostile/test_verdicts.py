"""Verdicts a client would trust: a validation that judged nothing is not a pass, and a .tflite
that no client could feed as the definition says (no metadata, another input shape) fails
instead of being skipped or fed the definition's normalisation.

Each case is a copy of one real bundle (the hostile suite's mini tflite-fp32) with one thing
changed, the manifest's sha256 rewritten where a file changed so that only validation can tell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.helpers import bundle_copy, cli

pytestmark = pytest.mark.slow


def _report(b: Path) -> dict:
    return json.loads((b / "report" / "validation.json").read_text())


def _replace_artifact(b: Path, data: bytes) -> dict:
    """Write ``data`` as the bundle's tflite-fp32 file, manifest hash and size rewritten."""
    from mobiledeploy.bundle import sha256_path, size_of

    man = json.loads((b / "manifest.json").read_text())
    art = next(a for a in man["artifacts"] if a["target"] == "tflite-fp32")
    path = b / art["path"]
    path.write_bytes(data)
    art["sha256"], art["bytes"] = sha256_path(path), size_of(path)
    (b / "manifest.json").write_text(json.dumps(man, indent=2))
    return art


def _artifact_bytes(b: Path) -> bytes:
    man = json.loads((b / "manifest.json").read_text())
    return (b / next(a for a in man["artifacts"] if a["target"] == "tflite-fp32")["path"]).read_bytes()


def _strip_metadata(data: bytes) -> bytes:
    """The .tflite without its TFLITE_METADATA entry and its zipped associated files."""
    import flatbuffers

    from mobiledeploy.backends.tflite.metadata import METADATA_NAME, _name, _schema, model_only

    m = _schema().ModelT.InitFromPackedBuf(bytearray(model_only(data)), 0)
    m.metadata = [e for e in (m.metadata or []) if _name(e.name) != METADATA_NAME] or None
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_every_row_skipped_is_not_a_pass(built_bundle, tmp_path, monkeypatch):
    """LiteRT not installed, MediaPipe and the app's JVM rows off: the only artifact row is skipped, the references
    pass, and that is exit 1 with status "unjudged", naming why nothing was judged."""
    import mobiledeploy._dist as deps  # what the backend registry asks whether a module is installed

    b = bundle_copy(built_bundle, tmp_path / "b")
    real = deps.available
    monkeypatch.setattr(deps, "available", lambda m: m != "ai_edge_litert" and real(m))
    monkeypatch.setenv("MOBILEDEPLOY_MEDIAPIPE_PYTHON", "none")
    monkeypatch.setenv("MOBILEDEPLOY_KOTLINC", "none")  # no app: rows either (they would be judged)
    r = cli("validate", b, "-q")
    assert r.exit_code == 1, r.output
    assert "nothing was judged" in r.stderr and "ai_edge_litert" in r.stderr, r.stderr
    rep = _report(b)
    rows = {x["target"]: x for x in rep["results"]}
    assert rows["tflite-fp32"]["status"] == "skipped" and rows["reference-keras"]["status"] == "pass"
    assert rep["status"] == "unjudged" and rep["failed"] == 0
    assert "UNJUDGED" in (b / "report" / "index.html").read_text()


def test_tflite_without_metadata_fails(built_bundle, tmp_path, monkeypatch):
    """Fed with the definition's normalisation it would pass; no client could feed it so."""
    b = bundle_copy(built_bundle, tmp_path / "b")
    art = _replace_artifact(b, _strip_metadata(_artifact_bytes(b)))
    from mobiledeploy.backends.tflite.metadata import read_model_metadata

    assert read_model_metadata(b / art["path"])[0] is None
    monkeypatch.setenv("MOBILEDEPLOY_MEDIAPIPE_PYTHON", "none")
    monkeypatch.setenv("MOBILEDEPLOY_KOTLINC", "none")  # no app: rows either (they would be judged)
    r = cli("validate", b, "-q")
    assert r.exit_code == 1, r.output
    row = next(x for x in _report(b)["results"] if x["target"] == "tflite-fp32")
    assert row["status"] == "fail" and "no TFLite metadata" in row["reason"], row["reason"]


def test_tflite_of_another_input_shape_fails_not_skipped(built_bundle, tmp_path, monkeypatch):
    """A converter that changed the input shape (here: a real 16x16 model carrying the bundle's
    own metadata) is a broken artifact, not one this host cannot run."""
    pytest.importorskip("tensorflow")
    import keras
    import tensorflow as tf

    from mobiledeploy.backends.tflite.metadata import attach, build_metadata, read_model_metadata

    b = bundle_copy(built_bundle, tmp_path / "b")
    info, files = read_model_metadata(_artifact_bytes(b))
    n = 3  # the mini definition's classes
    inp = keras.Input((16, 16, 3), batch_size=1)
    out = keras.layers.Dense(n, activation="softmax")(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(inp)))
    data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert()
    _replace_artifact(b, attach(data, build_metadata(info), files))
    monkeypatch.setenv("MOBILEDEPLOY_MEDIAPIPE_PYTHON", "none")
    monkeypatch.setenv("MOBILEDEPLOY_KOTLINC", "none")  # no app: rows either (they would be judged)
    r = cli("validate", b, "-q")
    assert r.exit_code == 1, r.output
    row = next(x for x in _report(b)["results"] if x["target"] == "tflite-fp32")
    assert row["status"] == "fail" and "takes input [1, 16, 16, 3]" in row["reason"], row["reason"]
