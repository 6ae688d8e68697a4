package dev.mobiledeploy.shapesdet.core

import java.nio.ByteBuffer
import kotlin.math.exp

/**
 * What the app shows, from the model's raw outputs: dequantization with the model's own scale and
 * zero point, the label file, and the top-k a classifier lists. Pure Kotlin (no android.*), so the
 * JVM runs it: its unit tests, and `mobiledeploy validate`'s app rows (the same code judged).
 */
object Outputs {
    /** ``n`` values of a tensor's bytes (from the buffer's start, in its byte order) as floats:
     * (q - zeroPoint) * scale for int8/uint8, as LiteRT's and the host's dequantize. */
    fun dequantize(bytes: ByteBuffer, type: TensorType, scale: Float, zeroPoint: Int, n: Int): FloatArray {
        val b = bytes.duplicate().order(bytes.order())
        b.rewind()
        return when (type) {
            TensorType.FLOAT32 -> FloatArray(n).also { b.asFloatBuffer().get(it) }
            TensorType.INT8 -> FloatArray(n) { (b.get(it).toInt() - zeroPoint) * scale }
            TensorType.UINT8 -> FloatArray(n) { ((b.get(it).toInt() and 0xFF) - zeroPoint) * scale }
        }
    }
}

/** The label file (labels.txt): one label per line, in output order. */
object LabelMap {
    fun parse(text: String): List<String> = text.lineSequence().filter { it.isNotBlank() }.toList()

    /** The label shown for output ``index`` ("#index" when the file has no such line). */
    fun name(labels: List<String>, index: Int): String = labels.getOrElse(index) { "#$index" }
}

/** One listed class: its output index, label and softmax probability. */
data class Scored(val index: Int, val label: String, val probability: Float)

/** Index and softmax probability of the k largest outputs, best first (first index on ties). */
fun topK(outputs: FloatArray, k: Int = 3): List<Pair<Int, Float>> {
    if (outputs.isEmpty()) return emptyList()
    val max = outputs.max()
    val e = outputs.map { exp((it - max).toDouble()) }
    val sum = e.sum()
    return outputs.indices.sortedByDescending { outputs[it] }.take(k).map { Pair(it, (e[it] / sum).toFloat()) }
}

/** The top k of a classifier's outputs with their labels: what the camera screen lists. */
fun classify(outputs: FloatArray, labels: List<String>, k: Int = 3): List<Scored> =
    topK(outputs, k).map { (i, p) -> Scored(i, LabelMap.name(labels, i), p) }
