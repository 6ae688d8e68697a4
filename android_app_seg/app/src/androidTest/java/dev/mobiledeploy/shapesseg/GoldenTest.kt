package dev.mobiledeploy.shapesseg

import dev.mobiledeploy.shapesseg.core.*
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.util.Log
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File
import java.io.FileNotFoundException

/**
 * The bundle's golden validation images through the app's own Preprocessor + Classifier.
 *
 * Writes files/golden/android_validation.json in the shape of report/validation.json and asserts
 * top-1 agreement with the host. Accelerators: instrumentation argument `accelerators`
 * (comma-separated, default "xnnpack").
 */
@RunWith(AndroidJUnit4::class)
class GoldenTest {
    @Test
    fun goldenInputsAgreeWithHost() {
        val instrumentation = InstrumentationRegistry.getInstrumentation()
        val testAssets = instrumentation.context.assets
        val app = instrumentation.targetContext
        // missing assets are a failure, not a skip: a green run must mean the golden images ran
        val spec = try {
            JSONObject(testAssets.open("golden/golden_inputs.json").bufferedReader().readText())
        } catch (e: FileNotFoundException) {
            fail("no golden inputs in androidTest assets: generate the app from a bundle " +
                "(mobiledeploy app BUNDLE -o DIR)")
            return
        }
        val samples = spec.getJSONArray("samples")
        val minAgreement = spec.getDouble("min_agreement")
        val wanted = (InstrumentationRegistry.getArguments().getString("accelerators") ?: "xnnpack")
            .split(",").filter { it.isNotBlank() }.map { Accelerator.fromId(it) }

        val results = JSONArray()
        val failures = mutableListOf<String>()
        val files = JSONArray()
        for (i in 0 until samples.length()) files.put(samples.getJSONObject(i).getString("file"))
        for (accelerator in wanted) {
            Classifier.create(app, accelerator).use { classifier ->
                checkInputQuantization(spec.getJSONObject("input"), classifier.preprocessor)
                val outputs = JSONArray()
                val top1 = JSONArray()
                val perImage = JSONArray()
                var agreeSum = 0.0
                val latencies = mutableListOf<Double>()
                var agree = 0
                var maxAbs = 0.0
                for (i in 0 until samples.length()) {
                    val s = samples.getJSONObject(i)
                    val (argb, w, h) = decode(testAssets.open("golden/" + s.getString("file")).use { BitmapFactory.decodeStream(it, null, OPTIONS) }
                        ?: throw IllegalStateException("cannot decode ${s.getString("file")}"))
                    val y = classifier.run(argb, w, h)
                    latencies.add(classifier.lastInferenceMs)
                    // the device's mask against the host's, pixel by pixel (report's pixel_agreement)
                    val rle = s.getJSONArray("expected_mask_rle")
                    val expected = Masks.decodeRle(IntArray(rle.length()) { rle.getInt(it) })
                    val a = Masks.agreement(Masks.argmax(y), expected)
                    agreeSum += a
                    perImage.put(a)
                    continue
                    val best = y.indices.maxByOrNull { y[it] } ?: -1
                    if (best == s.getInt("expected_top1")) agree++
                    if (!s.isNull("host_outputs")) {
                        val host = s.getJSONArray("host_outputs")
                        for (j in y.indices) maxAbs = maxOf(maxAbs, Math.abs(y[j] - host.getDouble(j)))
                    }
                    outputs.put(JSONArray(y.map { it.toDouble() }))
                    top1.put(best)
                }
                val agreement = agreeSum / samples.length()
                val passed = agreement >= minAgreement
                if (!passed) failures.add("${classifier.executor}: pixel agreement $agreement < $minAgreement")
                latencies.sort()
                results.put(JSONObject()
                    .put("target", spec.getString("target"))
                    .put("executor", classifier.executor)
                    .put("status", if (passed) "pass" else "fail")
                    .put("metrics", JSONObject().put("pixel_agreement", agreement))
                    .put("tolerance", JSONObject().put("min_pixel_agreement", minAgreement))
                    .put("latency_ms", JSONObject().put("median", latencies[latencies.size / 2]))
                    .put("per_image_agreement", perImage))
            }
        }
        val report = JSONObject()
            .put("name", spec.getString("name"))
            .put("reference", "host-" + spec.getString("expected_source"))
            .put("samples", samples.length())
            .put("files", files)
            .put("results", results)
        val out = File(app.filesDir, "golden/android_validation.json")
        out.parentFile?.mkdirs()
        out.writeText(report.toString(1))
        Log.i("GoldenTest", "wrote ${out.absolutePath}")
        assertTrue(failures.joinToString("; "), failures.isEmpty())
    }

    private fun checkInputQuantization(expected: JSONObject, pre: Preprocessor) {
        if (expected.isNull("dtype")) return
        assertEquals("input dtype read on the device", expected.getString("dtype").uppercase(), pre.inputType.name)
        if (pre.inputType != TensorType.FLOAT32) {
            assertEquals("input scale", expected.getDouble("scale"), pre.quantScale.toDouble(), 1e-7)
            assertEquals("input zero point", expected.getInt("zero_point"), pre.quantZeroPoint)
        }
    }

    private fun decode(bitmap: Bitmap): Triple<IntArray, Int, Int> {
        val pixels = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return Triple(pixels, bitmap.width, bitmap.height)
    }

    private companion object {
        val OPTIONS = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPremultiplied = false
            inScaled = false
        }
    }
}
