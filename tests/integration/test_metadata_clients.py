"""Self-describing artifacts, checked by real clients on the trained demo.

MediaPipe Tasks' ImageClassifier (its own venv: ``make mediapipe-venv``) loads every TFLite artifact
and classifies the 200 held-out images from the metadata alone, with validate's top-1; a wrong
mean/std written into the metadata fails plain ``mobiledeploy validate``. Core ML gets its model
fields, each .pte its sidecar, and the Android app its preprocessing from the artifact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE, example_data, find_mediapipe, run_cli, tiny_data, write_definition

pytestmark = pytest.mark.slow

META = {"author": "mobiledeploy tests", "license": "CC0-1.0", "version": "3.2.1"}
TFLITE = ("tflite-fp32", "tflite-fp16", "tflite-int8")


@pytest.fixture(scope="module")
def mediapipe():
    return find_mediapipe()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, mediapipe) -> tuple[Path, object]:
    """The demo (trained weights, 200 held-out images) built for the three TFLite targets."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("torch")
    from mobiledeploy.definition import load_definition

    root = tmp_path_factory.mktemp("meta")
    data = example_data()
    data["metadata"] = META
    # the Edge TPU file with int8 I/O: the other integer contract (q = p - 128), which MediaPipe skips
    data["target_options"] = {"edgetpu": {"io_dtype": "int8"}}
    for key in ("labels", "weights"):
        data[key] = str(EXAMPLE / data[key])
    for key in ("calibration", "validation"):
        data[key]["source"] = str(EXAMPLE / data[key]["source"])
    data["allow_outside_paths"] = True  # the shipped example's files, not copies
    definition = write_definition(root, data, "shapes.yaml")
    out = root / "bundle"
    args = ["build", str(definition), "-o", str(out), "--jobs", "2", "--no-app", "-q"]
    for t in (*TFLITE, "edgetpu"):
        args += ["--target", t]
    res = run_cli(*args, env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": str(mediapipe)})
    assert res.returncode == 0, res.stderr[-3000:]
    return out, load_definition(definition)


def _artifacts(bundle: Path) -> dict[str, Path]:
    man = json.loads((bundle / "manifest.json").read_text())
    return {a["target"]: bundle / a["path"] for a in man["artifacts"]}


def test_metadata_reads_back_as_the_definition_says_in_ours_and_mediapipes_parser(demo, mediapipe):
    from mobiledeploy.backends.tflite import metadata as TM
    from mobiledeploy.backends.tflite.mediapipe import run_mediapipe

    bundle, d = demo
    for target, path in _artifacts(bundle).items():
        info, files = TM.read_model_metadata(path)
        io = {"tflite-int8": "uint8", "edgetpu": "int8"}.get(target, "float32")
        assert TM.check_against_definition(info, files, d, io) == [], target
        assert (info.name, info.version, info.author, info.license) == ("shapes", "3.2.1", META["author"],
                                                                        META["license"])
        assert files["labels.txt"].decode().split() == d.labels_list()
        # MediaPipe's own generated metadata schema reads the same fields
        mp = run_mediapipe(path, metadata=True, python=mediapipe)["metadata"]
        assert (mp["name"], mp["version"], mp["author"], mp["license"], mp["description"]) == (
            info.name, info.version, info.author, info.license, info.description)
        (inp,), (out,) = mp["inputs"], mp["outputs"]
        assert inp["process_units"] == [{"mean": info.inputs[0].mean, "std": info.inputs[0].std}]
        assert inp["color_space"] == 1 and inp["image_size"] == [112, 112]  # RGB
        assert inp["stats"]["min"] == info.inputs[0].stats_min
        assert out["associated_files"][0]["name"] == "labels.txt" and out["associated_files"][0]["type"] == 2


def test_one_mediapipe_process_answers_a_validation_and_a_dead_one_is_replaced(demo, mediapipe, tmp_path):
    """MediaPipe runs in one process per validation (its imports paid once); a model it cannot
    load is that request's error, not the process's end; a process that died is replaced."""
    import numpy as np

    from mobiledeploy.backends.tflite import mediapipe as M

    bundle, _ = demo
    arts = _artifacts(bundle)
    pixels = np.zeros((2, 112, 112, 3), np.uint8)
    M.close_mediapipe()
    first = M.run_mediapipe(arts["tflite-fp32"], pixels, python=mediapipe)
    pid = M._SERVERS[str(mediapipe)].proc.pid
    (tmp_path / "broken.tflite").write_bytes(b"TFL3" + b"\0" * 64)
    broken = M.run_mediapipe(tmp_path / "broken.tflite", pixels, python=mediapipe)
    assert "error" in broken and "\n" not in broken["error"], broken
    again = M.run_mediapipe(arts["tflite-fp16"], pixels, python=mediapipe)
    assert M._SERVERS[str(mediapipe)].proc.pid == pid, "one process for the whole validation"
    assert len(first["results"]) == len(again["results"]) == 2
    M._SERVERS[str(mediapipe)].proc.kill()
    M._SERVERS[str(mediapipe)].proc.wait()
    after = M.run_mediapipe(arts["tflite-fp32"], pixels, python=mediapipe)
    assert after == first and M._SERVERS[str(mediapipe)].proc.pid != pid
    M.close_mediapipe()
    assert not M._SERVERS


def test_mediapipe_classifies_the_held_out_images_with_validates_top1(demo):
    bundle, _ = demo
    report = json.loads((bundle / "report" / "validation.json").read_text())
    assert report["samples"] == 200 and report["status"] == "pass"
    rows = {r["target"]: r for r in report["results"]}
    for t in TFLITE:  # the three a MediaPipe app would use
        mp = rows[f"mediapipe:{t}"]
        assert mp["status"] == "pass" and mp["executor"].startswith("mediapipe 1."), mp["reason"]
        assert mp["top1"] == rows[t]["top1"], t  # 200 of 200 the same
        assert mp["metrics"]["top1_accuracy"] == rows[t]["metrics"]["top1_accuracy"] > 0.95
    art = json.loads((bundle / "manifest.json").read_text())["artifacts"]
    assert {a["target"]: a["facts"]["input"]["dtype"] for a in art}["tflite-int8"] == "uint8"


def test_wrong_mean_std_in_the_metadata_fails_validate(demo, tmp_path, mediapipe):
    """The seeded fault: the graph is right, the metadata says (p - 127.5) / 127.5."""
    from mobiledeploy.backends.tflite import metadata as TM
    from mobiledeploy.bundle import sha256_path, size_of

    bundle, d = demo
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad, ignore=shutil.ignore_patterns("report"))
    path = _artifacts(bad)["tflite-fp32"]
    info, files = TM.read_model_metadata(path)
    info.inputs[0].mean, info.inputs[0].std = [127.5] * 3, [127.5] * 3
    path.write_bytes(TM.attach(path.read_bytes(), TM.build_metadata(info), files))
    man = json.loads((bad / "manifest.json").read_text())
    art = next(a for a in man["artifacts"] if a["target"] == "tflite-fp32")
    art["sha256"], art["bytes"] = sha256_path(path), size_of(path)
    (bad / "manifest.json").write_text(json.dumps(man))
    res = run_cli("validate", str(bad), "--samples", "40", "-q",
                  env={"MOBILEDEPLOY_MEDIAPIPE_PYTHON": str(mediapipe)})
    assert res.returncode == 1, res.stderr[-2000:]
    assert "mediapipe:tflite-fp32" in res.stderr
    rows = {r["target"]: r for r in json.loads((bad / "report" / "validation.json").read_text())["results"]}
    assert rows["mediapipe:tflite-fp32"]["status"] == "fail"
    assert "top1_agreement" in rows["mediapipe:tflite-fp32"]["reason"]
    assert rows["tflite-fp32"]["status"] == "fail"  # LiteRT rows read the metadata too
    assert rows["mediapipe:tflite-int8"]["status"] == rows["tflite-int8"]["status"] == "pass"


def test_android_app_takes_preprocessing_from_the_model(demo, tmp_path):
    from mobiledeploy.app import context_from_bundle, render_android_app

    bundle, d = demo
    ctx = context_from_bundle(bundle, definition=d)
    assert ctx.model_target == "tflite-int8" and ctx.input_dtype == "uint8"
    # the metadata's x = p / 255 (the adapter inside the model does ImageNet's per-channel part)
    assert ctx.scale == [pytest.approx(1 / 255)] * 3 and ctx.bias == [0.0] * 3
    assert ctx.input_scale == pytest.approx(1 / 255) and ctx.input_zero_point == 0
    assert sum(g.expected_top1 == g.label_index for g in ctx.golden) >= 15
    app = render_android_app(ctx, tmp_path / "app")
    kt = (app / "app/src/main/java/dev/mobiledeploy/shapes/TfliteMetadataCheck.kt").read_text()
    assert "MetadataExtractor" in kt and "ArtifactCheck.verify" in (
        app / "app/src/main/java/dev/mobiledeploy/shapes/LiteRtClassifier.kt").read_text()
    assert "com.google.ai.edge.litert:litert-metadata" in (app / "gradle/libs.versions.toml").read_text()


def test_coreml_fields_and_executorch_sidecar(example_copy, tmp_path):
    """On a tiny model: Core ML model fields, and the sidecar beside each .pte (in the manifest)."""
    from mobiledeploy.artifact_metadata import check_sidecar
    from mobiledeploy.backends.registry import check
    from mobiledeploy.definition import load_definition
    from mobiledeploy.errors import MissingDependencyError

    targets = []
    for backend, target in (("coreml", "coreml-fp32"), ("executorch", "executorch-xnnpack")):
        try:
            check(backend)
            targets.append(target)
        except MissingDependencyError:
            pass
    if not targets:
        pytest.skip("neither coremltools nor executorch installed")
    data = tiny_data()
    data["metadata"] = {**META, "description": "tiny shapes"}
    path = write_definition(example_copy, data, "tiny.yaml")
    d = load_definition(path)
    out = tmp_path / "b"
    args = ["build", str(path), "-o", str(out), "--no-app", "--no-validate", "-q"]
    for t in targets:
        args += ["--target", t]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    man = json.loads((out / "manifest.json").read_text())
    arts = {a["target"]: a for a in man["artifacts"]}
    if "coreml-fp32" in arts:
        import coremltools as ct

        spec = ct.utils.load_spec(str(out / arts["coreml-fp32"]["path"]))
        md = spec.description.metadata
        assert (md.author, md.license, md.versionString, md.shortDescription) == (
            META["author"], META["license"], "3.2.1", "tiny shapes")
        assert "normalisation" in spec.description.input[0].shortDescription
        outs = {o.name: o.shortDescription for o in spec.description.output}
        assert "pre-softmax" in outs["logits"] and outs["classLabel"]
        assert json.loads(md.userDefined["com.mobiledeploy.labels"]) == d.labels_list()
    if "executorch-xnnpack" in arts:
        art = arts["executorch-xnnpack"]
        side = out / "executorch" / "shapes_xnnpack.json"
        assert {"path": "executorch/shapes_xnnpack.json", "sha256": _sha(side)} in art["extra_files"]
        doc = json.loads(side.read_text())
        assert check_sidecar(doc, d, out / art["path"]) == []
        assert doc["input"]["shape"] == [1, 3, 32, 32] and doc["output"]["shape"] == [1, 10]
        assert (doc["author"], doc["license"], doc["version"]) == (META["author"], META["license"], "3.2.1")
        doc["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
        assert check_sidecar(doc, d) == ["preprocessing differs from the definition's"]


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_integer_inputs_take_the_pixel_bytes_and_validate_on_litert(demo):
    """uint8 I/O (tflite-int8, the app's model) takes q = p; int8 I/O takes q = p - 128; both pass
    LiteRT validation, and MediaPipe, which feeds only uint8/float32, skips the int8 one."""
    from mobiledeploy.backends.tflite import metadata as TM
    from mobiledeploy.backends.tflite.backend import make_interpreter

    bundle, _ = demo
    rows = {r["target"]: r for r in json.loads((bundle / "report/validation.json").read_text())["results"]}
    assert rows["tflite-int8"]["status"] == rows["edgetpu"]["status"] == "pass"
    assert rows["mediapipe:edgetpu"]["status"] == "skipped" and "io_dtype" in rows["mediapipe:edgetpu"]["reason"]
    for target, dtype, zp in (("tflite-int8", np.uint8, 0), ("edgetpu", np.int8, -128)):
        p = _artifacts(bundle)[target]
        det = make_interpreter(p).get_input_details()[0]
        assert det["dtype"] == dtype and det["quantization"] == (pytest.approx(1 / 255), zp)
        assert TM.read_model_metadata(p)[0].inputs[0].std == [255.0] * 3
