"""Predict what Google's ``edgetpu_compiler`` does with a .tflite model, op by op.

The rules are the documented ones (Coral, "TensorFlow models on the Edge TPU"):

* tensors are 8-bit quantized; parameters (weights, biases, shape arguments) are compile-time
  constants; tensor sizes are static;
* a tensor may have more than 3 dimensions only if the dimensions outside the innermost 3 are 1;
* only the operations in the supported-operations table map, within their listed limits;
* the compiler builds ONE Edge TPU subgraph: the first op that cannot map and every op that
  depends on it run on the CPU ("More than one subgraph is not supported").

Statuses are the compiler's own log strings, so a prediction and a real log line up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tflite.reader import OpInfo, SubgraphInfo, TensorInfo, TFLiteModel

MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
BAD_DTYPE = "Operation is working on an unsupported data type"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
SECOND_SUBGRAPH = "More than one subgraph is not supported"
BAD_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
BAD_VERSION = "Operation version not supported"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

_INT8 = {"INT8", "UINT8"}
# constant parameter tensors may be 32/64-bit: int32 biases, shape/axis/padding arguments
_PARAM_DTYPES = _INT8 | {"INT32", "INT64"}

Check = Callable[[OpInfo, SubgraphInfo], "str | None"]


def _t(sg: SubgraphInfo, idx: int) -> TensorInfo | None:
    return sg.tensors[idx] if 0 <= idx < len(sg.tensors) else None


def _in_shape(op: OpInfo, sg: SubgraphInfo, k: int = 0) -> list[int]:
    t = _t(sg, op.inputs[k]) if len(op.inputs) > k else None
    return t.shape if t else []


def _no_fused_activation(op: OpInfo, sg: SubgraphInfo) -> str | None:
    act = op.options.get("fused_activation_function", "NONE")
    if act not in ("NONE", 0):
        return f"fused activation {act} is not allowed on {op.op} (documented limit)"
    return None


def _same_dilation(op: OpInfo, sg: SubgraphInfo) -> str | None:
    h, w = op.options.get("dilation_hfactor", 1), op.options.get("dilation_wfactor", 1)
    if h != w:
        return f"dilation differs in y ({h}) and x ({w}); both must be equal (documented limit)"
    return None


def _concatenation(op: OpInfo, sg: SubgraphInfo) -> str | None:
    bad = _no_fused_activation(op, sg)
    if bad:
        return bad
    consts = [i for i in op.inputs if (t := _t(sg, i)) is not None and t.is_constant]
    if consts and len(op.inputs) != 2:
        return ("a constant input is allowed only with exactly 2 inputs (an all-zero "
                "padding constant; documented limit)")
    return None


def _innermost_only(shape: list[int]) -> bool:
    """True when at most one dimension exceeds 1 (an effectively 1-D tensor)."""
    return sum(1 for d in shape if d > 1) <= 1


def _fully_connected(op: OpInfo, sg: SubgraphInfo) -> str | None:
    fmt = op.options.get("weights_format", "DEFAULT")
    if fmt not in ("DEFAULT", 0):
        return f"weights format {fmt}; only the default format maps (documented limit)"
    out = _t(sg, op.outputs[0])
    if out and not _innermost_only(out.shape):
        return f"output {out.shape} is not one-dimensional (documented limit)"
    return None


def _pack(op: OpInfo, sg: SubgraphInfo) -> str | None:
    out = _t(sg, op.outputs[0])
    axis = op.options.get("axis", 0)
    if out is not None and len(out.shape) >= 2 and axis % len(out.shape) == 0:
        return "packing along the batch dimension (documented limit)"
    return None


def _values(op: OpInfo, sg: SubgraphInfo, k: int) -> list[int] | None:
    t = _t(sg, op.inputs[k]) if len(op.inputs) > k else None
    return t.values if t is not None else None


def _reduce(op: OpInfo, sg: SubgraphInfo, z_multiple_of_4: bool) -> str | None:
    shape_in = _in_shape(op, sg)
    rank = len(shape_in)
    axes = _values(op, sg, 1)
    if not axes or not rank:
        return None
    axes = [a % rank for a in axes]
    if rank >= 2 and 0 in axes:
        return "reduction over the batch dimension (documented limit)"
    if z_multiple_of_4 and rank - 1 in axes and shape_in[-1] % 4:
        return (f"reduction over z (channels={shape_in[-1]}) needs z to be a multiple of 4 "
                "(documented limit)")
    return None


def _pad(op: OpInfo, sg: SubgraphInfo) -> str | None:
    pads = _values(op, sg, 1)  # [[before, after] per dimension], flattened
    if pads and len(pads) >= 8 and (pads[0] or pads[1]):
        return "padding along the batch dimension (documented limit)"
    return None


def _prelu(op: OpInfo, sg: SubgraphInfo) -> str | None:
    alpha = _t(sg, op.inputs[1]) if len(op.inputs) > 1 else None
    if alpha and not _innermost_only(alpha.shape[:-1] + [1]) and len(alpha.shape) > 1:
        return f"alpha {alpha.shape} must be 1-D (only the innermost dimension > 1)"
    return None


# Resize size limits. Coral's op table gives none: "Depending on input/output size, this operation
# may not be mapped to the Edge TPU to avoid loss in precision" (coral.ai/docs/edgetpu/models-intro,
# ResizeBilinear and ResizeNearestNeighbor), and the compiler's rule is not public. What public
# compiler output shows, and nothing more, is used here:
#
# * refused: RESIZE_BILINEAR 1x1 -> 33x33 (x33) in Coral's own DeepLab v3 (shared/edgetpu-reference:
#   the compiled model keeps it on the CPU and cuts the graph there; the x1 and x15.5 resizes after
#   it are on the CPU already as its dependants, so they say nothing about their factors);
# * mapped: RESIZE_NEAREST_NEIGHBOR x2 (compiler 16.0: YOLOv5s at 224 with 7x7 -> 14x14 and
#   14x14 -> 28x28 upsamplings, the log in jveitchmichaelis/edgetpu-yolo's README; YOLOv7-tiny,
#   WongKinYiu/yolov7 #1672);
#   RESIZE_BILINEAR x2 (64x64 -> 128x128, google-coral/edgetpu #31, where the same model at
#   512x512 input, 256x256x32 -> 512x512, was refused by the compiler of the time, 2.0; a
#   maintainer later pointed to an updated compiler without saying what changed).
#
# A factor at or above the refused one is predicted refused; a factor at or below the mapped one
# is predicted mapped; anything between is predicted mapped and marked as a guess in the output.
REFUSED_RESIZE_FACTOR = {"RESIZE_BILINEAR": 33.0}
MAPPED_RESIZE_FACTOR = {"RESIZE_BILINEAR": 2.0, "RESIZE_NEAREST_NEIGHBOR": 2.0}
_RESIZE_EVIDENCE = {
    "RESIZE_BILINEAR": ("1x1 -> 33x33 refused in Coral's DeepLab v3 (shared/edgetpu-reference); x2 mapped "
                        "(google-coral/edgetpu #31)"),
    "RESIZE_NEAREST_NEIGHBOR": ("x2 mapped by compiler 16.0 (jveitchmichaelis/edgetpu-yolo README, "
                                "WongKinYiu/yolov7 #1672)"),
}


def _resize_factor(op: OpInfo, sg: SubgraphInfo) -> float | None:
    shape = _in_shape(op, sg)
    out = list(sg.tensors[op.outputs[0]].shape) if op.outputs and op.outputs[0] >= 0 else []
    if len(shape) == 4 and len(out) == 4 and all(d > 0 for d in shape[1:3]):
        return max(out[1] / shape[1], out[2] / shape[2])
    return None


def _resize(op: OpInfo, sg: SubgraphInfo) -> str | None:
    shape = _in_shape(op, sg)
    if len(shape) == 4 and shape[0] > 1:
        return f"input {shape} is not a 3-dimensional tensor (documented limit)"
    factor = _resize_factor(op, sg)
    refused = REFUSED_RESIZE_FACTOR.get(op.op)
    if factor is not None and refused is not None and factor >= refused:
        out = sg.tensors[op.outputs[0]].shape
        return (f"resize {shape[1]}x{shape[2]} -> {out[1]}x{out[2]} (x{factor:.3g}): the compiler refused "
                f"x{refused:g} ({_RESIZE_EVIDENCE[op.op]}); size-dependent, to avoid precision loss")
    return None


def _resize_guess(op: OpInfo, sg: SubgraphInfo) -> str | None:
    factor = _resize_factor(op, sg)
    mapped = MAPPED_RESIZE_FACTOR.get(op.op)
    if factor is None or mapped is None or factor <= mapped:
        return None
    refused = REFUSED_RESIZE_FACTOR.get(op.op)
    between = f"between x{mapped:g} (mapped) and x{refused:g} (refused)" if refused else \
        f"above x{mapped:g} (the largest factor a public log shows mapped)"
    return (f"{op.op} x{factor:.3g} predicted mapped, a guess: no public compiler log {between}; "
            f"evidence: {_RESIZE_EVIDENCE[op.op]}")


# mapped ops whose mapping no public document or log backs: their note is a guess, said so
GUESSES: dict[str, Check] = {"RESIZE_BILINEAR": _resize_guess, "RESIZE_NEAREST_NEIGHBOR": _resize_guess}


def _softmax(op: OpInfo, sg: SubgraphInfo) -> str | None:
    shape = _in_shape(op, sg)
    if not _innermost_only(shape):
        return f"input {shape} is not 1-D (documented limit)"
    if shape and math.prod(shape) > 16000:
        return f"input has {math.prod(shape)} elements; at most 16,000 (documented limit)"
    return None


def _squeeze(op: OpInfo, sg: SubgraphInfo) -> str | None:
    shape = _in_shape(op, sg)
    dims = op.options.get("squeeze_dims") or [i for i, d in enumerate(shape) if d == 1]
    # only leading 1s may go (no relayout): every squeezed axis precedes all non-1 axes
    first_big = next((i for i, d in enumerate(shape) if d > 1), len(shape))
    if any((d % len(shape) if shape else d) > first_big for d in dims):
        return f"squeezes a non-leading dimension of {shape}; needs a relayout (documented limit)"
    return None


def _strided_slice(op: OpInfo, sg: SubgraphInfo) -> str | None:
    if op.options.get("ellipsis_mask", 0) or op.options.get("new_axis_mask", 0):
        return "ellipsis_mask/new_axis_mask must be 0 (documented limit)"
    strides = _t(sg, op.inputs[3]) if len(op.inputs) > 3 else None
    if strides is not None and not strides.is_constant:
        return "strides are not compile-time constants"
    if strides is not None and strides.values and any(v != 1 for v in strides.values):
        return f"strides {strides.values}: all must be 1 (documented limit)"
    return None


def _lstm(op: OpInfo, sg: SubgraphInfo) -> str | None:
    return None  # UNIDIRECTIONAL_SEQUENCE_LSTM / LSTM are unidirectional by construction


# The documented supported-operations table (TFLite builtin names) with each op's limits.
SUPPORTED: dict[str, Check | None] = {
    "ADD": None, "AVERAGE_POOL_2D": _no_fused_activation, "CONCATENATION": _concatenation,
    "CONV_2D": _same_dilation, "DEPTHWISE_CONV_2D": _same_dilation, "EXPAND_DIMS": None,
    "FULLY_CONNECTED": _fully_connected, "L2_NORMALIZATION": None, "LOGISTIC": None,
    "LSTM": _lstm, "UNIDIRECTIONAL_SEQUENCE_LSTM": _lstm, "MAXIMUM": None,
    "MAX_POOL_2D": _no_fused_activation,
    "MEAN": lambda op, sg: _reduce(op, sg, z_multiple_of_4=True),
    "MINIMUM": None, "MUL": None, "PACK": _pack, "PAD": _pad,
    "PRELU": _prelu, "QUANTIZE": None,
    "REDUCE_MAX": lambda op, sg: _reduce(op, sg, z_multiple_of_4=False),
    "REDUCE_MIN": lambda op, sg: _reduce(op, sg, z_multiple_of_4=False),
    "RELU": None, "RELU6": None, "RELU_N1_TO_1": None, "RESHAPE": None,
    "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize, "RSQRT": None,
    "SLICE": None, "SOFTMAX": _softmax, "SPACE_TO_DEPTH": None, "SPLIT": None,
    "SQUEEZE": _squeeze, "STRIDED_SLICE": _strided_slice, "SUB": None,
    "SUM": lambda op, sg: _reduce(op, sg, z_multiple_of_4=False),
    "SQUARED_DIFFERENCE": None, "TANH": None, "TRANSPOSE": None, "TRANSPOSE_CONV": None,
}

# The ops of the lowered bilinear upsampling (tasks/segmentation/upsample.py), as today's converter
# writes them in int8, and what stands behind predicting them mapped:
# * RESIZE_NEAREST_NEIGHBOR version 2 (legacy sampling, x2 only): Coral's table (3-D tensors;
#   size-dependent, see the resize rules above); logged mapped at x2 by compiler 16.0
#   (jveitchmichaelis/edgetpu-yolo README, WongKinYiu/yolov7 #1672; version 3, half-pixel, is refused);
# * DEPTHWISE_CONV_2D version 3, 2x2 kernel, stride 1, VALID: the table's only limit is equal
#   dilation in x and y; no kernel-size limit is documented and none is applied;
# * STRIDED_SLICE version 2, strides 1, no ellipsis/new-axis mask: the table's limits (_strided_slice);
#   logged mapped by compiler 16.0 in YOLOv5s (jveitchmichaelis/edgetpu-yolo README);
# * CONCATENATION version 2, no constant input, no fused activation: the table's limits
#   (_concatenation); logged mapped in the same YOLOv5s and YOLOv7-tiny logs.
# No public log shows any of them refused at these versions, so no version limit is applied
# (MAX_MAPPED_VERSION / MAX_PARSED_VERSION below hold the observed refusals only).

# why well-known ops are missing from the table: named in the reason and used by advice
_NOT_SUPPORTED_WHY = {
    "HARD_SWISH": "h-swish has no Edge TPU kernel (google-coral/edgetpu #353)",
    "LEAKY_RELU": "leaky ReLU has no Edge TPU kernel (google-coral/edgetpu #272)",
    "DEQUANTIZE": "dequantizing to float cannot run on the Edge TPU",
    "GELU": "GELU has no Edge TPU kernel",
}

# Op versions. The last compiler release (16.0.384591198) links a TensorFlow Lite that predates
# today's converter, so an op written at a newer version is refused even where its arithmetic is
# supported. Two levels, both from public compiler output:
#
# * the op maps only up to this version; newer: the log status "Operation version not supported",
#   the op runs on the CPU and cuts the graph. RESIZE_BILINEAR/RESIZE_NEAREST_NEIGHBOR version 3
#   is the half_pixel_centers form (what TF2's tf.image.resize and Keras Resizing write, and what
#   PyTorch's align_corners=False means): compilers 14.1 and 15.0 logged exactly this status for
#   it (google-coral/edgetpu #187, #206, #420; tensorflow/tensorflow #42024), and no later release
#   note changes it. The DeepLab pair in shared/edgetpu-reference (TF1, version 1/2 resizes) maps.
MAX_MAPPED_VERSION = {"RESIZE_BILINEAR": 2, "RESIZE_NEAREST_NEIGHBOR": 2}
# * the compiler's TensorFlow Lite does not know the version at all: "Didn't find op for builtin
#   opcode 'X' version 'N'", the model cannot be parsed and nothing compiles (16.0 on CONV_2D v6
#   from TF 2.9, google-coral/edgetpu #631; on EXP v2 from TF 2.16, google-coral/libedgetpu #71).
MAX_PARSED_VERSION = {"CONV_2D": 5, "EXP": 1}


def _version_problem(op: OpInfo) -> str | None:
    limit = MAX_MAPPED_VERSION.get(op.op)
    if limit is not None and op.version > limit:
        why = " (half_pixel_centers, as TF2 and PyTorch align_corners=False resize)" \
            if op.op.startswith("RESIZE_") else ""
        return (f"{op.op} version {op.version}{why}: the last compiler maps it up to version {limit}; "
                "it runs on the CPU")
    return None


def unparsable_ops(sg: SubgraphInfo) -> list[str]:
    """The compiler's parse errors: ops at versions its TensorFlow Lite does not know."""
    return sorted({f"Didn't find op for builtin opcode '{op.op}' version '{op.version}'"
                   for op in sg.operators if op.version > MAX_PARSED_VERSION.get(op.op, op.version)})


# input slots that must be compile-time constants ("model parameters are constant")
_PARAM_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
                 "TRANSPOSE_CONV": (0, 1), "PAD": (1,), "MEAN": (1,),
                 "SUM": (1,), "REDUCE_MAX": (1,), "REDUCE_MIN": (1,)}


def _is_input_quantize(op: OpInfo, sg: SubgraphInfo) -> bool:
    """A float->int8 QUANTIZE reading a graph input: the converter's input adapter."""
    if op.op != "QUANTIZE" or not op.inputs:
        return False
    src = _t(sg, op.inputs[0])
    return src is not None and src.dtype.startswith("FLOAT") and op.inputs[0] in sg.inputs


def _dtype_problem(op: OpInfo, sg: SubgraphInfo) -> str | None:
    for slot, idx in [("input", i) for i in op.inputs] + [("output", o) for o in op.outputs]:
        t = _t(sg, idx)
        if t is None:
            continue
        if t.is_constant:
            if t.dtype not in _PARAM_DTYPES:
                return f"constant {t.name or idx} is {t.dtype}; parameters must be 8-bit"
        elif t.dtype not in _INT8:
            return f"{slot} tensor {t.name or idx} is {t.dtype}, not 8-bit quantized"
        elif not t.quantized:
            return f"{slot} tensor {t.name or idx} is {t.dtype} without quantization parameters"
    return None


def _rank_problem(op: OpInfo, sg: SubgraphInfo) -> str | None:
    for idx in list(op.inputs) + list(op.outputs):
        t = _t(sg, idx)
        if t is None or t.is_constant or len(t.shape) <= 3:
            continue
        if any(d > 1 for d in t.shape[:-3]):
            return (f"tensor {t.name or idx} has shape {t.shape}: only the innermost 3 "
                    "dimensions may exceed 1")
    return None


def _static_problem(op: OpInfo, sg: SubgraphInfo) -> str | None:
    for idx in list(op.inputs) + list(op.outputs):
        t = _t(sg, idx)
        # a -1 batch in the signature is harmless (the interpreter runs batch 1); a -1
        # elsewhere is a dynamic size the compiler cannot plan for
        if t is not None and any(d < 0 for d in t.shape_signature[1:]):
            return f"tensor {t.name or idx} has a dynamic size {t.shape_signature}"
    for k in _PARAM_INPUTS.get(op.op, ()):
        t = _t(sg, op.inputs[k]) if len(op.inputs) > k else None
        if t is not None and not t.is_constant:
            return f"parameter input {k} ({t.name or op.inputs[k]}) is not a compile-time constant"
    return None


def check_op(op: OpInfo, sg: SubgraphInfo) -> tuple[str, str]:
    """(status, reason) of one op judged on its own, before the one-subgraph rule."""
    if op.op == EDGETPU_CUSTOM_OP:
        return MAPPED, "already compiled for the Edge TPU"
    if op.op == "TFLite_Detection_PostProcess":
        # the same verdict the compiler gives Coral's own SSD models: the op stays on the CPU
        return NOT_SUPPORTED, ("detection post-processing (box decoding, sorting, non-max suppression: "
                               "data-dependent control flow on float32) has no Edge TPU kernel; it runs on "
                               "the CPU after the Edge TPU graph")
    if op.custom:
        return NOT_SUPPORTED, f"custom operator {op.op} has no Edge TPU kernel"
    if _is_input_quantize(op, sg):
        # observed in real compiler logs: the float input adapter stays on the CPU but the
        # graph behind it still maps, so it does not split the partition
        return UNSPECIFIED, "float->int8 input QUANTIZE runs on the CPU (input adapter)"
    bad = _dtype_problem(op, sg)
    if bad:
        return BAD_DTYPE, bad
    if op.op not in SUPPORTED:
        why = _NOT_SUPPORTED_WHY.get(op.op, "not in the Edge TPU supported-operations table")
        return NOT_SUPPORTED, f"{op.op}: {why}"
    bad = _version_problem(op)
    if bad:
        return BAD_VERSION, bad
    bad = _rank_problem(op, sg)
    if bad:
        return BAD_RANK, bad
    bad = _static_problem(op, sg)
    if bad:
        return UNSPECIFIED, bad
    limit = SUPPORTED[op.op]
    bad = limit(op, sg) if limit else None
    if bad:
        return UNSPECIFIED, bad
    return MAPPED, ""


def op_macs(op: OpInfo, sg: SubgraphInfo) -> int:
    """Multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV."""
    out = _t(sg, op.outputs[0]) if op.outputs else None
    if out is None or not out.shape:
        return 0
    n_out = math.prod(out.shape)
    if op.op == "CONV_2D" and len(_in_shape(op, sg, 1)) == 4:
        _, kh, kw, cin = _in_shape(op, sg, 1)  # OHWI
        return n_out * kh * kw * cin
    if op.op == "DEPTHWISE_CONV_2D" and len(_in_shape(op, sg, 1)) == 4:
        _, kh, kw, _c = _in_shape(op, sg, 1)  # 1HWC
        return n_out * kh * kw
    if op.op == "FULLY_CONNECTED" and len(_in_shape(op, sg, 1)) == 2:
        return n_out * _in_shape(op, sg, 1)[1]
    if op.op == "TRANSPOSE_CONV" and len(_in_shape(op, sg, 1)) == 4:
        cout, kh, kw, _cin = _in_shape(op, sg, 1)
        src = _in_shape(op, sg, 2)
        return math.prod(src) * kh * kw * cout if src else 0
    return 0


def _kernel(op: OpInfo, sg: SubgraphInfo) -> list[int] | None:
    if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(_in_shape(op, sg, 1)) == 4:
        return _in_shape(op, sg, 1)[1:3]
    if "filter_height" in op.options:
        return [op.options["filter_height"], op.options["filter_width"]]
    return None


def summarize(rows: list[dict]) -> list[dict]:
    """Operator/Count/Status rows, one per (operator, status), in first-seen order."""
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (r["op"], r["status"])
        counts[key] = counts.get(key, 0) + 1
    return [{"operator": o, "count": c, "status": s} for (o, s), c in counts.items()]


def predict(model: TFLiteModel) -> dict[str, Any]:
    """The predicted mapping of a parsed model (see ``analyze``)."""
    sg = model.main
    warnings: list[str] = []
    if len(model.subgraphs) > 1:
        warnings.append(f"model has {len(model.subgraphs)} TFLite subgraphs; only the main "
                        "one can map (control flow runs on the CPU)")
    cpu_tensors: dict[int, int] = {}  # tensor -> CPU op that produced it
    rows = []
    guesses: list[dict] = []
    for op in sg.operators:
        status, reason = check_op(op, sg)
        if status == MAPPED:
            upstream = [cpu_tensors[i] for i in op.inputs if i in cpu_tensors]
            if upstream:
                src = sg.operators[upstream[0]]
                status = SECOND_SUBGRAPH
                reason = (f"depends on op #{src.index} {src.op}, which runs on the CPU; "
                          "the compiler builds one Edge TPU subgraph")
        on_cpu = status != MAPPED
        guess = GUESSES[op.op](op, sg) if status == MAPPED and op.op in GUESSES else None
        if guess:
            guesses.append({"index": op.index, "op": op.op, "note": guess})
        if on_cpu and not _is_input_quantize(op, sg):
            cpu_tensors.update({o: op.index for o in op.outputs})
        rows.append({
            "index": op.index, "op": op.op, "status": status, "mapped": not on_cpu,
            "reason": reason, "macs": op_macs(op, sg), "kernel": _kernel(op, sg),
            "activation": op.options.get("fused_activation_function"), "guess": guess,
            "inputs": [_t(sg, i).shape for i in op.inputs if _t(sg, i) is not None
                       and not _t(sg, i).is_constant],
            "outputs": [_t(sg, o).shape for o in op.outputs if _t(sg, o) is not None],
        })
    cpu = [r for r in rows if not r["mapped"]]
    # the op that splits the graph: the first CPU op that is not the input adapter
    breaking = [r for r in cpu if not _is_input_quantize(sg.operators[r["index"]], sg)]
    first = breaking[0] if breaking else None
    total_macs = sum(r["macs"] for r in rows)
    unparsable = unparsable_ops(sg)
    if unparsable:
        warnings.append("the last compiler release cannot parse this model (" + "; ".join(unparsable)
                        + "): nothing would compile; convert with an older TensorFlow")
    for idx in list(sg.inputs) + list(sg.outputs):
        t = _t(sg, idx)
        if t is not None and t.shape_signature and t.shape_signature[0] < 0:
            warnings.append("batch dimension is dynamic (-1) in the signature; the compiler "
                            "plans for batch 1")
            break
    return {
        "model": model.path,
        "compiled": False,
        "ops_total": len(rows),
        "edgetpu_ops": len(rows) - len(cpu),
        "cpu_ops_total": len(cpu),
        "cpu_ops": [{"index": r["index"], "op": r["op"], "status": r["status"],
                     "reason": r["reason"]} for r in cpu],
        "first_cpu_op": None if first is None else {
            "index": first["index"], "op": first["op"], "status": first["status"],
            "reason": first["reason"]},
        "edgetpu_subgraphs": 1 if len(cpu) < len(rows) else 0,
        "macs_total": total_macs,
        "cpu_macs": sum(r["macs"] for r in cpu),
        "summary": summarize(rows),
        "ops": rows,
        "warnings": warnings + [f"op #{g['index']} {g['note']}" for g in guesses],
        "guesses": guesses,
        "parse_errors": unparsable,
    }


def format_log(report: dict[str, Any]) -> str:
    """The report printed like ``edgetpu_compiler``'s stdout tail and its operation log."""
    name = Path(report["model"]).name
    stem = name.removesuffix(".tflite")
    if report.get("compiler_version"):
        header = report["compiler_version"]
    elif report.get("compiled"):
        header = "(not run: read from the compiled model)"
    else:
        header = "(predicted by mobiledeploy; compiler not run)"
    lines = [f"Edge TPU Compiler version {header}", f"Input: {name}"]
    if not report.get("compiled") or report.get("compiled_model"):
        lines.append(f"Output: {Path(report.get('compiled_model') or stem + '_edgetpu.tflite').name}")
    lines.append("")
    tpu = report["edgetpu_ops"]
    if tpu is None:  # a compiled file does not record how many ops each custom op absorbed
        tpu = f"all but the CPU ops, inside {report.get('edgetpu_custom_ops', 1)} {EDGETPU_CUSTOM_OP}"
    lines += [f"Number of Edge TPU subgraphs: {report.get('edgetpu_subgraphs', 1)}",
              f"Total number of operations: {report['ops_total']}",
              f"Number of operations that will run on Edge TPU: {tpu}",
              f"Number of operations that will run on CPU: {report['cpu_ops_total']}", ""]
    lines.append(f"{'Operator':<31}{'Count':<11}Status")
    lines.append("")
    for row in report["summary"]:
        lines.append(f"{row['operator']:<31}{row['count']:<11}{row['status']}")
    return "\n".join(lines) + "\n"
