"""`mobiledeploy bench` on a real tiny bundle: JSON keys, ordered statistics, reference rows,
Core ML skipped (never passed), exit 2 on a missing bundle. No timing thresholds."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """tflite-fp32 + tflite-int8 of the tiny network, built by the real CLI."""
    import shutil


    for mod in ("tensorflow", "ai_edge_litert", "torch"):
        pytest.importorskip(mod)
    from tests.conftest import EXAMPLE, tiny_data, write_definition

    root = tmp_path_factory.mktemp("bench")
    shutil.copytree(EXAMPLE, root / "shapes", ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    write_definition(root / "shapes", tiny_data(validation_images=10), "tiny.yaml")
    out = root / "bundle"
    r = run_cli("build", str(root / "shapes" / "tiny.yaml"), "-o", str(out), "--target", "tflite-fp32",
                "--target", "tflite-int8", "--no-app", "--no-validate", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_bench_json_keys_and_rows(tiny_bundle: Path, tmp_path: Path):
    out = tmp_path / "bench.json"
    r = run_cli("bench", str(tiny_bundle), "--json", str(out), "--runs", "20", "--threads", "1")
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    m = rep["machine"]
    assert {"cpu", "threads", "cores", "isa", "python", "os"} <= set(m)
    assert m["threads"] == 1 and m["cores"] >= 1 and m["python"] == platform.python_version()
    rows = {row["target"]: row for row in rep["results"]}
    assert {"reference-pytorch", "reference-keras", "tflite-fp32", "tflite-int8"} <= set(rows)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    for row in rep["results"]:
        assert {"target", "latency_ms", "bytes", "runs", "xnnpack_partitions", "peak_rss_mb",
                "status", "reason"} <= set(row)
        assert row["status"] == "ok", row
        lat = row["latency_ms"]
        assert lat["median"] > 0 and lat["p90"] >= lat["median"] >= lat["min"] > 0
        assert row["runs"] == 20 and row["threads"] == 1 and row["peak_rss_mb"] > 0
    for art in manifest["artifacts"]:
        row = rows[art["target"]]
        assert row["bytes"] == art["bytes"] == (tiny_bundle / art["path"]).stat().st_size
        assert row["xnnpack_partitions"] >= 1  # LiteRT's default delegate took part of the graph
    assert rep["model"]["macs"] > 0
    assert "tflite-int8" in r.stdout  # the rich table


@pytest.mark.slow
def test_coreml_rows_are_skipped_not_passed(tiny_bundle: Path, tmp_path: Path):
    """A Core ML artifact in the manifest is reported, never timed as if it ran (Linux)."""
    if platform.system() == "Darwin":
        pytest.skip("Core ML can run on macOS")
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    fake = bundle / "coreml" / "shapes_fp32.mlpackage"
    fake.mkdir(parents=True)
    from mobiledeploy.bundle import sha256_path

    manifest["artifacts"].append({"target": "coreml-fp32", "backend": "coreml", "precision": "fp32",
                                  "path": "coreml/shapes_fp32.mlpackage", "bytes": 1,
                                  "sha256": sha256_path(fake)})  # readers check every recorded hash
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "bench.json"
    r = run_cli("bench", str(bundle), "--json", str(out), "--runs", "5", "--no-references",
                "--target", "coreml-fp32", "--target", "tflite-fp32")
    assert r.returncode == 0, r.stderr
    rows = {row["target"]: row for row in json.loads(out.read_text())["results"]}
    assert set(rows) == {"coreml-fp32", "tflite-fp32"}
    assert rows["coreml-fp32"]["status"] == "skipped"
    assert "not run on this OS" in rows["coreml-fp32"]["reason"]
    assert rows["coreml-fp32"]["latency_ms"] is None
    assert rows["tflite-fp32"]["status"] == "ok"


@pytest.mark.slow
def test_no_amx_rows_say_denied(tiny_bundle: Path, tmp_path: Path):
    """--no-amx runs every engine under the filter and says so per row; by default LiteRT is granted
    AMX where the CPU has it."""
    from mobiledeploy import amx

    if not amx.supported():
        pytest.skip("x86-64 Linux only")
    reports, outputs = {}, {}
    for flag in ((), ("--no-amx",)):
        out = tmp_path / f"bench{len(flag)}.json"
        r = run_cli("bench", str(tiny_bundle), "--json", str(out), "--runs", "5", "--threads", "1",
                    "--no-references", *flag)
        assert r.returncode == 0, r.stderr
        reports[flag] = json.loads(out.read_text())
        outputs[flag] = " ".join(r.stdout.split())
    denied = reports[("--no-amx",)]
    assert denied["no_amx"] is True and reports[()]["no_amx"] is False
    for row in denied["results"]:
        assert row["status"] == "ok", row
        assert row["amx"] == ("denied" if amx.cpu_has_amx() else "n/a")
    for row in reports[()]["results"]:
        assert row["amx"] == ("granted" if amx.cpu_has_amx() else "n/a")
    # the table tells a user whose int8 ran on AMX how to measure without it
    assert ("--no-amx" in outputs[()]) == amx.cpu_has_amx()
    assert "--no-amx" not in outputs[("--no-amx",)]


@pytest.mark.parametrize("make", ["missing", "no_manifest"])
def test_missing_bundle_exits_2(tmp_path: Path, make: str):
    target = tmp_path / "nothing"
    if make == "no_manifest":
        target.mkdir()
    r = run_cli("bench", str(target))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(target) in lines[0]
    assert "Traceback" not in r.stderr
