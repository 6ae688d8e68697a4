"""Hardware-aware lowering on the trained demo: the lowered int8 TFLite graph is one XNNPACK
partition with no HARD_SWISH, the stock converter's graph is split at every HARD_SWISH, and the
lowered graph is no less accurate on the held-out images (issue 10)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import example_data, run_cli, write_definition

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

IMAGES = 100


def _build(example_copy, tmp_path, lowering: str) -> tuple[dict, dict]:
    data = example_data()
    data["validation"] = {"source": "validation", "max_images": IMAGES}
    data["target_options"] = {"tflite-int8": {"lowering": lowering}}
    out = tmp_path / lowering
    r = run_cli("build", str(write_definition(example_copy, data, f"{lowering}.yaml")), "-o", str(out),
                "--target", "tflite-int8", "--no-app", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report" / "validation.json").read_text())
    row = next(x for x in report["results"] if x["target"] == "tflite-int8")
    manifest = json.loads((out / "manifest.json").read_text())
    ref = next(x for x in report["results"] if x["target"] == f"reference-{report['reference']}")
    return row | {"reference_accuracy": ref["metrics"]["top1_accuracy"]}, manifest["artifacts"][0] | {"root": out}


@pytest.mark.slow
def test_lowered_int8_is_one_partition_and_as_accurate_as_stock(example_copy, tmp_path):
    from mobiledeploy.backends.tflite.reader import read_tflite, xnnpack_partitions

    rows, files = {}, {}
    for lowering in ("hswish", "none"):
        rows[lowering], art = _build(example_copy, tmp_path, lowering)
        files[lowering] = art["root"] / art["path"]
    ops = {k: set(read_tflite(p).op_counts()) for k, p in files.items()}
    parts = {k: xnnpack_partitions(p) for k, p in files.items()}

    assert "HARD_SWISH" not in ops["hswish"] and {"ADD", "MUL"} <= ops["hswish"]
    # uint8 I/O (the default, for MediaPipe and camera frames): the uint8<->int8 QUANTIZE adapters at
    # the graph's two ends are LiteRT's own ops; everything between them is one XNNPACK partition
    n_ops = {k: sum(read_tflite(p).op_counts().values()) for k, p in files.items()}
    io = [o for o in parts["hswish"]["undelegated_ops"] if o["op"] == "QUANTIZE"]
    assert parts["hswish"]["partitions"] == 1 and parts["hswish"]["undelegated_ops"] == io
    assert {o["index"] for o in io} <= {0, n_ops["hswish"] - 1}
    assert "HARD_SWISH" in ops["none"]
    assert parts["none"]["partitions"] > 1
    assert {o["op"] for o in parts["none"]["undelegated_ops"]} - {"QUANTIZE"} == {"HARD_SWISH"}

    lowered, stock = rows["hswish"], rows["none"]
    assert lowered["status"] == stock["status"] == "pass"
    ref = lowered["reference_accuracy"]
    assert ref >= 0.9  # trained weights: the comparison means something
    # within 2 points of the float reference, and no worse than the stock graph (one image of slack)
    assert lowered["metrics"]["top1_accuracy"] >= ref - 0.02
    assert lowered["metrics"]["top1_accuracy"] >= stock["metrics"]["top1_accuracy"] - 1 / IMAGES
    assert lowered["metrics"]["snr_db"] >= 20.0
