"""The generated Gradle project, checked with real tools: tree-sitter-kotlin parses every .kt/.kts,
aapt2 compiles and links the resources and manifest against the framework, the manifest and the
version catalog are well-formed.

No Gradle or Maven here: what compiles against the Android/LiteRT/ExecuTorch APIs is checked by
the generated project's own CI (.github/workflows/android.yml).
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from mobiledeploy.app import VERSIONS, context_from_definition, render_android_app
from mobiledeploy.definition import load_definition

ANDROID = "{http://schemas.android.com/apk/res/android}"
FRAMEWORK_RES = [Path("/usr/share/android-framework-res/framework-res.apk"),
                 *sorted(Path("/usr/lib/android-sdk/platforms").glob("*/android.jar"))]
LABELS = ['say "hi"', "cost $5 ${x}", "a<b>", "fish & chips", "it's", "@home", "?why"]
APP_NAME = 'Bob\'s "<&> $app\n@2'


def _definition(root: Path, runtime: str, task: str = "image-classification"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text("".join(x + "\n" for x in LABELS), encoding="utf-8")
    for d in ("cal", "val"):
        (root / d).mkdir(exist_ok=True)
    doc = {"name": "nasty", "labels": "labels.txt", "input": {"height": 48, "width": 64},
           "architecture": {"preset": "mobilenet_v3_small"},
           "calibration": {"source": "cal"}, "validation": {"source": "val"},
           "android": {"application_id": "org.example.nasty_app", "app_name": APP_NAME,
                       "runtime": runtime}, "task": task}
    (root / "d.yaml").write_text(json.dumps(doc), encoding="utf-8")
    return load_definition(root / "d.yaml", check_files=False)


@pytest.fixture(scope="module", params=["litert", "executorch", "litert-segmentation", "litert-detection"])
def project(request, tmp_path_factory):
    """The classifier app on both runtimes, the segmentation app (mask overlay + legend) and the
    detection app (boxes, labels and scores over the preview)."""
    tmp = tmp_path_factory.mktemp(request.param)
    runtime, _, task = request.param.partition("-")
    name = {"segmentation": "semantic-segmentation", "detection": "object-detection"}.get(task, "image-classification")
    d = _definition(tmp / "def", runtime, name)
    ctx = context_from_definition(d)
    out = render_android_app(ctx, tmp / "app", copy_models=False)
    assert len(list(out.rglob("Detection.kt"))) == (1 if task == "detection" else 0)
    if task == "detection":
        main = next(out.rglob("MainActivity.kt")).read_text()
        assert "BoxOverlayView" in main and "Detections.parse" in main and "topK" not in main
        assert "Detections.recall" in next(out.rglob("GoldenTest.kt")).read_text()
        assert "runSignature" in next(out.rglob("LiteRtClassifier.kt")).read_text()
        return out
    seg = list(out.rglob("Segmentation.kt"))
    assert len(seg) == (1 if task else 0)  # only the segmentation app carries the overlay
    if task:
        main = next(out.rglob("MainActivity.kt")).read_text()
        assert "MaskOverlayView" in main and "Masks.argmax" in main and "topK" not in main
        assert "Masks.agreement" in next(out.rglob("GoldenTest.kt")).read_text()
    return out


def _kotlin_parser():
    ts = pytest.importorskip("tree_sitter")
    tsk = pytest.importorskip("tree_sitter_kotlin")
    return ts.Parser(ts.Language(tsk.language()))


def _problems(node, out):
    if node.type == "ERROR" or node.is_missing:
        out.append(f"{node.type} at {node.start_point}: {node.text[:60]!r}")
    for child in node.children:
        _problems(child, out)
    return out


def test_the_glue_uses_the_core_by_its_names(project):
    """The glue imports the core's package and uses its names (InputType became TensorType when
    the core moved out: a stale name would only fail in Gradle, which does not run here)."""
    core = {p.stem for p in project.rglob("core/*.kt")}
    assert {"ModelConfig", "Preprocessor", "Outputs"} <= core
    for f in project.rglob("*.kt"):
        text = f.read_text()
        assert "InputType" not in text, f
        if "/core/" not in f.as_posix() and "/test/" not in f.as_posix():
            assert ".core.*" in text, f  # every glue file reads the core's constants and code
            assert "fun topK(" not in text and "object Masks" not in text and "class SsdDecoder" not in text, f


def test_every_kotlin_and_kts_file_parses(project):
    parser = _kotlin_parser()
    files = sorted(project.rglob("*.kt")) + sorted(project.rglob("*.kts"))
    assert len(files) >= 10
    for f in files:
        tree = parser.parse(f.read_bytes())
        assert _problems(tree.root_node, []) == [], f


def test_a_syntax_error_is_caught_by_the_parser_check():
    parser = _kotlin_parser()
    tree = parser.parse(b'val s = "unterminated $x\nfun f( {')
    assert _problems(tree.root_node, [])


def test_kotlin_string_literals_hold_the_app_name(project):
    parser = _kotlin_parser()
    src = next(project.rglob("ModelConfig.kt")).read_bytes()
    tree = parser.parse(src)
    decls = [n for n in _walk(tree.root_node) if n.type == "property_declaration" and b"APP_NAME" in n.text]
    assert len(decls) == 1
    lit = next(n for n in _walk(decls[0]) if n.type == "string_literal")
    # no interpolation node: "$app" stayed text
    assert not [n for n in _walk(lit) if "interpolat" in n.type]


def _walk(node):
    yield node
    for c in node.children:
        yield from _walk(c)


def test_manifest_permissions_and_exported_flags(project):
    root = ET.parse(project / "app/src/main/AndroidManifest.xml").getroot()
    perms = [e.get(f"{ANDROID}name") for e in root.iter("uses-permission")]
    assert perms == ["android.permission.CAMERA"]
    feats = {e.get(f"{ANDROID}name"): e.get(f"{ANDROID}required") for e in root.iter("uses-feature")}
    assert feats == {"android.hardware.camera.any": "false"}
    components = [e for tag in ("activity", "service", "receiver", "provider") for e in root.iter(tag)]
    launchers = [c for c in components if any(
        a.get(f"{ANDROID}name") == "android.intent.action.MAIN" for a in c.iter("action")) and any(
        k.get(f"{ANDROID}name") == "android.intent.category.LAUNCHER" for k in c.iter("category"))]
    assert [c.get(f"{ANDROID}name") for c in launchers] == [".MainActivity"]
    for c in components:
        want = "true" if c in launchers else "false"
        assert c.get(f"{ANDROID}exported") == want, c.get(f"{ANDROID}name")
    app = root.find("application")
    assert app.get(f"{ANDROID}label") == "@string/app_name"


def test_version_catalog_coordinates_are_pinned(project):
    cat = tomllib.loads((project / "gradle/libs.versions.toml").read_text())
    versions = cat["versions"]
    coords = {}
    for alias, lib in cat["libraries"].items():
        assert re.fullmatch(r"[a-z][\w.-]*:[a-z][\w.-]*", lib["module"]), alias
        coords[lib["module"]] = versions[lib["version"]["ref"]]
        assert re.fullmatch(r"\d+(\.\d+)+", coords[lib["module"]]), alias
    runtime_dep = {"com.google.ai.edge.litert:litert": VERSIONS["litert"]} if "litert" in versions \
        else {"org.pytorch:executorch-android": VERSIONS["executorch"]}
    assert runtime_dep.items() <= coords.items()
    assert coords["androidx.camera:camera-core"] == VERSIONS["camerax"]
    assert versions["agp"] == VERSIONS["agp"] and versions["kotlin"] == VERSIONS["kotlin"]
    plugins = {p["id"] for p in cat["plugins"].values()}
    assert plugins == {"com.android.application", "org.jetbrains.kotlin.android"}
    # every catalog alias used in app/build.gradle.kts exists
    gradle = (project / "app/build.gradle.kts").read_text()
    for ref in re.findall(r"libs\.([\w.]+)\)", gradle):
        if ref.startswith("plugins."):
            continue
        assert ref.replace(".", "-") in cat["libraries"], ref


def test_executorch_android_follows_the_exporter_pin():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    pins = [d for extra in pyproject["project"]["optional-dependencies"].values() for d in extra]
    et = next(d.split("==")[1] for d in pins if d.startswith("executorch=="))
    assert VERSIONS["executorch"] == et


def _aapt2():
    from tests.conftest import need_tool

    install = "apt-get install aapt android-framework-res"
    exe = need_tool("aapt2", install=install)
    jar = next((p for p in FRAMEWORK_RES if p.is_file()), None)
    if jar is None:
        need_tool("android-framework-res.jar (absent)", install=install)  # skip, or fail in CI
    return exe, jar


def test_resources_compile_and_link_with_aapt2(project, tmp_path):
    aapt2, framework = _aapt2()
    compiled = tmp_path / "res.zip"
    subprocess.run([aapt2, "compile", "--dir", str(project / "app/src/main/res"), "-o", str(compiled)],
                   check=True, capture_output=True, text=True)
    # AGP injects the package from `namespace`; aapt2 alone needs it in the manifest
    manifest = (project / "app/src/main/AndroidManifest.xml").read_text(encoding="utf-8")
    namespace = re.search(r'namespace = "([\w.]+)"', (project / "app/build.gradle.kts").read_text()).group(1)
    test_manifest = tmp_path / "AndroidManifest.xml"
    test_manifest.write_text(manifest.replace("<manifest ", f'<manifest package="{namespace}" ', 1))
    apk = tmp_path / "out.apk"
    r = subprocess.run([aapt2, "link", "-o", str(apk), "-I", str(framework), "--manifest",
                        str(test_manifest), str(compiled), "--min-sdk-version", VERSIONS["min_sdk"],
                        "--target-sdk-version", VERSIONS["target_sdk"]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dump = subprocess.run([aapt2, "dump", "resources", str(apk)], capture_output=True, text=True, check=True).stdout
    for name in ("string/app_name", "layout/activity_main", "style/Theme.App", "id/preview", "id/results"):
        assert name in dump, name
    strings = subprocess.run([aapt2, "dump", "strings", str(apk)], capture_output=True, text=True, check=True).stdout
    # the compiled app name is the definition's, character for character (newline included)
    assert APP_NAME.replace("\n", "\\n") in strings.replace("\n", "\\n")


def test_aapt2_rejects_a_broken_resource(tmp_path):
    aapt2, _ = _aapt2()
    res = tmp_path / "res/values"
    res.mkdir(parents=True)
    (res / "strings.xml").write_text('<resources><string name="x">a & b</string></resources>')
    r = subprocess.run([aapt2, "compile", "--dir", str(tmp_path / "res"), "-o", str(tmp_path / "r.zip")],
                       capture_output=True, text=True)
    assert r.returncode != 0


def test_a_detection_app_on_executorch_decodes_with_the_core(tmp_path):
    """The .pte gives raw heads: the ExecuTorch app decodes them with the core's SsdDecoder over
    the bundle's anchors (assets/anchors.bin, checked against the decoding spec's digest)."""
    import hashlib

    d = _definition(tmp_path / "def", "executorch", "object-detection")
    ctx = context_from_definition(d)
    out = render_android_app(ctx, tmp_path / "app", copy_models=False)
    et = next(out.rglob("ExecuTorchClassifier.kt")).read_text()
    assert "SsdDecoder(Anchors.read(" in et and "decoder.decode(" in et
    anchors = (out / "app/src/main/assets/anchors.bin").read_bytes()
    assert hashlib.sha256(anchors).hexdigest() == ctx.decoding["anchors_sha256"]
    config = next(out.rglob("core/ModelConfig.kt")).read_text()
    assert f'ANCHORS_SHA256: String = "{ctx.decoding["anchors_sha256"]}"' in config
    assert len(anchors) == 16 * ctx.decoding["num_anchors"]
