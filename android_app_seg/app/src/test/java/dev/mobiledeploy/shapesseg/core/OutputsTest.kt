package dev.mobiledeploy.shapesseg.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Outputs.kt (dequantization, labels, top-k) against the host's arithmetic (NumPy). */
class OutputsTest {
    @Test
    fun dequantizeUsesTheScaleAndZeroPoint() {
        val q8 = intArrayOf(88, 76, -120, -1, 126, -50, 64, -69, 119, 100, 6, -32, 105, -109, -80, -120, -29, -10, 83, 95, 24, -39, 102, 82)
        val int8 = ByteBuffer.wrap(ByteArray(q8.size) { q8[it].toByte() })
        val expected8 = floatArrayOf(6.944499969482422f, 6.067299842834473f, -8.260299682617188f, 0.43860000371932983f, 9.72230052947998f, -3.1433000564575195f, 5.190100193023682f, -4.532199859619141f, 9.210599899291992f, 7.821700096130371f, 0.9502999782562256f, -1.8274999856948853f, 8.187200546264648f, -7.456200122833252f, -5.336299896240234f, -8.260299682617188f, -1.6082000732421875f, -0.21930000185966492f, 6.578999996185303f, 7.456200122833252f, 2.2660999298095703f, -2.339200019836426f, 7.967900276184082f, 6.505899906158447f)
        assertArrayEquals(expected8, Outputs.dequantize(int8, TensorType.INT8, 0.0731f, -7, q8.size), 0f)
        val u8 = intArrayOf(53, 242, 122, 17, 165, 76, 65, 158, 139, 77, 103, 44, 117, 126, 114, 194, 82, 175, 49, 63, 122, 159, 177, 80)
        val uint8 = ByteBuffer.wrap(ByteArray(u8.size) { u8[it].toByte() })
        val expectedU8 = floatArrayOf(-1.6613999605178833f, 2.364300012588501f, -0.19169999659061432f, -2.4282000064849854f, 0.7241999506950378f, -1.1714999675750732f, -1.4057999849319458f, 0.5751000046730042f, 0.1703999936580658f, -1.1502000093460083f, -0.5963999629020691f, -1.8530999422073364f, -0.29819998145103455f, -0.10649999976158142f, -0.3620999753475189f, 1.3418999910354614f, -1.0436999797821045f, 0.9371999502182007f, -1.7465999126434326f, -1.4483999013900757f, -0.19169999659061432f, 0.5963999629020691f, 0.9797999858856201f, -1.086300015449524f)
        assertArrayEquals(expectedU8, Outputs.dequantize(uint8, TensorType.UINT8, 0.0213f, 131, u8.size), 0f)
        val floats = ByteBuffer.allocate(8).order(ByteOrder.nativeOrder())
        floats.asFloatBuffer().put(floatArrayOf(1.5f, -2f))
        assertArrayEquals(floatArrayOf(1.5f, -2f), Outputs.dequantize(floats, TensorType.FLOAT32, 0f, 0, 2), 0f)
    }

    @Test
    fun topThreeWithSoftmaxProbabilitiesAndLabels() {
        val logits = floatArrayOf(-1.1672641038894653f, 1.3656907081604004f, 1.01073157787323f, 2.002915620803833f, 1.4315922260284424f, -1.1087292432785034f, 0.10976094007492065f, -3.39729380607605f, 0.042925961315631866f, -1.0314327478408813f, 2.137678384780884f)
        val labels = LabelMap.parse("background\ncircle\nsquare\ntriangle\nstar\ncross\narrow\nheart\nring\nhexagon\ncrescent" + "\n")
        assertEquals(ModelConfig.NUM_CLASSES, labels.size)
        val top = classify(logits, labels, 3)
        assertEquals(listOf(10, 3, 4), top.map { it.index })
        assertEquals(listOf("crescent", "triangle", "star"), top.map { it.label })
        val p = floatArrayOf(0.28329235315322876f, 0.24757574498653412f, 0.1398252248764038f)
        assertArrayEquals(p, top.map { it.probability }.toFloatArray(), 1e-6f)
        assertEquals("#99", LabelMap.name(labels, 99))
    }
}
