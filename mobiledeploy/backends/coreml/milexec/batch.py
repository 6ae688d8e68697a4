"""When an op may run on a stack of samples at once, and with which arguments.

The executor runs a batch-1 program on N samples by stacking them on axis 0: a *stacked* value
holds every sample's own value, each sample's (size-1) axis 0 becoming the stack's axis 0, so
``stacked[i:i+1]`` is exactly the value a run on sample ``i`` alone computes. An op may run once
on stacked inputs only when that property provably carries over to its outputs: every kernel
computes each output element from the same input elements as the one-sample run, in float64, and
the executor rounds to the program's dtype at the same points. ``stacked_args`` says so per op (and
rewrites the arguments that name axis 0); any op or form it does not know, it refuses (``None``),
and the executor runs that op sample by sample instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Stacked:
    """N samples' values of one var, stacked on axis 0 (each sample's axis 0 has size 1)."""

    __slots__ = ("a",)

    def __init__(self, a: np.ndarray):
        self.a = a


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _arrays(args: dict[str, Any]):
    """Every tensor argument (concat's values included), stacked or shared."""
    for key, v in args.items():
        if key == "opset":
            continue
        yield from (v if isinstance(v, list) else [v])


def _broadcasts(args: dict[str, Any]) -> bool:
    """Elementwise ops: NumPy broadcasting aligns from the right, so a stack keeps axis 0 only
    when every stacked input has the output's rank and no shared input has a size > 1 there."""
    vals = list(_arrays(args))
    ranks = [v.a.ndim if isinstance(v, Stacked) else np.ndim(v) for v in vals]
    rank = max(ranks)
    for v, r in zip(vals, ranks, strict=True):
        if isinstance(v, Stacked):
            if r != rank:
                return False
        elif r == rank and np.shape(v)[0] != 1:
            return False
    return True


def _axis_ok(axis, rank: int) -> bool:
    """True when ``axis`` (a list or scalar, negative allowed) does not name axis 0."""
    return all(int(a) % rank != 0 for a in _ints(axis))


def _one_sample(x: np.ndarray) -> np.ndarray:
    """A stand-in of one sample's shape (no memory: only its shape is read)."""
    return np.broadcast_to(np.int8(0), (1, *x.shape[1:]))


def shared_value(op_type: str, args: dict[str, Any]):
    """The value of an op whose result is the same for every sample (``shape``), else None."""
    x = args.get("x")
    if op_type == "shape" and isinstance(x, Stacked) and len(args) == 1:
        from .ops import _shape

        return _shape(_one_sample(x.a))
    return None


def _unstack(v):
    return v.a if isinstance(v, Stacked) else v


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    return {k: [_unstack(x) for x in v] if isinstance(v, list) else _unstack(v) for k, v in args.items()}


ELEMENTWISE = {"add", "sub", "mul", "real_div", "floor_div", "pow", "maximum", "minimum", "identity",
               "relu", "relu6", "clip", "sigmoid", "sigmoid_hard", "silu", "thresholded_relu",
               "leaky_relu", "tanh", "exp", "sqrt", "rsqrt", "cast"}
REDUCE = {"reduce_mean", "reduce_sum", "reduce_max", "reduce_min"}
# kernels that work on axes >= 1 (NCHW channels, spatial or feature axes) of an input of this rank
# at least, and whose other tensor arguments are weights (which must be shared, not stacked)
SAMPLEWISE = {"conv": ("x", 4), "avg_pool": ("x", 4), "max_pool": ("x", 4), "batch_norm": ("x", 2),
              "linear": ("x", 2), "upsample_bilinear": ("x", 3), "resize_bilinear": ("x", 3)}


def stacked_args(op_type: str, args: dict[str, Any], n: int) -> dict[str, Any] | None:
    """The arguments to run ``op_type`` once on the stacks in ``args``, or None when the op (in
    this form) must run sample by sample. ``args`` holds ``Stacked`` values and shared ones."""
    if op_type in ELEMENTWISE:
        return _plain(args) if _broadcasts(args) else None
    if op_type in SAMPLEWISE:
        key, rank = SAMPLEWISE[op_type]
        x = args.get(key)
        others = [v for k, v in args.items() if k != key and isinstance(v, Stacked)]
        if not isinstance(x, Stacked) or x.a.ndim < rank or others:
            return None
        return _plain(args)
    x = args.get("x")
    if not isinstance(x, Stacked):
        # concat takes values; matmul may stack y only; anything else keyed otherwise is refused
        if op_type == "concat":
            return _concat(args, n)
        if op_type == "matmul":
            return _matmul(args)
        return None
    if any(isinstance(v, Stacked) for k, v in args.items() if k != "x"):
        return _matmul(args) if op_type == "matmul" else None
    rank = x.a.ndim
    if op_type == "softmax":
        return _plain(args) if _axis_ok(args.get("axis", -1), rank) else None
    if op_type in REDUCE:
        axes = args.get("axes")
        return _plain(args) if axes is not None and _axis_ok(axes, rank) else None
    if op_type == "reshape":
        return _reshape(args, n)
    if op_type == "squeeze":
        axes = args.get("axes")
        return _plain(args) if axes is not None and _axis_ok(axes, rank) else None
    if op_type == "expand_dims":
        out_rank = rank + len(_ints(args["axes"]))
        return _plain(args) if _axis_ok(args["axes"], out_rank) else None
    if op_type == "transpose":
        return _plain(args) if _ints(args["perm"])[0] % rank == 0 else None
    if op_type == "matmul":
        return _matmul(args)
    if op_type == "slice_by_index":
        return _slice_by_index(args)
    if op_type == "slice_by_size":
        begin, size = _ints(args["begin"]), _ints(args["size"])
        if begin[0] != 0 or size[0] not in (1, -1):
            return None
        out = _plain(args)
        out["size"] = np.array([-1, *size[1:]], dtype=np.asarray(args["size"]).dtype)
        return out
    if op_type == "pad":
        p = _ints(args["pad"])
        if len(p) // 2 >= rank and (p[0], p[1]) != (0, 0):
            return None
        return _plain(args)
    return None  # shape, classify and anything unlisted: sample by sample


def _concat(args: dict[str, Any], n: int) -> dict[str, Any] | None:
    values = args["values"]
    stacked = [v for v in values if isinstance(v, Stacked)]
    rank = stacked[0].a.ndim
    if any(np.ndim(_unstack(v)) != rank for v in values) or not _axis_ok(args["axis"], rank):
        return None
    if any(not isinstance(v, Stacked) and np.shape(v)[0] != 1 for v in values):
        return None
    out = _plain(args)
    # a shared value is every sample's: repeat it along the stack
    out["values"] = [v.a if isinstance(v, Stacked) else np.broadcast_to(v, (n, *np.shape(v)[1:]))
                     for v in values]
    return out


def _matmul(args: dict[str, Any]) -> dict[str, Any] | None:
    """Rows of a 2-D ``x`` are independent (``x @ y`` with a shared ``y`` of rank <= 2); from rank
    3 on, axis 0 is a broadcast batch axis, as for elementwise ops."""
    x, y = args["x"], args["y"]
    rx, ry = (v.a.ndim if isinstance(v, Stacked) else np.ndim(v) for v in (x, y))
    if min(rx, ry) < 2:
        return None
    if rx == 2 and isinstance(x, Stacked) and not isinstance(y, Stacked):
        return None if bool(args.get("transpose_x", False)) or ry > 2 else _plain(args)
    if max(rx, ry) < 3:
        return None
    return _plain(args) if _broadcasts({"x": x, "y": y}) else None


def _reshape(args: dict[str, Any], n: int) -> dict[str, Any] | None:
    """A C-order reshape keeps each sample's elements together when the one-sample result has a
    size-1 axis 0: the stack then reshapes to ``(n, *rest)``."""
    from .ops import _reshape as one

    x = args["x"].a
    shape = one(np.empty((1, *x.shape[1:]), np.int8), args["shape"], **({"opset": args["opset"]} if "opset" in args else {})).shape
    if not shape or shape[0] != 1:
        return None
    return {"x": x, "shape": np.array([n, *shape[1:]], dtype=np.int64)}


def _slice_by_index(args: dict[str, Any]) -> dict[str, Any] | None:
    """Allowed when every sample keeps its one row on axis 0: then axis 0 is taken whole."""
    from .ops import _slice_by_index as one

    x = args["x"].a
    rank = x.ndim
    kw = {k: v for k, v in args.items() if k != "x"}
    sm = kw.get("squeeze_mask")
    if sm is not None and bool(np.asarray(sm).reshape(-1)[0]):
        return None
    probe = one(_one_sample(x), **kw)
    if probe.ndim < 1 or probe.shape[0] != 1:
        return None
    out = _plain(args)
    for key, fill in (("begin_mask", True), ("end_mask", True)):
        mask = np.zeros(rank, bool) if kw.get(key) is None else np.array(kw[key], dtype=bool).reshape(-1)
        mask[0] = fill
        out[key] = mask
    stride = [1] * rank if kw.get("stride") is None else _ints(kw["stride"])
    stride[0] = 1
    out["stride"] = np.array(stride, dtype=np.int32)
    return out
