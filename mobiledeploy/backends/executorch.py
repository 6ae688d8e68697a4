"""ExecuTorch backend: PyTorch reference -> .pte delegated to XNNPACK (fp32, or PT2E int8).

``torch.export`` -> graph rewrites (``et_quant.rewrite_graph``) -> [int8: XNNPACKQuantizer,
calibrated on the definition's real calibration images] -> ``to_edge_transform_and_lower`` with
the ``XnnpackPartitioner`` -> ``.to_executorch()``. The manifest gets the delegation report:
how many ops XNNPACK took, which ops run on ExecuTorch's portable kernels, and how many
int8<->fp32 converts run inside the delegate.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from .base import Backend, ConvertContext, InputBatch, Runner

if TYPE_CHECKING:  # pragma: no cover
    from ..definition import ModelDefinition
    from ..targets import TargetProfile

DELEGATE_CALL = "executorch_call_delegate"
# bookkeeping nodes that are not operators
_NOT_OPS = {"getitem", DELEGATE_CALL}


def _op_name(target) -> str:
    name = getattr(target, "__name__", str(target))
    return name.removeprefix("aten.")


def delegation_report(edge_program) -> dict[str, Any]:
    """Ops inside XNNPACK delegates vs ops left to portable kernels, from a lowered program.

    ``edge_program`` is an ``EdgeProgramManager`` after ``to_edge_transform_and_lower`` (or its
    ``exported_program()``). Ops inside a delegate are counted from the lowered modules' graphs.
    ``xnnpack_converts``: the quantize/dequantize ops XNNPACK runs as separate convert ops (a
    float<->int8 boundary: the program's input and output, or a float op inside an int8 graph);
    the others are folded into the int8 op they belong to.
    """
    from executorch.backends.xnnpack.utils.quant_utils import (
        is_dequant,
        is_quant,
        is_tagged_as_implicit_q_dq,
    )

    ep = edge_program.exported_program() if hasattr(edge_program, "exported_program") else edge_program
    outside: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    partitions = converts = 0
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if name == DELEGATE_CALL:
            partitions += 1
            lowered = getattr(ep.graph_module, node.args[0].target)
            for n in lowered.original_module.graph.nodes:
                if n.op == "call_function" and _op_name(n.target) not in _NOT_OPS:
                    inside[_op_name(n.target)] += 1
                    converts += (is_quant(n) or is_dequant(n)) and not is_tagged_as_implicit_q_dq(n)
        elif name not in _NOT_OPS:
            outside[name] += 1
    return {
        "delegate": "XnnpackBackend",
        "xnnpack_partitions": partitions,
        "delegated_ops": sum(inside.values()),
        "delegated_op_types": dict(sorted(inside.items())),
        "non_delegated_ops": sum(outside.values()),
        "non_delegated_op_types": dict(sorted(outside.items())),
        "xnnpack_converts": int(converts),
    }


def lower_to_pte(model, input_shape: tuple[int, int, int], *, precision: str = "fp32",
                 calibration: np.ndarray | None = None, quantize_activations: bool = True
                 ) -> tuple[bytes, dict[str, Any]]:
    """Export an eval-mode ``model`` (NCHW float -> logits) to .pte bytes delegated to XNNPACK.

    ``precision`` is "fp32" or "int8"; int8 needs ``calibration`` (N, C, H, W) float32 real
    images. ``quantize_activations`` runs h-swish and the SE gates in int8 too (see ``et_quant``).
    Returns (pte bytes, facts for the manifest).
    """
    import torch

    from .._deps import require

    require("executorch", "the ExecuTorch backend")
    from executorch.exir import to_edge_transform_and_lower

    from . import et_quant

    if precision not in ("fp32", "int8"):
        raise UserError(f"ExecuTorch precision must be fp32 or int8, got '{precision}'")
    gm, facts = et_quant.prepare_module(model, input_shape, precision=precision,
                                        calibration=calibration,
                                        quantize_activations=quantize_activations)
    example = (torch.zeros((1, *input_shape), dtype=torch.float32),)
    with torch.no_grad():
        edge = to_edge_transform_and_lower(torch.export.export(gm, example),
                                           partitioner=[et_quant.partitioner(
                                               int8_hardswish=facts["int8_hardswish"])])
    facts.update(delegation_report(edge))
    return edge.to_executorch().buffer, facts


class ExecuTorchBackend(Backend):
    """Targets ``executorch-xnnpack`` (fp32) and ``executorch-xnnpack-int8``."""

    name = "executorch"
    requires = ("executorch", "torch")
    extra = "executorch"

    def distributions(self) -> tuple[str, ...]:
        return ("executorch", "torch", "torchao")  # torchao's PT2E shapes the int8 program

    def convert(self, ctx: ConvertContext, target: TargetProfile, out: Path) -> dict[str, Any]:
        """Write the .pte to ``out``; return the delegation report and quantization facts."""
        inp = ctx.definition.input
        calib = None
        qa = bool(target.options.get("quantize_activations", True))
        if target.precision == "int8":
            n = int(target.options.get("calibration_samples", 100))
            calib = ctx.calibration.x[:n]
        data, facts = lower_to_pte(ctx.torch_model(), (inp.channels, inp.height, inp.width),
                                   precision=target.precision, calibration=calib,
                                   quantize_activations=qa)
        Path(out).write_bytes(data)
        return facts

    def load(self, path: Path, target: TargetProfile, definition: ModelDefinition) -> Runner:
        """A runner on ExecuTorch's Python runtime; a program it cannot load is an error (the row fails)."""
        return PteRunner(path)


def _load_method(path: Path):
    from .._deps import require, version

    require("executorch", "running .pte programs")
    from executorch.runtime import Runtime

    try:
        program = Runtime.get().load_program(Path(path).read_bytes())
        method = program.load_method("forward")
    except Exception as exc:
        # the runtime is here and works: a program it cannot load is a broken artifact (fail),
        # never "cannot run on this host" (skip)
        raise RuntimeError(f"ExecuTorch {version('executorch')} runtime cannot load {Path(path).name}: "
                           f"{str(exc).strip() or type(exc).__name__}") from None
    if method is None:
        raise RuntimeError(f"{Path(path).name} has no 'forward' method")
    return program, method


class PteRunner(Runner):
    """Runs a .pte one sample at a time through ``executorch.runtime``."""

    def __init__(self, path: Path):
        from .._deps import version

        self.path = Path(path)
        self._program, self._method = _load_method(self.path)
        self.executor = f"executorch {version('executorch')} runtime (XNNPACK)"

    def run(self, batch: InputBatch) -> np.ndarray:
        import torch

        outs = []
        for i in range(len(batch)):
            x = torch.from_numpy(np.ascontiguousarray(batch.x[i:i + 1], dtype=np.float32))
            y = self._method.execute([x])[0]
            outs.append(y.detach().numpy().reshape(1, -1).astype(np.float32))
        return np.concatenate(outs, axis=0)


def bench_pte(path: str | Path, runs: int = 300, warmup: int = 20,
              x: np.ndarray | None = None) -> dict[str, float]:
    """Host latency of one .pte forward (ms): ``{"median", "p90", "runs"}``.

    ``x`` is one input (1, C, H, W); zeros of the program's input shape when omitted.
    """
    import torch

    program, method = _load_method(Path(path))  # the method is only valid while program lives
    if x is None:
        shape = tuple(method.metadata.input_tensor_meta(0).sizes())
        x = np.zeros(shape, np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for _ in range(warmup):
        method.execute([t])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        method.execute([t])
        times.append(time.perf_counter() - t0)
    del method, program
    ms = np.asarray(times) * 1e3
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "runs": runs}
