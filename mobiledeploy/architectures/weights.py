"""The canonical weights file (safetensors, PyTorch names and layouts) and its Keras transposes.

conv OIHW -> HWIO, depthwise (C,1,kh,kw) -> (kh,kw,C,1), dense (out,in) -> (in,out),
BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .spec import ArchitectureSpec

_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def state_dict_numpy(module) -> dict[str, np.ndarray]:
    """The module's parameters and BN statistics as float32 arrays (no counters)."""
    return {
        k: v.detach().cpu().numpy().astype(np.float32)
        for k, v in module.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def save_weights(module_or_state, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the canonical safetensors file (atomically)."""
    from safetensors.numpy import save_file

    state = module_or_state if isinstance(module_or_state, dict) else state_dict_numpy(module_or_state)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in sorted(state.items())}, str(tmp), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # safetensors writes 0600; the bundle's files are ordinary files
        tmp.replace(path)
    except BaseException as exc:  # disk full, interrupted: no partial weights file left behind
        tmp.unlink(missing_ok=True)
        import re

        # safetensors wraps the OS error in its own type: give it back its errno (exit 2, one line)
        m = re.search(r"os error (\d+)", str(exc)) if not isinstance(exc, OSError) else None
        if m:
            code = int(m.group(1))
            raise OSError(code, os.strerror(code), str(path)) from None
        raise


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Read the canonical file; a corrupt file is a user error naming it."""
    from safetensors.numpy import load_file

    from ..errors import UserError

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad header
        from ..safety import clip

        raise UserError(f"{path}: not a readable safetensors weights file ({clip(str(exc), 120)})") from None


def check_state(state: dict[str, np.ndarray], expected: dict[str, tuple], source: str) -> None:
    """Same names and shapes as the architecture expects, or a one-line user error."""
    from ..errors import UserError

    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if extra:
            what.append(f"{len(extra)} unexpected (first: {extra[0]})")
        raise UserError(
            f"{source}: weights do not match the architecture: {'; '.join(what)}; "
            "check architecture.preset / width_multiplier / labels count"
        )
    for k, shape in expected.items():
        if tuple(state[k].shape) != tuple(shape):
            raise UserError(
                f"{source}: tensor '{k}' has shape {tuple(state[k].shape)}, the architecture "
                f"needs {tuple(shape)}; check architecture.width_multiplier and labels count"
            )


def check_values(state: dict[str, np.ndarray], source: str) -> None:
    """Every tensor float32 and finite, or a one-line user error naming the first bad tensor."""
    from ..errors import UserError

    for k in sorted(state):
        v = np.asarray(state[k])
        if v.dtype != np.float32:
            raise UserError(f"{source}: tensor '{k}' is {v.dtype}; the canonical weights are float32 "
                            "(convert with tensor.float() before saving)")
        if not np.isfinite(v).all():
            bad = int(np.size(v) - np.isfinite(v).sum())
            raise UserError(f"{source}: tensor '{k}' holds {bad} NaN/Inf value(s); "
                            "fix the checkpoint (a diverged training run?)")


def load_torch_weights(module, state: dict[str, np.ndarray], source: str = "weights") -> None:
    """Load canonical weights into the PyTorch reference (strict names and shapes)."""
    import torch

    expected = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    check_state(state, expected, source)
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False)


def sixth_folds(spec: ArchitectureSpec) -> dict[str, float]:
    """Weight scale per canonical tensor for the lowered graph (1/6 per lowered op upstream).

    In the lowered Keras graph h-swish is ``x*relu6(x+3)`` and the SE gate ``relu6(s+3)``, each
    6x the true value; the next linear op divides its weights (never its bias) by 6.
    """
    folds: dict[str, float] = {}

    def fold(name: str, factor: float) -> None:
        folds[name] = folds.get(name, 1.0) * factor

    six = 1.0 / 6.0
    ins = spec.block_inputs()
    for i, b in enumerate(spec.blocks):
        p = f"blocks.{i}"
        expand = b.has_expand(ins[i])
        if b.fused:
            first = f"{p}.expand.conv.weight" if expand else f"{p}.project.conv.weight"
        else:
            first = f"{p}.expand.conv.weight" if expand else f"{p}.dw.conv.weight"
        if i == 0 and spec.stem_activation == "hswish" and not _stem_kept(spec):
            fold(first, six)
        if expand and not b.fused and b.activation == "hswish":
            fold(f"{p}.dw.conv.weight", six)
        # the output of the block's last activation (expand if fused, else depthwise)
        if b.activation == "hswish" and (expand or not b.fused):
            if b.se:
                fold(f"{p}.se.fc1.weight", six)
            fold(f"{p}.project.conv.weight", six)
        if b.se:
            fold(f"{p}.project.conv.weight", six)
    if spec.detection:
        from ..tasks.detection.ssdlite import sixth_folds as ssd_folds

        for name, factor in ssd_folds(spec).items():
            fold(name, factor)
        return folds
    if spec.segmentation:
        from ..tasks.segmentation.lraspp import sixth_folds as head_folds

        for name, factor in head_folds(spec).items():
            fold(name, factor)
        return folds
    if spec.head_plugin:
        from .heads import head_module

        for name, factor in head_module(spec).sixth_folds(spec).items():
            fold(name, factor)
        return folds
    nxt = "head.fc1.weight" if spec.head_hidden else "head.classifier.weight"
    if spec.last_activation == "hswish":
        fold(nxt, six)
    if spec.head_hidden and spec.head_activation == "hswish":
        fold("head.classifier.weight", six)
    return folds


def _stem_kept(spec: ArchitectureSpec) -> bool:
    """The stem's h-swish output also feeds a residual add: keep the 1/6 as an explicit scale."""
    b0 = spec.blocks[0]
    return b0.residual and b0.stride == 1 and spec.stem_out == b0.out


def load_keras_weights(model, state: dict[str, np.ndarray], spec: ArchitectureSpec, *,
                       hswish: str = "fused") -> None:
    """Set every Keras layer's weights from the canonical (PyTorch-layout) tensors.

    ``hswish`` is the graph variant the model was built as (``build_keras_model``): a lowered
    graph takes the 1/6 folded into the weights after each lowered op.
    """
    folds = sixth_folds(spec) if hswish == "lowered" else {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization"):
            continue
        torch_name = layer.name.replace("_", ".")
        if kind == "BatchNormalization":
            values = [state[f"{torch_name}.{_BN[w.name]}"] for w in layer.weights]
        else:
            # the fold in float64, rounded once to the layer's dtype (a float64 twin stays exact)
            w = state[f"{torch_name}.weight"].astype(np.float64) * folds.get(f"{torch_name}.weight", 1.0)
            if kind == "Conv2D":
                w = w.transpose(2, 3, 1, 0)
            elif kind == "DepthwiseConv2D":
                w = w.transpose(2, 3, 0, 1)
            else:
                w = w.T
            values = [w] + ([state[f"{torch_name}.bias"]] if layer.use_bias else [])
        layer.set_weights([np.ascontiguousarray(v, dtype=np.dtype(var.dtype))
                           for v, var in zip(values, layer.weights, strict=True)])
