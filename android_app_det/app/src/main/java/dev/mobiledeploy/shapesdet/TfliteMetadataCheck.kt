package dev.mobiledeploy.shapesdet

import dev.mobiledeploy.shapesdet.core.*
import org.tensorflow.lite.support.metadata.MetadataExtractor
import org.tensorflow.lite.support.metadata.schema.AssociatedFileType
import org.tensorflow.lite.support.metadata.schema.NormalizationOptions
import org.tensorflow.lite.support.metadata.schema.ProcessUnitOptions
import java.nio.ByteBuffer
import kotlin.math.abs

/**
 * The model's own TFLite metadata against the generated constants: its normalisation (one mean/std
 * over RGB pixels 0..255, x = (p - mean) / std) and the label file packed in the model must be what
 * ModelConfig and labels.txt say, or the app stops at start naming what differs.
 */
object ArtifactCheck {
    fun problems(model: ByteBuffer, labels: List<String>): List<String> {
        val meta = MetadataExtractor(model.duplicate())
        if (!meta.hasMetadata()) return listOf("${ModelConfig.MODEL_ASSET} carries no TFLite metadata")
        val out = mutableListOf<String>()
        val input = meta.getInputTensorMetadata(0)
        var found = false
        for (i in 0 until input.processUnitsLength()) {
            val unit = input.processUnits(i)
            if (unit.optionsType() != ProcessUnitOptions.NormalizationOptions) continue
            val norm = unit.options(NormalizationOptions()) as NormalizationOptions
            found = true
            for (c in 0 until ModelConfig.CHANNELS) {
                val mean = norm.mean(if (norm.meanLength() == 1) 0 else c)
                val std = norm.std(if (norm.stdLength() == 1) 0 else c)
                if (!close(1f / std, ModelConfig.SCALE[c]) || !close(-mean / std, ModelConfig.BIAS[c])) {
                    out += "channel $c: metadata mean $mean std $std, ModelConfig scale " +
                        "${ModelConfig.SCALE[c]} bias ${ModelConfig.BIAS[c]}"
                }
            }
            break
        }
        if (!found) out += "no NormalizationOptions in the input tensor metadata"
        if (ModelConfig.BGR) out += "the metadata describes an RGB image, ModelConfig says BGR"
        val output = meta.getOutputTensorMetadata(0)
        val file = (0 until output.associatedFilesLength()).map { output.associatedFiles(it) }
            .firstOrNull { it.type() == AssociatedFileType.TENSOR_AXIS_LABELS }
        if (file == null) {
            out += "no TENSOR_AXIS_LABELS file in the model"
        } else {
            val packed = meta.getAssociatedFile(file.name()).bufferedReader(Charsets.UTF_8).useLines { lines ->
                lines.filter { it.isNotBlank() }.toList()
            }
            if (packed != labels) out += "the labels packed in the model differ from ${ModelConfig.LABELS_ASSET}"
        }
        return out
    }

    /** Throws, naming every disagreement, unless the model's metadata matches the app. */
    fun verify(model: ByteBuffer, labels: List<String>) {
        val p = problems(model, labels)
        check(p.isEmpty()) { "model and app disagree: ${p.joinToString("; ")}; regenerate the app with `mobiledeploy app`" }
    }

    private fun close(a: Float, b: Float): Boolean = abs(a - b) <= 1e-5f * maxOf(1f, abs(a), abs(b))
}
