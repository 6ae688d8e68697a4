"""NumPy kernels for MIL ops, with MIL's parameter names and semantics.

Kernels compute in float64 (or the input's integer dtype) and the executor rounds each result to
the dtype the program declares: every op is correctly rounded, so what remains is the program's
own rounding (fp32 or fp16 intermediates), including fp16 overflow to inf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class UnsupportedMILOp(Exception):
    """The program uses an op (or a form of one) this executor does not implement."""


OPS: dict[str, Any] = {}


def op(*names):
    def register(fn):
        for name in names or (fn.__name__,):
            OPS[name] = fn
        return fn

    return register


def _f(x) -> np.ndarray:
    """Widen floats to float64 (exact); leave integer and bool tensors alone."""
    x = np.asarray(x)
    return x.astype(np.float64) if x.dtype.kind == "f" else x


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _s(v) -> str:
    return str(np.asarray(v).reshape(()).item())


# ------------------------------------------------------------------ elementwise
@op("add")
def _add(x, y):
    return _f(x) + _f(y)


@op("sub")
def _sub(x, y):
    return _f(x) - _f(y)


@op("mul")
def _mul(x, y):
    return _f(x) * _f(y)


@op("real_div")
def _real_div(x, y):
    return _f(x) / _f(y)


@op("floor_div")
def _floor_div(x, y):
    return np.floor_divide(_f(x), _f(y))


@op("pow")
def _pow(x, y):
    return np.power(_f(x), _f(y))


@op("maximum")
def _maximum(x, y):
    return np.maximum(_f(x), _f(y))


@op("minimum")
def _minimum(x, y):
    return np.minimum(_f(x), _f(y))


@op("identity")
def _identity(x):
    return np.asarray(x)


@op("relu")
def _relu(x):
    return np.maximum(_f(x), 0)


@op("relu6")
def _relu6(x):
    return np.clip(_f(x), 0, 6)


@op("clip")
def _clip(x, alpha, beta):
    return np.minimum(np.maximum(_f(x), _f(alpha)), _f(beta))


@op("sigmoid")
def _sigmoid(x):
    x = _f(x)
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


@op("sigmoid_hard")
def _sigmoid_hard(x, alpha=0.2, beta=0.5):
    return np.clip(_f(alpha) * _f(x) + _f(beta), 0, 1)


@op("silu")
def _silu(x):
    x = _f(x)
    return x * _sigmoid(x)


@op("thresholded_relu")
def _thresholded_relu(x, alpha=1.0):
    # MIL: "Return x if x >= alpha, otherwise 0" (the reference zeroes y < alpha only)
    x = _f(x)
    return np.where(x >= _f(alpha), x, np.zeros_like(x))


@op("leaky_relu")
def _leaky_relu(x, alpha=0.01):
    x = _f(x)
    return np.where(x >= 0, x, _f(alpha) * x)


@op("tanh")
def _tanh(x):
    return np.tanh(_f(x))


@op("exp")
def _exp(x):
    return np.exp(_f(x))


@op("sqrt")
def _sqrt(x):
    return np.sqrt(_f(x))


@op("rsqrt")
def _rsqrt(x, epsilon=1e-12):
    return 1.0 / np.sqrt(_f(x) + _f(epsilon))


@op("softmax")
def _softmax(x, axis=-1):
    x = _f(x)
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


@op("cast")
def _cast(x, dtype):
    dt = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int32": np.int32,
          "int64": np.int64, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
          "bool": np.bool_}.get(_s(dtype))
    if dt is None:
        raise UnsupportedMILOp(f"unsupported MIL op cast to {_s(dtype)}")
    return np.asarray(x).astype(dt)


# ------------------------------------------------------------------ reductions
def _reduce(fn):
    def run(x, axes=None, keep_dims=False):
        ax = None if axes is None else tuple(_ints(axes))
        return fn(_f(x), axis=ax, keepdims=bool(keep_dims))

    return run


OPS["reduce_mean"] = _reduce(np.mean)
OPS["reduce_sum"] = _reduce(np.sum)
OPS["reduce_max"] = _reduce(np.max)
OPS["reduce_min"] = _reduce(np.min)


@op("reduce_argmax")
def _reduce_argmax(x, axis=-1, keep_dims=False):
    """Index of the largest value along ``axis`` (int32; the first of equal values, as numpy)."""
    ax = int(np.asarray(axis).item())
    out = np.argmax(_f(x), axis=ax)
    return (np.expand_dims(out, ax) if bool(np.asarray(keep_dims).item()) else out).astype(np.int32)


# ------------------------------------------------------------------ shapes
# kernels whose semantics changed between opsets take the program's opset version (5 = iOS15)
OPSET_AWARE: set[str] = {"reshape"}


def opset_version(opset: str) -> int:
    """``"CoreML7"`` -> 7 (iOS17); an unknown spelling is refused rather than guessed."""
    digits = opset.removeprefix("CoreML")
    if not digits.isdigit():
        raise UnsupportedMILOp(f"unsupported MIL opset {opset!r}")
    return int(digits)


@op("reshape")
def _reshape(x, shape, opset: int = 5):
    """A 0 in ``shape`` copies a dimension of ``x``: by position before iOS17 (where ``len(shape)``
    must equal ``rank(x)``), counted from the right from iOS17 on (out of range: 1)."""
    x = np.asarray(x)
    want = _ints(shape)
    if 0 in want:
        if opset < 7:
            if len(want) != x.ndim:
                raise ValueError(f"reshape: a 0 in shape {want} needs len(shape) == rank(x) = {x.ndim} "
                                 "before iOS17")
            want = [x.shape[i] if s == 0 else s for i, s in enumerate(want)]
        else:
            off = x.ndim - len(want)
            want = [(x.shape[i + off] if 0 <= i + off < x.ndim else 1) if s == 0 else s
                    for i, s in enumerate(want)]
    return x.reshape(want)


@op("squeeze")
def _squeeze(x, axes=None):
    x = np.asarray(x)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(_ints(axes)))


@op("expand_dims")
def _expand_dims(x, axes):
    x = np.asarray(x)
    rank = x.ndim + len(_ints(axes))
    for a in sorted(a % rank for a in _ints(axes)):
        x = np.expand_dims(x, a)
    return x


@op("transpose")
def _transpose(x, perm):
    return np.transpose(np.asarray(x), _ints(perm))


@op("concat")
def _concat(values, axis, interleave=False):
    if bool(interleave):
        raise UnsupportedMILOp("unsupported MIL op concat (interleave=True)")
    return np.concatenate([_f(v) for v in values], axis=int(axis))


@op("stack")
def _stack(values, axis):
    """Tensors of one shape stacked on a new ``axis``."""
    return np.stack([_f(v) for v in values], axis=int(np.asarray(axis).item()))


@op("shape")
def _shape(x):
    return np.array(np.asarray(x).shape, dtype=np.int32)


@op("slice_by_index")
def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None,
                    squeeze_mask=None):
    x = np.asarray(x)
    r = x.ndim
    b, e = _ints(begin), _ints(end)
    st = _ints(stride) if stride is not None else [1] * r
    bm = [bool(v) for v in np.asarray(begin_mask).reshape(-1)] if begin_mask is not None else [
        False] * r
    em = [bool(v) for v in np.asarray(end_mask).reshape(-1)] if end_mask is not None else [
        False] * r
    sm = [bool(v) for v in np.asarray(squeeze_mask).reshape(-1)] if squeeze_mask is not None else [
        False] * r
    idx = []
    for i in range(r):
        if sm[i]:
            idx.append(b[i])
            continue
        idx.append(slice(None if bm[i] else b[i], None if em[i] else e[i], st[i]))
    return x[tuple(idx)]


@op("slice_by_size")
def _slice_by_size(x, begin, size):
    x = np.asarray(x)
    pairs = zip(_ints(begin), _ints(size), strict=True)
    idx = tuple(slice(b, None if s == -1 else b + s) for b, s in pairs)
    return x[idx]


@op("pad")
def _pad(x, pad, mode="constant", constant_val=0.0):
    x = _f(x)
    p = _ints(pad)
    widths = [(0, 0)] * (x.ndim - len(p) // 2) + [(p[i], p[i + 1]) for i in range(0, len(p), 2)]
    m = _s(mode)
    if m == "constant":
        return np.pad(x, widths, mode="constant", constant_values=float(_f(constant_val)))
    if m in ("reflect", "replicate"):
        return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[m])
    raise UnsupportedMILOp(f"unsupported MIL op pad (mode={m})")


# ------------------------------------------------------------------ linear algebra
@op("linear")
def _linear(x, weight, bias=None):
    y = _f(x) @ _f(weight).T
    return y if bias is None else y + _f(bias)


@op("matmul")
def _matmul(x, y, transpose_x=False, transpose_y=False):
    a, b = _f(x), _f(y)
    if bool(transpose_x):
        a = np.swapaxes(a, -1, -2)
    if bool(transpose_y):
        b = np.swapaxes(b, -1, -2)
    return a @ b


@op("batch_norm")
def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = 1.0 / np.sqrt(_f(variance) + _f(epsilon))
    g = _f(gamma) if gamma is not None else 1.0
    bt = _f(beta) if beta is not None else 0.0
    scale = np.reshape(g * inv, shape)
    return (x - np.reshape(_f(mean), shape)) * scale + np.reshape(bt, shape) * np.ones_like(scale)


# ------------------------------------------------------------------ convolution and pooling
def _pads(pad_type, pad, in_hw, kernel, strides, dilations) -> list[tuple[int, int]]:
    """Per spatial axis (before, after) padding under MIL's pad_type rules."""
    kind = _s(pad_type) if pad_type is not None else "valid"
    if kind == "valid":
        return [(0, 0)] * len(in_hw)
    if kind == "custom":
        p = _ints(pad)
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(in_hw))]
    out = []
    for n, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
        eff = (k - 1) * d + 1
        total = max((math.ceil(n / s) - 1) * s + eff - n, 0)
        before = total // 2 if kind == "same" else total - total // 2  # same_lower
        out.append((before, total - before))
    return out


def _windows(x, kernel, strides, dilations, pads, value=0.0):
    """(N, C, Ho, Wo, kh, kw) view of a padded NCHW tensor."""
    x = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=value)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    w = sliding_window_view(x, eff, axis=(2, 3))
    return w[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]]


@op("conv")
def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None,
          groups=1):
    x, w = _f(x), _f(weight)
    if x.ndim != 4:
        raise UnsupportedMILOp(f"unsupported MIL op conv (rank {x.ndim} input)")
    cout, cin_g, kh, kw = w.shape
    st = _ints(strides) if strides is not None else [1, 1]
    dl = _ints(dilations) if dilations is not None else [1, 1]
    g = int(groups)
    pads = _pads(pad_type, pad, x.shape[2:], (kh, kw), st, dl)
    win = _windows(x, (kh, kw), st, dl, pads)  # N, C, Ho, Wo, kh, kw
    n, _, ho, wo = win.shape[:4]
    if g == 1:
        y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    elif cin_g == 1 and cout == g:  # depthwise: one filter per channel
        y = np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)
    else:
        wg = win.reshape(n, g, cin_g, ho, wo, kh, kw)
        y = np.einsum("ngchwij,gocij->ngohw", wg, w.reshape(g, cout // g, cin_g, kh, kw),
                      optimize=True).reshape(n, cout, ho, wo)
    if bias is not None:
        y = y + _f(bias).reshape(1, -1, 1, 1)
    return y


def _pool(reduce):
    def run(x, kernel_sizes, strides=None, pad_type="valid", pad=None,
            exclude_padding_from_average=False, ceil_mode=False):
        x = _f(x)
        if x.ndim != 4:
            raise UnsupportedMILOp(f"unsupported MIL op pool (rank {x.ndim} input)")
        if bool(ceil_mode):
            raise UnsupportedMILOp("unsupported MIL op pool (ceil_mode=True)")
        k = _ints(kernel_sizes)
        st = _ints(strides) if strides is not None else [1, 1]
        pads = _pads(pad_type, pad, x.shape[2:], k, st, [1, 1])
        if reduce == "max":
            return _windows(x, k, st, [1, 1], pads, -np.inf).max(axis=(4, 5))
        total = _windows(x, k, st, [1, 1], pads).sum(axis=(4, 5))
        if bool(exclude_padding_from_average):
            ones = np.ones((1, 1) + x.shape[2:])
            return total / _windows(ones, k, st, [1, 1], pads).sum(axis=(4, 5))
        return total / float(k[0] * k[1])

    return run


OPS["avg_pool"] = _pool("mean")
OPS["max_pool"] = _pool("max")


# ------------------------------------------------------------------ resizing
def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Source coordinate of every output position along one axis (coremltools' op docs).

    ``align``: corners on corners, ``(in-1)/(out-1)`` apart (PyTorch ``align_corners=True``);
    ``half``: half-pixel centres (PyTorch ``align_corners=False``, TF ``half_pixel_centers``);
    ``asym``: ``i * in/out`` (TF's legacy default); ``default``: ``(in - in/out)/(out-1)`` apart;
    ``offset``: ``0.5*delta + i*delta`` with ``delta = max(1, in-1)/out``. Every mode clamps to ``[0, in-1]``.
    """
    i = np.arange(n_out, dtype=np.float64)
    if mode == "align":
        g = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "half":
        g = (i + 0.5) * (n_in / n_out) - 0.5
    elif mode == "asym":
        g = i * (n_in / n_out)
    elif mode == "default":
        g = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "offset":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    elif mode == "align_mid":  # ALIGN_CORNERS: as align, except one output samples the middle
        g = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.full(1, (n_in - 1) / 2)
    else:  # pragma: no cover - callers pass the modes above
        raise UnsupportedMILOp(f"unsupported bilinear sampling {mode}")
    return np.clip(g, 0, n_in - 1)


def _bilinear(x, out_h: int, out_w: int, mode: str) -> np.ndarray:
    x = _f(x)
    if x.ndim < 3:
        raise UnsupportedMILOp(f"unsupported MIL op bilinear resize (rank {x.ndim} input)")
    out = x
    for axis, n_out in ((-2, out_h), (-1, out_w)):
        n_in = out.shape[axis]
        g = _grid(n_in, n_out, mode)
        lo = np.floor(g).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        t = g - lo
        a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
        shape = [1] * out.ndim
        shape[axis] = n_out
        out = a + (b - a) * t.reshape(shape)
    return out


@op("upsample_bilinear")
def _upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True,
                       half_pixel_centers=None):
    """iOS15: ``align_corners`` (default True); iOS16 adds ``half_pixel_centers`` (default
    ``not align_corners``). The output is ``floor(in * scale)``."""
    x = _f(x)
    ac = bool(np.asarray(align_corners).item())
    hp = (not ac) if half_pixel_centers is None else bool(np.asarray(half_pixel_centers).item())
    if ac and hp:
        raise UnsupportedMILOp("unsupported MIL op upsample_bilinear (align_corners with half_pixel_centers)")
    mode = "align" if ac else "half" if hp else "asym"
    sh, sw = float(np.asarray(scale_factor_height).item()), float(np.asarray(scale_factor_width).item())
    return _bilinear(x, int(np.floor(x.shape[-2] * sh)), int(np.floor(x.shape[-1] * sw)), mode)


_SAMPLING = {"STRICT_ALIGN_CORNERS": "align", "ALIGN_CORNERS": "align_mid", "DEFAULT": "default",
             "OFFSET_CORNERS": "offset", "UNALIGN_CORNERS": "half"}


@op("resize_bilinear")
def _resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    mode = _s(sampling_mode)
    if mode not in _SAMPLING:
        raise UnsupportedMILOp(f"unsupported MIL op resize_bilinear (sampling_mode {mode})")
    oh, ow = int(np.asarray(target_size_height).item()), int(np.asarray(target_size_width).item())
    return _bilinear(x, oh, ow, _SAMPLING[mode])


# ------------------------------------------------------------------ classifier
@op("classify")
def _classify(probabilities, classes):
    """(label, probabilities): the label of the top class, per sample."""
    p = _f(probabilities)
    labels = [c.item() if isinstance(c, np.ndarray) else c for c in
              (classes if isinstance(classes, list) else list(np.asarray(classes).reshape(-1)))]
    flat = p.reshape(-1, p.shape[-1])
    top = [labels[i] for i in flat.argmax(axis=-1)]
    return np.array(top if len(top) > 1 else top[0], dtype=object), p.astype(np.float32)
