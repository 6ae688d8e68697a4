"""Skipping idle ExecuTorch work (backends/et_idle.py) changes no byte and skips only what cannot apply.

Tiny real models through the real exporter, quantizer and XNNPACK lowering: one that holds an op
for every guarded pass (each of them must still run), one with none (each must be skipped), both
lowered with and without the skips; and the patterns the predicates lean on, built by ExecuTorch.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("executorch")

from mobiledeploy.backends.executorch import idle as et_idle  # noqa: E402
from mobiledeploy.backends.executorch import quant as et_quant

pytestmark = pytest.mark.slow

GUARDED = {"ConvertToUpsampleBilinear2d", "ConvertToSDPAPass", "FuseBatchNormPass", "DecomposeBatchNorm",
           "DecomposeConcatenate", "RemoveGetItemPass", "Conv1dUnsqueezePass", "PReLUReshapePass",
           "DimOrderOpsRevertPass"}


@pytest.fixture(autouse=True)
def _read_for_this_version():
    if not et_idle.read_for_this_version():
        pytest.skip("et_idle's predicates were not read for this ExecuTorch: nothing is skipped "
                    "(re-read the passes, then extend _READ_FOR)")


def _every_guarded_op():
    import torch
    import torch.nn.functional as F

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)          # after a conv: FuseBatchNormPass
            self.bn_alone = torch.nn.BatchNorm2d(8)    # after an add: DecomposeBatchNorm
            self.prelu = torch.nn.PReLU(1)             # one slope: PReLUReshapePass
            self.conv1d = torch.nn.Conv1d(48, 8, 1)    # Conv1dUnsqueezePass
            for bn in (self.bn, self.bn_alone):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

        def forward(self, x):
            a = torch.relu(self.bn(self.conv(x)))
            p = self.prelu(self.bn_alone(a + 1.0))
            u = F.interpolate(F.max_pool2d(p, 2, 2), scale_factor=2, mode="bilinear", align_corners=False)
            c = torch.cat([u, p, u, p, u, p], dim=1)   # six inputs: DecomposeConcatenate
            t = self.conv1d(c.reshape(1, 48, 256)).transpose(1, 2)
            att = torch.softmax(torch.bmm(t, t.transpose(1, 2)) * 0.1, dim=-1)
            return torch.bmm(att, t).mean(dim=1)

    return M().eval()


def _plain():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.Hardswish(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def _lower(module, log: list | None):
    """The .pte of ``module`` (an nn.Module or a converted PT2E GraphModule), XNNPACK-delegated;
    with ``log`` a list, idle passes are skipped and logged in it as (name, skipped?)."""
    from contextlib import nullcontext

    import torch
    from executorch.exir import to_edge_transform_and_lower

    example = (torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)),)
    with torch.no_grad(), (et_idle.idle_passes_skipped(log) if log is not None else nullcontext()):
        edge = to_edge_transform_and_lower(torch.export.export(module, example),
                                           partitioner=[et_quant.partitioner()])
        return edge.to_executorch().buffer


def test_passes_with_work_still_run_and_bytes_do_not_change():
    model = _every_guarded_op()
    log: list[tuple[str, bool]] = []
    assert _lower(model, log) == _lower(model, None)
    ran = {name for name, skipped in log if not skipped}
    # the partitioner keeps prelu and max_pool2d whole (aten.prelu, aten.max_pool2d): the passes
    # for _prelu_kernel and max_pool2d_with_indices have nothing to do, nor the dim-order one
    idle = {"PReLUReshapePass", "RemoveGetItemPass", "DimOrderOpsRevertPass"}
    assert ran == GUARDED - idle, log


def test_a_plain_graph_skips_every_guarded_pass_with_the_same_bytes():
    model = _plain()
    log: list[tuple[str, bool]] = []
    assert _lower(model, log) == _lower(model, None)
    assert {name for name, skipped in log if skipped} == GUARDED and all(s for _, s in log), log


def test_each_predicate_sees_the_op_its_pass_rewrites():
    """On edge graphs holding one op each, a pass is idle exactly when its op is absent."""
    import torch
    from executorch.exir.dialects._ops import ops as exir_ops

    edge = exir_ops.edge.aten
    ops = {"PReLUReshapePass": edge._prelu_kernel.default,
           "RemoveGetItemPass": edge.max_pool2d_with_indices.default,
           "DecomposeBatchNorm": edge._native_batch_norm_legit_no_training.default,
           "FuseBatchNormPass": edge._native_batch_norm_legit_no_training.default,
           "ConvertToUpsampleBilinear2d": edge.upsample_bilinear2d.vec}
    predicates = {cls.__name__: idle for cls, idle in et_idle._pass_predicates().items()}
    assert set(predicates) == GUARDED
    for name, op in ops.items():
        g = torch.fx.Graph()
        x = g.placeholder("x")
        g.output(g.call_function(op, (x,)))
        assert not predicates[name](g), name
        assert all(predicates[other](g) for other in ops if ops[other] is not op), name


def test_int8_without_batch_norm_skips_the_bn_annotators_with_the_same_bytes(monkeypatch):
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils as U

    x = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    calls = []
    for name in et_idle._BN_ANNOTATORS:  # spy on the real annotators: skipped ones are never called
        real = U.OP_TO_ANNOTATOR[name]
        monkeypatch.setitem(U.OP_TO_ANNOTATOR, name, lambda *a, _real=real, _n=name, **k: (calls.append(_n),
                                                                                           _real(*a, **k))[1])

    def int8(model):
        gm, _ = et_quant.prepare_module(model, (3, 16, 16), precision="int8", calibration=x)
        return _lower(gm, None)

    fast = int8(_plain())
    assert calls == []
    with monkeypatch.context() as m:
        m.setattr(et_idle, "_READ_FOR", ())  # nothing skipped: today's ExecuTorch path
        slow = int8(_plain())
    assert sorted(calls) == sorted(et_idle._BN_ANNOTATORS)
    assert fast == slow


def test_every_pattern_holds_its_anchor_ops():
    """The predicates of the two pattern passes: each anchor op is in every pattern they match."""
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa

    for name, graphs in (("ConvertToUpsampleBilinear2d", bilinear_2d.get_graphs()),
                         ("ConvertToSDPAPass", sdpa.get_graphs())):
        assert graphs, name
        for g in graphs:
            ops = {et_idle._name(n.target) for n in g.graph.nodes if n.op == "call_function"}
            assert set(et_idle._PATTERN_ANCHORS[name]) <= ops, (name, sorted(ops))


def test_every_bn_annotator_pattern_holds_a_batch_norm(monkeypatch):
    import torch
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils as U
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    patterns = []
    real = U._get_aten_graph_module_for_pattern
    monkeypatch.setattr(U, "_get_aten_graph_module_for_pattern",
                        lambda *a, **k: patterns.append(real(*a, **k)) or patterns[-1])
    gm = torch.export.export(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval(),
                             (torch.rand(1, 3, 4, 4),)).module()
    for name in et_idle._BN_ANNOTATORS:
        U.OP_TO_ANNOTATOR[name](gm, get_symmetric_quantization_config(is_per_channel=True))
    assert len(patterns) >= len(et_idle._BN_ANNOTATORS)
    for p in patterns:
        assert any("batch_norm" in et_idle._name(n.target) for n in p.graph.nodes if n.op == "call_function")
