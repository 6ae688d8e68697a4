package dev.mobiledeploy.shapesseg

import dev.mobiledeploy.shapesseg.core.*
import android.content.Context
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Delegate
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/**
 * LiteRT Interpreter on the bundled .tflite: XNNPACK on the CPU, the GPU delegate or NNAPI.
 * Input dtype, scale and zero point are read from the model, so int8 and float models both work.
 */
class LiteRtClassifier(context: Context, override val accelerator: Accelerator) : Classifier {
    private val delegate: Delegate?
    private val interpreter: Interpreter
    override val preprocessor: Preprocessor
    private val outputType: TensorType
    private val outputScale: Float
    private val outputZeroPoint: Int
    private val outputBuffer: ByteBuffer

    override var lastInferenceMs: Double = 0.0
        private set

    init {
        val options = Interpreter.Options().setNumThreads(THREADS)
        delegate = when (accelerator) {
            Accelerator.XNNPACK -> {
                options.setUseXNNPACK(true)
                null
            }
            Accelerator.GPU -> {
                val compat = CompatibilityList()
                check(compat.isDelegateSupportedOnThisDevice) { "the GPU delegate is not supported on this device" }
                GpuDelegate(compat.bestOptionsForThisDevice)
            }
            Accelerator.NNAPI -> NnApiDelegate()
        }
        delegate?.let { options.addDelegate(it) }
        val model = mapAsset(context, ModelConfig.MODEL_ASSET)
        // preprocessing and labels come with the model: stop here when the app's copy disagrees
        ArtifactCheck.verify(model, Labels.load(context))
        interpreter = Interpreter(model, options)
        val input = interpreter.getInputTensor(0)
        val shape = input.shape().toList()
        val expected = if (ModelConfig.NCHW) {
            listOf(1, ModelConfig.CHANNELS, ModelConfig.INPUT_HEIGHT, ModelConfig.INPUT_WIDTH)
        } else {
            listOf(1, ModelConfig.INPUT_HEIGHT, ModelConfig.INPUT_WIDTH, ModelConfig.CHANNELS)
        }
        check(shape == expected) { "model input shape $shape, the definition says $expected" }
        val type = tensorType(input.dataType())
        val q = input.quantizationParams()
        preprocessor = Preprocessor(type, q.scale, q.zeroPoint)
        val output = interpreter.getOutputTensor(0)
        outputType = if (ModelConfig.DETECTION) TensorType.FLOAT32 else tensorType(output.dataType())
        outputScale = output.quantizationParams().scale
        outputZeroPoint = output.quantizationParams().zeroPoint
        check(ModelConfig.DETECTION || output.numElements() == ModelConfig.OUTPUT_SIZE) {
            "model output ${output.shape().toList()} holds ${output.numElements()} values, the definition says ${ModelConfig.OUTPUT_SIZE}"
        }
        outputBuffer = ByteBuffer.allocateDirect(output.numBytes()).order(ByteOrder.nativeOrder())
    }

    override fun run(argb: IntArray, width: Int, height: Int): FloatArray {
        val input = preprocessor.toBuffer(argb, width, height)
        if (ModelConfig.DETECTION) return runDetector(input)
        outputBuffer.rewind()
        val t0 = System.nanoTime()
        interpreter.run(input, outputBuffer)
        lastInferenceMs = (System.nanoTime() - t0) / 1e6
        outputBuffer.rewind()
        // the model's own scale and zero point, applied by the core (judged by validate's app rows)
        return Outputs.dequantize(outputBuffer, outputType, outputScale, outputZeroPoint, ModelConfig.OUTPUT_SIZE)
    }

    /**
     * A detector runs its signature: the file's TFLite_Detection_PostProcess has decoded the boxes.
     * Packed as [count, then ymin, xmin, ymax, xmax, class, score per row] (Detections.parse).
     */
    private fun runDetector(input: ByteBuffer): FloatArray {
        val m = ModelConfig.MAX_DETECTIONS
        val boxes = Array(1) { Array(m) { FloatArray(4) } }
        val classes = Array(1) { FloatArray(m) }
        val scores = Array(1) { FloatArray(m) }
        val count = FloatArray(1)
        // the op's four outputs are the file's only outputs (as MediaPipe's ObjectDetector requires)
        val outputs = mapOf<String, Any>(
            "detection_boxes" to boxes, "detection_classes" to classes, "detection_scores" to scores,
            "num_detections" to count)
        val t0 = System.nanoTime()
        interpreter.runSignature(mapOf<String, Any>("input" to input), outputs, "serving_default")
        lastInferenceMs = (System.nanoTime() - t0) / 1e6
        // the op's boxes read by the core ([ymin, xmin, ymax, xmax] per row), packed for the screen
        val found = Detections.fromTensors(FloatArray(4 * m) { boxes[0][it / 4][it % 4] }, classes[0], scores[0], count[0])
        return Detections.pack(found, m)
    }

    override fun close() {
        interpreter.close()
        (delegate as? AutoCloseable)?.close()
    }

    private companion object {
        const val THREADS = 4

        fun tensorType(type: DataType): TensorType = when (type) {
            DataType.FLOAT32 -> TensorType.FLOAT32
            DataType.INT8 -> TensorType.INT8
            DataType.UINT8 -> TensorType.UINT8
            else -> throw IllegalStateException("unsupported tensor type $type")
        }

        fun mapAsset(context: Context, name: String): MappedByteBuffer =
            context.assets.openFd(name).use { fd ->
                FileInputStream(fd.fileDescriptor).channel.use { ch ->
                    ch.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
                }
            }
    }
}
