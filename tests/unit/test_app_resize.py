"""The resize algorithm Preprocessor.kt implements, ported line by line, against Pillow itself.

The Kotlin cannot run here; this pins the algorithm (Pillow's fixed-point bilinear and its
accumulated-coordinate nearest) so that the generated code's arithmetic is the host's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

PRECISION_BITS = 32 - 8 - 2


def _i32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def _coeffs(in_size: int, out_size: int):
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 1.0 * filter_scale
    ksize = math.ceil(support) * 2 + 1
    pre = [0.0] * (out_size * ksize)
    bounds = [0] * (out_size * 2)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filter_scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ww = 0.0
        for x in range(xmax):
            t = abs((x + xmin - center + 0.5) * ss)
            w = 1.0 - t if t < 1.0 else 0.0
            pre[xx * ksize + x] = w
            ww += w
        for x in range(xmax):
            if ww != 0.0:
                pre[xx * ksize + x] /= ww
        bounds[xx * 2], bounds[xx * 2 + 1] = xmin, xmax
    one = float(1 << PRECISION_BITS)
    k = [int(-0.5 + p * one) if p < 0 else int(0.5 + p * one) for p in pre]
    return ksize, bounds, k


def _clip8(v: int) -> int:
    if v >= (1 << PRECISION_BITS << 8):
        return 255
    return 0 if v <= 0 else v >> PRECISION_BITS


def _pass(src, w, h, out_size, horizontal):
    ksize, bounds, k = _coeffs(w if horizontal else h, out_size)
    ow, oh = (out_size, h) if horizontal else (w, out_size)
    out = [0] * (ow * oh * 3)
    for y in range(oh):
        for x in range(ow):
            o = x if horizontal else y
            mn, count = bounds[o * 2], bounds[o * 2 + 1]
            for ch in range(3):
                ss = 1 << (PRECISION_BITS - 1)
                for i in range(count):
                    idx = (y * w + mn + i) if horizontal else ((mn + i) * w + x)
                    ss = _i32(ss + src[idx * 3 + ch] * k[o * ksize + i])
                out[(y * ow + x) * 3 + ch] = _clip8(ss)
    return out


def _nearest(rgb, w, h, out_w, out_h):
    ax, ay = w / out_w, h / out_h
    xin, xo = [], ax * 0.5
    for _ in range(out_w):
        xin.append(min(int(xo), w - 1))
        xo += ax
    out, yo = [], ay * 0.5
    for _ in range(out_h):
        yi = min(int(yo), h - 1)
        for x in range(out_w):
            out.extend(rgb[(yi * w + xin[x]) * 3: (yi * w + xin[x]) * 3 + 3])
        yo += ay
    return out


def kotlin_resize(rgb: np.ndarray, out_w: int, out_h: int, bilinear: bool) -> np.ndarray:
    h, w, _ = rgb.shape
    flat = [int(v) for v in rgb.reshape(-1)]
    if (w, h) == (out_w, out_h):
        res = flat
    elif not bilinear:
        res = _nearest(flat, w, h, out_w, out_h)
    else:
        hor = _pass(flat, w, h, out_w, True) if w != out_w else flat
        res = _pass(hor, out_w, h, out_h, False) if h != out_h else hor
    return np.asarray(res, np.uint8).reshape(out_h, out_w, 3)


# camera frame -> model input: the case that matters, bit-exact with Pillow
CAMERA = [((320, 240), (112, 112)), ((64, 48), (16, 16)), ((240, 320), (96, 128))]


@pytest.mark.parametrize(("src", "dst"), CAMERA, ids=[f"{a[0]}x{a[1]}-{b[0]}x{b[1]}" for a, b in CAMERA])
def test_kotlin_bilinear_downscale_is_pillow_bit_for_bit(src, dst):
    rng = np.random.default_rng(src[0] * 1000 + dst[1])
    img = rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    # a smooth gradient too: random pixels alone would hide rounding-direction bugs
    img[: src[1] // 2] = np.linspace(0, 255, src[0], dtype=np.uint8)[None, :, None]
    expected = np.asarray(Image.fromarray(img).resize(dst, Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(kotlin_resize(img, *dst, True), expected)


def test_kotlin_bilinear_is_within_one_level_of_pillow_for_any_sizes():
    """Mixed up/down scales: Pillow 13 differs from its documented two-pass order by at most 1."""
    rng = np.random.default_rng(7)
    for _ in range(60):
        w, h, ow, oh = (int(v) for v in rng.integers(2, 50, 4))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(img).resize((ow, oh), Image.Resampling.BILINEAR))
        diff = np.abs(kotlin_resize(img, ow, oh, True).astype(int) - expected.astype(int))
        assert diff.max() <= 1, (w, h, ow, oh)


SIZES = [((64, 48), (16, 16)), ((17, 9), (32, 32)), ((40, 30), (40, 7)), ((33, 33), (12, 20)),
         ((7, 100), (50, 3)), ((112, 112), (112, 112)), ((640, 480), (112, 112))]


@pytest.mark.parametrize(("src", "dst"), SIZES, ids=[f"{a[0]}x{a[1]}-{b[0]}x{b[1]}" for a, b in SIZES])
def test_kotlin_nearest_is_pillow_bit_for_bit(src, dst):
    rng = np.random.default_rng(src[0] * 1000 + dst[1])
    img = rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(img).resize(dst, Image.Resampling.NEAREST))
    np.testing.assert_array_equal(kotlin_resize(img, *dst, False), expected)


def test_kotlin_resize_keeps_the_frame_when_sizes_match():
    img = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(kotlin_resize(img, 5, 4, True), img)
