package dev.mobiledeploy.shapes

import dev.mobiledeploy.shapes.core.*
import android.Manifest
import android.content.pm.PackageManager
import android.os.Bundle
import android.util.Log
import android.widget.Button
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/** CameraX preview + analysis: every latest frame is classified, top-3 and timing on screen. */
class MainActivity : ComponentActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var resultsView: TextView
    private lateinit var timingView: TextView
    private lateinit var acceleratorButton: Button
    private lateinit var labels: List<String>

    // model loading and inference stay off the main thread, on this one executor
    private val analysisExecutor: ExecutorService = Executors.newSingleThreadExecutor()
    private var classifier: Classifier? = null
    private var accelerator: Accelerator = Accelerator.DEFAULT

    private val requestPermission =
        registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
            if (granted) startCamera() else resultsView.setText(R.string.permission_denied)
        }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        resultsView = findViewById(R.id.results)
        timingView = findViewById(R.id.timing)
        acceleratorButton = findViewById(R.id.accelerator)
        labels = Labels.load(this)
        acceleratorButton.setOnClickListener { useAccelerator(accelerator.next()) }
        useAccelerator(accelerator)
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestPermission.launch(Manifest.permission.CAMERA)
        }
    }

    private fun useAccelerator(wanted: Accelerator) {
        acceleratorButton.isEnabled = false
        analysisExecutor.execute {
            classifier?.close()
            classifier = null
            val (created, error) = try {
                Pair(Classifier.create(this, wanted), null)
            } catch (e: Exception) {
                // a delegate the device lacks: fall back to the CPU rather than show nothing
                Log.w(TAG, "cannot use ${wanted.id}", e)
                Pair(if (wanted != Accelerator.DEFAULT) runCatching { Classifier.create(this, Accelerator.DEFAULT) }.getOrNull() else null, e)
            }
            classifier = created
            runOnUiThread {
                accelerator = created?.accelerator ?: wanted
                acceleratorButton.text = getString(R.string.accelerator_label, accelerator.id)
                acceleratorButton.isEnabled = true
                if (error != null) resultsView.text = getString(R.string.model_error, error.message ?: error.toString())
            }
        }
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .setTargetRotation(previewView.display?.rotation ?: 0)
                .build()
            analysis.setAnalyzer(analysisExecutor) { image -> analyze(image) }
            val selector = if (provider.hasCamera(CameraSelector.DEFAULT_BACK_CAMERA)) {
                CameraSelector.DEFAULT_BACK_CAMERA
            } else if (provider.hasCamera(CameraSelector.DEFAULT_FRONT_CAMERA)) {
                CameraSelector.DEFAULT_FRONT_CAMERA
            } else {
                resultsView.setText(R.string.no_camera)
                return@addListener
            }
            provider.unbindAll()
            provider.bindToLifecycle(this, selector, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    private fun analyze(image: ImageProxy) {
        image.use {
            val model = classifier ?: return
            val bitmap = it.toBitmap()
            val pixels = IntArray(bitmap.width * bitmap.height)
            bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
            // the sensor's frame is turned upright before the whole-frame resize, like a photo
            val (upright, w, h) = Preprocessor.rotate(pixels, bitmap.width, bitmap.height, it.imageInfo.rotationDegrees)
            val outputs = model.run(upright, w, h)
            val text = classify(outputs, labels, 3).mapIndexed { rank, s ->
                getString(R.string.result_line, rank + 1, s.label, s.probability)
            }.joinToString("\n")
            val timing = getString(R.string.timing_format, model.executor, model.lastInferenceMs, w, h)
            runOnUiThread {
                resultsView.text = text
                timingView.text = timing
            }
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.execute { classifier?.close() }
        analysisExecutor.shutdown()
    }

    private companion object {
        const val TAG = "shapes"
    }
}
