"""SSDLite, the MobileNetV3 paper's detection head, for both twins, the counters and the anchors.

The backbone first gets the paper's detection change (section 6.3): ``reduced_tail`` halves the
channels of the last stage (its first block keeps its expansion), as TF's ``V3_*_DETECTION``
conv defs and torchvision's ``ssdlite320_mobilenet_v3_large`` do.

Feature maps (``DetHead.feature_*``)::

    0: expansion output of the block that strides 16 -> 32 (its 1x1 expand + BN + act; stride 16)
    1: the last 1x1 conv (stride 32)
    2..: extra layers ``head.extras.K``: 1x1 conv to out/2 + BN + ReLU6, 3x3 depthwise stride 2 + BN
         + ReLU6, 1x1 conv to out + BN + ReLU6 (SSD's extra layers made depthwise-separable)

Every feature map gets two SSDLite predictors (``head.cls.F`` / ``head.box.F``): 3x3 depthwise
+ BN + ReLU6 (``.dw``) then a 1x1 conv with bias (``.pred``) to ``anchors x (classes + 1)`` class
logits (index 0 = background) or ``anchors x 4`` box encodings ``(ty, tx, th, tw)``.

Outputs, both twins: ``(class_logits (N, A, classes + 1), box_encodings (N, A, 4))``, raw (no
softmax, no decoding), anchors ordered feature map, then row, column, anchor, as ``anchors()``
generates them with NumPy alone so every runtime decodes from the same boxes. A fused block (no
separate expansion) taps its input instead; so does a block without an expansion conv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # spec imports this module: types only, no import cycle
    from ...architectures.spec import ArchitectureSpec, Block, RawArchitecture

DEFAULT_EXTRAS = (512, 256, 256, 128)  # SSD's extra layer depths (TF OD API and torchvision)
OUTPUTS = ("class_logits", "box_encodings")
_MIN_DEPTH = 16  # extra layers never narrower (TF's min_depth, torchvision's get_depth)


@dataclass(frozen=True)
class DetectionOptions:
    """SSDLite options before resolution (the definition's ``architecture.detection``).

    Defaults are SSD's and the TF Object Detection API's ssdlite_mobilenet_v3 configs: extra
    layers 512/256/256/128 (width-scaled), anchors from scale 0.2 to 0.95 with aspect ratios
    1, 2, 1/2, 3, 1/3 plus an interpolated-scale square box (three boxes in the lowest layer),
    box coder scales y, x, h, w = 10, 10, 5, 5, and TFLite_Detection_PostProcess's fast
    class-agnostic NMS. ``extra_layers=None`` stops the default four once a map is 1x1.
    """

    extra_layers: tuple[int, ...] | None = None
    reduced_tail: bool = True
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    box_coder: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w
    score_conversion: str = "softmax"
    score_threshold: float = 0.3
    iou_threshold: float = 0.6
    max_detections: int = 10
    use_regular_nms: bool = False
    detections_per_class: int = 100

    def backbone(self, raw: RawArchitecture) -> RawArchitecture:
        """The backbone change these options ask for (``detection_backbone``)."""
        return detection_backbone(raw, self)

    def resolve(self, stem_stride: int, blocks: tuple[Block, ...], last_conv: int, resolution: tuple[int, int],
                width: float) -> DetHead:
        """The resolved head (``resolve_detection``): called by ``architectures.spec.resolve``, which
        imports nothing of this module."""
        return resolve_detection(stem_stride, blocks, last_conv, resolution, width, self)


@dataclass(frozen=True)
class DetHead:
    """A resolved SSDLite head: where the two backbone features come from, the extra layers,
    every feature map's size and anchor count (see ssdlite.py)."""

    tap_block: int  # feature 0 is this block's expansion output (stride 16)
    feature_channels: tuple[int, ...]
    feature_sizes: tuple[tuple[int, int], ...]
    extras: tuple[int, ...]  # output channels of each extra layer (after the width multiplier)
    anchors_per_location: tuple[int, ...]
    options: DetectionOptions = DetectionOptions()

    @property
    def num_anchors(self) -> int:
        return sum(h * w * a for (h, w), a in zip(self.feature_sizes, self.anchors_per_location, strict=True))



def _error(message: str):
    from ...errors import UserError

    return UserError(f"architecture.detection: {message}")


def detection_backbone(raw: RawArchitecture, opts: DetectionOptions) -> RawArchitecture:
    """The paper's backbone change for detection (halved last stage), on an unscaled table."""
    from ...architectures.tail import halve_last_stage

    rows, last_conv = list(raw.rows), raw.last_conv
    if opts.reduced_tail:  # the halved stage's first block is feature 0
        rows, last_conv = halve_last_stage(raw, "architecture.detection")
    return replace(raw, rows=tuple(rows), last_conv=last_conv, head_hidden=None, head_activation="none",
                   dropout=0.0)


def _halve(h: int, w: int) -> tuple[int, int]:
    # every strided conv pads (k-1)/2 on both sides: a ceiling halving
    return -(-h // 2), -(-w // 2)


def tap_channels(blocks: tuple[Block, ...], cin: int, i: int) -> int:
    """Channels of feature 0: the tap block's expansion output (or its input, see module doc)."""
    b = blocks[i]
    return b.exp if (not b.fused and b.has_expand(cin)) else cin


def taps_expansion(spec: ArchitectureSpec) -> bool:
    """Feature 0 is the tap block's expansion output (else the block's input)."""
    i = spec.detection.tap_block
    b = spec.blocks[i]
    return not b.fused and b.has_expand(spec.block_inputs()[i])


def resolve_detection(stem_stride: int, blocks: tuple[Block, ...], last_conv: int, resolution: tuple[int, int],
                      width: float, opts: DetectionOptions) -> DetHead:
    """Pick the tap block, size every feature map and count anchors per location."""
    s, h, w = stem_stride, *resolution
    for _ in range(int(math.log2(stem_stride))):
        h, w = _halve(h, w)
    tap, tap_size = None, None
    for i, b in enumerate(blocks):
        if s == 16 and b.stride == 2:
            tap, tap_size = i, (h, w)
        s *= b.stride
        if b.stride == 2:
            h, w = _halve(h, w)
    if tap is None:
        raise _error("SSDLite taps the expansion of the block that strides from 16 to 32, but no block "
                     "does (check the stride column: the backbone must reach output stride 32)")
    if tap == 0:
        raise _error("the block striding from 16 to 32 cannot be the first block (its input is the stem)")
    cin = blocks[tap - 1].out
    feats_c = [tap_channels(blocks, cin, tap), last_conv]
    sizes = [tap_size, (h, w)]
    extras = []
    if opts.extra_layers is None:
        depths = [d for d in DEFAULT_EXTRAS]
        for d in depths:
            if max(h, w) <= 1:  # the default stops at 1x1: another layer would see one pixel again
                break
            extras.append(max(_MIN_DEPTH, int(d * width)))
            h, w = _halve(h, w)
            sizes.append((h, w))
    else:
        for d in opts.extra_layers:
            extras.append(max(_MIN_DEPTH, int(d * width)))
            h, w = _halve(h, w)
            sizes.append((h, w))
    feats_c += extras
    per = len(opts.aspect_ratios) + (1 if opts.interpolated_scale_aspect_ratio > 0 else 0)
    apl = [per] * len(sizes)
    if opts.reduce_boxes_in_lowest_layer:
        apl[0] = 3
    return DetHead(tap, tuple(feats_c), tuple(sizes), tuple(extras), tuple(apl), opts)


# --------------------------------------------------------------------------- anchors


def box_specs(det: DetHead) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) of every anchor per location, per feature map (TF's
    ``create_ssd_anchors``: scales linear from min to max, the interpolated square box at
    sqrt(s_k * s_k+1) with s_m = 1, three boxes (0.1, 1), (s, 2), (s, 1/2) in the lowest layer)."""
    o = det.options
    n = len(det.feature_sizes)
    scales = [o.min_scale + (o.max_scale - o.min_scale) * i / (n - 1) for i in range(n)] if n > 1 else [o.min_scale]
    scales.append(1.0)
    out = []
    for layer in range(n):
        s, nxt = scales[layer], scales[layer + 1]
        if layer == 0 and o.reduce_boxes_in_lowest_layer:
            specs = [(0.1, 1.0), (s, 2.0), (s, 0.5)]
        else:
            specs = [(s, ar) for ar in o.aspect_ratios]
            if o.interpolated_scale_aspect_ratio > 0:
                specs.append((math.sqrt(s * nxt), o.interpolated_scale_aspect_ratio))
        out.append(specs)
    return out


def anchors(spec: ArchitectureSpec) -> np.ndarray:
    """Every anchor as float32 ``[ycenter, xcenter, height, width]`` (normalised 0..1), in the
    heads' output order: feature map, row, column, anchor. NumPy only (deterministic).

    Heights and widths are ``scale / sqrt(ar)`` and ``scale * sqrt(ar)`` times TF's base anchor
    size, which keeps boxes square in pixels on a non-square input (``min(H, W) / H``,
    ``min(H, W) / W``); centres sit at ``(i + 0.5) / size`` of each map.
    """
    det = spec.detection
    ih, iw = spec.resolution
    base_h, base_w = min(ih, iw) / ih, min(ih, iw) / iw
    out = []
    for (fh, fw), specs in zip(det.feature_sizes, box_specs(det), strict=True):
        hs = np.array([s / math.sqrt(ar) * base_h for s, ar in specs])
        ws = np.array([s * math.sqrt(ar) * base_w for s, ar in specs])
        yc = (np.arange(fh) + 0.5) / fh
        xc = (np.arange(fw) + 0.5) / fw
        grid = np.zeros((fh, fw, len(specs), 4))
        grid[..., 0] = yc[:, None, None]
        grid[..., 1] = xc[None, :, None]
        grid[..., 2] = hs
        grid[..., 3] = ws
        out.append(grid.reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def decoding_spec(spec: ArchitectureSpec) -> dict:
    """The one decoding spec (JSON-able) for the manifest, the host decoder and the app."""
    o = spec.detection.options
    return {
        "num_classes": spec.num_classes,  # without background; logits carry num_classes + 1
        "num_anchors": spec.detection.num_anchors,
        "anchor_layout": "ycenter,xcenter,height,width",
        "box_layout": "ymin,xmin,ymax,xmax",
        "box_coder": {"y_scale": o.box_coder[0], "x_scale": o.box_coder[1], "h_scale": o.box_coder[2],
                      "w_scale": o.box_coder[3]},
        "score_conversion": o.score_conversion,
        "score_threshold": o.score_threshold,
        "iou_threshold": o.iou_threshold,
        "max_detections": o.max_detections,
        "use_regular_nms": o.use_regular_nms,
        "detections_per_class": o.detections_per_class,
        "max_classes_per_detection": 1,
    }


# --------------------------------------------------------------------------- counting


def _conv_bn_shapes(shapes: dict, prefix: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
    shapes[f"{prefix}.conv.weight"] = (cout, cin // groups, k, k)
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.bn.{name}"] = (cout,)


def head_shapes(spec: ArchitectureSpec) -> dict[str, tuple]:
    """Canonical names and shapes of the extra layers and predictors (mirrors ``torch_head``)."""
    det, shapes = spec.detection, {}
    cin = spec.last_conv
    for k, out in enumerate(det.extras):
        mid = out // 2
        _conv_bn_shapes(shapes, f"head.extras.{k}.reduce", cin, mid, 1)
        _conv_bn_shapes(shapes, f"head.extras.{k}.dw", mid, mid, 3, groups=mid)
        _conv_bn_shapes(shapes, f"head.extras.{k}.project", mid, out, 1)
        cin = out
    for f, (c, a) in enumerate(zip(det.feature_channels, det.anchors_per_location, strict=True)):
        for branch, n in (("cls", a * (spec.num_classes + 1)), ("box", a * 4)):
            _conv_bn_shapes(shapes, f"head.{branch}.{f}.dw", c, c, 3, groups=c)
            shapes[f"head.{branch}.{f}.pred.weight"] = (n, c, 1, 1)
            shapes[f"head.{branch}.{f}.pred.bias"] = (n,)
    return shapes


def head_stats(spec: ArchitectureSpec) -> list[tuple[str, str, int, int, str, int, int]]:
    """Rows (input, operator, out, stride, nl, MACs, params) of extras and predictors.

    Convolution MACs only; parameters are conv weights, biases and BN affine (torchvision's count).
    """
    det, rows = spec.detection, []
    sizes = det.feature_sizes
    cin, (h, w) = spec.last_conv, sizes[1]
    for k, out in enumerate(det.extras):
        mid = out // 2
        ho, wo = sizes[2 + k]
        macs = h * w * cin * mid + ho * wo * 9 * mid + ho * wo * mid * out
        params = cin * mid + 2 * mid + 9 * mid + 2 * mid + mid * out + 2 * out
        rows.append((f"{h}x{w}x{cin}", "ssdlite extra 1x1, dw 3x3, 1x1", out, 2, "RE6", macs, params))
        cin, (h, w) = out, (ho, wo)
    for f, ((h, w), c, a) in enumerate(zip(sizes, det.feature_channels, det.anchors_per_location, strict=True)):
        n = a * (spec.num_classes + 1 + 4)
        # two predictors: each a dw 3x3 (+BN) and a 1x1 with bias
        macs = 2 * h * w * 9 * c + h * w * c * n
        params = 2 * (9 * c + 2 * c) + c * n + n
        rows.append((f"{h}x{w}x{c}", f"ssdlite predictors f{f}", n, 1, "RE6", macs, params))
    return rows


def sixth_folds(spec: ArchitectureSpec) -> dict[str, float]:
    """The 1/6 the lowered Keras graph folds into the head: convs that read an h-swish output
    (feature 0 when the tap block's activation is h-swish; feature 1 when the last conv's is)."""
    folds: dict[str, float] = {}
    six = 1.0 / 6.0
    det = spec.detection
    b = spec.blocks[det.tap_block]
    if taps_expansion(spec) and b.activation == "hswish":
        folds["head.cls.0.dw.conv.weight"] = folds["head.box.0.dw.conv.weight"] = six
    if spec.last_activation == "hswish":
        folds["head.cls.1.dw.conv.weight"] = folds["head.box.1.dw.conv.weight"] = six
        if det.extras:
            folds["head.extras.0.reduce.conv.weight"] = six
    return folds


# --------------------------------------------------------------------------- twins


def torch_head(spec: ArchitectureSpec, conv_bn):
    """Extras and predictors as an ``nn.Module``: ``forward(features)`` -> (class_logits,
    box_encodings). ``conv_bn`` is the builder's Conv+BN+activation class (names, BN settings)."""
    import torch

    nn = torch.nn
    det = spec.detection
    c1 = spec.num_classes + 1

    class Extra(nn.Sequential):
        def __init__(self, cin, out):
            super().__init__()
            mid = out // 2
            self.reduce = conv_bn(cin, mid, 1, 1, 1, "relu6")
            self.dw = conv_bn(mid, mid, 3, 2, mid, "relu6")
            self.project = conv_bn(mid, out, 1, 1, 1, "relu6")

    class Predictor(nn.Module):
        def __init__(self, c, n):
            super().__init__()
            self.dw = conv_bn(c, c, 3, 1, c, "relu6")
            self.pred = nn.Conv2d(c, n, 1)

        def forward(self, x):
            return self.pred(self.dw(x))

    class SSDLite(nn.Module):
        def __init__(self):
            super().__init__()
            extras, cin = [], spec.last_conv
            for out in det.extras:
                extras.append(Extra(cin, out))
                cin = out
            self.extras = nn.ModuleList(extras)
            pairs = list(zip(det.feature_channels, det.anchors_per_location, strict=True))
            self.cls = nn.ModuleList([Predictor(c, a * c1) for c, a in pairs])
            self.box = nn.ModuleList([Predictor(c, a * 4) for c, a in pairs])

        def forward(self, tap, last):
            feats = [tap, last]
            x = last
            for extra in self.extras:
                x = extra(x)
                feats.append(x)
            n = tap.shape[0]
            # NCHW -> NHWC -> (N, H*W*anchors, k): the anchors' order (row, column, anchor)
            logits = torch.cat([p(f).permute(0, 2, 3, 1).reshape(n, -1, c1) for p, f in zip(self.cls, feats, strict=True)], 1)
            boxes = torch.cat([p(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for p, f in zip(self.box, feats, strict=True)], 1)
            return logits, boxes

    return SSDLite()


def torch_forward(model, x):
    """The detection network's forward: backbone with the feature-0 tap, then the head."""
    det = model.spec.detection
    y = model.stem(x)
    tap = None
    for i, block in enumerate(model.blocks):
        if i != det.tap_block:
            y = block(y)
            continue
        expand = getattr(block, "expand", None)
        if expand is not None and getattr(block, "dw", None) is not None:
            z = tap = expand(y)
        else:
            z, tap = y, y
            if expand is not None:
                z = expand(z)
        for name in ("dw", "se", "project"):
            m = getattr(block, name, None)
            if m is not None:
                z = m(z)
        y = y + z if block.use_res else z
    return model.head(tap, model.last(y))


def keras_head(spec: ArchitectureSpec, tap, last, conv_bn):
    """Extras and predictors in Keras layers (NHWC): ``[class_logits, box_encodings]``."""
    import keras

    layers = keras.layers
    det = spec.detection
    c1 = spec.num_classes + 1
    feats, x = [tap, last], last
    for k, out in enumerate(det.extras):
        mid = out // 2
        x = conv_bn(x, f"head.extras.{k}.reduce", mid, 1, 1, False, "relu6")
        x = conv_bn(x, f"head.extras.{k}.dw", mid, 3, 2, True, "relu6")
        x = conv_bn(x, f"head.extras.{k}.project", out, 1, 1, False, "relu6")
        feats.append(x)
    outs = {"cls": [], "box": []}
    for f, (feat, (h, w), a) in enumerate(zip(feats, det.feature_sizes, det.anchors_per_location, strict=True)):
        for branch, k in (("cls", c1), ("box", 4)):
            y = conv_bn(feat, f"head.{branch}.{f}.dw", None, 3, 1, True, "relu6")
            y = layers.Conv2D(a * k, 1, name=f"head_{branch}_{f}_pred")(y)
            outs[branch].append(layers.Reshape((h * w * a, k), name=f"head_{branch}_{f}_flat")(y))

    def cat(xs, name):
        return xs[0] if len(xs) == 1 else layers.Concatenate(axis=1, name=name)(xs)

    # Identity layers name the outputs (a signature's keys after conversion)
    logits = layers.Identity(name=OUTPUTS[0])(cat(outs["cls"], "head_cls_concat"))
    boxes = layers.Identity(name=OUTPUTS[1])(cat(outs["box"], "head_box_concat"))
    return [logits, boxes]
