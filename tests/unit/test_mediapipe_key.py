"""The validate step's key follows the MediaPipe environment validation would use."""

from __future__ import annotations

import pytest

from mobiledeploy.backends.tflite.mediapipe import ENV, mediapipe_version


def test_mediapipe_version_is_read_from_the_environment_it_would_run(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "none")
    assert mediapipe_version() == "none"
    venv = tmp_path / "mp"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "lib" / "python3.11" / "site-packages" / "mediapipe-1.2.2.dist-info").mkdir(parents=True)
    monkeypatch.setenv(ENV, str(venv / "bin" / "python"))
    assert mediapipe_version() == "1.2.2"
    (venv / "lib" / "python3.11" / "site-packages" / "mediapipe-1.2.2.dist-info").rename(
        venv / "lib" / "python3.11" / "site-packages" / "mediapipe-1.3.0.dist-info")
    assert mediapipe_version() == "1.3.0"  # an upgrade changes the key: validation reruns


def test_the_validate_step_keys_on_it(monkeypatch):
    pytest.importorskip("ai_edge_litert")
    import json

    from mobiledeploy.pipeline import keys

    monkeypatch.setenv(ENV, "none")
    assert json.loads(keys.VALIDATE.plan("image-classification", ["tflite"])["clients"]) == {"mediapipe": "none"}
    # only backends whose artifacts a client loads (Backend.client_toolchain) key on it
    assert json.loads(keys.VALIDATE.plan("image-classification", ["coreml"])["clients"]) == {}
