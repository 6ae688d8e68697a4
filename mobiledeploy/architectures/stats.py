"""MACs and parameters per stage, computed from the spec alone (no framework needed).

Counted as in the MobileNetV3 paper: multiply-accumulates of convolutions and fully connected
layers (SE included); parameters are every trained tensor (conv, BN affine, dense, biases).
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import ArchitectureSpec


@dataclass
class StageRow:
    input: str
    operator: str
    exp: int | None
    out: int
    se: bool
    nl: str
    stride: int
    macs: int
    params: int


def _conv(h: int, w: int, cin: int, cout: int, k: int, stride: int, groups: int = 1):
    ho, wo = (h + stride - 1) // stride, (w + stride - 1) // stride
    macs = ho * wo * k * k * (cin // groups) * cout
    params = k * k * (cin // groups) * cout + 2 * cout  # + BN gamma/beta
    return ho, wo, macs, params


_NL = {"relu": "RE", "relu6": "RE6", "hswish": "HS", "none": "-"}


def stage_table(spec: ArchitectureSpec) -> list[StageRow]:
    """One row per stem / bottleneck / last conv / pool / head layer, like the paper's tables."""
    h, w = spec.resolution
    rows: list[StageRow] = []
    c = spec.in_channels
    ho, wo, m, p = _conv(h, w, c, spec.stem_out, spec.stem_kernel, spec.stem_stride)
    rows.append(StageRow(f"{h}x{w}x{c}", f"conv2d {spec.stem_kernel}x{spec.stem_kernel}", None,
                         spec.stem_out, False, _NL[spec.stem_activation], spec.stem_stride, m, p))
    h, w, c = ho, wo, spec.stem_out
    for b in spec.blocks:
        macs = params = 0
        hin, win = h, w
        if b.fused:
            if b.has_expand(c):
                h, w, m, p = _conv(h, w, c, b.exp, b.kernel, b.stride)
                macs, params = macs + m, params + p
        else:
            if b.has_expand(c):
                _, _, m, p = _conv(h, w, c, b.exp, 1, 1)
                macs, params = macs + m, params + p
            h, w, m, p = _conv(h, w, b.exp, b.exp, b.kernel, b.stride, groups=b.exp)
            macs, params = macs + m, params + p
        if b.se:
            macs += 2 * b.exp * b.se_channels
            params += 2 * b.exp * b.se_channels + b.exp + b.se_channels
        _, _, m, p = _conv(h, w, b.exp, b.out, 1, 1)
        macs, params = macs + m, params + p
        op = f"{'fused' if b.fused else 'bneck'} {b.kernel}x{b.kernel}" + (f" d{b.dilation}" if b.dilation > 1 else "")
        rows.append(StageRow(f"{hin}x{win}x{c}", op, b.exp, b.out, b.se, _NL[b.activation], b.stride,
                             macs, params))
        c = b.out
    _, _, m, p = _conv(h, w, c, spec.last_conv, 1, 1)
    rows.append(StageRow(f"{h}x{w}x{c}", "conv2d 1x1", None, spec.last_conv, False,
                         _NL[spec.last_activation], 1, m, p))
    if spec.detection:
        from ..tasks.detection.ssdlite import head_stats as ssd_stats

        rows += [StageRow(inp, op, None, out, False, nl, s, m, p) for inp, op, out, s, nl, m, p in ssd_stats(spec)]
        return rows
    if spec.segmentation:
        from ..tasks.segmentation.lraspp import head_stats

        rows += [StageRow(inp, op, None, out, False, nl, s, m, p) for inp, op, out, s, nl, m, p in head_stats(spec)]
        return rows
    if spec.head_plugin:
        from .heads import head_module

        rows += [StageRow(inp, op, None, out, False, nl, s, m, p)
                 for inp, op, out, s, nl, m, p in head_module(spec).head_stats(spec, h, w)]
        return rows
    rows.append(StageRow(f"{h}x{w}x{spec.last_conv}", "avg pool", None, spec.last_conv, False, "-", 1,
                         0, 0))
    c = spec.last_conv
    if spec.head_hidden:
        rows.append(StageRow(f"1x1x{c}", "fc (conv2d 1x1, NBN)", None, spec.head_hidden, False,
                             _NL[spec.head_activation], 1, c * spec.head_hidden,
                             c * spec.head_hidden + spec.head_hidden))
        c = spec.head_hidden
    rows.append(StageRow(f"1x1x{c}", "fc (conv2d 1x1, NBN)", None, spec.num_classes, False, "-", 1,
                         c * spec.num_classes, c * spec.num_classes + spec.num_classes))
    return rows


def totals(spec: ArchitectureSpec) -> tuple[int, int]:
    """(MACs, params) of the whole network."""
    rows = stage_table(spec)
    return sum(r.macs for r in rows), sum(r.params for r in rows)
