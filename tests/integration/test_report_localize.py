"""Localisation on real converted artifacts of a tiny network: a layer broken on purpose is found."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture
def tiny(tiny_definition):
    from mobiledeploy.architectures.reference import build_torch_reference, canonical_state
    from mobiledeploy.definition import load_definition
    from mobiledeploy.images import load_batch

    d = load_definition(tiny_definition)
    with pytest.warns(UserWarning, match="seeded"):
        state = canonical_state(d)
    return d, state, build_torch_reference(d, state), load_batch(d, "validation", limit=6)


def _broken(state):
    """The depthwise weights of the second block negated: everything after it differs."""
    s = dict(state)
    s["blocks.1.dw.conv.weight"] = -s["blocks.1.dw.conv.weight"]
    return s


def _art(target: str, hswish: str = "fused") -> dict:
    """A manifest artifact record for ``target`` as the build writes it (resolved target, graph)."""
    from mobiledeploy.targets import get_target

    return {**get_target(target).resolve().record(), "graph": {"hswish": hswish}}


def _tflite(d, state, tmp_path, precision="fp32", calibration=None):
    from mobiledeploy.architectures.reference import build_keras_reference
    from mobiledeploy.backends.tflite.backend import convert_keras_to_tflite

    model = build_keras_reference(d, state, batch_size=1,
                                  hswish="lowered" if precision == "int8" else "fused")
    path = tmp_path / f"m_{precision}.tflite"
    path.write_bytes(convert_keras_to_tflite(model, precision, calibration=calibration))
    return path


@pytest.mark.slow
def test_tflite_fp32_first_divergent_layer(tiny, tmp_path):
    pytest.importorskip("tensorflow")
    from mobiledeploy.validate.localize import localize_artifact, module_points

    d, state, model, batch = tiny
    art = _art("tflite-fp32")
    good = localize_artifact(_tflite(d, state, tmp_path), art, {"max_abs": 1e-4}, d, model, batch)
    assert good["first_divergent_layer"] is None, good
    # every hooked module found its TFLite tensor by name, and agrees to float32 precision
    assert good["matched_layers"] == len(module_points(model))
    assert min(x["snr_db"] for x in good["layers"]) > 60
    (tmp_path / "bad").mkdir()
    bad = localize_artifact(_tflite(d, _broken(state), tmp_path / "bad"), art, {"max_abs": 1e-4}, d,
                            model, batch)
    assert bad["first_divergent_layer"] == "blocks.1.dw", {k: v for k, v in bad.items() if k != "layers"}
    snr = {x["layer"]: x["snr_db"] for x in bad["layers"]}
    assert snr["blocks.1.expand"] > 60 > snr["blocks.1.dw"]


@pytest.mark.slow
def test_tflite_int8_lowered_graph_is_matched_with_its_6x_scales(tiny, tmp_path):
    pytest.importorskip("tensorflow")
    from mobiledeploy.validate.localize import localize_artifact, module_points

    d, state, model, batch = tiny
    calib = batch.nhwc()
    res = localize_artifact(_tflite(d, state, tmp_path, "int8", calib), _art("tflite-int8", "lowered"),
                            {"min_snr_db": 12.0}, d, model, batch)
    assert res["matched_layers"] == len(module_points(model))
    # h-swish outputs of the lowered graph are 6x the reference; matched as such, and close
    assert any(x.get("scale") == 6.0 for x in res["layers"])
    assert res["layers"][0]["layer"] == "stem" and res["layers"][0]["snr_db"] > 20


@pytest.mark.slow
def test_coreml_intermediates_without_names(tiny, tmp_path):
    pytest.importorskip("coremltools")
    from mobiledeploy.architectures.reference import build_torch_reference
    from mobiledeploy.backends.coreml.backend import convert_torch_to_mlpackage
    from mobiledeploy.validate.localize import localize_artifact

    d, state, model, batch = tiny
    i = d.input
    path = tmp_path / "bad.mlpackage"
    convert_torch_to_mlpackage(build_torch_reference(d, _broken(state)), path, height=i.height,
                               width=i.width, color_order=i.color_order.value, pixel_range=i.pixel_range,
                               mean=i.mean, std=i.std, labels=d.labels_list(), precision="fp32")
    res = localize_artifact(path, _art("coreml-fp32"), {"max_abs": 1e-4}, d,
                            model, batch)
    assert "milexec" in res["executor"]
    assert res["first_divergent_layer"] == "blocks.1.dw", {k: v for k, v in res.items() if k != "layers"}
    snr = {x["layer"]: x["snr_db"] for x in res["layers"]}
    assert snr["stem"] > 60 and np.isfinite(snr["stem"])
