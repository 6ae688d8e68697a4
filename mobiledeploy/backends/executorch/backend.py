"""ExecuTorch backend: PyTorch reference -> .pte delegated to XNNPACK (fp32, or PT2E int8).

``torch.export`` -> graph rewrites (``et_quant.rewrite_graph``) -> [int8: XNNPACKQuantizer,
calibrated on the definition's real calibration images] -> ``to_edge_transform_and_lower`` with
the ``XnnpackPartitioner`` -> ``.to_executorch()``. The manifest gets the delegation report:
how many ops XNNPACK took, which ops run on ExecuTorch's portable kernels, and how many
int8<->fp32 converts run inside the delegate.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel

from ...errors import UserError
from ...tolerance import Tolerance
from ..base import (
    Backend,
    ConvertContext,
    GraphVariant,
    InputBatch,
    Int8Options,
    Lowering,
    NoOptions,
    Runner,
)

if TYPE_CHECKING:  # pragma: no cover
    from ...definition import ModelDefinition
    from ...targets import ResolvedTarget

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


@contextmanager
def _shared_provenance():
    """torch.fx records where every node came from (``node.meta["from_node"]``) and deep-copies
    the whole chain each time a pass touches a node: chains grow with every pass, and the copies
    took 10-15% of an int8 lowering (cProfile: ``copy.deepcopy`` under ``NodeSource.__init__``).
    Within this block a new record shares its (never mutated) ancestors instead. Same program
    bytes; the chains only feed debug handles, which are equal either way. A torch whose
    NodeSource is not shaped as expected is left alone."""
    try:
        from torch.fx.traceback import NodeSource
    except ImportError:  # pragma: no cover - older torch: nothing to patch
        yield
        return
    original = NodeSource.__init__
    if getattr(original, "__name__", "") != "__init__" or not hasattr(NodeSource, "NodeInfo"):
        yield
        return

    def init(self, node, pass_name: str = "", action=None):
        original(self, None, pass_name, action)
        if node:
            self.node_info = self.NodeInfo(name=node.name, target=str(node.target), graph_id=id(node.graph))
            self.from_node = list(node.meta.get("from_node", []))

    NodeSource.__init__ = init
    try:
        yield
    finally:
        NodeSource.__init__ = original


def lower_to_pte(model, input_shape: tuple[int, int, int], *, precision: str = "fp32",
                 calibration: np.ndarray | None = None, lowering: str = "hswish"
                 ) -> tuple[bytes, dict[str, Any]]:
    """Export an eval-mode ``model`` (NCHW float -> logits) to .pte bytes delegated to XNNPACK.

    ``precision`` is "fp32" or "int8"; int8 needs ``calibration`` (N, C, H, W) float32 real
    images. ``lowering="hswish"`` runs h-swish and the SE gates in int8 too (see ``et_quant``).
    Returns (pte bytes, facts for the manifest).
    """
    import torch

    from ..._deps import require

    require("executorch", "the ExecuTorch backend")
    from executorch.exir import to_edge_transform_and_lower

    from . import idle as et_idle
    from . import quant as et_quant

    if precision not in ("fp32", "int8"):
        raise UserError(f"ExecuTorch precision must be fp32 or int8, got '{precision}'")
    with _shared_provenance():
        gm, facts = et_quant.prepare_module(model, input_shape, precision=precision,
                                            calibration=calibration,
                                            lowering=lowering)
        example = (torch.zeros((1, *input_shape), dtype=torch.float32),)
        with torch.no_grad(), et_idle.idle_passes_skipped():
            edge = to_edge_transform_and_lower(torch.export.export(gm, example),
                                               partitioner=[et_quant.partitioner(
                                                   int8_hardswish=facts["int8_hardswish"])])
        facts.update(delegation_report(edge))
        return edge.to_executorch().buffer, facts


class ExecuTorchBackend(Backend):
    """Targets ``executorch-xnnpack`` (fp32) and ``executorch-xnnpack-int8``."""

    name = "executorch"
    requires = ("executorch", "torch")
    convert_seconds: ClassVar[dict[str, float]] = {"fp32": 6.0, "int8": 18.0}
    extra = "executorch"
    distributions = ("executorch", "torch", "torchao")  # torchao's PT2E shapes the int8 program
    options: ClassVar[dict[str, type[BaseModel]]] = {"fp32": NoOptions, "int8": Int8Options}
    tolerances: ClassVar[dict[str, Tolerance]] = {
        "fp32": Tolerance(max_abs=1e-4, min_cosine=0.99999, min_top1_agreement=1.0, max_accuracy_drop=0.0),
        # measured on the demo: 27.6 dB, gain error 1.8% (README "Tolerances with teeth"); the
        # XNNPACK delegate exposes no intermediates, so no per-layer gain check
        "int8": Tolerance(min_snr_db=20.0, max_gain_error=0.04, min_top1_agreement=0.95,
                          max_accuracy_drop=0.02),
    }
    app_runtime = "executorch"
    bench_device = "CPU (ExecuTorch + XNNPACK)"

    def graph(self, target) -> GraphVariant:
        # the exported graph keeps one h-swish op either way; the lowering is in its quantization
        return GraphVariant()

    def convert(self, ctx: ConvertContext, target: ResolvedTarget, out: Path) -> dict[str, Any]:
        """Write the .pte to ``out``; return the delegation report and quantization facts."""
        inp = ctx.definition.input
        calib = None
        if target.precision == "int8":
            calib = ctx.calibration.x[:target.option("calibration_samples")]
        data, facts = lower_to_pte(ctx.torch_model(), (inp.channels, inp.height, inp.width),
                                   precision=target.precision, calibration=calib,
                                   lowering=target.option("lowering", Lowering.none.value))
        Path(out).write_bytes(data)
        # a .pte carries no metadata an app can read: the sidecar beside it says what it takes
        from ...artifact_metadata import write_sidecar

        final = Path(target.artifact_path(ctx.definition.name))
        side = write_sidecar(ctx.definition, Path(out), Path(ctx.workdir) / f"{final.stem}.json",
                             target=target.name)
        facts["_extra_files"] = {**facts.get("_extra_files", {}), f"{final.parent.as_posix()}/{side.name}": str(side)}
        return facts

    def bench(self, path: Path, x: np.ndarray, *, runs: int, warmup: int, threads: int, loaded) -> dict[str, Any]:
        from ..._deps import require, version

        require("executorch", "running .pte programs")
        from executorch.extension.pybindings import _portable_lib

        # the runtime's pool defaults to every core; size it like the other engines
        _portable_lib._unsafe_reset_threadpool(threads)
        loaded()
        lat = bench_pte(path, runs=runs, warmup=warmup, x=x)
        lat.pop("runs", None)
        return {"latency_ms": lat, "executor": f"executorch {version('executorch')} runtime (XNNPACK, "
                f"{_portable_lib._threadpool_get_thread_count()} threads)"}

    def load(self, path: Path, target: ResolvedTarget, definition: ModelDefinition) -> Runner:
        """A runner on ExecuTorch's Python runtime; a program it cannot load is an error (the row fails)."""
        return PteRunner(path)


class _Method:
    """A loaded ``forward``: ``execute(inputs)`` and ``metadata``, as ``executorch.runtime``'s
    Method; holds the program (and its bytes) so the method stays valid."""

    def __init__(self, program, method, data: bytes | None):
        self._program, self._method, self._data = program, method, data

    def execute(self, inputs):
        return self._method(inputs)

    @property
    def metadata(self):
        return self._method.method_meta()


def _bindings():
    """ExecuTorch's C++ runtime bindings, or None when this ExecuTorch lays them out differently.

    ``executorch.runtime`` is a thin wrapper over the same module, but importing it imports
    ``executorch.exir`` (it parses the edge dialect's YAML: ~3 s of CPU in every validation,
    measured); the bindings alone load in milliseconds.
    """
    import torch  # noqa: F401  (the bindings link against torch's libraries: load them first)

    try:
        from executorch.extension.pybindings import _portable_lib as lib
    except ImportError:
        return None
    names = ("_load_program_from_buffer", "Verification")
    return lib if all(hasattr(lib, n) for n in names) else None


def _load_method(path: Path):
    from ..._deps import require, version

    require("executorch", "running .pte programs")
    data = Path(path).read_bytes()
    try:
        lib = _bindings()
        if lib is not None:
            program = lib._load_program_from_buffer(data, enable_etdump=False, debug_buffer_size=0,
                                                    program_verification=lib.Verification.InternalConsistency)
            method = _Method(program, program.load_method("forward"), data)
        else:
            from executorch.runtime import Runtime

            program = Runtime.get().load_program(data)
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
    """Runs a .pte one sample at a time on ExecuTorch's runtime (its C++ bindings)."""

    def __init__(self, path: Path):
        from ..._deps import version

        self.path = Path(path)
        self._program, self._method = _load_method(self.path)
        self.executor = f"executorch {version('executorch')} runtime (XNNPACK)"

    def run(self, batch: InputBatch) -> np.ndarray:
        import torch

        outs = []
        for i in range(len(batch)):
            x = torch.from_numpy(np.ascontiguousarray(batch.x[i:i + 1], dtype=np.float32))
            ys = [y.detach().numpy().astype(np.float32) for y in self._method.execute([x])]
            outs.append([y if y.ndim > 1 else y.reshape(1, -1) for y in ys])
        if len(outs[0]) > 1:  # several outputs (a detector's two heads): one array each
            return tuple(np.concatenate([o[k] for o in outs], axis=0) for k in range(len(outs[0])))
        return np.concatenate([o[0] for o in outs], axis=0)


def bench_pte(path: str | Path, runs: int = 300, warmup: int = 20,
              x: np.ndarray | None = None) -> dict[str, float]:
    """Host latency of one .pte forward (ms): ``{"median", "p90", "mean", "min", "runs"}``.

    ``x`` is one input (1, C, H, W); zeros of the program's input shape when omitted.
    """
    import torch

    from ..._timing import time_calls

    program, method = _load_method(Path(path))  # the method is only valid while program lives
    if x is None:
        shape = tuple(method.metadata.input_tensor_meta(0).sizes())
        x = np.zeros(shape, np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    lat = time_calls(lambda: method.execute([t]), runs, warmup)
    del program
    return {**lat, "runs": runs}
