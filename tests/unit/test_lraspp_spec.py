"""The segmentation architecture as data: backbone changes, head resolution, counts, definition."""

from __future__ import annotations

import pytest
import yaml

from mobiledeploy.architectures.reference import expected_shapes
from mobiledeploy.architectures.spec import PRESETS, SegmentationOptions, preset
from mobiledeploy.architectures.stats import stage_table, totals
from mobiledeploy.definition import load_definition
from mobiledeploy.errors import DefinitionError, UserError
from tests.conftest import ROOT

SEG_EXAMPLE = ROOT / "examples" / "shapes_seg"
TORCHVISION_LIKE = SegmentationOptions(inter_channels=128, low_level_stride=8, output_stride=16,
                                       reduced_tail=False)


def test_torchvision_lraspp_large_parameter_count_and_macs_are_reproduced():
    # torchvision LRASPP_MobileNet_V3_Large_Weights: num_params 3,221,538, 2.086 GFLOPS at 520x520
    # (its "GFLOPS" count multiply-accumulates of convs/linears, as the paper's MAdds do)
    macs, params = totals(preset("mobilenet_v3_large", 1.0, 21, 520, segmentation=TORCHVISION_LIKE))
    assert params == 3_221_538
    assert round(macs / 1e9, 3) == 2.086


def test_reduced_tail_halves_the_last_stage_and_dilation_replaces_the_last_stride():
    plain = preset("mobilenet_v3_small", 1.0, 11, 128)
    seg = preset("mobilenet_v3_small", 1.0, 11, 128, segmentation=SegmentationOptions())
    # blocks 8..10 are the last stage (block 8 strides 2 in the classifier)
    assert [b.out for b in plain.blocks[8:]] == [96, 96, 96]
    assert [b.out for b in seg.blocks[8:]] == [48, 48, 48]
    assert [b.exp for b in seg.blocks[8:]] == [288, 288, 288]  # the first keeps its expansion
    assert seg.last_conv == 288 and plain.last_conv == 576
    assert plain.blocks[8].stride == 2 and seg.blocks[8].stride == 1
    assert [b.dilation for b in seg.blocks] == [1] * 8 + [2, 2, 2]
    assert seg.blocks[:8] == plain.blocks[:8]
    # the block whose stride went keeps the classifier's wiring: no residual add
    assert not seg.blocks[8].residual


def test_head_picks_the_last_block_at_stride_8_and_counts_its_layers():
    seg = preset("mobilenet_v3_small", 1.0, 11, 128, segmentation=SegmentationOptions())
    head = seg.segmentation
    # stem /2, block 0 /2 (stride 4), block 1 /2 (stride 8), block 2 stays, block 3 /2
    assert (head.low_block, head.low_channels, head.low_stride, head.high_stride) == (2, 24, 8, 16)
    rows = stage_table(seg)
    assert [r.operator for r in rows[-4:]] == ["lraspp 1x1 conv", "lraspp pool, 1x1 conv",
                                              "lraspp up, 1x1 conv", "lraspp low 1x1 conv"]
    # 128/16 = 8: 8*8*288*128 MACs; params 288*128 + BN 2*128
    assert (rows[-4].macs, rows[-4].params) == (8 * 8 * 288 * 128, 288 * 128 + 256)
    # 16x16 low-level: 16*16*24*11 MACs; params 24*11 + 11
    assert (rows[-1].macs, rows[-1].params) == (16 * 16 * 24 * 11, 24 * 11 + 11)
    assert "avg pool" not in [r.operator for r in rows]
    assert "d2" in rows[9].operator


def test_output_stride_32_keeps_the_backbone_strides():
    seg = preset("mobilenet_v3_large", 1.0, 5, 224,
                 segmentation=SegmentationOptions(output_stride=None, reduced_tail=False))
    plain = preset("mobilenet_v3_large", 1.0, 5, 224)
    assert [b.stride for b in seg.blocks] == [b.stride for b in plain.blocks]
    assert seg.segmentation.high_stride == 32 and seg.segmentation.low_block == 5


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_takes_the_head(name):
    seg = preset(name, 0.75, 7, 96, segmentation=SegmentationOptions())
    shapes = expected_shapes(seg)
    assert shapes["head.low.weight"] == (7, seg.segmentation.low_channels, 1, 1)
    assert shapes["head.cbr.conv.weight"] == (128, seg.last_conv, 1, 1)
    assert not any(k.startswith("head.classifier") for k in shapes)
    assert seg.segmentation.high_stride == 16


def test_low_level_stride_without_a_block_there_is_a_user_error():
    from mobiledeploy.architectures.spec import RawArchitecture, RawRow, resolve

    raw = RawArchitecture((16, 3, 2, "relu"), (RawRow(3, 32, 16, False, "relu", 2),
                                                 RawRow(3, 32, 24, False, "relu", 4)), 64, "relu", None, "none")
    with pytest.raises(UserError, match="no block output at stride 8"):
        resolve(raw, name="x", segmentation=SegmentationOptions(reduced_tail=False, output_stride=None))


# ---------------------------------------------------------------------------- definition


def _seg_data() -> dict:
    return yaml.safe_load((SEG_EXAMPLE / "shapes_seg.yaml").read_text())


def _write(tmp_path, data):
    import shutil

    for name in ("labels.txt", "calibration", "validation"):
        src = SEG_EXAMPLE / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    data.pop("weights", None)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_definition_resolves_to_the_paper_head():
    d = load_definition(SEG_EXAMPLE / "shapes_seg.yaml", check_files=False)
    spec = d.architecture_spec()
    assert spec.segmentation is not None and spec.num_classes == 11
    assert spec.segmentation.inter_channels == 128


def test_explicit_block_table_takes_the_head(tmp_path):
    data = _seg_data()
    data["architecture"] = {
        "stem": {"out": 8, "kernel": 3, "stride": 2, "activation": "hswish"},
        "blocks": [[3, 16, 8, True, "relu", 2], [3, 24, 16, False, "relu", 2],
                   [3, 32, 16, True, "hswish", 2], [3, 48, 24, True, "hswish", 2]],
        "last_stage": {"conv": 64, "activation": "hswish"},
        "segmentation": {"inter_channels": 32},
    }
    d = load_definition(_write(tmp_path, data))
    spec = d.architecture_spec()
    assert spec.segmentation.low_block == 1 and spec.blocks[3].stride == 1 and spec.blocks[3].dilation == 2
    assert spec.blocks[3].out == 16 and spec.last_conv == 32  # reduced tail by default


@pytest.mark.parametrize("edit, field, message", [
    (lambda d: d.update(task="image-classification"), "", "needs task: semantic-segmentation"),
    (lambda d: d["architecture"]["segmentation"].update(low_level_stride=2), "low_level_stride", "4 or 8"),
    (lambda d: d["architecture"]["segmentation"].update(output_stride=8), "output_stride", "16"),
    (lambda d: d["architecture"]["segmentation"].update(depth=3), "depth", "unknown key"),
    (lambda d: d["validation"].update(masks="nowhere"), "validation.masks", "not found"),
])
def test_bad_segmentation_definitions_are_one_line_errors(tmp_path, edit, field, message):
    data = _seg_data()
    edit(data)
    with pytest.raises(DefinitionError, match=message) as exc:
        load_definition(_write(tmp_path, data))
    assert field in str(exc.value) and "\n" not in str(exc.value)


def test_a_classifier_head_on_a_segmentation_network_is_refused(tmp_path):
    data = _seg_data()
    data["architecture"] = {
        "blocks": [[3, 16, 16, False, "relu", 2], [3, 24, 24, False, "relu", 2], [3, 32, 32, False, "relu", 2]],
        "last_stage": {"conv": 64},
        "head": {"hidden": 32},
        "segmentation": {},
    }
    with pytest.raises(DefinitionError, match="remove head"):
        load_definition(_write(tmp_path, data))


def test_segmentation_stride_problem_names_the_field(tmp_path):
    data = _seg_data()
    data["architecture"] = {
        "stem": {"out": 8, "stride": 2},
        "blocks": [[3, 16, 16, False, "relu", 1], [3, 24, 24, False, "relu", 2]],
        "last_stage": {"conv": 64},
        "segmentation": {"reduced_tail": False},
    }
    with pytest.raises(DefinitionError, match="architecture.segmentation: no block output at stride 8"):
        load_definition(_write(tmp_path, data))
