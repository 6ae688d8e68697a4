"""The app context, escaping and rendering: no Android tools needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mobiledeploy.app import (
    VERSIONS,
    AppContext,
    android_string,
    check_application_id,
    context_from_definition,
    kotlin_string,
    render_android_app,
)
from mobiledeploy.definition import load_definition
from mobiledeploy.errors import UserError

NASTY_LABELS = ['say "hi"', "cost $5 ${x}", "a<b>", "fish & chips", "back\\slash", "@home", "?why"]
NASTY_NAME = 'Bob\'s "<&> $app\n2'


def write_definition(root: Path, labels=NASTY_LABELS, app_name=NASTY_NAME, runtime="litert",
                     app_id="com.example.nasty") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text("".join(lab + "\n" for lab in labels), encoding="utf-8")
    (root / "cal").mkdir(exist_ok=True)
    (root / "val").mkdir(exist_ok=True)
    doc = {
        "name": "nasty", "labels": "labels.txt",
        "input": {"height": 32, "width": 40, "color_order": "bgr", "pixel_range": [-1.0, 1.0],
                  "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]},
        "architecture": {"preset": "mobilenet_v3_small", "width_multiplier": 0.25},
        "calibration": {"source": "cal"}, "validation": {"source": "val"},
        "android": {"application_id": app_id, "app_name": app_name, "runtime": runtime},
    }
    path = root / "nasty.yaml"
    path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture
def definition(tmp_path):
    return load_definition(write_definition(tmp_path / "def"), check_files=False)


def unescape_kotlin(lit: str) -> str:
    assert lit[0] == lit[-1] == '"'
    body = lit[1:-1]
    # every ", $ and \ inside must be escaped, or Kotlin would end or interpolate the string
    assert not re.search(r'(?<!\\)(\\\\)*["$]', body), body
    return re.sub(r"\\(u[0-9a-f]{4}|.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(
        m.group(1), chr(int(m.group(1)[1:], 16)) if m.group(1).startswith("u") else m.group(1)), body)


@pytest.mark.parametrize("s", NASTY_LABELS + [NASTY_NAME, "tab\tand\x01ctrl", ""])
def test_kotlin_string_round_trips(s):
    lit = kotlin_string(s)
    assert "\n" not in lit
    assert unescape_kotlin(lit) == s


def test_android_string_escapes_quotes_backslash_newline_and_leading_at():
    assert android_string("@home") == "\\@home"
    assert android_string("?why") == "\\?why"
    assert android_string("a@b") == "a@b"
    assert android_string('it\'s "x"\n\\') == 'it\\\'s \\"x\\"\\n\\\\'


@pytest.mark.parametrize("bad", ["com.example", "noDots", "com.1abc.x", "com.example.class",
                                 "com.in.app", "com..x", "com.example-app.x", "com.example.x\n"])
def test_invalid_application_ids_are_user_errors(bad):
    if bad == "com.example":
        check_application_id(bad)  # two segments are fine
        return
    with pytest.raises(UserError, match="application_id"):
        check_application_id(bad)


def test_context_from_definition_carries_the_preprocessing(definition):
    ctx = context_from_definition(definition)
    # LiteRT: what the TFLite file's metadata will say (RGB p / 255; the BGR swap is inside the model)
    assert (ctx.scale, ctx.bias) == ([1 / 255] * 3, [0.0] * 3)
    assert (ctx.input_height, ctx.input_width, ctx.color_order) == (32, 40, "rgb")
    assert ctx.labels == NASTY_LABELS and ctx.num_classes == len(NASTY_LABELS)
    assert (ctx.model_target, ctx.model_asset, ctx.layout) == ("tflite-int8", "nasty_int8.tflite", "nhwc")
    assert ctx.input_dtype is None  # read on the device, not baked into the sources
    et = context_from_definition(definition, runtime="executorch")
    scale, bias = definition.input.normalise_affine()  # a .pte takes the definition's input
    assert (et.scale, et.bias, et.color_order) == (scale, bias, "bgr")
    assert et.sidecar_asset == "nasty_xnnpack_int8.json"
    assert (et.model_target, et.model_asset, et.layout) == (
        "executorch-xnnpack-int8", "nasty_xnnpack_int8.pte", "nchw")
    with pytest.raises(UserError, match="cannot run on runtime executorch"):
        context_from_definition(definition, runtime="executorch", model_target="tflite-fp32")
    with pytest.raises(UserError, match="unknown runtime"):
        context_from_definition(definition, runtime="coreml")


def test_a_label_with_a_line_break_is_refused(definition):
    ctx = context_from_definition(definition)
    data = ctx.model_dump()
    with pytest.raises(ValueError, match="on one line"):
        AppContext.model_validate({**data, "labels": ["ok", "two\nlines"]})
    with pytest.raises(UserError, match="not a valid application id"):
        AppContext.model_validate({**data, "application_id": "bad id"})


@pytest.mark.parametrize("runtime", ["litert", "executorch"])
def test_render_writes_only_the_selected_runtime(tmp_path, definition, runtime):
    ctx = context_from_definition(definition, runtime=runtime)
    out = render_android_app(ctx, tmp_path / "app", copy_models=False)
    src = out / "app/src/main/java/com/example/nasty"
    names = {p.name for p in src.iterdir()}
    assert {"MainActivity.kt", "Classifier.kt"} <= names
    # the Android-free core: everything numeric, in its own package
    assert {"ModelConfig.kt", "Preprocessor.kt", "Outputs.kt"} <= {p.name for p in (src / "core").iterdir()}
    assert ("LiteRtClassifier.kt" in names) == (runtime == "litert")
    assert ("ExecuTorchClassifier.kt" in names) == (runtime == "executorch")
    gradle = (out / "app/build.gradle.kts").read_text()
    toml = (out / "gradle/libs.versions.toml").read_text()
    assert ("litert" in gradle) == (runtime == "litert") and ("executorch" in toml) == (runtime == "executorch")
    assert 'namespace = "com.example.nasty"' in gradle
    assert (out / "app/src/main/assets/labels.txt").read_text(encoding="utf-8").splitlines() == NASTY_LABELS
    assert not list((out / "app/src/main/assets").glob("*.tflite"))
    assert (out / "gradlew").stat().st_mode & 0o111
    assert f"gradle-{VERSIONS['gradle']}-bin.zip" in (out / "gradle/wrapper/gradle-wrapper.properties").read_text()
    config = (src / "core" / "ModelConfig.kt").read_text(encoding="utf-8")
    app_name = re.search(r"APP_NAME: String = (\".*\")$", config, re.M).group(1)
    assert unescape_kotlin(app_name) == NASTY_NAME
    # a .pte takes BGR as defined; a TFLite model takes RGB (its metadata's) and swaps inside
    assert ("const val BGR: Boolean = true" in config) == (runtime == "executorch")
    assert ("const val NCHW: Boolean = true" in config) == (runtime == "executorch")


def test_strings_xml_escapes_the_app_name(tmp_path, definition):
    import xml.etree.ElementTree as ET

    out = render_android_app(context_from_definition(definition), tmp_path / "app", copy_models=False)
    root = ET.parse(out / "app/src/main/res/values/strings.xml").getroot()
    text = next(e.text for e in root if e.get("name") == "app_name")
    # after XML parsing, what is left is Android's escaping of the original name
    assert text == android_string(NASTY_NAME)


def test_render_refuses_a_directory_that_is_not_a_generated_project(tmp_path, definition):
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a generated Android project"):
        render_android_app(context_from_definition(definition), victim, copy_models=False)
    assert (victim / "notes.txt").read_text() == "keep me"


def test_rerender_replaces_what_it_wrote_and_keeps_the_rest(tmp_path, definition):
    out = render_android_app(context_from_definition(definition), tmp_path / "app", copy_models=False)
    src = out / "app/src/main/java/com/example/nasty"
    assert (src / "LiteRtClassifier.kt").is_file()
    (out / "local.properties").write_text("sdk.dir=/opt/android")  # the developer's own file
    render_android_app(context_from_definition(definition, runtime="executorch"), out, copy_models=False)
    # a recorded file the new render does not produce is removed; the developer's file is kept
    assert not (src / "LiteRtClassifier.kt").exists() and (src / "ExecuTorchClassifier.kt").is_file()
    assert (out / "local.properties").read_text() == "sdk.dir=/opt/android"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "def"]  # no temp dirs left


def test_committed_android_app_matches_the_example(tmp_path):
    from mobiledeploy import app_sync

    if not app_sync.EXAMPLE.is_file():
        pytest.skip("examples/shapes/shapes.yaml not present")
    fresh = app_sync.render(tmp_path / "android_app")
    assert app_sync.differences(fresh, app_sync.APP_DIR) == [], "run: python -m mobiledeploy.app_sync"
    seg = app_sync.render(tmp_path / "android_app_seg", app_sync.SEG_EXAMPLE)
    assert app_sync.differences(seg, app_sync.SEG_APP_DIR) == [], "run: python -m mobiledeploy.app_sync"
    assert (app_sync.SEG_APP_DIR / "app/src/main/java/dev/mobiledeploy/shapesseg/Segmentation.kt").is_file()
    det = app_sync.render(tmp_path / "android_app_det", app_sync.DET_EXAMPLE)
    assert app_sync.differences(det, app_sync.DET_APP_DIR) == [], "run: python -m mobiledeploy.app_sync"
    assert (app_sync.DET_APP_DIR / "app/src/main/java/dev/mobiledeploy/shapesdet/Detection.kt").is_file()


def test_sync_check_reports_drift(tmp_path):
    from mobiledeploy import app_sync

    if not app_sync.EXAMPLE.is_file():
        pytest.skip("examples/shapes/shapes.yaml not present")
    copy = app_sync.render(tmp_path / "copy")
    (copy / "README.md").write_text("edited by hand\n")
    (copy / "app/src/main/assets/shapes_int8.tflite").write_bytes(b"model")  # ignored: a binary
    (copy / "extra.kt").write_text("")
    assert app_sync.main(["--check", "--out", str(copy)]) == 1
    fresh = app_sync.render(tmp_path / "fresh")
    assert app_sync.differences(fresh, copy) == ["differs: README.md", "extra: extra.kt"]
