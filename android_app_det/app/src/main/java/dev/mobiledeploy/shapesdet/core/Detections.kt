package dev.mobiledeploy.shapesdet.core

import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.security.MessageDigest
import kotlin.math.exp

/** One detection: a normalised box [ymin, xmin, ymax, xmax] of the whole upright frame, a label
 * index (no background) and a score, as TFLite_Detection_PostProcess and the host decoder give. */
data class Detection(val ymin: Float, val xmin: Float, val ymax: Float, val xmax: Float, val label: Int, val score: Float) {
    /** (ymax - ymin) * (xmax - xmin) in float32, as the host's iou_matrix computes it. */
    fun area(): Float = (ymax - ymin) * (xmax - xmin)

    /** Intersection over union in float32, the host's iou_matrix: 0 when either box has area <= 0. */
    fun iou(o: Detection): Float {
        val a = area()
        val b = o.area()
        if (a <= 0f || b <= 0f) return 0f
        val ih = maxOf(minOf(ymax, o.ymax) - maxOf(ymin, o.ymin), 0f)
        val iw = maxOf(minOf(xmax, o.xmax) - maxOf(xmin, o.xmin), 0f)
        val inter = ih * iw
        return inter / (a + b - inter)
    }
}

object Detections {
    /** The boxes of TFLite_Detection_PostProcess (its four outputs, one image): ``boxes`` holds
     * [ymin, xmin, ymax, xmax] per row, ``count`` rows are valid. */
    fun fromTensors(boxes: FloatArray, classes: FloatArray, scores: FloatArray, count: Float): List<Detection> {
        val n = count.toInt().coerceIn(0, minOf(scores.size, classes.size, boxes.size / 4))
        return (0 until n).map { k ->
            Detection(boxes[4 * k], boxes[4 * k + 1], boxes[4 * k + 2], boxes[4 * k + 3], classes[k].toInt(), scores[k])
        }
    }

    /** Detections -> [count, then ymin, xmin, ymax, xmax, class, score per row] (``rows`` rows). */
    fun pack(found: List<Detection>, rows: Int = ModelConfig.MAX_DETECTIONS): FloatArray {
        val packed = FloatArray(1 + 6 * rows)
        val n = minOf(found.size, rows)
        packed[0] = n.toFloat()
        for (k in 0 until n) {
            val d = found[k]
            val o = 1 + 6 * k
            packed[o] = d.ymin
            packed[o + 1] = d.xmin
            packed[o + 2] = d.ymax
            packed[o + 3] = d.xmax
            packed[o + 4] = d.label.toFloat()
            packed[o + 5] = d.score
        }
        return packed
    }

    /** The packed form back to detections ([count, ymin, xmin, ymax, xmax, class, score, ...]). */
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

/** The anchors file (assets/anchors.bin): float32 little-endian [ycenter, xcenter, height, width]
 * per anchor, in the heads' order; checked against the digest the bundle's decoding spec records. */
object Anchors {
    fun read(bytes: ByteArray): FloatArray {
        require(bytes.size == ModelConfig.NUM_ANCHORS * 16) {
            "${ModelConfig.ANCHORS_ASSET}: ${bytes.size} bytes, expected ${ModelConfig.NUM_ANCHORS} anchors x 16"
        }
        val digest = MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }
        check(digest == ModelConfig.ANCHORS_SHA256) {
            "${ModelConfig.ANCHORS_ASSET}: sha256 $digest, the decoding spec says ${ModelConfig.ANCHORS_SHA256}"
        }
        val out = FloatArray(ModelConfig.NUM_ANCHORS * 4)
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out)
        return out
    }
}

/**
 * SSD decoding of raw heads, for runtimes that give no decoded boxes (the .pte): the bundle's
 * decoding spec, step by step as the host decoder (mobiledeploy/detection.py, which reproduces
 * TFLite_Detection_PostProcess):
 * scores (softmax over classes + 1, background first, or sigmoid; float64 then float32);
 * center-size boxes against the anchors (centres in float64, half sizes rounded to float32);
 * NMS: class-agnostic "fast" (each anchor's best class, first on ties) or per class ("regular"),
 * stable by score, IoU in float32, suppressing IoU > threshold.
 */
class SsdDecoder(
    private val anchors: FloatArray,
    private val numClasses: Int = ModelConfig.NUM_CLASSES,
    private val coder: DoubleArray = ModelConfig.BOX_CODER,
    private val sigmoid: Boolean = ModelConfig.SCORE_SIGMOID,
    private val scoreThreshold: Double = ModelConfig.SCORE_THRESHOLD,
    private val iouThreshold: Double = ModelConfig.IOU_THRESHOLD,
    private val maxDetections: Int = ModelConfig.MAX_DETECTIONS,
    private val regularNms: Boolean = ModelConfig.REGULAR_NMS,
    private val perClass: Int = ModelConfig.DETECTIONS_PER_CLASS,
) {
    val numAnchors: Int = anchors.size / 4

    /** Scores per anchor and class, background dropped: (A, numClasses) row-major. */
    fun scores(logits: FloatArray): FloatArray {
        val c1 = numClasses + 1
        require(logits.size == numAnchors * c1) { "class logits: ${logits.size} values, expected $numAnchors x $c1" }
        val out = FloatArray(numAnchors * numClasses)
        for (a in 0 until numAnchors) {
            val o = a * c1
            if (sigmoid) {
                for (k in 1 until c1) out[a * numClasses + k - 1] = (1.0 / (1.0 + exp(-logits[o + k].toDouble()))).toFloat()
            } else {
                var max = Double.NEGATIVE_INFINITY
                for (k in 0 until c1) max = maxOf(max, logits[o + k].toDouble())
                var sum = 0.0
                for (k in 0 until c1) sum += exp(logits[o + k].toDouble() - max)
                for (k in 1 until c1) out[a * numClasses + k - 1] = (exp(logits[o + k].toDouble() - max) / sum).toFloat()
            }
        }
        return out
    }

    /** Raw (ty, tx, th, tw) per anchor -> [ymin, xmin, ymax, xmax] per anchor. */
    fun boxes(encodings: FloatArray): FloatArray {
        require(encodings.size == numAnchors * 4) { "box encodings: ${encodings.size} values, expected $numAnchors x 4" }
        val out = FloatArray(numAnchors * 4)
        for (a in 0 until numAnchors) {
            val ya = anchors[4 * a].toDouble()
            val xa = anchors[4 * a + 1].toDouble()
            val ha = anchors[4 * a + 2].toDouble()
            val wa = anchors[4 * a + 3].toDouble()
            val e = 4 * a
            val yc = (encodings[e].toDouble() / coder[0] * ha + ya).toFloat()
            val xc = (encodings[e + 1].toDouble() / coder[1] * wa + xa).toFloat()
            val hh = (0.5 * exp(encodings[e + 2].toDouble() / coder[2]) * ha).toFloat()
            val hw = (0.5 * exp(encodings[e + 3].toDouble() / coder[3]) * wa).toFloat()
            out[e] = yc - hh
            out[e + 1] = xc - hw
            out[e + 2] = yc + hh
            out[e + 3] = xc + hw
        }
        return out
    }

    /** One image's raw heads -> its detections, best first. */
    fun decode(logits: FloatArray, encodings: FloatArray): List<Detection> {
        val s = scores(logits)
        val b = boxes(encodings)
        fun det(a: Int, k: Int, score: Float) = Detection(b[4 * a], b[4 * a + 1], b[4 * a + 2], b[4 * a + 3], k, score)
        if (!regularNms) {
            val cls = IntArray(numAnchors)
            val best = FloatArray(numAnchors) { a ->
                var k = 0
                for (j in 1 until numClasses) if (s[a * numClasses + j] > s[a * numClasses + k]) k = j
                cls[a] = k
                s[a * numClasses + k]
            }
            return nms(b, best, maxDetections).map { a -> det(a, cls[a], best[a]) }
        }
        val all = mutableListOf<Detection>()
        for (k in 0 until numClasses) {
            val sc = FloatArray(numAnchors) { s[it * numClasses + k] }
            for (a in nms(b, sc, perClass)) all += det(a, k, sc[a])
        }
        // stable: equal scores keep class order, then anchor order
        return all.withIndex().sortedWith(compareByDescending<IndexedValue<Detection>> { it.value.score }.thenBy { it.index })
            .take(maxDetections).map { it.value }
    }

    /** Single-class greedy NMS (the op's): anchors with score >= threshold, stable by score. */
    fun nms(boxes: FloatArray, scores: FloatArray, maxOut: Int): List<Int> {
        val order = scores.indices.filter { scores[it].toDouble() >= scoreThreshold }
            .sortedWith(compareByDescending<Int> { scores[it] }.thenBy { it })
        fun box(a: Int) = Detection(boxes[4 * a], boxes[4 * a + 1], boxes[4 * a + 2], boxes[4 * a + 3], 0, 0f)
        val active = BooleanArray(order.size) { true }
        val selected = mutableListOf<Int>()
        for (i in order.indices) {
            if (selected.size >= maxOut) break
            if (!active[i]) continue
            selected += order[i]
            active[i] = false
            val bi = box(order[i])
            for (j in i + 1 until order.size) {
                if (active[j] && bi.iou(box(order[j])).toDouble() > iouThreshold) active[j] = false
            }
        }
        return selected
    }
}
