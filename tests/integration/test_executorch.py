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
from mobiledeploy.backends import et_quant  # noqa: E402
from mobiledeploy.backends.base import ConvertContext  # noqa: E402
from mobiledeploy.backends.executorch import (  # noqa: E402
    ExecuTorchBackend,
    bench_pte,
    lower_to_pte,
)
from mobiledeploy.definition import load_definition  # noqa: E402
from mobiledeploy.targets import get_target  # noqa: E402
from mobiledeploy.validate.inputs import load_batch  # noqa: E402
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
        target = get_target(name)
        path = out / f"{name}.pte"
        facts = backend.convert(ctx, target, path)
        res[name] = (target, path, facts)
    return res


def test_rewrites_keep_the_float_function(demo):
    """Every graph rewrite (mean keepdim, h-swish, h-sigmoid) is the same function to 1e-5."""
    import torch

    ctx, model, _, valid, _ = demo
    x = valid.x[:8]
    want = _torch_logits(model, x)
    gm = torch.export.export(model, (torch.from_numpy(x[:1]),)).module()
    counts = et_quant.rewrite_graph(gm, hardswish=True, hardsigmoid=True)
    assert counts["hardswish"] > 0 and counts["hardsigmoid"] > 0 and counts["mean_keepdim"] == 1
    names = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert not any("hardswish" in n or "hardsigmoid" in n for n in names)
    with torch.no_grad():
        got = np.concatenate([gm(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


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
    assert fp32["hardswish.default"] > 0  # fp32 keeps XNNPACK's native h-swish kernel


def test_int8_pte_agrees_with_torch(demo, built):
    from mobiledeploy.validate import metrics

    ctx, model, _, valid, trained = demo
    target, path, facts = built["executorch-xnnpack-int8"]
    assert facts["quantize_activations"] is True and facts["calibration_samples"] == 100
    assert facts["float_compute_ops"] == 0
    got = ExecuTorchBackend().load(path, target, ctx.definition).run(valid)
    want = _torch_logits(model, valid.x)
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    snr = metrics.snr_db(want, got)
    assert snr >= target.tolerance["min_snr_db"], snr
    if trained:  # an untrained classifier's top-1 margins are too thin for agreement to mean much
        assert agree >= target.tolerance["min_top1_agreement"], agree
        labels = np.asarray(valid.labels)
        drop = float((want.argmax(1) == labels).mean() - (got.argmax(1) == labels).mean())
        assert drop <= target.tolerance["max_accuracy_drop"], drop


def test_quantize_activations_leaves_no_float_compute(demo):
    """With the option on, every activation entering a compute op is int8; stock leaves
    h-swish/h-sigmoid (and the ops around them) in float."""
    ctx, model, calib, _, _ = demo
    shape = tuple(calib.x.shape[1:])
    full, facts = et_quant.prepare_module(model, shape, precision="int8", calibration=calib.x[:4])
    stock, _ = et_quant.prepare_module(model, shape, precision="int8", calibration=calib.x[:4],
                                       quantize_activations=False)
    assert et_quant.float_compute_ops(full) == []
    left = et_quant.float_compute_ops(stock)
    assert any(op.startswith("hardswish") for op in left), left
    assert any(op.startswith("hardsigmoid") for op in left), left
    assert facts["float_compute_ops"] == 0


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
