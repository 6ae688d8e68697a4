"""milexec runs a batch over a batch-1 program op by op on the whole stack of samples
(milexec/batch.py says when that is exact); every op that names axis 0 in a way the stack would
change runs sample by sample instead. One program built with coremltools' MIL builder (its
passes off, so every op stays as written) holds both forms of each such op: the batched run must
equal one run per sample, bit for bit, and only the forms that must not stack may run per sample.
(Stacking a real converted network, fp32 and fp16: test_coreml.py.)"""

from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from mobiledeploy.backends.coreml.milexec import MILProgram, program  # noqa: E402

# the ops whose sample-by-sample result the stack cannot give (they reach across axis 0, or
# broadcast it away from axis 0), and what they feed
PER_SAMPLE = {"sl_squeeze0", "mm_shared_x", "softmax0", "sum0", "squeeze_all", "after_squeeze",
              "expand0", "transpose10", "concat0", "mul_broadcast_up", "reshape_merges_batch", "pad_axis0"}


def _rules_program():
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(0)

    def c(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 6, 6))], opset_version=ct.target.iOS15)
    def prog(x):
        f = mb.reshape(x=x, shape=[1, -1], name="flat")
        rm = mb.reduce_mean(x=x, axes=[2, 3], keep_dims=True, name="mean23")
        sq = mb.squeeze(x=rm, name="squeeze_all")
        r3 = mb.reshape(x=x, shape=[1, 4, 36], name="reshape3")
        return (
            mb.slice_by_index(x=x, begin=[0, 1, 0, 0], end=[1, 4, 6, 6], name="sl"),
            mb.slice_by_index(x=x, begin=[0, 0, 2, 0], end=[1, 4, 3, 6],
                              squeeze_mask=[False, False, True, False], name="sl_squeeze2"),
            mb.slice_by_index(x=x, begin=[0, 0, 0, 0], end=[1, 4, 6, 6],
                              squeeze_mask=[True, False, False, False], name="sl_squeeze0"),
            mb.slice_by_size(x=x, begin=[0, 0, 1, 1], size=[1, -1, 4, 4], name="slice_size"),
            mb.pad(x=x, pad=np.array([1, 1, 2, 2], np.int32), mode="reflect", name="pad_reflect"),
            mb.pad(x=x, pad=np.array([0, 0, 1, 0, 1, 1, 2, 2], np.int32), name="pad_all_axes"),
            mb.pad(x=x, pad=np.array([1, 0, 0, 0, 0, 0, 0, 0], np.int32), name="pad_axis0"),
            mb.matmul(x=r3, y=c(36, 5), name="mm_rank3"),
            mb.linear(x=f, weight=c(3, 144), bias=c(3), name="linear"),
            mb.matmul(x=f, y=c(144, 2), name="mm_rows"),
            mb.matmul(x=c(2, 1), y=f, name="mm_shared_x"),
            mb.softmax(x=x, axis=1, name="softmax1"),
            mb.softmax(x=f, axis=0, name="softmax0"),
            mb.reduce_sum(x=x, axes=[0, 2], name="sum0"),
            mb.add(x=sq, y=c(4), name="after_squeeze"),
            mb.squeeze(x=rm, axes=[2, 3], name="squeeze23"),
            mb.expand_dims(x=x, axes=[0], name="expand0"),
            mb.expand_dims(x=x, axes=[-1], name="expand_last"),
            mb.transpose(x=x, perm=[1, 0, 2, 3], name="transpose10"),
            mb.transpose(x=x, perm=[0, 2, 3, 1], name="transpose_nhwc"),
            mb.concat(values=[x, c(1, 4, 6, 6)], axis=1, name="concat1"),
            mb.concat(values=[x, x], axis=0, name="concat0"),
            mb.mul(x=x, y=c(4, 6, 6), name="mul_broadcast"),
            mb.mul(x=f, y=c(3, 1, 144), name="mul_broadcast_up"),
            mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0,
                                 align_corners=False, name="upsample"),
            mb.resize_bilinear(x=x, target_size_height=5, target_size_width=9,
                               sampling_mode="ALIGN_CORNERS", name="resize"),
            mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same",
                        exclude_padding_from_average=True, name="avg_pool"),
            mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[1, 1], pad_type="valid", name="max_pool"),
            mb.batch_norm(x=x, mean=c(4), variance=np.abs(c(4)) + 0.1, gamma=c(4), beta=c(4), name="bn"),
            mb.conv(x=x, weight=c(6, 2, 3, 3), strides=[2, 1], pad_type="same", groups=2, name="conv"),
            mb.reshape(x=x, shape=mb.shape(x=x, name="shape"), name="reshape_by_shape"),
            mb.reshape(x=x, shape=[0, 4, 0, 6], name="reshape_zeros"),
            mb.reshape(x=x, shape=[4, 36], name="reshape_merges_batch"),
        )

    return prog


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    path = tmp_path_factory.mktemp("milbatch") / "rules.mlpackage"
    ct.convert(_rules_program(), convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
               minimum_deployment_target=ct.target.iOS15,
               compute_precision=ct.precision.FLOAT32).save(str(path))
    return MILProgram(path)


def test_batch_equals_sample_by_sample_and_stacks_what_it_may(rules, monkeypatch):
    names = {op.outputs[0][0] for op in rules.ops if op.type != "const"}
    assert PER_SAMPLE < names and {"conv", "reshape_zeros", "sl_squeeze2", "shape"} < names
    xs = np.random.default_rng(1).standard_normal((5, 1, 4, 6, 6)).astype(np.float32)
    feed = rules.input_names[0]
    alone = [rules.run({feed: x}, intermediates=True) for x in xs]
    want = {k: program._stack([a[k] for a in alone]) for k in alone[0]}

    ran_per_sample: set[str] = set()
    one_by_one = program.MILProgram._per_sample

    def spy(op, fn, args, n):
        ran_per_sample.add(op.outputs[0][0])
        return one_by_one(op, fn, args, n)

    monkeypatch.setattr(program.MILProgram, "_per_sample", staticmethod(spy))
    for chunk in (2, 5):
        got = rules.run({feed: xs[:, 0]}, intermediates=True, chunk=chunk)
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k].shape == v.shape and np.array_equal(got[k], v), (chunk, k)
    assert ran_per_sample == PER_SAMPLE
    # the rank-changing per-sample values really are what a stack would get wrong
    assert want["softmax0"].shape == (5, 144) and np.all(want["softmax0"] == 1)
    assert want["reshape_merges_batch"].shape == (5, 4, 36)


def test_chunk_must_be_positive(rules):
    with pytest.raises(ValueError, match="chunk"):
        rules.run({rules.input_names[0]: np.zeros((2, 4, 6, 6), np.float32)}, chunk=0)
