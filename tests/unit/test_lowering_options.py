"""The `lowering` option's values per backend (issue 30): the Edge TPU lowers a segmentation
head's resizes by default, tflite-int8 keeps the builtin resize (the faster one on XNNPACK),
ExecuTorch has no resize lowering and says so; targets that differ only in the resize variant
share one Keras model when the model has no resize."""

from __future__ import annotations

import pytest

from mobiledeploy.backends.base import GraphVariant
from mobiledeploy.errors import UserError
from mobiledeploy.targets import get_target


def _graph(target: str, **options) -> GraphVariant:
    from mobiledeploy.backends.registry import get_backend

    t = get_target(target).resolve(options or None)
    return get_backend(t.backend).graph(t)


def test_defaults_per_target():
    assert _graph("edgetpu") == GraphVariant(hswish="lowered", resize="lowered")
    assert _graph("tflite-int8") == GraphVariant(hswish="lowered", resize="builtin")
    assert _graph("tflite-int8", lowering="hswish+bilinear") == GraphVariant(hswish="lowered", resize="lowered")
    assert _graph("edgetpu", lowering="hswish") == GraphVariant(hswish="lowered", resize="builtin")
    assert _graph("edgetpu", lowering="none") == GraphVariant()
    assert _graph("tflite-fp32") == GraphVariant()


def test_executorch_refuses_the_resize_lowering_naming_the_choices():
    with pytest.raises(UserError, match=r"option lowering: 'hswish\+bilinear' is not allowed; allowed: hswish, none"):
        get_target("executorch-xnnpack-int8").resolve({"lowering": "hswish+bilinear"})


def test_resize_variant_only_where_a_head_resizes():
    class Spec:
        def __init__(self, seg):
            self.segmentation = seg

    class Definition:
        def __init__(self, seg):
            self.seg = seg

        def architecture_spec(self):
            return Spec(self.seg)

    g = GraphVariant(hswish="lowered", resize="lowered")
    assert g.for_definition(Definition(None)) == GraphVariant(hswish="lowered")
    assert g.for_definition(Definition(object())) is g
    assert GraphVariant.from_dict({"hswish": "lowered"}) == GraphVariant(hswish="lowered", resize="builtin")
