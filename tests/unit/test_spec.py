"""The search space: presets, rounding, and MAC/param counts against published figures."""

import pytest

from mobiledeploy.architectures.spec import PRESETS, make_divisible, preset
from mobiledeploy.architectures.stats import stage_table, totals
from mobiledeploy.errors import UserError


@pytest.mark.parametrize(
    "value, expected",
    [(16, 16), (12, 16), (20, 24), (72 * 0.75, 56), (88 * 0.5, 48), (3, 8), (100, 104)],
)
def test_make_divisible_rounds_to_8_never_more_than_10_percent_down(value, expected):
    out = make_divisible(value)
    assert out == expected
    assert out % 8 == 0 and out >= 0.9 * value


# Published: MobileNetV3 paper Table 3/4 (1.0, 224, 1000 classes); MobileNetEdgeTPU model card
@pytest.mark.parametrize(
    "name, macs_m, params_m, tol",
    [
        ("mobilenet_v3_small", 56, 2.5, 0.06),
        ("mobilenet_v3_large", 219, 5.4, 0.03),
        ("mobilenet_v3_large_minimalistic", 209, 3.9, 0.03),
        ("mobilenet_edgetpu", 990, 4.0, 0.03),
    ],
)
def test_macs_and_params_match_published_figures(name, macs_m, params_m, tol):
    macs, params = totals(preset(name))
    assert abs(macs / 1e6 - macs_m) / macs_m < tol, macs
    assert abs(params / 1e6 - params_m) / params_m < max(tol, 0.05), params


def test_small_lands_in_the_issue_window():
    macs, params = totals(preset("mobilenet_v3_small"))
    assert 56e6 <= macs <= 66e6 and 2.5e6 <= params <= 2.9e6


@pytest.mark.parametrize("name", [n for n in PRESETS if "minimalistic" in n or "edgetpu" in n])
def test_accelerator_variants_have_no_se_hswish_or_5x5_where_promised(name):
    spec = preset(name)
    assert not any(b.se for b in spec.blocks)
    assert not spec.uses("hswish")
    if "minimalistic" in name:
        assert {b.kernel for b in spec.blocks} == {3}


def test_edgetpu_uses_fused_blocks_early_and_depthwise_late():
    spec = preset("mobilenet_edgetpu")
    fused = [b.fused for b in spec.blocks]
    assert fused[:9] == [True] * 9 and not any(fused[9:])
    assert spec.head_hidden is None and spec.last_conv == 1280


def test_width_multiplier_scales_and_rounds_channels():
    half = preset("mobilenet_v3_small", 0.5)
    full = preset("mobilenet_v3_small", 1.0)
    assert all(b.out % 8 == 0 and b.exp % 8 == 0 for b in half.blocks)
    assert half.blocks[-1].out < full.blocks[-1].out
    # finegrain mode: the head keeps full width below 1.0
    assert half.head_hidden == full.head_hidden == 1024


def test_stage_table_has_a_row_per_layer_and_resolution_flows():
    spec = preset("mobilenet_v3_small", resolution=224)
    rows = stage_table(spec)
    assert rows[0].input == "224x224x3" and rows[1].input == "112x112x16"
    assert rows[-3].operator == "avg pool" and rows[-3].input.startswith("7x7")
    assert len(rows) == 1 + len(spec.blocks) + 4


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UserError, match="mobilenet_v3_small"):
        preset("mobilenet_v4")
