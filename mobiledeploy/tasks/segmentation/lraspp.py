"""LR-ASPP, the MobileNetV3 paper's segmentation head, for both twins and the counters.

The backbone first gets the paper's segmentation changes (``segmentation_backbone``): the last
stage's channels halved (``reduced_tail``) and the late strides removed down to ``output_stride``
with the depthwise convs after them dilated instead (as torchvision's ``dilated=True``; a block
whose stride was removed keeps its no-residual wiring, so the function matches torchvision's).

The head (``head.*`` canonical names)::

    high (last conv, stride 16) -> cbr: 1x1 conv + BN + ReLU ──────────┐
    high -> global average pool -> scale: 1x1 conv (no bias) -> sigmoid ┴ multiply
         -> bilinear resize to the low-level size (stride 8) -> high: 1x1 conv to classes ─┐
    low (stride-8 block output) -> low: 1x1 conv to classes ───────────────────────────── add
         -> bilinear resize to the input size -> logits (N, classes, H, W) / (N, H, W, classes)

Bilinear resizes use half-pixel centres everywhere: ``align_corners=False`` in PyTorch and
Keras ``Resizing`` (``tf.image.resize``, TFLite RESIZE_BILINEAR with ``half_pixel_centers``).
The gate is a global average pool (portable to every target), not the paper's large-kernel pool.
"""

from __future__ import annotations

from ...architectures.spec import ArchitectureSpec, block_strides, resolve_head, segmentation_backbone  # noqa: F401 (re-exported)


def head_shapes(spec: ArchitectureSpec) -> dict[str, tuple]:
    """Canonical names and shapes of the head's tensors (mirrors ``torch_head``)."""
    seg = spec.segmentation
    hi, k, c = spec.last_conv, seg.inter_channels, spec.num_classes
    shapes = {"head.cbr.conv.weight": (k, hi, 1, 1)}
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"head.cbr.bn.{name}"] = (k,)
    shapes["head.scale.weight"] = (k, hi, 1, 1)
    shapes["head.low.weight"] = (c, seg.low_channels, 1, 1)
    shapes["head.low.bias"] = (c,)
    shapes["head.high.weight"] = (c, k, 1, 1)
    shapes["head.high.bias"] = (c,)
    return shapes


def feature_sizes(spec: ArchitectureSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    """Spatial sizes (h, w) of the low-level and high-level features at the spec's resolution.

    Every strided conv pads (k-1)/2 symmetrically, so each stride-2 step is a ceiling halving.
    """
    h, w = spec.resolution
    h, w = -(-h // spec.stem_stride), -(-w // spec.stem_stride)
    low = None
    for i, b in enumerate(spec.blocks):
        h, w = -(-h // b.stride), -(-w // b.stride)
        if i == spec.segmentation.low_block:
            low = (h, w)
    return low, (h, w)


def head_stats(spec: ArchitectureSpec) -> list[tuple[str, str, int, int, str, int, int]]:
    """Rows (input, operator, out, stride, nl, MACs, params) of the head, as the paper counts.

    Convolutions only (resizes, the pool and the gate's multiply are not MACs); parameters are
    trained tensors (BN affine, conv weights, biases), as torchvision counts them.
    """
    seg = spec.segmentation
    (hl, wl), (hh, wh) = feature_sizes(spec)
    hi, k, c = spec.last_conv, seg.inter_channels, spec.num_classes
    return [
        (f"{hh}x{wh}x{hi}", "lraspp 1x1 conv", k, 1, "RE", hh * wh * hi * k, hi * k + 2 * k),
        (f"1x1x{hi}", "lraspp pool, 1x1 conv", k, 1, "sigmoid", hi * k, hi * k),
        (f"{hl}x{wl}x{k}", "lraspp up, 1x1 conv", c, 1, "-", hl * wl * k * c, k * c + c),
        (f"{hl}x{wl}x{seg.low_channels}", "lraspp low 1x1 conv", c, 1, "-",
         hl * wl * seg.low_channels * c, seg.low_channels * c + c),
    ]


def sixth_folds(spec: ArchitectureSpec) -> dict[str, float]:
    """The 1/6 the lowered Keras graph folds into the head: both 1x1 convs read the last conv's
    h-swish output (``weights.sixth_folds`` does the backbone)."""
    if spec.last_activation != "hswish":
        return {}
    return {"head.cbr.conv.weight": 1.0 / 6.0, "head.scale.weight": 1.0 / 6.0}


def torch_head(spec: ArchitectureSpec, conv_bn):
    """The head as an ``nn.Module``: ``forward(low, high, size)`` -> NCHW logits at ``size``.

    ``conv_bn`` is the builder's Conv+BN+activation class, so names and BN settings match.
    """
    import torch
    import torch.nn.functional as F

    nn = torch.nn
    seg = spec.segmentation

    class LRASPP(nn.Module):
        def __init__(self):
            super().__init__()
            self.cbr = conv_bn(spec.last_conv, seg.inter_channels, 1, 1, 1, "relu")
            self.scale = nn.Conv2d(spec.last_conv, seg.inter_channels, 1, bias=False)
            self.low = nn.Conv2d(seg.low_channels, spec.num_classes, 1)
            self.high = nn.Conv2d(seg.inter_channels, spec.num_classes, 1)

        def forward(self, low, high, size):
            gate = torch.sigmoid(self.scale(high.mean((2, 3), keepdim=True)))
            x = self.cbr(high) * gate
            x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
            y = self.low(low) + self.high(x)
            return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    return LRASPP()


def keras_head(spec: ArchitectureSpec, low, high, conv_bn, resize: str = "builtin"):
    """The head in Keras layers (NHWC), named ``head_*`` after the canonical tensors.

    ``resize="lowered"`` builds each bilinear resize whose factor is a power of two from ops the
    Edge TPU compiler maps (``upsample.upsample_bilinear_lowered``: the same function); other
    factors keep the builtin resize.
    """
    import keras

    layers = keras.layers
    seg = spec.segmentation
    h, w = spec.resolution
    x = conv_bn(high, "head.cbr", seg.inter_channels, 1, 1, False, "relu")
    s = layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(high)
    s = layers.Conv2D(seg.inter_channels, 1, use_bias=False, name="head_scale")(s)
    s = layers.Activation("sigmoid", name="head_gate")(s)
    x = layers.Multiply(name="head_mul")([x, s])
    # half-pixel centres (tf.image.resize), as PyTorch's align_corners=False
    x = _resize(x, int(low.shape[1]), int(low.shape[2]), "head_up", resize)
    x = layers.Conv2D(spec.num_classes, 1, name="head_high")(x)
    y = layers.Conv2D(spec.num_classes, 1, name="head_low")(low)
    y = layers.Add(name="head_add")([y, x])
    return _resize(y, h, w, "head_resize", resize)


def _resize(x, out_h: int, out_w: int, name: str, resize: str):
    """Half-pixel bilinear resize of NHWC ``x``: Keras ``Resizing`` or, when asked and the factor
    allows it, the lowered form (same function, Edge TPU ops)."""
    import keras

    from .upsample import lowerable, upsample_bilinear_lowered

    if resize not in ("builtin", "lowered"):
        raise ValueError(f"resize must be 'builtin' or 'lowered', not {resize!r}")
    if resize == "lowered" and lowerable((int(x.shape[1]), int(x.shape[2])), (out_h, out_w)):
        return upsample_bilinear_lowered(x, out_h, out_w, name)
    return keras.layers.Resizing(out_h, out_w, interpolation="bilinear", name=name)(x)
