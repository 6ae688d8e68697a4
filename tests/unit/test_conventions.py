"""Framework conventions: TensorFlow "same" padding and TF-slim channel rounding (no heavy deps)."""

import pytest

from mobiledeploy.architectures.reference import expected_shapes
from mobiledeploy.architectures.spec import PRESETS, preset, tf_same_pads
from mobiledeploy.architectures.stats import totals
from mobiledeploy.importers import keras_names, torchvision_names

KERAS = {"padding": "tf_same", "channel_rounding": "tf_slim"}


@pytest.mark.parametrize("size, kernel, stride, pads", [
    (64, 3, 2, (0, 1)),  # even size, stride 2: the odd pixel goes after (keras' correct_pad)
    (64, 5, 2, (1, 2)),
    (7, 3, 2, (1, 1)),  # odd size: TensorFlow pads symmetrically
    (7, 5, 2, (2, 2)),
    (64, 3, 1, (1, 1)),  # stride 1: always (k-1)/2 each side
    (64, 5, 1, (2, 2)),
    (2, 5, 2, (1, 2)),
])
def test_tf_same_pads_as_tensorflow(size, kernel, stride, pads):
    assert tf_same_pads(size, kernel, stride) == pads
    before, after = pads
    # the output is ceil(size / stride) either way: only where the zeros go differs
    assert (size + before + after - kernel) // stride + 1 == -(-size // stride)


def test_conv_pads_follow_the_convention_and_sizes_flow_through_the_network():
    sym = preset("mobilenet_v3_small", resolution=80)
    tf = preset("mobilenet_v3_small", resolution=80, **KERAS)
    assert sym.conv_pads((80, 80), 3, 2) == ((1, 1), (1, 1))
    assert tf.conv_pads((80, 80), 3, 2) == ((0, 1), (0, 1))
    sizes = tf.conv_inputs()
    # 80 -> 40 (stem) -> 20 (block 0) -> 10 (block 1) -> 5 (block 3): block 8 sees an odd size
    assert sizes["stem"] == (80, 80) and sizes["blocks.0.dw"] == (40, 40) and sizes["blocks.8.dw"] == (5, 5)
    assert tf.conv_pads(sizes["blocks.8.dw"], 5, 2) == ((2, 2), (2, 2))


# keras.applications' own counts (model.trainable_weights at 224, 1000 classes, Keras 3.15) and
# MACs at 224; the width-1.0 figures are the ones the issue quotes
@pytest.mark.parametrize("name, width, params, macs", [
    ("mobilenet_v3_small", 1.0, 2_542_856, 56_510_400),
    ("mobilenet_v3_large", 1.0, 5_483_032, 216_589_760),
    ("mobilenet_v3_small", 0.75, 2_041_872, 43_399_344),
    ("mobilenet_v3_large", 0.75, 3_993_528, 154_560_624),
    ("mobilenet_v3_small_minimalistic", 1.0, 2_044_736, 52_288_448),
    ("mobilenet_v3_large_minimalistic", 1.0, 3_924_288, 209_136_704),
    ("mobilenet_v3_small_minimalistic", 0.5, 1_445_480, 21_942_032),
])
def test_tf_slim_counts_equal_keras_applications(name, width, params, macs):
    assert totals(preset(name, width, 1000, 224, **KERAS)) == (macs, params)


def test_tf_slim_rounds_the_ratio_times_real_input_channels_and_keeps_the_stem():
    slim = preset("mobilenet_v3_small", 0.75, **KERAS)
    tv = preset("mobilenet_v3_small", 0.75)
    assert slim.stem_out == 16 and tv.stem_out == 16  # make_divisible(12) is 16 too
    # keras.applications MobileNetV3Small(alpha=0.75): expansion = _depth(in_channels * ratio)
    assert [b.exp for b in slim.blocks] == [16, 72, 88, 96, 192, 192, 96, 120, 240, 432, 432]
    assert [b.out for b in slim.blocks] == [16, 24, 24, 32, 32, 32, 40, 40, 72, 72, 72]
    assert slim.last_conv == 432 and slim.head_hidden == 1024
    # torchvision rounding: make_divisible(exp x width)
    assert [b.exp for b in tv.blocks][:3] == [16, 56, 64]
    assert preset("mobilenet_v3_large", 0.5, **KERAS).stem_out == 16
    assert preset("mobilenet_v3_large", 0.5).stem_out == 8


@pytest.mark.parametrize("name", list(PRESETS))
def test_roundings_agree_at_width_one(name):
    a, b = preset(name, 1.0), preset(name, 1.0, channel_rounding="tf_slim")
    assert (a.stem_out, a.blocks, a.last_conv, a.head_hidden) == (b.stem_out, b.blocks, b.last_conv, b.head_hidden)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "mobilenet_edgetpu"])
@pytest.mark.parametrize("width", [0.75, 1.0])
def test_name_maps_cover_every_canonical_tensor_once(name, width):
    for conv, names in ((KERAS, keras_names), ({}, torchvision_names)):
        spec = preset(name, width, 10, 64, **conv)
        m = names(spec)
        assert set(m) == set(expected_shapes(spec))
        sources = [s for s, _ in m.values()]
        assert len(set(sources)) == len(sources)


def test_definition_conventions_are_strict_and_reach_the_spec(tmp_path):
    from mobiledeploy.definition import load_definition
    from mobiledeploy.errors import DefinitionError
    from tests.conftest import example_data, write_definition

    data = example_data()
    data["labels"] = str(tmp_path / "labels.txt")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    data["conventions"] = {"padding": "tf_same", "channel_rounding": "tf_slim"}
    data["architecture"]["width_multiplier"] = 0.75
    d = load_definition(write_definition(tmp_path, data), check_files=False)
    spec = d.architecture_spec()
    assert spec.padding == "tf_same" and spec.blocks[1].exp == 72 and spec.num_classes == 3
    data["conventions"] = {"padding": "same"}
    with pytest.raises(DefinitionError, match=r"conventions\.padding.*'symmetric' or 'tf_same'"):
        load_definition(write_definition(tmp_path, data), check_files=False)
    data["conventions"] = {"rounding": "tf_slim"}
    with pytest.raises(DefinitionError, match=r"conventions\.rounding: unknown key; allowed: padding, channel_rounding"):
        load_definition(write_definition(tmp_path, data), check_files=False)
    data.pop("conventions")
    assert load_definition(write_definition(tmp_path, data), check_files=False).architecture_spec().padding == "symmetric"
