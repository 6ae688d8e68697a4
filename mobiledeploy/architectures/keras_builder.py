"""Keras 3 reference model built from the same ArchitectureSpec as the PyTorch one.

Layer names mirror the PyTorch module names with ``_`` for ``.`` so that one canonical weights
file loads into both. With ``padding: symmetric`` (PyTorch's convention), where TensorFlow's
"same" would pad asymmetrically (stride 2), an explicit symmetric ``ZeroPadding2D`` + "valid"
conv is used; with ``padding: tf_same`` every conv is ``padding="same"``, which is what
keras.applications computes (its ``ZeroPadding2D(correct_pad)`` + "valid" is the same padding).

``resize="lowered"`` builds LR-ASPP's half-pixel bilinear resizes from slices, concatenations,
nearest 2x resizes and fixed 2x2 depthwise averages (``tasks/segmentation/upsample.py``), the
same function in ops the Edge TPU compiler maps.

``hswish="lowered"`` builds h-swish as ``x * relu6(x + 3)`` and hard-sigmoid as ``relu6(x + 3)``
with the 1/6 folded into the weights of the next linear op (see ``weights.fold_sixth``): the
same function, in ops that XNNPACK's int8 path and the Edge TPU take (ADD+RELU6, MUL).
"""

from __future__ import annotations

from .spec import ArchitectureSpec
from .weights import _stem_kept


def _keras():
    from .._deps import require

    require("tensorflow", "the Keras reference model")
    return require("keras", "the Keras reference model")


def build_keras_model(spec: ArchitectureSpec, *, hswish: str = "fused", batch_size: int | None = None,
                      resize: str = "builtin"):
    """A functional Keras model: NHWC float input (normalised) -> logits
    ((N, classes), or (N, H, W, classes) for a segmentation spec; for a detection spec the list
    [class_logits (N, anchors, classes + 1), box_encodings (N, anchors, 4)], see ssdlite.py).

    ``batch_size=1`` gives the static shapes that converters (and the Edge TPU) want.
    ``resize="lowered"`` builds a segmentation head's bilinear resizes from Edge TPU ops (see
    ``tasks/segmentation/upsample.py``; the same function); other tasks have no resize and ignore it.
    """
    keras = _keras()
    layers, ops = keras.layers, keras.ops
    if hswish not in ("fused", "lowered"):
        raise ValueError(f"hswish must be 'fused' or 'lowered', not {hswish!r}")
    lowered = hswish == "lowered"

    def act(x, name: str, kind: str):
        if kind == "relu":
            return layers.ReLU(name=name)(x)
        if kind == "relu6":
            return layers.ReLU(max_value=6.0, name=name)(x)
        if kind == "hswish":
            if lowered:
                # x * relu6(x + 3); the 1/6 lives in the next linear op's weights
                r = layers.ReLU(max_value=6.0, name=name + "_relu6")(
                    layers.Rescaling(1.0, offset=3.0, name=name + "_add3")(x)
                )
                return layers.Multiply(name=name)([x, r])
            return layers.Activation(lambda t: t * ops.relu6(t + 3.0) / 6.0, name=name)(x)
        return x

    def conv_bn(x, prefix: str, cout: int, k: int, stride: int, depthwise: bool, activation: str,
                dilation: int = 1):
        n = prefix.replace(".", "_")
        pad = (k - 1) // 2
        padding = "same"
        if stride > 1 and pad and spec.padding == "symmetric":
            x = layers.ZeroPadding2D(pad, name=n + "_pad")(x)
            padding = "valid"
        if depthwise:
            x = layers.DepthwiseConv2D(k, stride, padding=padding, dilation_rate=dilation, use_bias=False,
                                       name=n + "_conv")(x)
        else:
            x = layers.Conv2D(cout, k, stride, padding=padding, dilation_rate=dilation, use_bias=False,
                              name=n + "_conv")(x)
        x = layers.BatchNormalization(epsilon=spec.bn_eps, name=n + "_bn")(x)
        return act(x, n + "_act", activation)

    def se(x, prefix: str, ch: int, squeeze: int):
        n = prefix.replace(".", "_")
        s = layers.GlobalAveragePooling2D(keepdims=True, name=n + "_pool")(x)
        s = layers.Conv2D(squeeze, 1, name=n + "_fc1")(s)
        s = layers.ReLU(name=n + "_relu")(s)
        s = layers.Conv2D(ch, 1, name=n + "_fc2")(s)
        if lowered:
            s = layers.ReLU(max_value=6.0, name=n + "_gate")(
                layers.Rescaling(1.0, offset=3.0, name=n + "_gate_add3")(s)
            )
        else:
            s = layers.Activation(lambda t: ops.relu6(t + 3.0) / 6.0, name=n + "_gate")(s)
        return layers.Multiply(name=n + "_mul")([x, s])

    h, w = spec.resolution
    inp = keras.Input((h, w, spec.in_channels), name="input", batch_size=batch_size)
    x = conv_bn(inp, "stem", spec.stem_out, spec.stem_kernel, spec.stem_stride, False, spec.stem_activation)
    if lowered and spec.stem_activation == "hswish" and _stem_kept(spec):
        # a Python float times the tensor: exact in the model's dtype (Rescaling casts via float32)
        x = layers.Activation(lambda t: t * (1.0 / 6.0), name="stem_act_scale")(x)
    cin = spec.stem_out
    for i, b in enumerate(spec.blocks):
        p = f"blocks.{i}"
        y = x
        if spec.detection and i == spec.detection.tap_block:
            tap = x  # a fused block (or one without expansion) is tapped at its input
        if b.fused:
            if b.has_expand(cin):
                y = conv_bn(y, p + ".expand", b.exp, b.kernel, b.stride, False, b.activation, b.dilation)
        else:
            if b.has_expand(cin):
                y = conv_bn(y, p + ".expand", b.exp, 1, 1, False, b.activation)
            if spec.detection and i == spec.detection.tap_block:
                tap = y  # SSDLite's feature 0: the expansion output at stride 16
            y = conv_bn(y, p + ".dw", b.exp, b.kernel, b.stride, True, b.activation, b.dilation)
        if b.se:
            y = se(y, p + ".se", b.exp, b.se_channels)
        y = conv_bn(y, p + ".project", b.out, 1, 1, False, "none")
        if b.residual and b.stride == 1 and cin == b.out:
            y = layers.Add(name=f"blocks_{i}_add")([x, y])
        x, cin = y, b.out
        if spec.segmentation and i == spec.segmentation.low_block:
            low = x
    x = conv_bn(x, "last", spec.last_conv, 1, 1, False, spec.last_activation)
    if spec.detection:
        from ..tasks.detection.ssdlite import keras_head as ssd_head

        return keras.Model(inp, ssd_head(spec, tap, x, conv_bn), name=spec.name)
    if spec.segmentation:
        from ..tasks.segmentation.lraspp import keras_head

        return keras.Model(inp, keras_head(spec, low, x, conv_bn, resize=resize), name=spec.name)
    if spec.head_plugin:
        from .heads import head_module

        return keras.Model(inp, head_module(spec).keras_head(spec, x, layers, act, lowered), name=spec.name)
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    if spec.head_hidden:
        x = layers.Dense(spec.head_hidden, name="head_fc1")(x)
        x = act(x, "head_act", spec.head_activation)
    x = layers.Dense(spec.num_classes, name="head_classifier")(x)
    return keras.Model(inp, x, name=spec.name)
