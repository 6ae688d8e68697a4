"""The sweep's plan and store, without running a step: variants from axes, keys by content (what
shares a step, what does not), and the store's round trip through a folder and through fsspec."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import tiny_data, write_definition


def _sweep(folder, **over):
    write_definition(folder, tiny_data(), "tiny.yaml")
    spec = {"base": "tiny.yaml", "targets": ["tflite-fp32", "tflite-int8"],
            "axes": {"width": [0.5, 1.0], "lowering": ["hswish", "none"]},
            "train": {"images": 20, "epochs": 1, "batch": 10}, **over}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "sweep.yaml"


def test_axes_make_variants_and_keys_follow_content(example_copy, tmp_path):
    from mobiledeploy.sweep.run import _plan
    from mobiledeploy.sweep.spec import load_sweep
    from mobiledeploy.sweep.store import Store

    sweep = load_sweep(_sweep(example_copy))
    assert [v.label for v in sweep.variants] == ["width=0.5 lowering=hswish", "width=0.5 lowering=none",
                                                 "width=1.0 lowering=hswish", "width=1.0 lowering=none"]
    v2 = sweep.variants[1].data
    assert v2["architecture"]["width_multiplier"] == 0.5
    assert v2["target_options"] == {"tflite-int8": {"lowering": "none"}}  # int8 targets only
    plan = _plan(sweep, Store(tmp_path / "store"))
    cells = {(c["variant"], c["target"]): c for c in plan.cells}
    # lowering does not shape fp32 nor the training: those steps are shared
    assert cells["v01", "tflite-fp32"]["build"] == cells["v02", "tflite-fp32"]["build"]
    assert cells["v01", "tflite-int8"]["build"] != cells["v02", "tflite-int8"]["build"]
    assert cells["v01", "tflite-int8"]["train"] == cells["v02", "tflite-int8"]["train"]
    assert cells["v01", "tflite-int8"]["train"] != cells["v03", "tflite-int8"]["train"]
    assert len(plan.train) == 2 and len(plan.build) == 6
    # a bench setting changes the bench keys only; a validation image changes builds and training
    plan_b = _plan(load_sweep(_sweep(example_copy, bench={"runs": 7})), Store(tmp_path / "store"))
    assert [c["build"] for c in plan_b.cells] == [c["build"] for c in plan.cells]
    assert not {c["bench"] for c in plan_b.cells} & {c["bench"] for c in plan.cells}
    img = next(p for p in sorted((example_copy / "validation").rglob("*")) if p.is_file())
    img.write_bytes(img.read_bytes() + b"\0")
    plan_c = _plan(load_sweep(_sweep(example_copy)), Store(tmp_path / "store"))
    assert not {c["build"] for c in plan_c.cells} & {c["build"] for c in plan.cells}
    assert not set(plan_c.train) & set(plan.train)


def test_linked_axis_and_shortcuts(example_copy):
    from mobiledeploy.sweep.spec import load_sweep

    path = _sweep(example_copy, axes={"resolution,seed": [[32, 1], [40, 2]],
                                      "target_options.tflite-int8.io_dtype": ["int8", "uint8"]})
    sweep = load_sweep(path)
    assert len(sweep.variants) == 4
    d = sweep.variants[3].definition
    assert (d.input.height, d.input.width, d.seed) == (40, 40, 2)
    assert d.target_options["tflite-int8"]["io_dtype"] == "uint8"


@pytest.mark.parametrize("url", [None, "memory://sweep-test"])
def test_store_round_trip(tmp_path, url):
    from mobiledeploy.sweep.store import Store

    store = Store(url or tmp_path / "store")
    assert store.record("ab" * 32) is None
    out = tmp_path / "out"
    (out / "tflite").mkdir(parents=True)
    (out / "tflite" / "m.tflite").write_bytes(b"model")
    (out / "manifest.json").write_text("{}")
    store.commit("ab" * 32, {"kind": "build", "n": 1}, out)
    assert store.record("ab" * 32) == {"kind": "build", "n": 1}
    got = store.fetch("ab" * 32, tmp_path / "got", members="tflite/m.tflite")
    assert (got / "tflite" / "m.tflite").read_bytes() == b"model" and not (got / "manifest.json").exists()
    store.lease("k", {"pid": 1})
    assert store.exists("running/k.json")
    store.release("k")
    assert not store.exists("running/k.json")


def test_axes_that_touch_different_fields_do_not_overlap():
    from mobiledeploy.sweep.spec import _no_overlap

    # preset then minimalistic is the designed pair; lowering sets target_options.*.lowering only
    _no_overlap([(["preset"], [1]), (["minimalistic"], [1]), (["lowering"], [1]),
                 (["target_options.tflite-int8.io_dtype"], [1]), (["resolution", "seed"], [[1, 2]]),
                 (["architecture.width_multiplier"], [1])], "sweep.yaml")
