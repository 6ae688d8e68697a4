"""Readers of a bundle (validate, app, bench) trust nothing in it unchecked, and a build into
someone's folder deletes nothing of theirs. Each tampering is exit 2 (or 1: nothing judged)
with one line, and nothing is read or written outside the bundle."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mobiledeploy.bundle import STATE_DIR, check_output_folder, clean_stale
from mobiledeploy.errors import UserError
from tests.hostile.helpers import bundle_copy, cli, refused, snapshot


def manifest_of(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def set_manifest(b: Path, m: dict) -> None:
    (b / "manifest.json").write_text(json.dumps(m))


@pytest.fixture
def bundle(built_bundle, tmp_path) -> Path:
    return bundle_copy(built_bundle, tmp_path / "b")


# ---------------------------------------------------------------- paths out of the bundle


@pytest.mark.parametrize("cmd", ["validate", "app", "bench"])
def test_artifact_path_leaving_the_bundle(bundle, tmp_path, cmd):
    secret = tmp_path / "secret.tflite"
    secret.write_bytes(b"not yours")
    m = manifest_of(bundle)
    m["artifacts"][0]["path"] = "../secret.tflite"
    set_manifest(bundle, m)
    args = {"validate": ["validate", bundle, "-q"], "app": ["app", bundle, "-o", tmp_path / "app"],
            "bench": ["bench", bundle, "-q", "--runs", "1", "--no-references"]}[cmd]
    refused(cli(*args), match="leaves the bundle")
    assert not (tmp_path / "app").exists()


def test_absolute_reference_weights_path(bundle, tmp_path):
    m = manifest_of(bundle)
    m["reference"]["weights"] = str(tmp_path / "w.safetensors")
    set_manifest(bundle, m)
    refused(cli("validate", bundle, "-q"), match="leaves the bundle")


# ---------------------------------------------------------------- hashes


def test_reference_weights_scaled_are_blamed_on_the_reference(bundle):
    from safetensors.numpy import load_file, save_file

    w = next((bundle / "model").glob("*.safetensors"))
    state = load_file(str(w))
    save_file({k: (v * np.float32(1.001)).astype(np.float32) for k, v in state.items()}, str(w))
    refused(cli("validate", bundle, "-q"), match="reference weights changed since the build")


@pytest.mark.parametrize("victim", ["definition.yaml", "labels.txt", "validation/00000.jpg", "validation.txt"])
def test_model_folder_changes_are_caught(bundle, victim):
    p = bundle / "model" / victim
    p.write_bytes(p.read_bytes() + b"\n")
    refused(cli("validate", bundle, "-q"), match="changed since the build")


def test_app_refuses_a_changed_model(bundle, tmp_path):
    art = manifest_of(bundle)["artifacts"][0]
    p = bundle / art["path"]
    p.write_bytes(p.read_bytes() + b"\0")
    refused(cli("app", bundle, "-o", tmp_path / "app"), match="artifact changed since build")
    assert not (tmp_path / "app").exists()


def test_bench_refuses_a_changed_artifact(bundle):
    art = manifest_of(bundle)["artifacts"][0]
    (bundle / art["path"]).write_bytes(b"TFL3 garbage")
    refused(cli("bench", bundle, "-q", "--runs", "1"), match="artifact changed since build")


def test_extra_files_are_hashed(tmp_path):
    from mobiledeploy.trust import artifact_problem

    b = tmp_path / "b"
    (b / "edgetpu").mkdir(parents=True)
    (b / "edgetpu/m.tflite").write_bytes(b"model")
    (b / "edgetpu/edgetpu.json").write_text('{"ops": 1}')
    from mobiledeploy.bundle import sha256_path

    art = {"target": "edgetpu", "path": "edgetpu/m.tflite", "sha256": sha256_path(b / "edgetpu/m.tflite"),
           "extra_files": [{"path": "edgetpu/edgetpu.json", "sha256": sha256_path(b / "edgetpu/edgetpu.json")}]}
    assert artifact_problem(b, art) is None
    (b / "edgetpu/edgetpu.json").write_text('{"ops": 0}')
    assert "edgetpu.json changed" in artifact_problem(b, art)
    art["extra_files"][0]["path"] = "../../etc/passwd"
    with pytest.raises(UserError, match="leaves the bundle"):
        artifact_problem(b, art)


# ---------------------------------------------------------------- manifest shape


@pytest.mark.parametrize("cmd", ["validate", "app", "bench"])
def test_manifest_without_reference(bundle, tmp_path, cmd):
    m = manifest_of(bundle)
    del m["reference"]
    set_manifest(bundle, m)
    args = {"validate": ["validate", bundle, "-q"], "app": ["app", bundle, "-o", tmp_path / "app"],
            "bench": ["bench", bundle, "-q", "--runs", "1"]}[cmd]
    refused(cli(*args), match="no 'reference'")


def test_manifest_with_no_artifacts_is_not_a_pass(bundle):
    m = manifest_of(bundle)
    m["artifacts"], m["failed"] = [], []
    set_manifest(bundle, m)
    r = cli("validate", bundle, "-q")
    assert r.exit_code == 1 and "nothing to judge" in r.stderr


def test_bench_unknown_target_is_exit_2(bundle):
    refused(cli("bench", bundle, "-q", "--target", "coreml-fp32"), match="not in this bundle")


def test_bench_every_row_failed_is_not_success(bundle):
    m = manifest_of(bundle)
    m["failed"] = [{"target": a["target"], "reason": "converter crashed"} for a in m["artifacts"]]
    m["artifacts"] = []
    set_manifest(bundle, m)
    r = cli("bench", bundle, "-q", "--no-references", "--runs", "1")
    assert r.exit_code == 1, r.output


# ---------------------------------------------------------------- locks


@pytest.mark.parametrize("cmd", ["validate", "app", "bench"])
def test_readers_take_the_bundle_lock(bundle, tmp_path, cmd):
    lock = open(bundle / STATE_DIR / "lock", "a+")  # a build holding the bundle
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    try:
        args = {"validate": ["validate", bundle, "-q"], "app": ["app", bundle, "-o", tmp_path / "app"],
                "bench": ["bench", bundle, "-q", "--runs", "1"]}[cmd]
        refused(cli(*args), match="writing this bundle")
    finally:
        lock.close()
    assert not (tmp_path / "app").exists()


# ---------------------------------------------------------------- the build's own state


def test_state_folder_that_is_a_file_keeps_the_manifest(bundle, mini):
    shutil.rmtree(bundle / STATE_DIR)
    (bundle / STATE_DIR).write_text("not a folder")
    refused(cli("build", mini, "-o", bundle, "-q", "--target", "tflite-fp32"), match="is not a folder")
    assert (bundle / "manifest.json").is_file()


@pytest.mark.parametrize("content", [b"[]", b"\xff\xfe not utf-8", b'{"model": "x", "convert:a": {"key": 1}}'])
def test_corrupt_cache_record_is_an_empty_cache(tmp_path, content):
    from mobiledeploy.pipeline.graph import Cache, Step

    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / "steps.json").write_bytes(content)
    cache = Cache(tmp_path)
    assert cache.check(Step("model", {"a": 1}, outputs=["model"])) == (False, "never built here")
    assert cache.facts("model") == {}


def test_clean_stale_removes_only_its_own_temporaries(tmp_path):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / STATE_DIR / "tmp").mkdir(parents=True)
    mine = [out / STATE_DIR / "tmp" / "abc-model", out / ".manifest.json.tmp-0123abcd",
            out / "report" / ".validation.json.tmp-89abcdef"]
    (out / "report").mkdir()
    for p in mine:
        p.write_text("x")
    theirs = [out / "notes" / ".draft.tmp-1", out / ".todo.old-2", out / "notes" / ".a.tmp-0123abcd",
              out / ".b.tmp-12"]
    for p in theirs:
        p.write_text("keep")
    clean_stale(out)
    assert not any(p.exists() for p in mine)
    assert all(p.read_text() == "keep" for p in theirs)


def test_build_into_a_users_folder_is_refused(tmp_path, mini):
    folder = tmp_path / "Documents"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "thesis.tex").write_text("years of work")
    (folder / ".notes.tmp-1").write_text("keep")
    before = snapshot(folder)
    refused(cli("build", mini, "-o", folder, "-q", "--target", "tflite-fp32"),
            match="not a mobiledeploy bundle.*--force")
    assert snapshot(folder) == before
    check_output_folder(folder, force=True)  # the opt-in is accepted
