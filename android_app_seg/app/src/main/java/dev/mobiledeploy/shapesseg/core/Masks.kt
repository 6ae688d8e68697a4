package dev.mobiledeploy.shapesseg.core

/** Per-pixel class ids from the model's raw outputs, their overlay colours, and how two masks compare. */
object Masks {
    /** Class id per input pixel (row-major h x w): argmax over the classes. */
    fun argmax(
        outputs: FloatArray,
        h: Int = ModelConfig.INPUT_HEIGHT,
        w: Int = ModelConfig.INPUT_WIDTH,
        c: Int = ModelConfig.NUM_CLASSES,
        channelsLast: Boolean = ModelConfig.OUTPUT_CHANNELS_LAST,
    ): IntArray {
        require(outputs.size == h * w * c) { "expected ${h * w * c} outputs, got ${outputs.size}" }
        val plane = h * w
        return IntArray(plane) { p ->
            var best = 0
            var bestValue = Float.NEGATIVE_INFINITY
            for (k in 0 until c) {
                // (H, W, classes) for TFLite, (classes, H, W) for the .pte: first maximum wins, as numpy
                val v = if (channelsLast) outputs[p * c + k] else outputs[k * plane + p]
                if (v > bestValue) {
                    bestValue = v
                    best = k
                }
            }
            best
        }
    }

    /** ARGB overlay colour per pixel (ModelConfig.PALETTE; background and unknown ids clear). */
    fun colours(mask: IntArray): IntArray = IntArray(mask.size) { ModelConfig.PALETTE.getOrElse(mask[it]) { 0 } }

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
