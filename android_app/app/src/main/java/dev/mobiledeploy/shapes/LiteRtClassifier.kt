package dev.mobiledeploy.shapes

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
    private val outputType: DataType
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
        val type = when (input.dataType()) {
            DataType.FLOAT32 -> InputType.FLOAT32
            DataType.INT8 -> InputType.INT8
            DataType.UINT8 -> InputType.UINT8
            else -> throw IllegalStateException("unsupported input type ${input.dataType()}")
        }
        val q = input.quantizationParams()
        preprocessor = Preprocessor(type, q.scale, q.zeroPoint)
        val output = interpreter.getOutputTensor(0)
        outputType = output.dataType()
        outputScale = output.quantizationParams().scale
        outputZeroPoint = output.quantizationParams().zeroPoint
        check(output.numElements() == ModelConfig.OUTPUT_SIZE) {
            "model output ${output.shape().toList()} holds ${output.numElements()} values, the definition says ${ModelConfig.OUTPUT_SIZE}"
        }
        outputBuffer = ByteBuffer.allocateDirect(output.numBytes()).order(ByteOrder.nativeOrder())
    }

    override fun run(argb: IntArray, width: Int, height: Int): FloatArray {
        val input = preprocessor.toBuffer(argb, width, height)
        outputBuffer.rewind()
        val t0 = System.nanoTime()
        interpreter.run(input, outputBuffer)
        lastInferenceMs = (System.nanoTime() - t0) / 1e6
        outputBuffer.rewind()
        val n = ModelConfig.OUTPUT_SIZE
        return when (outputType) {
            DataType.FLOAT32 -> FloatArray(n).also { outputBuffer.asFloatBuffer().get(it) }
            DataType.INT8 -> FloatArray(n) { (outputBuffer.get(it).toInt() - outputZeroPoint) * outputScale }
            DataType.UINT8 -> FloatArray(n) { ((outputBuffer.get(it).toInt() and 0xFF) - outputZeroPoint) * outputScale }
            else -> throw IllegalStateException("unsupported output type $outputType")
        }
    }

    override fun close() {
        interpreter.close()
        (delegate as? AutoCloseable)?.close()
    }

    private companion object {
        const val THREADS = 4

        fun mapAsset(context: Context, name: String): MappedByteBuffer =
            context.assets.openFd(name).use { fd ->
                FileInputStream(fd.fileDescriptor).channel.use { ch ->
                    ch.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
                }
            }
    }
}
