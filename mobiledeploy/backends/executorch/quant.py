"""Graph rewrites and PT2E int8 quantization for the ExecuTorch XNNPACK targets.

The stock ``XNNPACKQuantizer`` leaves h-swish and hard-sigmoid unannotated, so every h-swish and
SE gate runs in fp32 between explicit int8<->fp32 convert ops and int8 gains little over fp32.
With ``lowering="hswish"`` (the default, as for TFLite and the Edge TPU) no float island is left in the int8 program:

- h-swish stays one op: annotated int8 here and delegated as XNNPACK's int8 h-swish (ExecuTorch's
  partitioner only offers XNNPACK's fp32 h-swish; ``partitioner`` adds the int8 one). Decomposing
  it into int8 ops instead (a 1x1 depthwise conv + clamp + mul, or add + clamp + mul with the 1/6
  folded away) costs two or three full-tensor ops per h-swish and measured slower than fp32;
- the SE gate ``hardsigmoid(fc2(s))`` becomes ``hardtanh(fc2'(s), 0, 6)``, fc2' being fc2 with 3
  added to its bias, and the 1/6 is folded into the weights of the conv that the gated tensor
  feeds (the projection): the gate is a clamp fused into fc2, the SE multiply an int8 mul.

Every rewrite is the same function in float (the tests check 1e-5 of the logit scale): only the
exported graph and its own copies of the weights change, never the PyTorch reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCHEME = ("PT2E static int8: weights per-channel symmetric, activations per-tensor affine "
          "(XNNPACKQuantizer; with lowering=hswish h-swish too, as XNNPACK's int8 h-swish)")


def _aten():
    import torch

    return torch.ops.aten


def _tensor(gm, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _replace_tensor(gm, target: str, value) -> None:
    """Point a get_attr target at a new tensor. An exported module shares its parameters' storage
    with the model it came from: writing into them in place would change the reference."""
    import torch

    owner, _, name = target.rpartition(".")
    module = gm.get_submodule(owner) if owner else gm
    old = getattr(module, name)
    setattr(module, name, torch.nn.Parameter(value, requires_grad=False)
            if isinstance(old, torch.nn.Parameter) else value)


def _scaled_convs(node) -> list | None:
    """The conv/linear nodes whose output scales by c when ``node``'s output is scaled by c.

    Every path from ``node`` must reach a conv/linear's activation input through ops linear in
    it (mean, view, dropout, a mul by a tensor not derived from ``node``), and each of those
    convs must own its weight. None when a path ends anywhere else (an add, the output ...).
    """
    aten = _aten()
    gemm = (aten.conv2d.default, aten.linear.default)
    passthrough = (aten.mean.dim, aten.view.default, aten.reshape.default,
                   aten.flatten.using_ints, aten.dropout.default, aten.clone.default,
                   aten.mul.Tensor)
    reach, convs, stack = {node}, [], [node]
    while stack:
        n = stack.pop()
        for u in n.users:
            if u.op == "call_function" and u.target in gemm:
                w = u.args[1]
                if u.args[0] is not n or getattr(w, "op", None) != "get_attr" or len(w.users) != 1:
                    return None
                if u not in convs:
                    convs.append(u)
            elif u.op == "call_function" and u.target in passthrough:
                if u not in reach:
                    reach.add(u)
                    stack.append(u)
            else:
                return None
    # a mul of two tensors that both derive from node would scale twice
    if any(n.target == aten.mul.Tensor and all(a in reach for a in n.args) for n in reach):
        return None
    return convs


def _fold_gate(gm, graph, node, scales: dict) -> bool:
    """``hardsigmoid(conv(s))`` -> ``hardtanh(conv'(s), 0, 6)``, conv' = conv with bias + 3; the
    1/6 is recorded in ``scales`` for the convs downstream. False (graph untouched) when the
    input is not a conv that owns its bias or the gate's output does not reach convs only."""
    import torch

    aten = _aten()
    conv = node.args[0]
    if getattr(conv, "target", None) != aten.conv2d.default or len(conv.users) != 1:
        return False
    bias = conv.args[2] if len(conv.args) > 2 else None
    if bias is not None and (bias.op != "get_attr" or len(bias.users) != 1):
        return False
    convs = _scaled_convs(node)
    if not convs:
        return False
    if bias is None:
        name = next(f"_md_gate_bias{i}" for i in range(len(graph.nodes))
                    if not hasattr(gm, f"_md_gate_bias{i}"))
        gm.register_buffer(name, torch.full((conv.meta["val"].shape[1],), 3.0))
        with graph.inserting_before(conv):
            attr = graph.get_attr(name)
        args = [*conv.args, *[None] * (3 - len(conv.args))]
        args[2] = attr
        conv.args = tuple(args)
    else:
        _replace_tensor(gm, bias.target, _tensor(gm, bias.target).detach() + 3.0)
    with graph.inserting_before(node):
        gate = graph.call_function(aten.hardtanh.default, (conv, 0.0, 6.0))
    node.replace_all_uses_with(gate)
    graph.erase_node(node)
    for c in convs:
        scales[c] = scales.get(c, 1.0) / 6.0
    return True


def _hardsigmoid_nodes(gm, graph, x, tag: str):
    """hardtanh(dwconv1x1(x, w=1/6, b=0.5), 0, 1), i.e. relu6(x + 3) / 6: the fallback for a
    hard-sigmoid whose 1/6 cannot be folded away.

    A 1x1 depthwise conv carries the affine part in its own weights and XNNPACK fuses the clamp
    into it. The alternative ``add``/``mul`` with scalar constants costs two more ops, and
    XNNPACK's channels-last pass wraps every (1, 1, 1, 1) constant in a copy op.
    """
    import torch

    aten = _aten()
    shape = list(x.meta["val"].shape)
    channels = shape[1]
    if len(shape) == 2:  # after a linear: run it as (N, C, 1, 1)
        x = graph.call_function(aten.view.default, (x, [*shape, 1, 1]))
    gm.register_buffer(f"{tag}_w", torch.full((channels, 1, 1, 1), 1.0 / 6.0))
    gm.register_buffer(f"{tag}_b", torch.full((channels,), 0.5))
    w, b = graph.get_attr(f"{tag}_w"), graph.get_attr(f"{tag}_b")
    affine = graph.call_function(aten.conv2d.default, (x, w, b, [1, 1], [0, 0], [1, 1], channels))
    gate = graph.call_function(aten.hardtanh.default, (affine, 0.0, 1.0))
    return graph.call_function(aten.view.default, (gate, shape)) if len(shape) == 2 else gate


def rewrite_graph(gm, *, hardsigmoid: bool = True) -> dict[str, int]:
    """Rewrite an exported (pre-dispatch ATen) GraphModule in place; returns rewrite counts.

    - ``mean(x, [2, 3], keepdim=False)`` becomes ``mean(keepdim=True)`` + ``view``: XNNPACK
      only takes the 4-D keepdim form, and the head's global pool would otherwise split the
      program into two delegates around a portable-kernel mean.
    - ``hardsigmoid``: the SE gate folded into fc2 and the projection's weights (``gate_folded``,
      see the module docstring); a hard-sigmoid where that does not apply becomes a 1x1 depthwise
      conv + clamp (``hardsigmoid``). Without it the edge decomposition adds scalar-constant
      copies that run outside the delegate (fp32), and XNNPACKQuantizer leaves it float (int8).

    h-swish is left alone: XNNPACK has it natively, in fp32 and in int8.
    """
    aten = _aten()
    graph = gm.graph
    counts = {"mean_keepdim": 0, "gate_folded": 0, "hardsigmoid": 0}
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != aten.mean.dim:
            continue
        dims = [d % 4 for d in node.args[1]] if len(node.args) > 1 and node.args[1] else []
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if keep or sorted(dims) != [2, 3] or node.kwargs.get("dtype") is not None:
            continue
        shape = list(node.meta["val"].shape)
        with graph.inserting_before(node):
            pooled = graph.call_function(aten.mean.dim, (node.args[0], [2, 3], True))
            flat = graph.call_function(aten.view.default, (pooled, shape))
        node.replace_all_uses_with(flat)
        graph.erase_node(node)
        counts["mean_keepdim"] += 1
    scales: dict = {}
    for node in list(graph.nodes) if hardsigmoid else []:
        if node.op != "call_function" or node.target != aten.hardsigmoid.default:
            continue
        if _fold_gate(gm, graph, node, scales):
            counts["gate_folded"] += 1
            continue
        with graph.inserting_before(node):
            gate = _hardsigmoid_nodes(gm, graph, node.args[0], f"_md_hsig{counts['hardsigmoid']}")
        node.replace_all_uses_with(gate)
        graph.erase_node(node)
        counts["hardsigmoid"] += 1
    for conv, scale in scales.items():
        target = conv.args[1].target
        _replace_tensor(gm, target, _tensor(gm, target).detach() * scale)
    graph.lint()
    gm.recompile()
    return counts


def quantizer(*, hardswish: bool = True):
    """``XNNPACKQuantizer`` with the symmetric per-channel config (``SCHEME``); ``hardswish`` also annotates every h-swish
    int8 in and out (lower it with ``partitioner(int8_hardswish=True)``)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import (
        get_input_act_qspec,
        get_output_act_qspec,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    from .idle import idle_bn_annotators_skipped

    aten = _aten()

    class _Quantizer(XNNPACKQuantizer):
        def annotate(self, model):
            cfg = self.global_config
            for n in model.graph.nodes if hardswish else []:
                if (n.op == "call_function" and n.target == aten.hardswish.default
                        and Q_ANNOTATION_KEY not in n.meta):
                    n.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
                        input_qspec_map={n.args[0]: get_input_act_qspec(cfg)},
                        output_qspec=get_output_act_qspec(cfg), _annotated=True)
            with idle_bn_annotators_skipped(model):
                return super().annotate(model)

    return _Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def partitioner(*, int8_hardswish: bool = False):
    """The ``XnnpackPartitioner``; ``int8_hardswish`` lets it take a quantized h-swish (dequantize
    -> hardswish -> quantize) as XNNPACK's int8 h-swish instead of an fp32 one between converts."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import HardswishConfig
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    if not int8_hardswish:
        return XnnpackPartitioner()

    class Int8HardswishConfig(HardswishConfig):
        def supported_precision_types(self):
            return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]

    return XnnpackPartitioner(configs=[Int8HardswishConfig if c is HardswishConfig else c
                                       for c in ALL_PARTITIONER_CONFIGS])


def quantize_int8(gm, calibration: np.ndarray, *, hardswish: bool = True):
    """PT2E static int8 with the XNNPACK quantizer, calibrated one real sample at a time.

    ``gm`` is an exported GraphModule (``torch.export.export(...).module()``), already rewritten.
    ``calibration`` is (N, C, H, W) float32, normalised real images. ``hardswish`` quantizes
    h-swish as well (see ``quantizer``). Returns the converted module.
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(gm, quantizer(hardswish=hardswish))
    paused: list = []
    try:
        with torch.no_grad():
            # the exported graph has batch-1 views baked in: one image per call
            for i in range(calibration.shape[0]):
                prepared(torch.from_numpy(np.ascontiguousarray(calibration[i:i + 1])))
                if i == 0:  # the weights' min/max are known after one pass: later passes are no-ops
                    paused = _constant_min_max_observers(prepared)
                    for obs in paused:
                        obs.forward = _pass_through
    finally:
        for obs in paused:
            del obs.forward
    return convert_pt2e(prepared)


def _pass_through(x):
    return x


def _constant_min_max_observers(gm) -> list:
    """The min/max observers of a prepared module that only ever see constants (the weights, read
    through ``get_attr``): observing the same tensor again leaves their min/max as they are, so
    after the first calibration sample they can sit out the rest (a third of the calibration CPU).
    Histogram observers are never among them (they count every look)."""
    try:
        from torchao.quantization.pt2e.observer import MinMaxObserver, PerChannelMinMaxObserver
    except ImportError:  # pragma: no cover - another torchao layout: observe every sample
        return []
    sites: dict[str, list] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            sites.setdefault(n.target, []).append(n)
    out = []
    for name, nodes in sites.items():
        obs = gm.get_submodule(name)
        if type(obs) in (MinMaxObserver, PerChannelMinMaxObserver) and all(
                len(n.args) == 1 and not n.kwargs and getattr(n.args[0], "op", None) == "get_attr"
                for n in nodes):
            out.append(obs)
    return out


_COMPUTE = ("conv2d", "linear", "add", "mul", "hardtanh", "mean", "relu", "clamp", "hardswish")
# no int8 kernel in ExecuTorch's XNNPACK partitioner: between dequantize/quantize they run in fp32
_FLOAT_ONLY = ("hardsigmoid", "div")


def float_compute_ops(gm) -> list[str]:
    """Compute ops of a converted PT2E module that run in float: a float activation input (not
    a dequantize) or a float output (not consumed by quantize nodes only).

    Empty means every activation entering a compute op is int8 (weights and constants may be
    dequantized constants; they count as quantized). A relu/hardtanh straight after a conv,
    linear, add or mul is that op's fused activation (quantized at its output) and counts too.
    """
    def name_of(n) -> str:
        return getattr(n.target, "__name__", str(n.target)).split(".")[0]

    def quantized(arg, user) -> bool:
        if not hasattr(arg, "op") or arg.op == "get_attr" or "dequantize" in str(arg.target):
            return True
        return (name_of(user) in ("relu", "hardtanh") and arg.op == "call_function"
                and name_of(arg) in ("conv2d", "linear", "add", "mul") and len(arg.users) == 1)

    out = []
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        name = name_of(n)
        fused = name in ("conv2d", "linear", "add", "mul") and len(n.users) == 1 and name_of(
            next(iter(n.users))) in ("relu", "hardtanh")
        out_q = fused or all("quantize_per" in str(u.target) and "dequantize" not in str(u.target)
                             for u in n.users)
        if name in _FLOAT_ONLY or (name in _COMPUTE and not (
                out_q and all(quantized(a, n) for a in n.all_input_nodes))):
            out.append(f"{name}:{n.name}")
    return out


def prepare_module(model, input_shape, *, precision: str, calibration: np.ndarray | None = None,
                   lowering: str = "hswish"):
    """The exported, rewritten (and for int8, quantized) GraphModule, and its facts.

    ``input_shape`` is (C, H, W). Raises UserError when int8 has no calibration images.
    Lower the module with ``partitioner(int8_hardswish=facts["int8_hardswish"])``.
    """
    import torch

    from ...errors import UserError

    example = (torch.zeros((1, *input_shape), dtype=torch.float32),)
    with torch.no_grad():
        gm = torch.export.export(model, example).module()
        # stock int8 (lowering none) keeps the graph the XNNPACKQuantizer expects
        stock = precision == "int8" and lowering != "hswish"
        rewrites = rewrite_graph(gm, hardsigmoid=not stock)
        facts: dict[str, Any] = {"precision": precision, "graph_rewrites": rewrites,
                                 "int8_hardswish": precision == "int8" and not stock}
        if precision != "int8":
            return gm, facts
        if calibration is None or len(calibration) == 0:
            raise UserError("int8 ExecuTorch conversion needs calibration images (definition field "
                            "'calibration.source')")
        # re-export so the rewritten nodes carry the shape/dtype metadata the quantizer reads
        gm = torch.export.export(gm, example).module()
        gm = quantize_int8(gm, np.asarray(calibration, np.float32), hardswish=not stock)
    facts.update({"quantization": SCHEME, "lowering": lowering if precision == "int8" else None,
                  "calibration_samples": int(len(calibration)),
                  "float_compute_ops": len(float_compute_ops(gm))})
    return gm, facts
