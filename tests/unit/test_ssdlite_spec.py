"""The detection architecture as data: SSDLite head resolution, anchors, counts, definition."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import yaml

from mobiledeploy.architectures.reference import expected_shapes
from mobiledeploy.architectures.spec import PRESETS, preset
from mobiledeploy.architectures.stats import stage_table, totals
from mobiledeploy.definition import load_definition
from mobiledeploy.errors import DefinitionError, UserError
from mobiledeploy.tasks.detection.ssdlite import DetectionOptions, anchors, decoding_spec
from tests.conftest import ROOT

DET_EXAMPLE = ROOT / "examples" / "shapes_det"
TORCHVISION_LIKE = DetectionOptions(reduce_boxes_in_lowest_layer=False)  # 6 boxes on every map


def test_torchvision_ssdlite320_large_parameter_count_and_macs_are_reproduced():
    # torchvision SSDLite320_MobileNet_V3_Large_Weights: num_params 3,440,060, 0.58 GFLOPS (MACs);
    # 91 classes there include background, so 90 object classes here
    macs, params = totals(preset("mobilenet_v3_large", 1.0, 90, 320, detection=TORCHVISION_LIKE))
    assert params == 3_440_060
    assert round(macs / 1e9, 2) == 0.58


def test_large_head_taps_the_paper_layers():
    spec = preset("mobilenet_v3_large", 1.0, 90, 320, detection=DetectionOptions())
    det = spec.detection
    # block 12 (5x5, exp 672) strides 16 -> 32: feature 0 is its expansion; reduced tail: 960 -> 480
    assert det.tap_block == 12 and spec.blocks[12].stride == 2
    assert det.feature_channels == (672, 480, 512, 256, 256, 128)
    assert det.feature_sizes == ((20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1))
    assert det.anchors_per_location == (3, 6, 6, 6, 6, 6)
    assert det.num_anchors == 400 * 3 + (100 + 25 + 9 + 4 + 1) * 6 == 2034
    assert spec.detection is not None


def test_default_extras_stop_at_one_pixel_and_explicit_ones_are_kept():
    small = preset("mobilenet_v3_small", 1.0, 10, 160, detection=DetectionOptions())
    assert small.detection.feature_sizes == ((10, 10), (5, 5), (3, 3), (2, 2), (1, 1))
    assert small.detection.extras == (512, 256, 256)  # a fourth would see 1x1 again
    two = preset("mobilenet_v3_small", 0.5, 10, 160, detection=DetectionOptions(extra_layers=(256, 64)))
    assert two.detection.extras == (128, 32)  # width-scaled (floor, as TF / torchvision)
    assert two.detection.feature_sizes[-1] == (2, 2)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_takes_the_head(name):
    spec = preset(name, 0.75, 7, 128, detection=DetectionOptions())
    shapes = expected_shapes(spec)
    det = spec.detection
    assert shapes["head.cls.0.pred.weight"] == (det.anchors_per_location[0] * 8, det.feature_channels[0], 1, 1)
    assert shapes["head.box.1.pred.weight"] == (det.anchors_per_location[1] * 4, spec.last_conv, 1, 1)
    assert shapes["head.cls.0.dw.conv.weight"] == (det.feature_channels[0], 1, 3, 3)
    assert not any(k.startswith("head.classifier") for k in shapes)
    assert anchors(spec).shape == (det.num_anchors, 4)
    rows = stage_table(spec)
    assert sum(r.params for r in rows) == sum(math.prod(s) for k, s in shapes.items()
                                              if not k.endswith(("running_mean", "running_var")))


def test_anchors_are_the_ssd_boxes_in_output_order():
    spec = preset("mobilenet_v3_small", 1.0, 10, 160, detection=DetectionOptions())
    a = anchors(spec).astype(np.float64)
    r2 = math.sqrt(2)
    # layer 0 (10x10, reduced): (0.1, ar 1), (0.2, ar 2), (0.2, ar 1/2) at the cell (0, 0) centre 0.05
    np.testing.assert_allclose(a[0], [0.05, 0.05, 0.1, 0.1], atol=1e-7)
    np.testing.assert_allclose(a[1], [0.05, 0.05, 0.2 / r2, 0.2 * r2], atol=1e-7)
    np.testing.assert_allclose(a[2], [0.05, 0.05, 0.2 * r2, 0.2 / r2], atol=1e-7)
    np.testing.assert_allclose(a[3, :2], [0.05, 0.15], atol=1e-7)  # next column first: row-major
    np.testing.assert_allclose(a[30, :2], [0.15, 0.05], atol=1e-7)  # 10 cells x 3 later: next row
    # layer 1 (5x5) at index 300: scales 0.2 + 0.75 k / 4 -> 0.3875; interpolated sqrt(0.3875 * 0.575)
    np.testing.assert_allclose(a[300], [0.1, 0.1, 0.3875, 0.3875], atol=1e-7)
    np.testing.assert_allclose(a[303], [0.1, 0.1, 0.3875 / math.sqrt(3), 0.3875 * math.sqrt(3)], atol=1e-6)  # ar 3: wide
    np.testing.assert_allclose(a[305, 2:], [math.sqrt(0.3875 * 0.575)] * 2, atol=1e-7)
    # the last map (1x1): scale 0.95 and the interpolated box sqrt(0.95 * 1.0)
    np.testing.assert_allclose(a[-6], [0.5, 0.5, 0.95, 0.95], atol=1e-7)
    np.testing.assert_allclose(a[-1], [0.5, 0.5, math.sqrt(0.95), math.sqrt(0.95)], atol=1e-7)
    assert a.dtype == np.float64 and anchors(spec).dtype == np.float32


def test_non_square_input_keeps_anchors_square_in_pixels():
    spec = preset("mobilenet_v3_small", 1.0, 10, (160, 320), detection=DetectionOptions())
    a = anchors(spec)
    # first anchor, ar 1, scale 0.1: 16 px both ways = 0.1 of the height, 0.05 of the width
    np.testing.assert_allclose(a[0, 2:], [0.1, 0.05], atol=1e-7)


def test_a_backbone_that_never_reaches_stride_32_is_a_user_error():
    from mobiledeploy.architectures.spec import RawArchitecture, RawRow, resolve

    raw = RawArchitecture((16, 3, 2, "relu"), (RawRow(3, 32, 16, False, "relu", 2),
                                                 RawRow(3, 32, 24, False, "relu", 2)), 64, "relu", None, "none")
    with pytest.raises(UserError, match="strides from 16 to 32"):
        resolve(raw, name="x", detection=DetectionOptions(reduced_tail=False))


def test_decoding_spec_carries_the_definition_values():
    spec = preset("mobilenet_v3_small", 1.0, 10, 160, detection=DetectionOptions())
    d = decoding_spec(spec)
    assert d["box_coder"] == {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}
    assert d["num_classes"] == 10 and d["num_anchors"] == 534 and d["use_regular_nms"] is False


# ---------------------------------------------------------------------------- definition


def _det_data() -> dict:
    return yaml.safe_load((DET_EXAMPLE / "shapes_det.yaml").read_text())


def _write(tmp_path, data):
    for name in ("labels.txt", "calibration", "validation"):
        src = DET_EXAMPLE / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    data.pop("weights", None)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_definition_resolves_to_the_ssdlite_head():
    d = load_definition(DET_EXAMPLE / "shapes_det.yaml", check_files=False)
    spec = d.architecture_spec()
    assert spec.detection is not None and spec.num_classes == 10
    assert spec.detection.extras == (256, 128, 128)
    assert spec.detection.options.aspect_ratios[-1] == pytest.approx(1 / 3, abs=1e-4)


def test_explicit_block_table_takes_the_head(tmp_path):
    data = _det_data()
    data["architecture"] = {
        "stem": {"out": 8, "kernel": 3, "stride": 2, "activation": "hswish"},
        "blocks": [[3, 16, 8, True, "relu", 2], [3, 24, 16, False, "relu", 2],
                   [3, 32, 16, True, "hswish", 2], [3, 48, 24, True, "hswish", 2]],
        "last_stage": {"conv": 64, "activation": "hswish"},
        "detection": {"extra_layers": [32]},
    }
    spec = load_definition(_write(tmp_path, data)).architecture_spec()
    # stem /2, blocks /4 /8 /16, block 3 strides 16 -> 32: its expansion (48) is feature 0
    assert spec.detection.tap_block == 3 and spec.detection.feature_channels == (48, 32, 32)
    assert spec.blocks[3].out == 16 and spec.last_conv == 32  # reduced tail by default (24/2 -> 16: multiples of 8)


@pytest.mark.parametrize("edit, field, message", [
    (lambda d: d.update(task="image-classification"), "", "needs task: object-detection"),
    (lambda d: d["architecture"]["detection"]["anchors"].update(min_scale=0.99), "", "must not exceed"),
    (lambda d: d["architecture"]["detection"]["postprocess"].update(score_conversion="tanh"),
     "score_conversion", "softmax"),
    (lambda d: d["architecture"]["detection"]["box_coder"].update(y_scale=0), "y_scale", "greater than 0"),
    (lambda d: d["architecture"]["detection"].update(depth=3), "depth", "unknown key"),
    (lambda d: d["validation"].update(boxes="nowhere.json"), "validation.boxes", "not found"),
    (lambda d: d.update(conventions={"padding": "tf_same"}), "", "padding: symmetric"),
    (lambda d: d["architecture"].update(segmentation={}), "", "not both"),
])
def test_bad_detection_definitions_are_one_line_errors(tmp_path, edit, field, message):
    data = _det_data()
    edit(data)
    with pytest.raises(DefinitionError, match=message) as exc:
        load_definition(_write(tmp_path, data))
    assert field in str(exc.value) and "\n" not in str(exc.value)


def test_boxes_on_a_classifier_are_refused(tmp_path):
    data = _det_data()
    data["task"] = "image-classification"
    data["architecture"].pop("detection")
    with pytest.raises(DefinitionError, match="validation.boxes needs task: object-detection|calibration.boxes"):
        load_definition(_write(tmp_path, data))
