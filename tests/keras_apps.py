"""keras.applications MobileNetV3 models with non-trivial random weights, for the import tests.

Random weights with keras' initial BatchNorm statistics (mean 0, variance 1) give near-constant
logits; here every BatchNorm gets the statistics its input really has on real images, perturbed
(mean shifted, variance scaled), and a random gamma/beta, so the logits spread across images.
``set_from_canonical`` gives Small the shipped demo's trained weights instead.
"""

from __future__ import annotations

import numpy as np

VARIANTS = {
    # id: (constructor, alpha, minimalistic)
    "small": ("MobileNetV3Small", 1.0, False),
    "large": ("MobileNetV3Large", 1.0, False),
    "small_min": ("MobileNetV3Small", 1.0, True),
    "large_min": ("MobileNetV3Large", 1.0, True),
    "small_075": ("MobileNetV3Small", 0.75, False),
    "large_075": ("MobileNetV3Large", 0.75, False),
}


def keras_application(variant: str, *, size: int, classes: int, preprocessing: bool = True,
                      softmax: bool = True):
    """keras.applications' own constructor with weights=None (no internet here)."""
    import keras

    ctor, alpha, minimalistic = VARIANTS[variant]
    keras.utils.set_random_seed(0)  # the initial kernels too: every run tests the same network
    return getattr(keras.applications, ctor)(
        input_shape=(size, size, 3), alpha=alpha, minimalistic=minimalistic, weights=None,
        classes=classes, include_preprocessing=preprocessing,
        classifier_activation="softmax" if softmax else None)


def randomise(model, pixels: np.ndarray, seed: int = 0, preprocessing: bool = True) -> None:
    """Random biases, gamma, beta; BatchNorm statistics measured on ``pixels`` (uint8 NHWC), then
    perturbed. Statistics are set in topological order so each sees the ones before it."""
    import keras

    rng = np.random.default_rng(seed)
    x = pixels.astype(np.float32)
    if not preprocessing:
        x = x / 127.5 - 1.0
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D") and layer.use_bias:
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0.0, 0.2, b.shape).astype(np.float32)])
    bns = [lay for lay in model.layers if type(lay).__name__ == "BatchNormalization"]
    for bn in bns:
        a = np.asarray(keras.Model(model.input, bn.input)(x, training=False), dtype=np.float64)
        mean, var = a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2))
        n = mean.shape[0]
        bn.set_weights([
            rng.uniform(0.6, 1.6, n).astype(np.float32),  # gamma
            rng.normal(0.0, 0.3, n).astype(np.float32),  # beta
            (mean + rng.normal(0.0, 0.2, n) * np.sqrt(var + 1e-3)).astype(np.float32),  # moving mean
            (var * rng.uniform(0.6, 1.6, n) + 1e-3).astype(np.float32),  # moving variance
        ])
    # logits within +-1 on these images: float32 rounding grows with their scale (a random network
    # amplifies it more than a trained one: 1.1e-4 to 1.8e-4 at +-2) and the fp32 limit (1e-4) is absolute
    head = model.get_layer("logits")
    z = np.asarray(keras.Model(model.input, head.output)(x, training=False))
    k, b = head.get_weights()
    s = 1.0 / float(np.abs(z).max())
    head.set_weights([k * s, b * s])


def logits_model(model):
    """The model up to its classifier activation (softmax or none): logits."""
    import keras

    return keras.Model(model.input, model.get_layer("predictions").input)


def set_from_canonical(model, state: dict, *, preprocessing: bool, mean, std) -> None:
    """Give a keras.applications model canonical (PyTorch-layout) weights, e.g. the shipped demo's
    trained ones: the inverse of the importer's name map. The demo was trained on
    (p/255 - mean)/std; keras' Rescaling gives p/127.5 - 1, so the stem conv takes the affine
    (exact away from the zero-padded border, which is a different function at the edge anyway)."""
    from mobiledeploy.architectures.spec import preset
    from mobiledeploy.importers import keras_names

    h = model.input.shape[1]
    spec = preset("mobilenet_v3_small", 1.0, model.get_layer("logits").filters, h,
                  padding="tf_same", channel_rounding="tf_slim")
    state = {k: np.asarray(v, np.float64) for k, v in state.items()}
    if preprocessing:
        mean, std = np.asarray(mean), np.asarray(std)
        w = state["stem.conv.weight"]
        # (x+1)/2 = p/255:  W . (p/255 - mean)/std = W/(2 std) . x + W . (0.5 - mean)/std
        const = np.einsum("oihw,i->o", w, (0.5 - mean) / std)
        state["stem.conv.weight"] = w / (2 * std)[None, :, None, None]
        state["stem.bn.running_mean"] = state["stem.bn.running_mean"] - const
    values: dict[str, np.ndarray] = {}
    for canon, (name, kind) in keras_names(spec).items():
        a = state[canon]
        if kind == "conv":
            a = a.transpose(2, 3, 1, 0)
        elif kind == "dw":
            a = a.transpose(2, 3, 0, 1)
        elif kind == "fc":
            a = a.T[None, None]
        values[name] = a.astype(np.float32)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([values[f"{layer.name}/{w.name}"] for w in layer.weights])
