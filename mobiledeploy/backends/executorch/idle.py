"""ExecuTorch lowering work that provably changes nothing for a given graph, skipped.

Two places in an XNNPACK lowering spend CPU on rewrites that cannot apply to the graph at hand:

- ``XnnpackBackend.preprocess`` runs 17 passes on the delegated graph; each ends by retracing the
  whole graph through fake tensors (``ExportPass.call``), whether it rewrote anything or not.
  A pass is skipped when the graph holds none of the ops it rewrites (``_pass_predicates``); the two
  pattern passes (bilinear upsampling, SDPA) are skipped when the graph lacks an op that every
  one of their patterns contains (``_PATTERN_ANCHORS``), which also spares building the
  patterns (several ``to_edge`` calls, once per process). A skipped pass returns the program
  unchanged, as ExecuTorch's own ``_transform`` does for a pass that modifies nothing.
- ``XNNPACKQuantizer.annotate`` runs its conv + batch-norm annotators (QAT patterns) in PTQ
  too, each exporting two pattern graphs to match; ``prepare_pt2e`` has already folded the
  batch norms into their convs, and without a batch-norm op in the graph they match nothing.

Each predicate restates, from the pass's source, the condition under which it touches a node;
they were read for the versions in ``_READ_FOR``. Any other ExecuTorch version, or a missing
internal name, runs everything as before. The .pte bytes are the same either way
(tests/integration/test_et_idle.py; the three shipped examples' programs were compared too).
Measured on the demo (AMD EPYC, one thread): int8 lowering 21.5-23.1 -> 13.5-16.2 s CPU, fp32
7.1-7.9 -> 6.1-7.0 s, together with the calibration change in ``et_quant.quantize_int8``.
"""

from __future__ import annotations

from contextlib import contextmanager

# ExecuTorch versions whose passes and quantizer the predicates below were read from
_READ_FOR = ("1.4.",)
# ops every pattern of the pass contains (tests/integration/test_et_idle.py builds the patterns):
# a graph without one of them cannot match any pattern (SubgraphMatcher matches targets exactly)
_PATTERN_ANCHORS = {
    "ConvertToUpsampleBilinear2d": ("aten.upsample_bilinear2d.vec",),
    "ConvertToSDPAPass": ("aten.bmm.default", "aten._softmax.default"),
}
_BN_ANNOTATORS = ("conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu")


def _name(target) -> str:
    return getattr(target, "__name__", None) or str(target)


def _calls(graph):
    return [n for n in graph.nodes if n.op == "call_function"]


def _rank(node) -> int | None:
    val = getattr(node, "meta", {}).get("val")
    return val.dim() if hasattr(val, "dim") else None


def read_for_this_version() -> bool:
    """True when the installed ExecuTorch is one the predicates were read from."""
    from ..._deps import version

    try:
        return str(version("executorch")).startswith(_READ_FOR)
    except Exception:  # pragma: no cover - not installed / unreadable metadata
        return False


def _conv1d_idle(graph) -> bool:
    # rewrites convolutions whose stride has one entry (1.4) or whose weight, or the tensor its
    # weight dequantizes, is 3-D (later versions): idle when every convolution is plainly 2-D
    for n in _calls(graph):
        if _name(n.target) == "aten.convolution.default":
            w = n.args[1]
            ranks = {_rank(w)} | ({_rank(w.args[0])} if getattr(w, "op", None) == "call_function" and w.args else set())
            if len(n.args[3]) == 1 or ranks != {4}:
                return False
    return True


def _cat_idle(graph) -> bool:
    # splits concatenations of more than five tensors
    return not any(_name(n.target) == "aten.cat.default" and len(n.args[0]) > 5 for n in _calls(graph))


def _has_none(*names: str):
    return lambda graph: not any(_name(n.target) in names for n in _calls(graph))


def _has_no_batch_norm(graph) -> bool:
    return not any("batch_norm" in _name(n.target) for n in _calls(graph))


def _lacks_an_anchor(anchors):
    return lambda graph: not set(anchors) <= {_name(n.target) for n in _calls(graph)}


def _pass_predicates() -> dict[type, object]:
    """{pass class: graph -> True when the pass cannot rewrite anything}; classes that cannot
    be imported are left out (and run)."""
    import importlib

    table = {
        ("executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d", "ConvertToUpsampleBilinear2d"):
            _lacks_an_anchor(_PATTERN_ANCHORS["ConvertToUpsampleBilinear2d"]),
        ("executorch.backends.xnnpack._passes.convert_to_sdpa", "ConvertToSDPAPass"):
            _lacks_an_anchor(_PATTERN_ANCHORS["ConvertToSDPAPass"]),
        ("executorch.backends.xnnpack._passes.fuse_batch_norm", "FuseBatchNormPass"): _has_no_batch_norm,
        ("executorch.backends.xnnpack._passes.decompose_batch_norm", "DecomposeBatchNorm"): _has_no_batch_norm,
        ("executorch.backends.xnnpack._passes.decompose_cat", "DecomposeConcatenate"): _cat_idle,
        ("executorch.backends.transforms.remove_getitem_op", "RemoveGetItemPass"):
            _has_none("aten.max_pool2d_with_indices.default", "aten.max.dim"),
        ("executorch.backends.xnnpack._passes.conv1d_unsqueeze_pass", "Conv1dUnsqueezePass"): _conv1d_idle,
        ("executorch.backends.xnnpack._passes.prelu_reshape_pass", "PReLUReshapePass"):
            _has_none("aten._prelu_kernel.default"),
    }
    out: dict[type, object] = {}
    for (module, cls), idle in table.items():
        try:
            out[getattr(importlib.import_module(module), cls)] = idle
        except (ImportError, AttributeError):
            continue
    try:
        from executorch.exir.passes.memory_format_ops_pass import DimOrderOpsRevertPass, MemoryFormatOpsMap

        # rewrites only the dim-order ops it maps back to memory-format ops
        out[DimOrderOpsRevertPass] = _has_none(*{_name(op) for op in MemoryFormatOpsMap})
    except (ImportError, AttributeError):
        pass
    return out


def _plain_graph(gm) -> bool:
    """No nested graphs (control flow): the predicates look at one graph only."""
    import torch

    return not any(isinstance(m, torch.fx.GraphModule) for m in gm.children())


@contextmanager
def idle_passes_skipped(log: list[tuple[str, bool]] | None = None):
    """Within the block, XNNPACK's delegate passes that cannot rewrite the graph they are given
    are not run. ``log`` collects (pass name, skipped?) for every guarded pass met."""
    try:
        from executorch.backends.xnnpack import _passes as xnnpack_passes

        original = xnnpack_passes._transform
    except (ImportError, AttributeError):
        yield
        return
    if not read_for_this_version():
        yield
        return
    idle = _pass_predicates()

    def transform(ep, *passes, **kwargs):
        if len(passes) == 1 and not kwargs and type(passes[0]) in idle:
            gm = ep.graph_module
            skip = _plain_graph(gm) and idle[type(passes[0])](gm.graph)
            if log is not None:
                log.append((type(passes[0]).__name__, skip))
            if skip:
                return ep
        return original(ep, *passes, **kwargs)

    xnnpack_passes._transform = transform
    try:
        yield
    finally:
        xnnpack_passes._transform = original


@contextmanager
def idle_bn_annotators_skipped(model):
    """Within the block, XNNPACKQuantizer's conv + batch-norm annotators do not build and match
    their patterns on ``model`` when it has no batch-norm op (each pattern contains one). Their
    one other effect, dead-code elimination and a recompile of ``model``, is kept."""
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import OP_TO_ANNOTATOR
    except ImportError:
        yield
        return
    names = [n for n in _BN_ANNOTATORS if n in OP_TO_ANNOTATOR]
    if not names or not read_for_this_version() or not _plain_graph(model) or not _has_no_batch_norm(model.graph):
        yield
        return

    def annotate_nothing(gm, quantization_config=None, filter_fn=None):
        gm.graph.eliminate_dead_code()
        gm.recompile()
        return []

    saved = {n: OP_TO_ANNOTATOR[n] for n in names}
    OP_TO_ANNOTATOR.update({n: annotate_nothing for n in names})
    try:
        yield
    finally:
        OP_TO_ANNOTATOR.update(saved)
