"""A task's own head on the backbone's pooled features, plugged in by name.

A task that needs a head other than the classifier (and other than the two built into the spec,
LR-ASPP and SSDLite) names a module in ``ArchitectureSpec.head_plugin`` = ``(module, option, ...)``.
The module is the head's one home and answers what every builder asks of a head:

- ``torch_head(spec, nn, act)``: an ``nn.Module`` taking the last conv's features (N, C, H, W);
- ``keras_head(spec, x, layers, act)``: the Keras tensors from the last conv's features (N, H, W, C);
- ``head_shapes(spec)``: canonical (PyTorch) parameter names -> shapes (the weights file is checked
  against them before anything is built);
- ``head_stats(spec, h, w)``: rows ``(input, operator, out, stride, NL, MACs, params)`` for ``show``;
- ``sixth_folds(spec)``: parameter name -> factor for the lowered h-swish (the 1/6 folded into the
  weights after the last conv's h-swish, as the classifier's fc1 takes it);
- optionally ``unused_weights(spec)``: tensors a weights file may hold that this head leaves out
  (dropped from the bundle's canonical file).

``keras_head`` also receives ``lowered`` (the h-swish variant being built): a lowered h-swish leaves
its 1/6 to the next linear op, which a head that ends on one must apply itself.

Parameters are named as the classifier's (``head.<name>`` in PyTorch, ``head_<name>`` in Keras), so
the weight transposes of ``weights.py`` apply unchanged.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType


def head_module(spec) -> ModuleType | None:
    """The spec's head plugin module, or None for the built-in heads."""
    plugin = getattr(spec, "head_plugin", None)
    return import_module(plugin[0]) if plugin else None


def head_options(spec) -> tuple[str, ...]:
    """The options the task resolved for its head (after the module name)."""
    return tuple(spec.head_plugin[1:]) if spec.head_plugin else ()
