"""Half-pixel bilinear upsampling by 2^k, lowered to ops the Edge TPU compiler maps.

What LR-ASPP's resizes compute (PyTorch ``align_corners=False``, ``tf.image.resize``, TFLite
RESIZE_BILINEAR version 3 with ``half_pixel_centers``) is refused by the last Edge TPU compiler
("Operation version not supported", see ``backends/edgetpu/analysis.py``). For an integer factor ``s`` it
is the same function as a chain of ops the compiler maps, in one dimension:

* edge replication: output ``o`` samples the input at ``(o + 0.5) / s - 0.5``, clamped to the
  ends, which is linear interpolation of the input extended by repeating its first and last
  sample; so the input is padded by one replicated sample per side (two slices and a
  concatenation per axis);
* linear interpolation of a sampled signal = its piecewise-constant version averaged over a
  window one input sample wide. The piecewise-constant version at the output rate is
  nearest-neighbour upsampling ``u[o] = x[floor(o / s)]`` (RESIZE_NEAREST_NEIGHBOR without half
  pixel centres: version 1/2), and the window is ``[1/2, 1, ..., 1, 1/2] / s`` (s + 1 taps),
  which factors as ``[1, 1]/2 * [1, 1]/2 * [1, 0, 1]/2 * ... * [1, 0 x (s/2 - 1), 1]/2``;
* a 2-tap filter of dilation ``d`` after nearest upsampling by ``d`` equals nearest upsampling
  after a 2-tap filter at the coarse rate, so every factor moves before the upsampling it
  follows: ``x -> pad -> (N2 -> D)^k -> D -> crop``, where ``N2`` is a nearest 2x upsampling and
  ``D`` a fixed 2x2 depthwise average (weights all 1/4: exact in int8, no weight rounding), and
  the crop drops the ``s/2`` outputs per side that only the padding produced.

In 2-D every step acts on both axes at once (the interpolation is separable). The lowered graph
is the reference function up to float rounding (the tests hold it within 1e-6 of
``tf.image.resize`` and ``torch.nn.functional.interpolate``); in int8 each average is one more
requantization. Factors that are not a power of two, or sizes whose ratio is not an integer,
keep the builtin resize (``lowerable`` says which).
"""

from __future__ import annotations


def factor(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int | None:
    """The power-of-two factor (>= 2) taking ``in_hw`` to ``out_hw`` on both axes, else None."""
    (hi, wi), (ho, wo) = in_hw, out_hw
    if hi <= 0 or wi <= 0 or ho % hi or wo % wi or ho // hi != wo // wi:
        return None
    s = ho // hi
    return s if s >= 2 and s & (s - 1) == 0 else None


def lowerable(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """True when ``upsample_bilinear_lowered`` computes this resize (a 2^k factor on both axes)."""
    return factor(in_hw, out_hw) is not None


def op_plan(s: int) -> list[str]:
    """The TFLite ops the lowering writes for factor ``s``, in order (for docs and tests)."""
    k = s.bit_length() - 1
    ops = ["STRIDED_SLICE", "STRIDED_SLICE", "CONCATENATION"] * 2
    for _ in range(k):
        ops += ["RESIZE_NEAREST_NEIGHBOR", "DEPTHWISE_CONV_2D"]
    return ops + ["DEPTHWISE_CONV_2D", "STRIDED_SLICE"]


def upsample_bilinear_lowered(x, out_h: int, out_w: int, name: str):
    """Keras layers computing half-pixel bilinear resize of NHWC ``x`` to ``(out_h, out_w)`` from
    slices, concatenations, legacy nearest-neighbour 2x resizes and fixed 2x2 depthwise averages.

    ``x`` must have static spatial sizes and ``lowerable`` must hold for them.
    """
    import keras

    layers = keras.layers
    h, w = int(x.shape[1]), int(x.shape[2])
    s = factor((h, w), (out_h, out_w))
    if s is None:
        raise ValueError(f"{name}: {h}x{w} -> {out_h}x{out_w} is not a power-of-two upsampling")
    k = s.bit_length() - 1

    # edge replication: one sample per side and axis (what the clamped sampling reads)
    def replicate(t, axis: int, tag: str):
        first = layers.Lambda(lambda v: v[:, :1] if axis == 1 else v[:, :, :1], name=f"{name}_{tag}_first")(t)
        last = layers.Lambda(lambda v: v[:, -1:] if axis == 1 else v[:, :, -1:], name=f"{name}_{tag}_last")(t)
        return layers.Concatenate(axis=axis, name=f"{name}_{tag}_pad")([first, t, last])

    y = replicate(replicate(x, 1, "h"), 2, "w")

    def nearest2(t, i: int):
        def up(v):
            import tensorflow as tf

            # legacy sampling (floor(o / 2)): RESIZE_NEAREST_NEIGHBOR version 1 (2 in int8),
            # the form the Edge TPU compiler maps; half_pixel_centers would write version 3
            size = tf.constant([int(v.shape[1]) * 2, int(v.shape[2]) * 2], tf.int32)
            return tf.raw_ops.ResizeNearestNeighbor(images=v, size=size, align_corners=False,
                                                    half_pixel_centers=False)
        return layers.Lambda(up, name=f"{name}_nearest{i}")(t)

    def average(t, i: int):
        def avg(v):
            import tensorflow as tf

            kernel = tf.fill([2, 2, int(v.shape[-1]), 1], tf.constant(0.25, v.dtype))
            return tf.nn.depthwise_conv2d(v, kernel, [1, 1, 1, 1], "VALID")
        return layers.Lambda(avg, name=f"{name}_avg{i}")(t)

    for i in range(k):
        y = average(nearest2(y, i), i)
    y = average(y, k)
    # the padded input at the output rate starts s samples early and the averages (anchored at
    # their first tap) move nothing: output o sits at index o + s/2
    off = s // 2
    return layers.Lambda(lambda v: v[:, off:off + out_h, off:off + out_w], name=f"{name}_crop")(y)
