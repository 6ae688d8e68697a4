"""Graph rewrites and PT2E int8 quantization for the ExecuTorch XNNPACK targets.

The stock ``XNNPACKQuantizer`` leaves h-swish and hard-sigmoid unannotated (XNNPACK has no
quantized kernel for them in ExecuTorch's partitioner), so every SE block and every h-swish
runs in fp32 between dequantize/quantize pairs and int8 is barely faster than fp32. Rewriting
them into ops that the stock annotators and the XNNPACK partitioner handle in int8 (add with a
constant, hardtanh fused into it, mul) keeps the whole network inside one int8 delegate.

Every rewrite is the same function in float (checked to 1e-5 by the tests): only the exported
graph changes, never the PyTorch reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCHEME = "PT2E static int8: weights per-channel symmetric, activations per-tensor affine (XNNPACKQuantizer)"


def _aten():
    import torch

    return torch.ops.aten


def _hardsigmoid_nodes(gm, graph, x, tag: str):
    """hardtanh(dwconv1x1(x, w=1/6, b=0.5), 0, 1), i.e. relu6(x + 3) / 6.

    A 1x1 depthwise conv carries the affine part in its own weights: XNNPACK fuses the clamp
    into it and, in int8, its per-channel weight 1/6 is exact. The alternative ``add``/``mul``
    with scalar constants costs two more ops, and XNNPACK's channels-last pass wraps every
    (1, 1, 1, 1) constant in a copy op, which made int8 slower than fp32.
    """
    import torch

    aten = _aten()
    shape = list(x.meta["val"].shape)
    channels = shape[1]
    if len(shape) == 2:  # the head's h-swish after a linear: run it as (N, C, 1, 1)
        x = graph.call_function(aten.view.default, (x, [*shape, 1, 1]))
    gm.register_buffer(f"{tag}_w", torch.full((channels, 1, 1, 1), 1.0 / 6.0))
    gm.register_buffer(f"{tag}_b", torch.full((channels,), 0.5))
    w, b = graph.get_attr(f"{tag}_w"), graph.get_attr(f"{tag}_b")
    affine = graph.call_function(aten.conv2d.default, (x, w, b, [1, 1], [0, 0], [1, 1], channels))
    gate = graph.call_function(aten.hardtanh.default, (affine, 0.0, 1.0))
    return graph.call_function(aten.view.default, (gate, shape)) if len(shape) == 2 else gate


def rewrite_graph(gm, *, hardswish: bool = False, hardsigmoid: bool = False) -> dict[str, int]:
    """Rewrite an exported (pre-dispatch ATen) GraphModule in place; returns rewrite counts.

    - ``mean(x, [2, 3], keepdim=False)`` becomes ``mean(keepdim=True)`` + ``view``: XNNPACK
      only takes the 4-D keepdim form, and the head's global pool would otherwise split the
      program into two delegates around a portable-kernel mean.
    - ``hardsigmoid``: ``hardsigmoid(x)`` -> ``hardtanh(x/6 + 1/2, 0, 1)`` as a 1x1 depthwise
      conv + clamp (int8 annotators cover it; in fp32 it also avoids the edge decomposition's
      scalar-constant copies that would run outside the delegate).
    - ``hardswish``: ``hardswish(x)`` -> ``x * hardsigmoid'(x)`` (for int8 only: XNNPACK has a
      native fp32 h-swish kernel, but no int8 one in ExecuTorch's partitioner).
    """
    aten = _aten()
    graph = gm.graph
    counts = {"mean_keepdim": 0, "hardswish": 0, "hardsigmoid": 0}
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == aten.mean.dim:
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
        elif (hardswish and node.target == aten.hardswish.default) or (
                hardsigmoid and node.target == aten.hardsigmoid.default):
            x = node.args[0]
            with graph.inserting_before(node):
                gate = _hardsigmoid_nodes(gm, graph, x, f"_md_hsig{sum(counts.values())}")
                is_swish = node.target == aten.hardswish.default
                out = graph.call_function(aten.mul.Tensor, (x, gate)) if is_swish else gate
            node.replace_all_uses_with(out)
            counts["hardswish" if is_swish else "hardsigmoid"] += 1
            graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return counts


def quantize_int8(gm, calibration: np.ndarray, *, per_channel: bool = True):
    """PT2E static int8 with the XNNPACK quantizer, calibrated one real sample at a time.

    ``gm`` is an exported GraphModule (``torch.export.export(...).module()``), already rewritten.
    ``calibration`` is (N, C, H, W) float32, normalised real images. Returns the converted module.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel))
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        # the exported graph has batch-1 views baked in: one image per call
        for i in range(calibration.shape[0]):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[i:i + 1])))
    return convert_pt2e(prepared)


_COMPUTE = ("conv2d", "linear", "add", "mul", "hardtanh", "mean", "relu", "clamp")
# no int8 kernel in ExecuTorch's XNNPACK partitioner: between dequantize/quantize they run in fp32
_FLOAT_ONLY = ("hardswish", "hardsigmoid", "div")


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
                   quantize_activations: bool = True):
    """The exported, rewritten (and for int8, quantized) GraphModule, and its facts.

    ``input_shape`` is (C, H, W). Raises UserError when int8 has no calibration images.
    """
    import torch

    from ..errors import UserError

    example = (torch.zeros((1, *input_shape), dtype=torch.float32),)
    with torch.no_grad():
        gm = torch.export.export(model, example).module()
        # stock int8 (quantize_activations off) keeps the graph the XNNPACKQuantizer expects
        stock = precision == "int8" and not quantize_activations
        rewrites = rewrite_graph(gm, hardsigmoid=not stock,
                                 hardswish=precision == "int8" and not stock)
        facts: dict[str, Any] = {"precision": precision, "graph_rewrites": rewrites}
        if precision != "int8":
            return gm, facts
        if calibration is None or len(calibration) == 0:
            raise UserError("int8 ExecuTorch conversion needs calibration images (definition field "
                            "'calibration.source')")
        # re-export so the rewritten nodes carry the shape/dtype metadata the quantizer reads
        gm = torch.export.export(gm, example).module()
        gm = quantize_int8(gm, np.asarray(calibration, np.float32))
    facts.update({"quantization": SCHEME, "quantize_activations": bool(quantize_activations),
                  "calibration_samples": int(len(calibration)),
                  "float_compute_ops": len(float_compute_ops(gm))})
    return gm, facts
