"""`mobiledeploy app` on a bundle with a real int8 .tflite (TensorFlow converter, tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

LABELS = ["red", "green", "blue"]


def _bundle(root: Path) -> Path:
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from PIL import Image

    src = root / "src"
    (src / "val").mkdir(parents=True)
    (src / "labels.txt").write_text("\n".join(LABELS) + "\n")
    rng = np.random.default_rng(0)
    for i, lab in enumerate(LABELS):
        (src / "val" / lab).mkdir()
        for j in range(8):
            img = rng.integers(0, 80, (40, 50, 3), dtype=np.uint8)
            img[..., i] += 170
            Image.fromarray(img).save(src / "val" / lab / f"{j}.png")
    doc = {"name": "tiny", "labels": "labels.txt", "input": {"height": 32, "width": 32},
           "architecture": {"preset": "mobilenet_v3_small"},
           "calibration": {"source": "val"}, "validation": {"source": "val"},
           "android": {"application_id": "com.example.tiny", "app_name": "Tiny"}}
    (src / "tiny.yaml").write_text(json.dumps(doc))
    inputs = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))

    def rep():
        for _ in range(8):
            yield [rng.normal(0, 1, (1, 32, 32, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    bundle = root / "bundle"
    (bundle / "tflite").mkdir(parents=True)
    (bundle / "model").mkdir()
    model_bytes = conv.convert()
    (bundle / "tflite/tiny_int8.tflite").write_bytes(model_bytes)
    (bundle / "model/tiny.safetensors").write_bytes(b"stand-in weights")  # the app never reads them
    from mobiledeploy.bundle import sha256_path

    # readers verify what the manifest records: the reference and every artifact hash
    (bundle / "manifest.json").write_text(json.dumps({"name": "tiny", "artifacts": [
        {"target": "tflite-int8", "path": "tflite/tiny_int8.tflite", "bytes": len(model_bytes),
         "sha256": sha256_path(bundle / "tflite/tiny_int8.tflite")}],
        "reference": {"weights": "model/tiny.safetensors",
                      "weights_sha256": sha256_path(bundle / "model/tiny.safetensors")}}))
    return bundle, src


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("b"))


@pytest.mark.slow
def test_context_reads_int8_quantization_and_host_golden_outputs(built):
    from ai_edge_litert.interpreter import Interpreter

    from mobiledeploy.app import context_from_bundle
    from mobiledeploy.definition import load_definition

    bundle, src = built
    d = load_definition(src / "tiny.yaml", check_files=False)
    ctx = context_from_bundle(bundle, definition=d)
    det = Interpreter(model_path=str(bundle / "tflite/tiny_int8.tflite")).get_input_details()[0]
    assert ctx.input_dtype == "int8"
    assert (ctx.input_scale, ctx.input_zero_point) == (pytest.approx(det["quantization"][0]), det["quantization"][1])
    assert ctx.model_asset == "tiny_int8.tflite" and ctx.golden_expected_source == "host"
    assert len(ctx.golden) == 16 and {g.label for g in ctx.golden} == set(LABELS)
    for g in ctx.golden:
        assert len(g.host_outputs) == 3 and g.expected_top1 == int(np.argmax(g.host_outputs))


@pytest.mark.slow
def test_app_command_copies_model_and_golden_inputs(built, tmp_path):
    from click.testing import CliRunner

    from mobiledeploy.cli import main

    bundle, src = built
    # the bundle carries its definition (as the build writes it), with paths that resolve
    doc = json.loads((src / "tiny.yaml").read_text().replace('"labels.txt"', json.dumps(str(src / "labels.txt")))
                     .replace('"val"', json.dumps(str(src / "val"))))
    doc["allow_outside_paths"] = True  # this hand-made bundle names the source folder's files
    (bundle / "model/definition.yaml").write_text(json.dumps(doc))
    out = tmp_path / "app"
    r = CliRunner().invoke(main, ["app", str(bundle), "-o", str(out)])
    assert r.exit_code == 0, r.output
    model = out / "app/src/main/assets/tiny_int8.tflite"
    assert model.read_bytes() == (bundle / "tflite/tiny_int8.tflite").read_bytes()
    golden = json.loads((out / "app/src/androidTest/assets/golden/golden_inputs.json").read_text())
    assert golden["target"] == "tflite-int8" and golden["input"]["dtype"] == "int8"
    assert len(golden["samples"]) == 16
    for s in golden["samples"]:
        copied = (out / "app/src/androidTest/assets/golden" / s["file"]).read_bytes()
        # same file names sit in every class folder: the copy must be the labelled one
        name = s["file"].split("_", 1)[1]
        assert copied == (src / "val" / s["label"] / name).read_bytes()
    r = CliRunner().invoke(main, ["app", str(bundle), "-o", str(tmp_path / "et"), "--runtime", "executorch"])
    assert r.exit_code == 2 and "executorch-xnnpack" in r.output
    r = CliRunner().invoke(main, ["app", str(bundle), "-o", str(tmp_path / "nm"), "--no-models"])
    assert r.exit_code == 0 and not list((tmp_path / "nm/app/src/main/assets").glob("*.tflite"))


@pytest.mark.slow
def test_host_preprocess_matches_validation_inputs(built):
    """The app's arithmetic (float path) is the validation's: same pixels -> same tensor."""
    from mobiledeploy.app import context_from_definition, preprocess
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import decode_resized, normalise

    _, src = built
    d = load_definition(src / "tiny.yaml", check_files=False)
    ctx = context_from_definition(d)
    rgb = decode_resized(src / "val/red/0.png", 32, 32)
    ours = preprocess(ctx, rgb)
    ref = normalise(rgb[None], d.input).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ours, ref)
