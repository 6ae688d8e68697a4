"""The sweep's plan and store, without running a step: variants from axes, keys by content (what
shares a step, what does not), and the store's round trip through a folder and through fsspec."""

from __future__ import annotations

from pathlib import Path

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
    rec = store.record("ab" * 32)
    assert {k: v for k, v in rec.items() if k != "archive"} == {"kind": "build", "n": 1}
    assert rec["archive"].startswith("steps/ab/" + "ab" * 32 + ".") and store.exists(rec["archive"])
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


def _task_sweep(tmp_path, example: str, name: str):
    """A copy of a shipped example with a one-variant sweep of it (tflite-fp32)."""
    import shutil

    from tests.conftest import ROOT

    dest = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, dest, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "sweep.yaml").write_text(yaml.safe_dump({"base": f"{name}.yaml", "targets": ["tflite-fp32"],
                                                     "axes": {"seed": [1]}, "samples": 5}))
    return dest


def _module(*names: str) -> str:
    """The first of ``names`` that exists (a module a later move renames: list both names)."""
    import importlib.util

    for n in names:
        try:
            if importlib.util.find_spec(n) is not None:
                return n
        except ModuleNotFoundError:  # a parent that is a module, not a package
            continue
    raise AssertionError(f"none of {names} exists")


def _edited(monkeypatch, module: str):
    """Make the source digest see ``module``'s file as edited (no file is touched)."""
    import importlib
    import inspect

    import mobiledeploy.digests as digests
    import mobiledeploy.pipeline.sources as sources

    path = Path(inspect.getsourcefile(importlib.import_module(module))).resolve()
    real = digests.file_sha

    def fake(p, *a, **k):
        sha = real(p, *a, **k)
        return ("0" * 64) if Path(p).resolve() == path else sha

    monkeypatch.setattr(digests, "file_sha", fake)
    for fn in vars(sources).values():  # memoised digests and import closures
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()


@pytest.mark.parametrize("example,name,modules", [
    ("shapes", "shapes", [("mobiledeploy.tasks.classification.task",)]),
    ("shapes_seg", "shapes_seg", [("mobiledeploy.tasks.segmentation.task",),
                                  ("mobiledeploy.tasks.segmentation.metrics",)]),
    ("shapes_det", "shapes_det", [("mobiledeploy.tasks.detection.task",),
                                  ("mobiledeploy.tasks.detection.metrics",)]),
])
def test_build_key_holds_the_task_modules_and_what_the_build_runs(tmp_path, monkeypatch, example, name, modules):
    """The task's module is loaded by name (no import walk reaches it); it and its metrics set
    limits, metrics and metadata bytes: an edit to any of them, or to the backend, the converter
    worker or the MediaPipe runner, must give the sweep's build step a new key (else a sweep serves
    old artifacts and verdicts). The bench key follows the build key."""
    from mobiledeploy.sweep.run import _plan
    from mobiledeploy.sweep.spec import load_sweep
    from mobiledeploy.sweep.store import Store

    folder = _task_sweep(tmp_path, example, name)
    store = Store(tmp_path / "store")
    base = _plan(load_sweep(folder / "sweep.yaml"), store).cells[0]
    edits = [*modules, ("mobiledeploy.backends.tflite.backend",), ("mobiledeploy.pipeline.worker",),
             ("mobiledeploy.backends.tflite.mediapipe_runner",)]
    for names in edits:
        with monkeypatch.context() as m:
            _edited(m, _module(*names))
            cell = _plan(load_sweep(folder / "sweep.yaml"), store).cells[0]
        assert cell["build"] != base["build"] and cell["bench"] != base["bench"], names


@pytest.mark.parametrize("example,name,truth", [("shapes_seg", "shapes_seg", "validation/masks"),
                                                ("shapes_det", "shapes_det", "validation/boxes.json")])
def test_the_store_packs_masks_and_boxes_and_they_are_in_the_keys(tmp_path, example, name, truth):
    """A segmentation sweep's workers need the masks, a detection sweep's the boxes: both are
    packed with the images, and an edited mask or box gives new build keys."""
    import tarfile

    from mobiledeploy.sweep.run import _plan
    from mobiledeploy.sweep.spec import load_sweep
    from mobiledeploy.sweep.store import Store

    folder = _task_sweep(tmp_path, example, name)
    store = Store(tmp_path / "store")
    plan = _plan(load_sweep(folder / "sweep.yaml"), store)
    req = next(iter(plan.build.values()))
    with tarfile.open(tmp_path / "store" / "inputs" / f"{req['pack']}.tar") as tar:
        names = tar.getnames()
    assert any(n == truth or n.startswith(truth + "/") for n in names), names[:20]
    assert any(n.startswith("calibration/") and ("masks" in n or "boxes" in n) for n in names)
    f = folder / truth
    if f.is_dir():
        f = next(p for p in sorted(f.rglob("*")) if p.is_file())
        from PIL import Image

        im = Image.open(f)
        px = im.load()
        px[0, 0] = (px[0, 0] + 1) % 2  # one pixel's class
        im.save(f)
    else:
        f.write_text(f.read_text().replace("0.525,", "0.526,", 1))  # one box edge
    again = _plan(load_sweep(folder / "sweep.yaml"), store)
    assert next(iter(again.build)) != next(iter(plan.build))


def test_store_urls_are_shown_without_credentials():
    """A URL with credentials in it (s3://KEY:SECRET@bucket) is never written as given: sweep.json,
    the report and the progress lines show the store by ``describe()``."""
    from mobiledeploy.sweep.store import redact

    assert redact("s3://AKIAEXAMPLE:s3cr3t@bucket/prefix") == "s3://***@bucket/prefix"
    assert redact("s3://bucket/prefix") == "s3://bucket/prefix"
    assert redact("/home/me/cache") == "/home/me/cache"


def test_an_unknown_protocol_is_a_store_error_and_a_folder_needs_no_probe(tmp_path):
    from mobiledeploy.sweep.store import Store, StoreError

    with pytest.raises(StoreError, match=r"--cache nosuchproto://x: .*give a folder or an fsspec URL"):
        Store("nosuchproto://x")
    Store(tmp_path / "c").check()  # a local folder: no probe, nothing created
    assert not (tmp_path / "c").exists()
