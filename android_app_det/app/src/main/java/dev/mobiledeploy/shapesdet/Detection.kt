package dev.mobiledeploy.shapesdet

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.RectF
import android.util.AttributeSet
import android.view.View

/** One detection: a normalised box [ymin, xmin, ymax, xmax] of the whole upright frame, a label
 * index (no background) and a score, as TFLite_Detection_PostProcess and the host decoder give. */
data class Detection(val ymin: Float, val xmin: Float, val ymax: Float, val xmax: Float, val label: Int, val score: Float) {
    fun area(): Float = maxOf(0f, ymax - ymin) * maxOf(0f, xmax - xmin)

    /** Intersection over union; 0 when either box is empty (as the host's iou_matrix). */
    fun iou(o: Detection): Float {
        if (area() <= 0f || o.area() <= 0f) return 0f
        val ih = maxOf(0f, minOf(ymax, o.ymax) - maxOf(ymin, o.ymin))
        val iw = maxOf(0f, minOf(xmax, o.xmax) - maxOf(xmin, o.xmin))
        val inter = ih * iw
        return inter / (area() + o.area() - inter)
    }
}

object Detections {
    /** The runner's packed output [count, ymin, xmin, ymax, xmax, class, score, ...] -> detections. */
    fun parse(packed: FloatArray): List<Detection> {
        val n = packed.getOrElse(0) { 0f }.toInt().coerceIn(0, (packed.size - 1) / 6)
        return (0 until n).map { k ->
            val o = 1 + 6 * k
            Detection(packed[o], packed[o + 1], packed[o + 2], packed[o + 3], packed[o + 4].toInt(), packed[o + 5])
        }
    }

    /** Share of ``reference`` matched one-to-one by a same-class box of ``candidate`` with IoU >=
     * ``minIou`` (reference in score order, each taking the best free candidate): the host's
     * box_recall (1.0 when the reference found nothing). */
    fun recall(reference: List<Detection>, candidate: List<Detection>, minIou: Float = 0.5f): Double {
        if (reference.isEmpty()) return 1.0
        val taken = BooleanArray(candidate.size)
        var matched = 0
        for (r in reference.sortedByDescending { it.score }) {
            var best = -1
            var bestIou = -1f
            for ((j, c) in candidate.withIndex()) {
                if (taken[j] || c.label != r.label) continue
                val v = r.iou(c)
                if (v > bestIou) {
                    bestIou = v
                    best = j
                }
            }
            if (best >= 0 && bestIou >= minIou) {
                taken[best] = true
                matched++
            }
        }
        return matched.toDouble() / reference.size
    }
}

/**
 * Draws the latest detections over the camera preview: a box, the label and the score. The
 * preview is FIT_CENTER and the model saw the whole upright frame, so normalised boxes are laid
 * on the frame's fitted rectangle.
 */
class BoxOverlayView @JvmOverloads constructor(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {
    private val boxPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        style = Paint.Style.STROKE
        strokeWidth = 4f * resources.displayMetrics.density
        color = BOX_COLOUR
    }
    private val textPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.WHITE
        textSize = 14f * resources.displayMetrics.scaledDensity
    }
    private val labelPaint = Paint().apply { color = BOX_COLOUR }
    private var detections: List<Detection> = emptyList()
    private var labels: List<String> = emptyList()
    private var frameWidth = 1
    private var frameHeight = 1

    /** Any thread: the frame's detections, drawn on the UI thread. */
    fun show(found: List<Detection>, names: List<String>, uprightWidth: Int, uprightHeight: Int) {
        post {
            detections = found
            labels = names
            frameWidth = uprightWidth
            frameHeight = uprightHeight
            invalidate()
        }
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val fit = minOf(width.toFloat() / frameWidth, height.toFloat() / frameHeight)
        val w = frameWidth * fit
        val h = frameHeight * fit
        val dx = (width - w) / 2f
        val dy = (height - h) / 2f
        for (d in detections) {
            val r = RectF(dx + d.xmin * w, dy + d.ymin * h, dx + d.xmax * w, dy + d.ymax * h)
            canvas.drawRect(r, boxPaint)
            val text = "${labels.getOrElse(d.label) { "#${d.label}" }} ${"%.2f".format(d.score)}"
            val tw = textPaint.measureText(text)
            val th = textPaint.textSize
            canvas.drawRect(r.left, r.top - th - 4f, r.left + tw + 8f, r.top, labelPaint)
            canvas.drawText(text, r.left + 4f, r.top - 4f, textPaint)
        }
    }

    private companion object {
        const val BOX_COLOUR = 0xFF00C853.toInt()
    }
}
