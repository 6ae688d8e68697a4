"""The embedding head: global average pooling, then (``features: hidden``) the classifier's hidden
fully connected layer and its activation. Parameters keep the classifier's names (``head.fc1``),
so an image classifier's weights (less its last layer) give its embedder.

A head plugin (``architectures/heads.py``): the builders, the weights check, ``show`` and the
h-swish lowering ask this module.
"""

from __future__ import annotations

from ...architectures.heads import head_options

MODULE = __name__


def _hidden(spec) -> bool:
    return head_options(spec)[0] == "hidden"


def dim(spec) -> int:
    """The embedding's length."""
    return spec.head_hidden if _hidden(spec) else spec.last_conv


def torch_head(spec, nn, act):
    """(N, C, H, W) last-conv features -> (N, dim) embeddings."""

    class EmbeddingHead(nn.Module):
        def __init__(self):
            super().__init__()
            if _hidden(spec):
                self.fc1 = nn.Linear(spec.last_conv, spec.head_hidden)
                self.act = act(spec.head_activation)

        def forward(self, x):
            x = x.mean((2, 3))
            return self.act(self.fc1(x)) if _hidden(spec) else x

    return EmbeddingHead()


def keras_head(spec, x, layers, act, lowered: bool = False):
    """(N, H, W, C) last-conv features -> (N, dim) embeddings (Keras)."""
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    kind = spec.last_activation
    if _hidden(spec):
        x = layers.Dense(spec.head_hidden, name="head_fc1")(x)
        x = act(x, "head_act", spec.head_activation)
        kind = spec.head_activation
    if lowered and kind == "hswish":
        # the lowered h-swish leaves its 1/6 to the next linear op; the embedding has none after it
        # (a Python float times the tensor: exact in the model's dtype)
        x = layers.Activation(lambda t: t * (1.0 / 6.0), name="head_out_scale")(x)
    return x


def head_shapes(spec) -> dict[str, tuple]:
    if not _hidden(spec):
        return {}
    return {"head.fc1.weight": (spec.head_hidden, spec.last_conv), "head.fc1.bias": (spec.head_hidden,)}


def head_stats(spec, h: int, w: int) -> list[tuple]:
    rows = [(f"{h}x{w}x{spec.last_conv}", "avg pool", spec.last_conv, 1, "-", 0, 0)]
    if _hidden(spec):
        c, k = spec.last_conv, spec.head_hidden
        nl = {"hswish": "HS", "relu": "RE", "relu6": "RE6"}.get(spec.head_activation, "-")
        rows.append((f"1x1x{c}", "fc (embedding)", k, 1, nl, c * k, c * k + k))
    return rows


def sixth_folds(spec) -> dict[str, float]:
    """The lowered last-conv h-swish's 1/6, taken by fc1 (the pooled variant scales explicitly)."""
    if _hidden(spec) and spec.last_activation == "hswish":
        return {"head.fc1.weight": 1.0 / 6.0}
    return {}


def unused_weights(spec) -> tuple[str, ...]:
    """The classifier's last layer (and, for pooled features, its hidden layer): a classifier's
    weights file serves its embedder as is."""
    names = ("head.classifier.weight", "head.classifier.bias")
    return names if _hidden(spec) else (*names, "head.fc1.weight", "head.fc1.bias")
