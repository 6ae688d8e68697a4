"""MIL kernels against arithmetic written out (NumPy only; no coremltools)."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.backends.coreml.milexec.ops import OPS


def naive_conv(x, w, b, stride, pads, dil, groups):
    """Direct loops: out[n, o, i, j] = sum_c,u,v x[n, g*cin+c, i*s+u*d, j*s+v*d] * w[o, c, u, v]."""
    (pt, pb), (pl, pr) = pads
    x = np.pad(x, [(0, 0), (0, 0), (pt, pb), (pl, pr)])
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    ho = (h - (kh - 1) * dil - 1) // stride + 1
    wo = (wd - (kw - 1) * dil - 1) // stride + 1
    out = np.zeros((n, cout, ho, wo))
    per = cout // groups
    for o in range(cout):
        g = o // per
        for i in range(ho):
            for j in range(wo):
                patch = x[:, g * cg:(g + 1) * cg, i * stride:i * stride + (kh - 1) * dil + 1:dil,
                          j * stride:j * stride + (kw - 1) * dil + 1:dil]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return out


@pytest.mark.parametrize(
    "cin,cout,groups,k,stride,dil,pad_type,pad,expect_pads",
    [
        (3, 4, 1, 3, 1, 1, "valid", None, ((0, 0), (0, 0))),
        (4, 6, 2, 3, 2, 1, "custom", [1, 0, 2, 1], ((1, 0), (2, 1))),
        # 9 px, stride 2 -> 5 outputs: needs (5 - 1) * 2 + 5 - 9 = 4 padding, split 2/2
        (4, 4, 4, 5, 2, 1, "same", None, ((2, 2), (2, 2))),
        (4, 4, 4, 3, 1, 2, "same", None, ((2, 2), (2, 2))),
        (4, 4, 4, 2, 1, 1, "same_lower", None, ((1, 0), (1, 0))),
    ],
)
def test_conv_matches_loops(cin, cout, groups, k, stride, dil, pad_type, pad, expect_pads):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, cin, 9, 9)).astype(np.float32)
    w = rng.normal(size=(cout, cin // groups, k, k)).astype(np.float32)
    b = rng.normal(size=cout).astype(np.float32)
    got = OPS["conv"](x=x, weight=w, bias=b, strides=np.array([stride] * 2),
                      pad_type=np.array(pad_type), pad=None if pad is None else np.array(pad),
                      dilations=np.array([dil] * 2), groups=np.array(groups))
    want = naive_conv(x.astype(np.float64), w, b, stride, expect_pads, dil, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_hardswish_as_coremltools_emits_it():
    # nn.Hardswish becomes thresholded_relu(alpha=-3) then x * sigmoid_hard(x, 1/6, 1/2)
    x = np.linspace(-5, 5, 41).astype(np.float32)
    t = OPS["thresholded_relu"](x=x, alpha=np.float32(-3))
    got = OPS["mul"](x=t, y=OPS["sigmoid_hard"](x=t, alpha=np.float32(1 / 6), beta=np.float32(0.5)))
    want = x * np.clip(x + 3, 0, 6) / 6
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0] == 0 and got[-1] == pytest.approx(5.0)


def test_elementwise_and_activations():
    x = np.array([[-2.0, -0.5, 0.0, 3.0, 7.0]], np.float32)
    np.testing.assert_array_equal(OPS["relu"](x=x), [[0, 0, 0, 3, 7]])
    np.testing.assert_array_equal(OPS["relu6"](x=x), [[0, 0, 0, 3, 6]])
    np.testing.assert_array_equal(OPS["clip"](x=x, alpha=-1.0, beta=2.0), [[-1, -0.5, 0, 2, 2]])
    np.testing.assert_allclose(OPS["sigmoid"](x=x), 1 / (1 + np.exp(-x.astype(np.float64))))
    np.testing.assert_allclose(OPS["softmax"](x=x, axis=np.int32(-1)).sum(), 1.0)
    np.testing.assert_array_equal(OPS["real_div"](x=x, y=np.float32(2)), x / 2)
    # broadcasting a per-channel constant over NCHW
    a = np.ones((1, 3, 2, 2), np.float32)
    c = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    assert OPS["mul"](x=a, y=c)[0, :, 1, 1].tolist() == [1, 2, 3]


def test_pools_and_reductions():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    avg = OPS["avg_pool"](x=x, kernel_sizes=np.array([2, 2]), strides=np.array([2, 2]),
                          pad_type=np.array("valid"))
    np.testing.assert_array_equal(avg[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    # 3x3 same-padded corner: counting padding averages 4 values over 9, excluding it over 4
    kw = dict(x=x, kernel_sizes=np.array([3, 3]), strides=np.array([1, 1]),
              pad_type=np.array("custom"), pad=np.array([1, 1, 1, 1]))
    incl = OPS["avg_pool"](**kw, exclude_padding_from_average=False)
    excl = OPS["avg_pool"](**kw, exclude_padding_from_average=True)
    assert incl[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 9)
    assert excl[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    mx = OPS["max_pool"](x=x, kernel_sizes=np.array([2, 2]), strides=np.array([2, 2]))
    np.testing.assert_array_equal(mx[0, 0], [[5, 7], [13, 15]])
    m = OPS["reduce_mean"](x=x, axes=np.array([-2, -1]), keep_dims=np.bool_(True))
    assert m.shape == (1, 1, 1, 1) and m.item() == pytest.approx(7.5)


def test_shape_ops():
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    assert OPS["reshape"](x=x, shape=np.array([1, -1])).shape == (1, 24)
    # MIL's 0 rule: same position before iOS17 (len(shape) == rank), from the right from iOS17 on
    assert OPS["reshape"](x=x, shape=np.array([0, 0, 12, 1]), opset=5).shape == (1, 2, 12, 1)
    assert OPS["reshape"](x=x, shape=np.array([0, -1, 0]), opset=7).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="rank"):
        OPS["reshape"](x=x, shape=np.array([0, 6, 4]), opset=5)
    assert OPS["squeeze"](x=np.zeros((1, 5, 1, 1)), axes=np.array([2, 3])).shape == (1, 5)
    assert OPS["expand_dims"](x=np.zeros((1, 5)), axes=np.array([-1, -2])).shape == (1, 5, 1, 1)
    assert OPS["transpose"](x=x, perm=np.array([0, 2, 3, 1])).shape == (1, 3, 4, 2)
    cat = OPS["concat"](values=[x, x[:, :1]], axis=np.int32(1), interleave=np.bool_(False))
    assert cat.shape == (1, 3, 3, 4) and (cat[:, 2] == x[:, 0]).all()
    s = OPS["slice_by_index"](x=x, begin=np.array([0, 1, 0, 1]), end=np.array([1, 2, 3, 4]),
                              stride=np.array([1, 1, 1, 2]),
                              end_mask=np.array([True, False, True, True]),
                              squeeze_mask=np.array([False, True, False, False]))
    np.testing.assert_array_equal(s, x[:, 1, :, 1::2])
    p = OPS["pad"](x=x, pad=np.array([1, 0, 2, 2]), mode=np.array("constant"),
                   constant_val=np.float32(-1))
    assert p.shape == (1, 2, 4, 8) and p[0, 0, 0, 0] == -1 and p[0, 0, 1, 2] == x[0, 0, 0, 0]


def test_linear_matmul_batch_norm():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    w = rng.normal(size=(3, 5)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    np.testing.assert_allclose(OPS["linear"](x=x, weight=w, bias=b), x @ w.T + b, rtol=1e-6)
    np.testing.assert_allclose(OPS["matmul"](x=x, y=w, transpose_y=True), x @ w.T, rtol=1e-6)
    t = rng.normal(size=(1, 3, 2, 2)).astype(np.float32)
    mean, var = np.array([0.0, 1.0, 2.0]), np.array([1.0, 4.0, 0.25])
    bn = OPS["batch_norm"](x=t, mean=mean, variance=var, gamma=np.ones(3) * 2, beta=np.ones(3),
                           epsilon=np.float32(0))
    want = (t - mean.reshape(1, 3, 1, 1)) / np.sqrt(var).reshape(1, 3, 1, 1) * 2 + 1
    np.testing.assert_allclose(bn, want, rtol=1e-6)


def test_cast_to_fp16_overflows_to_inf():
    big = np.array([70000.0, 65504.0, -1e6], np.float32)
    with np.errstate(over="ignore"):
        out = OPS["cast"](x=big, dtype=np.array("fp16"))
    assert out.dtype == np.float16
    assert np.isinf(out[0]) and out[1] == 65504 and np.isneginf(out[2])


def test_classify_labels_the_top_class():
    label, probs = OPS["classify"](probabilities=np.array([[0.1, 0.7, 0.2]], np.float32),
                                   classes=["a", "b", "c"])
    assert label.item() == "b" and probs.dtype == np.float32


# ------------------------------------------------------------------ bilinear resizes
# coremltools' own op documentation lists the 1-D sampling grids; an input 0..Xin-1 resampled
# returns the grid itself, so each documented grid is an exact check of one mode
@pytest.mark.parametrize("xin,xout,mode,grid", [
    (2, 5, "UNALIGN_CORNERS", [0.0, 0.1, 0.5, 0.9, 1.0]),
    (2, 5, "ALIGN_CORNERS", [0.0, 0.25, 0.5, 0.75, 1.0]),
    (2, 5, "DEFAULT", [0.0, 0.4, 0.8, 1.0, 1.0]),
    (2, 5, "OFFSET_CORNERS", [0.1, 0.3, 0.5, 0.7, 0.9]),
    (2, 6, "UNALIGN_CORNERS", [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]),
    (2, 6, "STRICT_ALIGN_CORNERS", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (3, 1, "ALIGN_CORNERS", [1.0]),  # one output: the middle
])
def test_resize_bilinear_sampling_grids_are_the_documented_ones(xin, xout, mode, grid):
    x = np.tile(np.arange(xin, dtype=np.float32), (1, 1, 1, 1))  # (1, 1, 1, xin)
    y = OPS["resize_bilinear"](x, target_size_height=1, target_size_width=xout, sampling_mode=mode)
    assert np.allclose(y.reshape(-1), grid, atol=1e-6)


def _bilinear_1d(row, xout, align_corners):
    """PyTorch's rule written out: src = i*(in-1)/(out-1) (corners) or (i+0.5)*in/out-0.5
    clamped at 0 (half-pixel), then linear between floor(src) and floor(src)+1."""
    xin = len(row)
    out = []
    for i in range(xout):
        s = i * (xin - 1) / (xout - 1) if align_corners else max((i + 0.5) * xin / xout - 0.5, 0.0)
        lo = min(int(np.floor(s)), xin - 1)
        hi = min(lo + 1, xin - 1)
        out.append(row[lo] + (row[hi] - row[lo]) * (s - lo))
    return np.array(out)


@pytest.mark.parametrize("align_corners", [False, True])
def test_upsample_bilinear_matches_the_written_out_rule_per_axis(align_corners):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 2, 4, 5)).astype(np.float32)
    y = OPS["upsample_bilinear"](x, 2.0, 2.0, align_corners=align_corners)
    assert y.shape == (1, 2, 8, 10)
    # separable: resize rows, then columns
    rows = np.stack([[[_bilinear_1d(r, 10, align_corners) for r in ch] for ch in n] for n in x])
    want = np.stack([[[_bilinear_1d(col, 8, align_corners) for col in ch.T] for ch in n] for n in rows])
    assert np.allclose(y, want.transpose(0, 1, 3, 2), atol=1e-6)
    # the two conventions really differ: a fault that swaps them cannot pass unnoticed
    other = OPS["upsample_bilinear"](x, 2.0, 2.0, align_corners=not align_corners)
    assert np.abs(other - y).max() > 0.05
