package dev.mobiledeploy.shapesseg

import dev.mobiledeploy.shapesseg.core.*
import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Matrix
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View

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
        val colours = Masks.colours(mask)
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
