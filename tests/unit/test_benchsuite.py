"""make bench's derived figures: the committed results.md is what results.json renders to, and
int8/fp32 ratios pair each int8 graph with the right fp32 row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mobiledeploy import benchsuite

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_committed_results_md_renders_from_results_json(tmp_path):
    if not (BENCH / "results.json").is_file():
        pytest.skip("no committed bench results")
    shutil.copy(BENCH / "results.json", tmp_path / "results.json")
    benchsuite.rerender(tmp_path)
    assert (tmp_path / "results.md").read_text() == (BENCH / "results.md").read_text()


def _rep(**lat):
    return {"results": [{"target": t, "latency_ms": {"median": ms}, "xnnpack_partitions": 1, "amx": "granted"}
                        for t, ms in lat.items()]}


def test_int8_ratios_pair_stock_with_the_lowered_bundles_fp32():
    matrix = {
        "lowered": {"AMX allowed": _rep(**{"tflite-fp32": 1.0, "tflite-int8": 0.5,
                                           "executorch-xnnpack": 2.0, "executorch-xnnpack-int8": 1.8})},
        "stock": {"AMX allowed": _rep(**{"tflite-int8": 4.0, "executorch-xnnpack-int8": 2.2})},
        "relu_control": {"AMX allowed": _rep(**{"tflite-fp32": 0.8, "tflite-int8": 0.4,
                                                "executorch-xnnpack": 1.6, "executorch-xnnpack-int8": 1.2})},
    }
    rows = {(r["runtime"], r["variant"]): r for r in benchsuite.int8_ratios(matrix)}
    assert len(rows) == 6
    assert rows["tflite", "lowered"]["ratio"] == 0.5 and rows["tflite", "lowered"]["meets_goal"]
    assert rows["tflite", "stock"]["fp32_ms"] == 1.0 and rows["tflite", "stock"]["ratio"] == 4.0
    assert rows["executorch", "stock"]["ratio"] == 1.1 and not rows["executorch", "stock"]["meets_goal"]
    assert rows["tflite", "relu_control"]["fp32_ms"] == 0.8 and rows["tflite", "relu_control"]["ratio"] == 0.5
    assert rows["executorch", "lowered"]["ratio"] == 0.9 and not rows["executorch", "lowered"]["meets_goal"]


def test_the_suites_definitions_written_elsewhere_load(tmp_path):
    """The suite writes definitions into a temporary folder that name the shipped example's labels
    and images (``make bench`` stopped at the first 224 px model when paths were confined)."""
    import yaml

    from mobiledeploy.definition import load_definition

    data = yaml.safe_load(benchsuite.DEMO.read_text())
    data.pop("weights", None)
    benchsuite._absolute_sources(data)
    path = tmp_path / "elsewhere.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    d = load_definition(path)  # checks every named file, confined unless allowed
    assert len(d.labels_list()) == 10


def test_the_slowest_conversion_is_blamed_only_on_the_critical_path():
    steps = [{"step": "convert:slow", "status": "ran", "seconds": 20.0, "start": 0.0, "end": 20.0, "worker": 1},
             {"step": "convert:a", "status": "ran", "seconds": 15.0, "start": 0.0, "end": 15.0, "worker": 2},
             {"step": "convert:b", "status": "ran", "seconds": 10.0, "start": 15.0, "end": 25.0, "worker": 2}]
    assert "not on the critical path" in benchsuite._slowest_fix("slow", {"steps": steps})
    assert "a + b" in benchsuite._slowest_fix("slow", {"steps": steps})
    steps[0].update(seconds=30.0, end=30.0)
    assert "is on the critical path" in benchsuite._slowest_fix("slow", {"steps": steps})
