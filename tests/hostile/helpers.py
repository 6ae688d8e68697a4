"""Hostile-input helpers: a small definition folder, the CLI in-process, and the checks every
case makes: the exit code, exactly one error line (bounded, no traceback), nothing written
outside what the command may write, nothing of the user's removed."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import EXAMPLE, TINY_ARCH

MAX_LINE = 700  # characters of the one error line (the CLI clips at 600 plus its label)


def mini_data() -> dict:
    """A tiny network over three of the example's labels' images (fast to check and to build)."""
    return {
        "name": "mini",
        "input": {"height": 32, "width": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "labels": "labels.txt",
        "architecture": copy.deepcopy(TINY_ARCH),
        "calibration": {"source": "calibration"},
        "validation": {"source": "validation"},
    }


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """tmp_path/defn: labels.txt (the example's), 3 classes x 2 images for calibration and
    validation, and mini.yaml. Returns the definition file."""
    return make_mini_folder(tmp_path / "defn")


def write(folder: Path, data: dict, name: str = "mini.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str):
    """The real Click command in-process (exit code, stdout and stderr apart)."""
    from mobiledeploy.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its kind, size and mtime (symlinks not followed)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def refused(result, *, code: int = 2, match: str | None = None) -> str:
    """The command failed with ``code`` and one bounded error line; returns the line."""
    err = result.stderr.strip()
    lines = err.splitlines()
    assert result.exit_code == code, f"exit {result.exit_code}, want {code}:\n{result.output[-2000:]}"
    assert len(lines) == 1, f"want one line, got {len(lines)}:\n{err[:3000]}"
    assert lines[0].startswith("error: "), lines[0][:300]
    assert len(lines[0]) <= MAX_LINE, f"{len(lines[0])} characters: {lines[0][:200]}…"
    assert "Traceback" not in result.output
    if match:
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


def build_refused(definition: Path, tmp_path: Path, *, match: str | None = None,
                  extra: tuple = ()) -> str:
    """``build`` of a bad definition: exit 2, one line, nothing written anywhere under tmp_path."""
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    line = refused(cli("build", definition, "-o", out, "-q", *extra), match=match)
    assert not out.exists()
    assert snapshot(tmp_path) == before
    return line


def make_mini_folder(root: Path) -> Path:
    """The ``mini`` folder (see the fixture) under ``root``; returns the definition file."""
    root.mkdir(parents=True)
    shutil.copy(EXAMPLE / "labels.txt", root / "labels.txt")
    for split in ("calibration", "validation"):
        for cls in sorted(p.name for p in (EXAMPLE / split).iterdir() if p.is_dir())[:3]:
            (root / split / cls).mkdir(parents=True)
            for img in sorted((EXAMPLE / split / cls).iterdir())[:2]:
                shutil.copy(img, root / split / cls / img.name)
    return write(root, mini_data())


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory) -> Path:
    """One real bundle of the mini definition (tflite-fp32, validated, with its app), built once;
    tests take a copy (``bundle_copy``) before changing anything."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("torch")
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("hostile-bundle")
    definition = make_mini_folder(root / "defn")
    out = root / "bundle"
    r = run_cli("build", str(definition), "-o", str(out), "--target", "tflite-fp32", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def bundle_copy(built: Path, dest: Path) -> Path:
    shutil.copytree(built, dest, symlinks=True)
    return dest
