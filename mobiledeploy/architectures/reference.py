"""The twin reference models of a definition, loaded with the same canonical weights."""

from __future__ import annotations

import warnings

import numpy as np


class SeededWeightsWarning(UserWarning):
    """The definition names no weights: a seeded deterministic initialisation is used."""


def canonical_state(definition) -> dict[str, np.ndarray]:
    """The canonical weights of a definition: its safetensors file, or a seeded init."""
    from .torch_builder import build_torch_model
    from .weights import check_values, read_weights, state_dict_numpy

    if definition.weights:
        state = read_weights(definition.path(definition.weights))
        unused = unused_weights(definition.architecture_spec())
        state = {k: v for k, v in state.items() if k not in unused}
        check_values(state, f"{definition.source_path}: weights")
        return state
    warnings.warn(
        f"{definition.source_path}: no 'weights' given; using a seeded initialisation "
        f"(seed {definition.seed}): outputs are near-constant and validation proves little",
        SeededWeightsWarning,
        stacklevel=2,
    )
    return state_dict_numpy(build_torch_model(definition.architecture_spec(), seed=definition.seed))


def unused_weights(spec) -> frozenset[str]:
    """Tensors a weights file may carry that this architecture leaves out: those its head plugin
    drops (an embedder reads a classifier's file without the last layer). The bundle's canonical
    file never holds them."""
    from .heads import head_module

    plugin = head_module(spec)
    return frozenset(plugin.unused_weights(spec)) if plugin and hasattr(plugin, "unused_weights") else frozenset()


def build_torch_reference(definition, state: dict[str, np.ndarray] | None = None):
    """The PyTorch reference in eval mode with the canonical weights."""
    from .torch_builder import build_torch_model
    from .weights import load_torch_weights

    spec = definition.architecture_spec()
    model = build_torch_model(spec, seed=definition.seed)
    load_torch_weights(model, state if state is not None else canonical_state(definition),
                       source=f"{definition.source_path}: weights")
    return model


def build_keras_reference(definition, state: dict[str, np.ndarray] | None = None, **options):
    """The Keras reference built from the same spec, with the same weights transposed."""
    from .keras_builder import build_keras_model
    from .weights import check_state, load_keras_weights

    spec = definition.architecture_spec()
    state = state if state is not None else canonical_state(definition)
    check_state(state, expected_shapes(spec), f"{definition.source_path}: weights")
    model = build_keras_model(spec, **options)
    load_keras_weights(model, state, spec, hswish=options.get("hswish", "fused"))
    return model


def expected_shapes(spec) -> dict[str, tuple]:
    """Canonical tensor names and shapes of an architecture, without importing PyTorch.

    Mirrors ``torch_builder`` (a test holds the two to the same names and shapes), so that a
    build can refuse mismatched weights before writing anything and without a heavy import.
    """
    shapes: dict[str, tuple] = {}

    def conv_bn(prefix: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
        shapes[f"{prefix}.conv.weight"] = (cout, cin // groups, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{name}"] = (cout,)

    conv_bn("stem", spec.in_channels, spec.stem_out, spec.stem_kernel)
    cin = spec.stem_out
    for i, b in enumerate(spec.blocks):
        p = f"blocks.{i}"
        if b.has_expand(cin):
            conv_bn(f"{p}.expand", cin, b.exp, b.kernel if b.fused else 1)
        if not b.fused:
            conv_bn(f"{p}.dw", b.exp, b.exp, b.kernel, groups=b.exp)
        if b.se:
            shapes[f"{p}.se.fc1.weight"] = (b.se_channels, b.exp, 1, 1)
            shapes[f"{p}.se.fc1.bias"] = (b.se_channels,)
            shapes[f"{p}.se.fc2.weight"] = (b.exp, b.se_channels, 1, 1)
            shapes[f"{p}.se.fc2.bias"] = (b.exp,)
        conv_bn(f"{p}.project", b.exp, b.out, 1)
        cin = b.out
    conv_bn("last", cin, spec.last_conv, 1)
    if spec.detection:
        from ..tasks.detection.ssdlite import head_shapes as ssd_shapes

        return {**shapes, **ssd_shapes(spec)}
    if spec.segmentation:
        from ..tasks.segmentation.lraspp import head_shapes

        return {**shapes, **head_shapes(spec)}
    if spec.head_plugin:
        from .heads import head_module

        return {**shapes, **head_module(spec).head_shapes(spec)}
    feat = spec.last_conv
    if spec.head_hidden:
        shapes["head.fc1.weight"] = (spec.head_hidden, feat)
        shapes["head.fc1.bias"] = (spec.head_hidden,)
        feat = spec.head_hidden
    shapes["head.classifier.weight"] = (spec.num_classes, feat)
    shapes["head.classifier.bias"] = (spec.num_classes,)
    return shapes


def check_weights_file(definition) -> None:
    """The definition's weights file has exactly the architecture's tensors, all float32 and finite.

    Checked before anything is written: a float16/int8/float64 tensor or a NaN/Inf value would
    otherwise start every conversion and surface as a confusing metric (``max_abs nan``).
    """
    from safetensors import safe_open

    from ..errors import UserError
    from .weights import check_state, check_values

    path = definition.path(definition.weights)
    where = f"{definition.source_path}: weights"
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
            dtypes = {k: str(f.get_slice(k).get_dtype()) for k in keys}
    except Exception as exc:
        from ..safety import clip

        raise UserError(f"{where}: {path.name} is not a readable safetensors "
                        f"file ({clip(str(exc), 120)})") from None

    class _Shape:
        def __init__(self, s):
            self.shape = s

    unused = unused_weights(definition.architecture_spec())
    shapes = {k: v for k, v in shapes.items() if k not in unused}
    dtypes = {k: v for k, v in dtypes.items() if k not in unused}

    check_state({k: _Shape(v) for k, v in shapes.items()}, expected_shapes(definition.architecture_spec()),
                where)
    bad = next((k for k in sorted(dtypes) if dtypes[k] != "F32"), None)
    if bad is not None:
        raise UserError(f"{where}: tensor '{bad}' is {dtypes[bad]}; the canonical weights are float32 "
                        "(convert with tensor.float() before saving)")
    from .weights import read_weights

    check_values({k: v for k, v in read_weights(path).items() if k not in unused}, where)
