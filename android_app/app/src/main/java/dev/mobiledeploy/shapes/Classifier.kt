package dev.mobiledeploy.shapes

import dev.mobiledeploy.shapes.core.*
import android.content.Context

/** Where inference runs; the executor name in golden reports is "android-<runtime>-<id>". */
enum class Accelerator(val id: String) {
    XNNPACK("xnnpack"),
    GPU("gpu"),
    NNAPI("nnapi");

    fun next(): Accelerator = entries[(ordinal + 1) % entries.size]

    companion object {
        val DEFAULT: Accelerator = XNNPACK

        fun fromId(id: String): Accelerator =
            entries.firstOrNull { it.id == id.trim().lowercase() }
                ?: throw IllegalArgumentException("unknown accelerator '$id'; allowed: ${entries.joinToString { it.id }}")
    }
}

/** One model, one runtime: an upright ARGB frame in, raw (dequantized) model outputs out. */
interface Classifier : AutoCloseable {
    val accelerator: Accelerator
    val preprocessor: Preprocessor

    /** Milliseconds the last [run] spent in the runtime (preprocessing excluded). */
    val lastInferenceMs: Double

    /** e.g. "android-litert-xnnpack", the executor column of validation reports. */
    val executor: String get() = "android-${ModelConfig.RUNTIME}-${accelerator.id}"

    fun run(argb: IntArray, width: Int, height: Int): FloatArray

    companion object {
        /** The generated runtime's classifier for the bundled model. */
        fun create(context: Context, accelerator: Accelerator = Accelerator.DEFAULT): Classifier =
            LiteRtClassifier(context, accelerator)
    }
}

/** Labels from assets, one per line, in output order. */
object Labels {
    fun load(context: Context): List<String> =
        LabelMap.parse(context.assets.open(ModelConfig.LABELS_ASSET).bufferedReader(Charsets.UTF_8).use { it.readText() })
}
