"""Hardware-aware advice for an Edge TPU prediction: what falls back, what it costs, the fix."""

from __future__ import annotations

from typing import Any

from .analysis import BAD_DTYPE, BAD_RANK, BAD_VERSION, SECOND_SUBGRAPH, UNSPECIFIED

MINIMALISTIC = ("mobilenet_v3_small_minimalistic", "mobilenet_v3_large_minimalistic")
EDGETPU_PRESET = "mobilenet_edgetpu"
_PRESETS = f"`{MINIMALISTIC[0]}` / `{MINIMALISTIC[1]}` or `{EDGETPU_PRESET}`"


def cpu_share(report: dict[str, Any]) -> dict[str, Any]:
    """Fraction of ops and of MACs (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) on the CPU."""
    rows = report.get("ops", [])
    total = len(rows) or 1
    macs = sum(r.get("macs", 0) for r in rows)
    cpu_macs = sum(r.get("macs", 0) for r in rows if not r["mapped"])
    return {"ops": round(sum(1 for r in rows if not r["mapped"]) / total, 4),
            "macs": round(cpu_macs / macs, 4) if macs else 0.0,
            "cpu_macs": cpu_macs, "macs_total": macs}


def _se_gates(rows: list[dict]) -> list[dict]:
    """MULs that scale a feature map by a per-channel [1,1,1,C] gate: squeeze-excite."""
    out = []
    for r in rows:
        if r["op"] != "MUL" or len(r["inputs"]) != 2:
            continue
        a, b = r["inputs"]
        small, big = sorted((a, b), key=lambda s: _numel(s))
        if len(big) == 4 and len(small) == 4 and small[1:3] == [1, 1] and big[1] * big[2] > 1 \
                and small[3] == big[3]:
            out.append(r)
    return out


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def advise(report: dict[str, Any]) -> dict[str, Any]:
    """``{"cpu_share": {...}, "advice": [{"kind", "message", "fix"}]}`` for a prediction."""
    rows = report.get("ops", [])
    share = cpu_share(report)
    first = report.get("first_cpu_op")
    items: list[dict[str, str]] = []
    cost = (f"{share['ops']:.0%} of ops and {share['macs']:.0%} of MACs run on the CPU "
            f"from op #{first['index']} on") if first else ""

    def add(kind: str, message: str, fix: str, severity: str = "fallback") -> None:
        items.append({"kind": kind, "severity": severity, "message": message, "fix": fix})

    own = [r for r in rows if not r["mapped"] and r["status"] != SECOND_SUBGRAPH]
    by_op: dict[str, list[dict]] = {}
    for r in own:
        by_op.setdefault(r["op"], []).append(r)

    if "HARD_SWISH" in by_op:
        hs = by_op.pop("HARD_SWISH")
        add("hard_swish",
            f"h-swish (HARD_SWISH) is not supported by the Edge TPU: {len(hs)} op(s), the "
            f"first at #{hs[0]['index']}" + (f"; {cost}" if cost else ""),
            "set `lowering: hswish` on the int8/edgetpu target (rewrites x*relu6(x+3)/6 into "
            f"ADD with fused RELU6 + MUL, both mapped), or build the {_PRESETS} preset "
            "(ReLU only)")
    half_pixel = [r for r in by_op.get("RESIZE_BILINEAR", []) if r["status"] == BAD_VERSION]
    if half_pixel:
        by_op["RESIZE_BILINEAR"] = [r for r in by_op["RESIZE_BILINEAR"] if r["status"] != BAD_VERSION]
        add("resize_bilinear",
            f"half-pixel bilinear resize (RESIZE_BILINEAR version 3) is refused by the compiler: "
            f"{len(half_pixel)} op(s), the first at #{half_pixel[0]['index']}" + (f"; {cost}" if cost else ""),
            "`lowering: hswish+bilinear` (the edgetpu default) builds power-of-two upsamplings "
            "from nearest 2x resizes, fixed 2x2 depthwise averages, slices and concatenations (the "
            "same function); it applies when the input height and width are multiples of the "
            "segmentation output stride (LR-ASPP's factors are then powers of two)")
    gates = _se_gates(rows)
    se_cpu = [g for g in gates if not g["mapped"]]
    if se_cpu:
        add("squeeze_excite",
            f"{len(se_cpu)} of {len(gates)} squeeze-excite gates (MUL by a 1x1xC gate) run on "
            f"the CPU, the first at #{se_cpu[0]['index']}",
            f"fix the op that splits the graph first; the {_PRESETS} presets have no SE blocks")
    means = [r for r in by_op.get("MEAN", []) if r["status"] == UNSPECIFIED]
    if means:
        add("mean", f"MEAN at #{means[0]['index']} does not map: {means[0]['reason']}",
            "reduce over height/width only (global average pooling) with channels a multiple "
            "of 4, or use AVERAGE_POOL_2D")
    dtype = [r for rs in by_op.values() for r in rs if r["status"] == BAD_DTYPE]
    if dtype:
        add("dtype", f"{len(dtype)} op(s) work on non-8-bit tensors, the first "
            f"{dtype[0]['op']} at #{dtype[0]['index']}: {dtype[0]['reason']}",
            "build the int8 target (full integer quantization with a representative dataset, "
            "int8/uint8 input and output) before compiling")
    rank = [r for rs in by_op.values() for r in rs if r["status"] == BAD_RANK]
    if rank:
        add("rank", f"{rank[0]['op']} at #{rank[0]['index']}: {rank[0]['reason']}",
            "keep tensors at batch 1 with at most 3 non-trivial dimensions (HWC)")
    handled = {id(r) for r in dtype + rank + means}
    last_mapped = max((r["index"] for r in rows if r["mapped"]), default=-1)
    for op, rs in by_op.items():
        rs = [r for r in rs if id(r) not in handled]
        if not rs:
            continue
        if rs[0]["status"] == UNSPECIFIED and "input adapter" in rs[0]["reason"]:
            add("io", "the float input QUANTIZE runs on the CPU (the rest still maps)",
                "convert with int8/uint8 input and output types to drop the adapter", "info")
            continue
        if all(r["index"] > last_mapped for r in rs):
            add("tail", f"{op} at #{rs[0]['index']} runs on the CPU after the Edge TPU part "
                f"({rs[0]['reason']}); it does not split the graph", "none needed", "info")
            continue
        add(op.lower(), f"{op} at #{rs[0]['index']} ({len(rs)} op(s)) runs on the CPU: "
            f"{rs[0]['reason']}",
            "replace it with a supported op, or move it after the last mapped op "
            "(post-processing) so it does not split the graph")
    big = [r for r in rows if r.get("kernel") == [5, 5] and r["op"] == "DEPTHWISE_CONV_2D"]
    if big:
        add("kernel_5x5", f"{len(big)} 5x5 depthwise convolution(s): they map (no documented "
            "kernel-size limit) but cost 2.8x the MACs of 3x3",
            f"the `{MINIMALISTIC[0]}` / `{MINIMALISTIC[1]}` presets use 3x3 kernels only", "info")
    return {"cpu_share": share, "advice": items}
