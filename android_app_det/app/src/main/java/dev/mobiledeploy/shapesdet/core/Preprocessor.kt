package dev.mobiledeploy.shapesdet.core

import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.ceil
import kotlin.math.round

/** Element type of a model tensor (input or output), read from the model at run time. */
enum class TensorType { FLOAT32, INT8, UINT8 }

/**
 * An upright camera frame (ARGB ints) -> the model's input tensor, the way the host validation
 * does it: the whole frame resized to height x width on 8-bit RGB (Pillow's two-pass fixed-point
 * bilinear filter: bit-exact when downscaling a camera frame, within 1 level for mixed
 * up/down scales; or Pillow's nearest), colour order, y = scale * p + bias per channel in
 * float32, NHWC or NCHW, then int8/uint8 quantization with the model's own scale and zero point.
 *
 * Pure Kotlin (no android.*): the JVM unit tests run it against pixels resized on the host.
 */
class Preprocessor(
    val inputType: TensorType = TensorType.FLOAT32,
    val quantScale: Float = 0f,
    val quantZeroPoint: Int = 0,
    val height: Int = ModelConfig.INPUT_HEIGHT,
    val width: Int = ModelConfig.INPUT_WIDTH,
    val scale: FloatArray = ModelConfig.SCALE,
    val bias: FloatArray = ModelConfig.BIAS,
    val bgr: Boolean = ModelConfig.BGR,
    val nchw: Boolean = ModelConfig.NCHW,
    val bilinear: Boolean = ModelConfig.RESIZE_BILINEAR,
) {
    init {
        require(inputType == TensorType.FLOAT32 || quantScale > 0f) {
            "a quantized input needs a positive scale, got $quantScale"
        }
    }

    /** Number of elements of the input tensor. */
    val size: Int get() = height * width * 3

    /** Frame -> float tensor (before quantization), in the model's layout. */
    fun toFloats(argb: IntArray, srcWidth: Int, srcHeight: Int): FloatArray =
        normalise(resize(argb, srcWidth, srcHeight, width, height, bilinear))

    /** Frame -> direct buffer in native order, ready for the interpreter. */
    fun toBuffer(argb: IntArray, srcWidth: Int, srcHeight: Int): ByteBuffer {
        val x = toFloats(argb, srcWidth, srcHeight)
        return when (inputType) {
            TensorType.FLOAT32 -> {
                val buf = ByteBuffer.allocateDirect(x.size * 4).order(ByteOrder.nativeOrder())
                buf.asFloatBuffer().put(x)
                buf
            }
            else -> {
                val buf = ByteBuffer.allocateDirect(x.size).order(ByteOrder.nativeOrder())
                buf.put(quantize(x, inputType, quantScale, quantZeroPoint))
                buf.rewind()
                buf
            }
        }
    }

    /** RGB bytes (interleaved, height x width x 3) -> y = scale * p + bias in the model's layout. */
    fun normalise(rgb: IntArray): FloatArray {
        val plane = height * width
        val out = FloatArray(plane * 3)
        for (i in 0 until plane) {
            for (c in 0 until 3) {
                val p = rgb[i * 3 + (if (bgr) 2 - c else c)].toFloat()
                val y = p * scale[c] + bias[c]
                out[if (nchw) c * plane + i else i * 3 + c] = y
            }
        }
        return out
    }

    companion object {
        private const val PRECISION_BITS = 32 - 8 - 2

        /** q = round_half_even(x / scale) + zeroPoint, clamped to the type's range. */
        fun quantize(x: FloatArray, type: TensorType, scale: Float, zeroPoint: Int): ByteArray {
            val lo = if (type == TensorType.INT8) -128 else 0
            val hi = if (type == TensorType.INT8) 127 else 255
            return ByteArray(x.size) { i ->
                val q = round((x[i] / scale).toDouble()).toInt() + zeroPoint
                q.coerceIn(lo, hi).toByte()
            }
        }

        /** ARGB frame rotated clockwise by 0/90/180/270 degrees (to make a camera frame upright). */
        fun rotate(argb: IntArray, w: Int, h: Int, degrees: Int): Triple<IntArray, Int, Int> {
            val d = ((degrees % 360) + 360) % 360
            if (d == 0) return Triple(argb, w, h)
            val out = IntArray(argb.size)
            val (ow, oh) = if (d == 180) Pair(w, h) else Pair(h, w)
            for (y in 0 until h) {
                for (x in 0 until w) {
                    val (nx, ny) = when (d) {
                        90 -> Pair(h - 1 - y, x)
                        180 -> Pair(w - 1 - x, h - 1 - y)
                        270 -> Pair(y, w - 1 - x)
                        else -> throw IllegalArgumentException("rotation must be a multiple of 90, got $degrees")
                    }
                    out[ny * ow + nx] = argb[y * w + x]
                }
            }
            return Triple(out, ow, oh)
        }

        /** ARGB (srcW x srcH) -> interleaved RGB bytes (outW x outH x 3), as Pillow resizes. */
        fun resize(argb: IntArray, srcW: Int, srcH: Int, outW: Int, outH: Int, bilinear: Boolean): IntArray {
            require(argb.size == srcW * srcH) { "frame has ${argb.size} pixels, expected ${srcW * srcH}" }
            val rgb = IntArray(srcW * srcH * 3)
            for (i in argb.indices) {
                val p = argb[i]
                rgb[i * 3] = (p shr 16) and 0xFF
                rgb[i * 3 + 1] = (p shr 8) and 0xFF
                rgb[i * 3 + 2] = p and 0xFF
            }
            if (srcW == outW && srcH == outH) return rgb
            if (!bilinear) return nearest(rgb, srcW, srcH, outW, outH)
            // Pillow: horizontal pass to 8 bits, then vertical pass to 8 bits
            val horizontal = if (srcW != outW) pass(rgb, srcW, srcH, outW, true) else rgb
            return if (srcH != outH) pass(horizontal, outW, srcH, outH, false) else horizontal
        }

        private class Coeffs(val ksize: Int, val bounds: IntArray, val k: IntArray)

        /** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the triangle filter. */
        private fun coeffs(inSize: Int, outSize: Int): Coeffs {
            val scale = inSize.toDouble() / outSize
            val filterScale = if (scale < 1.0) 1.0 else scale
            val support = 1.0 * filterScale
            val ksize = ceil(support).toInt() * 2 + 1
            val pre = DoubleArray(outSize * ksize)
            val bounds = IntArray(outSize * 2)
            for (xx in 0 until outSize) {
                val center = (xx + 0.5) * scale
                val ss = 1.0 / filterScale
                val xmin = maxOf((center - support + 0.5).toInt(), 0)
                val xmax = minOf((center + support + 0.5).toInt(), inSize) - xmin
                var ww = 0.0
                for (x in 0 until xmax) {
                    var t = (x + xmin - center + 0.5) * ss
                    if (t < 0.0) t = -t
                    val w = if (t < 1.0) 1.0 - t else 0.0
                    pre[xx * ksize + x] = w
                    ww += w
                }
                for (x in 0 until xmax) if (ww != 0.0) pre[xx * ksize + x] /= ww
                bounds[xx * 2] = xmin
                bounds[xx * 2 + 1] = xmax
            }
            val one = (1 shl PRECISION_BITS).toDouble()
            val k = IntArray(pre.size) { i ->
                if (pre[i] < 0) (-0.5 + pre[i] * one).toInt() else (0.5 + pre[i] * one).toInt()
            }
            return Coeffs(ksize, bounds, k)
        }

        private fun clip8(v: Int): Int = when {
            v >= (1 shl PRECISION_BITS shl 8) -> 255
            v <= 0 -> 0
            else -> v shr PRECISION_BITS
        }

        private fun pass(src: IntArray, w: Int, h: Int, outSize: Int, horizontal: Boolean): IntArray {
            val c = coeffs(if (horizontal) w else h, outSize)
            val ow = if (horizontal) outSize else w
            val oh = if (horizontal) h else outSize
            val out = IntArray(ow * oh * 3)
            for (y in 0 until oh) {
                for (x in 0 until ow) {
                    val o = if (horizontal) x else y
                    val min = c.bounds[o * 2]
                    val count = c.bounds[o * 2 + 1]
                    for (ch in 0 until 3) {
                        var ss = 1 shl (PRECISION_BITS - 1)
                        for (i in 0 until count) {
                            val idx = if (horizontal) (y * w + min + i) else ((min + i) * w + x)
                            ss += src[idx * 3 + ch] * c.k[o * c.ksize + i]
                        }
                        out[(y * ow + x) * 3 + ch] = clip8(ss)
                    }
                }
            }
            return out
        }

        /** Pillow's nearest resize (ImagingScaleAffine: accumulated source coordinates). */
        private fun nearest(rgb: IntArray, w: Int, h: Int, outW: Int, outH: Int): IntArray {
            val ax = w.toDouble() / outW
            val ay = h.toDouble() / outH
            val xin = IntArray(outW)
            var xo = ax * 0.5
            for (x in 0 until outW) {
                xin[x] = minOf(xo.toInt(), w - 1)
                xo += ax
            }
            val out = IntArray(outW * outH * 3)
            var yo = ay * 0.5
            for (y in 0 until outH) {
                val yi = minOf(yo.toInt(), h - 1)
                for (x in 0 until outW) {
                    for (ch in 0 until 3) out[(y * outW + x) * 3 + ch] = rgb[(yi * w + xin[x]) * 3 + ch]
                }
                yo += ay
            }
            return out
        }
    }
}
