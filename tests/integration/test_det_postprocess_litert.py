"""LiteRT's TFLite_Detection_PostProcess, attached by backends/tflite/detection_postprocess.py, decodes as the host decoder."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")

from mobiledeploy.architectures.spec import preset  # noqa: E402
from mobiledeploy.backends.tflite.detection_postprocess import OP, postprocess_fn, saved_model_to_tflite  # noqa: E402
from mobiledeploy.backends.tflite.reader import parse  # noqa: E402
from mobiledeploy.tasks.detection.decode import postprocess  # noqa: E402
from mobiledeploy.tasks.detection.ssdlite import (  # noqa: E402
    DetectionOptions,  # noqa: E402
    anchors,
    decoding_spec,
)

SPEC = preset("mobilenet_v3_small", 1.0, 10, 160, detection=DetectionOptions())


def _convert(dspec: dict) -> bytes:
    a = anchors(SPEC)
    run = postprocess_fn(dspec, a)
    n = len(a)

    class Decode(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, n, 11], tf.float32), tf.TensorSpec([1, n, 4], tf.float32)])
        def decode(self, class_logits, box_encodings):
            return run(class_logits, box_encodings)

    import tempfile

    m = Decode()
    with tempfile.TemporaryDirectory() as d:
        tf.saved_model.save(m, d, signatures={"serving_default": m.decode})
        return saved_model_to_tflite(d)


def _inputs(seed: int):
    """Logits with a few confident objects among background, overlapping boxes around them."""
    rng = np.random.default_rng(seed)
    n = SPEC.detection.num_anchors
    logits = rng.normal(0, 1.0, (1, n, 11)).astype(np.float32)
    logits[..., 0] += 3.0
    hot = rng.choice(n, 40, replace=False)
    logits[0, hot, rng.integers(1, 11, 40)] += rng.uniform(3, 7, 40)
    enc = rng.normal(0, 0.7, (1, n, 4)).astype(np.float32)
    return logits, enc


@pytest.mark.slow
@pytest.mark.parametrize("regular", [False, True])
def test_litert_postprocess_op_matches_the_host_decoder(regular):
    dspec = {**decoding_spec(SPEC), "use_regular_nms": regular, "max_detections": 20}
    model = _convert(dspec)
    ops = parse(model).op_counts()
    assert OP in ops, ops  # fused into the custom op, not left as the placeholder body
    interp = litert.Interpreter(model_content=model)
    interp.allocate_tensors()
    ins = {d["shape"][-1]: d["index"] for d in interp.get_input_details()}
    outs = interp.get_output_details()
    checked = 0
    for seed in range(4):
        logits, enc = _inputs(seed)
        interp.set_tensor(ins[11], logits)
        interp.set_tensor(ins[4], enc)
        interp.invoke()
        got = [interp.get_tensor(d["index"]) for d in outs]
        boxes = next(g for g in got if g.ndim == 3)[0]
        num = int(next(g for g in got if g.size == 1).ravel()[0])
        two = [g[0] for g in got if g.ndim == 2]
        classes = next(t for t in two if np.allclose(t, np.round(t)))
        scores = next(t for t in two if t is not classes)
        ref = postprocess(logits, enc, anchors(SPEC), dspec)[0]
        assert num == len(ref) and num > 3
        np.testing.assert_array_equal(classes[:num].astype(int), ref.classes)
        np.testing.assert_allclose(scores[:num], ref.scores, atol=1e-5)
        np.testing.assert_allclose(boxes[:num], ref.boxes, atol=1e-5)
        checked += num
    assert checked > 20


# the trained detector with the op in one file, through the real build, against the host-decoded
# PyTorch reference: tests/integration/test_det_bundle.py
