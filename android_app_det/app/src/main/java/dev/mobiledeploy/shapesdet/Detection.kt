package dev.mobiledeploy.shapesdet

import dev.mobiledeploy.shapesdet.core.*
import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.RectF
import android.util.AttributeSet
import android.view.View

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
            val text = "${LabelMap.name(labels, d.label)} ${"%.2f".format(d.score)}"
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
