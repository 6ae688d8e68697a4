"""Shared fixtures: the shipped example, a CLI runner, tiny definitions written on the fly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shapes"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900):
    """Run the real CLI in a subprocess (exit codes and stderr as a user sees them)."""
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mobiledeploy", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped example folder (tests may edit it)."""
    dest = tmp_path / "shapes"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def write_definition(folder: Path, data: dict, name: str = "model.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def example_data() -> dict:
    return yaml.safe_load((EXAMPLE / "shapes.yaml").read_text())


TINY_ARCH = {
    "stem": {"out": 8, "kernel": 3, "stride": 2, "activation": "hswish"},
    "blocks": [[3, 16, 8, True, "hswish", 2], [3, 24, 16, False, "relu", 2], [3, 32, 16, True, "hswish", 1]],
    "last_stage": {"conv": 32, "activation": "hswish"},
    "head": {"hidden": 32, "activation": "hswish", "dropout": 0.0},
}


def tiny_data(validation_images: int = 20) -> dict:
    """The example's labels and images with a tiny custom network at 32x32 and seeded weights
    (fast conversions; near-constant outputs, so judge plumbing with it, not numerics)."""
    data = example_data()
    data["input"]["height"] = data["input"]["width"] = 32
    data["architecture"] = TINY_ARCH
    data.pop("weights", None)
    data["calibration"] = {"source": "calibration", "max_images": 20}
    data["validation"] = {"source": "validation", "max_images": validation_images}
    return data


@pytest.fixture
def tiny_definition(example_copy: Path) -> Path:
    return write_definition(example_copy, tiny_data(), "tiny.yaml")


def need_tool(*names: str, install: str) -> str:
    """The first of ``names`` on PATH; otherwise skip, or fail under CI (``CI=true``), where a
    missing tool must not turn a check into a silent skip."""
    import os

    for name in names:
        found = shutil.which(name)
        if found:
            return found
    why = f"{' / '.join(names)} not installed ({install})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why}: required in CI")
    pytest.skip(why)


def need_kotlin() -> None:
    """The app core's JVM toolchain (kotlinc, java, JUnit 4); otherwise skip, or fail under CI
    (``CI=true``), as ``need_tool``."""
    import os

    from mobiledeploy.app.jvm import ToolchainMissing, junit_classpath, toolchain

    try:
        toolchain()
        junit_classpath()
    except ToolchainMissing as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{exc}: required in CI")
        pytest.skip(str(exc))


def edgetpu_reference_dir() -> Path:
    """shared/edgetpu-reference (real Edge TPU compiler inputs and outputs), or skip."""
    import os

    # MOBILEDEPLOY_SHARED or the folder beside the repository; no machine-specific fallback
    for cand in (os.environ.get("MOBILEDEPLOY_SHARED"), ROOT.parent / "shared"):
        if cand and (Path(cand) / "edgetpu-reference").is_dir():
            return Path(cand) / "edgetpu-reference"
    pytest.skip("shared/edgetpu-reference not found beside the repository")


def find_mediapipe(required: bool = True) -> Path | None:
    """The MediaPipe venv's python. CI installs it (.ci/run): there a missing one fails; elsewhere it
    skips the test (``required``) or is None."""
    import os

    from mobiledeploy.backends.tflite.mediapipe import mediapipe_python

    py = mediapipe_python()
    if py is None or not Path(py).is_file():
        msg = "MediaPipe venv not found: run `make mediapipe-venv` or set MOBILEDEPLOY_MEDIAPIPE_PYTHON"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        if required:
            pytest.skip(msg)
        return None
    return Path(py)
