package dev.mobiledeploy.shapesseg

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Matrix
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View

/** Per-pixel class ids from the model's raw outputs, and how two masks compare. */
object Masks {
    /** Class id per input pixel (row-major INPUT_HEIGHT x INPUT_WIDTH): argmax over the classes. */
    fun argmax(outputs: FloatArray): IntArray {
        val h = ModelConfig.INPUT_HEIGHT
        val w = ModelConfig.INPUT_WIDTH
        val c = ModelConfig.NUM_CLASSES
        require(outputs.size == h * w * c) { "expected ${h * w * c} outputs, got ${outputs.size}" }
        val plane = h * w
        return IntArray(plane) { p ->
            var best = 0
            var bestValue = Float.NEGATIVE_INFINITY
            for (k in 0 until c) {
                // (H, W, classes) for TFLite, (classes, H, W) for the .pte: first maximum wins, as numpy
                val v = if (ModelConfig.OUTPUT_CHANNELS_LAST) outputs[p * c + k] else outputs[k * plane + p]
                if (v > bestValue) {
                    bestValue = v
                    best = k
                }
            }
            best
        }
    }

    /** [class, run length, ...] (golden_inputs.json) back to one id per pixel. */
    fun decodeRle(rle: IntArray): IntArray {
        val out = IntArray((0 until rle.size / 2).sumOf { rle[2 * it + 1] })
        var at = 0
        for (i in 0 until rle.size / 2) {
            out.fill(rle[2 * i], at, at + rle[2 * i + 1])
            at += rle[2 * i + 1]
        }
        return out
    }

    /** Share of pixels whose class is the same in both masks (the host's pixel_agreement). */
    fun agreement(a: IntArray, b: IntArray): Double {
        require(a.size == b.size) { "masks of ${a.size} and ${b.size} pixels" }
        if (a.isEmpty()) return 1.0
        return a.indices.count { a[it] == b[it] }.toDouble() / a.size
    }

    /** Pixel count per class, largest first: what the legend lists. */
    fun classesPresent(mask: IntArray): List<Pair<Int, Int>> {
        val counts = IntArray(ModelConfig.NUM_CLASSES)
        for (id in mask) if (id in counts.indices) counts[id]++
        return counts.indices.filter { counts[it] > 0 }.sortedByDescending { counts[it] }.map { Pair(it, counts[it]) }
    }
}

/**
 * Draws the latest mask over the camera preview, tinted with the class palette. The preview is
 * FIT_CENTER: the mask (the whole upright frame squeezed to the input size) is stretched back to
 * the frame's aspect and centred the same way, so it lies on what the model saw.
 */
class MaskOverlayView @JvmOverloads constructor(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {
    private val paint = Paint(Paint.FILTER_BITMAP_FLAG).apply { alpha = OVERLAY_ALPHA }
    private val matrix = Matrix()
    private var bitmap: Bitmap? = null
    private var frameWidth = 1
    private var frameHeight = 1

    /** Any thread: builds the tinted bitmap of a frame's mask, then redraws on the UI thread. */
    fun show(mask: IntArray, uprightWidth: Int, uprightHeight: Int) {
        val colours = IntArray(mask.size) { ModelConfig.PALETTE.getOrElse(mask[it]) { 0 } }
        val next = Bitmap.createBitmap(colours, ModelConfig.INPUT_WIDTH, ModelConfig.INPUT_HEIGHT, Bitmap.Config.ARGB_8888)
        post {
            bitmap = next
            frameWidth = uprightWidth
            frameHeight = uprightHeight
            invalidate()
        }
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val b = bitmap ?: return
        val fit = minOf(width.toFloat() / frameWidth, height.toFloat() / frameHeight)
        val dx = (width - frameWidth * fit) / 2f
        val dy = (height - frameHeight * fit) / 2f
        matrix.setScale(frameWidth * fit / b.width, frameHeight * fit / b.height)
        matrix.postTranslate(dx, dy)
        canvas.drawBitmap(b, matrix, paint)
    }

    private companion object {
        const val OVERLAY_ALPHA = 140
    }
}
