"""The MobileNetV3 search space as data: stem, bottleneck rows, last stage, head.

Rows are the paper's tables: ``[kernel, exp, out, se, activation, stride]`` where ``exp`` is the
expansion size in channels (the paper's "#exp" column) before the width multiplier. A row may
also be a mapping with ``fused: true`` (MobileNetEdgeTPU's fused inverted bottleneck: one full
kxk conv expands, a 1x1 conv projects) or ``residual: false``.

Channel counts are rounded to multiples of 8 as in the reference implementation
(``_make_divisible``: never more than 10% below the unrounded value).

Two framework conventions change the function of the same table, and checkpoints carry one of
each (the definition's ``conventions:``):

- ``channel_rounding``: ``torchvision`` rounds ``exp x width`` for every row and scales the stem;
  ``tf_slim`` (keras.applications, TF-slim, TF Hub) keeps the stem at its table value and rounds
  ``(exp / table input channels) x rounded input channels``, the expansion *ratio* applied to the
  channels the block really receives. The two agree at width 1.0 and differ below it.
- ``padding``: ``symmetric`` pads (k-1)/2 on every side; ``tf_same`` pads as TensorFlow's
  "same" (``tf_same_pads``), which differs only for a stride-2 conv on an even size: (0,1) for
  3x3 and (1,2) for 5x5 instead of (1,1) and (2,2). Output sizes are the same either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from .tail import halve_last_stage

Activation = Literal["relu", "relu6", "hswish", "none"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "same" along one axis of ``size``.

    The output has ceil(size / stride) positions; the padding that needs is split with the
    odd one after, as TensorFlow (and keras.applications' ``correct_pad``) does.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class Block:
    """One bottleneck row, with channel counts already scaled and rounded."""

    kernel: int
    exp: int
    out: int
    se: bool
    activation: Activation
    stride: int
    fused: bool = False
    residual: bool = True
    se_channels: int = 0  # squeeze channels when se
    dilation: int = 1  # >1 on a segmentation backbone whose late strides were removed (lraspp.py)

    def has_expand(self, cin: int) -> bool:
        """An expansion conv exists unless it would map cin to cin (as in the reference
        implementation: MobileNetEdgeTPU's first fused block is a bare 1x1 projection)."""
        return self.exp != cin or (self.fused and self.stride > 1)


@dataclass(frozen=True)
class SegmentationOptions:
    """LR-ASPP options before resolution (the definition's ``architecture.segmentation``).

    ``reduced_tail`` halves the channels of the last stage and ``output_stride`` removes late
    strides (dilating what follows) as the MobileNetV3 paper does for segmentation; ``None`` keeps
    the classification backbone's strides.
    """

    inter_channels: int = 128
    low_level_stride: int = 8
    output_stride: int | None = 16
    reduced_tail: bool = True


@dataclass(frozen=True)
class SegHead:
    """A resolved LR-ASPP head: which block feeds the low-level branch and the channel counts."""

    inter_channels: int
    low_block: int  # index in ArchitectureSpec.blocks whose output is the low-level feature
    low_channels: int
    low_stride: int
    high_stride: int  # stride of the last conv's output (the high-level feature)
    output_stride: int | None = 16
    reduced_tail: bool = True


@dataclass(frozen=True)
class ArchitectureSpec:
    """A resolved, concrete network: everything the builders and the MAC counter need."""

    name: str
    resolution: tuple[int, int]
    in_channels: int
    num_classes: int
    stem_out: int
    stem_kernel: int
    stem_stride: int
    stem_activation: Activation
    blocks: tuple[Block, ...]
    last_conv: int
    last_activation: Activation
    head_hidden: int | None  # MobileNetV3: a 1x1 "conv" (Linear) after pooling; None: straight to logits
    head_activation: Activation
    dropout: float = 0.2
    width_multiplier: float = 1.0
    bn_eps: float = 1e-3
    padding: Literal["symmetric", "tf_same"] = "symmetric"
    channel_rounding: Literal["torchvision", "tf_slim"] = "torchvision"
    # semantic segmentation: the LR-ASPP head replaces the pooled classifier (see lraspp.py)
    segmentation: SegHead | None = None
    # object detection: the SSDLite head replaces the pooled classifier (see ssdlite.py)
    detection: Any = None  # DetHead (tasks/detection/ssdlite.py)
    # a task's own head on the pooled features (``heads.py``): (module, option, ...) or None
    head_plugin: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def conv_pads(self, in_hw: tuple[int, int], kernel: int, stride: int,
                  dilation: int = 1) -> tuple[tuple[int, int], ...]:
        """((top, bottom), (left, right)) zero padding of a conv on an ``in_hw`` input.

        A dilated conv pads as a conv of its effective kernel ``(kernel - 1) * dilation + 1``."""
        kernel = (kernel - 1) * dilation + 1
        if self.padding == "tf_same":
            return tuple(tf_same_pads(n, kernel, stride) for n in in_hw)
        p = (kernel - 1) // 2
        return ((p, p), (p, p))

    def conv_inputs(self) -> dict[str, tuple[int, int]]:
        """Spatial input size of every spatial (k > 1) conv, by canonical module prefix."""
        h, w = self.resolution
        sizes = {"stem": (h, w)}
        h, w = -(-h // self.stem_stride), -(-w // self.stem_stride)
        cin = self.stem_out
        for i, b in enumerate(self.blocks):
            if b.fused:
                if b.has_expand(cin):
                    sizes[f"blocks.{i}.expand"] = (h, w)
            else:
                sizes[f"blocks.{i}.dw"] = (h, w)
            h, w, cin = -(-h // b.stride), -(-w // b.stride), b.out
        return sizes

    def block_inputs(self) -> list[int]:
        """Input channel count of every block."""
        ins, c = [], self.stem_out
        for b in self.blocks:
            ins.append(c)
            c = b.out
        return ins

    def uses(self, activation: str) -> bool:
        acts = {self.stem_activation, self.last_activation, self.head_activation}
        acts |= {b.activation for b in self.blocks}
        return activation in acts


@dataclass(frozen=True)
class RawRow:
    kernel: int
    exp: float  # channels before the width multiplier
    out: int
    se: bool
    activation: Activation
    stride: int
    fused: bool = False
    residual: bool = True
    dilation: int = 1


@dataclass(frozen=True)
class RawArchitecture:
    """A preset or a user table before width scaling and rounding."""

    stem: tuple[int, int, int, Activation]  # out, kernel, stride, activation
    rows: tuple[RawRow, ...]
    last_conv: int
    last_activation: Activation
    head_hidden: int | None
    head_activation: Activation
    dropout: float = 0.2
    extra: dict = field(default_factory=dict)


def _rows(table, fused_upto: int = 0) -> tuple[RawRow, ...]:
    return tuple(
        RawRow(k, e, o, bool(se), act, s, fused=i < fused_upto) for i, (k, e, o, se, act, s) in enumerate(table)
    )


_SMALL = [
    (3, 16, 16, 1, "relu", 2),
    (3, 72, 24, 0, "relu", 2),
    (3, 88, 24, 0, "relu", 1),
    (5, 96, 40, 1, "hswish", 2),
    (5, 240, 40, 1, "hswish", 1),
    (5, 240, 40, 1, "hswish", 1),
    (5, 120, 48, 1, "hswish", 1),
    (5, 144, 48, 1, "hswish", 1),
    (5, 288, 96, 1, "hswish", 2),
    (5, 576, 96, 1, "hswish", 1),
    (5, 576, 96, 1, "hswish", 1),
]
_LARGE = [
    (3, 16, 16, 0, "relu", 1),
    (3, 64, 24, 0, "relu", 2),
    (3, 72, 24, 0, "relu", 1),
    (5, 72, 40, 1, "relu", 2),
    (5, 120, 40, 1, "relu", 1),
    (5, 120, 40, 1, "relu", 1),
    (3, 240, 80, 0, "hswish", 2),
    (3, 200, 80, 0, "hswish", 1),
    (3, 184, 80, 0, "hswish", 1),
    (3, 184, 80, 0, "hswish", 1),
    (3, 480, 112, 1, "hswish", 1),
    (3, 672, 112, 1, "hswish", 1),
    (5, 672, 160, 1, "hswish", 2),
    (5, 960, 160, 1, "hswish", 1),
    (5, 960, 160, 1, "hswish", 1),
]


def _minimalistic(rows: list) -> list:
    """No SE, no h-swish, 3x3 kernels only (the accelerator-friendly variant)."""
    return [(3, e, o, 0, "relu", s) for (_k, e, o, _se, _a, s) in rows]


def _edgetpu_rows() -> tuple[RawRow, ...]:
    # (kernel, expansion factor, out, stride, fused, residual)
    table = [
        (3, 1, 16, 1, True, True),
        (3, 8, 32, 2, True, True),
        (3, 4, 32, 1, True, True),
        (3, 4, 32, 1, True, True),
        (3, 4, 32, 1, True, True),
        (3, 8, 48, 2, True, True),
        (3, 4, 48, 1, True, True),
        (3, 4, 48, 1, True, True),
        (3, 4, 48, 1, True, True),
        (3, 8, 96, 2, False, True),
        (3, 4, 96, 1, False, True),
        (3, 4, 96, 1, False, True),
        (3, 4, 96, 1, False, True),
        (3, 8, 96, 1, False, False),
        (3, 4, 96, 1, False, True),
        (3, 4, 96, 1, False, True),
        (3, 4, 96, 1, False, True),
        (5, 8, 160, 2, False, True),
        (5, 4, 160, 1, False, True),
        (5, 4, 160, 1, False, True),
        (5, 4, 160, 1, False, True),
        (3, 8, 192, 1, False, True),
    ]
    rows, cin = [], 32
    for k, ef, out, s, fused, res in table:
        rows.append(RawRow(k, cin * ef, out, False, "relu", s, fused=fused, residual=res))
        cin = out
    return tuple(rows)


PRESETS: dict[str, RawArchitecture] = {
    "mobilenet_v3_small": RawArchitecture(
        (16, 3, 2, "hswish"), _rows(_SMALL), 576, "hswish", 1024, "hswish"
    ),
    "mobilenet_v3_large": RawArchitecture(
        (16, 3, 2, "hswish"), _rows(_LARGE), 960, "hswish", 1280, "hswish"
    ),
    "mobilenet_v3_small_minimalistic": RawArchitecture(
        (16, 3, 2, "relu"), _rows(_minimalistic(_SMALL)), 576, "relu", 1024, "relu"
    ),
    "mobilenet_v3_large_minimalistic": RawArchitecture(
        (16, 3, 2, "relu"), _rows(_minimalistic(_LARGE)), 960, "relu", 1280, "relu"
    ),
    "mobilenet_edgetpu": RawArchitecture(
        (32, 3, 2, "relu"), _edgetpu_rows(), 1280, "relu", None, "none"
    ),
}


# The paper's segmentation changes to the table and the LR-ASPP head's wiring (lraspp.py builds it)

def _seg_error(message: str):
    from ..errors import UserError

    return UserError(f"architecture.segmentation: {message}")


def segmentation_backbone(raw: RawArchitecture, opts: SegmentationOptions) -> RawArchitecture:
    """The paper's backbone changes for segmentation, applied to an unscaled table."""
    rows, last_conv = list(raw.rows), raw.last_conv
    if opts.reduced_tail:
        rows, last_conv = halve_last_stage(raw, "architecture.segmentation")
    if opts.output_stride is not None:
        total, dilation = raw.stem[2], 1
        for i, r in enumerate(rows):
            if r.stride > 1 and total * r.stride > opts.output_stride:
                dilation *= r.stride
                rows[i] = replace(r, stride=1, dilation=dilation, residual=False)
            else:
                total *= r.stride
                rows[i] = replace(r, dilation=dilation)
    return replace(raw, rows=tuple(rows), last_conv=last_conv, head_hidden=None, head_activation="none",
                   dropout=0.0)


def block_strides(stem_stride: int, blocks: tuple[Block, ...]) -> list[int]:
    """Cumulative output stride after every block."""
    out, s = [], stem_stride
    for b in blocks:
        s *= b.stride
        out.append(s)
    return out


def resolve_head(stem_stride: int, blocks: tuple[Block, ...], last_conv: int,
                 opts: SegmentationOptions) -> SegHead:
    """Pick the low-level block (the last one whose output is at ``low_level_stride``)."""
    strides = block_strides(stem_stride, blocks)
    at = [i for i, s in enumerate(strides) if s == opts.low_level_stride]
    if not at:
        raise _seg_error(f"no block output at stride {opts.low_level_stride} for the low-level branch "
                     f"(block strides: {strides}); choose low_level_stride from {sorted(set(strides))}")
    high = strides[-1] if strides else stem_stride
    if high <= opts.low_level_stride:
        raise _seg_error(f"the high-level feature (stride {high}) must be coarser than the low-level one "
                     f"(stride {opts.low_level_stride}); raise output_stride or lower low_level_stride")
    low = at[-1]
    return SegHead(opts.inter_channels, low, blocks[low].out, opts.low_level_stride, high,
                   opts.output_stride, opts.reduced_tail)


def resolve(
    raw: RawArchitecture,
    *,
    name: str,
    width_multiplier: float = 1.0,
    num_classes: int = 1000,
    resolution: tuple[int, int] = (224, 224),
    in_channels: int = 3,
    dropout: float | None = None,
    padding: str = "symmetric",
    channel_rounding: str = "torchvision",
    segmentation: SegmentationOptions | None = None,
    detection: Any = None,  # DetectionOptions (tasks/detection/ssdlite.py): resolves itself
    head_plugin: tuple[str, ...] | None = None,
) -> ArchitectureSpec:
    """Scale channels by the width multiplier, round them, and freeze the result.

    ``channel_rounding`` and ``padding`` are the conventions of the module docstring. With
    ``segmentation`` the backbone gets the paper's segmentation changes first and the pooled
    classifier is replaced by an LR-ASPP head (``lraspp.py``); with ``detection`` the backbone gets
    the paper's detection change (reduced tail) and an SSDLite head (``ssdlite.py``).
    """
    if segmentation is not None and detection is not None:
        raise ValueError("give segmentation or detection, not both")
    if detection is not None:
        if padding != "symmetric":
            raise ValueError("the SSDLite head pads symmetrically; detection needs padding: symmetric")
        raw = detection.backbone(raw)
    if segmentation is not None:
        raw = segmentation_backbone(raw, segmentation)
    w = width_multiplier
    slim = channel_rounding == "tf_slim"
    if channel_rounding not in ("torchvision", "tf_slim"):
        raise ValueError(f"channel_rounding must be torchvision or tf_slim, not {channel_rounding!r}")
    if padding not in ("symmetric", "tf_same"):
        raise ValueError(f"padding must be symmetric or tf_same, not {padding!r}")

    def ch(c: float) -> int:
        return make_divisible(c * w, 8)

    stem_out = raw.stem[0] if slim else ch(raw.stem[0])
    blocks = []
    cin_raw, cin = raw.stem[0], stem_out
    for r in raw.rows:
        out = ch(r.out)
        # TF-slim: the ratio first, then times the real input channels (keras' _depth(in * ratio))
        exp = make_divisible(cin * (r.exp / cin_raw), 8) if slim else ch(r.exp)
        se_ch = make_divisible(exp // 4, 8) if r.se else 0
        blocks.append(Block(r.kernel, exp, out, r.se, r.activation, r.stride, r.fused, r.residual, se_ch,
                            r.dilation))
        cin_raw, cin = r.out, out
    # finegrain classification mode: the final wide layer keeps full width below 1.0
    head_w = max(w, 1.0)
    det_head = None
    if detection is not None:  # no pooled classifier: the last conv is a width-scaled feature
        last, hidden = ch(raw.last_conv), None
        det_head = detection.resolve(raw.stem[2], tuple(blocks), last, resolution, w)
    elif segmentation is not None:  # no pooled classifier: the last conv is a width-scaled feature
        last, hidden = ch(raw.last_conv), None
    elif raw.head_hidden is None:
        last, hidden = make_divisible(raw.last_conv * head_w, 8), None
    else:
        last = make_divisible(cin * (raw.last_conv / cin_raw), 8) if slim else ch(raw.last_conv)
        hidden = make_divisible(raw.head_hidden * head_w, 8)
    seg_head = None
    if segmentation is not None:
        seg_head = resolve_head(raw.stem[2], tuple(blocks), last, segmentation)
        hidden = None
    return ArchitectureSpec(
        name=name,
        resolution=resolution,
        in_channels=in_channels,
        num_classes=num_classes,
        stem_out=stem_out,
        stem_kernel=raw.stem[1],
        stem_stride=raw.stem[2],
        stem_activation=raw.stem[3],
        blocks=tuple(blocks),
        last_conv=last,
        last_activation=raw.last_activation,
        head_hidden=hidden,
        head_activation="none" if seg_head or det_head else raw.head_activation,
        dropout=0.0 if seg_head or det_head else raw.dropout if dropout is None else dropout,
        width_multiplier=w,
        padding=padding,
        channel_rounding=channel_rounding,
        segmentation=seg_head,
        detection=det_head,
        head_plugin=head_plugin,
    )


def preset(
    name: str,
    width_multiplier: float = 1.0,
    num_classes: int = 1000,
    resolution: int | tuple[int, int] = 224,
    padding: str = "symmetric",
    channel_rounding: str = "torchvision",
    segmentation: SegmentationOptions | None = None,
    detection: Any = None,  # DetectionOptions (tasks/detection/ssdlite.py): resolves itself
    head_plugin: tuple[str, ...] | None = None,
) -> ArchitectureSpec:
    """A named preset at a width and resolution (with an LR-ASPP head when ``segmentation``
    is given, an SSDLite head when ``detection`` is). Unknown names list the valid ones."""
    from ..errors import UserError

    if name not in PRESETS:
        raise UserError(f"unknown architecture preset '{name}'; allowed: {', '.join(PRESETS)}")
    res = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    return resolve(
        PRESETS[name], name=name, width_multiplier=width_multiplier, num_classes=num_classes,
        resolution=res, padding=padding, channel_rounding=channel_rounding, segmentation=segmentation,
        detection=detection, head_plugin=head_plugin,
    )

