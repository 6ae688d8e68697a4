"""The MIL executor against MIL's own definitions (coremltools' op specs), on real .mlpackages.

Each program is built with coremltools' MIL builder and converted to an ML Program exactly as a
conversion would; the executor then runs the saved package. Cases written from the op docs in
coremltools/converters/mil/mil/ops/defs (thresholded_relu: ``x >= alpha``; reshape: the 0 rule
of iOS15 vs iOS17), plus the batch rule: only a common batch over batch-1 inputs is split.
"""

from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402

from mobiledeploy.backends.coreml.milexec import MILProgram  # noqa: E402
from mobiledeploy.backends.coreml.milexec.ops import UnsupportedMILOp  # noqa: E402


def save(prog, path, target):
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       compute_precision=ct.precision.FLOAT32)
    model.save(str(path))
    return MILProgram(path)


def only_output(res):
    assert len(res) == 1
    return next(iter(res.values()))


def test_thresholded_relu_keeps_x_equal_to_alpha(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 5))], opset_version=ct.target.iOS15)
    def prog(x):
        return mb.thresholded_relu(x=x, alpha=1.0)

    p = save(prog, tmp_path / "t.mlpackage", ct.target.iOS15)
    x = np.array([[0.5, 1.0, 1.5, -1.0, 1.0]], np.float32)
    # MIL spec: "Return x if x >= alpha, otherwise 0" -> the two 1.0 entries stay
    np.testing.assert_array_equal(only_output(p.run({"x": x})), [[0.0, 1.0, 1.5, 0.0, 1.0]])


def test_reshape_zero_rule_follows_the_opset(tmp_path):
    # iOS17: each 0 matches x's dimension counted from the right; out of range -> 1
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 50))], opset_version=ct.target.iOS17)
    def prog17(x):
        return mb.reshape(x=x, shape=[1, 0, -1, 0])

    p17 = save(prog17, tmp_path / "r17.mlpackage", ct.target.iOS17)
    x = np.arange(100, dtype=np.float32).reshape(2, 50)
    y = only_output(p17.run({"x": x}))
    assert y.shape == (1, 1, 2, 50)  # the spec's own example
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))

    # iOS15: 0 copies the dimension at the same position (len(shape) == rank(x))
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3, 4))], opset_version=ct.target.iOS15)
    def prog15(x):
        return mb.reshape(x=x, shape=[0, -1, 2])

    p15 = save(prog15, tmp_path / "r15.mlpackage", ct.target.iOS15)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert only_output(p15.run({"x": x})).shape == (2, 6, 2)
    assert p15.opset_version < 7 <= p17.opset_version


def test_a_second_input_is_never_sliced_as_a_batch(tmp_path):
    # weights fed as a second input: the old executor split both inputs sample by sample
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3)), mb.TensorSpec(shape=(4, 3))],
                opset_version=ct.target.iOS15)
    def prog(x, w):
        return mb.matmul(x=x, y=w, transpose_y=True)

    p = save(prog, tmp_path / "l.mlpackage", ct.target.iOS15)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    names = p.input_names
    one = rng.normal(size=(1, 3)).astype(np.float32)
    got = only_output(p.run({names[0]: one, names[1]: w}))
    np.testing.assert_allclose(got, one @ w.T, rtol=1e-5)
    with pytest.raises(UnsupportedMILOp, match="do not match"):
        p.run({names[0]: rng.normal(size=(4, 3)).astype(np.float32), names[1]: w})


def test_a_common_batch_over_one_input_is_split_exactly(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3))], opset_version=ct.target.iOS15)
    def prog(x):
        return mb.relu(x=x)

    p = save(prog, tmp_path / "b.mlpackage", ct.target.iOS15)
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(only_output(p.run({"x": x})), np.maximum(x, 0))


def test_symbolic_first_dimension_is_refused(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(ct.converters.mil.mil.get_new_symbol(), 3))],
                opset_version=ct.target.iOS15)
    def prog(x):
        return mb.relu(x=x)

    p = save(prog, tmp_path / "s.mlpackage", ct.target.iOS15)
    with pytest.raises(UnsupportedMILOp, match="symbolic"):
        p.run({"x": np.ones((2, 3), np.float32)})
