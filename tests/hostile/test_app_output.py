"""The app writer facing a user's folder and hostile strings: it replaces only what it recorded,
refuses a folder it did not write (unless --force), writes normal modes, and its project works on
a fresh push (assets committed) with a golden test that fails, never skips, without its assets."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from mobiledeploy.app import MARKER, GoldenSample, context_from_definition, render_android_app
from mobiledeploy.definition import load_definition
from mobiledeploy.errors import UserError
from tests.hostile.helpers import cli, mini_data, refused, snapshot, write


def ctx_for(mini: Path, **android):
    data = mini_data()
    if android:
        data["android"] = android
    return context_from_definition(load_definition(write(mini.parent, data, "app.yaml")))


def hand_written_project(root: Path) -> Path:
    proj = root / "MyApp"
    (proj / "app/src/main").mkdir(parents=True)
    (proj / "settings.gradle.kts").write_text('rootProject.name = "mine"\n')
    (proj / "app/src/main/Main.kt").write_text("fun main() {}\n")
    return proj


def test_a_hand_written_android_project_is_refused_and_kept(mini, tmp_path):
    proj = hand_written_project(tmp_path)
    ctx = ctx_for(mini)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="not a generated Android project.*--force"):
        render_android_app(ctx, proj, copy_models=False)
    assert snapshot(tmp_path) == before


def test_app_command_refuses_before_reading_the_bundle(mini, tmp_path):
    proj = hand_written_project(tmp_path)
    before = snapshot(tmp_path)
    refused(cli("app", tmp_path / "no-bundle", "-o", proj), match="not a generated Android project")
    assert snapshot(tmp_path) == before


def test_force_writes_the_project_and_keeps_the_users_files(mini, tmp_path):
    proj = hand_written_project(tmp_path)
    render_android_app(ctx_for(mini), proj, copy_models=False, force=True)
    assert (proj / "app/src/main/Main.kt").read_text() == "fun main() {}\n"
    assert "mini" in (proj / "settings.gradle.kts").read_text()  # a generated file overwrites
    record = json.loads((proj / MARKER).read_text())
    assert "app/src/main/Main.kt" not in record["files"] and "settings.gradle.kts" in record["files"]


def test_a_tampered_record_cannot_delete_outside_the_project(mini, tmp_path):
    proj = tmp_path / "proj"
    render_android_app(ctx_for(mini), proj, copy_models=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    record = json.loads((proj / MARKER).read_text())
    record["files"] += ["../victim.txt", str(victim), "app/../../victim.txt"]
    (proj / MARKER).write_text(json.dumps(record))
    render_android_app(ctx_for(mini), proj, copy_models=False)
    assert victim.read_text() == "mine"


def test_a_foreign_record_is_refused(mini, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / MARKER).write_text("[1, 2]")
    (proj / "keep.txt").write_text("k")
    with pytest.raises(UserError, match="not a record mobiledeploy wrote"):
        render_android_app(ctx_for(mini), proj, copy_models=False)
    assert (proj / "keep.txt").read_text() == "k"


def test_generated_folders_have_normal_modes(mini, tmp_path):
    old = os.umask(0o022)
    try:
        proj = render_android_app(ctx_for(mini), tmp_path / "proj", copy_models=False)
    finally:
        os.umask(old)
    modes = {p.relative_to(proj).as_posix(): p.stat().st_mode & 0o777 for p in [proj, *proj.rglob("*")]}
    assert modes["."] == 0o755
    assert all(m == 0o755 for p, m in modes.items() if (proj / p).is_dir()), modes
    assert modes["gradlew"] == 0o755 and modes["settings.gradle.kts"] == 0o644


def test_format_specifiers_in_the_app_name_are_not_android_format_strings(mini, tmp_path):
    proj = render_android_app(ctx_for(mini, app_name="Shapes %s %d 100%"), tmp_path / "p", copy_models=False)
    strings = (proj / "app/src/main/res/values/strings.xml").read_text()
    # aapt2 refuses several non-positional substitutions unless the string is not a format
    assert re.search(r'<string name="app_name" formatted="false">Shapes %s %d 100%</string>', strings)


def test_format_app_name_links_with_aapt2(mini, tmp_path):
    from tests.conftest import need_tool

    aapt2 = need_tool("aapt2", install="apt-get install aapt")
    proj = render_android_app(ctx_for(mini, app_name="Shapes %s %d"), tmp_path / "p", copy_models=False)
    r = subprocess.run([aapt2, "compile", "--dir", str(proj / "app/src/main/res"), "-o",
                        str(tmp_path / "r.zip")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_newline_in_app_name_keeps_the_readme_heading_one_line(mini, tmp_path):
    proj = render_android_app(ctx_for(mini, app_name="Two\nlines"), tmp_path / "p", copy_models=False)
    first = (proj / "README.md").read_text().splitlines()[0]
    assert first.startswith("# Two lines — ")


def test_surrogate_or_long_segment_is_a_user_error_not_a_crash(mini, tmp_path):
    from mobiledeploy.app import check_application_id

    with pytest.raises(UserError, match="64 per segment"):
        check_application_id("com." + "a" * 300 + ".x")
    ctx = ctx_for(mini)
    with pytest.raises(ValueError, match="app_name"):
        ctx.model_validate({**ctx.model_dump(), "app_name": "bad \ud800"})


def with_models_ctx(mini: Path, tmp_path: Path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 stand-in")
    img = sorted((mini.parent / "validation").rglob("*.jpg"))[0]
    golden = [GoldenSample(file="00_a.jpg", label="circle", label_index=0, expected_top1=0,
                           source=str(img))]
    return ctx_for(mini).model_copy(update={"model_path": str(model), "model_asset": "m.tflite",
                                            "golden": golden, "golden_expected_source": "label"})


def git(proj: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", "-C", str(proj), *args], capture_output=True, text=True, check=True,
                          env=env).stdout


def test_a_fresh_push_carries_the_assets_the_workflow_needs(mini, tmp_path):
    proj = render_android_app(with_models_ctx(mini, tmp_path), tmp_path / "p")
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    tracked = set(git(proj, "ls-files").split())
    assert {"app/src/main/assets/m.tflite", "app/src/androidTest/assets/golden/golden_inputs.json",
            "app/src/androidTest/assets/golden/00_a.jpg"} <= tracked
    workflow = (proj / ".github/workflows/android.yml").read_text()
    assert "connectedDebugAndroidTest" in workflow and "golden_inputs.json" in workflow


def test_a_project_without_models_has_no_golden_job_to_fail(mini, tmp_path):
    proj = render_android_app(ctx_for(mini), tmp_path / "p", copy_models=False)
    workflow = (proj / ".github/workflows/android.yml").read_text()
    assert "connectedDebugAndroidTest" not in workflow
    assert "assembleDebug" in workflow


def test_golden_test_fails_rather_than_skips_without_assets(mini, tmp_path):
    proj = render_android_app(ctx_for(mini), tmp_path / "p", copy_models=False)
    kt = next(proj.rglob("GoldenTest.kt")).read_text()
    assert "assumeTrue" not in kt and "Assume" not in kt
    assert re.search(r'catch \(e: FileNotFoundException\) \{\s*fail\(', kt)
