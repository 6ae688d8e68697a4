"""The user's machine fighting back: read-only folders, a full disk, a file where a folder should
be. Each is exit 2 with one line naming the path and the fix, never an internal error.

Read-only and full filesystems are real mounts in a private mount namespace (``unshare``), so
nothing outside the test changes; the cases skip where namespaces are not allowed.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.hostile.helpers import MAX_LINE, cli, refused, snapshot


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                       capture_output=True)
    return r.returncode == 0


needs_ns = pytest.mark.skipif(not _namespaces_work(), reason="no mount namespaces here (unshare -rm)")


def in_mount(mount: Path, options: str, *args: str, after: str = "") -> subprocess.CompletedProcess:
    """Run the CLI with a fresh tmpfs (``options``) on ``mount``, in a private mount namespace;
    ``after`` (shell) runs in the same namespace and then stdout ends with RC=<the CLI's code>."""
    mount.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "mobiledeploy", *args])
    script = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(mount))} && {cmd}"
    if after:
        script += f"; echo RC=$? {after}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def one_line(r: subprocess.CompletedProcess, match: str) -> str:
    lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("warning: ")]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= MAX_LINE, r.stderr[-2000:]
    assert match in lines[0], lines[0]
    return lines[0]


@needs_ns
def test_disk_full_during_init(tmp_path):
    r = in_mount(tmp_path / "small", "size=64k", "init", tmp_path / "small" / "demo")
    one_line(r, "No space left on device")


@needs_ns
def test_read_only_output_for_init(tmp_path):
    r = in_mount(tmp_path / "ro", "ro,size=64k", "init", tmp_path / "ro" / "demo")
    one_line(r, "Read-only file system")


@needs_ns
def test_read_only_output_for_build(tmp_path):
    from tests.conftest import EXAMPLE
    from tests.hostile.helpers import mini_data, write

    root = tmp_path / "defn"
    root.mkdir()
    shutil.copy(EXAMPLE / "labels.txt", root / "labels.txt")
    for split in ("calibration", "validation"):
        src = sorted((EXAMPLE / split / "circle").iterdir())[:2]
        (root / split / "circle").mkdir(parents=True)
        for p in src:
            shutil.copy(p, root / split / "circle" / p.name)
    definition = write(root, mini_data())
    before = snapshot(tmp_path)
    r = in_mount(tmp_path / "ro", "ro,size=64k", "build", definition, "-o", tmp_path / "ro" / "out",
                 "--target", "tflite-fp32", "-q")
    one_line(r, "Read-only file system")
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("ro")} == \
           {k: v for k, v in before.items() if not k.startswith("ro")}


def test_init_below_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    refused(cli("init", f / "demo"), match="Not a directory")
    assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_build_output_below_a_file(tmp_path):
    from tests.conftest import EXAMPLE

    f = tmp_path / "notes.txt"
    f.write_text("mine")
    refused(cli("build", EXAMPLE / "shapes.yaml", "-o", f / "out", "-q", "--target", "tflite-fp32"))
    assert f.read_text() == "mine"


def test_ci_script_fails_on_a_failed_apt_install():
    text = (ROOT / ".ci" / "run").read_text()
    install = next(line for line in text.splitlines() if "apt-get install" in line)
    assert "||" not in install and not install.rstrip().endswith("\\"), install
    assert "set -euo pipefail" in text and "CI=" in text


def test_missing_tool_fails_under_ci(monkeypatch):
    from tests.conftest import need_tool

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        need_tool("no-such-tool-mobiledeploy", install="apt-get install nothing")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        need_tool("no-such-tool-mobiledeploy", install="apt-get install nothing")


@needs_ns
def test_disk_full_during_build_is_exit_2_and_leaves_no_partial_weights(mini, tmp_path):
    # 5 pages: the lock and the resolved files fit, the 31 kB seeded weights do not
    mount = tmp_path / "full"
    r = in_mount(mount, "size=20k", "build", mini, "-o", mount / "out", "--target", "tflite-fp32", "-q",
                 "--no-app", "--no-validate", after=f"; echo LEFT; find {mount} -name '*.safetensors*'")
    out, _, left = r.stdout.partition("LEFT\n")
    r.returncode = int(out.strip().rsplit("RC=", 1)[1])
    one_line(r, "No space left on device")
    assert left.strip() == "", left  # no partial weights file in the full filesystem
