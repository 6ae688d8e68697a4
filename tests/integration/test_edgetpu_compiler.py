"""Running ``edgetpu_compiler`` and reading what it leaves behind.

The real compiler is not installable here (Coral's own apt repository only), so the runner is
exercised with a stand-in executable that REPLAYS a real compilation: it copies the real
compiler's output file from shared/edgetpu-reference and prints a log in the compiler's format.
Parsing, the command line, log keeping and the compiled-file ground truth are all real.
"""

from __future__ import annotations

import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("flatbuffers")

from mobiledeploy.backends.edgetpu import analyze, compare, compiler_command, parse_log  # noqa: E402
from mobiledeploy.backends.edgetpu.compiler import ENV_VAR, find_compiler, run_compiler  # noqa: E402
from mobiledeploy.errors import UserError  # noqa: E402
from tests.conftest import edgetpu_reference_dir  # noqa: E402

STEM = "posenet_mobilenet_v1_075_353_481_quant_decoder"
LOG = """\
Edge TPU Compiler version 16.0.384591198
Input: {stem}.tflite
Output: {stem}_edgetpu.tflite

Operator                       Count      Status

CONV_2D                        18         Mapped to Edge TPU
DEPTHWISE_CONV_2D              13         Mapped to Edge TPU
CONCATENATION                  1          Mapped to Edge TPU
PosenetDecoderOp               1          Operation not supported
"""
STDOUT = """\
Edge TPU Compiler version 16.0.384591198

Model compiled successfully in 412 ms.

Input model: {stem}.tflite
Output model: {out}/{stem}_edgetpu.tflite
Number of Edge TPU subgraphs: 1
Total number of operations: 33
Operation log: {out}/{stem}_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU.
Number of operations that will run on Edge TPU: 32
Number of operations that will run on CPU: 1
"""


def _reference_dir() -> Path:
    return edgetpu_reference_dir()


def _stand_in(tmp_path: Path, ref: Path, fail: bool = False) -> Path:
    script = tmp_path / "edgetpu_compiler"
    body = f"""\
        #!{sys.executable}
        import shutil, sys
        from pathlib import Path
        args = sys.argv[1:]
        assert args[0] == "--show_operations" and args[1] == "--out_dir", args
        out, model = Path(args[2]), Path(args[3])
        if {fail!r}:
            print("Edge TPU Compiler version 16.0.384591198")
            print("ERROR: Attempting to use a delegate that only supports static-sized tensors")
            sys.exit(1)
        shutil.copy({str(ref / (STEM + "_edgetpu.tflite"))!r}, out / (model.stem + "_edgetpu.tflite"))
        (out / (model.stem + "_edgetpu.log")).write_text({LOG!r}.format(stem=model.stem))
        print({STDOUT!r}.format(stem=model.stem, out=out))
    """
    script.write_text(textwrap.dedent(body))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def ref() -> Path:
    return _reference_dir()


def test_parse_log_reads_counts_and_table():
    text = STDOUT.format(stem=STEM, out="o") + "\n" + LOG.format(stem=STEM)
    p = parse_log(text)
    assert p["compiler_version"] == "16.0.384591198"
    assert (p["ops_total"], p["edgetpu_ops"], p["cpu_ops_total"]) == (33, 32, 1)
    assert p["summary"][-1] == {"operator": "PosenetDecoderOp", "count": 1,
                                "status": "Operation not supported"}
    assert sum(r["count"] for r in p["summary"]) == p["ops_total"]


def test_parse_log_counts_from_table_alone():
    p = parse_log(LOG.format(stem=STEM))
    assert p["ops_total"] == 33 and p["edgetpu_ops"] == 32


def test_compiler_command_uses_env(tmp_path, ref, monkeypatch):
    exe = _stand_in(tmp_path, ref)
    monkeypatch.setenv(ENV_VAR, str(exe))
    assert find_compiler() == str(exe)
    cmd = compiler_command("m.tflite", "out")
    assert cmd == [str(exe), "--show_operations", "--out_dir", "out", "m.tflite"]


def test_env_pointing_nowhere_is_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(UserError, match=ENV_VAR):
        find_compiler()


def test_no_compiler_is_user_error(tmp_path, ref, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="edgetpu_compiler not found"):
        run_compiler(ref / f"{STEM}.tflite", tmp_path / "out")


def test_run_compiler_replayed(tmp_path, ref, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(_stand_in(tmp_path, ref)))
    model = tmp_path / f"{STEM}.tflite"
    shutil.copy(ref / f"{STEM}.tflite", model)
    out = tmp_path / "out"
    actual = run_compiler(model, out)
    assert actual["compiled"] is True and actual["compiler_version"] == "16.0.384591198"
    assert (actual["ops_total"], actual["edgetpu_ops"]) == (33, 32)
    assert [o["op"] for o in actual["cpu_ops"]] == ["PosenetDecoderOp"]  # from the compiled file
    log = Path(actual["log"]).read_text()
    assert "--show_operations" in log and "Operation not supported" in log
    assert compare(analyze(model), actual)["agree"]


def test_compare_reports_disagreement(ref):
    prediction = analyze(ref / f"{STEM}.tflite")
    actual = parse_log(LOG.format(stem=STEM).replace(
        "CONCATENATION                  1          Mapped to Edge TPU",
        "CONCATENATION                  1          Operation is otherwise supported, but not "
        "mapped due to some unspecified limitation"))
    actual["edgetpu_ops"] = 31
    diff = compare(prediction, actual)
    assert not diff["agree"]
    assert diff["cpu_ops"] == {"CONCATENATION": {"predicted": 0, "actual": 1}}
    assert diff["edgetpu_ops"] == {"predicted": 32, "actual": 31}


def test_run_compiler_failure_is_user_error(tmp_path, ref, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(_stand_in(tmp_path, ref, fail=True)))
    with pytest.raises(UserError, match="static-sized"):
        run_compiler(ref / f"{STEM}.tflite", tmp_path / "out")
    assert (tmp_path / "out" / "edgetpu_compiler.log").is_file()
