"""ExecuTorch backend on the shipped demo: real exporter, quantizer, XNNPACK lowering and runtime.

When the demo's trained weights are not there yet, the seeded initialisation has its BatchNorm
statistics re-estimated on the demo's real calibration images, so activations (and the int8
calibration ranges) look like a trained network's rather than a near-constant output.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("executorch")

from mobiledeploy.architectures.reference import SeededWeightsWarning  # noqa: E402
from mobiledeploy.architectures.torch_builder import recalibrate_bn  # noqa: E402
from mobiledeploy.backends.base import ConvertContext  # noqa: E402
from mobiledeploy.backends.executorch import quant as et_quant  # noqa: E402
from mobiledeploy.backends.executorch.backend import ExecuTorchBackend, bench_pte, lower_to_pte
from mobiledeploy.definition import load_definition  # noqa: E402
from mobiledeploy.images import load_batch  # noqa: E402
from mobiledeploy.targets import get_target  # noqa: E402
from tests.conftest import EXAMPLE  # noqa: E402

pytestmark = pytest.mark.slow


def _recalibrate_bn(model, x: np.ndarray):
    """BatchNorm statistics from real images, so activations are not degenerate."""
    recalibrate_bn(model, x)
    return model


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(definition, torch model, calibration batch, validation batch, trained?)."""
    import yaml

    trained = (EXAMPLE / "shapes.safetensors").is_file()
    if trained:
        definition = load_definition(EXAMPLE / "shapes.yaml")
    else:
        folder = tmp_path_factory.mktemp("shapes")
        data = yaml.safe_load((EXAMPLE / "shapes.yaml").read_text())
        data.pop("weights")
        for name in ("calibration", "validation", "labels.txt"):
            src = EXAMPLE / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / name)
        (folder / "shapes.yaml").write_text(yaml.safe_dump(data))
        definition = load_definition(folder / "shapes.yaml")
    calib = load_batch(definition, "calibration", 100)
    valid = load_batch(definition, "validation")
    ctx = ConvertContext(definition, tmp_path_factory.mktemp("work"), calib)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededWeightsWarning)
        model = ctx.torch_model()
    if not trained:
        _recalibrate_bn(model, calib.x)
    return ctx, model, calib, valid, trained


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def built(demo, tmp_path_factory):
    """Both demo targets converted through the backend, as the build would."""
    ctx, *_ = demo
    out = tmp_path_factory.mktemp("pte")
    backend = ExecuTorchBackend()
    res = {}
    for name in ("executorch-xnnpack", "executorch-xnnpack-int8"):
        target = get_target(name).resolve()
        path = out / f"{name}.pte"
        facts = backend.convert(ctx, target, path)
        res[name] = (target, path, facts)
    return res


def test_rewrites_keep_the_float_function(demo):
    """Every graph rewrite (mean keepdim, SE gate folded into fc2 and the projection) is the same
    function to 1e-5 of the logit scale, and the reference's weights are left untouched."""
    import torch

    ctx, model, _, valid, _ = demo
    x = valid.x[:8]
    want = _torch_logits(model, x)
    gm = torch.export.export(model, (torch.from_numpy(x[:1]),)).module()
    counts = et_quant.rewrite_graph(gm)
    # every SE gate of MobileNetV3-Small folds (no 1x1 depthwise fallback); h-swish stays one op
    assert counts == {"mean_keepdim": 1, "gate_folded": 9, "hardsigmoid": 0}, counts
    names = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert not any("hardsigmoid" in n for n in names)
    assert sum("hardswish" in n for n in names) == 19
    with torch.no_grad():
        got = np.concatenate([gm(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])
    np.testing.assert_allclose(got, want, atol=1e-5 * float(np.abs(want).max()), rtol=0)
    np.testing.assert_array_equal(_torch_logits(model, x), want)  # weights folded into copies


def test_unfoldable_hardsigmoid_falls_back_to_a_depthwise_affine():
    """A hard-sigmoid whose 1/6 has no conv to go into (here: an add follows) becomes
    clamp(dwconv1x1(x)); one that feeds a conv through a multiply is folded (its conv given a
    bias if it had none). Same function."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Conv2d(4, 4, 1)
            self.proj = torch.nn.Conv2d(4, 3, 1, bias=False)
            self.other = torch.nn.Conv2d(4, 4, 1)
            self.nobias = torch.nn.Conv2d(4, 4, 1, bias=False)
            self.proj2 = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x):
            hsig = torch.nn.functional.hardsigmoid
            folded = self.proj(x * hsig(self.fc(x)))
            kept = hsig(self.other(x)) + 1.0
            folded2 = self.proj2(x * hsig(self.nobias(x)))
            return folded, kept, folded2

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(1, 4, 5, 5) * 4
    with torch.no_grad():
        want = net(x)
        gm = torch.export.export(net, (x,)).module()
        counts = et_quant.rewrite_graph(gm)
        got = gm(x)
    assert counts["gate_folded"] == 2 and counts["hardsigmoid"] == 1, counts
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-6, rtol=0)


def test_fp32_pte_matches_torch_on_real_images(demo, built):
    ctx, model, _, valid, _ = demo
    target, path, facts = built["executorch-xnnpack"]
    runner = ExecuTorchBackend().load(path, target, ctx.definition)
    assert runner.executor.startswith("executorch ") and "XNNPACK" in runner.executor
    got = runner.run(valid)
    want = _torch_logits(model, valid.x)
    assert got.shape == want.shape == (len(valid), ctx.definition.num_classes)
    assert got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


def test_delegation_report_counts_ops(built):
    for name in ("executorch-xnnpack", "executorch-xnnpack-int8"):
        facts = built[name][2]
        assert facts["xnnpack_partitions"] == 1, facts
        assert facts["non_delegated_ops"] == 0, facts["non_delegated_op_types"]
        assert facts["delegated_ops"] == sum(facts["delegated_op_types"].values()) > 50
        assert facts["delegated_op_types"]["convolution.default"] >= 52
    fp32 = built["executorch-xnnpack"][2]["delegated_op_types"]
    int8 = built["executorch-xnnpack-int8"][2]
    # both keep XNNPACK's native h-swish (int8: its int8 kernel) and add no op to the network's
    # convs; the int8 graph converts float<->int8 only at its edges (input, output, and around
    # the head's 1x1 layout copy before the flatten)
    assert int8["delegated_op_types"]["hardswish.default"] == fp32["hardswish.default"] == 19
    assert int8["delegated_op_types"]["convolution.default"] == fp32["convolution.default"] == 52
    assert int8["xnnpack_converts"] <= 4, int8["xnnpack_converts"]
    assert built["executorch-xnnpack"][2]["xnnpack_converts"] == 0


def test_int8_pte_agrees_with_torch(demo, built):
    from mobiledeploy.validate import metrics

    ctx, model, _, valid, trained = demo
    target, path, facts = built["executorch-xnnpack-int8"]
    assert facts["lowering"] == "hswish" and facts["calibration_samples"] == 100
    assert facts["float_compute_ops"] == 0
    got = ExecuTorchBackend().load(path, target, ctx.definition).run(valid)
    want = _torch_logits(model, valid.x)
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    snr = metrics.snr_db(want, got)
    assert snr >= target.tolerance.min_snr_db, snr
    if trained:  # an untrained classifier's top-1 margins are too thin for agreement to mean much
        assert agree >= target.tolerance.min_top1_agreement, agree
        labels = np.asarray(valid.labels)
        drop = float((want.argmax(1) == labels).mean() - (got.argmax(1) == labels).mean())
        assert drop <= target.tolerance.max_accuracy_drop, drop


def test_lowering_leaves_no_float_compute(demo, built):
    """With the option on, every activation entering a compute op is int8 and XNNPACK runs
    h-swish as an int8 op (no converts around it); stock leaves h-swish/h-sigmoid (and the ops
    around them) in float between int8<->fp32 converts."""
    import torch
    from executorch.exir import to_edge_transform_and_lower

    from mobiledeploy.backends.executorch.backend import delegation_report

    ctx, model, calib, _, _ = demo
    shape = tuple(calib.x.shape[1:])
    full, facts = et_quant.prepare_module(model, shape, precision="int8", calibration=calib.x[:4])
    stock, stock_facts = et_quant.prepare_module(model, shape, precision="int8",
                                                 calibration=calib.x[:4],
                                                 lowering="none")
    assert et_quant.float_compute_ops(full) == []
    left = et_quant.float_compute_ops(stock)
    assert any(op.startswith("hardswish") for op in left), left
    assert any(op.startswith("hardsigmoid") for op in left), left
    assert facts["float_compute_ops"] == 0
    assert facts["int8_hardswish"] is True and stock_facts["int8_hardswish"] is False
    assert stock_facts["graph_rewrites"]["gate_folded"] == 0  # stock: the quantizer's own graph
    # the default program's converts come from the build's own conversion (the fixture)
    edge = to_edge_transform_and_lower(torch.export.export(stock, (torch.zeros((1, *shape)),)),
                                       partitioner=[et_quant.partitioner(int8_hardswish=False)])
    converts = {"full": built["executorch-xnnpack-int8"][2]["xnnpack_converts"],
                "stock": delegation_report(edge)["xnnpack_converts"]}
    assert converts["full"] <= 4 < 2 * 19 <= converts["stock"], converts


def test_int8_pte_computes_the_quantized_graph(demo, built):
    """XNNPACK's int8 kernels (h-swish included) compute what the converted PT2E graph means:
    the .pte agrees with its fake-quantized PyTorch twin as closely as int8 rounding allows."""
    import torch

    from mobiledeploy.validate import metrics

    ctx, model, calib, valid, trained = demo
    target, path, _ = built["executorch-xnnpack-int8"]
    gm, _ = et_quant.prepare_module(model, tuple(calib.x.shape[1:]), precision="int8",
                                    calibration=calib.x[:target.option("calibration_samples")])
    with torch.no_grad():
        sim = np.concatenate([gm(torch.from_numpy(valid.x[i:i + 1])).numpy()
                              for i in range(len(valid))])
    got = ExecuTorchBackend().load(path, target, ctx.definition).run(valid)
    assert metrics.snr_db(sim, got) >= 25.0, metrics.snr_db(sim, got)
    if trained:
        assert float((got.argmax(1) == sim.argmax(1)).mean()) >= 0.95


def test_conversion_is_byte_identical(demo, built, tmp_path):
    ctx, model, calib, _, _ = demo
    for name in ("executorch-xnnpack", "executorch-xnnpack-int8"):
        target, path, _ = built[name]
        again = tmp_path / f"{name}.pte"
        ExecuTorchBackend().convert(ctx, target, again)
        assert again.read_bytes() == path.read_bytes(), name


def test_corrupt_pte_is_an_error_not_a_skip_or_a_crash(demo, built, tmp_path):
    ctx = demo[0]
    target, path, _ = built["executorch-xnnpack"]
    bad = tmp_path / "garbage.pte"
    bad.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(RuntimeError, match="cannot load garbage.pte"):
        ExecuTorchBackend().load(bad, target, ctx.definition)
    cut = tmp_path / "truncated.pte"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(RuntimeError, match="truncated.pte"):
        ExecuTorchBackend().load(cut, target, ctx.definition)


def test_int8_needs_calibration_images(demo):
    from mobiledeploy.errors import UserError

    model = demo[1]
    with pytest.raises(UserError, match="calibration"):
        lower_to_pte(model, (3, 112, 112), precision="int8", calibration=np.zeros((0, 3, 112, 112)))


def test_bench_pte(built):
    _, path, _ = built["executorch-xnnpack"]
    stats = bench_pte(path, runs=20, warmup=2)
    assert stats["runs"] == 20
    assert 0 < stats["median"] <= stats["p90"] < 10_000
